//! A bounded cache of verified tokens.

use std::{collections::HashMap, time::Duration};

use parking_lot::Mutex;

use crate::{Error, VerifiedUser, now_unix, token_id};

const SHARDS: usize = 16;

/// Verified tokens keyed by [`token_id`] (never the token itself), each kept for at most `ttl` and never past
/// its `exp`. Invalidate with [`VerifyCache::clear`] when keys rotate or tokens are revoked.
#[derive(Debug)]
pub struct VerifyCache {
    shards: Vec<Mutex<HashMap<String, (VerifiedUser, i64)>>>,
    capacity_per_shard: usize,
    ttl: i64,
}

impl VerifyCache {
    /// A cache of at most `capacity` entries kept for at most `ttl` (capped at 10 s).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            capacity_per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl: ttl.as_secs().min(10) as i64,
        }
    }

    /// Returns the cached verification of `token`, or runs `verify` and caches a success.
    pub fn get_or_verify(
        &self,
        token: &str,
        verify: impl FnOnce(&str) -> Result<VerifiedUser, Error>,
    ) -> Result<VerifiedUser, Error> {
        let id = token_id(token);
        let now = now_unix();
        let shard = &self.shards[shard_of(&id)];
        if let Some((user, until)) = shard.lock().get(&id)
            && *until > now
        {
            return Ok(user.clone());
        }
        let user = verify(token)?;
        let until = (now + self.ttl).min(user.expires_at.unwrap_or(i64::MAX));
        let mut map = shard.lock();
        if map.len() >= self.capacity_per_shard {
            map.retain(|_, (_, u)| *u > now);
            if map.len() >= self.capacity_per_shard {
                map.clear();
            }
        }
        map.insert(id, (user.clone(), until));
        Ok(user)
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().clear();
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn shard_of(id: &str) -> usize {
    id.bytes().next().map_or(0, |b| b as usize % SHARDS)
}
