//! Overload protection: a bound on requests in flight per server, as kube-apiserver's
//! `--max-requests-inflight` and `--max-mutating-requests-inflight` do, with long-running requests (watches,
//! upgrades) counted apart. The excess is answered at once with a 429 `Status` and `Retry-After`, so a
//! flood never queues without limit and the admitted requests keep their latency.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use clap::Args;
use http::{HeaderValue, Method, StatusCode, header};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one server (0 = unlimited).
#[derive(Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitArgs {
    /// Largest number of read-only requests in flight; the excess gets 429 at once (0: no limit).
    #[arg(long, env = "KSIAM_MAX_REQUESTS_INFLIGHT", default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Largest number of mutating requests (POST, PUT, PATCH, DELETE) in flight (0: no limit).
    #[arg(long, env = "KSIAM_MAX_MUTATING_REQUESTS_INFLIGHT", default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Largest number of long-running requests (watches, exec/attach/port-forward) open (0: no limit).
    #[arg(long, env = "KSIAM_MAX_LONG_RUNNING_REQUESTS", default_value_t = 4000)]
    pub max_long_running_requests: usize,
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_long_running_requests: 4000,
        }
    }
}

/// Which pool a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
#[allow(missing_docs)]
pub struct KindLabel {
    pub kind: Kind,
}

/// The request kinds, each with its own limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue)]
pub enum Kind {
    /// GET, HEAD, OPTIONS that finish on their own.
    ReadOnly,
    /// Writes.
    Mutating,
    /// Watches and connection upgrades.
    LongRunning,
}

/// Tells long-running requests apart (the server knows its own API).
pub type IsLongRunning = fn(&Request) -> bool;

/// A request is long-running when it asks for a watch (`watch=1`/`true` in the query, or a `/watch/` path)
/// or an upgrade (exec, attach, port-forward): the kube-apiserver rule.
pub fn kubernetes_long_running(req: &Request) -> bool {
    if req.headers().contains_key(header::UPGRADE) {
        return true;
    }
    let uri = req.uri();
    if uri.path().contains("/watch/") {
        return true;
    }
    uri.query().is_some_and(|q| {
        q.split('&').any(|pair| {
            matches!(
                pair,
                "watch=1" | "watch=true" | "watch=True" | "watch=t" | "watch=T" | "watch=TRUE"
            )
        })
    })
}

/// The semaphores and counters of one server.
#[derive(Clone, Debug)]
pub struct InflightLimits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
    long_running: Option<Arc<Semaphore>>,
    is_long_running: IsLongRunning,
    rejected: Family<KindLabel, Counter>,
    inflight: Family<KindLabel, Gauge>,
    /// The gauge of each kind, looked up once (no map lookup per request).
    gauges: [Gauge; 3],
}

fn pool(limit: usize) -> Option<Arc<Semaphore>> {
    (limit > 0).then(|| Arc::new(Semaphore::new(limit)))
}

impl InflightLimits {
    /// Limits from the flags; `is_long_running` classifies requests.
    pub fn new(args: LimitArgs, is_long_running: IsLongRunning) -> Self {
        let inflight = Family::<KindLabel, Gauge>::default();
        let gauges = [Kind::ReadOnly, Kind::Mutating, Kind::LongRunning]
            .map(|kind| inflight.get_or_create(&KindLabel { kind }).clone());
        Self {
            inner: Arc::new(Inner {
                read_only: pool(args.max_requests_inflight),
                mutating: pool(args.max_mutating_requests_inflight),
                long_running: pool(args.max_long_running_requests),
                is_long_running,
                rejected: Family::default(),
                inflight,
                gauges,
            }),
        }
    }

    /// Registers `requests_rejected` and `requests_inflight` (labelled by kind) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "requests_rejected",
            "Requests answered 429 because their pool was full",
            self.inner.rejected.clone(),
        );
        registry.register(
            "requests_inflight",
            "Requests being served, by pool",
            self.inner.inflight.clone(),
        );
    }

    /// Wraps `router` so that every request takes a place in its pool first.
    pub fn layer(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), limit))
    }

    fn kind(&self, req: &Request) -> Kind {
        if (self.inner.is_long_running)(req) {
            Kind::LongRunning
        } else if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            Kind::ReadOnly
        } else {
            Kind::Mutating
        }
    }

    fn semaphore(&self, kind: Kind) -> Option<&Arc<Semaphore>> {
        match kind {
            Kind::ReadOnly => self.inner.read_only.as_ref(),
            Kind::Mutating => self.inner.mutating.as_ref(),
            Kind::LongRunning => self.inner.long_running.as_ref(),
        }
    }
}

/// kube-apiserver's answer to a request over the limit.
pub fn too_many_requests() -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Too many requests, please try again later.",
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": 1},
        "code": 429,
    });
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::RETRY_AFTER, HeaderValue::from_static("1")),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn limit(State(limits): State<InflightLimits>, req: Request, next: Next) -> Response {
    let kind = limits.kind(&req);
    let permit = match limits.semaphore(kind) {
        None => None,
        Some(semaphore) => match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                limits.inner.rejected.get_or_create(&KindLabel { kind }).inc();
                return too_many_requests();
            }
        },
    };
    let gauge = limits.inner.gauges[kind as usize].clone();
    gauge.inc();
    let guard = Guard {
        _permit: permit,
        gauge,
    };
    let (parts, body) = next.run(req).await.into_parts();
    // The place is held until the response body is finished (a watch holds it while it streams).
    Response::from_parts(parts, Body::new(Guarded { body, _guard: guard }))
}

/// Releases a place in the pool when the response body is dropped.
struct Guard {
    _permit: Option<OwnedSemaphorePermit>,
    gauge: Gauge,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

struct Guarded {
    body: Body,
    _guard: Guard,
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use axum::{Router, routing::get};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    fn request(method: Method, uri: &str) -> Request {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn long_running_like_kube_apiserver() {
        assert!(kubernetes_long_running(&request(
            Method::GET,
            "/api/v1/pods?watch=true"
        )));
        assert!(kubernetes_long_running(&request(
            Method::GET,
            "/api/v1/pods?limit=1&watch=1"
        )));
        assert!(kubernetes_long_running(&request(
            Method::GET,
            "/api/v1/watch/pods"
        )));
        assert!(!kubernetes_long_running(&request(
            Method::GET,
            "/api/v1/pods?watch=false"
        )));
        assert!(!kubernetes_long_running(&request(Method::GET, "/api/v1/pods")));
        let mut upgrade = request(Method::POST, "/api/v1/namespaces/a/pods/p/exec");
        upgrade
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(kubernetes_long_running(&upgrade));
    }

    #[tokio::test]
    async fn the_excess_gets_429_at_once_and_places_come_back() {
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        let app = Router::new().route(
            "/slow",
            get(move || {
                let mut hold = hold_rx.clone();
                async move {
                    let _ = hold.wait_for(|released| *released).await;
                    "done"
                }
            })
            .post(|| async { "written" }),
        );
        let limits = InflightLimits::new(
            LimitArgs {
                max_requests_inflight: 2,
                max_mutating_requests_inflight: 1,
                max_long_running_requests: 0,
            },
            kubernetes_long_running,
        );
        let mut registry = Registry::default();
        limits.register(&mut registry);
        let app = limits.layer(app);
        let first = tokio::spawn(app.clone().oneshot(request(Method::GET, "/slow")));
        let second = tokio::spawn(app.clone().oneshot(request(Method::GET, "/slow")));
        // Wait until both hold their place.
        while limits.inner.read_only.as_ref().unwrap().available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let third = app.clone().oneshot(request(Method::GET, "/slow")).await.unwrap();
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(third.headers()[header::RETRY_AFTER], "1");
        let body: serde_json::Value =
            serde_json::from_slice(&third.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["reason"], "TooManyRequests");
        assert_eq!(body["code"], 429);
        // Writes have their own pool: not refused while reads are full.
        let write = app.clone().oneshot(request(Method::POST, "/slow")).await.unwrap();
        assert_eq!(write.status(), StatusCode::OK);
        // Watches are unlimited here (0).
        let watch = app.clone().oneshot(request(Method::GET, "/slow?watch=true"));
        hold_tx.send(true).unwrap();
        assert_eq!(watch.await.unwrap().status(), StatusCode::OK);
        for held in [first, second] {
            let resp = held.await.unwrap().unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "done");
        }
        assert_eq!(limits.inner.read_only.as_ref().unwrap().available_permits(), 2);
        let again = app.oneshot(request(Method::GET, "/slow")).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("requests_rejected_total{kind=\"ReadOnly\"} 1"),
            "{text}"
        );
    }
}
