//! ksiam's side of the peer comparisons, on exactly the data the Go peers read (see the crate docs):
//! `peer_rbac/<case>/<N>` decides the three request sets on the Kubernetes-compatible policies (P1), and
//! `peer_token/verify_hs256` verifies the same token golang-jwt verifies (P4).
//!
//! `cargo bench -p ksiam-bench --bench peers` writes `target/criterion/peer_{rbac,token}/.../new/{estimates,sample}.json`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ksiam_bench::{TOKEN_SECRET, cases, k8s_policy, token};
use ksiam_rbac::Snapshot;
use ksiam_token::{KeySet, Verifier};

/// Sizes measured; `KSIAM_BENCH_SIZES=10,1000` narrows them.
fn sizes() -> Vec<usize> {
    std::env::var("KSIAM_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 1_000, 100_000])
}

fn rbac(c: &mut Criterion) {
    let mut group = c.benchmark_group("peer_rbac");
    for n in sizes() {
        let (g, policy) = k8s_policy(n).expect("policy");
        let snapshot = Snapshot::build(&policy);
        for case in cases(&g) {
            let a = case.request.attributes();
            assert_eq!(
                snapshot.decide(&a).allowed(),
                case.allowed,
                "{} at {n}",
                case.name
            );
            group.bench_with_input(BenchmarkId::new(&case.name, n), &a, |b, a| {
                b.iter(|| snapshot.decide(black_box(a)).allowed())
            });
        }
    }
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let token = token().expect("token");
    let verifier = Verifier::new(KeySet::legacy(TOKEN_SECRET.as_bytes()));
    let mut group = c.benchmark_group("peer_token");
    group.bench_function("verify_hs256", |b| {
        b.iter(|| verifier.verify(black_box(&token)).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, rbac, tokens);
criterion_main!(benches);
