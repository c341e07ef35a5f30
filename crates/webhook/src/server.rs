//! The HTTPS server: axum routes over rustls on a tokio listener, with graceful shutdown.
//!
//! ```text
//! ksiam_runtime::http (TLS with CertResolver, client CA) ─► axum Router
//!                                                                   POST /serviceaccount-pod-injector ─► Injector
//!                                                                   POST /validate-workspacetemplates ─┐
//!                                                                   POST /validate-namespaces ─────────┴► admission
//!                                                                   GET  /healthz
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use ksiam_api::constants::POD_INJECTOR_WEBHOOK_PATH;
use ksiam_runtime::http::{HttpServer, ServeError};

use crate::admission::{Authorize, NAMESPACE_WEBHOOK_PATH, WORKSPACE_TEMPLATE_WEBHOOK_PATH, validate};
use crate::inject::Injector;
use crate::lookup::Lookup;
use crate::review::{encode_review, parse_review};
use crate::tls::{ServerTls, TlsError, TlsSource};

/// Largest accepted AdmissionReview body.
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;
/// Path of the health endpoint.
pub const HEALTHZ_PATH: &str = "/healthz";
/// How long open connections may take to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The routes: `POST /serviceaccount-pod-injector` and `GET /healthz`.
pub fn router<L: Lookup + 'static>(injector: Arc<Injector<L>>) -> Router {
    router_with_admission(injector, None)
}

/// The routes of [`router`], plus the validating checks of [`crate::admission`] when `admission` is given:
/// `POST /validate-workspacetemplates` and `POST /validate-namespaces`.
pub fn router_with_admission<L: Lookup + 'static>(
    injector: Arc<Injector<L>>,
    admission: Option<Arc<dyn Authorize>>,
) -> Router {
    let mut app = Router::new()
        .route(POD_INJECTOR_WEBHOOK_PATH, post(admit::<L>))
        .route(HEALTHZ_PATH, get(healthz))
        .with_state(injector);
    if let Some(authz) = admission {
        app = app.merge(
            Router::new()
                .route(WORKSPACE_TEMPLATE_WEBHOOK_PATH, post(check))
                .route(NAMESPACE_WEBHOOK_PATH, post(check))
                .with_state(authz),
        );
    }
    app.layer(DefaultBodyLimit::max(BODY_LIMIT))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn admit<L: Lookup + 'static>(State(injector): State<Arc<Injector<L>>>, body: Bytes) -> Response {
    let review = match parse_review(&body) {
        Ok(review) => review,
        Err(error) => {
            tracing::debug!(%error, "rejected a malformed AdmissionReview");
            return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
        }
    };
    let response = injector.mutate(&review.request, review.object.as_ref()).await;
    tracing::debug!(
        uid = %review.request.uid,
        namespace = review.request.namespace.as_deref().unwrap_or_default(),
        name = %review.request.name,
        allowed = response.allowed,
        code = response.result.code,
        patched = response.patch.is_some(),
        "admission"
    );
    review_response(response)
}

async fn check(State(authz): State<Arc<dyn Authorize>>, body: Bytes) -> Response {
    let review = match parse_review(&body) {
        Ok(review) => review,
        Err(error) => {
            tracing::debug!(%error, "rejected a malformed AdmissionReview");
            return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
        }
    };
    let response = validate(&review, authz.as_ref());
    let request = &review.request;
    if !response.allowed {
        tracing::info!(
            uid = %request.uid,
            user = request.user_info.username.as_deref().unwrap_or_default(),
            resource = %request.resource.resource,
            subresource = request.sub_resource.as_deref().unwrap_or_default(),
            name = %request.name,
            code = response.result.code,
            message = %response.result.message,
            "admission denied"
        );
    }
    review_response(response)
}

fn review_response(response: kube::core::admission::AdmissionResponse) -> Response {
    match encode_review(response) {
        Ok(json) => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the AdmissionReview: {error}\n"),
        )
            .into_response(),
    }
}

// === impl Server ===

/// A bound listener with its serving certificate, ready to serve (over `ksiam_runtime::http`, the accept
/// loop every ksiam server shares).
#[derive(Debug)]
pub struct Server {
    http: HttpServer,
    tls: ServerTls,
    client_ca: Option<std::path::PathBuf>,
}

impl Server {
    /// Loads the certificate and binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, tls: &TlsSource) -> Result<Self, ServerError> {
        let tls = ServerTls::load(tls)?;
        let http = HttpServer::bind("admission-webhooks", addr)
            .await
            .map_err(|e| match e {
                ServeError::Bind { addr, source } => ServerError::Bind { addr, source },
                ServeError::Tls(e) => ServerError::Tls(e),
            })?;
        Ok(Self {
            http,
            tls,
            client_ca: None,
        })
    }

    /// Accepts only clients presenting a certificate that the CA in `client_ca` signed.
    #[must_use]
    pub fn require_client_certificates(mut self, client_ca: Option<std::path::PathBuf>) -> Self {
        self.client_ca = client_ca;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }

    /// The serving certificate and CA bundle.
    pub fn tls(&self) -> &ServerTls {
        &self.tls
    }

    /// Serves `injector` until `shutdown` completes, then lets open connections finish (up to
    /// [`SHUTDOWN_GRACE`]). Certificate files are re-read while it serves.
    pub async fn serve<L: Lookup + 'static>(
        self,
        injector: Injector<L>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        self.serve_with_admission(injector, None, shutdown).await
    }

    /// [`Server::serve`], also serving the validating checks when `admission` is given.
    pub async fn serve_with_admission<L: Lookup + 'static>(
        self,
        injector: Injector<L>,
        admission: Option<Arc<dyn Authorize>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let app = router_with_admission(Arc::new(injector), admission);
        self.http
            .with_tls(&self.tls, self.client_ca.as_deref())?
            .with_grace(SHUTDOWN_GRACE)
            .serve(app, shutdown)
            .await;
        Ok(())
    }
}

/// Aborts a background task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
