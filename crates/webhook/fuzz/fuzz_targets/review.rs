//! Any request body: the AdmissionReview decoder (`parse_review`) returns a result and never panics, and a
//! decoded review goes through the whole pod injection (with an in-memory lookup holding the seed's
//! ServiceAccount `default/sample`, in both TLS modes) to an answer that encodes, names the request's uid,
//! and is either an allow or a deny with a status code, never a panic.
#![no_main]

use std::future::Future as _;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ksiam_api::serviceaccount::ServiceAccount;
use ksiam_webhook::{InjectOptions, Injector, MemoryLookup, encode_review, parse_review};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn lookup() -> MemoryLookup {
    let sa: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "kubesphere.io/v1alpha1",
        "kind": "ServiceAccount",
        "metadata": {"name": "sample", "namespace": "default"},
        "secrets": [{"name": "sample-lqmbj", "namespace": "default"}],
    }))
    .expect("ServiceAccount");
    MemoryLookup::new()
        .with_service_account(sa)
        .with_secret("default", "sample-lqmbj")
}

fuzz_target!(|data: &[u8]| {
    let Ok(review) = parse_review(data) else { return };
    for tls_mode in [false, true] {
        let injector = Injector::new(lookup(), InjectOptions { tls_mode });
        // The in-memory lookup never waits: one poll finishes the mutation.
        let mut future = pin!(injector.mutate(&review.request, review.object.as_ref()));
        let Poll::Ready(response) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("the mutation waited on an in-memory lookup");
        };
        assert_eq!(response.uid, review.request.uid);
        let body = encode_review(response).expect("an AdmissionReview answer encodes");
        let answer: Value = serde_json::from_slice(&body).expect("the answer is JSON");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"].as_str(),
            Some(review.request.uid.as_str())
        );
    }
});
