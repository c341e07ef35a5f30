//! `ksiam all` and `ksiam controller`: the long-running services.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Args;
use ksiam_token::{DEFAULT_ISSUER, Issuer, KeySet};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Flags shared by the services.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// File holding the HS256 secret (KubeSphere's `authentication.issuer.jwtSecret`).
    #[arg(long, env = "KSIAM_JWT_SECRET_FILE")]
    pub jwt_secret_file: PathBuf,
    /// The `iss` claim of issued tokens.
    #[arg(long, env = "KSIAM_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// Log format.
    #[arg(long, env = "KSIAM_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
}

/// `ksiam all` flags.
#[derive(Args, Clone, Debug)]
pub struct AllArgs {
    #[command(flatten)]
    pub common: Common,
    /// Where the gateway (for now: health endpoints) listens.
    #[arg(long, env = "KSIAM_GATEWAY_LISTEN", default_value = "127.0.0.1:9090")]
    pub gateway_listen: SocketAddr,
}

pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ksiam=info,ksiam_controller=info,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn issuer(common: &Common) -> anyhow::Result<Issuer> {
    let secret = crate::token::read_secret(&common.jwt_secret_file)?;
    Ok(Issuer::new(KeySet::legacy(&secret), common.issuer.clone()))
}

/// Cancels `token` on SIGINT or SIGTERM.
fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down");
        token.cancel();
    });
}

async fn controllers(client: kube::Client, issuer: Issuer, shutdown: CancellationToken) {
    let ctx = Arc::new(ksiam_controller::serviceaccount::Context::new(
        client.clone(),
        Arc::new(issuer),
    ));
    tokio::join!(
        ksiam_controller::serviceaccount::run(ctx.clone(), shutdown.clone().cancelled_owned()),
        ksiam_controller::filler::run(ctx, shutdown.clone().cancelled_owned()),
        ksiam_controller::roles::run(client, || shutdown.clone().cancelled_owned()),
    );
}

/// `ksiam controller`.
pub async fn controller(common: Common) -> anyhow::Result<()> {
    let issuer = issuer(&common)?;
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone());
    controllers(client, issuer, shutdown).await;
    Ok(())
}

/// `ksiam all`: every service in one process.
pub async fn all(args: AllArgs) -> anyhow::Result<()> {
    let issuer = issuer(&args.common)?;
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    let listener = tokio::net::TcpListener::bind(args.gateway_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.gateway_listen))?;
    info!(listen = %args.gateway_listen, "ksiam all started");
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone());
    tokio::join!(
        controllers(client, issuer, shutdown.clone()),
        health::serve(listener, shutdown)
    );
    Ok(())
}

/// A minimal health server on the gateway port until the gateway replaces it.
mod health {
    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_util::sync::CancellationToken;

    pub async fn serve(listener: tokio::net::TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let (status, body) = match req.uri().path() {
                        "/healthz" | "/livez" | "/readyz" => (StatusCode::OK, "ok"),
                        _ => (StatusCode::NOT_FOUND, "404 page not found"),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}
