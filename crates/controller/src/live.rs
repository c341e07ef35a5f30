//! Feeds [`ksiam_token::LiveTokens`] (or the token service) from a watch on token Secrets: the revocation half of the token service.
//!
//! A ServiceAccount token is valid only while a `kubesphere.io/service-account-token` Secret holds it.
//! Deleting the Secret (or replacing its token) releases the old token; the watch delivers that within
//! milliseconds, so revocation is effective well inside a second. After a re-list, Secrets that vanished
//! while the watch was down are released too.

use std::{collections::HashSet, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use ksiam_api::constants as c;
use ksiam_token::HoldTokens;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tracing::{info, warn};

/// The key a Secret is held under: `namespace/name`.
fn key(secret: &Secret) -> String {
    format!("{}/{}", secret.namespace().unwrap_or_default(), secret.name_any())
}

/// Applies one Secret's current state.
pub fn apply(live: &dyn HoldTokens, secret: &Secret) {
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(c::SERVICE_ACCOUNT_TOKEN_KEY))
        .and_then(|t| std::str::from_utf8(&t.0).ok())
        .filter(|t| !t.is_empty());
    match token {
        Some(token) if secret.metadata.deletion_timestamp.is_none() => live.hold(&key(secret), token),
        _ => live.release(&key(secret)),
    }
}

/// Watches token Secrets into `live` until `shutdown` resolves; reports `synced` after the first complete list.
pub async fn run(
    client: kube::Client,
    live: Arc<dyn HoldTokens>,
    synced: crate::Ready,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let secrets: Api<Secret> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("type={}", c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE));
    let mut seen: Option<HashSet<String>> = None;
    let mut first_sync = true;
    let events = watcher(secrets, config).default_backoff();
    futures::pin_mut!(events);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => return,
            event = events.next() => match event {
                Some(e) => e,
                None => return,
            },
        };
        match event {
            Ok(watcher::Event::Init) => seen = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(secret)) => {
                if let Some(seen) = &mut seen {
                    seen.insert(key(&secret));
                }
                apply(&*live, &secret);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = seen.take() {
                    live.retain(&mut |k| seen.contains(k));
                }
                if first_sync {
                    first_sync = false;
                    synced.set(true);
                    info!("token secrets synced");
                }
            }
            Ok(watcher::Event::Apply(secret)) => apply(&*live, &secret),
            Ok(watcher::Event::Delete(secret)) => live.release(&key(&secret)),
            Err(e) => warn!(error = %e, "token secret watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(name: &str, token: Option<&str>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("default".into());
        s.data = token.map(|t| {
            BTreeMap::from([(
                c::SERVICE_ACCOUNT_TOKEN_KEY.to_owned(),
                ByteString(t.as_bytes().to_vec()),
            )])
        });
        s
    }

    #[test]
    fn secrets_hold_and_release_tokens() {
        let live = ksiam_token::LiveTokens::default();
        apply(&live, &secret("a", Some("tok")));
        assert!(live.is_live(&ksiam_token::token_id("tok")));
        apply(&live, &secret("a", None));
        assert!(
            !live.is_live(&ksiam_token::token_id("tok")),
            "token removed from the Secret"
        );
        apply(&live, &secret("a", Some("tok")));
        let mut deleting = secret("a", Some("tok"));
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        apply(&live, &deleting);
        assert!(live.is_empty(), "a Secret being deleted holds nothing");
    }
}
