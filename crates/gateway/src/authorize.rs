//! The authorization seam: the gateway asks an [`Authorize`] implementation, in process or remote.

use std::sync::Arc;

use futures::future::BoxFuture;
use ksiam_rbac::{Attributes, Authorizer, PolicyStore, Verdict};

/// The answer to one authorization question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Whether the authorizer denied explicitly (`AlwaysDeny`); RBAC never does, it has no opinion.
    pub denied: bool,
    /// The reason: appended to 403 messages when non-empty.
    pub reason: String,
}

/// Why the authorizer could not answer. `Display` ends up in a 500 body, so it must not hold secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthorizeError(pub String);

/// Decides requests. Implementations fail closed: when they cannot decide they return an error (500)
/// or a denial, never an allow.
pub trait Authorize: Send + Sync + 'static {
    /// Decides `a`.
    fn authorize<'a>(&'a self, a: Attributes<'a>) -> BoxFuture<'a, Result<AuthzDecision, AuthorizeError>>;

    /// Whether the authorizer has its policy (the gateway is not ready before).
    fn ready(&self) -> bool {
        true
    }
}

/// [`Authorize`] over an in-process [`PolicyStore`].
#[derive(Clone)]
pub struct LocalAuthorize {
    authorizer: Authorizer,
    store: Arc<PolicyStore>,
}

impl std::fmt::Debug for LocalAuthorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAuthorize")
            .field("authorizer", &self.authorizer)
            .field("ready", &self.store.is_ready())
            .finish()
    }
}

impl LocalAuthorize {
    /// Decides with `authorizer` over `store` (a store that is not ready denies).
    pub fn new(authorizer: Authorizer, store: Arc<PolicyStore>) -> Self {
        Self { authorizer, store }
    }

    /// Decides synchronously.
    pub fn decide(&self, a: &Attributes<'_>) -> AuthzDecision {
        let verdict = self.authorizer.decide(&self.store, a);
        AuthzDecision {
            allowed: verdict.allowed(),
            denied: matches!(verdict, Verdict::AlwaysDeny),
            reason: verdict.reason(a),
        }
    }
}

impl Authorize for LocalAuthorize {
    fn authorize<'a>(&'a self, a: Attributes<'a>) -> BoxFuture<'a, Result<AuthzDecision, AuthorizeError>> {
        let decision = self.decide(&a);
        Box::pin(async move { Ok(decision) })
    }

    fn ready(&self) -> bool {
        self.store.is_ready()
    }
}
