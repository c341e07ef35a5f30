//! Load on two servers of one kind, ours and a Go peer, from one client: the same requests, the same
//! concurrency, one after the other in the same run (P5: gRPC `Authorize`; P7: the pod injector webhook).
//!
//! ```text
//!   ksiam-bench load <kind> (pinned to core 1 by the caller)
//!     ├─ spawns `taskset -c 0 ksiam-bench serve-<kind>` and `taskset -c 0 <peer>`; each prints `LISTENING <addr>`
//!     ├─ checks both answer the same (decisions; patched pod)
//!     └─ per repeat, per concurrency: ours then theirs, closed-loop workers for a fixed time
//!          ─► `LOAD kind=… server=… concurrency=… run=… rps=… p50_us=… p99_us=… server_cpu=…` lines
//! ```
//!
//! `server_cpu` is the server process's CPU time (user + system, all threads, from `/proc/<pid>/stat`) over the
//! run divided by the run's wall time: 1.0 is one core busy. `rps ÷ server_cpu` is req/s per core.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ksiam_api::serviceaccount::ServiceAccount;
use ksiam_proto::authz::v1::{self as pb, authorizer_client::AuthorizerClient};
use ksiam_webhook::{InjectOptions, Injector, MemoryLookup};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::BenchCase;

/// The seed pod of the walkthrough (the same file ksiam-webhook's benchmark reads).
pub const SEED_POD: &str = include_str!("../../crates/webhook/testdata/seed-pod.yaml");
/// The webhook's path on both servers.
pub const WEBHOOK_PATH: &str = ksiam_api::constants::POD_INJECTOR_WEBHOOK_PATH;

/// The AdmissionReview both webhooks receive: a CREATE of the seed pod.
pub fn seed_review() -> anyhow::Result<Value> {
    let pod: Value = serde_yaml::from_str(SEED_POD)?;
    Ok(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b6b6f5a4-0d7e-4a0f-8c43-63a3f1f0f6d2",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "sample-pod",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": null,
        },
    }))
}

/// Our injector over the in-memory lookup both webhooks use: ServiceAccount `default/sample` whose first
/// secret is `default/sample-lqmbj`, which exists (the Go peer holds the same two objects).
pub fn seed_injector() -> anyhow::Result<Injector<MemoryLookup>> {
    let sa: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "kubesphere.io/v1alpha1",
        "kind": "ServiceAccount",
        "metadata": {"name": "sample", "namespace": "default"},
        "secrets": [{"name": "sample-lqmbj", "namespace": "default"}],
    }))?;
    let lookup = MemoryLookup::new()
        .with_service_account(sa)
        .with_secret("default", "sample-lqmbj");
    Ok(Injector::new(lookup, InjectOptions::default()))
}

/// The pod an AdmissionReview response makes of `pod`: the response must allow, its JSONPatch is applied.
///
/// Two no-op fields a typed Go round trip adds are dropped, as the API server would default them anyway:
/// `status: {}` and `metadata.creationTimestamp: null`.
pub fn patched_pod(response: &[u8], pod: &Value) -> anyhow::Result<Value> {
    let review: Value = serde_json::from_slice(response).context("the response is not JSON")?;
    let r = &review["response"];
    if r["allowed"] != Value::Bool(true) {
        bail!("the webhook did not allow the pod: {review}");
    }
    let mut patched = pod.clone();
    if let Some(patch) = r["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch)?;
        let patch: json_patch::Patch = serde_json::from_slice(&bytes)?;
        json_patch::patch(&mut patched, &patch)?;
    }
    if let Some(obj) = patched.as_object_mut() {
        if obj.get("status").is_some_and(|s| s == &json!({})) {
            obj.remove("status");
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
            && meta.get("creationTimestamp").is_some_and(Value::is_null)
        {
            meta.remove("creationTimestamp");
        }
    }
    Ok(patched)
}

/// Our webhook's response to the seed review, computed in process (no HTTP).
pub fn ours_in_process(review: &Value) -> anyhow::Result<Vec<u8>> {
    let injector = seed_injector()?;
    let body = serde_json::to_vec(review)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let review = ksiam_webhook::parse_review(&body)?;
        let response = injector.mutate(&review.request, review.object.as_ref()).await;
        Ok(ksiam_webhook::encode_review(response)?)
    })
}

// === percentiles and summaries ===

/// The nearest-rank `q` quantile (0 < q ≤ 1) of sorted values: the smallest value with at least `q` of all
/// values at or below it.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One timed run.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Completed requests.
    pub requests: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Outcome {
    /// Summarises latencies (in any order) measured over `elapsed`.
    pub fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Option<Self> {
        latencies.sort_unstable();
        Some(Self {
            requests: latencies.len() as u64,
            elapsed,
            p50: percentile(&latencies, 0.50)?,
            p99: percentile(&latencies, 0.99)?,
        })
    }

    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

// === server processes ===

/// A server process this program started; killed (by its pid) when dropped.
pub struct ServerProcess {
    /// Which server: `ours` or the peer's name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Starts `program args…` (under `taskset -c <cpu>` if given) and waits for its `LISTENING <addr>` line.
    pub fn start(
        name: &str,
        cpu: Option<&str>,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(line) => {
                    if let Some(addr) = line?.strip_prefix("LISTENING ") {
                        break addr.trim().parse::<SocketAddr>()?;
                    }
                }
                None => {
                    let status = child.wait()?;
                    bail!("{name} ({}) exited before listening: {status}", program.display());
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            name: name.to_owned(),
            addr,
            child,
        })
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.child.id())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time of process `pid` from `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of
/// 1/100 s, Linux's USER_HZ).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_cpu_time(&stat).with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

fn stat_cpu_time(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

// === webhook client ===

/// Accepts any server certificate (both servers use a self-signed one made at start); signatures are still
/// checked, so the handshake does the same work as with a trusted certificate.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One HTTPS/1.1 keep-alive connection.
async fn webhook_connection(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn post(sender: &mut Sender, addr: SocketAddr, body: &Bytes) -> anyhow::Result<Bytes> {
    let request = http::Request::post(WEBHOOK_PATH)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(bytes)
}

/// One AdmissionReview answered by the webhook at `addr`.
pub async fn webhook_once(addr: SocketAddr, body: &Bytes) -> anyhow::Result<Bytes> {
    let mut sender = webhook_connection(addr, &tls_connector()?).await?;
    post(&mut sender, addr, body).await
}

/// `concurrency` connections, each sending `body` back to back for `duration`.
pub async fn webhook_load(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    body: Bytes,
) -> anyhow::Result<Outcome> {
    let tls = tls_connector()?;
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        senders.push(webhook_connection(addr, &tls).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for mut sender in senders {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                post(&mut sender, addr, &body).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Outcome::new(latencies, start.elapsed()).context("no request completed")
}

// === gRPC client ===

/// The proto attributes of the benchmark cases (what both gRPC servers receive).
pub fn grpc_requests(cases: &[BenchCase]) -> Vec<pb::Attributes> {
    cases
        .iter()
        .map(|c| {
            let mut a = ksiam_authz::grpc::attributes_to_proto(&c.request.attributes());
            a.api_version = "v1".to_owned();
            a
        })
        .collect()
}

/// A plaintext HTTP/2 channel.
pub async fn grpc_channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Checks every case's decision at `addr`.
pub async fn grpc_check(addr: SocketAddr, cases: &[BenchCase]) -> anyhow::Result<()> {
    let mut client = AuthorizerClient::new(grpc_channel(addr).await?);
    for (c, a) in cases.iter().zip(grpc_requests(cases)) {
        let r = client
            .authorize(pb::AuthorizeRequest { attributes: Some(a) })
            .await?
            .into_inner();
        if r.allowed != c.allowed {
            bail!(
                "{addr}: case {} answered allowed={}, expected {}",
                c.name,
                r.allowed,
                c.allowed
            );
        }
    }
    Ok(())
}

/// `connections` HTTP/2 connections with `concurrency` unary `Authorize` calls in flight in all, cycling
/// through `requests`, for `duration`.
pub async fn grpc_load(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    duration: Duration,
    requests: Arc<Vec<pb::Attributes>>,
) -> anyhow::Result<Outcome> {
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(grpc_channel(addr).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut client = AuthorizerClient::new(channels[w % channels.len()].clone());
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = w;
            while Instant::now() < deadline {
                let a = requests[i % requests.len()].clone();
                i += 1;
                let t = Instant::now();
                let r = client
                    .authorize(pb::AuthorizeRequest { attributes: Some(a) })
                    .await?;
                latencies.push(t.elapsed());
                std::hint::black_box(r);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Outcome::new(latencies, start.elapsed()).context("no request completed")
}

/// The `LOAD …` line of one run.
pub fn load_line(kind: &str, server: &str, concurrency: usize, run: usize, o: &Outcome, cpu: f64) -> String {
    format!(
        "LOAD kind={kind} server={server} concurrency={concurrency} run={run} requests={} seconds={:.3} rps={:.1} p50_us={:.1} p99_us={:.1} server_cpu={cpu:.3}",
        o.requests,
        o.elapsed.as_secs_f64(),
        o.rps(),
        o.p50.as_secs_f64() * 1e6,
        o.p99.as_secs_f64() * 1e6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = us(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_micros(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_micros(99)));
        assert_eq!(percentile(&v, 1.0), Some(Duration::from_micros(100)));
        let one = us(&[7]);
        assert_eq!(percentile(&one, 0.5), Some(Duration::from_micros(7)));
        assert_eq!(percentile(&one, 0.99), Some(Duration::from_micros(7)));
        assert_eq!(percentile(&us(&[1, 2, 3]), 0.5), Some(Duration::from_micros(2)));
        assert_eq!(
            percentile(&us(&[1, 2, 3, 4]), 0.5),
            Some(Duration::from_micros(2))
        );
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn outcome_sorts_and_counts() {
        let o = Outcome::new(us(&[30, 10, 20, 40]), Duration::from_secs(2)).unwrap();
        assert_eq!(o.requests, 4);
        assert_eq!(o.rps(), 2.0);
        assert_eq!(o.p50, Duration::from_micros(20));
        assert_eq!(o.p99, Duration::from_micros(40));
        assert!(Outcome::new(Vec::new(), Duration::from_secs(1)).is_none());
    }

    #[test]
    fn proc_stat_cpu_time_reads_utime_and_stime() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 5 0 0";
        assert_eq!(stat_cpu_time(stat), Some(Duration::from_millis(3000)));
        assert_eq!(stat_cpu_time("garbage"), None);
        let own = cpu_time(std::process::id()).unwrap();
        assert!(own < Duration::from_secs(100_000));
    }

    #[test]
    fn our_patch_mounts_the_token_into_the_seed_pod() {
        let review = seed_review().unwrap();
        let pod = &review["request"]["object"];
        let patched = patched_pod(&ours_in_process(&review).unwrap(), pod).unwrap();
        assert_eq!(
            patched["spec"]["volumes"],
            json!([{
                "name": "kubesphere-service-account",
                "projected": {"defaultMode": 420, "sources": [{"secret": {
                    "name": "sample-lqmbj",
                    "items": [{"key": "token", "path": "token"}],
                }}]},
            }])
        );
        assert_eq!(
            patched["spec"]["containers"][0]["volumeMounts"],
            json!([{
                "name": "kubesphere-service-account",
                "mountPath": "/var/run/secrets/kubesphere.io/serviceaccount",
                "readOnly": true,
            }])
        );
        // Nothing else changed.
        let mut back = patched.clone();
        back["spec"].as_object_mut().unwrap().remove("volumes");
        back["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("volumeMounts");
        assert_eq!(&back, pod);
    }

    #[test]
    fn patched_pod_drops_the_no_op_fields_of_a_typed_round_trip() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {}});
        let patch = json!([
            {"op": "add", "path": "/status", "value": {}},
            {"op": "add", "path": "/metadata/creationTimestamp", "value": null},
        ]);
        let response = json!({"response": {
            "allowed": true,
            "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string()),
        }});
        let got = patched_pod(response.to_string().as_bytes(), &pod).unwrap();
        assert_eq!(got, pod);
        let denied = json!({"response": {"allowed": false}}).to_string();
        assert!(patched_pod(denied.as_bytes(), &pod).is_err());
    }
}
