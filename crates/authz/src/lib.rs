//! The ksiam authorizer service.
//!
//! ```text
//!  kube watches ──► watch::watch ──► PolicyStore (ksiam-rbac) ◄── AuthzService (gRPC Authorize, RulesFor, WhoCan)
//!                                                            ◄── webhook_router (SubjectAccessReview, TokenReview)
//! ```
//!
//! - [`convert`]: `iam.kubesphere.io/v1beta1` roles and bindings and core Namespaces → the RBAC model.
//! - [`watch()`]: incremental watches feeding a [`ksiam_rbac::PolicyStore`]; it becomes ready after the
//!   first list of every kind.
//! - [`Metrics`]: Prometheus metrics under `ksiam_authz`.
//! - [`AuthzService`], [`serve_grpc`], [`AuthzClient`]: the `ksiam.authz.v1.Authorizer` gRPC API.
//! - [`webhook_router`], [`serve_webhooks`], [`review_sar`]: kube-apiserver's authorization and token
//!   webhooks, and KubeSphere's SubjectAccessReview.

pub mod convert;
pub mod grpc;
pub mod metrics;
pub mod watch;
pub mod webhook;

pub use self::{
    grpc::{AuthzClient, AuthzService, CacheConfig, ClientError, ServeError, serve_grpc},
    metrics::Metrics,
    watch::{list_policy, watch},
    webhook::{WebhookServeError, WebhookState, WebhookTls, review_sar, serve_webhooks, webhook_router},
};
