//! `cargo xtask e2e --backend kind`: the same e2e suite against a kind cluster that runs ksiam from the same
//! image archive (`kind load image-archive`) and Helm chart as `--backend node`.
//!
//! Needs Docker (a running engine), kind and network access for `kindest/node`; kind cannot run on the
//! project's own machines (its node containers are privileged), so CI uses `--backend local` and `node`.
//! Knob: `KSIAM_KIND_NODE_IMAGE` (default: kind's own default node image). Not run on this project's machines.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::control_plane::Kubectl;
use crate::k8s_bin;
use crate::process::{self, install_signal_handler, run, run_inherit};
use crate::progress::{Step, say};

pub fn e2e(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let missing: Vec<&str> = ["docker", "kind"]
        .into_iter()
        .filter(|tool| on_path(tool).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "--backend kind needs {} on PATH (Docker with a running engine, and kind: \
             `go install sigs.k8s.io/kind@latest`); use `--backend local` otherwise",
            missing.join(" and ")
        );
    }
    run(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]))
        .context("docker is on PATH but its engine does not answer (`docker info` failed)")?;
    let kubectl_bin = k8s_bin::find_kubectl(root).context(
        "--backend kind needs kubectl: on PATH, in KSIAM_KUBECTL, or built once by `cargo xtask up`",
    )?;
    install_signal_handler()?;

    let name = format!("ksiam-e2e-{}", std::process::id());
    let run_dir = root.join("target").join("e2e-kind").join(&name);
    std::fs::create_dir_all(&run_dir)?;
    let kubeconfig = run_dir.join("kubeconfig");

    let step = Step::start(format!("kind create cluster --name {name}"));
    let mut create = Command::new("kind");
    create
        .args([
            "create",
            "cluster",
            "--name",
            &name,
            "--wait",
            "180s",
            "--kubeconfig",
        ])
        .arg(&kubeconfig);
    if let Some(image) = std::env::var_os("KSIAM_KIND_NODE_IMAGE") {
        create.arg("--image").arg(image);
    }
    // Registered before creating, so an interrupted creation is cleaned up too.
    let cluster = Cluster::new(&name);
    run_inherit(&mut create)?;
    step.done();

    // The same image and chart as the node backend: the archive `cargo xtask image` writes, then helm.
    let image = crate::image::build_ksiam_image(root)?;
    let step = Step::start("kind load image-archive target/images/ksiam.tar");
    run_inherit(
        Command::new("kind")
            .args(["load", "image-archive"])
            .arg(&image.path)
            .args(["--name", &name]),
    )?;
    step.done();

    let kubectl = Kubectl {
        bin: kubectl_bin,
        kubeconfig: kubeconfig.clone(),
    };
    crate::stack::bootstrap_with(root, &kubectl, false)?;
    let helm = k8s_bin::ensure_helm(root)?;
    crate::chart::install(&helm, root, &kubeconfig, &run_dir, &[])?;

    let step = Step::start("cargo test -p ksiam-e2e (kind)");
    let mut cmd = crate::suite::e2e_test_cmd(root, args);
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("KSIAM_KUBECTL", &kubectl.bin)
        .env("KSIAM_E2E", "1")
        .env("KSIAM_E2E_BACKEND", "kind")
        .env("KSIAM_E2E_RUN_DIR", &run_dir);
    let result = process::run_with_deadline(&mut cmd, crate::suite::e2e_timeout()?);
    step.done();
    drop(cluster);
    result
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Deletes the kind cluster when dropped, or when a signal ends the xtask.
struct Cluster {
    name: String,
}

// === impl Cluster ===

impl Cluster {
    fn new(name: &str) -> Self {
        let owned = name.to_owned();
        process::on_signal(move || delete_cluster(&owned));
        Self {
            name: name.to_owned(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        delete_cluster(&self.name);
    }
}

fn delete_cluster(name: &str) {
    say(format!("kind delete cluster --name {name}"));
    if let Err(e) = run(Command::new("kind").args(["delete", "cluster", "--name", name])) {
        say(format!("deleting kind cluster {name} failed: {e:#}"));
    }
}
