//! Decision, update and build costs of the indexed snapshot on generated policies.
//!
//! `cargo bench -p ksiam-rbac --bench decide` writes `target/criterion/decide/<case>/<N>/new/estimates.json`.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ksiam_rbac::{
    Attributes, PolicyIndex, PolicyStore, Scope, Snapshot,
    generate::{Generated, Request, TARGET_GROUPS, TARGET_USER, generate},
    model::{Binding, BindingKind, RoleRef, Subject},
};

const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];

/// A request set: name, how to build it, and the expected outcome.
type Case = (&'static str, fn(&Generated) -> Request, bool);

fn attrs<'a>(r: &'a Request, groups: &'a [String]) -> Attributes<'a> {
    Attributes {
        user: TARGET_USER,
        groups,
        verb: r.verb,
        api_group: r.api_group,
        resource: r.resource,
        namespace: &r.namespace,
        resource_request: true,
        scope: Scope::Namespace,
        ..Default::default()
    }
}

fn decide(c: &mut Criterion) {
    let groups: Vec<String> = TARGET_GROUPS.iter().map(|s| s.to_string()).collect();
    let mut group = c.benchmark_group("decide");
    for n in SIZES {
        let g = generate(n, 42);
        let snap = Snapshot::build(&g.policy);
        let cases: [Case; 3] = [
            ("allow_first", Generated::allow_first, true),
            ("allow_last", Generated::allow_last, true),
            ("deny", Generated::deny, false),
        ];
        for (name, request, expected) in cases {
            let r = request(&g);
            let a = attrs(&r, &groups);
            assert_eq!(snap.decide(&a).allowed(), expected, "{name} at {n}");
            group.bench_with_input(BenchmarkId::new(name, n), &a, |b, a| {
                b.iter(|| snap.decide(black_box(a)).allowed())
            });
        }
    }
    group.finish();
}

fn new_binding(i: u64) -> Binding {
    Binding {
        kind: BindingKind::RoleBinding,
        namespace: format!("ns-{}", i % 97),
        name: format!("bench-{i}"),
        workspace: None,
        role_ref: RoleRef {
            api_group: "iam.kubesphere.io".into(),
            kind: "Role".into(),
            name: "role-0".into(),
        },
        subjects: vec![Subject {
            kind: "ServiceAccount".into(),
            api_group: "kubesphere.io".into(),
            name: format!("bench-sa-{i}"),
            namespace: format!("ns-{}", i % 97),
        }],
    }
}

fn update(c: &mut Criterion) {
    let n = 100_000;
    let store = PolicyStore::new(PolicyIndex::build(&generate(n, 42).policy));
    let mut group = c.benchmark_group("update");
    // One binding added (and published) while 100k exist; removed again outside the measurement.
    group.bench_function(BenchmarkId::new("add_binding", n), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let binding = new_binding(i);
                let start = Instant::now();
                store.update(|s| s.upsert_binding(black_box(&binding)));
                total += start.elapsed();
                store.update(|s| s.remove_binding(&binding.key()));
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("remove_binding", n), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let binding = new_binding(i);
                store.update(|s| s.upsert_binding(&binding));
                let key = binding.key();
                let start = Instant::now();
                store.update(|s| s.remove_binding(black_box(&key)));
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn build(c: &mut Criterion) {
    let n = 100_000;
    let policy = generate(n, 42).policy;
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.bench_with_input(BenchmarkId::from_parameter(n), &policy, |b, p| {
        b.iter(|| Snapshot::build(black_box(p)))
    });
    group.finish();
}

criterion_group!(benches, decide, update, build);
criterion_main!(benches);
