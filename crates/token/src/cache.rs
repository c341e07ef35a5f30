//! A bounded cache of verified tokens, with one verification in flight per token.
//!
//! The hit path is what every authenticated request pays, so it does no cryptography: entries are found by
//! a per-process randomly seeded 64-bit hash of the token and confirmed by comparing the token itself
//! (in constant time). The SHA-256 [`token_id`] is computed once, on the miss, and handed out with the
//! entry so callers can check revocation without hashing again.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    sync::Arc,
    time::Duration,
};

use parking_lot::{Condvar, Mutex};

use crate::{Error, VerifiedUser, now_unix, token_id};

const SHARDS: usize = 16;

/// A token that verified, as the cache hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Who the token names.
    pub user: VerifiedUser,
    /// [`token_id`] of the token (the key of the live-token set).
    pub token_id: String,
}

impl std::ops::Deref for Verified {
    type Target = VerifiedUser;

    fn deref(&self) -> &VerifiedUser {
        &self.user
    }
}

type Outcome = Result<Arc<Verified>, Error>;

/// A verification in progress that concurrent callers for the same token wait on (singleflight).
#[derive(Default)]
struct InFlight {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

struct Entry {
    /// The token itself, compared on every hit: the 64-bit hash only finds the slot.
    token: Box<str>,
    verified: Arc<Verified>,
    until: i64,
}

/// Keys are already hashes; the map must not hash them again.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByHash<V> = HashMap<u64, V, BuildHasherDefault<PreHashed>>;

#[derive(Default)]
struct Shard {
    entries: ByHash<Entry>,
    in_flight: ByHash<(Box<str>, Arc<InFlight>)>,
}

/// Verified tokens, each kept for at most `ttl` (capped at 10 s) and never past its `exp`. Concurrent misses
/// for one token run a single verification and share its outcome; failures are shared with the waiters but
/// never cached. Invalidate with [`VerifyCache::clear`] when keys rotate or tokens are revoked.
///
/// The cache holds the tokens it has verified in memory (as the HTTP layer that received them does); its
/// `Debug` output shows only counts.
pub struct VerifyCache {
    hasher: foldhash::quality::RandomState,
    shards: Vec<Mutex<Shard>>,
    capacity_per_shard: usize,
    ttl: i64,
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("entries", &self.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn same_token(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

impl VerifyCache {
    /// A cache of at most `capacity` entries kept for at most `ttl` (capped at 10 s).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            hasher: foldhash::quality::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            capacity_per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl: ttl.as_secs().min(10) as i64,
        }
    }

    /// Returns the cached verification of `token`, or runs `verify` (once, however many callers miss at the
    /// same time) and caches a success.
    pub fn get_or_verify(
        &self,
        token: &str,
        verify: impl FnOnce(&str) -> Result<VerifiedUser, Error>,
    ) -> Outcome {
        let key = self.hasher.hash_one(token.as_bytes());
        let now = now_unix();
        let shard = &self.shards[(key >> 60) as usize % SHARDS];
        let (flight, leader) = {
            let mut s = shard.lock();
            if let Some(e) = s.entries.get(&key)
                && e.until > now
                && same_token(&e.token, token)
            {
                return Ok(e.verified.clone());
            }
            match s.in_flight.get(&key) {
                Some((t, f)) if same_token(t, token) => (Some(f.clone()), false),
                // Another token with the same hash is in flight: verify on our own, uncoordinated.
                Some(_) => (None, false),
                None => {
                    let f = Arc::new(InFlight::default());
                    s.in_flight.insert(key, (token.into(), f.clone()));
                    (Some(f), true)
                }
            }
        };
        let Some(flight) = flight else {
            return self.verify(token, verify);
        };
        if !leader {
            let mut outcome = flight.outcome.lock();
            while outcome.is_none() {
                flight.done.wait(&mut outcome);
            }
            return outcome.clone().unwrap_or(Err(Error::SignatureInvalid));
        }
        let outcome = self.verify(token, verify);
        {
            let mut s = shard.lock();
            s.in_flight.remove(&key);
            if let Ok(verified) = &outcome {
                if s.entries.len() >= self.capacity_per_shard {
                    s.entries.retain(|_, e| e.until > now);
                    if s.entries.len() >= self.capacity_per_shard {
                        s.entries.clear();
                    }
                }
                let until = (now + self.ttl).min(verified.user.expires_at.unwrap_or(i64::MAX));
                s.entries.insert(
                    key,
                    Entry {
                        token: token.into(),
                        verified: verified.clone(),
                        until,
                    },
                );
            }
        }
        *flight.outcome.lock() = Some(outcome.clone());
        flight.done.notify_all();
        outcome
    }

    fn verify(&self, token: &str, verify: impl FnOnce(&str) -> Result<VerifiedUser, Error>) -> Outcome {
        let user = verify(token)?;
        Ok(Arc::new(Verified {
            user,
            token_id: token_id(token),
        }))
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().entries.clear();
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> VerifiedUser {
        VerifiedUser {
            username: name.to_owned(),
            token_type: "access_token".to_owned(),
            expires_at: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn a_slot_whose_hash_matches_but_token_differs_is_a_miss() {
        let cache = VerifyCache::new(16, Duration::from_secs(10));
        let a = cache.get_or_verify("token-a", |_| Ok(user("a"))).unwrap();
        assert_eq!(a.token_id, token_id("token-a"));
        // Plant token-a's entry under token-b's hash: the comparison of the tokens must reject it.
        let key_b = cache.hasher.hash_one("token-b".as_bytes());
        let key_a = cache.hasher.hash_one("token-a".as_bytes());
        let entry = {
            let mut s = cache.shards[(key_a >> 60) as usize % SHARDS].lock();
            s.entries.remove(&key_a).unwrap()
        };
        cache.shards[(key_b >> 60) as usize % SHARDS]
            .lock()
            .entries
            .insert(key_b, entry);
        let b = cache.get_or_verify("token-b", |_| Ok(user("b"))).unwrap();
        assert_eq!(b.username, "b");
        assert_eq!(b.token_id, token_id("token-b"));
    }

    #[test]
    fn entries_end_at_the_tokens_expiry() {
        let cache = VerifyCache::new(16, Duration::from_secs(10));
        let mut expired = user("a");
        expired.expires_at = Some(now_unix() - 1);
        let mut calls = 0;
        for _ in 0..2 {
            cache
                .get_or_verify("t", |_| {
                    calls += 1;
                    Ok(expired.clone())
                })
                .unwrap();
        }
        assert_eq!(calls, 2, "an entry past exp is never served");
    }
}
