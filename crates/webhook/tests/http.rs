//! The HTTPS server on loopback with a self-signed CA, called by a client that trusts only that CA.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use ksiam_api::serviceaccount::ServiceAccount;
use ksiam_webhook::{InjectOptions, Injector, MemoryLookup, Server, TlsSource};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const SEED_POD: &str = include_str!("../testdata/seed-pod.yaml");
const SEED_INJECTED: &str = include_str!("../testdata/seed-injected.yaml");
const UID: &str = "b6b6f5a4-0d7e-4a0f-8c43-63a3f1f0f6d2";

struct Running {
    addr: SocketAddr,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ksiam_webhook::ServerError>>,
}

impl Running {
    async fn start() -> Self {
        let lookup = MemoryLookup::new()
            .with_service_account(
                serde_json::from_value::<ServiceAccount>(json!({
                    "apiVersion": "kubesphere.io/v1alpha1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "sample", "namespace": "default"},
                    "secrets": [{"name": "sample-lqmbj", "namespace": "default"}],
                }))
                .expect("ServiceAccount"),
            )
            .with_secret("default", "sample-lqmbj");
        let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &TlsSource::loopback())
            .await
            .expect("bind");
        let addr = server.local_addr().expect("local addr");
        let ca_pem = server.tls().ca_bundle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            server.serve(Injector::new(lookup, InjectOptions::default()), async {
                let _ = stopped.await;
            }),
        );
        Self {
            addr,
            ca_pem,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("the server stops after shutdown")
            .expect("the server task did not panic");
        assert!(result.is_ok(), "{result:?}");
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA PEM"))
            .expect("add CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// One HTTPS request, verifying the server as `server_name` against the CA.
    async fn request_as(
        &self,
        server_name: ServerName<'static>,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> std::io::Result<(StatusCode, Option<String>, Bytes)> {
        let tcp = TcpStream::connect(self.addr).await?;
        let tls = self.connector().connect(server_name, tcp).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok((status, content_type, body))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Option<String>, Bytes) {
        self.request_as(
            ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
            method,
            path,
            body,
        )
        .await
        .expect("HTTPS request")
    }
}

fn seed_review() -> Value {
    let pod: Value = serde_yaml::from_str(SEED_POD).expect("seed pod");
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "sample-pod",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "admin", "uid": "0", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"},
        },
    })
}

#[tokio::test]
async fn admission_review_over_https() {
    let server = Running::start().await;
    let review = seed_review();
    let (status, content_type, body) = server
        .request(
            Method::POST,
            "/serviceaccount-pod-injector",
            review.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(content_type.as_deref(), Some("application/json"));

    let answer: Value = serde_json::from_slice(&body).expect("JSON answer");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert!(answer.get("request").is_none());
    let response = &answer["response"];
    assert_eq!(response["uid"], UID);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");

    // The patch is base64 JSON Patch that turns the seed pod into the seed's admitted pod.
    let patch = STANDARD
        .decode(response["patch"].as_str().expect("patch is a base64 string"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("JSON patch");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("patch applies");
    let expected: Value = serde_yaml::from_str(SEED_INJECTED).expect("seed block");
    assert_eq!(pod["spec"]["volumes"], expected["volumes"]);
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"],
        expected["volumeMounts"]
    );

    // A denial is an answer too (HTTP 200), not an HTTP error.
    let mut missing = review.clone();
    missing["request"]["object"]["metadata"]["annotations"]["kubesphere.io/serviceaccount-name"] =
        json!("nobody");
    let (status, _, body) = server
        .request(
            Method::POST,
            "/serviceaccount-pod-injector",
            missing.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).expect("JSON answer");
    assert_eq!(
        answer["response"],
        json!({
            "uid": UID,
            "allowed": false,
            "status": {"code": 404, "message": "ServiceAccount.kubesphere.io \"nobody\" not found"},
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn healthz_and_bad_requests() {
    let server = Running::start().await;
    let (status, _, body) = server.request(Method::GET, "/healthz", Vec::new()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));

    let (status, _, body) = server
        .request(
            Method::POST,
            "/serviceaccount-pod-injector",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = String::from_utf8_lossy(&body);
    assert!(message.starts_with("the request body is not JSON"), "{message}");

    let (status, _, body) = server
        .request(
            Method::POST,
            "/serviceaccount-pod-injector",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(&body[..], b"the AdmissionReview has no request\n");

    let (status, _, _) = server
        .request(Method::GET, "/serviceaccount-pod-injector", Vec::new())
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = server.request(Method::GET, "/nowhere", Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_10_mib_are_refused() {
    let server = Running::start().await;
    // Just over the limit, padded inside valid JSON.
    let mut review = seed_review();
    review["padding"] = json!("x".repeat(10 * 1024 * 1024));
    let (status, _, _) = server
        .request(
            Method::POST,
            "/serviceaccount-pod-injector",
            review.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Just under it is fine (unknown top-level fields are ignored).
    review["padding"] = json!("x".repeat(9 * 1024 * 1024));
    let (status, _, _) = server
        .request(
            Method::POST,
            "/serviceaccount-pod-injector",
            review.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn the_certificate_is_only_valid_for_its_names() {
    let server = Running::start().await;
    let name = ServerName::try_from("ksiam-webhook.example.com").expect("server name");
    let result = server.request_as(name, Method::GET, "/healthz", Vec::new()).await;
    let error = result.expect_err("a name not in the certificate must fail verification");
    assert!(error.to_string().contains("certificate"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    let server = Running::start().await;
    // An HTTP/1.1 connection that stays open after its request, as the API server keeps them.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let tls = server
        .connector()
        .connect(ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()), tcp)
        .await
        .expect("TLS");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    let connection = tokio::spawn(connection);
    let request = Request::get("/healthz")
        .header(header::HOST, server.addr.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.expect("body");

    server.stop().await;
    // The server closed the connection rather than leaving it to outlive the shutdown grace period.
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the client sees the connection close")
        .expect("no panic")
        .expect("clean close");
    drop(sender);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let server = Running::start().await;
    let addr = server.addr;
    server.stop().await;
    // The listener is closed, so the connection is refused.
    let connected = TcpStream::connect(addr).await;
    assert!(connected.is_err(), "still accepting on {addr}");
}
