//! Where the injector reads KubeSphere ServiceAccounts and token Secrets from: the API server, or memory in tests.
//!
//! Lookups answer "not found" with `Ok(None)` / `Ok(false)` so that the injector, not the lookup, owns the
//! messages the API server shows to users (spec §7.2). Every other failure is a [`LookupError`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use ksiam_api::serviceaccount::ServiceAccount;
#[cfg(feature = "server")]
use {
    k8s_openapi::ByteString,
    k8s_openapi::api::core::v1::{ConfigMap, Secret},
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ksiam_api::constants::{APISERVER_TLS_SECRET, KUBESPHERE_NAMESPACE, ROOT_CA_CONFIG_MAP, ROOT_CA_KEY},
    kube::api::PostParams,
    kube::{Api, Client},
    std::collections::BTreeMap,
};

/// Reads what the pod injector needs. Implementations must be cheap to share between requests.
pub trait Lookup: Send + Sync {
    /// The KubeSphere ServiceAccount `namespace/name`, or `None` when it does not exist.
    fn get_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ServiceAccount>, LookupError>> + Send;

    /// Whether the Secret `namespace/name` exists. Only existence matters: its type and data are not checked.
    fn secret_exists(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, LookupError>> + Send;

    /// TLS mode only: makes sure the ConfigMap `kubesphere-root-ca.crt` exists in `namespace`, creating it
    /// from the `ca.crt` of the Secret `kubesphere-system/ks-apiserver-tls-certs` when it is missing.
    fn ensure_root_ca_config_map(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<(), LookupError>> + Send;
}

/// A lookup that failed for a reason other than "not found".
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The API server answered with an error, or could not be reached.
    #[cfg(feature = "server")]
    #[error("{}", describe_kube_error(.0))]
    Kube(#[source] kube::Error),
    /// The CA Secret exists but has no `ca.crt` key.
    #[error("secret {namespace}/{name} has no {key} key")]
    MissingCaKey {
        /// Namespace of the CA Secret.
        namespace: String,
        /// Name of the CA Secret.
        name: String,
        /// The key that is missing.
        key: String,
    },
    /// A failure reported by a non-Kubernetes lookup (used by [`MemoryLookup`]).
    #[error("{0}")]
    Other(String),
}

#[cfg(feature = "server")]
impl From<kube::Error> for LookupError {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error)
    }
}

/// The API server's own message for API errors (what kube-apiserver users expect to read), the full
/// error otherwise. Neither contains Secret data: lookups never read it into an error.
#[cfg(feature = "server")]
fn describe_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

// === impl KubeLookup ===

/// Direct GETs against the API server (no cache): the webhook answers from the current state.
#[cfg(feature = "server")]
#[derive(Clone)]
pub struct KubeLookup {
    client: Client,
}

#[cfg(feature = "server")]
impl KubeLookup {
    /// A lookup that uses `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[cfg(feature = "server")]
impl std::fmt::Debug for KubeLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLookup").finish_non_exhaustive()
    }
}

#[cfg(feature = "server")]
impl Lookup for KubeLookup {
    async fn get_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, LookupError> {
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?)
    }

    async fn secret_exists(&self, namespace: &str, name: &str) -> Result<bool, LookupError> {
        // Metadata only: the token never travels to the webhook.
        let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
        Ok(api.get_metadata_opt(name).await?.is_some())
    }

    async fn ensure_root_ca_config_map(&self, namespace: &str) -> Result<(), LookupError> {
        let config_maps = Api::<ConfigMap>::namespaced(self.client.clone(), namespace);
        if config_maps.get_metadata_opt(ROOT_CA_CONFIG_MAP).await?.is_some() {
            return Ok(());
        }
        let secrets = Api::<Secret>::namespaced(self.client.clone(), KUBESPHERE_NAMESPACE);
        let secret = secrets.get(APISERVER_TLS_SECRET).await?;
        let ca = secret
            .data
            .and_then(|mut data| data.remove(ROOT_CA_KEY))
            .ok_or_else(|| LookupError::MissingCaKey {
                namespace: KUBESPHERE_NAMESPACE.to_owned(),
                name: APISERVER_TLS_SECRET.to_owned(),
                key: ROOT_CA_KEY.to_owned(),
            })?;
        let config_map = root_ca_config_map(namespace, ca);
        match config_maps.create(&PostParams::default(), &config_map).await {
            Ok(_) => Ok(()),
            // Another replica (or a concurrent admission) created it first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// The ConfigMap KubeSphere creates in TLS mode: `binaryData.ca.crt` = the KubeSphere CA.
#[cfg(feature = "server")]
fn root_ca_config_map(namespace: &str, ca: ByteString) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIG_MAP.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(ROOT_CA_KEY.to_owned(), ca)])),
        ..ConfigMap::default()
    }
}

// === impl MemoryLookup ===

/// An in-memory lookup: for callers that keep the ServiceAccounts and token Secrets themselves (their own
/// cache, a dry run, a test).
///
/// Failures can be injected per namespace; `ensure_root_ca_config_map` records the namespaces it was asked for.
#[derive(Clone, Debug, Default)]
pub struct MemoryLookup {
    inner: Arc<parking_lot::Mutex<MemoryState>>,
}

#[derive(Debug, Default)]
struct MemoryState {
    service_accounts: HashMap<(String, String), ServiceAccount>,
    secrets: HashSet<(String, String)>,
    failing_namespaces: HashMap<String, String>,
    root_ca_error: Option<String>,
    root_ca_namespaces: Vec<String>,
}

impl MemoryLookup {
    /// An empty lookup: every ServiceAccount and Secret is missing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a ServiceAccount under its own `metadata.namespace` / `metadata.name`.
    pub fn with_service_account(self, service_account: ServiceAccount) -> Self {
        let key = (
            service_account.metadata.namespace.clone().unwrap_or_default(),
            service_account.metadata.name.clone().unwrap_or_default(),
        );
        self.inner.lock().service_accounts.insert(key, service_account);
        self
    }

    /// Records that the Secret `namespace/name` exists.
    pub fn with_secret(self, namespace: &str, name: &str) -> Self {
        self.inner
            .lock()
            .secrets
            .insert((namespace.to_owned(), name.to_owned()));
        self
    }

    /// Makes every lookup in `namespace` fail with `message`.
    pub fn failing_in(self, namespace: &str, message: &str) -> Self {
        self.inner
            .lock()
            .failing_namespaces
            .insert(namespace.to_owned(), message.to_owned());
        self
    }

    /// Makes `ensure_root_ca_config_map` fail with `message` (ServiceAccount and Secret lookups still work).
    pub fn failing_root_ca(self, message: &str) -> Self {
        self.inner.lock().root_ca_error = Some(message.to_owned());
        self
    }

    /// The namespaces `ensure_root_ca_config_map` was called for, in call order.
    pub fn root_ca_namespaces(&self) -> Vec<String> {
        self.inner.lock().root_ca_namespaces.clone()
    }

    fn check(state: &MemoryState, namespace: &str) -> Result<(), LookupError> {
        match state.failing_namespaces.get(namespace) {
            Some(message) => Err(LookupError::Other(message.clone())),
            None => Ok(()),
        }
    }
}

impl Lookup for MemoryLookup {
    async fn get_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, LookupError> {
        let state = self.inner.lock();
        Self::check(&state, namespace)?;
        Ok(state
            .service_accounts
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }

    async fn secret_exists(&self, namespace: &str, name: &str) -> Result<bool, LookupError> {
        let state = self.inner.lock();
        Self::check(&state, namespace)?;
        Ok(state.secrets.contains(&(namespace.to_owned(), name.to_owned())))
    }

    async fn ensure_root_ca_config_map(&self, namespace: &str) -> Result<(), LookupError> {
        let mut state = self.inner.lock();
        Self::check(&state, namespace)?;
        if let Some(message) = &state.root_ca_error {
            return Err(LookupError::Other(message.clone()));
        }
        state.root_ca_namespaces.push(namespace.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_ca_config_map_uses_binary_data() {
        let config_map = root_ca_config_map("default", ByteString(b"PEM".to_vec()));
        let value = serde_json::to_value(&config_map).expect("serialize");
        assert_eq!(value["metadata"]["name"], "kubesphere-root-ca.crt");
        assert_eq!(value["metadata"]["namespace"], "default");
        // ByteString serializes as base64: "PEM" -> "UEVN".
        assert_eq!(value["binaryData"]["ca.crt"], "UEVN");
        assert!(value.get("data").is_none());
    }

    #[test]
    fn api_errors_show_the_api_server_message() {
        let status = kube::core::Status::failure("secrets \"x\" is forbidden", "Forbidden").with_code(403);
        let error = LookupError::from(kube::Error::Api(Box::new(status)));
        assert_eq!(error.to_string(), "secrets \"x\" is forbidden");
    }
}
