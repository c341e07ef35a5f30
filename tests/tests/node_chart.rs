//! The Helm chart's life cycle on the node: `helm upgrade` keeps every token valid, `helm uninstall` leaves no
//! object of the chart behind.
//!
//! One test in its own binary: cargo runs test binaries one after another, so the upgrade and the uninstall
//! never disturb the other node tests (`node.rs`). Needs `cargo xtask e2e --backend node`, which installs the
//! chart and exports `KSIAM_HELM` and `KSIAM_CHART_DIR`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ksiam_e2e::{
    SEED_SERVICE_ACCOUNT, TestNamespace, e2e, kubectl, kubectl_with_stdin, poll, secret_token,
    token_secret_name,
};

const NS: &str = "kubesphere-system";

fn helm(args: &[&str]) -> anyhow::Result<String> {
    let bin = std::env::var("KSIAM_HELM").context(
        "KSIAM_HELM is not set: this test needs the chart installed on the node; run it with \
         `cargo xtask e2e --backend node`",
    )?;
    let run_dir = e2e().run_dir.clone().context("KSIAM_E2E_RUN_DIR is not set")?;
    let home = run_dir.join("helm");
    let out = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", &e2e().kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()?;
    if !out.status.success() {
        bail!(
            "helm {} failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `GET /kapis/tenant.kubesphere.io/v1beta1/clusters` on ks-apiserver's ClusterIP from this host (through
/// kube-proxy), returning the status code.
fn gateway_status(token: &str) -> anyhow::Result<u16> {
    let ip = kubectl(&[
        "get",
        "svc",
        "ks-apiserver",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{ip}/kapis/tenant.kubesphere.io/v1beta1/clusters"))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn secret_data(name: &str) -> anyhow::Result<String> {
    kubectl(&["get", "secret", name, "-n", NS, "-o", "jsonpath={.data}"])
}

#[test]
fn on_the_node_helm_upgrade_keeps_tokens_valid_and_uninstall_removes_the_charts_objects() -> anyhow::Result<()>
{
    let chart = std::env::var("KSIAM_CHART_DIR")
        .context("KSIAM_CHART_DIR is not set: run via `cargo xtask e2e --backend node`")?;
    let ns = TestNamespace::create("node-chart")?;
    let mut sa: serde_json::Value = serde_yaml::from_str(SEED_SERVICE_ACCOUNT)?;
    sa["metadata"]["namespace"] = ns.name().into();
    kubectl_with_stdin(&["apply", "-f", "-"], &sa.to_string())?;
    let secret = token_secret_name(ns.name(), "sample")?;
    let token = secret_token(ns.name(), &secret)?;
    poll("the token to be accepted (403)", Duration::from_secs(60), || {
        Ok((gateway_status(&token)? == 403).then_some(()))
    })?;
    let jwt = secret_data("ksiam-jwt")?;
    let tls = secret_data("ksiam-webhook-tls")?;

    // An upgrade that rolls every Pod (a new Pod annotation).
    helm(&[
        "upgrade",
        "ksiam",
        &chart,
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "podAnnotations.ksiam-e2e/upgraded=yes",
        "--wait",
        "--timeout=5m",
    ])?;
    assert_eq!(
        secret_data("ksiam-jwt")?,
        jwt,
        "the JWT secret changed on upgrade"
    );
    assert_eq!(
        secret_data("ksiam-webhook-tls")?,
        tls,
        "the webhook certificate changed on upgrade"
    );
    let rolled = kubectl(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/name=ksiam",
        "-o",
        "jsonpath={.items[*].metadata.annotations.ksiam-e2e/upgraded}",
    ])?;
    assert!(
        rolled.contains("yes"),
        "the upgrade did not roll the Pods: {rolled:?}"
    );
    // The same token, still valid (authenticated: 403, never 401).
    let status = poll("the gateway after the upgrade", Duration::from_secs(60), || {
        let s = gateway_status(&token)?;
        Ok((s == 403 || s == 401).then_some(s))
    })?;
    assert_eq!(
        status, 403,
        "the token no longer authenticates after helm upgrade"
    );
    assert_eq!(
        token_secret_name(ns.name(), "sample")?,
        secret,
        "the upgrade replaced the token Secret"
    );

    // Uninstall: none of the chart's objects remain.
    helm(&["uninstall", "ksiam", "-n", NS, "--wait", "--timeout=5m"])?;
    let left = kubectl(&[
        "get",
        "deployments,services,secrets,serviceaccounts,poddisruptionbudgets",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/instance=ksiam",
        "-o",
        "name",
    ])?;
    assert_eq!(left.trim(), "", "left behind in {NS}");
    let cluster_left = kubectl(&[
        "get",
        "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations",
        "-l",
        "app.kubernetes.io/instance=ksiam",
        "-o",
        "name",
    ])?;
    assert_eq!(cluster_left.trim(), "", "cluster-scoped objects left behind");
    let webhook = kubectl(&[
        "get",
        "mutatingwebhookconfigurations",
        "serviceaccount.kubesphere.io",
        "--ignore-not-found",
        "-o",
        "name",
    ])?;
    assert_eq!(
        webhook.trim(),
        "",
        "the webhook configuration is still registered"
    );
    poll("ksiam's Pods to be gone", Duration::from_secs(90), || {
        let pods = kubectl(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/name=ksiam",
            "-o",
            "name",
        ])?;
        Ok(pods.trim().is_empty().then_some(()))
    })?;
    Ok(())
}
