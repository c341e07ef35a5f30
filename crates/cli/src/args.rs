//! The flag groups of the services. Each group is one struct, flattened into every mode that runs its
//! part, so a flag and its environment variable mean the same thing in every mode; `ksiam all` flattens
//! all of them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use ksiam_token::DEFAULT_ISSUER;

pub use crate::grpc::{GrpcClientArgs, GrpcServerArgs};
pub use ksiam_runtime::{AdminArgs, limit::LimitArgs, log::LogArgs};

/// What every service has: logging and the admin server (`/livez`, `/readyz`, `/metrics`).
#[derive(Args, Clone, Debug)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The signing key and issuer (KubeSphere's `authentication.issuer`).
#[derive(Args, Clone, Debug)]
pub struct KeyArgs {
    /// File holding the HS256 secret (KubeSphere's `authentication.issuer.jwtSecret`).
    #[arg(long, env = "KSIAM_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The `iss` claim of issued tokens.
    #[arg(long, env = "KSIAM_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
}

impl KeyArgs {
    /// The key set, or an error naming the flag that `mode` needs.
    pub fn required(&self, mode: &str) -> anyhow::Result<ksiam_token::KeySet> {
        let path = self.jwt_secret_file.as_ref().with_context(|| {
            format!("{mode} needs the signing secret: set --jwt-secret-file (KSIAM_JWT_SECRET_FILE)")
        })?;
        Ok(ksiam_token::KeySet::legacy(&crate::token::read_secret(path)?))
    }
}

/// KubeSphere's `authorization.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Role-based access control over the iam.kubesphere.io roles and bindings.
    #[default]
    #[value(name = "RBAC")]
    Rbac,
    /// Allow every authenticated request (refused for kube-apiserver's webhooks).
    #[value(name = "AlwaysAllow")]
    AlwaysAllow,
    /// Deny every request.
    #[value(name = "AlwaysDeny")]
    AlwaysDeny,
}

impl From<ModeArg> for ksiam_rbac::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Rbac => ksiam_rbac::Mode::Rbac,
            ModeArg::AlwaysAllow => ksiam_rbac::Mode::AlwaysAllow,
            ModeArg::AlwaysDeny => ksiam_rbac::Mode::AlwaysDeny,
        }
    }
}

/// How requests are authorized: in process from the watched policy, or by a remote `ksiam authz`.
#[derive(Args, Clone, Debug)]
pub struct AuthorizationArgs {
    /// The authorization mode.
    #[arg(long, env = "KSIAM_AUTHORIZATION_MODE", value_enum, default_value_t = ModeArg::Rbac)]
    pub authorization: ModeArg,
}

/// Where a remote authorizer is (the split topology).
#[derive(Args, Clone, Debug)]
pub struct RemoteAuthzArgs {
    /// Ask the `ksiam authz` gRPC service at this address (`https://host:port`) instead of watching the
    /// policy in process. Requests fail closed while it is unreachable.
    #[arg(long, env = "KSIAM_AUTHZ_ADDR")]
    pub authz_addr: Option<String>,
}

/// Where the token service is, for a verifier in another process (the split topology).
#[derive(Args, Clone, Debug)]
pub struct RemoteTokenArgs {
    /// The `ksiam token serve` gRPC service (`https://host:port`): verifiers follow its revocations instead
    /// of watching token Secrets (a set older than 10 s, stream down, refuses every token); the controller
    /// asks it to issue tokens instead of holding the signing key.
    #[arg(long, env = "KSIAM_TOKEN_ADDR")]
    pub token_addr: Option<String>,
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
    pub fn config(&self) -> ksiam_controller::lease::LeaseConfig {
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
        config.duration = Duration::from_secs(self.lease_duration_seconds);
        config.renew_every = config.duration / 5;
        config
    }
}

/// The gateway (the ks-apiserver replacement).
#[derive(Args, Clone, Debug)]
pub struct GatewayArgs {
    /// Where the gateway listens (plain HTTP).
    #[arg(long, env = "KSIAM_GATEWAY_LISTEN", default_value = "127.0.0.1:9090")]
    pub gateway_listen: SocketAddr,
    /// The host cluster's name: `/clusters/<name>/...` is served locally.
    #[arg(long, env = "KSIAM_HOST_CLUSTER", default_value = "host")]
    pub host_cluster: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "KSIAM_GATEWAY_BODY_LIMIT", default_value_t = 32 * 1024 * 1024)]
    pub gateway_body_limit: usize,
    /// Seconds kube-apiserver may take to answer a request that is not long-running.
    #[arg(long, env = "KSIAM_GATEWAY_REQUEST_TIMEOUT_SECONDS", default_value_t = 60)]
    pub gateway_request_timeout_seconds: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// kube-apiserver's SubjectAccessReview (`/authorize`) and TokenReview (`/authenticate`) webhooks.
#[derive(Args, Clone, Debug)]
pub struct AuthzWebhookArgs {
    /// Where kube-apiserver's authorization and token webhooks are served; not served when unset.
    #[arg(long, env = "KSIAM_AUTHZ_WEBHOOK_LISTEN")]
    pub authz_webhook_listen: Option<SocketAddr>,
    /// Serving certificate (PEM, re-read when it changes) of those webhooks; plain HTTP without it.
    #[arg(long, env = "KSIAM_AUTHZ_TLS_CERT_FILE", requires = "authz_tls_key_file")]
    pub authz_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of those webhooks.
    #[arg(long, env = "KSIAM_AUTHZ_TLS_KEY_FILE", requires = "authz_tls_cert_file")]
    pub authz_tls_key_file: Option<PathBuf>,
    /// CA (PEM) of kube-apiserver's client certificate: the webhooks then answer only clients it signed.
    /// Without it anyone who reaches the port can ask for decisions.
    #[arg(long, env = "KSIAM_AUTHZ_CLIENT_CA_FILE", requires = "authz_tls_cert_file")]
    pub authz_client_ca_file: Option<PathBuf>,
}

impl AuthzWebhookArgs {
    pub fn tls(&self) -> Option<ksiam_authz::WebhookTls> {
        self.authz_tls_cert_file
            .clone()
            .zip(self.authz_tls_key_file.clone())
            .map(|(cert, key)| ksiam_authz::WebhookTls {
                cert,
                key,
                client_ca: self.authz_client_ca_file.clone(),
            })
    }
}

/// What kube-apiserver does when the Pod-injection webhook is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicyArg {
    /// Admit without injection (KubeSphere's default).
    #[default]
    #[value(name = "Ignore")]
    Ignore,
    /// Refuse the Pod.
    #[value(name = "Fail")]
    Fail,
}

/// The admission webhooks: Pod injection and the validating checks of the authorization boundary.
#[derive(Args, Clone, Debug)]
pub struct AdmissionArgs {
    /// Where the admission webhooks listen (HTTPS). On port 0 a free port is picked.
    #[arg(long, env = "KSIAM_WEBHOOK_LISTEN", default_value = "127.0.0.1:0")]
    pub webhook_listen: SocketAddr,
    /// In a cluster: the Service (`namespace/name`, port 443) kube-apiserver reaches the webhooks through.
    /// Without it they register themselves by URL `https://<listen address>`.
    #[arg(long, env = "KSIAM_WEBHOOK_SERVICE", value_name = "NAMESPACE/NAME")]
    pub webhook_service: Option<String>,
    /// Serving certificate (PEM, re-read when it changes); a self-signed one is generated without it.
    #[arg(long, env = "KSIAM_WEBHOOK_TLS_CERT_FILE", requires = "webhook_tls_key_file")]
    pub webhook_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the serving certificate.
    #[arg(long, env = "KSIAM_WEBHOOK_TLS_KEY_FILE", requires = "webhook_tls_cert_file")]
    pub webhook_tls_key_file: Option<PathBuf>,
    /// CA bundle for `caBundle` when the certificate is not self-signed.
    #[arg(long, env = "KSIAM_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// CA (PEM) of kube-apiserver's admission client certificate (its `--admission-control-config-file`):
    /// the webhooks then answer only clients it signed.
    #[arg(long, env = "KSIAM_WEBHOOK_CLIENT_CA_FILE")]
    pub webhook_client_ca_file: Option<PathBuf>,
    /// What kube-apiserver does when the Pod-injection webhook is down.
    #[arg(long, env = "KSIAM_WEBHOOK_FAILURE_POLICY", value_enum, default_value_t = FailurePolicyArg::Ignore)]
    pub webhook_failure_policy: FailurePolicyArg,
    /// KubeSphere TLS mode: also project `ca.crt` from the `kubesphere-root-ca.crt` ConfigMap.
    #[arg(long, env = "KSIAM_WEBHOOK_TLS_MODE")]
    pub webhook_tls_mode: bool,
    /// Do not create or update the webhook configurations (a chart owns them).
    #[arg(long, env = "KSIAM_WEBHOOK_NO_REGISTER")]
    pub webhook_no_register: bool,
}

impl AdmissionArgs {
    pub fn config(&self) -> anyhow::Result<ksiam_webhook::Config> {
        use ksiam_webhook::{Config, FailurePolicy, TlsSource, WebhookTarget};
        let mut config = match &self.webhook_service {
            Some(service) => {
                let (namespace, name) = service
                    .split_once('/')
                    .filter(|(n, s)| !n.is_empty() && !s.is_empty())
                    .with_context(|| format!("--webhook-service takes NAMESPACE/NAME, got {service:?}"))?;
                Config::in_cluster(namespace, name, self.webhook_listen.port())
            }
            None if self.webhook_listen.ip().is_loopback() => Config::loopback(self.webhook_listen.port()),
            None => {
                let mut config = Config::loopback(self.webhook_listen.port());
                config.target = WebhookTarget::Url {
                    host: self.webhook_listen.ip().to_string(),
                    port: None,
                };
                config
            }
        };
        config.listen = self.webhook_listen;
        if let Some((cert, key)) = self
            .webhook_tls_cert_file
            .clone()
            .zip(self.webhook_tls_key_file.clone())
        {
            config.tls = TlsSource::Files {
                cert,
                key,
                ca: self.webhook_ca_file.clone(),
            };
        }
        config.failure_policy = match self.webhook_failure_policy {
            FailurePolicyArg::Fail => FailurePolicy::Fail,
            FailurePolicyArg::Ignore => FailurePolicy::Ignore,
        };
        config.tls_mode = self.webhook_tls_mode;
        config.register = !self.webhook_no_register;
        config.client_ca = self.webhook_client_ca_file.clone();
        Ok(config)
    }
}

/// The gRPC listeners (their security is [`GrpcServerArgs`]).
#[derive(Args, Clone, Debug)]
pub struct TokenGrpcArgs {
    /// Where the token service's gRPC API (`ksiam.token.v1.TokenService`: issue, verify, key and revocation
    /// streams) listens; not served when unset.
    #[arg(long, env = "KSIAM_TOKEN_GRPC_LISTEN")]
    pub token_grpc_listen: Option<SocketAddr>,
}

/// The authorizer's gRPC listener.
#[derive(Args, Clone, Debug)]
pub struct AuthzGrpcArgs {
    /// Where the authorizer's gRPC API (`ksiam.authz.v1.Authorizer`) listens; not served when unset.
    #[arg(long, env = "KSIAM_AUTHZ_GRPC_LISTEN")]
    pub authz_grpc_listen: Option<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use ksiam_webhook::{FailurePolicy, WebhookTarget};

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: AdmissionArgs,
    }

    fn parse(args: &[&str]) -> Result<AdmissionArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn admission_targets_and_errors() {
        let config = parse(&["--webhook-service", "kubesphere-system/ks-controller-manager"])
            .unwrap()
            .config()
            .unwrap();
        assert!(matches!(config.target, WebhookTarget::Service { port: 443, .. }));
        let err = parse(&["--webhook-service", "nonamespace"])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("NAMESPACE/NAME"), "{err}");
        assert!(
            parse(&["--webhook-tls-cert-file", "c.pem"]).is_err(),
            "key required"
        );
        assert!(
            parse(&["--webhook-failure-policy", "Sometimes"]).is_err(),
            "an enumeration"
        );
        let config = parse(&[
            "--webhook-listen",
            "10.0.0.7:9443",
            "--webhook-failure-policy",
            "Fail",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(config.failure_policy, FailurePolicy::Fail);
        assert!(matches!(config.target, WebhookTarget::Url { ref host, .. } if host == "10.0.0.7"));
        let loopback = parse(&[]).unwrap().config().unwrap();
        assert_eq!(loopback.listen.port(), 0);
        assert_eq!(loopback.failure_policy, FailurePolicy::Ignore);
    }
}
