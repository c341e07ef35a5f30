//! The control plane that `cargo xtask e2e` starts is real and complete enough for the ksiam suite:
//! kube-apiserver is ready, KubeSphere's CRDs are established, custom objects print like KubeSphere's,
//! kube-controller-manager turns Deployments into (Pending) Pods, and admission webhooks on loopback are called.

use std::time::Duration;

use ksiam_e2e::{TestNamespace, TestWebhook, apply, get_json, kubectl, poll, random_suffix, workspace_root};
use serde::Deserialize as _;
use serde_json::json;

#[test]
fn apiserver_answers_readyz() -> anyhow::Result<()> {
    let readyz = kubectl(&["get", "--raw", "/readyz"])?;
    assert_eq!(readyz.trim(), "ok");
    Ok(())
}

/// The CRDs the seed walkthrough and the suite need; `deploy/crds/` must hold at least these.
const REQUIRED_CRDS: [&str; 8] = [
    "serviceaccounts.kubesphere.io",
    "globalroles.iam.kubesphere.io",
    "globalrolebindings.iam.kubesphere.io",
    "workspaceroles.iam.kubesphere.io",
    "workspacerolebindings.iam.kubesphere.io",
    "roles.iam.kubesphere.io",
    "rolebindings.iam.kubesphere.io",
    "workspacetemplates.tenant.kubesphere.io",
];

#[test]
fn generated_crds_are_established() -> anyhow::Result<()> {
    let dir = workspace_root().join("deploy").join("crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(&std::fs::read_to_string(&path)?) {
            let crd = serde_json::Value::deserialize(doc)?;
            if crd["kind"] == "CustomResourceDefinition" {
                names.push(crd["metadata"]["name"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    for required in REQUIRED_CRDS {
        assert!(
            names.iter().any(|n| n == required),
            "{} has no CRD {required} (found {names:?})",
            dir.display()
        );
    }
    for name in &names {
        let crd = get_json(&["crd", name])?;
        let established = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        assert!(established, "CRD {name} is not Established: {}", crd["status"]);
    }
    Ok(())
}

#[test]
fn kubesphere_service_account_can_be_created_and_listed() -> anyhow::Result<()> {
    let ns = TestNamespace::create("e2e-sa")?;
    // As in the seed walkthrough, §1.1.
    apply(&json!({
        "apiVersion": "kubesphere.io/v1alpha1",
        "kind": "ServiceAccount",
        "metadata": {"name": "sample", "namespace": ns.name()},
        "secrets": [],
    }))?;
    let table = kubectl(&["get", "serviceaccounts.kubesphere.io", "-n", ns.name()])?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE"], "unexpected table:\n{table}");
    let names: Vec<&str> = lines.filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, ["sample"], "unexpected table:\n{table}");
    Ok(())
}

#[test]
fn deployment_creates_a_pending_pod() -> anyhow::Result<()> {
    let ns = TestNamespace::create("e2e-deploy")?;
    apply(&json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "pending", "namespace": ns.name()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "pending"}},
            "template": {
                "metadata": {"labels": {"app": "pending"}},
                "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))?;
    // Deployment → ReplicaSet → Pod needs both KCM controllers; with no scheduler the Pod stays Pending.
    let pod = poll("a Pod of Deployment pending", Duration::from_secs(60), || {
        let pods = get_json(&["pods", "-n", ns.name(), "-l", "app=pending"])?;
        Ok(pods["items"].as_array().and_then(|items| items.first()).cloned())
    })?;
    assert_eq!(pod["status"]["phase"], "Pending", "pod: {pod:#}");
    assert!(
        pod["spec"]["nodeName"].is_null(),
        "no scheduler, so no node: {pod:#}"
    );
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet",
        "pod: {pod:#}"
    );
    Ok(())
}

#[test]
fn mutating_webhook_on_loopback_is_called_for_pod_create() -> anyhow::Result<()> {
    let ns = TestNamespace::create("e2e-webhook")?;
    let webhook = TestWebhook::start("e2e.ksiam.io/mutated", "true")?;
    // Declared after the server, so it is deleted before the server stops, also on an early return.
    let _config = Webhook::register(ns.name(), &webhook)?;

    let pod = |name: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns.name(), "labels": {"app": "webhook"}},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
        })
        .to_string()
    };
    // A new webhook configuration takes a moment to reach the API server's admission chain; server-side dry
    // runs (allowed because the webhook declares sideEffects: None) show when it has.
    poll(
        "the webhook configuration to take effect",
        Duration::from_secs(30),
        || {
            let out = ksiam_e2e::kubectl_with_stdin(
                &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                &pod("dry-run"),
            )?;
            let obj: serde_json::Value = serde_json::from_str(&out)?;
            Ok((obj["metadata"]["labels"]["e2e.ksiam.io/mutated"] == "true").then_some(()))
        },
    )?;

    let calls_before = webhook.calls();
    ksiam_e2e::kubectl_with_stdin(&["create", "-f", "-"], &pod("mutated"))?;
    let created = get_json(&["pod", "mutated", "-n", ns.name()])?;
    assert_eq!(
        created["metadata"]["labels"]["e2e.ksiam.io/mutated"], "true",
        "pod: {created:#}"
    );
    assert_eq!(
        created["metadata"]["labels"]["app"], "webhook",
        "the patch adds, it does not replace"
    );
    assert!(
        webhook.calls() > calls_before,
        "the webhook was not called for the real create"
    );
    Ok(())
}

/// A MutatingWebhookConfiguration scoped to one namespace, deleted when dropped.
struct Webhook {
    name: String,
}

impl Webhook {
    fn register(namespace: &str, webhook: &TestWebhook) -> anyhow::Result<Self> {
        let name = format!("ksiam-e2e-{}", random_suffix());
        apply(&json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "label.e2e.ksiam.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "clientConfig": {"url": webhook.url(), "caBundle": webhook.ca_bundle()},
                // Only this test's namespace: a failing webhook must not block anything else.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "rules": [{
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                }],
            }],
        }))?;
        Ok(Self { name })
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.name,
            "--ignore-not-found",
        ]);
    }
}
