//! The one HTTP accept loop of every ksiam server (gateway, admin, kube-apiserver's webhooks, admission):
//! HTTP/1.1 and HTTP/2, upgrades, plain or TLS with certificates re-read from files and an optional client
//! CA, the peer address as `ConnectInfo`, and a bounded graceful shutdown.

use std::{future::Future, net::SocketAddr, path::Path, pin::Pin, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::tls::{RELOAD_INTERVAL, ServerTls, TlsError};

/// How long open connections (watches included) may take to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send the request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate or the client CA could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

type Reload = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A bound listener, plain or TLS, ready to serve a router.
pub struct HttpServer {
    name: &'static str,
    listener: TcpListener,
    tls: Option<(TlsAcceptor, Option<Reload>)>,
    grace: Duration,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.name)
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port); `name` names the server in logs.
    pub async fn bind(name: &'static str, addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Self::from_listener(name, listener))
    }

    /// Serves on an already bound listener.
    pub fn from_listener(name: &'static str, listener: TcpListener) -> Self {
        Self {
            name,
            listener,
            tls: None,
            grace: SHUTDOWN_GRACE,
        }
    }

    /// Serves TLS with the current certificate of `tls` (re-read from its files every
    /// [`RELOAD_INTERVAL`] while serving) and, with `client_ca`, only to clients presenting a certificate
    /// that CA signed.
    pub fn with_tls(mut self, tls: &ServerTls, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let config = tls.server_config_verifying(client_ca)?;
        let reload = tls
            .reload_task(RELOAD_INTERVAL)
            .map(|task| Box::pin(task) as Reload);
        self.tls = Some((TlsAcceptor::from(Arc::new(config)), reload));
        Ok(self)
    }

    /// How long open connections may take to finish after shutdown (default [`SHUTDOWN_GRACE`]).
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `app` until `shutdown` completes, then lets open connections finish for up to the grace
    /// period. Handlers can read the peer address as `ConnectInfo<SocketAddr>`.
    pub async fn serve(self, app: Router, shutdown: impl Future<Output = ()> + Send) {
        let Self {
            name,
            listener,
            tls,
            grace,
        } = self;
        let (acceptor, reload) = match tls {
            Some((acceptor, reload)) => (Some(acceptor), reload),
            None => (None, None),
        };
        let _reload = reload.map(|task| AbortOnDrop(tokio::spawn(task)));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(server = name, %addr, tls = acceptor.is_some(), "listening");
        }
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(server = name, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let watcher = graceful.watcher();
            let app = app.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let result = match acceptor {
                    None => watcher.watch(connection(tcp, peer, app)).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => watcher.watch(connection(stream, peer, app)).await,
                            Ok(Err(error)) => {
                                tracing::debug!(server = name, %peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(server = name, %peer, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(server = name, %peer, %error, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!(server = name, "shutting down");
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!(
                server = name,
                "connections still open after the shutdown grace period"
            );
        }
    }
}

/// One connection: HTTP/1.1 (with upgrades) or HTTP/2, the peer address in every request's extensions.
fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app.map_request(
        move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        },
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned()
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
