//! The Helm chart's life cycle on the node: ksiam's Pods deleted one by one (the leader first) during a burst of
//! ServiceAccount creations lose nothing and admission keeps working (two replicas); `helm upgrade` keeps every
//! token valid; `helm uninstall` leaves no object of the chart behind.
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

/// The names of ksiam's Pods, the leader (the Lease holder) first.
fn ksiam_pods_leader_first() -> anyhow::Result<Vec<String>> {
    let holder = kubectl(&[
        "get",
        "lease",
        "ksiam-controller",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    let pods = kubectl(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/name=ksiam",
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])?;
    let mut pods: Vec<String> = pods.split_whitespace().map(str::to_owned).collect();
    pods.sort_by_key(|p| *p != holder);
    Ok(pods)
}

/// A dry-run Pod carrying the seed's annotation: whether the webhook injected the token volume.
fn admission_injects(ns: &str) -> anyhow::Result<bool> {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "dry-",
            "namespace": ns,
            "annotations": {"kubesphere.io/serviceaccount-name": "sample"},
        },
        "spec": {"containers": [{"name": "c", "image": "localhost/none"}]},
    });
    let out = kubectl_with_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        &pod.to_string(),
    )?;
    Ok(out.contains("/var/run/secrets/kubesphere.io/serviceaccount"))
}

fn faults_during_a_burst(ns: &str) -> anyhow::Result<()> {
    const COUNT: usize = 40;
    let pods = ksiam_pods_leader_first()?;
    assert!(
        pods.len() >= 2,
        "the chart runs two replicas on the node backend: {pods:?}"
    );
    let burst_ns = ns.to_owned();
    let burst = std::thread::spawn(move || -> anyhow::Result<()> {
        for i in 0..COUNT {
            let sa = serde_json::json!({
                "apiVersion": "kubesphere.io/v1alpha1",
                "kind": "ServiceAccount",
                "metadata": {"name": format!("burst-{i}"), "namespace": burst_ns},
            });
            kubectl_with_stdin(&["create", "-f", "-"], &sa.to_string())?;
        }
        Ok(())
    });
    for pod in &pods {
        kubectl(&["delete", "pod", pod, "-n", NS, "--wait=false"])?;
        // The other replica keeps admitting: the annotated Pod is injected (kube-apiserver may still pick
        // the dying endpoint for a moment, so a few tries).
        poll("admission with one replica gone", Duration::from_secs(10), || {
            Ok(admission_injects(ns)?.then_some(()))
        })?;
        kubectl(&[
            "rollout",
            "status",
            "deployment/ksiam",
            "-n",
            NS,
            "--timeout=180s",
        ])?;
    }
    burst.join().expect("the burst thread panicked")?;

    // Nothing lost: one token Secret per ServiceAccount, each listed by its ServiceAccount; no orphan.
    poll(
        "one token Secret per ServiceAccount",
        Duration::from_secs(120),
        || {
            let secrets = kubectl(&[
                "get",
                "secrets",
                "-n",
                ns,
                "--field-selector=type=kubesphere.io/service-account-token",
                "-o",
                "jsonpath={range .items[*]}{.metadata.annotations.kubesphere\\.io/service-account\\.name}{\"\\n\"}{end}",
            ])?;
            let mut owners: Vec<&str> = secrets.lines().filter(|l| l.starts_with("burst-")).collect();
            owners.sort_unstable();
            let before = owners.len();
            owners.dedup();
            if before != owners.len() {
                bail!("two token Secrets for one ServiceAccount: {secrets}");
            }
            Ok((owners.len() == COUNT).then_some(()))
        },
    )?;
    for i in 0..COUNT {
        token_secret_name(ns, &format!("burst-{i}"))?;
    }
    Ok(())
}

#[test]
fn on_the_node_faults_upgrade_and_uninstall_of_the_chart() -> anyhow::Result<()> {
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

    faults_during_a_burst(ns.name())?;

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
        "deployments,services,secrets,serviceaccounts,poddisruptionbudgets,leases",
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
