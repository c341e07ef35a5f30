//! Seed §1.2 word for word: the Pod-injection webhook, called by the real kube-apiserver.

use std::time::Duration;

use ksiam_e2e::{
    SEED_POD, SEED_SERVICE_ACCOUNT, TestNamespace, apply, get_json, kubectl, kubectl_with_stdin, poll,
    secret_names, token_secret_name,
};
use serde_json::json;

const SEED_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    app: sample-deploy
  name: sample-deploy
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: sample-deploy
  template:
    metadata:
      annotations:
        kubesphere.io/creator: admin
        kubesphere.io/imagepullsecrets: '{}'
        kubesphere.io/serviceaccount-name: sample       # <----- Set the ServiceAccount
      labels:
        app: sample-deploy
    spec:
      containers:
      - image: nginx
        imagePullPolicy: IfNotPresent
        name: nginx
        ports:
        - containerPort: 80
          name: http-80
          protocol: TCP
        resources: {}
";

fn sample_secret() -> anyhow::Result<String> {
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_SERVICE_ACCOUNT)?;
    token_secret_name("default", "sample")
}

/// The seed's `volumeMounts` / `volumes` blocks for a token secret.
fn expected(secret: &str) -> (serde_json::Value, serde_json::Value) {
    (
        json!([{"mountPath": "/var/run/secrets/kubesphere.io/serviceaccount", "name": "kubesphere-service-account", "readOnly": true}]),
        json!([{
            "name": "kubesphere-service-account",
            "projected": {"defaultMode": 420, "sources": [{"secret": {"items": [{"key": "token", "path": "token"}], "name": secret}}]}
        }]),
    )
}

#[test]
fn seed_1_2_pod_gets_the_token_mounted() -> anyhow::Result<()> {
    let secret = sample_secret()?;
    let _ = kubectl(&[
        "delete",
        "pod",
        "sample-pod",
        "-n",
        "default",
        "--ignore-not-found",
        "--wait=true",
    ]);
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_POD)?;
    let pod = get_json(&["pod", "sample-pod", "-n", "default"])?;
    let (mounts, volumes) = expected(&secret);
    assert_eq!(pod["spec"]["containers"][0]["volumeMounts"], mounts, "{pod:#}");
    assert_eq!(pod["spec"]["volumes"], volumes, "{pod:#}");
    Ok(())
}

#[test]
fn seed_1_2_deployment_pods_get_the_token_mounted() -> anyhow::Result<()> {
    let secret = sample_secret()?;
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_DEPLOYMENT)?;
    // The real ReplicaSet controller creates the Pod; it stays Pending (no nodes).
    let pod = poll("a pod of sample-deploy", Duration::from_secs(60), || {
        let list = get_json(&["pods", "-n", "default", "-l", "app=sample-deploy"])?;
        Ok(list["items"].as_array().and_then(|items| items.first().cloned()))
    })?;
    let (mounts, volumes) = expected(&secret);
    assert_eq!(pod["spec"]["containers"][0]["volumeMounts"], mounts, "{pod:#}");
    assert_eq!(pod["spec"]["volumes"], volumes, "{pod:#}");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    Ok(())
}

fn pod_yaml(ns: &str, name: &str, sa: Option<&str>) -> String {
    let annotation = sa
        .map(|s| format!("  annotations:\n    kubesphere.io/serviceaccount-name: {s}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{annotation}spec:\n  initContainers:\n  - name: init\n    image: busybox\n  containers:\n  - name: app\n    image: nginx\n"
    )
}

#[test]
fn a_missing_service_account_is_denied_with_kubesphere_message() -> anyhow::Result<()> {
    let ns = TestNamespace::create("wh-deny")?;
    let err =
        kubectl_with_stdin(&["apply", "-f", "-"], &pod_yaml(ns.name(), "p", Some("ghost"))).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(r#"admission webhook "serviceaccount-pod-injector.kubesphere.io" denied the request: ServiceAccount.kubesphere.io "ghost" not found"#),
        "{text}"
    );
    Ok(())
}

/// Deletes a cluster-scoped object when dropped.
struct ClusterObject {
    kind: &'static str,
    name: String,
}

impl Drop for ClusterObject {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            self.kind,
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

#[test]
fn a_service_account_without_secrets_is_denied_with_kubesphere_message() -> anyhow::Result<()> {
    let ns = TestNamespace::create("wh-nosecret")?;
    // Our controller records a token Secret in every ServiceAccount within milliseconds. To see one without
    // secrets, a ValidatingAdmissionPolicy (kube-apiserver's own CEL admission) refuses every update of the
    // labelled ServiceAccounts of this namespace, so the controller cannot write `secrets` into them.
    let policy = format!("ksiam-e2e-freeze-{}", ns.name());
    apply(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["kubesphere.io"],
                "apiVersions": ["*"],
                "operations": ["UPDATE"],
                "resources": ["serviceaccounts"],
            }]},
            "validations": [{"expression": "false", "message": "e2e: this ServiceAccount stays without secrets"}],
        },
    }))?;
    let _policy = ClusterObject {
        kind: "validatingadmissionpolicies.admissionregistration.k8s.io",
        name: policy.clone(),
    };
    apply(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {
            "policyName": policy,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name()}},
                "objectSelector": {"matchLabels": {"ksiam.io/e2e-frozen": "true"}},
            },
        },
    }))?;
    let _binding = ClusterObject {
        kind: "validatingadmissionpolicybindings.admissionregistration.k8s.io",
        name: policy.clone(),
    };
    // The policy applies once kube-apiserver has loaded it; until then the controller may fill the
    // ServiceAccount, so each attempt uses a fresh one (a filled one is left for the namespace's deletion).
    let mut attempt = 0;
    let text = poll(
        "a Pod denied for a ServiceAccount without secrets",
        Duration::from_secs(60),
        || {
            attempt += 1;
            let sa = format!("frozen-{attempt}");
            kubectl_with_stdin(
                &["apply", "-f", "-"],
                &format!(
                    "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: {}\n  labels:\n    ksiam.io/e2e-frozen: \"true\"\n",
                    ns.name()
                ),
            )?;
            std::thread::sleep(Duration::from_secs(1));
            let filled = || -> anyhow::Result<bool> {
                let object = get_json(&["serviceaccounts.kubesphere.io", &sa, "-n", ns.name()])?;
                Ok(!secret_names(&object).is_empty())
            };
            if filled()? {
                return Ok(None);
            }
            let pod = format!("p-{attempt}");
            match kubectl_with_stdin(&["apply", "-f", "-"], &pod_yaml(ns.name(), &pod, Some(&sa))) {
                Err(e) => Ok(Some(Ok(format!("{e:#}")))),
                // Filled between the check and the Pod (the policy was not loaded yet): try again.
                Ok(_) if filled()? => Ok(None),
                // A wrong answer, not "not yet": stop polling.
                Ok(_) => Ok(Some(Err(anyhow::anyhow!(
                    "Pod {pod} was admitted for ServiceAccount {sa}, which has no secrets"
                )))),
            }
        },
    )??;
    assert!(
        text.contains(&format!(
            r#"admission webhook "serviceaccount-pod-injector.kubesphere.io" denied the request: can not find any token in service account: frozen-{attempt}"#
        )),
        "{text}"
    );
    Ok(())
}

#[test]
fn pods_without_the_annotation_are_untouched_and_init_containers_get_the_mount() -> anyhow::Result<()> {
    let ns = TestNamespace::create("wh-plain")?;
    kubectl_with_stdin(&["apply", "-f", "-"], &pod_yaml(ns.name(), "plain", None))?;
    let pod = get_json(&["pod", "plain", "-n", ns.name()])?;
    assert!(pod["spec"].get("volumes").is_none(), "{pod:#}");

    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: {}\n",
            ns.name()
        ),
    )?;
    let secret = token_secret_name(ns.name(), "app")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &pod_yaml(ns.name(), "with-init", Some("app")),
    )?;
    let pod = get_json(&["pod", "with-init", "-n", ns.name()])?;
    let (mounts, volumes) = expected(&secret);
    assert_eq!(pod["spec"]["initContainers"][0]["volumeMounts"], mounts);
    assert_eq!(pod["spec"]["containers"][0]["volumeMounts"], mounts);
    assert_eq!(pod["spec"]["volumes"], volumes);
    Ok(())
}
