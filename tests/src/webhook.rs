//! A tiny mutating admission webhook served by the test process itself, over TLS on loopback.
//!
//! It answers every `AdmissionReview` with `allowed: true` and a JSON patch that adds one label, and counts
//! the calls, so a test can prove kube-apiserver really called it. A test can also run its own code on each
//! request before the answer ([`TestWebhook::start_with_hook`]), holding that request in admission meanwhile.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;

/// A running webhook; dropping it stops the server.
pub struct TestWebhook {
    addr: SocketAddr,
    ca_pem: String,
    calls: Arc<AtomicUsize>,
    // Dropped last: shutting the runtime down stops the accept loop and every connection.
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct Label {
    key: String,
    value: String,
}

/// Code run on every admission request (the review's `request`) before it is answered.
pub type Hook = Arc<dyn Fn(&Value) + Send + Sync>;

// === impl TestWebhook ===

impl TestWebhook {
    /// Serves `https://127.0.0.1:<free port>/mutate` with a self-signed certificate for IP 127.0.0.1; every
    /// admitted object gets the label `key=value`.
    pub fn start(key: &str, value: &str) -> anyhow::Result<Self> {
        Self::start_with_hook(key, value, Arc::new(|_: &Value| {}))
    }

    /// Like [`Self::start`], and runs `hook` (on a blocking thread) on each request before answering it.
    pub fn start_with_hook(key: &str, value: &str, hook: Hook) -> anyhow::Result<Self> {
        let tls_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ksiam-e2e-webhook");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&tls_key)?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls_key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], private)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_io()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicUsize::new(0));
        let label = Label {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        let counter = Arc::clone(&calls);
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, calls, label, hook) = (
                    acceptor.clone(),
                    Arc::clone(&counter),
                    label.clone(),
                    Arc::clone(&hook),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        handle(req, Arc::clone(&calls), label.clone(), Arc::clone(&hook))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            ca_pem: cert.pem(),
            calls,
            _runtime: runtime,
        })
    }

    /// The URL for `clientConfig.url`.
    pub fn url(&self) -> String {
        format!("https://{}/mutate", self.addr)
    }

    /// The base64 PEM for `clientConfig.caBundle`.
    pub fn ca_bundle(&self) -> String {
        STANDARD.encode(&self.ca_pem)
    }

    /// How many AdmissionReviews it has answered.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn handle(
    req: Request<Incoming>,
    calls: Arc<AtomicUsize>,
    label: Label,
    hook: Hook,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let review: Option<Value> = match req.into_body().collect().await {
        Ok(body) => serde_json::from_slice(&body.to_bytes()).ok(),
        Err(_) => None,
    };
    let Some(review) = review else {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            "expected an AdmissionReview".to_owned(),
        ));
    };
    let request = &review["request"];
    let seen = request.clone();
    let _ = tokio::task::spawn_blocking(move || hook(&seen)).await;
    let patch = if request["object"]["metadata"]["labels"].is_object() {
        // JSON pointer escaping: `~` becomes `~0` and `/` becomes `~1`.
        let key = label.key.replace('~', "~0").replace('/', "~1");
        json!([{"op": "add", "path": format!("/metadata/labels/{key}"), "value": label.value}])
    } else {
        let labels: serde_json::Map<String, Value> =
            [(label.key, Value::from(label.value))].into_iter().collect();
        json!([{"op": "add", "path": "/metadata/labels", "value": labels}])
    };
    calls.fetch_add(1, Ordering::SeqCst);
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": request["uid"],
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": STANDARD.encode(patch.to_string()),
        },
    });
    Ok(reply(StatusCode::OK, answer.to_string()))
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().expect("valid header"),
    );
    response
}
