//! HS256 verification, uncached and through the verified-token cache.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use ksiam_token::{DEFAULT_ISSUER, Issuer, KeySet, Verifier, VerifyCache, now_unix};

fn token(c: &mut Criterion) {
    let keys = KeySet::legacy(b"0123456789abcdef0123456789abcdef");
    let token = Issuer::new(keys.clone(), DEFAULT_ISSUER)
        .issue_sa_token("default", "sample", now_unix(), None)
        .unwrap();
    let verifier = Verifier::new(keys);
    let cache = VerifyCache::new(10_000, Duration::from_secs(10));
    let mut group = c.benchmark_group("token");
    group.bench_function("verify_hs256", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap())
    });
    group.bench_function("verify_cached", |b| {
        b.iter(|| {
            cache
                .get_or_verify(black_box(&token), |t| verifier.verify(t))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, token);
criterion_main!(benches);
