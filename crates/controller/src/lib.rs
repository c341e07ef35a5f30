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
    /// A token for the KubeSphere ServiceAccount `namespace/name`.
    fn issue(&self, namespace: &str, name: &str) -> Result<String, Error>;
}

impl TokenIssuer for ksiam_token::Issuer {
    fn issue(&self, namespace: &str, name: &str) -> Result<String, Error> {
        Ok(self.issue_sa_token(namespace, name, ksiam_token::now_unix(), None)?)
    }
}

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
