//! `cargo xtask cluster-bench`: admission latency through kube-apiserver and the token-Secret fill time of
//! 1,000 ServiceAccounts, on a fresh local control plane running an optimised (`bench` profile) build of `ksiam all`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::process::{self, install_signal_handler};
use crate::progress::{Step, say};
use crate::stack::Stack;

/// Runs the `cluster_bench` program of the e2e package against a fresh stack and prints its tables.
pub fn run(root: &Path) -> anyhow::Result<()> {
    install_signal_handler()?;
    let start = Instant::now();
    // The stack builds `ksiam` in this profile; the benchmark client is built in release mode too.
    // The `bench` profile (release plus line tables) shares its artifacts with `cargo bench`.
    let step = Step::start("cargo build --profile bench -p ksiam-e2e --bin cluster_bench");
    process::run_inherit(crate::stack::cargo_command().current_dir(root).args([
        "build",
        "--profile",
        "bench",
        "-p",
        "ksiam-e2e",
        "--bin",
        "cluster_bench",
    ]))?;
    step.done();
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let run_dir = root
        .join("target")
        .join("e2e")
        .join(format!("bench-{epoch}-{}", std::process::id()));
    let stack = Stack::start_with_profile(root, &run_dir, "bench")?;
    let step = Step::start("cluster_bench");
    let target = crate::stack::cargo_target_dir(root);
    let mut cmd = Command::new(Path::new(&target).join("release").join("cluster_bench"));
    cmd.envs(stack.env())
        .env("KSIAM_E2E", "1")
        .env("KSIAM_E2E_RUN_DIR", &stack.cp.run_dir);
    let outcome = process::run_inherit(&mut cmd);
    step.done();
    let run_dir = stack.cp.run_dir.clone();
    drop(stack);
    if outcome.is_ok() {
        fs::remove_dir_all(&run_dir)?;
    }
    say(format!(
        "cluster-bench wall time: {:.1}s",
        start.elapsed().as_secs_f64()
    ));
    outcome
}
