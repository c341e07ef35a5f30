//! The ks-apiserver replacement: KubeSphere's filter chain, the `/kapis` tenant and IAM APIs, and the
//! authorizing proxy to kube-apiserver.
//!
//! ```text
//! request ─► /healthz /livez /readyz (probes, outside the chain)
//!         └► filter chain (filter.rs): X-KubeSphere-* headers, path safety (path.rs), request info,
//!            authentication (401), multicluster (/clusters/<host> stripped), authorization (403)
//!              ├► /kapis/tenant.kubesphere.io/v1beta1/...   tenant.rs over the informer caches (caches.rs)
//!              ├► /kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews
//!              ├► /version /metrics /.well-known/openid-configuration /oauth/keys
//!              └► /api, /apis ─► proxy.rs ─► kube-apiserver (the gateway's own credentials; streaming, upgrades)
//! ```
//!
//! Wiring (what `ksiam all` and `ksiam gateway` do):
//!
//! ```no_run
//! # async fn doc(client: kube::Client, keys: ksiam_token::KeySet, store: std::sync::Arc<ksiam_rbac::PolicyStore>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ksiam_gateway::{Gateway, GatewayConfig, GatewayParts, KubeDirectory, LocalAuthorize};
//!
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let (directory, caches) = KubeDirectory::start(&client, &shutdown);
//! let authenticator = Arc::new(ksiam_token::Authenticator::new(keys.clone()).with_directory(directory));
//! let authorize = Arc::new(LocalAuthorize::new(ksiam_rbac::Authorizer::default(), store));
//! let config = GatewayConfig { upstream: Some(kube::Config::infer().await?), ..Default::default() };
//! let gateway = Gateway::new(GatewayParts {
//!     config, caches, authenticator, authorize,
//!     oidc: Some(ksiam_gateway::Oidc { issuer: "kubesphere".into(), keys }),
//!     registry: Default::default(),
//!     also_ready: None,
//! })?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! ksiam_gateway::serve(listener, gateway.router(), shutdown).await?;
//! # Ok(()) }
//! ```

mod authorize;
mod caches;
mod filter;
mod metrics;
pub use ksiam_rbac::path;
mod proxy;
pub mod query;
mod server;
mod tenant;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    response::{IntoResponse as _, Response},
    routing::{get, post},
};
use http::{HeaderValue, StatusCode, header};
use ksiam_rbac::Status;
use ksiam_token::{Authenticator, KeySet};
use parking_lot::RwLock;
use prometheus_client::registry::Registry;

pub use self::{
    authorize::{Authorize, AuthorizeError, AuthzDecision, LocalAuthorize},
    caches::{Cache, Caches, KubeDirectory, Objects},
    filter::RequestContext,
    server::{SHUTDOWN_GRACE, serve},
};

/// The JWKS path (under `/oauth/`, which the path allow-list opens to everyone).
pub const JWKS_PATH: &str = "/oauth/keys";
/// The OpenID Connect discovery path.
pub const OIDC_DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Gateway settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The host cluster's name: `/clusters/<host>/...` is served locally.
    pub host_cluster: String,
    /// Largest request body accepted (413 above).
    pub body_limit: usize,
    /// How long kube-apiserver may take to answer a request that is not long-running (watch, exec,
    /// attach, port-forward, proxy, follow logs); 504 after.
    pub request_timeout: Duration,
    /// How long connecting to kube-apiserver may take.
    pub connect_timeout: Duration,
    /// kube-apiserver and the gateway's own credentials. `None`: `/api` and `/apis` answer 503.
    pub upstream: Option<kube::Config>,
    /// Send proxied requests as the caller (`Impersonate-User`, `-Group`, `-Extra-*`), so kube-apiserver
    /// authorizes, executes and audits them as the caller; the gateway's own identity then needs only
    /// `impersonate`. On by default; off sends them with the gateway's own identity (KubeSphere's way).
    pub impersonate: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            host_cluster: "host".into(),
            body_limit: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            upstream: None,
            impersonate: true,
        }
    }
}

/// The OIDC discovery settings.
#[derive(Clone, Debug)]
pub struct Oidc {
    /// The `issuer` of the discovery document.
    pub issuer: String,
    /// The keys whose public halves the JWKS publishes.
    pub keys: KeySet,
}

/// What [`Gateway::new`] needs.
pub struct GatewayParts {
    /// Settings.
    pub config: GatewayConfig,
    /// The informer caches ([`Caches::start`], shared with [`KubeDirectory`]).
    pub caches: Arc<Caches>,
    /// Bearer-token authentication (the same one the TokenReview endpoint uses).
    pub authenticator: Arc<Authenticator>,
    /// Authorization.
    pub authorize: Arc<dyn Authorize>,
    /// OIDC discovery and JWKS; `None` answers 404 there.
    pub oidc: Option<Oidc>,
    /// The process's metrics registry: the gateway registers its metrics under `ksiam_gateway` and
    /// `/metrics` encodes the whole registry.
    pub registry: Arc<RwLock<Registry>>,
    /// Something else `/readyz` waits for (for example the token-Secret watch behind revocation).
    pub also_ready: Option<ReadyCheck>,
}

/// The metrics registry shared by the process's services.
pub type SharedRegistry = Arc<RwLock<Registry>>;

/// An extra readiness condition.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The upstream TLS or credential configuration is unusable.
    #[error("cannot configure the kube-apiserver client: {0}")]
    Upstream(#[source] kube::Error),
}

/// Shared state of every request.
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) caches: Arc<Caches>,
    pub(crate) authn: Arc<Authenticator>,
    pub(crate) authorize: Arc<dyn Authorize>,
    pub(crate) upstream: Option<proxy::Upstream>,
    pub(crate) oidc: RwLock<Option<(serde_json::Value, serde_json::Value)>>,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) registry: Arc<RwLock<Registry>>,
    pub(crate) also_ready: Option<ReadyCheck>,
}

/// The gateway: build it once, then serve [`Gateway::router`].
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.shared.config.host_cluster)
            .field("ready", &self.readiness().is_ready())
            .finish()
    }
}

/// Whether the gateway may take traffic: the authorizer has its policy, every cache has synced, and the
/// extra check (if any) passes.
#[derive(Clone)]
pub struct Readiness {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Readiness {
    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.shared.authorize.ready()
            && self.shared.caches.synced()
            && self.shared.also_ready.as_ref().is_none_or(|ready| ready())
    }
}

impl Gateway {
    /// Builds the gateway (the upstream TLS client, metrics registration).
    pub fn new(parts: GatewayParts) -> Result<Self, GatewayError> {
        let upstream = parts
            .config
            .upstream
            .as_ref()
            .map(|c| proxy::Upstream::new(c, parts.config.connect_timeout))
            .transpose()
            .map_err(GatewayError::Upstream)?;
        let metrics = metrics::Metrics::default();
        metrics.register(parts.registry.write().sub_registry_with_prefix("ksiam_gateway"));
        let oidc = parts.oidc.map(|o| oidc_documents(&o));
        Ok(Self {
            shared: Arc::new(Shared {
                config: parts.config,
                caches: parts.caches,
                authn: parts.authenticator,
                authorize: parts.authorize,
                upstream,
                oidc: RwLock::new(oidc),
                metrics,
                registry: parts.registry,
                also_ready: parts.also_ready,
            }),
        })
    }

    /// The readiness handle.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            shared: self.shared.clone(),
        }
    }

    /// Publishes new keys in the JWKS (after a rotation).
    pub fn set_oidc(&self, oidc: &Oidc) {
        *self.shared.oidc.write() = Some(oidc_documents(oidc));
    }

    /// The whole application: probes, then the filter chain in front of the APIs and the proxy.
    pub fn router(&self) -> Router {
        let shared = self.shared.clone();
        let apis = Router::new()
            .route(
                "/kapis/tenant.kubesphere.io/v1beta1/clusters",
                get(tenant::clusters),
            )
            .route(
                "/kapis/tenant.kubesphere.io/v1beta1/workspaces",
                get(tenant::workspaces),
            )
            .route(
                "/kapis/tenant.kubesphere.io/v1beta1/workspacetemplates",
                get(tenant::workspace_templates),
            )
            .route(
                "/kapis/tenant.kubesphere.io/v1beta1/namespaces",
                get(tenant::namespaces),
            )
            .route(
                "/kapis/tenant.kubesphere.io/v1beta1/workspaces/{workspace}",
                get(tenant::workspace),
            )
            .route(
                "/kapis/tenant.kubesphere.io/v1beta1/workspaces/{workspace}/namespaces",
                get(tenant::workspace_namespaces),
            )
            .route(
                "/kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews",
                post(tenant::subject_access_review),
            )
            .route("/version", get(version))
            .route("/metrics", get(metrics_handler))
            .route(OIDC_DISCOVERY_PATH, get(openid_configuration))
            .route(JWKS_PATH, get(jwks))
            .fallback(proxy::fallback)
            .with_state(shared.clone());
        let chain = tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                filter::filter,
            ))
            .service(apis);
        let readiness = self.readiness();
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/livez", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = readiness.is_ready();
                    async move {
                        if ready {
                            (StatusCode::OK, "ok")
                        } else {
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "not ready: waiting for the policy and caches",
                            )
                        }
                    }
                }),
            )
            .fallback_service(chain)
    }
}

fn oidc_documents(o: &Oidc) -> (serde_json::Value, serde_json::Value) {
    let jwks_uri = format!("{}{JWKS_PATH}", o.issuer.trim_end_matches('/'));
    (
        ksiam_token::openid_configuration(&o.issuer, &jwks_uri),
        o.keys.jwks(),
    )
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        })
        .to_string(),
    )
}

async fn metrics_handler(axum::extract::State(shared): axum::extract::State<Arc<Shared>>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &shared.registry.read()).is_err() {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics");
    }
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

async fn openid_configuration(axum::extract::State(shared): axum::extract::State<Arc<Shared>>) -> Response {
    match &*shared.oidc.read() {
        Some((discovery, _)) => json_response(StatusCode::OK, discovery.to_string()),
        None => text_response(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

async fn jwks(axum::extract::State(shared): axum::extract::State<Arc<Shared>>) -> Response {
    match &*shared.oidc.read() {
        Some((_, jwks)) => json_response(StatusCode::OK, jwks.to_string()),
        None => text_response(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// A `Status` response (`application/json`, `X-Content-Type-Options: nosniff`).
pub(crate) fn status_response(status: &Status, pretty: bool) -> Response {
    let mut resp = Response::new(Body::from(status.to_json(pretty)));
    *resp.status_mut() = StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Go's `http.Error`: the message, HTML-escaped, plus a newline, as plain text.
pub(crate) fn text_response(code: StatusCode, message: &str) -> Response {
    let body = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        + "\n";
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A JSON body.
pub(crate) fn json_response(code: StatusCode, json: String) -> Response {
    let mut resp = Response::new(Body::from(json));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
