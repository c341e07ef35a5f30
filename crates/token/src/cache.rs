//! A bounded cache of verified tokens, with one verification in flight per token.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::{Condvar, Mutex};

use crate::{Error, VerifiedUser, now_unix, token_id};

const SHARDS: usize = 16;

type Outcome = Result<VerifiedUser, Error>;

/// A verification in progress that concurrent callers for the same token wait on (singleflight).
#[derive(Default)]
struct InFlight {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, (VerifiedUser, i64)>,
    in_flight: HashMap<String, Arc<InFlight>>,
}

/// Verified tokens keyed by [`token_id`] (never the token itself), each kept for at most `ttl` (capped at
/// 10 s) and never past its `exp`. Concurrent misses for one token run a single verification and share its
/// outcome; failures are shared with the waiters but never cached. Invalidate with [`VerifyCache::clear`]
/// when keys rotate or tokens are revoked.
pub struct VerifyCache {
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

impl VerifyCache {
    /// A cache of at most `capacity` entries kept for at most `ttl` (capped at 10 s).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            capacity_per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl: ttl.as_secs().min(10) as i64,
        }
    }

    /// Returns the cached verification of `token`, or runs `verify` (once, however many callers miss at the
    /// same time) and caches a success.
    pub fn get_or_verify(&self, token: &str, verify: impl FnOnce(&str) -> Outcome) -> Outcome {
        let id = token_id(token);
        let now = now_unix();
        let shard = &self.shards[shard_of(&id)];
        let (flight, leader) = {
            let mut s = shard.lock();
            if let Some((user, until)) = s.entries.get(&id)
                && *until > now
            {
                return Ok(user.clone());
            }
            match s.in_flight.get(&id) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(InFlight::default());
                    s.in_flight.insert(id.clone(), f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut outcome = flight.outcome.lock();
            while outcome.is_none() {
                flight.done.wait(&mut outcome);
            }
            return outcome.clone().unwrap_or(Err(Error::SignatureInvalid));
        }
        let outcome = verify(token);
        {
            let mut s = shard.lock();
            s.in_flight.remove(&id);
            if let Ok(user) = &outcome {
                if s.entries.len() >= self.capacity_per_shard {
                    s.entries.retain(|_, (_, u)| *u > now);
                    if s.entries.len() >= self.capacity_per_shard {
                        s.entries.clear();
                    }
                }
                let until = (now + self.ttl).min(user.expires_at.unwrap_or(i64::MAX));
                s.entries.insert(id, (user.clone(), until));
            }
        }
        *flight.outcome.lock() = Some(outcome.clone());
        flight.done.notify_all();
        outcome
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

fn shard_of(id: &str) -> usize {
    id.bytes().next().map_or(0, |b| b as usize % SHARDS)
}
