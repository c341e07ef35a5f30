//! `ksiam webhook`: the Pod-injection admission webhook on its own.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Args;
use ksiam_webhook::{Config, FailurePolicy, TlsSource, WebhookTarget};
use tokio_util::sync::CancellationToken;

/// `ksiam webhook` flags.
#[derive(Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Where the webhook listens (HTTPS).
    #[arg(long, env = "KSIAM_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// In a cluster: the Service (`namespace/name`, port 443) kube-apiserver reaches the webhook through.
    /// Without it the webhook registers itself by URL `https://<listen address>`.
    #[arg(long, env = "KSIAM_WEBHOOK_SERVICE", value_name = "NAMESPACE/NAME")]
    pub service: Option<String>,
    /// Serving certificate (PEM, re-read when it changes); a self-signed one is generated without it.
    #[arg(long, env = "KSIAM_WEBHOOK_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the serving certificate.
    #[arg(long, env = "KSIAM_WEBHOOK_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle for `caBundle` when the certificate is not self-signed.
    #[arg(long, env = "KSIAM_WEBHOOK_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// `Ignore` (KubeSphere's default: admit without injection when the webhook is down) or `Fail`.
    #[arg(long, env = "KSIAM_WEBHOOK_FAILURE_POLICY", default_value = "Ignore", value_parser = ["Ignore", "Fail"])]
    pub failure_policy: String,
    /// KubeSphere TLS mode: also project `ca.crt` from the `kubesphere-root-ca.crt` ConfigMap.
    #[arg(long, env = "KSIAM_WEBHOOK_TLS_MODE")]
    pub tls_mode: bool,
    /// Do not create or update the MutatingWebhookConfiguration (a chart owns it).
    #[arg(long, env = "KSIAM_WEBHOOK_NO_REGISTER")]
    pub no_register: bool,
    /// Log format.
    #[arg(long, env = "KSIAM_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
}

impl WebhookArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.service {
            Some(service) => {
                let (namespace, name) = service
                    .split_once('/')
                    .filter(|(n, s)| !n.is_empty() && !s.is_empty())
                    .with_context(|| format!("--service takes NAMESPACE/NAME, got {service:?}"))?;
                Config::in_cluster(namespace, name, self.listen.port())
            }
            None => {
                let mut config = Config::loopback(self.listen.port());
                config.target = WebhookTarget::Url {
                    host: self.listen.ip().to_string(),
                    port: None,
                };
                config
            }
        };
        config.listen = self.listen;
        if let Some((cert, key)) = self.tls_cert_file.clone().zip(self.tls_key_file.clone()) {
            config.tls = TlsSource::Files {
                cert,
                key,
                ca: self.ca_file.clone(),
            };
        }
        config.failure_policy = if self.failure_policy == "Fail" {
            FailurePolicy::Fail
        } else {
            FailurePolicy::Ignore
        };
        config.tls_mode = self.tls_mode;
        config.register = !self.no_register;
        Ok(config)
    }
}

/// Runs the webhook until SIGINT/SIGTERM.
pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    let shutdown = CancellationToken::new();
    crate::serve::shutdown_on_signals(shutdown.clone());
    ksiam_webhook::run(config, client, shutdown.cancelled_owned())
        .await
        .context("webhook failed")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: WebhookArgs,
    }

    #[test]
    fn service_mode_and_errors() {
        let cli = Cli::try_parse_from(["x", "--service", "kubesphere-system/ks-controller-manager"]).unwrap();
        let config = cli.args.config().unwrap();
        assert!(matches!(config.target, WebhookTarget::Service { port: 443, .. }));
        let cli = Cli::try_parse_from(["x", "--service", "nonamespace"]).unwrap();
        assert!(
            cli.args
                .config()
                .unwrap_err()
                .to_string()
                .contains("NAMESPACE/NAME")
        );
        assert!(
            Cli::try_parse_from(["x", "--tls-cert-file", "c.pem"]).is_err(),
            "key required"
        );
        let cli =
            Cli::try_parse_from(["x", "--listen", "127.0.0.1:9443", "--failure-policy", "Fail"]).unwrap();
        let config = cli.args.config().unwrap();
        assert_eq!(config.failure_policy, FailurePolicy::Fail);
        assert!(matches!(config.target, WebhookTarget::Url { ref host, .. } if host == "127.0.0.1"));
    }
}
