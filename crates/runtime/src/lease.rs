//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder runs the controllers (the writers);
//! every replica keeps serving reads, gRPC and admission.
//!
//! The holder renews every `renew_every`; a replica takes the Lease over when it is free, held by its own
//! identity (a restarted Pod keeps its name, so it does not wait out its own Lease), or not renewed for
//! `duration`. Updates use the Lease's `resourceVersion`, so two replicas can never both win. A holder that
//! cannot renew for `duration` stops its controllers and reports [`LeaseLost`]; the process should exit
//! and be restarted. On shutdown the Lease is released so a standby takes over at once.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the Lease lives and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the Pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (and a standby retries).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// A Lease `name` in `namespace`, held by `identity`, valid 15 s, renewed every 2 s.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// The Lease could not be renewed in time; the controllers were stopped.
#[derive(Debug, thiserror::Error)]
#[error("lost the leader lease {namespace}/{name}: {reason}")]
pub struct LeaseLost {
    namespace: String,
    name: String,
    reason: String,
}

/// Runs `work` while this replica holds the Lease. Waits for the Lease first; returns `Ok` after `shutdown`
/// (having stopped `work` and released the Lease), or `Err` when the Lease was lost.
pub async fn run_as_leader<F, Fut>(
    client: kube::Client,
    config: LeaseConfig,
    shutdown: CancellationToken,
    work: F,
) -> Result<(), LeaseLost>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let lost = |reason: String| LeaseLost {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        reason,
    };
    // Acquire.
    let mut waiting_logged = false;
    let mut held = loop {
        match try_acquire(&api, &config).await {
            Ok(Some(lease)) => break lease,
            Ok(None) => {
                if !waiting_logged {
                    info!(lease = %config.name, "another replica holds the leader lease; standing by");
                    waiting_logged = true;
                }
            }
            Err(e) => warn!(error = %e, lease = %config.name, "cannot acquire the leader lease; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.renew_every) => {}
        }
    };
    info!(lease = %config.name, identity = %config.identity, "acquired the leader lease");

    let stop = shutdown.child_token();
    let mut task = tokio::spawn(work(stop.clone()));
    let mut last_renew = tokio::time::Instant::now();
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            done = &mut task => {
                if let Err(e) = done {
                    warn!(error = %e, "controllers panicked");
                }
                break Ok(());
            }
            _ = tokio::time::sleep(config.renew_every) => {}
        }
        match renew(&api, &config, &held).await {
            Ok(Some(lease)) => {
                held = lease;
                last_renew = tokio::time::Instant::now();
            }
            Ok(None) => break Err(lost("another replica took it over".into())),
            Err(e) if last_renew.elapsed() + config.renew_every >= config.duration => {
                break Err(lost(format!("not renewed for {:?}: {e}", last_renew.elapsed())));
            }
            Err(e) => warn!(error = %e, lease = %config.name, "renewing the leader lease failed; retrying"),
        }
    };
    stop.cancel();
    if !task.is_finished() {
        let _ = task.await;
    }
    if result.is_ok() {
        release(&api, &config, held).await;
    }
    result
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(spec: &LeaseSpec, at: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.0.as_second() + duration < at.as_second()
}

/// The Lease after taking it, or `None` while someone else validly holds it.
async fn try_acquire(api: &Api<Lease>, config: &LeaseConfig) -> Result<Option<Lease>, kube::Error> {
    let duration = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_duration_seconds: Some(duration),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(lease) => Ok(Some(lease)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == config.identity;
    if !(ours || holder.is_empty() || expired(spec, Timestamp::now())) {
        return Ok(None);
    }
    if !ours {
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.acquire_time = Some(now());
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration);
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(lease) => Ok(Some(lease)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The renewed Lease, or `None` when another replica holds it now.
async fn renew(api: &Api<Lease>, config: &LeaseConfig, held: &Lease) -> Result<Option<Lease>, kube::Error> {
    let mut lease = held.clone();
    lease.spec.get_or_insert_with(Default::default).renew_time = Some(now());
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(lease) => Ok(Some(lease)),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Someone wrote the Lease: still ours only if it still names us.
            let current = api.get(&config.name).await?;
            let ours = current.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                == Some(config.identity.as_str());
            if ours {
                Box::pin(renew(api, config, &current)).await
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, config: &LeaseConfig, mut lease: Lease) {
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(_) => info!(lease = %config.name, "released the leader lease"),
        Err(e) => warn!(error = %e, lease = %config.name, "cannot release the leader lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expiry() {
        let at = Timestamp::from_second(1_000).unwrap();
        let spec = |renewed: i64, secs: i32| LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        };
        assert!(!expired(&spec(990, 15), at));
        assert!(expired(&spec(980, 15), at));
        assert!(expired(&LeaseSpec::default(), at), "never renewed");
    }
}
