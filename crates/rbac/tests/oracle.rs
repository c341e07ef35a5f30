//! The indexed snapshot must agree with the naive, literal evaluator (`ksiam_rbac::naive`, which shares no
//! matching code with it) on every decision and its reason, for random policies and random requests, before
//! and after random incremental updates. The deliberate differences from KubeSphere that concern decisions
//! have their own cases below.

use ksiam_rbac::{
    Attributes, PolicyIndex, Scope, Snapshot,
    model::{Binding, BindingKind, Namespace, Policy, PolicyRule, Role, RoleKind, RoleRef, Subject},
    naive,
};
use proptest::prelude::*;

mod common;

use common::*;

#[derive(Clone, Debug)]
enum Update {
    UpsertRole(Role),
    RemoveRole(usize),
    UpsertBinding(Binding),
    RemoveBinding(usize),
    UpsertNamespace(Namespace),
    RemoveNamespace(usize),
}

fn update() -> impl Strategy<Value = Update> {
    prop_oneof![
        role().prop_map(Update::UpsertRole),
        any::<usize>().prop_map(Update::RemoveRole),
        binding().prop_map(Update::UpsertBinding),
        any::<usize>().prop_map(Update::RemoveBinding),
        namespace().prop_map(Update::UpsertNamespace),
        any::<usize>().prop_map(Update::RemoveNamespace),
    ]
}

fn apply(policy: &mut Policy, snap: &mut PolicyIndex, u: Update) {
    match u {
        Update::UpsertRole(r) => {
            policy.roles.retain(|x| x.key() != r.key());
            snap.upsert_role(&r);
            policy.roles.push(r);
        }
        Update::RemoveRole(i) if !policy.roles.is_empty() => {
            let r = policy.roles.remove(i % policy.roles.len());
            snap.remove_role(&r.key());
        }
        Update::UpsertBinding(b) => {
            policy.bindings.retain(|x| x.key() != b.key());
            snap.upsert_binding(&b);
            policy.bindings.push(b);
        }
        Update::RemoveBinding(i) if !policy.bindings.is_empty() => {
            let b = policy.bindings.remove(i % policy.bindings.len());
            snap.remove_binding(&b.key());
        }
        Update::UpsertNamespace(n) => {
            policy.namespaces.retain(|x| x.name != n.name);
            snap.upsert_namespace(&n);
            policy.namespaces.push(n);
        }
        Update::RemoveNamespace(i) if !policy.namespaces.is_empty() => {
            let n = policy.namespaces.remove(i % policy.namespaces.len());
            snap.remove_namespace(&n.name);
        }
        _ => {}
    }
}

fn agree(policy: &Policy, snap: &Snapshot, requests: &[Req]) -> Result<(), TestCaseError> {
    for r in requests {
        let a = r.attrs();
        let fast = snap.decide(&a);
        let slow = naive::decide(policy, &a);
        prop_assert_eq!(
            fast.allowed(),
            slow.allowed,
            "request {:?}\npolicy {:#?}\nreason {}",
            r,
            policy,
            fast.reason(&a)
        );
        // The reason: on allow a binding of the deciding phase that allows it, described as the spec says;
        // on deny the same role-reference errors.
        let reason = fast.reason(&a);
        prop_assert!(
            slow.admits_reason(&reason),
            "request {:?}\npolicy {:#?}\nsnapshot reason {:?}\nnaive: {:?}",
            r,
            policy,
            reason,
            slow
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("KSIAM_ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_agrees_with_naive_evaluator(
        mut policy in policy(),
        requests in proptest::collection::vec(request(), 1..24),
        updates in proptest::collection::vec(update(), 0..8),
    ) {
        let mut index = PolicyIndex::build(&policy);
        agree(&policy, index.snapshot(), &requests)?;
        for u in updates {
            apply(&mut policy, &mut index, u);
            agree(&policy, index.snapshot(), &requests)?;
        }
        let snap = index.snapshot();
        // After all updates, an incrementally maintained snapshot equals a fresh build.
        let fresh = Snapshot::build(&policy);
        for r in &requests {
            prop_assert_eq!(fresh.decide(&r.attrs()).allowed(), snap.decide(&r.attrs()).allowed());
        }
        prop_assert_eq!(fresh.counts(), snap.counts());
    }
}

fn user(name: &str) -> Subject {
    Subject {
        kind: "User".into(),
        name: name.into(),
        ..Default::default()
    }
}

fn everything(kind: RoleKind, name: &str) -> Role {
    Role {
        kind,
        namespace: if kind == RoleKind::Role {
            "ns0".into()
        } else {
            String::new()
        },
        name: name.into(),
        rules: vec![PolicyRule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..Default::default()
        }],
        rego: None,
    }
}

fn bind(kind: BindingKind, name: &str, role_kind: &str, role: &str) -> Binding {
    Binding {
        kind,
        namespace: if kind == BindingKind::RoleBinding {
            "ns0".into()
        } else {
            String::new()
        },
        name: name.into(),
        workspace: Some("w0".into()),
        role_ref: RoleRef {
            api_group: "iam.kubesphere.io".into(),
            kind: role_kind.into(),
            name: role.into(),
        },
        subjects: vec![user("u0")],
    }
}

fn get_pods(scope: Scope) -> Attributes<'static> {
    Attributes {
        user: "u0",
        verb: "get",
        resource: "pods",
        namespace: if scope == Scope::Namespace { "ns0" } else { "" },
        workspace: if scope == Scope::Workspace { "w0" } else { "" },
        resource_request: true,
        scope,
        ..Default::default()
    }
}

/// Deliberate difference: upstream aborts the phase walk at the first bad roleRef in informer-cache order, so
/// an allowing binding met before it allows. ksiam denies whenever the subject's bindings of a workspace,
/// namespace or cluster phase hold a bad roleRef, in either order, with upstream's error as the reason.
#[test]
fn a_bad_role_ref_among_the_bindings_of_a_phase_denies_in_either_order() {
    let phases = [
        (
            BindingKind::WorkspaceRoleBinding,
            RoleKind::WorkspaceRole,
            "WorkspaceRole",
            Scope::Workspace,
        ),
        (BindingKind::RoleBinding, RoleKind::Role, "Role", Scope::Namespace),
        (
            BindingKind::ClusterRoleBinding,
            RoleKind::ClusterRole,
            "ClusterRole",
            Scope::Cluster,
        ),
    ];
    for (kind, role_kind, ref_kind, scope) in phases {
        let good = bind(kind, "a-good", ref_kind, "all");
        let bad = bind(kind, "b-bad", "Bogus", "all");
        for bindings in [vec![good.clone(), bad.clone()], vec![bad.clone(), good.clone()]] {
            let policy = Policy {
                roles: vec![everything(role_kind, "all")],
                bindings: bindings.clone(),
                namespaces: vec![Namespace {
                    name: "ns0".into(),
                    workspace: None,
                }],
            };
            let a = get_pods(scope);
            let d = Snapshot::build(&policy).decide(&a);
            assert!(!d.allowed(), "{kind:?} {bindings:?}");
            assert_eq!(d.reason(&a), r#"RBAC: unsupported role reference kind: "Bogus""#);
            assert_eq!(naive::decide(&policy, &a).denial_reason(), d.reason(&a));
            // Incrementally, in this order: the same.
            let mut index = PolicyIndex::build(&Policy {
                roles: policy.roles.clone(),
                bindings: vec![],
                namespaces: policy.namespaces.clone(),
            });
            for b in &bindings {
                index.upsert_binding(b);
            }
            assert!(!index.snapshot().decide(&a).allowed());
            // Without the bad binding the good one allows: the denial is the bad reference's doing.
            let only_good = Policy {
                bindings: vec![good.clone()],
                ..policy.clone()
            };
            assert!(Snapshot::build(&only_good).decide(&a).allowed(), "{kind:?}");
        }
    }
    // GlobalRoleBindings keep upstream's behaviour: a bad one is skipped.
    let policy = Policy {
        roles: vec![everything(RoleKind::GlobalRole, "all")],
        bindings: vec![
            bind(BindingKind::GlobalRoleBinding, "b-bad", "Bogus", "all"),
            bind(BindingKind::GlobalRoleBinding, "a-good", "GlobalRole", "all"),
        ],
        namespaces: vec![],
    };
    assert!(
        Snapshot::build(&policy)
            .decide(&get_pods(Scope::Global))
            .allowed()
    );
}

/// Deliberate difference: upstream's reason for a WorkspaceRoleBinding says "GlobalRoleBinding".
#[test]
fn workspace_role_binding_reasons_say_workspace_role_binding() {
    let policy = Policy {
        roles: vec![everything(RoleKind::WorkspaceRole, "w0-admin")],
        bindings: vec![bind(
            BindingKind::WorkspaceRoleBinding,
            "u0-w0-admin",
            "WorkspaceRole",
            "w0-admin",
        )],
        namespaces: vec![],
    };
    let a = get_pods(Scope::Workspace);
    assert_eq!(
        Snapshot::build(&policy).decide(&a).reason(&a),
        r#"RBAC: allowed by WorkspaceRoleBinding "u0-w0-admin" of WorkspaceRole "w0-admin" to User "u0""#
    );
}
