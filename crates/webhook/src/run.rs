//! [`run`]: bind, register, serve — what `ksiam webhook` (and `ksiam all`) call.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use kube::Client;

use crate::admission::Authorize;
use crate::cached::CachedLookup;
use crate::inject::{InjectOptions, Injector};
use crate::register::{
    CaBundleSource, FailurePolicy, Registration, WebhookTarget, register, register_admission,
};
use crate::server::{AbortOnDrop, Server, ServerError};
use crate::tls::TlsSource;

/// Everything the webhook needs besides a Kubernetes client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port; a `Url` target without a port then uses it).
    pub listen: SocketAddr,
    /// Serving certificate.
    pub tls: TlsSource,
    /// `failurePolicy` of the registration (default `Ignore`, as KubeSphere).
    pub failure_policy: FailurePolicy,
    /// How the API server reaches the webhook.
    pub target: WebhookTarget,
    /// KubeSphere TLS mode: also project `ca.crt` from the `kubesphere-root-ca.crt` ConfigMap.
    pub tls_mode: bool,
    /// Whether to create or update the `MutatingWebhookConfiguration` at start (turn off when a chart owns it).
    pub register: bool,
    /// Leave `caBundle` to cert-manager's CA injector, from this Certificate (`<namespace>/<name>`).
    pub inject_ca_from: Option<String>,
    /// Accept only clients presenting a certificate this CA signed (kube-apiserver's admission client
    /// certificate, from its `--admission-control-config-file`); anyone may call the webhooks without it.
    pub client_ca: Option<std::path::PathBuf>,
}

impl Config {
    /// A webhook on loopback, reached by URL, with a self-signed certificate for `127.0.0.1`: the local
    /// control plane and tests.
    pub fn loopback(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: TlsSource::loopback(),
            failure_policy: FailurePolicy::default(),
            target: WebhookTarget::Url {
                host: "127.0.0.1".to_owned(),
                port: None,
            },
            tls_mode: false,
            register: true,
            inject_ca_from: None,
            client_ca: None,
        }
    }

    /// A webhook in the cluster behind the Service `namespace/name` on port 443, with a self-signed
    /// certificate for the Service's DNS names, listening on all addresses on `listen_port`.
    pub fn in_cluster(namespace: &str, service: &str, listen_port: u16) -> Self {
        Self {
            listen: SocketAddr::from((IpAddr::from([0, 0, 0, 0]), listen_port)),
            tls: TlsSource::for_service(namespace, service),
            failure_policy: FailurePolicy::default(),
            target: WebhookTarget::Service {
                namespace: namespace.to_owned(),
                name: service.to_owned(),
                port: 443,
            },
            tls_mode: false,
            register: true,
            inject_ca_from: None,
            client_ca: None,
        }
    }

    /// The registration for a server bound on `bound_port` whose CA bundle is `ca_pem`.
    pub fn registration(&self, bound_port: u16, ca_pem: String) -> Registration {
        let target = match &self.target {
            WebhookTarget::Url { host, port } => WebhookTarget::Url {
                host: host.clone(),
                port: Some(port.unwrap_or(bound_port)),
            },
            service => service.clone(),
        };
        let ca_bundle = match &self.inject_ca_from {
            Some(certificate) => CaBundleSource::CertManager(certificate.clone()),
            None => CaBundleSource::Pem(ca_pem),
        };
        Registration {
            target,
            ca_bundle,
            failure_policy: self.failure_policy,
        }
    }
}

/// Why [`run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The webhook configuration could not be applied.
    #[error("cannot register the MutatingWebhookConfiguration: {0}")]
    Register(#[source] kube::Error),
    /// The validating webhook configuration could not be applied.
    #[error("cannot register the ValidatingWebhookConfiguration: {0}")]
    RegisterAdmission(#[source] kube::Error),
}

/// Applies the webhook configurations: the mutating one, and the validating one when `admission`.
async fn register_all(client: &Client, registration: &Registration, admission: bool) -> Result<(), Error> {
    register(client.clone(), registration)
        .await
        .map_err(Error::Register)?;
    if admission {
        register_admission(client.clone(), registration)
            .await
            .map_err(Error::RegisterAdmission)?;
    }
    Ok(())
}

/// Binds, registers the webhook configuration (when `config.register`), and serves until `shutdown`
/// completes. When the CA bundle of reloaded certificate files changes, the registration is applied again.
pub async fn run(
    config: Config,
    client: Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    run_with_admission(config, client, None, shutdown).await
}

/// [`run`], also serving (and registering) the validating checks of [`crate::admission`] when `admission`
/// gives them an authorizer.
pub async fn run_with_admission(
    config: Config,
    client: Client,
    admission: Option<Arc<dyn Authorize>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let with_admission = admission.is_some();
    let server = Server::bind(config.listen, &config.tls)
        .await?
        .require_client_certificates(config.client_ca.clone());
    let bound_port = server
        .local_addr()
        .map_err(|source| {
            Error::Server(ServerError::Bind {
                addr: config.listen,
                source,
            })
        })?
        .port();

    let _reregister = if config.register {
        let mut registration = config.registration(bound_port, server.tls().ca_bundle());
        register_all(&client, &registration, with_admission).await?;
        tracing::info!(target = ?registration.target, admission = with_admission, "registered the webhooks");

        let mut updates = server.tls().ca_bundle_updates();
        let client = client.clone();
        let follows_ca = matches!(registration.ca_bundle, CaBundleSource::Pem(_));
        follows_ca.then(|| {
            AbortOnDrop(tokio::spawn(async move {
                while updates.changed().await.is_ok() {
                    registration.ca_bundle = CaBundleSource::Pem(updates.borrow_and_update().clone());
                    match register_all(&client, &registration, with_admission).await {
                        Ok(()) => tracing::info!("re-registered the webhooks with the new CA bundle"),
                        Err(error) => tracing::warn!(%error, "cannot update the webhook CA bundle"),
                    }
                }
            }))
        })
    } else {
        None
    };

    let caches = tokio_util::sync::CancellationToken::new();
    let _stop_caches = caches.clone().drop_guard();
    let injector = Injector::new(
        CachedLookup::start(client, &caches),
        InjectOptions {
            tls_mode: config.tls_mode,
        },
    );
    server.serve_with_admission(injector, admission, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registration_uses_the_bound_port() {
        let registration = Config::loopback(0).registration(40123, "PEM".to_owned());
        assert_eq!(
            registration.target,
            WebhookTarget::Url {
                host: "127.0.0.1".to_owned(),
                port: Some(40123)
            }
        );
        assert_eq!(registration.ca_bundle, CaBundleSource::Pem("PEM".to_owned()));
        assert_eq!(registration.failure_policy, FailurePolicy::Ignore);
    }

    #[test]
    fn cert_manager_replaces_the_ca_bundle() {
        let mut config = Config::in_cluster("kubesphere-system", "ksiam-webhook", 8443);
        config.inject_ca_from = Some("kubesphere-system/ksiam-webhook".to_owned());
        let registration = config.registration(8443, "PEM".to_owned());
        assert_eq!(
            registration.ca_bundle,
            CaBundleSource::CertManager("kubesphere-system/ksiam-webhook".to_owned())
        );
        assert_eq!(
            registration.target,
            WebhookTarget::Service {
                namespace: "kubesphere-system".to_owned(),
                name: "ksiam-webhook".to_owned(),
                port: 443
            }
        );
    }
}
