//! The admin server: `/livez`, `/healthz`, `/readyz` and `/metrics` on one port, the same in every mode.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, response::IntoResponse, routing::get};
use clap::Args;
use http::{HeaderValue, StatusCode, header};
use parking_lot::RwLock;
use prometheus_client::registry::Registry;

use crate::Readiness;

/// The process's one metrics registry: every component registers under its own prefix, `/metrics`
/// encodes the whole of it.
pub type SharedRegistry = Arc<RwLock<Registry>>;

/// Where the admin server listens.
#[derive(Args, Clone, Debug)]
pub struct AdminArgs {
    /// Where `/livez`, `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    #[arg(long, env = "KSIAM_ADMIN_LISTEN", default_value = "127.0.0.1:9093")]
    pub admin_listen: SocketAddr,
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    registry: SharedRegistry,
}

/// The admin routes over `readiness` and `registry`.
pub fn router(readiness: Readiness, registry: SharedRegistry) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { readiness, registry })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}", state.readiness.pending().join(", ")),
        )
    }
}

/// The content type of the OpenMetrics text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes `registry` as an OpenMetrics response.
pub fn encode(registry: &Registry) -> axum::response::Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics").into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> axum::response::Response {
    encode(&state.registry.read())
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt as _;

    use super::*;

    async fn get(app: &Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .clone()
            .oneshot(http::Request::get(path).body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let readiness = Readiness::default();
        let registry = SharedRegistry::default();
        let counter = Counter::<u64>::default();
        registry
            .write()
            .register("ksiam_test_events", "Events.", counter.clone());
        counter.inc();
        let app = router(readiness.clone(), registry);
        let ready = readiness.register("policy");
        assert_eq!(get(&app, "/livez").await, (StatusCode::OK, "ok".into()));
        assert_eq!(
            get(&app, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: waiting for policy".into()
            )
        );
        ready.set(true);
        assert_eq!(get(&app, "/readyz").await, (StatusCode::OK, "ok".into()));
        let (status, text) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("ksiam_test_events_total 1"), "{text}");
        assert_eq!(get(&app, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
