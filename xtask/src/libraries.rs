//! The library crates as others use them (a step of `cargo xtask test`): documentation without warnings, the
//! published packages built on their own, and `examples/consumer` built and run from outside the workspace.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run_inherit;

/// The crates meant for others, and the crates of ours they depend on, in dependency order.
pub const PUBLISHED: &[&str] = &[
    "ksiam-proto",
    "ksiam-api",
    "ksiam-runtime",
    "ksiam-rbac",
    "ksiam-token",
    "ksiam-webhook",
    "kubesphere-client",
];

/// The crates whose documentation is checked (`missing_docs` is denied in each `lib.rs`).
pub const DOCUMENTED: &[&str] = &["ksiam-rbac", "ksiam-token", "ksiam-webhook", "kubesphere-client"];

/// The Kubernetes version the libraries leave to the application (k8s-openapi refuses to build without one).
const K8S_VERSION: &str = "1.34";

fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut cmd = crate::stack::cargo_command();
    cmd.current_dir(root)
        .args(args)
        .env("K8S_OPENAPI_ENABLED_VERSION", K8S_VERSION);
    cmd
}

fn with_packages<'a>(mut args: Vec<&'a str>, packages: &[&'a str]) -> Vec<&'a str> {
    for p in packages {
        args.extend(["-p", p]);
    }
    args
}

/// `cargo doc --no-deps` of [`DOCUMENTED`] with default and with all features, warnings denied.
pub fn docs(root: &Path) -> anyhow::Result<()> {
    for features in [None, Some("--all-features")] {
        let mut args = with_packages(vec!["doc", "--no-deps"], DOCUMENTED);
        args.extend(features);
        run_inherit(cargo(root, &args).env("RUSTDOCFLAGS", "-D warnings"))?;
    }
    Ok(())
}

/// `cargo package` of [`PUBLISHED`] in one invocation: cargo packs them in dependency order and builds each
/// packaged crate on its own against the others' packages (a local registry), so unpublished crates of ours
/// are verified as crates.io users would build them.
pub fn package(root: &Path) -> anyhow::Result<()> {
    let args = with_packages(vec!["package", "--allow-dirty"], PUBLISHED);
    run_inherit(&mut cargo(root, &args))
}

/// `examples/consumer`: its own package and lock file, path dependencies on the libraries; built and run.
pub fn consumer(root: &Path) -> anyhow::Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let manifest = root.join("examples/consumer/Cargo.toml");
    let manifest = manifest.to_str().expect("UTF-8 path");
    let mut cmd = cargo(root, &["run", "--locked", "--manifest-path", manifest]);
    // Share the workspace's target directory: the consumer's dependencies are mostly built already.
    cmd.env("CARGO_TARGET_DIR", target);
    run_inherit(&mut cmd)
}

/// All three, each run even if an earlier one failed.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let results = [
        ("cargo doc (-D warnings)", docs(root)),
        ("cargo package", package(root)),
        ("examples/consumer", consumer(root)),
    ];
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e:#}")))
        .collect();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(())
}
