//! ksiam controllers.
//!
//! - [`serviceaccount`]: `ServiceAccount.kubesphere.io` → token Secret, finalizer cleanup, events, restarts of
//!   workloads whose pods mount a stale token Secret.
//! - [`filler`]: hand-made token Secrets without a token get one.
//! - [`roles`]: built-in role provisioning for workspaces and namespaces.

pub mod filler;
pub mod roles;
pub mod serviceaccount;

/// Issues ServiceAccount tokens (in memory in `ksiam all`, or through the token service).
pub trait TokenIssuer: Send + Sync {
    /// A token for the KubeSphere ServiceAccount `namespace/name`, expiring after `ttl_seconds` if given.
    fn issue(&self, namespace: &str, name: &str, ttl_seconds: Option<i64>) -> Result<String, Error>;
}

impl TokenIssuer for ksiam_token::Issuer {
    fn issue(&self, namespace: &str, name: &str, ttl_seconds: Option<i64>) -> Result<String, Error> {
        let now = ksiam_token::now_unix();
        Ok(self.issue_sa_token(namespace, name, now, ttl_seconds.map(|t| now + t))?)
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
