//! Prometheus metrics of the authorizer, registered under the prefix `ksiam_authz`:
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `ksiam_authz_snapshot_generation` | gauge | |
//! | `ksiam_authz_objects` | gauge | `kind` (GlobalRole, …, Namespace) |
//! | `ksiam_authz_decisions_total` | counter | `result` (`allowed`, `denied`, `error`) |
//! | `ksiam_authz_decision_duration_seconds` | histogram | |
//! | `ksiam_authz_watch_errors_total` | counter | `kind` |
//!
//! Label values come from fixed sets; no user name, token or object name is ever a label.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = [(&'static str, &'static str); 1];

/// The outcome of one decision, for [`Metrics::decision`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionResult {
    /// Allowed.
    Allowed,
    /// Denied (including "not ready").
    Denied,
    /// Not decided: invalid input.
    Error,
}

impl DecisionResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// The authorizer's metrics. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    generation: Gauge,
    objects: Family<Labels, Gauge>,
    decisions: Family<Labels, Counter>,
    /// The three series of `decisions`, resolved once: the hot path does not look labels up.
    by_result: [Counter; 3],
    latency: Histogram,
    watch_errors: Family<Labels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under the prefix `ksiam_authz`.
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Self::unregistered();
        let sub = registry.sub_registry_with_prefix("ksiam_authz");
        sub.register(
            "snapshot_generation",
            "Generation of the published policy snapshot",
            m.generation.clone(),
        );
        sub.register("objects", "Watched policy objects by kind", m.objects.clone());
        sub.register(
            "decisions",
            "Authorization decisions by result",
            m.decisions.clone(),
        );
        sub.register(
            "decision_duration_seconds",
            "Time to decide one authorization request",
            m.latency.clone(),
        );
        sub.register(
            "watch_errors",
            "Watch errors and skipped objects by kind",
            m.watch_errors.clone(),
        );
        Arc::new(m)
    }

    /// Metrics that are not registered anywhere (tests, tools).
    pub fn unregistered() -> Self {
        let decisions = Family::<Labels, Counter>::default();
        let by_result = [
            DecisionResult::Allowed,
            DecisionResult::Denied,
            DecisionResult::Error,
        ]
        .map(|r| decisions.get_or_create(&[("result", r.as_str())]).clone());
        Self {
            generation: Gauge::default(),
            objects: Family::default(),
            decisions,
            by_result,
            // 1 µs … ~1 s.
            latency: Histogram::new(exponential_buckets(1e-6, 4.0, 11)),
            watch_errors: Family::default(),
        }
    }

    /// Records the generation of the latest published snapshot.
    pub fn set_generation(&self, generation: u64) {
        self.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Records how many objects of `kind` are known.
    pub fn set_objects(&self, kind: &'static str, count: usize) {
        self.objects
            .get_or_create(&[("kind", kind)])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records one decision and how long it took.
    pub fn decision(&self, result: DecisionResult, took: Duration) {
        self.by_result[result as usize].inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// Records a watch error or a skipped object of `kind`.
    pub fn watch_error(&self, kind: &'static str) {
        self.watch_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// The number of decisions recorded with `result` (for tests and tools).
    pub fn decisions(&self, result: DecisionResult) -> u64 {
        self.decisions.get_or_create(&[("result", result.as_str())]).get()
    }

    /// The last recorded object count of `kind`.
    pub fn objects(&self, kind: &'static str) -> i64 {
        self.objects.get_or_create(&[("kind", kind)]).get()
    }

    /// The last recorded snapshot generation.
    pub fn generation(&self) -> i64 {
        self.generation.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_under_the_prefix() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.set_generation(7);
        m.set_objects("GlobalRole", 3);
        m.decision(DecisionResult::Allowed, Duration::from_micros(5));
        m.decision(DecisionResult::Denied, Duration::from_micros(5));
        m.decision(DecisionResult::Denied, Duration::from_micros(5));
        m.watch_error("Namespace");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "ksiam_authz_snapshot_generation 7",
            "ksiam_authz_objects{kind=\"GlobalRole\"} 3",
            "ksiam_authz_decisions_total{result=\"allowed\"} 1",
            "ksiam_authz_decisions_total{result=\"denied\"} 2",
            // Resolved at start: the error series exists before any error.
            "ksiam_authz_decisions_total{result=\"error\"} 0",
            "ksiam_authz_decision_duration_seconds_count 3",
            "ksiam_authz_watch_errors_total{kind=\"Namespace\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(m.decisions(DecisionResult::Denied), 2);
    }
}
