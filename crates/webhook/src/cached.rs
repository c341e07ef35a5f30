//! [`CachedLookup`]: answers from watch caches, and asks the API server only when the cache has no answer.
//!
//! Two GETs per admission (the ServiceAccount, then its Secret) cost more than the mutation itself. The
//! caches (every `ServiceAccount.kubesphere.io`, and the metadata — never the data — of token Secrets)
//! answer the common case; a miss falls through to [`KubeLookup`], so an object created a moment ago
//! is still found and "not found" is always the API server's answer, never a stale cache's.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use ksiam_api::{constants as c, serviceaccount::ServiceAccount};
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt as _, reflector, reflector::ObjectRef, reflector::Store, watcher},
};
use tokio_util::sync::CancellationToken;

use crate::lookup::{KubeLookup, Lookup, LookupError};

/// A [`Lookup`] over watch caches, falling back to [`KubeLookup`] on a miss.
#[derive(Clone)]
pub struct CachedLookup {
    service_accounts: Store<ServiceAccount>,
    token_secrets: Store<PartialObjectMeta<Secret>>,
    direct: KubeLookup,
}

impl std::fmt::Debug for CachedLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedLookup")
            .field("service_accounts", &self.service_accounts.len())
            .field("token_secrets", &self.token_secrets.len())
            .finish()
    }
}

fn drive<S, T, E>(stream: S, what: &'static str, shutdown: CancellationToken)
where
    S: futures::Stream<Item = Result<T, E>> + Send + 'static,
    T: Send,
    E: std::fmt::Display + Send,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = stream.next() => match next {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => tracing::warn!(cache = what, %error, "webhook cache watch failed; retrying"),
                    None => return,
                },
            }
        }
    });
}

impl CachedLookup {
    /// Starts the two watches (stopped by `shutdown`).
    pub fn start(client: Client, shutdown: &CancellationToken) -> Self {
        let (service_accounts, writer) = reflector::store();
        drive(
            reflector(
                writer,
                watcher(
                    Api::<ServiceAccount>::all(client.clone()),
                    watcher::Config::default(),
                ),
            )
            .default_backoff(),
            "serviceaccounts",
            shutdown.clone(),
        );
        let (token_secrets, writer) = reflector::store();
        let config =
            watcher::Config::default().fields(&format!("type={}", c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE));
        drive(
            reflector(
                writer,
                watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), config),
            )
            .default_backoff(),
            "token-secrets",
            shutdown.clone(),
        );
        Self {
            service_accounts,
            token_secrets,
            direct: KubeLookup::new(client),
        }
    }
}

impl Lookup for CachedLookup {
    async fn get_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, LookupError> {
        let key = ObjectRef::new(name).within(namespace);
        // A cached ServiceAccount that lists no Secret yet may be a moment behind the controller.
        if let Some(sa) = self.service_accounts.get(&key)
            && !sa.spec.secrets.is_empty()
        {
            return Ok(Some(Arc::unwrap_or_clone(sa)));
        }
        self.direct.get_service_account(namespace, name).await
    }

    async fn secret_exists(&self, namespace: &str, name: &str) -> Result<bool, LookupError> {
        if self
            .token_secrets
            .get(&ObjectRef::new(name).within(namespace))
            .is_some()
        {
            return Ok(true);
        }
        self.direct.secret_exists(namespace, name).await
    }

    async fn ensure_root_ca_config_map(&self, namespace: &str) -> Result<(), LookupError> {
        self.direct.ensure_root_ca_config_map(namespace).await
    }
}
