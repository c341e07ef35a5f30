//! ksiam controllers.
//!
//! - [`serviceaccount`]: `ServiceAccount.kubesphere.io` → token Secret, finalizer cleanup, events, restarts of
//!   workloads whose pods mount a stale token Secret.
//! - [`plan`]: the ServiceAccount controller's decisions, without I/O (unit-tested case by case).
//! - [`filler`]: hand-made token Secrets without a token get one.
//! - [`roles`]: built-in role provisioning for workspaces and namespaces.
//! - [`live`]: the set of live tokens (revocation), fed from a watch on token Secrets.
//! - [`lease`]: leader election; only the Lease holder runs the controllers above.

pub mod filler;
/// Leader election (in `ksiam-runtime`; kept here for existing paths).
pub use ksiam_runtime::lease;
pub mod live;
pub mod plan;
pub mod roles;
pub mod serviceaccount;

/// Issues ServiceAccount tokens: in memory in `ksiam all`, or by asking the token service over gRPC in the
/// split topology (then the controller holds no signing key).
pub trait TokenIssuer: Send + Sync {
    /// A token for the KubeSphere ServiceAccount `namespace/name`, expiring after `ttl_seconds` if given.
    fn issue<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        ttl_seconds: Option<i64>,
    ) -> futures::future::BoxFuture<'a, Result<String, Error>>;
}

/// Issues tokens with the in-memory issuer, giving every token of a ServiceAccount a distinct `iat`
/// ([`ksiam_token::UniqueIat`]), so two tokens of one ServiceAccount are never byte-identical.
pub struct UniqueIssuer {
    issuer: ksiam_token::Issuer,
    iat: ksiam_token::UniqueIat,
}

impl UniqueIssuer {
    /// Wraps `issuer`.
    pub fn new(issuer: ksiam_token::Issuer) -> Self {
        Self {
            issuer,
            iat: ksiam_token::UniqueIat::default(),
        }
    }

    fn issue_now(&self, namespace: &str, name: &str, ttl_seconds: Option<i64>) -> Result<String, Error> {
        let iat = self.iat.next(&format!("{namespace}/{name}"));
        Ok(self
            .issuer
            .issue_sa_token(namespace, name, iat, ttl_seconds.map(|t| iat + t))?)
    }
}

impl TokenIssuer for UniqueIssuer {
    fn issue<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        ttl_seconds: Option<i64>,
    ) -> futures::future::BoxFuture<'a, Result<String, Error>> {
        let issued = self.issue_now(namespace, name, ttl_seconds);
        Box::pin(std::future::ready(issued))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_one_service_account_never_repeat() {
        let issuer = UniqueIssuer::new(ksiam_token::Issuer::new(
            ksiam_token::KeySet::legacy(b"secret"),
            ksiam_token::DEFAULT_ISSUER,
        ));
        let tokens: Vec<String> = (0..5)
            .map(|_| issuer.issue_now("ns", "sa", None).unwrap())
            .collect();
        let mut unique = tokens.clone();
        unique.dedup();
        assert_eq!(unique.len(), 5, "{tokens:?}");
        let other = issuer.issue_now("ns", "other", None).unwrap();
        let iat = |t: &str| -> i64 {
            let (_, c) = ksiam_token::decode_unverified(t).unwrap();
            serde_json::from_str::<ksiam_token::Claims>(&c)
                .unwrap()
                .iat
                .unwrap()
        };
        assert!(
            iat(&tokens[4]) - iat(&other) <= 4,
            "other ServiceAccounts are not pushed ahead"
        );
        let verifier = ksiam_token::Verifier::new(ksiam_token::KeySet::legacy(b"secret"));
        assert!(
            tokens.iter().all(|t| verifier.verify(t).is_ok()),
            "within the clock skew"
        );
    }
}

/// Annotation on a `ServiceAccount.kubesphere.io`: lifetime of its tokens in seconds. Unset (the default, as
/// in KubeSphere), tokens never expire. Set, tokens carry `exp` and the controller rotates `data.token` in
/// place when 80% of the lifetime has passed (kubelet refreshes the mounted file; the SDK re-reads it).
pub const TOKEN_TTL_ANNOTATION: &str = "ksiam.kubesphere.io/token-ttl-seconds";

/// The smallest accepted lifetime.
pub const MIN_TOKEN_TTL_SECONDS: i64 = 60;

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Token issuance failed.
    #[error("issuing token: {0}")]
    Token(#[from] ksiam_token::Error),
    /// A namespaced object without a namespace.
    #[error("object has no namespace")]
    MissingNamespace,
    /// An object without a UID.
    #[error("object has no uid")]
    MissingUid,
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

/// Which components have synced their watches (`/readyz`): the process-wide set of `ksiam-runtime`.
pub use ksiam_runtime::{Readiness, Ready};
