//! ksiam's pod admission webhook: mounts the token of the KubeSphere ServiceAccount named by a pod's
//! `kubesphere.io/serviceaccount-name` annotation at `/var/run/secrets/kubesphere.io/serviceaccount`.
//!
//! * [`mod@inject`]: the mutation itself ([`mutate`], [`inject()`]), no I/O of its own.
//! * [`lookup`]: where ServiceAccounts and Secrets are read from ([`KubeLookup`], [`MemoryLookup`]).
//! * [`review`]: decoding `AdmissionReview` bodies.
//! * [`server`]: HTTPS with axum and rustls; [`tls`]: certificate files with reload, or self-signed.
//! * [`mod@register`]: the `MutatingWebhookConfiguration` ([`register()`]).
//! * [`run`]: all of it, for the `ksiam` binary.

pub mod cached;
pub mod inject;
pub mod lookup;
pub mod register;
pub mod review;
mod run;
pub mod server;
pub mod tls;

pub use self::{
    cached::CachedLookup,
    inject::{InjectOptions, Injector, inject, mutate},
    lookup::{KubeLookup, Lookup, LookupError, MemoryLookup},
    register::{CaBundleSource, FailurePolicy, Registration, WebhookTarget, register, webhook_configuration},
    review::{PodReview, ReviewError, encode_review, parse_review},
    run::{Config, Error, run},
    server::{Server, ServerError, router},
    tls::{ServerTls, TlsError, TlsSource},
};
