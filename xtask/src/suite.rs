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
}

type StepFn<'a> = Box<dyn FnOnce() -> anyhow::Result<()> + 'a>;

/// `cargo xtask test`: every step runs, even after a failure, so one CI run reports everything.
pub fn test(root: &Path) -> anyhow::Result<()> {
    install_signal_handler()?;
    crate::stack::build_without_incremental();
    let steps: Vec<(&str, StepFn<'_>)> = vec![
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
            "cargo xtask e2e --backend local",
            Box::new(|| e2e_local(root, &[])),
        ),
    ];
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
pub fn e2e(root: &Path, backend: Backend, args: &[String]) -> anyhow::Result<()> {
    match backend {
        Backend::Local => e2e_local(root, args),
        Backend::Kind => crate::kind::e2e(root, args),
    }
}

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

/// The e2e suite against a fresh local control plane, which is always stopped afterwards.
fn e2e_local(root: &Path, args: &[String]) -> anyhow::Result<()> {
    install_signal_handler()?;
    let start = Instant::now();
    let runs = root.join("target").join("e2e");
    clean_stale_runs(&runs)?;

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
    let mut stack = Stack::start(root, &run_dir)?;
    let run_dir = stack.cp.run_dir.clone();

    let step = Step::start("cargo test -p ksiam-e2e");
    let mut cmd = e2e_test_cmd(root, args);
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
fn clean_stale_runs(runs: &Path) -> anyhow::Result<()> {
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
