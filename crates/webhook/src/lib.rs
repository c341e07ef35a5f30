//! ksiam's pod admission webhook: mounts the token of the KubeSphere ServiceAccount named by a pod's
//! `kubesphere.io/serviceaccount-name` annotation at `/var/run/secrets/kubesphere.io/serviceaccount`.
//!
//! * [`mod@inject`]: the mutation itself ([`mutate`], [`inject()`]), no I/O of its own.
//! * [`lookup`]: where ServiceAccounts and Secrets are read from ([`KubeLookup`], [`MemoryLookup`]).
//! * [`review`]: decoding `AdmissionReview` bodies.
//! * [`server`]: HTTPS with axum and rustls; [`tls`]: certificate files with reload, or self-signed.
//! * [`admission`]: validating checks on WorkspaceTemplates and Namespaces for KubeSphere identities, so that
//!   the workspace and namespace controllers grant nobody more than they could grant themselves ([`decide`]).
//! * [`mod@register`]: the `MutatingWebhookConfiguration` ([`register()`]) and the checks'
//!   `ValidatingWebhookConfiguration` ([`register_admission`]).
//! * [`run`]: all of it, for the `ksiam` binary.

pub mod admission;
pub mod cached;
pub mod inject;
pub mod lookup;
pub mod register;
pub mod review;
mod run;
pub mod server;
pub use ksiam_runtime::tls;

pub use self::{
    admission::{Authorization, Authorize, PolicyAuthorizer, decide, is_kubesphere_identity, validate},
    cached::CachedLookup,
    inject::{InjectOptions, Injector, inject, mutate},
    lookup::{KubeLookup, Lookup, LookupError, MemoryLookup},
    register::{
        CaBundleSource, FailurePolicy, Registration, WebhookTarget, admission_configuration, register,
        register_admission, webhook_configuration,
    },
    review::{PodReview, ReviewError, encode_review, parse_review},
    run::{Config, Error, run, run_with_admission},
    server::{Server, ServerError, router, router_with_admission},
    tls::{ServerTls, TlsError, TlsSource},
};
