//! Decisions on the hot path allocate nothing: counted with an instrumented global allocator.

use std::alloc::System;

use ksiam_rbac::{
    Attributes, PolicyIndex, Scope, Snapshot,
    generate::{TARGET_GROUPS, TARGET_USER, generate},
    model::Policy,
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

fn decisions_do_not_allocate() {
    let g = generate(10_000, 1);
    let snap = Snapshot::build(&g.policy);
    let groups: Vec<String> = TARGET_GROUPS.iter().map(|s| s.to_string()).collect();
    let requests = [g.allow_first(), g.allow_last(), g.deny()];
    let attrs: Vec<Attributes<'_>> = requests
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
    // Warm up (lazy statics, hasher seeds).
    for a in &attrs {
        std::hint::black_box(snap.decide(a));
    }
    let region = Region::new(GLOBAL);
    let mut allowed = 0;
    for _ in 0..1000 {
        for a in &attrs {
            allowed += usize::from(std::hint::black_box(snap.decide(a)).allowed());
        }
    }
    let stats = region.change();
    assert_eq!(
        allowed, 2000,
        "allow_first and allow_last are allowed, deny is not"
    );
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");

    // The instrument does see allocations (so the zero above means something).
    let region = Region::new(GLOBAL);
    std::hint::black_box(snap.decide(&attrs[0]).reason(&attrs[0]));
    assert!(region.change().allocations > 0);
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
