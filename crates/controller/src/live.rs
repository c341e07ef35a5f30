//! Feeds [`ksiam_token::LiveTokens`] (or the token service) from a watch on token Secrets: the revocation half of the token service.
//!
//! A ServiceAccount token is valid only while a `kubesphere.io/service-account-token` Secret **of its
//! owner** holds it: a Secret in the ServiceAccount's namespace, annotated
//! `kubesphere.io/service-account.name: <sa>`, for a token whose `username` claim is
//! `kubesphere:serviceaccount:<ns>:<sa>`. A Secret holding anyone else's token holds nothing, so a revoked
//! token re-stored elsewhere (another namespace, a Secret annotated for another ServiceAccount) stays dead.
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

/// Whether `token` belongs to the ServiceAccount the token Secret `secret` is for: its `username` claim
/// (the identity the verifier authenticates, read here without verifying) names exactly the Secret's
/// namespace and the ServiceAccount of its `kubesphere.io/service-account.name` annotation.
pub fn token_belongs_to(secret: &Secret, token: &str) -> bool {
    let (Some(namespace), Some(sa)) = (
        secret.metadata.namespace.as_deref(),
        secret
            .annotations()
            .get(c::SERVICE_ACCOUNT_NAME_ANNOTATION)
            .map(String::as_str),
    ) else {
        return false;
    };
    let Ok((_, claims)) = ksiam_token::decode_unverified(token) else {
        return false;
    };
    let Ok(claims) = serde_json::from_str::<ksiam_token::Claims>(&claims) else {
        return false;
    };
    claims
        .username
        .as_deref()
        .and_then(ksiam_token::parse_sa_username)
        == Some((namespace, sa))
}

/// Applies one Secret's current state: it holds its token only while it is a token Secret, not being
/// deleted, and the token is its ServiceAccount's ([`token_belongs_to`]).
pub fn apply(live: &dyn HoldTokens, secret: &Secret) {
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(c::SERVICE_ACCOUNT_TOKEN_KEY))
        .and_then(|t| std::str::from_utf8(&t.0).ok())
        .filter(|t| !t.is_empty());
    match token {
        Some(token)
            if secret.metadata.deletion_timestamp.is_none()
                && secret.type_.as_deref() == Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE)
                && token_belongs_to(secret, token) =>
        {
            live.hold(&key(secret), token)
        }
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
    use ksiam_token::{Issuer, KeySet, LiveTokens, token_id};

    use super::*;

    fn issue(ns: &str, sa: &str) -> String {
        Issuer::new(KeySet::legacy(b"secret"), ksiam_token::DEFAULT_ISSUER)
            .issue_sa_token(ns, sa, ksiam_token::now_unix(), None)
            .unwrap()
    }

    /// A token Secret `ns/name` annotated for `sa`.
    fn secret(ns: &str, name: &str, sa: &str, token: Option<&str>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some(ns.into());
        s.metadata.annotations = Some(BTreeMap::from([(
            c::SERVICE_ACCOUNT_NAME_ANNOTATION.to_owned(),
            sa.to_owned(),
        )]));
        s.type_ = Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE.into());
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
        let live = LiveTokens::default();
        let tok = issue("default", "sa");
        apply(&live, &secret("default", "a", "sa", Some(&tok)));
        assert!(live.is_live(&token_id(&tok)));
        apply(&live, &secret("default", "a", "sa", None));
        assert!(!live.is_live(&token_id(&tok)), "token removed from the Secret");
        apply(&live, &secret("default", "a", "sa", Some(&tok)));
        let mut deleting = secret("default", "a", "sa", Some(&tok));
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        apply(&live, &deleting);
        assert!(live.is_empty(), "a Secret being deleted holds nothing");
    }

    #[test]
    fn only_a_secret_of_the_tokens_own_service_account_holds_it() {
        let live = LiveTokens::default();
        let tok = issue("team-a", "bot");
        let id = token_id(&tok);
        // Another namespace, even annotated for a ServiceAccount of the same name there.
        apply(&live, &secret("team-b", "bot-x", "bot", Some(&tok)));
        assert!(!live.is_live(&id), "another namespace");
        // The right namespace, another ServiceAccount.
        apply(&live, &secret("team-a", "other-x", "other", Some(&tok)));
        assert!(!live.is_live(&id), "another ServiceAccount");
        // No annotation at all.
        let mut bare = secret("team-a", "bare", "bot", Some(&tok));
        bare.metadata.annotations = None;
        apply(&live, &bare);
        assert!(!live.is_live(&id), "no ServiceAccount annotation");
        // Another type.
        let mut opaque = secret("team-a", "opaque", "bot", Some(&tok));
        opaque.type_ = Some("Opaque".into());
        apply(&live, &opaque);
        assert!(!live.is_live(&id), "not a token Secret");
        // Not a token, or a user's token.
        apply(&live, &secret("team-a", "junk", "bot", Some("not.a.jwt")));
        let user = Issuer::new(KeySet::legacy(b"secret"), ksiam_token::DEFAULT_ISSUER)
            .issue(&ksiam_token::Claims {
                username: Some("admin".into()),
                ..Default::default()
            })
            .unwrap();
        apply(&live, &secret("team-a", "user", "bot", Some(&user)));
        assert!(live.is_empty(), "nothing held");
        // Its own Secret holds it; a takeover of that Secret by another annotation releases it.
        apply(&live, &secret("team-a", "bot-y", "bot", Some(&tok)));
        assert!(live.is_live(&id));
        apply(&live, &secret("team-a", "bot-y", "other", Some(&tok)));
        assert!(!live.is_live(&id), "re-annotated for another ServiceAccount");
    }

    #[test]
    fn the_username_claim_decides_not_the_subject() {
        // The verifier authenticates the `username` claim; `sub` naming the Secret's ServiceAccount is not enough.
        let forged = Issuer::new(KeySet::legacy(b"secret"), ksiam_token::DEFAULT_ISSUER)
            .issue(&ksiam_token::Claims {
                sub: Some(ksiam_token::sa_username("team-b", "bot")),
                username: Some(ksiam_token::sa_username("team-a", "bot")),
                ..Default::default()
            })
            .unwrap();
        assert!(!token_belongs_to(&secret("team-b", "s", "bot", None), &forged));
        assert!(token_belongs_to(&secret("team-a", "s", "bot", None), &forged));
    }
}
