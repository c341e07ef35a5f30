//! `ksiam gateway`: the ks-apiserver replacement on its own, with the authorizer in process.
//!
//! ```text
//! kube watches ─► ksiam_authz::watch ─► PolicyStore ─► LocalAuthorize ─┐
//! token Secrets ─► LiveTokens ─┐                                       │
//! informer caches ─► KubeDirectory ─► Authenticator ──────────────────►├─► ksiam_gateway::Gateway ─► listener
//! ```

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Args;
use ksiam_gateway::{Gateway, GatewayConfig, GatewayParts, LocalAuthorize, Oidc, SharedRegistry};
use ksiam_rbac::{Authorizer, Mode, PolicyStore};
use ksiam_token::{KeySet, LiveTokens};
use tokio_util::sync::CancellationToken;

/// `ksiam gateway` flags.
#[derive(Args, Clone, Debug)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub common: crate::serve::Common,
    /// Where the gateway listens (plain HTTP).
    #[arg(long, env = "KSIAM_GATEWAY_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// The host cluster's name: `/clusters/<name>/...` is served here.
    #[arg(long, env = "KSIAM_HOST_CLUSTER", default_value = "host")]
    pub host_cluster: String,
    /// `AlwaysAllow`, `AlwaysDeny` or `RBAC`.
    #[arg(long, env = "KSIAM_AUTHORIZATION_MODE", default_value = "RBAC")]
    pub authorization: Mode,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "KSIAM_GATEWAY_BODY_LIMIT", default_value_t = 32 * 1024 * 1024)]
    pub body_limit: usize,
    /// Seconds kube-apiserver may take to answer a request that is not long-running.
    #[arg(long, env = "KSIAM_GATEWAY_REQUEST_TIMEOUT_SECONDS", default_value_t = 60)]
    pub request_timeout_seconds: u64,
}

/// Runs the gateway until SIGINT/SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let secret = crate::token::read_secret(&args.common.jwt_secret_file)?;
    let keys = KeySet::legacy(&secret);
    let upstream = kube::Config::infer()
        .await
        .context("cannot configure the Kubernetes client")?;
    let client = kube::Client::try_from(upstream.clone()).context("cannot build the Kubernetes client")?;
    let shutdown = CancellationToken::new();
    crate::serve::shutdown_on_signals(shutdown.clone());
    let registry = SharedRegistry::default();

    // Authorization: the policy watched into an in-process store.
    let store = Arc::new(PolicyStore::default());
    let authz_metrics = ksiam_authz::Metrics::new(&mut registry.write());
    let policy = tokio::spawn(ksiam_authz::watch(
        client.clone(),
        store.clone(),
        authz_metrics,
        shutdown.clone(),
    ));

    // Authentication: revocation through the token Secrets, existence through the caches.
    let readiness = ksiam_controller::Readiness::default();
    let live = Arc::new(LiveTokens::default());
    let crate::authz::HostAuthentication {
        authenticator,
        caches,
        live_watch,
    } = crate::authz::host_authentication(&client, keys.clone(), live.clone(), live, &readiness, &shutdown);

    let gateway = Gateway::new(GatewayParts {
        config: GatewayConfig {
            host_cluster: args.host_cluster,
            body_limit: args.body_limit,
            request_timeout: Duration::from_secs(args.request_timeout_seconds),
            upstream: Some(upstream),
            ..GatewayConfig::default()
        },
        caches,
        authenticator,
        authorize: Arc::new(LocalAuthorize::new(Authorizer::new(args.authorization), store)),
        oidc: Some(Oidc {
            issuer: args.common.issuer.clone(),
            keys,
        }),
        registry,
        also_ready: Some(Arc::new(move || readiness.is_ready())),
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "ksiam gateway started");
    ksiam_gateway::serve(listener, gateway.router(), shutdown.clone()).await?;
    shutdown.cancel();
    let _ = tokio::join!(policy, live_watch);
    Ok(())
}
