//! `cargo xtask`: the project's automation (codegen, local control plane, tests, benchmarks).
//!
//! Every command CI runs goes through here, so a developer runs exactly what CI runs.

mod bench;
mod chart;
mod cluster_bench;
mod codegen;
mod conformance;
mod control_plane;
mod differential;
mod image;
mod k8s_bin;
mod kind;
mod kubesphere;
mod kubesphere_diff;
mod libraries;
mod named_tests;
mod node;
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
        /// `all` (one `ksiam all`) or `split` (one process per service, gRPC between them).
        #[arg(long, value_enum, default_value_t = stack::Topology::All)]
        topology: stack::Topology,
        /// Also build (once, cached by commit) and run KubeSphere's own ks-apiserver beside ksiam's gateway,
        /// from `../shared/peers/kubesphere/src` (`KUBESPHERE_APISERVER` in `target/ksiam-up/env`).
        #[arg(long)]
        with_kubesphere: bool,
        /// Also run a real node (containerd, kubelet, kube-proxy, kube-scheduler, CoreDNS); needs root.
        #[arg(long)]
        node: bool,
        /// With --node: run ksiam as Pods installed from deploy/helm/ksiam (the image of `cargo xtask image`)
        /// instead of a local `ksiam all`.
        #[arg(long)]
        chart: bool,
    },
    /// Build the ksiam image (static release binary on scratch) into target/images/ksiam.tar and import it
    /// into the node's containerd when a node runs.
    Image {
        /// Only write the archive.
        #[arg(long)]
        no_import: bool,
    },
    /// `helm lint` and the `helm template` golden files of deploy/helm/ksiam.
    Chart {
        /// Rewrite the golden files.
        #[arg(long)]
        bless: bool,
    },
    /// Stop everything `cargo xtask up` started.
    Down,
    /// Everything CI runs: fmt, clippy, codegen check, chart, unit/property tests, e2e on a fresh control
    /// plane, then the node backend (root and cgroups; `--no-node` leaves it out).
    Test {
        /// Leave out `e2e --backend node` (for machines that cannot run a node: not root, no cgroups).
        #[arg(long)]
        no_node: bool,
    },
    /// Admission latency through kube-apiserver and the fill time of 1,000 token Secrets (release build).
    ClusterBench,
    /// The e2e suite only.
    E2e {
        #[arg(long, value_enum, default_value_t = control_plane::Backend::Local)]
        backend: control_plane::Backend,
        /// `all` (one `ksiam all`) or `split` (one process per service, gRPC between them).
        #[arg(long, value_enum, default_value_t = stack::Topology::All)]
        topology: stack::Topology,
        /// `--backend node`: pack the debug builds (with their shared libraries) instead of the static release
        /// builds (what `cargo xtask test` does, to stay inside CI's time).
        #[arg(long)]
        dev_images: bool,
        /// Extra arguments passed to the test binary (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// ksiam-rbac vs Kubernetes' RBAC authorizer on random requests (N = 10 and 1,000; `--full` adds 100,000),
    /// and the gateway's resolver vs Kubernetes' RequestInfoFactory on 5,000 request targets (`--full`: 100,000).
    ///
    /// `--kubesphere`: instead, ksiam's gateway against KubeSphere's own ks-apiserver on one control plane:
    /// a generated policy, random requests to both, status codes and error bodies compared.
    Conformance {
        #[arg(long)]
        full: bool,
        /// ksiam's gateway vs ks-apiserver (600 requests; `--full`: 10,000).
        #[arg(long)]
        kubesphere: bool,
        /// With `--kubesphere`: the seed, decimal or 0x hex (`KSIAM_KS_DIFF_SEED`).
        #[arg(long, value_parser = differential::parse_seed, requires = "kubesphere")]
        seed: Option<u64>,
        /// With `--kubesphere`: the number of requests.
        #[arg(long, requires = "kubesphere")]
        count: Option<usize>,
    },
    /// Every test the documentation names as proof (ARCHITECTURE.md, README.md, docs/) exists.
    NamedTests,
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
        Command::Up {
            detach,
            topology,
            with_kubesphere,
            node,
            chart,
        } => {
            topology.select();
            control_plane::up(&root, detach, with_kubesphere, node, chart)
        }
        Command::Image { no_import } => image::run_cli(&root, !no_import),
        Command::Chart { bless } => chart::run_cli(&root, bless),
        Command::Down => control_plane::down(&root),
        Command::Test { no_node } => control_plane::test(&root, !no_node),
        Command::ClusterBench => cluster_bench::run(&root),
        Command::E2e {
            backend,
            topology,
            dev_images,
            args,
        } => {
            topology.select();
            control_plane::e2e(&root, backend, dev_images, &args)
        }
        Command::Conformance {
            full,
            kubesphere: true,
            seed,
            count,
        } => kubesphere_diff::run_cli(&root, full, seed, count),
        Command::Conformance { full, .. } => conformance::run_cli(&root, full),
        Command::NamedTests => named_tests::run(&root),
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
