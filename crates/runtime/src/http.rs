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
/// Connections served at once by default; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Concurrent HTTP/2 streams per connection (Go's default, which kube-apiserver's clients expect).
pub const MAX_CONCURRENT_STREAMS: u32 = 250;

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
    max_connections: usize,
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
            max_connections: MAX_CONNECTIONS,
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

    /// How many connections are served at once (default [`MAX_CONNECTIONS`]); while that many are open the
    /// server stops accepting, so further clients wait in the kernel's listen backlog instead of costing
    /// memory here.
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
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
            max_connections,
        } = self;
        let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
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
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
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
                let _slot = slot;
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
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
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

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use axum::routing::get;

    use super::*;

    fn get_once(stream: &mut std::net::TcpStream) -> std::io::Result<String> {
        stream.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_the_peer_address_and_holds_back_connections_over_the_limit() {
        let server = HttpServer::bind("test", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
            .with_max_connections(1);
        let addr = server.local_addr().unwrap();
        let app = Router::new().route(
            "/who",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = tokio::spawn(server.serve(app, stop.clone().cancelled_owned()));
        let outcome = tokio::task::spawn_blocking(move || {
            let mut first = std::net::TcpStream::connect(addr).unwrap();
            let answer = get_once(&mut first).unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.ends_with("127.0.0.1"),
                "{answer}"
            );
            // The second connection is accepted by the kernel but not served while the first is open.
            let mut second = std::net::TcpStream::connect(addr).unwrap();
            second.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            assert!(get_once(&mut second).is_err(), "served over the connection limit");
            drop(first);
            second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 512];
            let n = second.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .await
        .unwrap();
        assert!(outcome.starts_with("HTTP/1.1 200"), "{outcome}");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("graceful shutdown")
            .unwrap();
    }
}
