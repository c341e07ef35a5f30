//! One wiring for every mode. A mode is a [`Plan`]: which parts run in this process. The parts are built
//! here, once, in one order, and shared by whatever needs them; `ksiam all` is the plan with every part,
//! so it is exactly the union of the single modes and nothing can drift between them.
//!
//! ```text
//! process:  signals ─► shutdown · Readiness · Registry ─► admin server (/livez /readyz /metrics)
//! keys ─► TokenService (live token set, key and revocation streams) ─┬─► token gRPC        (token_grpc)
//!                                                                     └─► Authenticator ◄── informer caches
//! policy watches ─► PolicyStore ─┬─► gateway (LocalAuthorize), or RemoteAuthorize ─► `ksiam authz` gRPC
//!                                ├─► authorizer gRPC                                  (authz_grpc)
//!                                ├─► SubjectAccessReview/TokenReview webhooks         (authz_webhooks)
//!                                └─► admission checks ─► Pod injection + validating webhooks (admission)
//! controllers, while holding the leader Lease                                          (controllers)
//! ```

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use ksiam_rbac::{Authorizer, PolicyStore};
use ksiam_runtime::{CancellationToken, Readiness, SharedRegistry, http::HttpServer, limit::InflightLimits};
use ksiam_token::{Issuer, KeySet};
use tracing::info;

use crate::{
    args::*,
    remote::{RemoteAuthorize, RemoteIssuer},
};

/// The parts one process runs.
pub struct Plan {
    /// The mode's name, for messages.
    pub mode: &'static str,
    pub service: ServiceArgs,
    pub keys: KeyArgs,
    pub authorization: ModeArg,
    /// A remote authorizer for the gateway instead of the policy in process.
    pub remote_authz: Option<String>,
    /// A remote token service whose revocations the authenticator follows instead of watching Secrets.
    pub remote_tokens: Option<String>,
    /// The identity this process presents to remote services.
    pub grpc_client: GrpcClientArgs,
    pub grpc: GrpcServerArgs,
    pub controllers: Option<LeaseArgs>,
    pub gateway: Option<GatewayArgs>,
    pub authz_webhooks: Option<AuthzWebhookArgs>,
    pub admission: Option<AdmissionArgs>,
    pub token_grpc: Option<SocketAddr>,
    pub authz_grpc: Option<SocketAddr>,
}

impl Plan {
    fn authenticates(&self) -> bool {
        self.gateway.is_some() || self.authz_webhooks.is_some()
    }

    fn needs_policy(&self) -> bool {
        (self.gateway.is_some() && self.remote_authz.is_none())
            || self.authz_webhooks.is_some()
            || self.authz_grpc.is_some()
            || self.admission.is_some()
    }
}

/// The tasks of the process: the first one that fails (or a server that stops by itself) stops all.
struct Tasks {
    set: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: CancellationToken,
}

impl Tasks {
    fn spawn(&mut self, name: &'static str, fut: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.set.spawn(async move {
            let result = fut.await;
            if let Err(e) = &result {
                tracing::error!(part = name, error = %format!("{e:#}"), "stopped with an error");
            } else if !shutdown.is_cancelled() {
                tracing::warn!(part = name, "stopped before shutdown");
            }
            shutdown.cancel();
            (name, result)
        });
    }

    async fn join(mut self) -> anyhow::Result<()> {
        let mut first = Ok(());
        while let Some(joined) = self.set.join_next().await {
            let (name, result) = joined.context("a task panicked")?;
            if first.is_ok()
                && let Err(e) = result
            {
                first = Err(e.context(format!("{name} failed")));
            }
        }
        first
    }
}

/// Runs `plan` until SIGINT/SIGTERM or until one of its parts fails.
pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let mut p = Process::start(plan).await?;
    p.policy();
    p.authentication()?;
    p.grpc_servers().await?;
    p.kube_apiserver_webhooks().await?;
    p.admission().await?;
    p.gateway().await?;
    p.controllers()?;
    info!(mode = p.plan.mode, "started");
    p.tasks.join().await
}

/// What the parts of one process share: the plan, the Kubernetes client, shutdown, readiness, metrics,
/// the tasks, and the parts built so far.
struct Process {
    plan: Plan,
    upstream: kube::Config,
    client: kube::Client,
    shutdown: CancellationToken,
    readiness: Readiness,
    registry: SharedRegistry,
    tasks: Tasks,
    authorizer: Authorizer,
    grpc_security: Option<Arc<ksiam_token::grpc_auth::GrpcSecurity>>,
    keys: Option<KeySet>,
    /// The policy store (filled only when the plan needs the policy in process).
    store: Arc<PolicyStore>,
    authz: ksiam_authz::AuthzService,
    /// The token service: the live token set, and its gRPC API when served.
    tokens: Option<ksiam_token::grpc::TokenService>,
    authentication: Option<(Arc<ksiam_token::Authenticator>, Arc<ksiam_gateway::Caches>)>,
}

impl Process {
    /// Checks the configuration, then starts the process-wide parts: signals, readiness, registry and
    /// the admin server.
    async fn start(plan: Plan) -> anyhow::Result<Self> {
        let authorizer = Authorizer::new(plan.authorization.into());
        // Checked before anything starts: gRPC only with its security configured.
        let grpc_security = if plan.token_grpc.is_some() || plan.authz_grpc.is_some() {
            Some(Arc::new(plan.grpc.security()?))
        } else {
            None
        };
        // The controller needs the key only when it issues tokens itself.
        let signs = plan.controllers.is_some() && plan.remote_tokens.is_none();
        let keys = if plan.authenticates() || signs || plan.token_grpc.is_some() {
            Some(plan.keys.required(plan.mode)?)
        } else {
            plan.keys
                .jwt_secret_file
                .as_ref()
                .map(|_| plan.keys.required(plan.mode))
                .transpose()?
        };
        let upstream = kube::Config::infer()
            .await
            .context("cannot configure the Kubernetes client (in-cluster or kubeconfig)")?;
        let client =
            kube::Client::try_from(upstream.clone()).context("cannot build the Kubernetes client")?;

        let shutdown = ksiam_runtime::signals::shutdown_on_signals();
        let readiness = Readiness::default();
        let registry = SharedRegistry::default();
        let mut tasks = Tasks {
            set: tokio::task::JoinSet::new(),
            shutdown: shutdown.clone(),
        };
        let admin = HttpServer::bind("admin", plan.service.admin.admin_listen).await?;
        let app = ksiam_runtime::admin::router(readiness.clone(), registry.clone());
        let stop = shutdown.clone();
        tasks.spawn("admin server", async move {
            admin.serve(app, stop.cancelled_owned()).await;
            Ok(())
        });
        let store = Arc::new(PolicyStore::default());
        let authz_metrics = ksiam_authz::Metrics::new(&mut registry.write());
        let authz = ksiam_authz::AuthzService::new(store.clone(), authorizer, authz_metrics);
        let tokens = keys.as_ref().map(|keys| {
            let tokens = ksiam_token::grpc::TokenService::new(keys.clone(), plan.keys.issuer.clone());
            tokens.enforce_live_tokens(true);
            tokens
        });
        Ok(Self {
            plan,
            upstream,
            client,
            shutdown,
            readiness,
            registry,
            tasks,
            authorizer,
            grpc_security,
            keys,
            store,
            authz,
            tokens,
            authentication: None,
        })
    }

    /// The policy, watched into the one in-process store (when some part decides in process).
    fn policy(&mut self) {
        if !self.plan.needs_policy() {
            return;
        }
        let ready = self.readiness.register("policy");
        let (client, watched, metrics, stop) = (
            self.client.clone(),
            self.store.clone(),
            self.authz.metrics().clone(),
            self.shutdown.clone(),
        );
        self.tasks.spawn("policy watches", async move {
            ksiam_authz::watch(client, watched, metrics, stop).await;
            Ok(())
        });
        let store = self.store.clone();
        tokio::spawn(async move {
            while !store.is_ready() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ready.set(true);
        });
    }

    /// Authentication: revocation through the live token set (a token-Secret watch into the token
    /// service, or the remote token service's revocation stream), existence through the informer caches.
    fn authentication(&mut self) -> anyhow::Result<()> {
        let plan = &self.plan;
        let (Some(tokens), Some(keys)) = (&self.tokens, &self.keys) else {
            return Ok(());
        };
        if !(plan.authenticates() || plan.token_grpc.is_some()) {
            return Ok(());
        }
        let source = match &plan.remote_tokens {
            None => LiveSource::Watch(Arc::new(tokens.clone())),
            Some(addr) => {
                let tls = plan.grpc_client.tls_for(addr)?;
                let channel = ksiam_token::grpc_auth::connect_lazy(addr.clone(), tls.as_ref())
                    .with_context(|| format!("invalid token service address {addr:?}"))?;
                LiveSource::Follow(ksiam_token::grpc::TokenClient::new(channel))
            }
        };
        let host = host_authentication(
            &self.client,
            keys.clone(),
            tokens.live_tokens().clone(),
            source,
            &self.readiness,
            &self.shutdown,
        );
        let live_watch = host.live_watch;
        self.tasks.spawn("token-Secret watch", async move {
            live_watch.await.context("the token-Secret watch panicked")
        });
        self.authentication = Some((host.authenticator, host.caches));
        Ok(())
    }

    /// The token service's and the authorizer's gRPC APIs.
    async fn grpc_servers(&mut self) -> anyhow::Result<()> {
        if let (Some(addr), Some(security), Some(tokens)) =
            (self.plan.token_grpc, &self.grpc_security, &self.tokens)
        {
            let listener = bind(addr).await?;
            let (security, tokens, stop) = (security.clone(), tokens.clone(), self.shutdown.clone());
            info!(listen = %addr, plaintext = security.is_plaintext(), "token service gRPC API");
            self.tasks.spawn("token gRPC server", async move {
                ksiam_token::grpc::serve(listener, tokens, &security, stop.cancelled_owned())
                    .await
                    .map_err(anyhow::Error::from)
            });
        }
        if let (Some(addr), Some(security)) = (self.plan.authz_grpc, &self.grpc_security) {
            let listener = bind(addr).await?;
            let (security, authz, stop) = (security.clone(), self.authz.clone(), self.shutdown.clone());
            info!(listen = %addr, plaintext = security.is_plaintext(), "authorizer gRPC API");
            self.tasks.spawn("authorizer gRPC server", async move {
                ksiam_authz::serve_grpc(listener, authz, &security, stop)
                    .await
                    .map_err(anyhow::Error::from)
            });
        }
        Ok(())
    }

    /// kube-apiserver's SubjectAccessReview and TokenReview webhooks.
    async fn kube_apiserver_webhooks(&mut self) -> anyhow::Result<()> {
        let Some(webhooks) = &self.plan.authz_webhooks else {
            return Ok(());
        };
        let Some(addr) = webhooks.authz_webhook_listen else {
            return Ok(());
        };
        let listener = bind(addr).await?;
        let router = ksiam_authz::webhook_router(ksiam_authz::WebhookState {
            authz: self.authz.clone(),
            authenticator: self.authentication.as_ref().map(|(a, _)| a.clone()),
        })?;
        let (tls, stop) = (webhooks.tls(), self.shutdown.clone());
        info!(listen = %addr, tls = tls.is_some(), token_review = self.authentication.is_some(), "kube-apiserver authorization and token webhooks");
        self.tasks.spawn("kube-apiserver webhooks", async move {
            ksiam_authz::serve_webhooks(listener, router, tls, stop)
                .await
                .map_err(anyhow::Error::from)
        });
        Ok(())
    }

    /// The Pod-injection and validating admission webhooks (registered before anything else serves).
    async fn admission(&mut self) -> anyhow::Result<()> {
        let Some(admission) = &self.plan.admission else {
            return Ok(());
        };
        let config = admission.config()?;
        let register = config.register;
        // The validating checks (workspace manager, namespace labels) ask the same in-process store.
        let checks: Arc<dyn ksiam_webhook::Authorize> = Arc::new(ksiam_webhook::PolicyAuthorizer::new(
            self.authorizer,
            self.store.clone(),
        ));
        let (client, stop) = (self.client.clone(), self.shutdown.clone());
        let webhook = tokio::spawn(async move {
            ksiam_webhook::run_with_admission(config, client, Some(checks), stop.cancelled_owned()).await
        });
        if register {
            wait_for_webhook_registration(&self.client, &webhook).await?;
        }
        self.tasks.spawn("admission webhooks", async move {
            webhook
                .await
                .context("the admission webhooks panicked")?
                .map_err(anyhow::Error::from)
        });
        Ok(())
    }

    /// The gateway, behind the in-flight limits.
    async fn gateway(&mut self) -> anyhow::Result<()> {
        let Some(gateway) = &self.plan.gateway else {
            return Ok(());
        };
        let (authenticator, caches) = self
            .authentication
            .clone()
            .context("the gateway needs the authenticator")?;
        let authorize: Arc<dyn ksiam_gateway::Authorize> = match &self.plan.remote_authz {
            None => Arc::new(ksiam_gateway::LocalAuthorize::new(
                self.authorizer,
                self.store.clone(),
            )),
            Some(addr) => Arc::new(RemoteAuthorize::connect(addr, &self.plan.grpc_client)?),
        };
        let ready = self.readiness.clone();
        let parts = ksiam_gateway::GatewayParts {
            config: ksiam_gateway::GatewayConfig {
                host_cluster: gateway.host_cluster.clone(),
                body_limit: gateway.gateway_body_limit,
                request_timeout: Duration::from_secs(gateway.gateway_request_timeout_seconds),
                upstream: Some(self.upstream.clone()),
                ..ksiam_gateway::GatewayConfig::default()
            },
            caches,
            authenticator,
            authorize,
            oidc: self.keys.clone().map(|keys| ksiam_gateway::Oidc {
                issuer: self.plan.keys.issuer.clone(),
                keys,
            }),
            registry: self.registry.clone(),
            also_ready: Some(Arc::new(move || ready.is_ready())),
        };
        let gateway_server = ksiam_gateway::Gateway::new(parts)?;
        let limits = InflightLimits::new(gateway.limits, ksiam_runtime::limit::kubernetes_long_running);
        limits.register(self.registry.write().sub_registry_with_prefix("ksiam_gateway"));
        let app = limits.layer(gateway_server.router());
        let server = HttpServer::bind("gateway", gateway.gateway_listen).await?;
        let stop = self.shutdown.clone();
        self.tasks.spawn("gateway", async move {
            server.serve(app, stop.cancelled_owned()).await;
            Ok(())
        });
        Ok(())
    }

    /// The controllers, while this replica holds the leader Lease.
    fn controllers(&mut self) -> anyhow::Result<()> {
        let Some(lease) = &self.plan.controllers else {
            return Ok(());
        };
        let issuer: Arc<dyn ksiam_controller::TokenIssuer> = match &self.plan.remote_tokens {
            Some(addr) => Arc::new(RemoteIssuer::connect(addr, &self.plan.grpc_client)?),
            None => {
                let keys = self
                    .keys
                    .clone()
                    .context("the controllers need the signing key")?;
                Arc::new(ksiam_controller::UniqueIssuer::new(Issuer::new(
                    keys,
                    self.plan.keys.issuer.clone(),
                )))
            }
        };
        let (client, lease, readiness, stop) = (
            self.client.clone(),
            lease.clone(),
            self.readiness.clone(),
            self.shutdown.clone(),
        );
        self.tasks.spawn("controllers", async move {
            controllers(client, issuer, &lease, readiness, stop).await
        });
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Runs the controllers while this replica holds the leader Lease; an error means the Lease was lost.
async fn controllers(
    client: kube::Client,
    issuer: Arc<dyn ksiam_controller::TokenIssuer>,
    lease: &LeaseArgs,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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

/// What [`host_authentication`] starts.
pub(crate) struct HostAuthentication {
    /// Verifies bearer tokens with revocation and existence checks; refuses every token until synced.
    pub authenticator: Arc<ksiam_token::Authenticator>,
    /// The informer caches behind the existence checks (the gateway reads them too).
    pub caches: Arc<ksiam_gateway::Caches>,
    /// The token-Secret watch or the revocation stream (ends at shutdown).
    pub live_watch: tokio::task::JoinHandle<()>,
}

/// Where the set of live tokens comes from.
pub(crate) enum LiveSource {
    /// A watch on token Secrets in this process, into `hold` (a `LiveTokens`, or the token service that
    /// also streams its changes).
    Watch(Arc<dyn ksiam_token::HoldTokens>),
    /// The `WatchRevocations` stream of a remote token service.
    Follow(ksiam_token::grpc::TokenClient),
}

/// The host-cluster authenticator of every part that authenticates tokens (gateway, TokenReview): built
/// in one place so none of them can skip a check: revocation through the live token set `live` (fed by
/// `source`), existence of ServiceAccounts and Users through the informer caches, and fail-closed (every
/// token refused) until the live set and those caches have their first complete list — and, when the set
/// follows a remote token service, whenever its stream has been down longer than the staleness bound.
pub(crate) fn host_authentication(
    client: &kube::Client,
    keys: KeySet,
    live: Arc<ksiam_token::LiveTokens>,
    source: LiveSource,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> HostAuthentication {
    let (live_watch, current): (_, Arc<dyn Fn() -> bool + Send + Sync>) = match source {
        LiveSource::Watch(hold) => {
            let synced = readiness.register("token-secrets");
            let watch = tokio::spawn(ksiam_controller::live::run(
                client.clone(),
                hold,
                synced.clone(),
                shutdown.clone().cancelled_owned(),
            ));
            (watch, Arc::new(move || synced.is_ready()))
        }
        LiveSource::Follow(token_client) => {
            let ready = readiness.register("token-revocations");
            let state = Arc::new(ksiam_token::follow::FollowState::default());
            let follow = tokio::spawn(ksiam_token::follow::follow_revocations(
                token_client,
                live.clone(),
                state.clone(),
                shutdown.clone().cancelled_owned(),
            ));
            let (watched, stop) = (state.clone(), shutdown.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    ready.set(watched.is_current());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            (follow, Arc::new(move || state.is_current()))
        }
    };
    let (directory, caches) = ksiam_gateway::KubeDirectory::start(client, shutdown);
    let gate = caches.clone();
    let authenticator = Arc::new(
        ksiam_token::Authenticator::new(keys)
            .with_live_tokens(live)
            .with_directory(directory)
            .with_ready(Arc::new(move || {
                current() && gate.service_accounts.synced() && gate.users.synced()
            })),
    );
    HostAuthentication {
        authenticator,
        caches,
        live_watch,
    }
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the webhook did not register itself within 30 s")
}
