//! `cargo xtask test` (everything CI runs) and `cargo xtask e2e` (the e2e suite on a fresh control plane).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::process::{self, install_signal_handler, run_inherit};
use crate::progress::{Step, say};
use crate::stack::Stack;

/// Where the e2e suite runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// etcd + kube-apiserver + kube-controller-manager as local processes (no Docker).
    Local,
    /// A kind cluster with ksiam deployed as images (needs Docker and kind).
    Kind,
    /// The local control plane plus a real node (containerd, kubelet, kube-proxy, CoreDNS): the tests that
    /// need running Pods (`tests/tests/node.rs`). Needs root and cgroups.
    Node,
}

type StepFn<'a> = Box<dyn FnOnce() -> anyhow::Result<()> + 'a>;

/// `cargo xtask test`: every step runs, even after a failure, so one CI run reports everything.
pub fn test(root: &Path, node: bool) -> anyhow::Result<()> {
    install_signal_handler()?;
    crate::stack::build_without_incremental();
    let mut steps: Vec<(&str, StepFn<'_>)> = vec![
        (
            "cargo fmt --all -- --check",
            Box::new(|| run_inherit(&mut cargo_cmd(root, &["fmt", "--all", "--", "--check"]))),
        ),
        (
            "cargo clippy --workspace --all-targets -- -D warnings",
            Box::new(|| {
                run_inherit(&mut cargo_cmd(
                    root,
                    &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
                ))
            }),
        ),
        (
            "cargo xtask codegen --check",
            Box::new(|| crate::codegen::run(root, true)),
        ),
        (
            "cargo xtask named-tests (every test the docs name exists)",
            Box::new(|| crate::named_tests::run(root)),
        ),
        (
            "cargo xtask chart (helm lint, helm template golden files)",
            Box::new(|| crate::chart::run_cli(root, false)),
        ),
        (
            "cargo test --workspace --exclude ksiam-e2e",
            Box::new(|| {
                run_inherit(&mut cargo_cmd(
                    root,
                    &["test", "--workspace", "--exclude", "ksiam-e2e"],
                ))
            }),
        ),
        (
            "library crates: cargo doc -D warnings, cargo package, examples/consumer",
            Box::new(|| crate::libraries::check(root)),
        ),
        (
            "cargo xtask conformance (resolver vs Kubernetes' RequestInfoFactory; ksiam-rbac vs its RBAC authorizer)",
            Box::new(|| crate::conformance::run_cli(root, false)),
        ),
        (
            "cargo xtask conformance --kubesphere (ksiam's gateway vs KubeSphere's ks-apiserver)",
            Box::new(|| crate::kubesphere_diff::run_cli(root, false, None, None)),
        ),
        (
            "cargo xtask e2e --backend local",
            Box::new(|| e2e_local(root, &[])),
        ),
        (
            "cargo xtask e2e --topology split",
            Box::new(|| {
                crate::stack::Topology::Split.select();
                e2e_local(root, &[])
            }),
        ),
    ];
    if node {
        steps.push((
            "cargo xtask e2e --backend node --dev-images (leave it out with --no-node)",
            Box::new(|| e2e_node(root, &[], crate::image::Programs::Debug)),
        ));
    } else {
        say("leaving out the node backend (--no-node)");
    }
    let total = steps.len();
    let mut results = Vec::new();
    for (i, (name, step)) in steps.into_iter().enumerate() {
        say(format!("==== [{}/{total}] {name}", i + 1));
        let start = Instant::now();
        let result = step();
        let secs = start.elapsed().as_secs_f64();
        match &result {
            Ok(()) => say(format!("==== [{}/{total}] {name}: ok ({secs:.1}s)", i + 1)),
            Err(e) => say(format!(
                "==== [{}/{total}] {name}: FAILED ({secs:.1}s)\n{e:#}",
                i + 1
            )),
        }
        results.push((name, result.is_ok(), secs));
    }
    say("==== summary");
    for (name, ok, secs) in &results {
        say(format!(
            "  {:6} {secs:7.1}s  {name}",
            if *ok { "ok" } else { "FAILED" }
        ));
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(n, _, _)| *n)
        .collect();
    if !failed.is_empty() {
        bail!("{} of {total} steps failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// `cargo xtask e2e [--backend local|kind] [-- args]`.
pub fn e2e(root: &Path, backend: Backend, dev_images: bool, args: &[String]) -> anyhow::Result<()> {
    let programs = if dev_images {
        crate::image::Programs::Debug
    } else {
        crate::image::Programs::StaticRelease
    };
    match backend {
        Backend::Local => e2e_local(root, args),
        Backend::Kind => crate::kind::e2e(root, args),
        Backend::Node => e2e_node(root, args, programs),
    }
}

/// Test names containing this run only on the node backend.
const NODE_TESTS: &str = "on_the_node";

fn cargo_cmd(root: &Path, args: &[&str]) -> Command {
    let mut cmd = crate::stack::cargo_command();
    cmd.current_dir(root).args(args);
    cmd
}

/// `cargo test -p ksiam-e2e -- --test-threads=2 [args]`.
pub fn e2e_test_cmd(root: &Path, args: &[String]) -> Command {
    let mut cmd = cargo_cmd(root, &["test", "-p", "ksiam-e2e", "--no-fail-fast", "--"]);
    // Test errors are anyhow errors; their captured backtraces (RUST_BACKTRACE=1) only bury the message.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        cmd.env("RUST_LIB_BACKTRACE", "0");
    }
    if !args.iter().any(|a| a.starts_with("--test-threads")) {
        cmd.arg("--test-threads=2");
    }
    cmd.args(args);
    cmd
}

/// The node's tests against a fresh control plane with a real node and ksiam installed from the Helm chart
/// (the images built here and imported into the node), always torn down afterwards.
fn e2e_node(root: &Path, args: &[String], programs: crate::image::Programs) -> anyhow::Result<()> {
    install_signal_handler()?;
    crate::node::preflight()?;
    let start = Instant::now();
    let runs = root.join("target").join("e2e");
    clean_stale_runs(&runs)?;
    let step = Step::start("cargo test -p ksiam-e2e --no-run");
    run_inherit(&mut cargo_cmd(root, &["test", "-p", "ksiam-e2e", "--no-run"]))?;
    step.done();
    let (ksiam_image, sdk_image) = crate::image::test_images(root, programs)?;
    let helm = crate::k8s_bin::ensure_helm(root)?;

    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let run_dir = runs.join(format!("node-{epoch}-{}", std::process::id()));
    let mut stack = Stack::start_with(root, &run_dir, "dev", None, true, false)?;
    let run_dir = stack.cp.run_dir.clone();
    crate::node::import_image(&ksiam_image.path)?;
    crate::node::import_image(&sdk_image.path)?;
    // Two replicas: the fault test deletes them in turn and admission must keep working.
    crate::chart::install(&helm, root, &stack.cp.kubeconfig, &run_dir, &["replicas=2"])?;

    let step = Step::start("cargo test -p ksiam-e2e (node tests)");
    let mut filtered: Vec<String> = args.to_vec();
    if !args.iter().any(|a| !a.starts_with('-')) {
        filtered.push(NODE_TESTS.to_owned());
    }
    let mut cmd = e2e_test_cmd(root, &filtered);
    cmd.envs(stack.env())
        .env("KSIAM_E2E", "1")
        .env("KSIAM_E2E_BACKEND", "node")
        .env("KSIAM_NODE_TEST_IMAGE", crate::node::BUSYBOX_IMAGE)
        .env("KSIAM_NODE_SDK_IMAGE", crate::image::SDK_EXAMPLE_IMAGE)
        .env("KSIAM_HELM", &helm)
        .env("KSIAM_CHART_DIR", crate::chart::chart_dir(root))
        .env("KSIAM_E2E_RUN_DIR", &run_dir);
    let tests = process::run_with_deadline(&mut cmd, e2e_timeout()?);
    step.done();
    let health = stack
        .node
        .as_mut()
        .map_or(Ok(()), |n| n.procs.check_running())
        .and_then(|()| stack.cp.procs.check_running());
    if tests.is_err() {
        // What ksiam's Pods said, next to the other logs.
        for part in ["controller", "gateway", "webhook"] {
            let logs = stack
                .cp
                .kubectl()
                .run(&[
                    "logs",
                    "-n",
                    "kubesphere-system",
                    "deployment/ksiam",
                    "-c",
                    part,
                    "--tail=200",
                ])
                .unwrap_or_default();
            let _ = fs::write(run_dir.join(format!("pod-ksiam-{part}.log")), logs);
        }
    }
    drop(stack);
    let outcome = tests.and(health);
    match &outcome {
        Ok(()) => fs::remove_dir_all(&run_dir)?,
        Err(_) => {
            let _ = fs::remove_dir_all(run_dir.join("etcd"));
            say(format!("e2e failed: logs kept in {}", run_dir.display()));
        }
    }
    say(format!(
        "e2e (node) wall time: {:.1}s",
        start.elapsed().as_secs_f64()
    ));
    outcome
}

/// The e2e suite against a fresh local control plane, which is always stopped afterwards.
fn e2e_local(root: &Path, args: &[String]) -> anyhow::Result<()> {
    install_signal_handler()?;
    let start = Instant::now();
    let runs = root.join("target").join("e2e");
    clean_stale_runs(&runs)?;
    // KubeSphere's own ks-apiserver runs beside the gateway (tests/tests/kubesphere_parity.rs); its Go
    // build (cached by commit) overlaps the cargo builds below.
    let kubesphere = crate::kubesphere::build_in_background(root);

    // Compile first: the control plane should not sit idle while the tests build.
    let step = Step::start("cargo test -p ksiam-e2e --no-run");
    run_inherit(&mut cargo_cmd(root, &["test", "-p", "ksiam-e2e", "--no-run"]))?;
    step.done();
    // The SDK's example program (seed §1.3 in Rust), built with the workspace's features.
    let step = Step::start("cargo build --workspace --examples");
    run_inherit(&mut cargo_cmd(root, &["build", "--workspace", "--examples"]))?;
    step.done();

    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let run_dir = runs.join(format!("run-{epoch}-{}", std::process::id()));
    let mut stack = Stack::start_with(root, &run_dir, "dev", Some(kubesphere), false, true)?;
    let run_dir = stack.cp.run_dir.clone();

    let step = Step::start("cargo test -p ksiam-e2e");
    // The node's tests need running Pods: `--backend node` runs them.
    let mut args = args.to_vec();
    args.extend(["--skip".to_owned(), NODE_TESTS.to_owned()]);
    let mut cmd = e2e_test_cmd(root, &args);
    let target = crate::stack::cargo_target_dir(root);
    cmd.envs(stack.env())
        .env(
            "KSIAM_SDK_EXAMPLE",
            target.join("debug").join("examples").join("list_clusters"),
        )
        .env("KSIAM_E2E", "1")
        .env("KSIAM_E2E_RUN_DIR", &run_dir);
    let tests = process::run_with_deadline(&mut cmd, e2e_timeout()?);
    step.done();
    // A component that died during the run explains failures better than the tests can.
    let health = stack.cp.procs.check_running();
    drop(stack);

    let outcome = tests.and(health);
    match &outcome {
        Ok(()) => fs::remove_dir_all(&run_dir)?,
        Err(_) => {
            let _ = fs::remove_dir_all(run_dir.join("etcd"));
            say(format!(
                "e2e failed: logs, kubeconfig and PKI kept in {}",
                run_dir.display()
            ));
        }
    }
    say(format!("e2e wall time: {:.1}s", start.elapsed().as_secs_f64()));
    outcome
}

/// How long the e2e tests may run: `KSIAM_E2E_TIMEOUT` seconds, 30 minutes by default.
pub fn e2e_timeout() -> anyhow::Result<Duration> {
    let secs = match std::env::var("KSIAM_E2E_TIMEOUT") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("KSIAM_E2E_TIMEOUT={v} is not a number of seconds"))?,
        Err(_) => 30 * 60,
    };
    Ok(Duration::from_secs(secs))
}

/// Stops what earlier runs left behind (an xtask killed with SIGKILL cannot clean up) and drops their etcd
/// data, keeping their logs. Runs whose xtask is still alive (a concurrent run) are left alone.
pub fn clean_stale_runs(runs: &Path) -> anyhow::Result<()> {
    if !runs.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(runs)? {
        let dir: PathBuf = entry?.path();
        let state = dir.join("state.json");
        if state.exists() {
            if process::owner_running(&state)? {
                continue;
            }
            let stopped = process::stop_recorded(&state)?;
            if stopped > 0 {
                say(format!("stopped {stopped} processes left by {}", dir.display()));
            }
        }
        let _ = fs::remove_dir_all(dir.join("etcd"));
    }
    Ok(())
}
