//! Revocation as an allow-list: the ids of the tokens that token Secrets currently hold.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::token_id;

/// Where a watch on token Secrets reports what each Secret holds: [`LiveTokens`] itself, or the gRPC
/// `TokenService`, which also streams the changes (`WatchRevocations`).
pub trait HoldTokens: Send + Sync {
    /// Secret `key` holds `token` (replacing what it held before).
    fn hold(&self, key: &str, token: &str);
    /// Secret `key` is gone or holds no token.
    fn release(&self, key: &str);
    /// Releases every Secret for which `keep` returns false (after a watch re-list).
    fn retain(&self, keep: &mut dyn FnMut(&str) -> bool);
}

impl HoldTokens for LiveTokens {
    fn hold(&self, key: &str, token: &str) {
        LiveTokens::hold(self, key, token);
    }
    fn release(&self, key: &str) {
        LiveTokens::release(self, key);
    }
    fn retain(&self, keep: &mut dyn FnMut(&str) -> bool) {
        LiveTokens::retain(self, keep);
    }
}

/// The tokens currently held by token Secrets, by Secret (`namespace/name`) → token id.
///
/// A token is valid only while some Secret holds it: delete the Secret and the token is revoked, recreate
/// the ServiceAccount and old tokens stay dead. Fed by a watch on `kubesphere.io/service-account-token`
/// Secrets.
#[derive(Debug, Default)]
pub struct LiveTokens {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_secret: HashMap<String, String>,
    counts: HashMap<String, usize>,
    generation: u64,
}

impl LiveTokens {
    /// Records that Secret `key` holds `token` (replacing what it held before).
    pub fn hold(&self, key: &str, token: &str) {
        self.hold_id(key, &token_id(token));
    }

    /// Records that `key` holds the token with id `id` (a verifier following a token service's
    /// `WatchRevocations` stream knows ids, never tokens).
    pub fn hold_id(&self, key: &str, id: &str) {
        let id = id.to_owned();
        let mut inner = self.inner.write();
        if inner.by_secret.get(key) == Some(&id) {
            return;
        }
        inner.release(key);
        *inner.counts.entry(id.clone()).or_default() += 1;
        inner.by_secret.insert(key.to_owned(), id);
        inner.generation += 1;
    }

    /// Records that Secret `key` is gone (or no longer holds a token).
    pub fn release(&self, key: &str) {
        let mut inner = self.inner.write();
        if inner.release(key) {
            inner.generation += 1;
        }
    }

    /// Releases every Secret for which `keep` returns false (after a watch re-list).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut inner = self.inner.write();
        let gone: Vec<String> = inner.by_secret.keys().filter(|k| !keep(k)).cloned().collect();
        let mut changed = false;
        for key in gone {
            changed |= inner.release(&key);
        }
        if changed {
            inner.generation += 1;
        }
    }

    /// Whether some Secret holds the token with this id.
    pub fn is_live(&self, token_id: &str) -> bool {
        self.inner.read().counts.contains_key(token_id)
    }

    /// Bumped on every change (cache invalidation).
    pub fn generation(&self) -> u64 {
        self.inner.read().generation
    }

    /// How many Secrets hold tokens.
    pub fn len(&self) -> usize {
        self.inner.read().by_secret.len()
    }

    /// Whether no Secret holds a token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn release(&mut self, key: &str) -> bool {
        let Some(id) = self.by_secret.remove(key) else {
            return false;
        };
        if let Some(n) = self.counts.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&id);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lives_while_some_secret_holds_it() {
        let live = LiveTokens::default();
        live.hold("ns/a", "t1");
        live.hold("ns/b", "t1");
        live.hold("ns/c", "t2");
        live.release("ns/a");
        assert!(live.is_live(&token_id("t1")), "ns/b still holds it");
        live.retain(|k| k != "ns/b");
        assert!(!live.is_live(&token_id("t1")));
        assert!(live.is_live(&token_id("t2")));
        live.hold("ns/c", "t3");
        assert!(!live.is_live(&token_id("t2")), "replaced");
        assert_eq!(live.len(), 1);
    }
}
