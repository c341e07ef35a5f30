//! A verifier in another process than the token service (the split topology) follows the service's
//! `WatchRevocations` stream into its own [`LiveTokens`], instead of watching token Secrets itself.
//!
//! ```text
//! token service ─WatchRevocations (full set, then differences)─► follow_revocations ─► LiveTokens
//!      ▲ reconnect with backoff after any error                        └─► FollowState::is_current
//! ```
//!
//! While the stream is down the last set is kept for [`FollowState::stale_after`]; after that
//! [`FollowState::is_current`] is false and an authenticator gated on it refuses every token (fail closed)
//! until the stream is back and has sent a full set again.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use parking_lot::Mutex;

use crate::{LiveTokens, grpc::TokenClient};

/// How long the last revocation set stays trusted after the stream broke (default).
pub const STALE_AFTER: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Whether a follower's set is current enough to authenticate with.
#[derive(Debug)]
pub struct FollowState {
    inner: Mutex<State>,
    stale_after: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// Whether the current stream has delivered its full set.
    synced: bool,
    /// When the last stream broke (`None` while connected and synced, or before the first sync).
    broken_since: Option<Instant>,
    /// Whether a full set was ever received.
    ever_synced: bool,
}

impl FollowState {
    /// A state that trusts a broken stream's last set for `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            stale_after,
        }
    }

    /// How long a broken stream's last set stays trusted.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// Whether the set is current: synced on a live stream, or broken for less than `stale_after`.
    pub fn is_current(&self) -> bool {
        let s = self.inner.lock();
        if s.synced {
            return true;
        }
        s.ever_synced && s.broken_since.is_some_and(|t| t.elapsed() < self.stale_after)
    }

    fn synced(&self) {
        let mut s = self.inner.lock();
        s.synced = true;
        s.ever_synced = true;
        s.broken_since = None;
    }

    fn broken(&self) {
        let mut s = self.inner.lock();
        if s.synced {
            s.synced = false;
            s.broken_since = Some(Instant::now());
        }
    }
}

impl Default for FollowState {
    fn default() -> Self {
        Self::new(STALE_AFTER)
    }
}

/// Applies one `RevocationEvent` to `live` (keys are the token ids themselves).
pub fn apply(live: &LiveTokens, event: &ksiam_proto::token::v1::RevocationEvent) {
    if event.full {
        let keep: std::collections::HashSet<&str> =
            event.live_token_ids_added.iter().map(String::as_str).collect();
        live.retain(|key| keep.contains(key));
    }
    for id in &event.live_token_ids_added {
        live.hold_id(id, id);
    }
    for id in &event.live_token_ids_removed {
        live.release(id);
    }
}

/// Follows `client`'s `WatchRevocations` into `live` until `shutdown`, reconnecting with backoff.
pub async fn follow_revocations(
    client: TokenClient,
    live: Arc<LiveTokens>,
    state: Arc<FollowState>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = BACKOFF_MIN;
    loop {
        let session = async {
            let mut stream = client
                .grpc()
                .watch_revocations(ksiam_proto::token::v1::WatchRevocationsRequest {})
                .await?
                .into_inner();
            let mut first = true;
            while let Some(event) = stream.next().await {
                let event = event?;
                if first && !event.full {
                    return Err(tonic::Status::internal(
                        "the revocation stream did not start with a full set",
                    ));
                }
                apply(&live, &event);
                if first {
                    state.synced();
                    tracing::info!(live = live.len(), "following the token service's revocations");
                    first = false;
                }
            }
            Err::<(), _>(tonic::Status::unavailable("the revocation stream ended"))
        };
        let synced_before = state.is_current();
        let error = tokio::select! {
            () = &mut shutdown => return,
            Err(e) = session => e,
        };
        state.broken();
        if synced_before {
            backoff = BACKOFF_MIN;
        }
        tracing::warn!(code = ?error.code(), message = error.message(), retry_in = ?backoff, "the revocation stream broke; reconnecting");
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksiam_proto::token::v1::RevocationEvent;

    fn event(full: bool, added: &[&str], removed: &[&str]) -> RevocationEvent {
        RevocationEvent {
            generation: 0,
            full,
            live_token_ids_added: added.iter().map(|s| s.to_string()).collect(),
            live_token_ids_removed: removed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_full_set_replaces_and_differences_edit() {
        let live = LiveTokens::default();
        apply(&live, &event(true, &["a", "b"], &[]));
        assert!(live.is_live("a") && live.is_live("b"));
        apply(&live, &event(false, &["c"], &["a"]));
        assert!(!live.is_live("a") && live.is_live("b") && live.is_live("c"));
        // After a reconnect the new full set drops what was revoked meanwhile.
        apply(&live, &event(true, &["c"], &[]));
        assert!(!live.is_live("b") && live.is_live("c"));
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn a_broken_stream_is_trusted_for_a_bounded_time_only() {
        let state = FollowState::new(Duration::from_millis(50));
        assert!(!state.is_current(), "never synced: fail closed");
        state.broken();
        assert!(!state.is_current(), "broken before any sync");
        state.synced();
        assert!(state.is_current());
        state.broken();
        assert!(state.is_current(), "within the bound");
        std::thread::sleep(Duration::from_millis(80));
        assert!(!state.is_current(), "after the bound: fail closed");
        state.synced();
        assert!(state.is_current(), "back after a new full set");
    }
}
