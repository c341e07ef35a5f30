//! Cluster-level benchmarks on the real control plane (run by `cargo xtask cluster-bench`, which starts the
//! stack and exports its environment):
//!
//! 1. Pod admission through kube-apiserver: sequential `POST pods?dryRun=All` on one kept-alive connection,
//!    with the `kubesphere.io/serviceaccount-name` annotation (our webhook patches) and without it (our
//!    webhook is called and allows unpatched) — p50/p90/p99 and req/s.
//! 2. Token Secret fill: create 1,000 `ServiceAccount.kubesphere.io` objects (4 concurrent connections) and
//!    time until every one records a token Secret holding a token.
//!
//! 3. Gateway load (4 connections, closed loop, 5 s each): an authorized `/kapis` list, a proxied
//!    `GET /api/v1/namespaces/<ns>/pods`, the same GET straight to kube-apiserver, and a bare axum handler
//!    in this process — req/s, p50, p99.
//!
//! Prints a Markdown table per measurement. Measurements, not assertions: this program fails only when the
//! stack misbehaves (a request fails, a Secret never appears).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

struct Api {
    addr: String,
    token: String,
    tls: tokio_rustls::TlsConnector,
}

impl Api {
    fn from_env() -> anyhow::Result<Self> {
        let run_dir = PathBuf::from(
            std::env::var_os("KSIAM_E2E_RUN_DIR")
                .context("KSIAM_E2E_RUN_DIR is not set: run via `cargo xtask cluster-bench`")?,
        );
        let kubeconfig: Value = serde_yaml::from_str(&std::fs::read_to_string(
            std::env::var("KUBECONFIG").context("KUBECONFIG is not set")?,
        )?)?;
        let server = kubeconfig["clusters"][0]["cluster"]["server"]
            .as_str()
            .context("kubeconfig has no server")?;
        let addr = server.trim_start_matches("https://").to_owned();
        let token = std::fs::read_to_string(run_dir.join("admin-token"))?
            .trim()
            .to_owned();
        let ca = CertificateDer::from_pem_file(run_dir.join("pki").join("ca.crt"))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            addr,
            token,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .tls
            .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
            .await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    async fn call(
        &self,
        send: &mut SendRequest<Full<Bytes>>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let body = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn admission(api: &Api, ns: &str, annotated: bool, n: usize) -> anyhow::Result<()> {
    let mut send = api.connect().await?;
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "bench-", "namespace": ns},
        "spec": {"containers": [{"name": "app", "image": "alpine:3.20", "command": ["sleep", "1d"]}]}
    });
    if annotated {
        pod["metadata"]["annotations"] = json!({"kubesphere.io/serviceaccount-name": "sample"});
    }
    let path = format!("/api/v1/namespaces/{ns}/pods?dryRun=All");
    let mut latencies = Vec::with_capacity(n);
    for i in 0..(n + 50) {
        let start = Instant::now();
        let (status, body) = api.call(&mut send, Method::POST, &path, Some(&pod)).await?;
        let took = start.elapsed();
        ensure!(status == 201, "dry-run create returned {status}: {body}");
        if i == 0 {
            let mounted = body["spec"]["volumes"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["name"] == "kubesphere-service-account"));
            ensure!(
                mounted == annotated,
                "webhook patch presence {mounted}, expected {annotated}: {body}"
            );
        }
        if i >= 50 {
            latencies.push(took);
        }
    }
    let total: Duration = latencies.iter().sum();
    latencies.sort();
    println!(
        "| dry-run Pod create, {} | {n} | {} | {} | {} | {:.0} |",
        if annotated {
            "annotated (patched)"
        } else {
            "not annotated (allowed unpatched)"
        },
        micros(percentile(&latencies, 0.5)),
        micros(percentile(&latencies, 0.9)),
        micros(percentile(&latencies, 0.99)),
        n as f64 / total.as_secs_f64(),
    );
    Ok(())
}

async fn fill(api: Arc<Api>, ns: &str, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let workers = 4;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let api = api.clone();
        let ns = ns.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut send = api.connect().await?;
            let path = format!("/apis/kubesphere.io/v1alpha1/namespaces/{ns}/serviceaccounts");
            for i in (w..n).step_by(workers) {
                let sa = json!({"apiVersion": "kubesphere.io/v1alpha1", "kind": "ServiceAccount",
                                "metadata": {"name": format!("fill-{i:04}"), "namespace": ns}});
                let (status, body) = api.call(&mut send, Method::POST, &path, Some(&sa)).await?;
                ensure!(status == 201, "create ServiceAccount returned {status}: {body}");
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = start.elapsed();
    let mut send = api.connect().await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let filled = loop {
        let (_, sas) = api
            .call(
                &mut send,
                Method::GET,
                &format!("/apis/kubesphere.io/v1alpha1/namespaces/{ns}/serviceaccounts"),
                None,
            )
            .await?;
        let (_, secrets) = api
            .call(
                &mut send,
                Method::GET,
                &format!("/api/v1/namespaces/{ns}/secrets?fieldSelector=type%3Dkubesphere.io%2Fservice-account-token"),
                None,
            )
            .await?;
        let recorded = sas["items"].as_array().map_or(0, |i| {
            i.iter()
                .filter(|sa| sa["secrets"].as_array().is_some_and(|s| !s.is_empty()))
                .count()
        });
        let with_token = secrets["items"].as_array().map_or(0, |i| {
            i.iter()
                .filter(|s| s["data"]["token"].as_str().is_some_and(|t| !t.is_empty()))
                .count()
        });
        if recorded == n && with_token >= n {
            break start.elapsed();
        }
        if Instant::now() > deadline {
            bail!(
                "after 600 s only {recorded}/{n} ServiceAccounts record a Secret ({with_token} Secrets hold tokens)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "| {n} ServiceAccounts → {n} filled token Secrets | {:.2} s | {:.2} s | {:.0} SA/s |",
        created.as_secs_f64(),
        filled.as_secs_f64(),
        n as f64 / filled.as_secs_f64()
    );
    Ok(())
}

/// A plain-HTTP/1.1 connection (the gateway, the bare axum handler).
async fn connect_plain(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// `n` plain-HTTP/1.1 connections to `addr`.
async fn plain_connections(addr: &str, n: usize) -> anyhow::Result<Vec<SendRequest<Full<Bytes>>>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(connect_plain(addr).await?);
    }
    Ok(conns)
}

/// Closed-loop load: `conns` connections, each sending `GET path` with `token` back to back for `seconds`.
async fn load(
    label: &str,
    conns: Vec<SendRequest<Full<Bytes>>>,
    host: &str,
    path: &str,
    token: Option<&str>,
    seconds: u64,
) -> anyhow::Result<()> {
    let measured = measure(conns, host, path, token, seconds).await?;
    ensure!(
        measured.rejected == 0,
        "GET {path}: {} requests answered 429",
        measured.rejected
    );
    println!(
        "| {label} | {:.0} | {} | {} |",
        measured.admitted_rps(),
        micros(percentile(&measured.latencies, 0.5)),
        micros(percentile(&measured.latencies, 0.99)),
    );
    Ok(())
}

/// What a closed-loop run measured: latencies of the successful answers, and the 429s.
struct Measured {
    latencies: Vec<Duration>,
    rejected: u64,
    elapsed: Duration,
}

impl Measured {
    fn admitted_rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn rejected_rps(&self) -> f64 {
        self.rejected as f64 / self.elapsed.as_secs_f64()
    }
}

/// The closed loop behind [`load`]: every answer must be a success or a 429 with `Retry-After`.
async fn measure(
    conns: Vec<SendRequest<Full<Bytes>>>,
    host: &str,
    path: &str,
    token: Option<&str>,
    seconds: u64,
) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut send in conns {
        let (host, path, token) = (host.to_owned(), path.to_owned(), token.map(str::to_owned));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut rejected = 0u64;
            while Instant::now() < deadline {
                let mut req = Request::get(path.as_str())
                    .header("host", &host)
                    .header("accept", "application/json");
                if let Some(t) = &token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                let t = Instant::now();
                send.ready().await?;
                let resp = send.send_request(req.body(Full::new(Bytes::new()))?).await?;
                let status = resp.status();
                let retry_after = resp.headers().contains_key("retry-after");
                let body = resp.into_body().collect().await?.to_bytes();
                if status == 429 && retry_after {
                    rejected += 1;
                    continue;
                }
                ensure!(
                    status.is_success(),
                    "GET {path}: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                latencies.push(t.elapsed());
            }
            anyhow::Ok((latencies, rejected))
        }));
    }
    let mut latencies = Vec::new();
    let mut rejected = 0;
    for t in tasks {
        let (l, r) = t.await??;
        latencies.extend(l);
        rejected += r;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Measured {
        latencies,
        rejected,
        elapsed,
    })
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// The gateway's process (`ksiam all`, or `ksiam-gateway` in the split topology).
fn gateway_pid() -> anyhow::Result<u32> {
    let files = std::env::var("KSIAM_PID_FILES").context("KSIAM_PID_FILES is not set")?;
    let path = files
        .split(',')
        .filter_map(|e| e.split_once('='))
        .find(|(name, _)| matches!(*name, "ksiam" | "ksiam-gateway"))
        .map(|(_, p)| p.to_owned())
        .context("no gateway process in KSIAM_PID_FILES")?;
    Ok(std::fs::read_to_string(path)?.trim().parse()?)
}

/// Overload: the authorized `/kapis` list at growing closed-loop concurrency, up to 2,048 connections (4× and
/// more past saturation), against the gateway's default in-flight limits. The excess must be answered 429
/// at once while the admitted requests keep their latency and the process its memory.
async fn overload(gateway: &str, token: &str, seconds: u64) -> anyhow::Result<()> {
    let path = "/kapis/tenant.kubesphere.io/v1beta1/clusters";
    let pid = gateway_pid()?;
    let rss_before = rss_kib(pid)?;
    println!(
        "| Connections ({seconds} s each) | admitted req/s | admitted p50 | admitted p99 | 429/s | gateway RSS after |"
    );
    println!("|---|---|---|---|---|---|");
    let mut peak_rss = rss_before;
    for conns in [16, 64, 512, 2048] {
        let connections = plain_connections(gateway, conns).await?;
        let m = measure(connections, gateway, path, Some(token), seconds).await?;
        let rss = rss_kib(pid)?;
        peak_rss = peak_rss.max(rss);
        println!(
            "| {conns} | {:.0} | {} | {} | {:.0} | {} MiB |",
            m.admitted_rps(),
            micros(percentile(&m.latencies, 0.5)),
            micros(percentile(&m.latencies, 0.99)),
            m.rejected_rps(),
            rss / 1024,
        );
    }
    println!(
        "\nGateway RSS before the overload runs {} MiB, highest after a run {} MiB.",
        rss_before / 1024,
        peak_rss / 1024
    );
    Ok(())
}

/// Creates the KubeSphere ServiceAccount `ns/name`.
async fn create_service_account(
    api: &Api,
    send: &mut SendRequest<Full<Bytes>>,
    ns: &str,
    name: &str,
) -> anyhow::Result<()> {
    let sa = json!({"apiVersion": "kubesphere.io/v1alpha1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": ns}});
    let path = format!("/apis/kubesphere.io/v1alpha1/namespaces/{ns}/serviceaccounts");
    let (status, body) = api.call(send, Method::POST, &path, Some(&sa)).await?;
    ensure!(
        status == 201,
        "create ServiceAccount {ns}/{name}: {status} {body}"
    );
    Ok(())
}

/// A ServiceAccount bound to platform-admin, and its token (read from its Secret).
async fn admin_token(api: &Api, ns: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut send = api.connect().await?;
    create_service_account(api, &mut send, ns, "loader").await?;
    let grb = json!({"apiVersion": "iam.kubesphere.io/v1beta1", "kind": "GlobalRoleBinding",
        "metadata": {"name": format!("bench-{ns}")},
        "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "GlobalRole", "name": "platform-admin"},
        "subjects": [{"apiGroup": "kubesphere.io", "kind": "ServiceAccount", "name": "loader", "namespace": ns}]});
    let (status, body) = api
        .call(
            &mut send,
            Method::POST,
            "/apis/iam.kubesphere.io/v1beta1/globalrolebindings",
            Some(&grb),
        )
        .await?;
    ensure!(status == 201, "create GlobalRoleBinding: {status} {body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, secrets) = api
            .call(
                &mut send,
                Method::GET,
                &format!("/api/v1/namespaces/{ns}/secrets?fieldSelector=type%3Dkubesphere.io%2Fservice-account-token"),
                None,
            )
            .await?;
        if let Some(token) = secrets["items"][0]["data"]["token"].as_str() {
            return Ok(String::from_utf8(
                base64::engine::general_purpose::STANDARD.decode(token)?,
            )?);
        }
        ensure!(Instant::now() < deadline, "no token for {ns}/loader within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gateway_load(api: Arc<Api>, ns: &str, seconds: u64) -> anyhow::Result<()> {
    let gateway = std::env::var("KSIAM_GATEWAY").context("KSIAM_GATEWAY is not set")?;
    let gateway = gateway.trim_start_matches("http://").to_owned();
    let token = admin_token(&api, ns).await?;
    let conns = 4;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    // Wait until the binding is effective.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut send = connect_plain(&gateway).await?;
        let req = Request::get("/kapis/tenant.kubesphere.io/v1beta1/clusters")
            .header("host", &gateway)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?;
        if send.send_request(req).await?.status().is_success() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the platform-admin binding did not take effect within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The bare axum handler, in this process.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare = listener.local_addr()?.to_string();
    let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!("| Request ({conns} connections, {seconds} s) | req/s | p50 | p99 |");
    println!("|---|---|---|---|");
    let plain = plain_connections(&bare, conns).await?;
    load(
        "bare axum handler (`GET /ok`)",
        plain,
        &bare,
        "/ok",
        None,
        seconds,
    )
    .await?;
    let gw = plain_connections(&gateway, conns).await?;
    load(
        "gateway: authorized `GET /kapis/tenant.kubesphere.io/v1beta1/clusters`",
        gw,
        &gateway,
        "/kapis/tenant.kubesphere.io/v1beta1/clusters",
        Some(&token),
        seconds,
    )
    .await?;
    let gw = plain_connections(&gateway, conns).await?;
    load(
        "gateway: proxied `GET /api/v1/namespaces/<ns>/pods`",
        gw,
        &gateway,
        &pods,
        Some(&token),
        seconds,
    )
    .await?;
    let mut direct = Vec::new();
    for _ in 0..conns {
        direct.push(api.connect().await?);
    }
    let overload_token = token.clone();
    load(
        "kube-apiserver directly: `GET /api/v1/namespaces/<ns>/pods` (admin token)",
        direct,
        &api.addr,
        &pods,
        Some(&api.token),
        seconds,
    )
    .await?;
    println!();
    overload(&gateway, &overload_token, seconds).await?;
    Ok(())
}

async fn namespace(api: &Api, name: &str) -> anyhow::Result<()> {
    let mut send = api.connect().await?;
    let (status, body) = api
        .call(
            &mut send,
            Method::POST,
            "/api/v1/namespaces",
            Some(&json!({"metadata": {"name": name}})),
        )
        .await?;
    ensure!(
        status == 201 || status == 409,
        "create namespace {name}: {status} {body}"
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let n_admission: usize = std::env::var("KSIAM_BENCH_ADMISSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let n_sa: usize = std::env::var("KSIAM_BENCH_SERVICE_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let api = Arc::new(Api::from_env()?);
    let suffix = ksiam_e2e::random_suffix();

    let ns = format!("bench-admission-{suffix}");
    namespace(&api, &ns).await?;
    let mut send = api.connect().await?;
    create_service_account(&api, &mut send, &ns, "sample").await?;
    let path = format!("/apis/kubesphere.io/v1alpha1/namespaces/{ns}/serviceaccounts/sample");
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.call(&mut send, Method::GET, &path, None).await?.1["secrets"]
        .as_array()
        .is_none_or(|s| s.is_empty())
    {
        ensure!(
            Instant::now() < deadline,
            "ServiceAccount sample got no token Secret within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("| Admission through kube-apiserver | requests | p50 | p90 | p99 | req/s |");
    println!("|---|---|---|---|---|---|");
    admission(&api, &ns, true, n_admission).await?;
    admission(&api, &ns, false, n_admission).await?;
    println!();

    // KSIAM_BENCH_SKIP_GATEWAY=1: ksiam installed from the chart, where kube-apiserver has no SubjectAccessReview
    // webhook for the proxied requests.
    if std::env::var_os("KSIAM_BENCH_SKIP_GATEWAY").is_none() {
        let ns = format!("bench-gateway-{suffix}");
        namespace(&api, &ns).await?;
        gateway_load(api.clone(), &ns, 5).await?;
        println!();
    }

    let ns = format!("bench-fill-{suffix}");
    namespace(&api, &ns).await?;
    println!("| Token Secret fill | all created after | all filled after | throughput |");
    println!("|---|---|---|---|");
    fill(api, &ns, n_sa).await?;
    Ok(())
}
