//! `cargo xtask`: the project's automation (codegen, local control plane, tests, benchmarks).
//!
//! Every command CI runs goes through here, so a developer runs exactly what CI runs.

mod bench;
mod cluster_bench;
mod codegen;
mod conformance;
mod control_plane;
mod differential;
mod k8s_bin;
mod kind;
mod libraries;
mod peers;
mod pki;
mod probe;
mod process;
mod progress;
mod stack;
mod suite;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "ksiam project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Regenerate committed files (CRD YAML, built-in roles, proto code).
    Codegen {
        /// Fail instead of writing when a generated file is out of date.
        #[arg(long)]
        check: bool,
    },
    /// Build (if needed) and start the whole stack on a local real control plane.
    Up {
        /// Return once everything is ready and leave it running (stop with `cargo xtask down`).
        #[arg(long)]
        detach: bool,
    },
    /// Stop everything `cargo xtask up` started.
    Down,
    /// Everything CI runs: fmt, clippy, codegen check, unit/property tests, e2e on a fresh control plane.
    Test,
    /// Admission latency through kube-apiserver and the fill time of 1,000 token Secrets (release build).
    ClusterBench,
    /// The e2e suite only.
    E2e {
        #[arg(long, value_enum, default_value_t = control_plane::Backend::Local)]
        backend: control_plane::Backend,
        /// Extra arguments passed to the test binary (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// ksiam-rbac vs Kubernetes' RBAC authorizer on random requests (N = 10 and 1,000; `--full` adds 100,000),
    /// and the gateway's resolver vs Kubernetes' RequestInfoFactory on 5,000 request targets (`--full`: 100,000).
    Conformance {
        #[arg(long)]
        full: bool,
    },
    /// Only the differential resolver test: the gateway's `Target` vs Kubernetes' RequestInfoFactory.
    Differential {
        /// Generated inputs (default 5,000; `KSIAM_DIFF_COUNT`).
        #[arg(long)]
        count: Option<usize>,
        /// The generator's seed, decimal or 0x hex (`KSIAM_DIFF_SEED`).
        #[arg(long, value_parser = differential::parse_seed)]
        seed: Option<u64>,
    },
    /// Peer benchmarks side by side; rewrites the generated tables of docs/benchmarks.md.
    Bench {
        /// Only these parts, comma-separated: `p1` (with `p4`: the micro-benchmarks and conformance), `p5`
        /// (gRPC load), `p7` (webhook load); their sections of the generated block are replaced, the rest kept.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = project_root();
    std::env::set_current_dir(&root)?;
    match cli.command {
        Command::Codegen { check } => codegen::run(&root, check),
        Command::Up { detach } => control_plane::up(&root, detach),
        Command::Down => control_plane::down(&root),
        Command::Test => control_plane::test(&root),
        Command::ClusterBench => cluster_bench::run(&root),
        Command::E2e { backend, args } => control_plane::e2e(&root, backend, &args),
        Command::Conformance { full } => conformance::run_cli(&root, full),
        Command::Differential { count, seed } => differential::run(
            &root,
            count.unwrap_or(differential::QUICK),
            seed.unwrap_or(differential::DEFAULT_SEED),
        ),
        Command::Bench { only } => bench::run_cli(&root, &only),
    }
}

/// The workspace root (the parent of `xtask/`).
fn project_root() -> PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| ".".into());
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}
