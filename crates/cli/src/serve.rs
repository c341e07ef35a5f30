//! `ksiam all` and `ksiam controller`: the long-running services.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Args;
use ksiam_controller::Readiness;
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

/// Leader election: only the Lease holder runs the controllers.
#[derive(Args, Clone, Debug)]
pub struct LeaseArgs {
    /// Namespace of the leader Lease.
    #[arg(long, env = "KSIAM_LEASE_NAMESPACE", default_value = "kubesphere-system")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "KSIAM_LEASE_NAME", default_value = "ksiam-controller")]
    pub lease_name: String,
    /// This replica's identity; defaults to `$POD_NAME`, then the host name. A restarted replica with the
    /// same identity takes its Lease back at once.
    #[arg(long, env = "KSIAM_LEASE_IDENTITY")]
    pub lease_identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "KSIAM_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,
}

impl LeaseArgs {
    fn config(&self) -> ksiam_controller::lease::LeaseConfig {
        let identity = self
            .lease_identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| "ksiam".to_owned());
        let mut config =
            ksiam_controller::lease::LeaseConfig::new(&self.lease_namespace, &self.lease_name, identity);
        config.duration = std::time::Duration::from_secs(self.lease_duration_seconds);
        config.renew_every = config.duration / 5;
        config
    }
}

/// `ksiam controller` flags.
#[derive(Args, Clone, Debug)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub lease: LeaseArgs,
    /// Where `/livez`, `/readyz` and `/healthz` are served.
    #[arg(long, env = "KSIAM_ADMIN_LISTEN", default_value = "127.0.0.1:9093")]
    pub admin_listen: SocketAddr,
}

/// `ksiam all` flags.
#[derive(Args, Clone, Debug)]
pub struct AllArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub lease: LeaseArgs,
    /// Where the gateway (the ks-apiserver replacement, plain HTTP) listens.
    #[arg(long, env = "KSIAM_GATEWAY_LISTEN", default_value = "127.0.0.1:9090")]
    pub gateway_listen: SocketAddr,
    /// The host cluster's name: `/clusters/<name>/...` is served locally.
    #[arg(long, env = "KSIAM_HOST_CLUSTER", default_value = "host")]
    pub host_cluster: String,
    /// `AlwaysAllow`, `AlwaysDeny` or `RBAC` (KubeSphere's `authorization.mode`).
    #[arg(long, env = "KSIAM_AUTHORIZATION_MODE", default_value = "RBAC")]
    pub authorization: ksiam_rbac::Mode,
    /// Where the token service's gRPC API (`ksiam.token.v1.TokenService`: issue, verify, key and revocation
    /// streams) listens; not served when unset.
    #[arg(long, env = "KSIAM_TOKEN_GRPC_LISTEN")]
    pub token_grpc_listen: Option<SocketAddr>,
    /// Where the authorizer's gRPC API (`ksiam.authz.v1.Authorizer`) listens; not served when unset.
    #[arg(long, env = "KSIAM_AUTHZ_GRPC_LISTEN")]
    pub authz_grpc_listen: Option<SocketAddr>,
    /// How both gRPC APIs authenticate their clients.
    #[command(flatten)]
    pub grpc: crate::grpc::GrpcServerArgs,
    /// Where kube-apiserver's authorization (`/authorize`) and token (`/authenticate`) webhooks are served;
    /// not served when unset.
    #[arg(long, env = "KSIAM_AUTHZ_WEBHOOK_LISTEN")]
    pub authz_webhook_listen: Option<SocketAddr>,
    /// Serving certificate (PEM) of the kube-apiserver webhooks; plain HTTP without it.
    #[arg(long, env = "KSIAM_AUTHZ_TLS_CERT_FILE", requires = "authz_tls_key_file")]
    pub authz_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the kube-apiserver webhooks.
    #[arg(long, env = "KSIAM_AUTHZ_TLS_KEY_FILE", requires = "authz_tls_cert_file")]
    pub authz_tls_key_file: Option<PathBuf>,
    /// CA (PEM) of kube-apiserver's client certificate: the kube-apiserver webhooks then answer only clients
    /// it signed (kube-apiserver's webhook kubeconfigs name the certificate). Without it anyone who reaches
    /// the port can ask for decisions.
    #[arg(long, env = "KSIAM_AUTHZ_CLIENT_CA_FILE", requires = "authz_tls_cert_file")]
    pub authz_client_ca_file: Option<PathBuf>,
    /// Port of the Pod-injection webhook on 127.0.0.1 (0 picks a free one); it registers itself by URL with a
    /// self-signed certificate.
    #[arg(long, env = "KSIAM_WEBHOOK_PORT", default_value_t = 0)]
    pub webhook_port: u16,
    /// CA (PEM) of kube-apiserver's admission client certificate (its `--admission-control-config-file`):
    /// the Pod-injection and validating webhooks then answer only clients it signed.
    #[arg(long, env = "KSIAM_WEBHOOK_CLIENT_CA_FILE")]
    pub webhook_client_ca_file: Option<PathBuf>,
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
pub(crate) fn shutdown_on_signals(token: CancellationToken) {
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

/// Runs the controllers while this replica holds the leader Lease; an error means the Lease was lost.
async fn controllers(
    client: kube::Client,
    issuer: Issuer,
    lease: &LeaseArgs,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let issuer = Arc::new(ksiam_controller::UniqueIssuer::new(issuer));
    let ctx = Arc::new(
        ksiam_controller::serviceaccount::Context::new(client.clone(), issuer)
            .with_readiness(readiness.clone()),
    );
    ksiam_controller::lease::run_as_leader(client.clone(), lease.config(), shutdown, |stop| async move {
        tokio::join!(
            ksiam_controller::serviceaccount::run(ctx.clone(), stop.clone().cancelled_owned()),
            ksiam_controller::filler::run(ctx, stop.clone().cancelled_owned()),
            ksiam_controller::roles::run(client, readiness, || stop.clone().cancelled_owned()),
        );
    })
    .await?;
    Ok(())
}

/// `ksiam controller`.
pub async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let issuer = issuer(&args.common)?;
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone());
    let readiness = Readiness::default();
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    let (result, ()) = tokio::join!(
        async {
            let result = controllers(client, issuer, &args.lease, readiness.clone(), shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        health::serve(listener, readiness.clone(), shutdown.clone()),
    );
    result
}

/// `ksiam all`: every service in one process, wired in memory.
///
/// ```text
/// policy watches ─► PolicyStore ─┬─► gateway (LocalAuthorize)
///                                ├─► gRPC Authorizer              (KSIAM_AUTHZ_GRPC_LISTEN)
///                                └─► SubjectAccessReview webhook  (KSIAM_AUTHZ_WEBHOOK_LISTEN)
/// token Secrets ─► LiveTokens ─┐
/// informer caches ─► KubeDirectory ─► Authenticator ─► gateway, TokenReview webhook
/// Pod-injection webhook; controllers (while holding the leader Lease)
/// ```
pub async fn all(args: AllArgs) -> anyhow::Result<()> {
    let secret = crate::token::read_secret(&args.common.jwt_secret_file)?;
    let keys = KeySet::legacy(&secret);
    let issuer = Issuer::new(keys.clone(), args.common.issuer.clone());
    let upstream = kube::Config::infer()
        .await
        .context("cannot configure the Kubernetes client")?;
    let client = kube::Client::try_from(upstream.clone()).context("cannot build the Kubernetes client")?;
    // gRPC is served only when its security is configured (checked before anything starts).
    let grpc_security = if args.token_grpc_listen.is_some() || args.authz_grpc_listen.is_some() {
        Some(Arc::new(args.grpc.security()?))
    } else {
        None
    };
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone());
    let readiness = Readiness::default();
    let registry = ksiam_gateway::SharedRegistry::default();
    let mut tasks = tokio::task::JoinSet::new();

    // Authorization: the policy, watched into one in-process store.
    let store = Arc::new(ksiam_rbac::PolicyStore::default());
    let authz_metrics = ksiam_authz::Metrics::new(&mut registry.write());
    tasks.spawn(ksiam_authz::watch(
        client.clone(),
        store.clone(),
        authz_metrics.clone(),
        shutdown.clone(),
    ));
    let authorizer = ksiam_rbac::Authorizer::new(args.authorization);
    let authz = ksiam_authz::AuthzService::new(store.clone(), authorizer, authz_metrics);

    // Authentication: revocation through the token Secrets (the token service keeps the live set and
    // streams its changes), existence through the informer caches.
    let tokens = ksiam_token::grpc::TokenService::new(keys.clone(), args.common.issuer.clone());
    tokens.enforce_live_tokens(true);
    let crate::authz::HostAuthentication {
        authenticator,
        caches,
        live_watch,
    } = crate::authz::host_authentication(
        &client,
        keys.clone(),
        tokens.live_tokens().clone(),
        Arc::new(tokens.clone()),
        &readiness,
        &shutdown,
    );
    tasks.spawn(async move { drop(live_watch.await) });
    if let (Some(addr), Some(security)) = (args.token_grpc_listen, grpc_security.clone()) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        info!(listen = %addr, plaintext = security.is_plaintext(), "token service gRPC API");
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let stop = shutdown.clone();
            if let Err(e) =
                ksiam_token::grpc::serve(listener, tokens, &security, stop.cancelled_owned()).await
            {
                tracing::error!(error = %anyhow::Error::from(e), "token service gRPC server failed");
                shutdown.cancel();
            }
        });
    }

    if let (Some(addr), Some(security)) = (args.authz_grpc_listen, grpc_security) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        info!(listen = %addr, plaintext = security.is_plaintext(), "authorizer gRPC API");
        let (authz, shutdown) = (authz.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = ksiam_authz::serve_grpc(listener, authz, &security, shutdown.clone()).await {
                tracing::error!(error = %anyhow::Error::from(e), "authorizer gRPC server failed");
                shutdown.cancel();
            }
        });
    }
    if let Some(addr) = args.authz_webhook_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let tls = args
            .authz_tls_cert_file
            .clone()
            .zip(args.authz_tls_key_file.clone())
            .map(|(cert, key)| ksiam_authz::WebhookTls {
                cert,
                key,
                client_ca: args.authz_client_ca_file.clone(),
            });
        info!(listen = %addr, tls = tls.is_some(), "kube-apiserver authorization and token webhooks");
        let router = ksiam_authz::webhook::webhook_router(ksiam_authz::webhook::WebhookState {
            authz: authz.clone(),
            authenticator: Some(authenticator.clone()),
        })?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) =
                ksiam_authz::webhook::serve_webhooks(listener, router, tls, shutdown.clone()).await
            {
                tracing::error!(error = %e, "kube-apiserver webhook server failed");
                shutdown.cancel();
            }
        });
    }

    let webhook = {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        let config = ksiam_webhook::Config {
            client_ca: args.webhook_client_ca_file.clone(),
            ..ksiam_webhook::Config::loopback(args.webhook_port)
        };
        // The validating checks (workspace manager, namespace labels) ask the same in-process store.
        let admission: Arc<dyn ksiam_webhook::Authorize> =
            Arc::new(ksiam_webhook::PolicyAuthorizer::new(authorizer, store.clone()));
        tokio::spawn(async move {
            ksiam_webhook::run_with_admission(config, client, Some(admission), shutdown.cancelled_owned())
                .await
        })
    };
    wait_for_webhook_registration(&client, &webhook).await?;

    let ready = readiness.clone();
    let gateway = ksiam_gateway::Gateway::new(ksiam_gateway::GatewayParts {
        config: ksiam_gateway::GatewayConfig {
            host_cluster: args.host_cluster.clone(),
            upstream: Some(upstream),
            ..ksiam_gateway::GatewayConfig::default()
        },
        caches,
        authenticator,
        authorize: Arc::new(ksiam_gateway::LocalAuthorize::new(authorizer, store)),
        oidc: Some(ksiam_gateway::Oidc {
            issuer: args.common.issuer.clone(),
            keys,
        }),
        registry,
        also_ready: Some(Arc::new(move || ready.is_ready())),
    })?;
    let listener = tokio::net::TcpListener::bind(args.gateway_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.gateway_listen))?;
    info!(listen = %args.gateway_listen, "ksiam all started");
    let (controllers, gateway, webhook) = tokio::join!(
        async {
            let result = controllers(client, issuer, &args.lease, readiness.clone(), shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let result = ksiam_gateway::serve(listener, gateway.router(), shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        webhook,
    );
    while tasks.join_next().await.is_some() {}
    webhook
        .context("webhook task panicked")?
        .context("webhook failed")?;
    gateway.context("gateway failed")?;
    controllers
}

async fn wait_for_webhook_registration(
    client: &kube::Client,
    webhook: &tokio::task::JoinHandle<Result<(), ksiam_webhook::Error>>,
) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client.clone());
    let validating: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(client.clone());
    for _ in 0..300 {
        anyhow::ensure!(!webhook.is_finished(), "the webhook stopped during start-up");
        let registered = api
            .get_opt(ksiam_api::constants::POD_INJECTOR_WEBHOOK_CONFIGURATION)
            .await?
            .and_then(|c| c.webhooks)
            .is_some_and(|w| w.iter().any(|w| w.client_config.ca_bundle.is_some()));
        let checks_registered = validating
            .get_opt(ksiam_webhook::register::ADMISSION_WEBHOOK_CONFIGURATION)
            .await?
            .and_then(|c| c.webhooks)
            .is_some_and(|w| w.iter().all(|w| w.client_config.ca_bundle.is_some()));
        if registered && checks_registered {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("the webhook did not register itself within 30 s")
}

/// `/livez`, `/healthz` and `/readyz` (until the gateway serves them on its port in `ksiam all`).
mod health {
    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use ksiam_controller::Readiness;
    use tokio_util::sync::CancellationToken;

    pub async fn serve(listener: tokio::net::TcpListener, readiness: Readiness, shutdown: CancellationToken) {
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
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let readiness = readiness.clone();
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/healthz" | "/livez" => (StatusCode::OK, "ok".to_owned()),
                            "/readyz" if readiness.is_ready() => (StatusCode::OK, "ok".to_owned()),
                            "/readyz" => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!("not ready: waiting for {}", readiness.pending().join(", ")),
                            ),
                            _ => (StatusCode::NOT_FOUND, "404 page not found".to_owned()),
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}
