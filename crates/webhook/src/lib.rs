//! KubeSphere's pod admission mutation: mount the token of the KubeSphere ServiceAccount named by a pod's
//! `kubesphere.io/serviceaccount-name` annotation at `/var/run/secrets/kubesphere.io/serviceaccount`, exactly as
//! KubeSphere's webhook does.
//!
//! Without features the crate is the mutation and nothing else (no I/O, no HTTP server, no Kubernetes client):
//!
//! * [`mod@inject`]: [`inject()`] edits a raw pod in place; [`mutate`] answers a whole `AdmissionRequest`
//!   (which pods are handled, the lookups that decide, the JSON patch), reading ServiceAccounts and token
//!   Secrets through a [`Lookup`].
//! * [`lookup`]: the [`Lookup`] trait and [`MemoryLookup`], for callers that hold the objects themselves.
//! * [`review`]: decoding `AdmissionReview` bodies and encoding the answer.
//!
//! The `server` feature adds what the `ksiam` binary runs: `server` (HTTPS with axum and rustls), `tls`
//! (certificate files with reload, or self-signed), `KubeLookup` and `CachedLookup` (the API server, directly
//! or through watch caches), `register` (the `MutatingWebhookConfiguration` and the `ValidatingWebhookConfiguration`),
//! `admission` (validating checks on WorkspaceTemplates and Namespaces for KubeSphere identities, so that the
//! workspace and namespace controllers grant nobody more than they could grant themselves) and `run`.
//!
//! ```
//! use serde_json::json;
//!
//! let mut pod = json!({
//!     "metadata": {"name": "app", "namespace": "dev",
//!                  "annotations": {"kubesphere.io/serviceaccount-name": "sample"}},
//!     "spec": {"containers": [{"name": "app", "image": "busybox"}]}
//! });
//! // The token Secret that KubeSphere's controller created for the ServiceAccount `dev/sample`.
//! ksiam_webhook::inject(&mut pod, "sample-token-x7k2p", false);
//! assert_eq!(pod["spec"]["volumes"][0]["projected"]["sources"][0]["secret"]["name"], "sample-token-x7k2p");
//! assert_eq!(
//!     pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
//!     "/var/run/secrets/kubesphere.io/serviceaccount"
//! );
//! ```
//!
//! # Kubernetes version
//!
//! Through `k8s-openapi`, this crate needs exactly one Kubernetes version feature, which a library must not
//! choose: add `k8s-openapi = { version = "0.29", features = ["v1_34"] }` (or another version) to your binary.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "server")]
pub mod admission;
#[cfg(feature = "server")]
pub mod cached;
pub mod inject;
pub mod lookup;
#[cfg(feature = "server")]
pub mod register;
pub mod review;
#[cfg(feature = "server")]
mod run;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub use ksiam_runtime::tls;

/// The `kubesphere.io/v1alpha1` ServiceAccount that a [`Lookup`] returns.
pub use ksiam_api::serviceaccount::ServiceAccount;

#[cfg(feature = "server")]
pub use self::{
    admission::{Authorization, Authorize, PolicyAuthorizer, decide, is_kubesphere_identity, validate},
    cached::CachedLookup,
    lookup::KubeLookup,
    register::{
        CaBundleSource, FailurePolicy, Registration, WebhookTarget, admission_configuration, register,
        register_admission, webhook_configuration,
    },
    run::{Config, Error, run, run_with_admission},
    server::{Server, ServerError, router, router_with_admission},
    tls::{ServerTls, TlsError, TlsSource},
};
pub use self::{
    inject::{InjectOptions, Injector, inject, mutate},
    lookup::{Lookup, LookupError, MemoryLookup},
    review::{PodReview, ReviewError, encode_review, parse_review},
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
