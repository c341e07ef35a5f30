//! `ksiam-bench`: writes the peer-comparison data and decides requests with ksiam-rbac, the Rust side of
//! `cargo xtask conformance` (the Go side is `benches/peers/k8s-rbac -mode decide`), and the load client of
//! the server comparisons of `cargo xtask bench` (P5 gRPC, P7 webhook).
//!
//! ```text
//! ksiam-bench write --out DIR --sizes 10,1000 --requests 10000
//! ksiam-bench decide --policy DIR/policy-10.json --requests DIR/requests-10.json   # one allow/deny line each
//! ksiam-bench serve-webhook                     # ksiam-webhook over TLS, in-memory lookup; prints LISTENING <addr>
//! ksiam-bench serve-grpc --policy DIR/policy-100000.json   # ksiam-authz gRPC; prints LISTENING <addr>
//! taskset -c 1 ksiam-bench load webhook --peer target/peers/bin/controller-runtime-webhook-*/controller-runtime-webhook
//! taskset -c 1 ksiam-bench load grpc --peer target/peers/bin/grpc-go-*/grpc-go --policy … --cases …
//! ```

use std::{
    io::{BufWriter, Write as _},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use hyper::body::Bytes;
use ksiam_bench::{
    BenchCase,
    load::{self, ServerProcess},
};
use ksiam_rbac::generate::k8s::AccessRequest;

#[derive(Parser)]
#[command(name = "ksiam-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes policies, benchmark cases, random requests and the benchmark token.
    Write {
        #[arg(long)]
        out: PathBuf,
        /// Policy sizes (bindings), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,1000,100000")]
        sizes: Vec<usize>,
        /// Random requests per size (0: none).
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// The seed of the random requests.
        #[arg(long, default_value_t = ksiam_bench::REQUEST_SEED)]
        request_seed: u64,
    },
    /// Prints ksiam-rbac's `allow`/`deny` for every request of a request file.
    Decide {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        requests: PathBuf,
    },
    /// Serves ksiam-webhook's pod injector over TLS (self-signed for 127.0.0.1) with the in-memory lookup of
    /// the benchmark, on one thread; prints `LISTENING <addr>`.
    ServeWebhook {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// Serves ksiam-authz's gRPC API over a policy file of RBAC v1 objects, on one thread; prints
    /// `LISTENING <addr>`.
    ServeGrpc {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// Starts our server and the peer (pinned to `--server-cpu`) and loads both with the same requests.
    Load {
        kind: Kind,
        /// The Go peer's binary.
        #[arg(long)]
        peer: PathBuf,
        /// gRPC: the policy file both servers load.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// gRPC: the benchmark cases (requests sent in rotation; their expected decisions are checked first).
        #[arg(long)]
        cases: Option<PathBuf>,
        /// CPU list for `taskset -c` of both servers (`none`: no pinning).
        #[arg(long, default_value = "0")]
        server_cpu: String,
        /// Requests in flight, comma-separated; one run of each per repeat.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        concurrency: Vec<usize>,
        /// gRPC: HTTP/2 connections the requests in flight are spread over (at most one per request).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Repeats of every (server, concurrency) run, interleaved ours / peer.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Webhook,
    Grpc,
}

/// The allocator of the `ksiam` binary, so the servers measured here behave like the ones deployed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Write {
            out,
            sizes,
            requests,
            request_seed,
        } => ksiam_bench::write(&out, &sizes, requests, request_seed),
        Command::Decide { policy, requests } => {
            let policy = ksiam_bench::read_policy(&policy)?;
            let requests: Vec<AccessRequest> = serde_json::from_slice(&std::fs::read(&requests)?)?;
            let mut out = BufWriter::new(std::io::stdout().lock());
            for allowed in ksiam_bench::decide(&policy, &requests) {
                writeln!(out, "{}", if allowed { "allow" } else { "deny" })?;
            }
            out.flush()?;
            Ok(())
        }
        Command::ServeWebhook { addr } => single_thread()?.block_on(serve_webhook(addr)),
        Command::ServeGrpc { policy, addr } => {
            let policy = ksiam_bench::read_policy(&policy)?;
            let store = Arc::new(ksiam_rbac::PolicyStore::new(ksiam_rbac::PolicyIndex::build(
                &policy,
            )));
            store.set_ready(true);
            let service = ksiam_authz::AuthzService::new(
                store,
                ksiam_rbac::Authorizer::new(ksiam_rbac::Mode::Rbac),
                Arc::new(ksiam_authz::Metrics::unregistered()),
            );
            single_thread()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                announce(listener.local_addr()?)?;
                // Plaintext on loopback, explicitly: the comparison with the grpc-go peer measures the bare
                // services over plaintext HTTP/2 on both sides; Authorize answers plaintext loopback clients.
                let security = ksiam_token::grpc_auth::GrpcSecurity::insecure_loopback(
                    ksiam_token::grpc_auth::AllowList::default(),
                );
                ksiam_authz::serve_grpc(
                    listener,
                    service,
                    &security,
                    tokio_util::sync::CancellationToken::new(),
                )
                .await?;
                Ok(())
            })
        }
        Command::Load {
            kind,
            peer,
            policy,
            cases,
            server_cpu,
            concurrency,
            connections,
            seconds,
            repeats,
        } => {
            let cpu = (server_cpu != "none").then_some(server_cpu.as_str());
            let me = std::env::current_exe()?;
            let plan = Plan {
                concurrency,
                connections,
                duration: Duration::from_secs_f64(seconds),
                repeats,
            };
            match kind {
                Kind::Webhook => {
                    let ours = ServerProcess::start("ours", cpu, &me, &["serve-webhook"], &[])?;
                    let theirs =
                        ServerProcess::start("controller-runtime", cpu, &peer, &[], &[("GOMAXPROCS", "1")])?;
                    let review = load::seed_review()?;
                    let expected =
                        load::patched_pod(&load::ours_in_process(&review)?, &review["request"]["object"])?;
                    single_thread()?.block_on(load_webhook(&ours, &theirs, &review, &expected, &plan))
                }
                Kind::Grpc => {
                    let policy = policy.context("--policy is needed for grpc")?;
                    let cases = cases.context("--cases is needed for grpc")?;
                    let cases: Vec<BenchCase> = serde_json::from_slice(&std::fs::read(&cases)?)?;
                    let p = policy.to_string_lossy();
                    let ours = ServerProcess::start("ours", cpu, &me, &["serve-grpc", "--policy", &p], &[])?;
                    let theirs = ServerProcess::start(
                        "grpc-go",
                        cpu,
                        &peer,
                        &["-policy", &p],
                        &[("GOMAXPROCS", "1")],
                    )?;
                    single_thread()?.block_on(load_grpc(&ours, &theirs, &cases, &plan))
                }
            }
        }
    }
}

fn single_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn announce(addr: SocketAddr) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "LISTENING {addr}")?;
    out.flush()?;
    Ok(())
}

async fn serve_webhook(addr: SocketAddr) -> anyhow::Result<()> {
    let server = ksiam_webhook::Server::bind(addr, &ksiam_webhook::TlsSource::loopback()).await?;
    announce(server.local_addr()?)?;
    server
        .serve(load::seed_injector()?, std::future::pending())
        .await?;
    Ok(())
}

struct Plan {
    concurrency: Vec<usize>,
    connections: usize,
    duration: Duration,
    repeats: usize,
}

/// Runs `one(server, concurrency)` for every repeat and concurrency, ours then theirs, printing LOAD lines.
async fn measure<F, Fut>(kind: &str, servers: [&ServerProcess; 2], plan: &Plan, one: F) -> anyhow::Result<()>
where
    F: Fn(SocketAddr, usize, Duration) -> Fut,
    Fut: Future<Output = anyhow::Result<load::Outcome>>,
{
    let top = plan.concurrency.iter().copied().max().unwrap_or(1);
    for s in servers {
        one(s.addr, top, Duration::from_secs(1)).await?; // warm-up
    }
    for run in 0..plan.repeats {
        for &c in &plan.concurrency {
            for s in servers {
                let cpu0 = s.cpu_time()?;
                let o = one(s.addr, c, plan.duration).await?;
                let cpu = (s.cpu_time()? - cpu0).as_secs_f64() / o.elapsed.as_secs_f64();
                println!("{}", load::load_line(kind, &s.name, c, run, &o, cpu));
            }
        }
    }
    Ok(())
}

/// Checks both webhooks patch the seed pod into `expected` (ours, computed in process), then loads them.
async fn load_webhook(
    ours: &ServerProcess,
    theirs: &ServerProcess,
    review: &serde_json::Value,
    expected: &serde_json::Value,
    plan: &Plan,
) -> anyhow::Result<()> {
    let pod = &review["request"]["object"];
    let body = Bytes::from(serde_json::to_vec(review)?);
    for s in [ours, theirs] {
        let got = load::patched_pod(&load::webhook_once(s.addr, &body).await?, pod)?;
        anyhow::ensure!(
            &got == expected,
            "{} patched the seed pod differently: {got}",
            s.name
        );
    }
    println!("CHECK kind=webhook both servers patch the seed pod identically");
    measure("webhook", [ours, theirs], plan, |addr, c, d| {
        load::webhook_load(addr, c, d, body.clone())
    })
    .await
}

async fn load_grpc(
    ours: &ServerProcess,
    theirs: &ServerProcess,
    cases: &[BenchCase],
    plan: &Plan,
) -> anyhow::Result<()> {
    for s in [ours, theirs] {
        load::grpc_check(s.addr, cases).await?;
    }
    println!("CHECK kind=grpc both servers decide every case as expected");
    let requests = Arc::new(load::grpc_requests(cases));
    measure("grpc", [ours, theirs], plan, |addr, c, d| {
        load::grpc_load(addr, plan.connections.min(c), c, d, requests.clone())
    })
    .await
}
