//! Load on the authorizer's gRPC API over real TCP (loopback), on the generated 100k-binding policy:
//!
//! - `Authorize` unary: closed-loop clients on 1 and 2 HTTP/2 connections (several requests in flight per
//!   connection), req/s and latency percentiles;
//! - `AuthorizeBatch`: 100 decisions per call, decisions/s.
//!
//! `cargo bench -p ksiam-authz --bench grpc_load` (a plain program, not criterion: it reports throughput at
//! fixed concurrency). `KSIAM_LOAD_SECONDS` (default 5) per case, `KSIAM_LOAD_BINDINGS` (default 100000),
//! `KSIAM_LOAD_ONLY` (`unary` or `batch`; default both).
//! Server and clients share the machine; on 2 cores the figures are for the whole system, not per core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ksiam_authz::{AuthzService, Metrics};
use ksiam_proto::authz::v1::{self as pb, authorizer_client::AuthorizerClient};
use ksiam_rbac::{
    Authorizer, Mode, PolicyIndex, PolicyStore,
    generate::{Generated, TARGET_GROUPS, TARGET_USER, generate},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The allocator of the `ksiam` binary, which serves this API in deployments.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn attributes(g: &Generated, which: fn(&Generated) -> ksiam_rbac::generate::Request) -> pb::Attributes {
    let r = which(g);
    pb::Attributes {
        user: TARGET_USER.to_owned(),
        groups: TARGET_GROUPS.iter().map(|s| s.to_string()).collect(),
        verb: r.verb.to_owned(),
        api_group: r.api_group.to_owned(),
        api_version: "v1".to_owned(),
        resource: r.resource.to_owned(),
        namespace: r.namespace.clone(),
        resource_request: true,
        kubernetes_request: true,
        path: format!("/api/v1/namespaces/{}/{}", r.namespace, r.resource),
        scope: pb::Scope::Namespace as i32,
        ..Default::default()
    }
}

struct Outcome {
    requests: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn unary(
    channels: &[Channel],
    in_flight: usize,
    requests: Arc<Vec<pb::Attributes>>,
    seconds: u64,
) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        for w in 0..in_flight {
            let mut client = AuthorizerClient::new(channel.clone());
            let requests = requests.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = c * 31 + w;
                while Instant::now() < deadline {
                    let a = requests[i % requests.len()].clone();
                    i += 1;
                    let t = Instant::now();
                    let r = client
                        .authorize(pb::AuthorizeRequest { attributes: Some(a) })
                        .await
                        .expect("Authorize failed");
                    latencies.push(t.elapsed());
                    std::hint::black_box(r);
                }
                latencies
            }));
        }
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client task"));
    }
    Outcome {
        requests: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("KSIAM_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let n: usize = std::env::var("KSIAM_LOAD_BINDINGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    // `unary`, `batch` or both (unset); for profiling one of them.
    let only = std::env::var("KSIAM_LOAD_ONLY").ok();
    if let Some(o) = only.as_deref().filter(|o| !["unary", "batch"].contains(o)) {
        anyhow::bail!("KSIAM_LOAD_ONLY is `unary` or `batch`, not {o:?}");
    }
    let run = |case: &str| only.as_deref().is_none_or(|o| o == case);
    // `cargo bench` passes `--bench`; nothing else to parse.
    let g = generate(n, 42);
    let store = Arc::new(PolicyStore::new(PolicyIndex::build(&g.policy)));
    store.set_ready(true);
    let service = AuthzService::new(
        store,
        Authorizer::new(Mode::Rbac),
        Arc::new(Metrics::unregistered()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    // Plaintext on loopback, explicitly: this measures the bare service (as the earlier figures in
    // docs/benchmarks.md did), not TLS. Authorize and AuthorizeBatch answer plaintext loopback clients.
    let security =
        ksiam_token::grpc_auth::GrpcSecurity::insecure_loopback(ksiam_token::grpc_auth::AllowList::default());
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { ksiam_authz::serve_grpc(listener, service, &security, shutdown).await }
    });

    let requests = Arc::new(vec![
        attributes(&g, Generated::allow_first),
        attributes(&g, Generated::allow_last),
        attributes(&g, Generated::deny),
    ]);
    let connect = || async {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
    };
    println!(
        "policy: {n} generated bindings; requests: allow_first, allow_last, deny in rotation; {seconds} s per case"
    );
    println!("| case | connections | in flight | req/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    let unary_rows: &[(usize, usize)] = if run("unary") {
        &[(1, 1), (1, 16), (2, 16)]
    } else {
        &[]
    };
    for &(connections, in_flight) in unary_rows {
        let mut channels = Vec::new();
        for _ in 0..connections {
            channels.push(connect().await?);
        }
        // Warm up.
        let _ = unary(&channels, in_flight, requests.clone(), 1).await;
        let mut o = unary(&channels, in_flight, requests.clone(), seconds).await;
        o.latencies.sort();
        println!(
            "| Authorize (unary) | {connections} | {} | {:.0} | {:.0} µs | {:.0} µs |",
            connections * in_flight,
            o.requests as f64 / o.elapsed.as_secs_f64(),
            pct(&o.latencies, 0.5).as_secs_f64() * 1e6,
            pct(&o.latencies, 0.99).as_secs_f64() * 1e6,
        );
    }

    if !run("batch") {
        shutdown.cancel();
        let _ = server.await;
        return Ok(());
    }
    // AuthorizeBatch: 100 decisions per call, 4 calls in flight on one connection.
    let batch: Vec<pb::Attributes> = (0..100).map(|i| requests[i % 3].clone()).collect();
    let channel = connect().await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = AuthorizerClient::new(channel.clone());
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            let mut decisions = 0u64;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client
                    .authorize_batch(pb::AuthorizeBatchRequest {
                        attributes: batch.clone(),
                    })
                    .await
                    .expect("AuthorizeBatch failed")
                    .into_inner();
                latencies.push(t.elapsed());
                assert_eq!(r.decisions.len(), 100);
                decisions += r.decisions.len() as u64;
            }
            (decisions, latencies)
        }));
    }
    let (mut decisions, mut latencies) = (0, Vec::new());
    for t in tasks {
        let (d, l) = t.await?;
        decisions += d;
        latencies.extend(l);
    }
    latencies.sort();
    let elapsed = start.elapsed();
    println!(
        "| AuthorizeBatch (100 per call) | 1 | 4 calls | {:.0} decisions/s ({:.0} calls/s) | {:.0} µs per call | {:.0} µs per call |",
        decisions as f64 / elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(&latencies, 0.5).as_secs_f64() * 1e6,
        pct(&latencies, 0.99).as_secs_f64() * 1e6,
    );
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}
