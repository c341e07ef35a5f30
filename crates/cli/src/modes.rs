//! The service modes: each is the flag groups of its parts and the [`Plan`] they make.
//!
//! | mode | parts |
//! |---|---|
//! | `all` | every part below |
//! | `controller` | controllers (leader Lease) |
//! | `webhook` | policy watches, admission webhooks |
//! | `gateway` | authentication, gateway; policy watches unless `--authz-addr` |
//! | `authz` | policy watches, authorizer gRPC, kube-apiserver webhooks (TokenReview with a signing secret) |
//! | `token serve` | token-Secret watch, token service gRPC |

use clap::Args;

use crate::{args::*, wiring::Plan};

/// `ksiam all`.
#[derive(Args, Clone, Debug)]
pub struct AllCommand {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    authorization: AuthorizationArgs,
    #[command(flatten)]
    lease: LeaseArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    authz_webhooks: AuthzWebhookArgs,
    #[command(flatten)]
    admission: AdmissionArgs,
    #[command(flatten)]
    token_grpc: TokenGrpcArgs,
    #[command(flatten)]
    authz_grpc: AuthzGrpcArgs,
    #[command(flatten)]
    grpc: GrpcServerArgs,
}

impl AllCommand {
    pub fn plan(self) -> Plan {
        Plan {
            mode: "ksiam all",
            service: self.service,
            keys: self.keys,
            authorization: self.authorization.authorization,
            remote_authz: None,
            remote_tokens: None,
            grpc_client: GrpcClientArgs::default(),
            grpc: self.grpc,
            controllers: Some(self.lease),
            gateway: Some(self.gateway),
            authz_webhooks: Some(self.authz_webhooks),
            admission: Some(self.admission),
            token_grpc: self.token_grpc.token_grpc_listen,
            authz_grpc: self.authz_grpc.authz_grpc_listen,
        }
    }
}

/// `ksiam controller`.
#[derive(Args, Clone, Debug)]
pub struct ControllerCommand {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    lease: LeaseArgs,
    /// With a token service, the controller asks it to issue tokens and holds no signing key.
    #[command(flatten)]
    tokens: RemoteTokenArgs,
    #[command(flatten)]
    grpc_client: GrpcClientArgs,
}

impl ControllerCommand {
    pub fn plan(self) -> Plan {
        Plan {
            controllers: Some(self.lease),
            remote_tokens: self.tokens.token_addr,
            grpc_client: self.grpc_client,
            ..Plan::empty("ksiam controller", self.service, self.keys)
        }
    }
}

/// `ksiam webhook`.
#[derive(Args, Clone, Debug)]
pub struct WebhookCommand {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    authorization: AuthorizationArgs,
    #[command(flatten)]
    admission: AdmissionArgs,
}

impl WebhookCommand {
    pub fn plan(self) -> Plan {
        Plan {
            authorization: self.authorization.authorization,
            admission: Some(self.admission),
            ..Plan::empty("ksiam webhook", self.service, KeyArgs::none())
        }
    }
}

/// `ksiam gateway`.
#[derive(Args, Clone, Debug)]
pub struct GatewayCommand {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    authorization: AuthorizationArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    remote: RemoteAuthzArgs,
    #[command(flatten)]
    tokens: RemoteTokenArgs,
    #[command(flatten)]
    grpc_client: GrpcClientArgs,
}

impl GatewayCommand {
    pub fn plan(self) -> Plan {
        Plan {
            authorization: self.authorization.authorization,
            gateway: Some(self.gateway),
            remote_authz: self.remote.authz_addr,
            remote_tokens: self.tokens.token_addr,
            grpc_client: self.grpc_client,
            ..Plan::empty("ksiam gateway", self.service, self.keys)
        }
    }
}

/// `ksiam authz`.
#[derive(Args, Clone, Debug)]
pub struct AuthzCommand {
    #[command(flatten)]
    service: ServiceArgs,
    /// With a signing secret, kube-apiserver's TokenReview webhook (`/authenticate`) is served too.
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    authorization: AuthorizationArgs,
    #[command(flatten)]
    authz_grpc: AuthzGrpcArgs,
    #[command(flatten)]
    grpc: GrpcServerArgs,
    #[command(flatten)]
    authz_webhooks: AuthzWebhookArgs,
    #[command(flatten)]
    tokens: RemoteTokenArgs,
    #[command(flatten)]
    grpc_client: GrpcClientArgs,
}

impl AuthzCommand {
    pub fn plan(self) -> anyhow::Result<Plan> {
        anyhow::ensure!(
            self.authz_grpc.authz_grpc_listen.is_some() || self.authz_webhooks.authz_webhook_listen.is_some(),
            "ksiam authz serves nothing: set --authz-grpc-listen and/or --authz-webhook-listen"
        );
        Ok(Plan {
            authorization: self.authorization.authorization,
            authz_grpc: self.authz_grpc.authz_grpc_listen,
            grpc: self.grpc,
            authz_webhooks: Some(self.authz_webhooks),
            remote_tokens: self.tokens.token_addr,
            grpc_client: self.grpc_client,
            ..Plan::empty("ksiam authz", self.service, self.keys)
        })
    }
}

/// `ksiam token serve`.
#[derive(Args, Clone, Debug)]
pub struct TokenServeCommand {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    token_grpc: TokenGrpcArgs,
    #[command(flatten)]
    grpc: GrpcServerArgs,
}

impl TokenServeCommand {
    pub fn plan(self) -> Plan {
        Plan {
            token_grpc: self.token_grpc.token_grpc_listen,
            grpc: self.grpc,
            ..Plan::empty("ksiam token serve", self.service, self.keys)
        }
    }
}

impl KeyArgs {
    fn none() -> Self {
        Self {
            jwt_secret_file: None,
            issuer: ksiam_token::DEFAULT_ISSUER.to_owned(),
        }
    }
}

impl Plan {
    /// A plan with no parts.
    fn empty(mode: &'static str, service: ServiceArgs, keys: KeyArgs) -> Self {
        Self {
            mode,
            service,
            keys,
            authorization: ModeArg::Rbac,
            remote_authz: None,
            remote_tokens: None,
            grpc_client: GrpcClientArgs::default(),
            grpc: GrpcServerArgs::default(),
            controllers: None,
            gateway: None,
            authz_webhooks: None,
            admission: None,
            token_grpc: None,
            authz_grpc: None,
        }
    }
}

/// Runs a service plan on a multi-threaded runtime: one TLS crypto provider, logging, the rego wrapper.
pub fn serve(plan: Plan) -> anyhow::Result<()> {
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        anyhow::bail!("cannot install the aws-lc-rs TLS crypto provider");
    }
    ksiam_runtime::log::init(plan.service.log.log_format);
    ksiam_rbac::rego::set_evaluation_wrapper(rego_off_the_async_workers);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(crate::wiring::run(plan))
}

/// Rego-override evaluations (bounded, but user-written) tell tokio that the worker is about to block, so
/// the other tasks of that worker move on; rule-only decisions never take this path.
fn rego_off_the_async_workers(eval: &mut dyn FnMut() -> bool) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(eval)
        }
        _ => eval(),
    }
}
