//! Process plumbing shared by every ksiam service, with no KubeSphere logic in it.
//!
//! ```text
//! signals ─► CancellationToken ─► every server: stop accepting, finish open requests (bounded grace)
//! Readiness (one per process) ─┐
//! Registry  (one per process) ─┴─► admin server: /livez /healthz /readyz /metrics   (AdminArgs)
//! http::serve ─ plain or TLS (certificates re-read from files, optional client CA) ─ InflightLimits
//! log::init (LogArgs: plain or JSON lines on stderr)
//! lease::run_as_leader: a `coordination.k8s.io` Lease; only its holder runs the writers
//! ```
//!
//! Every mode of the `ksiam` binary builds its servers from these parts, so a probe, a metric, a TLS
//! rotation or a shutdown behaves the same in each of them.

pub mod admin;
pub mod http;
pub mod lease;
pub mod limit;
pub mod log;
pub mod readiness;
pub mod signals;
pub mod tls;

pub use admin::{AdminArgs, SharedRegistry};
pub use readiness::{Readiness, Ready};
pub use tokio_util::sync::CancellationToken;
