//! Decisions on the hot path allocate nothing, at every scope (Namespace, Workspace, Cluster, Global), also
//! when other subjects' bindings have bad roleRefs or rego-override roles: counted with an instrumented
//! global allocator.

use std::alloc::System;

use ksiam_rbac::{
    Attributes, PolicyIndex, Scope, Snapshot,
    generate::{TARGET_GROUPS, TARGET_USER, generate},
    model::{Binding, BindingKind, Policy, Role, RoleKind, RoleRef, Subject},
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

// One test function: the counter is process-wide, so measurements must not overlap with other tests.
#[test]
fn allocations_and_memory() {
    decisions_do_not_allocate();
    memory_per_binding();
}

/// Bindings of another user with a bad roleRef in every phase, and a rego-override role bound to them: the
/// target's decisions neither meet nor pay for them.
fn with_strangers(mut policy: Policy, ns: &str) -> Policy {
    let stranger = || Subject {
        kind: "User".into(),
        name: "stranger".into(),
        ..Default::default()
    };
    let bad = |kind: BindingKind, name: &str, role_kind: &str| Binding {
        kind,
        namespace: if kind == BindingKind::RoleBinding {
            ns.to_owned()
        } else {
            String::new()
        },
        name: name.into(),
        workspace: Some("ws-0".into()),
        role_ref: RoleRef {
            api_group: "iam.kubesphere.io".into(),
            kind: role_kind.into(),
            name: "stranger-role".into(),
        },
        subjects: vec![stranger()],
    };
    policy.bindings.extend([
        bad(BindingKind::GlobalRoleBinding, "stranger-bad-g", "Bogus"),
        bad(BindingKind::WorkspaceRoleBinding, "stranger-bad-w", "Bogus"),
        bad(BindingKind::RoleBinding, "stranger-bad-r", "Bogus"),
        bad(BindingKind::ClusterRoleBinding, "stranger-bad-c", "Bogus"),
        bad(BindingKind::ClusterRoleBinding, "stranger-rego", "ClusterRole"),
    ]);
    policy.roles.push(Role {
        kind: RoleKind::ClusterRole,
        namespace: String::new(),
        name: "stranger-role".into(),
        rules: vec![],
        rego: Some("package authz\nallow if input.Verb == \"get\"\n".into()),
    });
    policy
}

fn decisions_do_not_allocate() {
    let g = generate(10_000, 1);
    let policy = with_strangers(g.policy.clone(), &g.namespace);
    let snap = Snapshot::build(&policy);
    let groups: Vec<String> = TARGET_GROUPS.iter().map(|s| s.to_string()).collect();
    let requests = [g.allow_first(), g.allow_last(), g.deny()];
    let mut attrs: Vec<Attributes<'_>> = requests
        .iter()
        .map(|r| Attributes {
            user: TARGET_USER,
            groups: &groups,
            verb: r.verb,
            api_group: r.api_group,
            resource: r.resource,
            namespace: &r.namespace,
            resource_request: true,
            scope: Scope::Namespace,
            ..Default::default()
        })
        .collect();
    // The other scopes: Global (allowed by a GlobalRoleBinding, or denied after the global phase), Workspace
    // and Cluster (allowed by a ClusterRoleBinding, or denied after every phase).
    let at = |scope: Scope, verb: &'static str, resource: &'static str| Attributes {
        user: TARGET_USER,
        groups: &groups,
        verb,
        api_group: "apps",
        resource,
        workspace: if scope == Scope::Workspace { "ws-0" } else { "" },
        resource_request: true,
        scope,
        ..Default::default()
    };
    attrs.extend([
        at(Scope::Global, "get", "widgets"),
        at(Scope::Global, "delete", "gadgets"),
        at(Scope::Workspace, "delete", "gadgets"),
        at(Scope::Workspace, "create", "nothing"),
        at(Scope::Cluster, "delete", "gadgets"),
        at(Scope::Cluster, "create", "nothing"),
    ]);
    let expected = [true, true, false, true, false, true, false, true, false];
    // Warm up (lazy statics, hasher seeds), and check the cases decide as named.
    let decided: Vec<bool> = attrs.iter().map(|a| snap.decide(a).allowed()).collect();
    assert_eq!(decided, expected);
    let region = Region::new(GLOBAL);
    let mut allowed = 0;
    for _ in 0..1000 {
        for a in &attrs {
            allowed += usize::from(std::hint::black_box(snap.decide(a)).allowed());
        }
    }
    let stats = region.change();
    assert_eq!(allowed, 5000);
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");

    // The instrument does see allocations (so the zero above means something).
    let region = Region::new(GLOBAL);
    std::hint::black_box(snap.decide(&attrs[0]).reason(&attrs[0]));
    assert!(region.change().allocations > 0);
    // The documented exception: the stranger's own bad roleRef is reported, and its text allocates.
    let stranger = Attributes {
        user: "stranger",
        ..at(Scope::Cluster, "create", "nothing")
    };
    let region = Region::new(GLOBAL);
    let d = std::hint::black_box(snap.decide(&stranger));
    assert!(region.change().allocations > 0);
    assert!(!d.allowed());
}

/// Heap bytes held per indexed binding at 100k bindings, roles and namespaces excluded (reported in
/// docs/benchmarks.md; the bound catches regressions).
fn memory_per_binding() {
    let g = generate(100_000, 42);
    let held = |stats: stats_alloc::Stats| {
        (stats.bytes_allocated + stats.bytes_reallocated as usize) as i64 - stats.bytes_deallocated as i64
    };
    let region = Region::new(GLOBAL);
    let mut snap = PolicyIndex::build(&Policy {
        bindings: Vec::new(),
        ..g.policy.clone()
    });
    let without_bindings = held(region.change());
    let region = Region::new(GLOBAL);
    for b in &g.policy.bindings {
        snap.upsert_binding(b);
    }
    let bindings = held(region.change());
    let per_binding = bindings as f64 / g.policy.bindings.len() as f64;
    println!(
        "{} roles + {} namespaces: {without_bindings} bytes; {} bindings: {bindings} bytes = {per_binding:.0} bytes per binding",
        g.policy.roles.len(),
        g.policy.namespaces.len(),
        g.policy.bindings.len(),
    );
    assert!(per_binding < 1_500.0, "{per_binding} bytes per binding");
    drop(snap);
}
