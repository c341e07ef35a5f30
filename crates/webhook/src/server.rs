//! The HTTPS server: axum routes over rustls on a tokio listener, with graceful shutdown.
//!
//! ```text
//! TcpListener ─accept─► task per connection: TLS handshake (CertResolver) ─► hyper http1 ─► axum Router
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
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ksiam_api::constants::POD_INJECTOR_WEBHOOK_PATH;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::{Authorize, NAMESPACE_WEBHOOK_PATH, WORKSPACE_TEMPLATE_WEBHOOK_PATH, validate};
use crate::inject::Injector;
use crate::lookup::Lookup;
use crate::review::{encode_review, parse_review};
use crate::tls::{RELOAD_INTERVAL, ServerTls, TlsError, TlsSource};

/// Largest accepted AdmissionReview body.
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;
/// Path of the health endpoint.
pub const HEALTHZ_PATH: &str = "/healthz";
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send the request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
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

/// A bound listener with its serving certificate, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    tls: ServerTls,
    client_ca: Option<std::path::PathBuf>,
}

impl Server {
    /// Loads the certificate and binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, tls: &TlsSource) -> Result<Self, ServerError> {
        let tls = ServerTls::load(tls)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self {
            listener,
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
        self.listener.local_addr()
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
        let acceptor = TlsAcceptor::from(Arc::new(
            self.tls.server_config_verifying(self.client_ca.as_deref())?,
        ));
        let app = router_with_admission(Arc::new(injector), admission);
        let _reloader = self
            .tls
            .reload_task(RELOAD_INTERVAL)
            .map(|task| AbortOnDrop(tokio::spawn(task)));
        let graceful = GracefulShutdown::new();
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(%addr, "serving the pod injector webhook");
        }

        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(app.clone());
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }

        drop(self.listener);
        tracing::info!("pod injector webhook shutting down");
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace period");
        }
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
