//! `cargo xtask chart [--bless]`: `helm lint` and the `helm template` golden files of `deploy/helm/ksiam`.
//!
//! The golden files (`deploy/helm/ksiam/golden/<case>.yaml`) are rendered with fixed secrets and a fixed CA
//! (`webhook.certs.mode=secret`), so they are deterministic; the generated-certificate path is checked by
//! `helm lint` and by the install on the node (`cargo xtask e2e --backend node`). `--bless` rewrites them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::k8s_bin;
use crate::process::run;
use crate::progress::{Step, say};

/// The chart's directory.
pub fn chart_dir(root: &Path) -> PathBuf {
    root.join("deploy").join("helm").join("ksiam")
}

/// Fixed values of the golden renders: no random secret, no generated certificate.
const FIXED: [&str; 4] = [
    "jwtSecret=golden-jwt-secret",
    "webhook.certs.mode=secret",
    "webhook.certs.existingSecret=ksiam-webhook-tls",
    // base64 of a PEM-looking placeholder: the golden files check the template, not a certificate.
    "webhook.certs.caBundle=LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmdvbGRlbgotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==",
];

/// `(case, extra --set values)`.
const CASES: [(&str, &[&str]); 2] = [
    ("all", &[]),
    (
        "split",
        &[
            "topology=split",
            "controller.replicas=2",
            "gateway.replicas=2",
            "webhook.replicas=2",
        ],
    ),
];

pub fn run_cli(root: &Path, bless: bool) -> anyhow::Result<()> {
    let helm = k8s_bin::ensure_helm(root)?;
    lint(&helm, root)?;
    golden(&helm, root, bless)
}

/// `helm lint --strict` with the default values and with each golden case.
pub fn lint(helm: &Path, root: &Path) -> anyhow::Result<()> {
    let step = Step::start("helm lint --strict deploy/helm/ksiam");
    let chart = chart_dir(root);
    run(Command::new(helm)
        .args(["lint", "--strict", "--namespace", "kubesphere-system"])
        .arg(&chart))?;
    for (case, values) in CASES {
        let mut cmd = Command::new(helm);
        cmd.args(["lint", "--strict", "--namespace", "kubesphere-system"])
            .arg(&chart);
        for v in FIXED.iter().chain(values.iter()) {
            cmd.args(["--set", v]);
        }
        run(&mut cmd).with_context(|| format!("helm lint ({case})"))?;
    }
    step.done();
    Ok(())
}

/// Renders each case and compares it with its golden file (or rewrites it with `bless`).
pub fn golden(helm: &Path, root: &Path, bless: bool) -> anyhow::Result<()> {
    let step = Step::start("helm template golden files");
    let dir = chart_dir(root).join("golden");
    let mut stale = Vec::new();
    for (case, values) in CASES {
        let rendered = render(
            helm,
            root,
            &FIXED.iter().chain(values.iter()).copied().collect::<Vec<_>>(),
        )?;
        let path = dir.join(format!("{case}.yaml"));
        if bless {
            fs::create_dir_all(&dir)?;
            fs::write(&path, &rendered)?;
            say(format!("wrote {}", path.display()));
        } else if fs::read_to_string(&path).unwrap_or_default() != rendered {
            stale.push(path.display().to_string());
        }
    }
    if !stale.is_empty() {
        bail!(
            "`helm template` differs from the golden files (review the change, then `cargo xtask chart --bless`):\n  {}",
            stale.join("\n  ")
        );
    }
    step.done();
    Ok(())
}

/// `helm template ksiam deploy/helm/ksiam -n kubesphere-system --kube-version <ours> --set ...`.
pub fn render(helm: &Path, root: &Path, values: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "ksiam", "--namespace", "kubesphere-system"])
        .arg(format!("--kube-version={}", k8s_bin::KUBE_VERSION))
        .arg(chart_dir(root));
    for v in values {
        cmd.args(["--set", v]);
    }
    run(&mut cmd)
}

/// `helm upgrade --install ksiam deploy/helm/ksiam -n kubesphere-system --wait` against `kubeconfig`, with
/// helm's own state under `run_dir/helm`.
pub fn install(
    helm: &Path,
    root: &Path,
    kubeconfig: &Path,
    run_dir: &Path,
    values: &[&str],
) -> anyhow::Result<()> {
    let step = Step::start("helm upgrade --install ksiam deploy/helm/ksiam -n kubesphere-system --wait");
    let home = run_dir.join("helm");
    let mut cmd = Command::new(helm);
    cmd.args([
        "upgrade",
        "--install",
        "ksiam",
        "--namespace",
        "kubesphere-system",
        "--create-namespace",
    ])
    .args(["--wait", "--timeout=5m"])
    .arg(chart_dir(root))
    .env("KUBECONFIG", kubeconfig)
    .env("HELM_CACHE_HOME", home.join("cache"))
    .env("HELM_CONFIG_HOME", home.join("config"))
    .env("HELM_DATA_HOME", home.join("data"));
    for v in values {
        cmd.args(["--set", v]);
    }
    let out = run(&mut cmd)?;
    say(out.lines().take(6).collect::<Vec<_>>().join("\n"));
    step.done();
    Ok(())
}
