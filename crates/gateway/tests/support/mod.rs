//! An in-process gateway in front of a fake kube-apiserver that records what reaches it.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    response::Response,
};
use futures::StreamExt as _;
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use ksiam_gateway::{Gateway, GatewayConfig, GatewayParts, KubeDirectory, LocalAuthorize, Objects, Oidc};
use ksiam_rbac::{Authorizer, Mode, PolicyIndex, PolicyStore, model::Policy};
use ksiam_token::{Authenticator, Issuer, KeySet};
use parking_lot::Mutex;
use serde_json::json;
use tokio::{io::AsyncReadExt as _, io::AsyncWriteExt as _, net::TcpStream, sync::Notify};
use tokio_util::sync::CancellationToken;

/// What the fake kube-apiserver received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
pub struct FakeApiserver {
    pub seen: Mutex<Vec<Seen>>,
    /// Lets the watch stream send its second event.
    pub release: Notify,
    /// Signalled when an upload's first chunk arrived.
    pub first_chunk: Notify,
}

impl FakeApiserver {
    pub fn paths(&self) -> Vec<String> {
        self.seen.lock().iter().map(|s| s.uri.clone()).collect()
    }
}

async fn fake(state: Arc<FakeApiserver>, mut req: Request) -> Response {
    state.seen.lock().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if req.headers().contains_key(header::UPGRADE) {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .body(Body::empty())
            .unwrap();
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        return Response::new(Body::from("late"));
    }
    if query.contains("watch=true") {
        let state = state.clone();
        let events = futures::stream::unfold(0u8, move |i| {
            let state = state.clone();
            async move {
                match i {
                    0 => Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from_static(b"{\"type\":\"ADDED\"}\n")),
                        1,
                    )),
                    1 => {
                        state.release.notified().await;
                        Some((Ok(Bytes::from_static(b"{\"type\":\"MODIFIED\"}\n")), 2))
                    }
                    _ => None,
                }
            }
        });
        return Response::new(Body::from_stream(events));
    }
    if req.method() == http::Method::POST {
        let mut body = req.into_body().into_data_stream();
        let mut total = 0usize;
        let mut first = true;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                return Response::builder()
                    .status(400)
                    .body(Body::from("body error"))
                    .unwrap();
            };
            total += chunk.len();
            if first {
                first = false;
                state.first_chunk.notify_one();
            }
        }
        return Response::new(Body::from(format!("{total}")));
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-upstream", "yes")
        .body(Body::from(json!({"path": path}).to_string()))
        .unwrap()
}

pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

pub struct Harness {
    pub addr: SocketAddr,
    pub upstream: Arc<FakeApiserver>,
    pub issuer: Issuer,
    pub store: Arc<PolicyStore>,
    pub gateway: Gateway,
    pub shutdown: CancellationToken,
    pub client: Client<HttpConnector, Body>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn sa(name: &str) -> serde_json::Value {
    json!({"apiVersion": "kubesphere.io/v1alpha1", "kind": "ServiceAccount",
           "metadata": {"name": name, "namespace": "default"}})
}

fn sa_subject(name: &str) -> serde_json::Value {
    json!({"kind": "ServiceAccount", "apiGroup": "kubesphere.io", "name": name, "namespace": "default"})
}

pub fn policy() -> Policy {
    serde_json::from_value(json!({
        "roles": [
            {"kind": "ClusterRole", "name": "pods", "rules": [
                {"verbs": ["*"], "apiGroups": [""], "resources": ["pods", "pods/exec"]}]},
            {"kind": "GlobalRole", "name": "tenant-lister", "rules": [
                {"verbs": ["list"], "apiGroups": ["tenant.kubesphere.io"], "resources": ["clusters", "workspaces"]}]},
            {"kind": "GlobalRole", "name": "admin", "rules": [
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]}]}
        ],
        "bindings": [
            {"kind": "RoleBinding", "namespace": "default", "name": "sample-pods",
             "roleRef": {"kind": "ClusterRole", "name": "pods"}, "subjects": [sa_subject("sample")]},
            {"kind": "GlobalRoleBinding", "name": "lister",
             "roleRef": {"kind": "GlobalRole", "name": "tenant-lister"}, "subjects": [sa_subject("lister")]},
            {"kind": "GlobalRoleBinding", "name": "admin",
             "roleRef": {"kind": "GlobalRole", "name": "admin"}, "subjects": [sa_subject("admin")]}
        ],
        "namespaces": [{"name": "default"}, {"name": "kube-system"}]
    }))
    .unwrap()
}

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

pub fn objects() -> Objects {
    let ws = |name: &str, ts: &str, env: &str| {
        from(
            json!({"apiVersion": "tenant.kubesphere.io/v1beta1", "kind": "Workspace",
            "metadata": {"name": name, "creationTimestamp": ts, "labels": {"env": env},
                         "annotations": {"kubesphere.io/alias-name": format!("Alias {name}")}},
            "spec": {}}),
        )
    };
    let cluster = |name: &str, env: &str| {
        from(
            json!({"apiVersion": "cluster.kubesphere.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "labels": {"env": env}, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"connection": {"type": "direct", "kubeconfig": "c2VjcmV0"}}}),
        )
    };
    Objects {
        clusters: vec![cluster("host", "prod"), cluster("member", "dev")],
        workspaces: vec![
            ws("alpha", "2024-01-01T00:00:00Z", "prod"),
            ws("beta", "2024-01-03T00:00:00Z", "dev"),
            ws("gamma", "2024-01-02T00:00:00Z", "prod"),
            ws("delta", "2024-01-04T00:00:00Z", "prod"),
        ],
        service_accounts: ["sample", "lister", "admin"]
            .into_iter()
            .map(|n| from(sa(n)))
            .collect(),
        ..Objects::default()
    }
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

pub async fn start_with(tune: impl FnOnce(&mut GatewayConfig)) -> Harness {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let upstream = Arc::new(FakeApiserver::default());
    let up_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up_listener.local_addr().unwrap();
    let app = axum::Router::new().fallback({
        let state = upstream.clone();
        move |req: Request| fake(state.clone(), req)
    });
    tokio::spawn(async move { axum::serve(up_listener, app).await });

    let keys = KeySet::legacy(SECRET);
    let caches = ksiam_gateway::Caches::from_objects(objects());
    let directory = Arc::new(KubeDirectory::new(caches.clone()));
    let authenticator = Arc::new(Authenticator::new(keys.clone()).with_directory(directory));
    let store = Arc::new(PolicyStore::new(PolicyIndex::build(&policy())));
    store.set_ready(true);
    let authorize = Arc::new(LocalAuthorize::new(Authorizer::new(Mode::Rbac), store.clone()));
    let mut config = GatewayConfig {
        upstream: Some(kube::Config::new(format!("http://{up_addr}").parse().unwrap())),
        ..GatewayConfig::default()
    };
    tune(&mut config);
    let gateway = Gateway::new(GatewayParts {
        config,
        caches,
        authenticator,
        authorize,
        oidc: Some(Oidc {
            issuer: "http://ks-apiserver".into(),
            keys: keys.clone(),
        }),
        registry: Default::default(),
        also_ready: None,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(ksiam_gateway::serve(listener, gateway.router(), shutdown.clone()));
    Harness {
        addr,
        upstream,
        issuer: Issuer::new(keys, "kubesphere"),
        store,
        gateway,
        shutdown,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Harness {
    pub fn token(&self, name: &str) -> String {
        self.issuer
            .issue_sa_token("default", name, ksiam_token::now_unix(), None)
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request; returns status, headers and the whole body.
    pub async fn send(&self, req: http::Request<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = self.client.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>, user_agent: &str) -> (StatusCode, String) {
        let mut b = http::Request::get(self.url(path)).header(header::USER_AGENT, user_agent);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let (s, _, body) = self.send(b.body(Body::empty()).unwrap()).await;
        (s, body)
    }

    /// Writes `target` verbatim as the request target; returns the status code (0 when the server
    /// closed without answering, which the tests treat as a failure).
    pub async fn raw_get(&self, target: &str, token: &str) -> u16 {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let _ = tokio::time::timeout_at(deadline.into(), tcp.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    }
}
