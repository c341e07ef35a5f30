//! Serving the gateway: plain HTTP/1.1 and HTTP/2 (prior knowledge) with upgrades and a bounded graceful
//! shutdown, through the accept loop every ksiam server shares (`ksiam_runtime::http`).

use axum::Router;
use ksiam_runtime::http::HttpServer;
pub use ksiam_runtime::http::SHUTDOWN_GRACE;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets open requests finish for up to
/// [`SHUTDOWN_GRACE`]. The peer address reaches handlers as `ConnectInfo` (the proxy's X-Forwarded-For).
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    HttpServer::from_listener("gateway", listener)
        .serve(app, shutdown.cancelled_owned())
        .await;
    Ok(())
}
