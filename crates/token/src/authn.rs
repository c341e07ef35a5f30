//! Bearer-token authentication as ks-apiserver does it (spec §6.2), plus revocation.
//!
//! [`Authenticator::authenticate`] verifies the JWT (through the [`VerifyCache`]), then, for KubeSphere
//! ServiceAccounts, checks that the token is still held by a token Secret ([`LiveTokens`], when
//! configured) and that the ServiceAccount exists ([`Directory`], when configured — the host-cluster
//! behaviour). Other users must exist and not be disabled, except `system:pre-registration`.
//! The gateway and the `TokenReview` endpoint share this one implementation.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;

use crate::{Error, KeySet, LiveTokens, Verifier, VerifyCache};

/// The user KubeSphere lets through without a User object.
pub const PRE_REGISTRATION_USER: &str = "system:pre-registration";

/// The group every authenticated non-ServiceAccount user gets.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// Looks up the identities a token may name (the host cluster's informer caches).
pub trait Directory: Send + Sync + 'static {
    /// Whether `ServiceAccount.kubesphere.io` `namespace/name` exists.
    fn service_account_exists(&self, namespace: &str, name: &str) -> bool;

    /// `Ok` when the User `name` exists and is not disabled; otherwise the error text to return.
    fn check_user(&self, name: &str) -> Result<(), String>;
}

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// The user name (`kubesphere:serviceaccount:<ns>:<name>` for ServiceAccounts).
    pub username: String,
    /// Groups: none for ServiceAccounts, `system:authenticated` for other users.
    pub groups: Vec<String>,
    /// The token's `extra` claim.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// Why authentication failed. `Display` is the text KubeSphere puts in the 401 `Status` message; it never
/// contains the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The JWT did not verify.
    #[error(transparent)]
    Token(#[from] Error),
    /// The ServiceAccount named by the token does not exist.
    #[error("ServiceAccount.kubesphere.io {0:?} not found")]
    ServiceAccountNotFound(String),
    /// The user named by the token does not exist or is disabled.
    #[error("{0}")]
    User(String),
    /// The state authentication depends on (the token Secrets) has not been read yet: fail closed.
    #[error("authentication is not ready yet")]
    NotReady,
}

/// Verifies bearer tokens and resolves them to users.
pub struct Authenticator {
    verifier: ArcSwap<Verifier>,
    cache: VerifyCache,
    live: Option<Arc<LiveTokens>>,
    directory: Option<Arc<dyn Directory>>,
    ready: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("cache", &self.cache)
            .field("revocation", &self.live.is_some())
            .field("directory", &self.directory.is_some())
            .field("gated", &self.ready.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Verifies with `keys`; caches verifications for up to 10 s. No revocation and no existence checks
    /// until configured (the member-cluster behaviour).
    pub fn new(keys: KeySet) -> Self {
        Self {
            verifier: ArcSwap::from_pointee(Verifier::new(keys)),
            cache: VerifyCache::new(65_536, Duration::from_secs(10)),
            live: None,
            directory: None,
            ready: None,
        }
    }

    /// A ServiceAccount token is valid only while a token Secret holds it.
    pub fn with_live_tokens(mut self, live: Arc<LiveTokens>) -> Self {
        self.live = Some(live);
        self
    }

    /// ServiceAccounts and users must exist (host cluster).
    pub fn with_directory(mut self, directory: Arc<dyn Directory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Every token is refused ([`AuthError::NotReady`]) until `ready` returns true: the revocation set is
    /// complete only once the token-Secret watch has listed every Secret.
    pub fn with_ready(mut self, ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Replaces the verification keys (rotation) and forgets cached verifications.
    pub fn set_keys(&self, keys: KeySet) {
        self.verifier.store(Arc::new(Verifier::new(keys)));
        self.cache.clear();
    }

    /// Authenticates a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        if let Some(ready) = &self.ready
            && !ready()
        {
            return Err(AuthError::NotReady);
        }
        let verified = self
            .cache
            .get_or_verify(token, |t| self.verifier.load().verify(t))?;
        let user = &verified.user;
        if let Some((namespace, name)) = user.service_account() {
            if let Some(live) = &self.live
                && !live.is_live(&verified.token_id)
            {
                return Err(Error::Revoked.into());
            }
            if let Some(dir) = &self.directory
                && !dir.service_account_exists(namespace, name)
            {
                return Err(AuthError::ServiceAccountNotFound(name.to_owned()));
            }
            return Ok(Authenticated {
                username: user.username.clone(),
                groups: Vec::new(),
                extra: user.extra.clone(),
            });
        }
        if user.username != PRE_REGISTRATION_USER
            && let Some(dir) = &self.directory
        {
            dir.check_user(&user.username).map_err(AuthError::User)?;
        }
        Ok(Authenticated {
            username: user.username.clone(),
            groups: vec![AUTHENTICATED_GROUP.to_owned()],
            extra: user.extra.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Issuer;

    struct Dir;
    impl Directory for Dir {
        fn service_account_exists(&self, namespace: &str, name: &str) -> bool {
            namespace == "default" && name == "sample"
        }
        fn check_user(&self, name: &str) -> Result<(), String> {
            if name == "admin" {
                Ok(())
            } else {
                Err(format!("user.iam.kubesphere.io {name:?} not found"))
            }
        }
    }

    fn setup() -> (Issuer, Authenticator, Arc<LiveTokens>) {
        let keys = KeySet::legacy(b"0123456789abcdef0123456789abcdef");
        let live = Arc::new(LiveTokens::default());
        let authn = Authenticator::new(keys.clone())
            .with_live_tokens(live.clone())
            .with_directory(Arc::new(Dir));
        (Issuer::new(keys, crate::DEFAULT_ISSUER), authn, live)
    }

    #[test]
    fn service_account_needs_a_live_secret_and_an_existing_account() {
        let (issuer, authn, live) = setup();
        let token = issuer
            .issue_sa_token("default", "sample", crate::now_unix(), None)
            .unwrap();
        assert_eq!(
            authn.authenticate(&token).unwrap_err().to_string(),
            "token has been revoked"
        );
        live.hold("default/sample-abcde", &token);
        let user = authn.authenticate(&token).unwrap();
        assert_eq!(user.username, "kubesphere:serviceaccount:default:sample");
        assert!(user.groups.is_empty(), "ServiceAccounts get no groups");
        live.release("default/sample-abcde");
        assert!(authn.authenticate(&token).is_err(), "revocation beats the cache");

        let other = issuer
            .issue_sa_token("default", "gone", crate::now_unix(), None)
            .unwrap();
        live.hold("default/gone-x", &other);
        assert_eq!(
            authn.authenticate(&other).unwrap_err().to_string(),
            r#"ServiceAccount.kubesphere.io "gone" not found"#
        );
    }

    #[test]
    fn users_get_the_authenticated_group_and_must_exist() {
        let (issuer, authn, _) = setup();
        let claims = |name: &str| crate::Claims {
            iss: Some(crate::DEFAULT_ISSUER.into()),
            sub: Some(name.into()),
            iat: Some(crate::now_unix()),
            token_type: Some("access_token".into()),
            username: Some(name.into()),
            ..Default::default()
        };
        let admin = issuer.issue(&claims("admin")).unwrap();
        assert_eq!(
            authn.authenticate(&admin).unwrap().groups,
            vec![AUTHENTICATED_GROUP]
        );
        let pre = issuer.issue(&claims(PRE_REGISTRATION_USER)).unwrap();
        assert!(authn.authenticate(&pre).is_ok());
        let bob = issuer.issue(&claims("bob")).unwrap();
        assert_eq!(
            authn.authenticate(&bob).unwrap_err().to_string(),
            r#"user.iam.kubesphere.io "bob" not found"#
        );
        assert_eq!(
            authn.authenticate("a.b").unwrap_err().to_string(),
            "token contains an invalid number of segments"
        );
    }

    #[test]
    fn nothing_authenticates_until_ready() {
        let (issuer, authn, live) = setup();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = ready.clone();
        let authn = authn.with_ready(Arc::new(move || gate.load(std::sync::atomic::Ordering::Acquire)));
        let token = issuer
            .issue_sa_token("default", "sample", crate::now_unix(), None)
            .unwrap();
        live.hold("default/sample-abcde", &token);
        assert_eq!(authn.authenticate(&token).unwrap_err(), AuthError::NotReady);
        ready.store(true, std::sync::atomic::Ordering::Release);
        assert!(authn.authenticate(&token).is_ok());
    }

    #[test]
    fn without_checks_only_the_signature_counts() {
        let keys = KeySet::legacy(b"0123456789abcdef0123456789abcdef");
        let issuer = Issuer::new(keys.clone(), crate::DEFAULT_ISSUER);
        let token = issuer.issue_sa_token("x", "y", crate::now_unix(), None).unwrap();
        assert!(Authenticator::new(keys).authenticate(&token).is_ok());
    }
}
