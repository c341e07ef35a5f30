//! The cost of admitting the seed pod: the mutation alone, and the whole request path (parse, mutate, encode),
//! with an in-memory lookup so that only the webhook's own work is measured.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ksiam_api::serviceaccount::ServiceAccount;
use ksiam_webhook::{InjectOptions, Injector, MemoryLookup, encode_review, inject, parse_review};
use serde_json::{Value, json};

const SEED_POD: &str = include_str!("../testdata/seed-pod.yaml");

fn seed_review() -> Value {
    let pod: Value = serde_yaml::from_str(SEED_POD).expect("seed pod");
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b6b6f5a4-0d7e-4a0f-8c43-63a3f1f0f6d2",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "sample-pod",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": null,
        },
    })
}

fn injector() -> Injector<MemoryLookup> {
    let sa: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "kubesphere.io/v1alpha1",
        "kind": "ServiceAccount",
        "metadata": {"name": "sample", "namespace": "default"},
        "secrets": [{"name": "sample-lqmbj", "namespace": "default"}],
    }))
    .expect("ServiceAccount");
    let lookup = MemoryLookup::new()
        .with_service_account(sa)
        .with_secret("default", "sample-lqmbj");
    Injector::new(lookup, InjectOptions::default())
}

fn admission(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let injector = injector();
    let body = seed_review().to_string().into_bytes();
    let review = parse_review(&body).expect("review");
    let pod = review.object.clone().expect("pod");

    c.bench_function("inject/seed_pod", |b| {
        b.iter(|| {
            let mut pod = pod.clone();
            inject(&mut pod, black_box("sample-lqmbj"), false);
            pod
        });
    });
    c.bench_function("mutate/seed_pod", |b| {
        b.iter(|| runtime.block_on(injector.mutate(black_box(&review.request), Some(black_box(&pod)))));
    });
    c.bench_function("request/seed_pod", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let review = parse_review(black_box(&body)).expect("review");
                let response = injector.mutate(&review.request, review.object.as_ref()).await;
                encode_review(response).expect("encode")
            })
        });
    });
}

criterion_group!(benches, admission);
criterion_main!(benches);
