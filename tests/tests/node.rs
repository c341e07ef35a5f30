//! Seed §1.2 with real Pods: the kubelet mounts a KubeSphere ServiceAccount's token file into the container.
//!
//! These tests need the node (`cargo xtask e2e --backend node`, or `cargo xtask up --node`): a kubelet with
//! containerd and the locally built test image. `cargo xtask e2e --backend local` leaves them out by name
//! (`--skip on_the_node`); run anywhere else they fail and say why.

use std::time::Duration;

use ksiam_e2e::{
    SEED_POD, SEED_SERVICE_ACCOUNT, TestNamespace, get_json, kubectl, kubectl_with_stdin, poll, secret_token,
    token_secret_name,
};

/// Where the injected volume puts the token (spec §7.1).
const TOKEN_PATH: &str = "/var/run/secrets/kubesphere.io/serviceaccount/token";

/// The image test Pods run (Debian's static busybox, imported into the node by xtask).
fn test_image() -> String {
    std::env::var("KSIAM_NODE_TEST_IMAGE").unwrap_or_else(|_| {
        panic!(
            "KSIAM_NODE_TEST_IMAGE is not set: these tests need a node with the test image; run them with \
             `cargo xtask e2e --backend node` (root, cgroups)"
        )
    })
}

/// Parses a seed manifest and moves it into `ns`.
fn seed_object(yaml: &str, ns: &str) -> anyhow::Result<serde_json::Value> {
    let mut obj: serde_json::Value = serde_yaml::from_str(yaml)?;
    obj["metadata"]["namespace"] = ns.into();
    Ok(obj)
}

/// The seed's container, with the one change a machine without a registry needs: the local test image
/// instead of `nginx`, running a shell that sleeps (and the restricted security context).
fn runnable(container: &mut serde_json::Value) {
    container["image"] = test_image().into();
    container["command"] = serde_json::json!(["/bin/busybox", "sleep", "3600"]);
    container["securityContext"] = serde_json::json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
}

/// Waits until Pod `ns/name` is Running and Ready.
fn wait_running(ns: &str, name: &str) -> anyhow::Result<()> {
    poll(
        &format!("Pod {ns}/{name} to be Ready"),
        Duration::from_secs(120),
        || {
            let pod = get_json(&["pod", name, "-n", ns])?;
            let ready = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            Ok(ready.then_some(()))
        },
    )
}

/// `kubectl exec <pod> -- cat <TOKEN_PATH>`.
fn token_in(ns: &str, pod: &str) -> anyhow::Result<String> {
    kubectl(&["exec", "-n", ns, pod, "--", "/bin/busybox", "cat", TOKEN_PATH])
}

fn sample_service_account(ns: &str) -> anyhow::Result<String> {
    let sa = seed_object(SEED_SERVICE_ACCOUNT, ns)?;
    kubectl_with_stdin(&["apply", "-f", "-"], &sa.to_string())?;
    let secret = token_secret_name(ns, "sample")?;
    secret_token(ns, &secret)
}

#[test]
fn on_the_node_the_seed_pod_runs_with_the_service_accounts_token_file() -> anyhow::Result<()> {
    let ns = TestNamespace::create("node-seed-pod")?;
    let token = sample_service_account(ns.name())?;

    let mut pod = seed_object(SEED_POD, ns.name())?;
    runnable(&mut pod["spec"]["containers"][0]);
    kubectl_with_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    wait_running(ns.name(), "sample-pod")?;

    // The kubelet mounted the injected projected volume: the file is the ServiceAccount's token.
    assert_eq!(token_in(ns.name(), "sample-pod")?, token);
    let mounted = get_json(&["pod", "sample-pod", "-n", ns.name()])?;
    let mounts = mounted["spec"]["containers"][0]["volumeMounts"].to_string();
    assert!(
        mounts.contains("/var/run/secrets/kubesphere.io/serviceaccount"),
        "{mounts}"
    );
    Ok(())
}

#[test]
fn on_the_node_the_seed_deployment_runs_with_the_service_accounts_token_file() -> anyhow::Result<()> {
    let ns = TestNamespace::create("node-seed-deploy")?;
    let token = sample_service_account(ns.name())?;

    let mut deployment = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sample-deploy", "namespace": ns.name()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "sample-deploy"}},
            "template": {
                "metadata": {
                    "annotations": {
                        "kubesphere.io/creator": "admin",
                        "kubesphere.io/imagepullsecrets": "{}",
                        "kubesphere.io/serviceaccount-name": "sample",
                    },
                    "labels": {"app": "sample-deploy"},
                },
                "spec": {"containers": [{
                    "name": "nginx",
                    "image": "nginx",
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                }]},
            },
        },
    });
    runnable(&mut deployment["spec"]["template"]["spec"]["containers"][0]);
    kubectl_with_stdin(&["apply", "-f", "-"], &deployment.to_string())?;
    kubectl(&[
        "rollout",
        "status",
        "deployment/sample-deploy",
        "-n",
        ns.name(),
        "--timeout=120s",
    ])?;
    let pod = kubectl(&[
        "get",
        "pods",
        "-n",
        ns.name(),
        "-l",
        "app=sample-deploy",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    assert_eq!(token_in(ns.name(), &pod)?, token);
    Ok(())
}

#[test]
fn on_the_node_a_pod_without_the_annotation_gets_no_kubesphere_token() -> anyhow::Result<()> {
    let ns = TestNamespace::create("node-plain-pod")?;
    sample_service_account(ns.name())?;
    let mut pod = seed_object(SEED_POD, ns.name())?;
    pod["metadata"]["annotations"]
        .as_object_mut()
        .expect("the seed Pod has annotations")
        .remove("kubesphere.io/serviceaccount-name");
    runnable(&mut pod["spec"]["containers"][0]);
    kubectl_with_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    wait_running(ns.name(), "sample-pod")?;
    let err = token_in(ns.name(), "sample-pod").expect_err("no token file without the annotation");
    assert!(format!("{err:#}").contains("No such file"), "{err:#}");
    Ok(())
}

/// The SDK example's image (seed §1.3 in Rust, static, imported by xtask).
fn sdk_image() -> String {
    std::env::var("KSIAM_NODE_SDK_IMAGE").unwrap_or_else(|_| {
        panic!(
            "KSIAM_NODE_SDK_IMAGE is not set: this test needs ksiam installed from the chart on the node; run \
             it with `cargo xtask e2e --backend node`"
        )
    })
}

/// Runs the SDK example once in a Pod that carries the seed's annotation (nothing but its in-cluster
/// configuration: the injected token file and the default host ks-apiserver.kubesphere-system:80), and
/// returns what it printed.
fn run_sdk_pod(ns: &str, name: &str) -> anyhow::Result<String> {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {"kubesphere.io/serviceaccount-name": "sample"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "list-clusters",
                "image": sdk_image(),
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {
                    "runAsNonRoot": true,
                    "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }],
        },
    });
    kubectl_with_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    poll(
        &format!("Pod {ns}/{name} to finish"),
        Duration::from_secs(120),
        || {
            let phase = kubectl(&["get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}"])?;
            Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(()))
        },
    )?;
    let out = kubectl(&["logs", name, "-n", ns])?;
    kubectl(&["delete", "pod", name, "-n", ns, "--wait=false"])?;
    Ok(out)
}

/// Deletes a cluster-scoped object when dropped.
struct DeleteOnDrop(&'static str, String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", self.0, &self.1, "--ignore-not-found", "--wait=false"]);
    }
}

#[test]
fn on_the_node_the_sdk_in_a_pod_prints_the_seeds_403_then_lists_clusters_after_the_binding()
-> anyhow::Result<()> {
    let ns = TestNamespace::create("node-sdk")?;
    sample_service_account(ns.name())?;

    // Seed §1.3: able to reach ks-apiserver (CoreDNS, kube-proxy), but forbidden.
    let out = run_sdk_pod(ns.name(), "sdk-forbidden")?;
    let user = format!("kubesphere:serviceaccount:{}:sample", ns.name());
    assert!(
        out.contains(&format!(
            r#"clusters.tenant.kubesphere.io is forbidden: User "{user}" cannot list resource "clusters" in API group "tenant.kubesphere.io" at the cluster scope"#
        )),
        "SDK example in a Pod: {out}"
    );

    // Seed §1.4: the GlobalRoleBinding (for this namespace's ServiceAccount), then the list.
    let binding = format!("sample-platform-admin-{}", ns.name());
    let _cleanup = DeleteOnDrop("globalrolebinding", binding.clone());
    let grb = serde_json::json!({
        "apiVersion": "iam.kubesphere.io/v1beta1",
        "kind": "GlobalRoleBinding",
        "metadata": {"name": binding, "labels": {"iam.kubesphere.io/role-ref": "platform-admin"}},
        "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "GlobalRole", "name": "platform-admin"},
        "subjects": [{
            "apiGroup": "kubesphere.io",
            "kind": "ServiceAccount",
            "name": "sample",
            "namespace": ns.name(),
        }],
    });
    kubectl_with_stdin(&["apply", "-f", "-"], &grb.to_string())?;
    let mut attempt = 0;
    let listed = poll(
        "the SDK in a Pod to list clusters",
        Duration::from_secs(90),
        || {
            attempt += 1;
            let out = run_sdk_pod(ns.name(), &format!("sdk-allowed-{attempt}"))?;
            Ok((out.contains("\"totalItems\"") && out.contains("\"host\"")).then_some(out))
        },
    )?;
    assert!(listed.contains("\"items\""), "{listed}");
    Ok(())
}

/// The ClusterIP of `ks-apiserver` (as the seed's curl uses it).
fn ks_apiserver_ip() -> anyhow::Result<String> {
    kubectl(&[
        "get",
        "svc",
        "ks-apiserver",
        "-n",
        "kubesphere-system",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

/// From inside the Pod: `GET /kapis/tenant.kubesphere.io/v1beta1/clusters` on ks-apiserver with the mounted
/// token (busybox wget; its error names the HTTP status).
fn call_from_pod(ns: &str, pod: &str, ip: &str) -> String {
    let script = format!(
        "/bin/busybox wget -q -O- --header \"Authorization: Bearer $(/bin/busybox cat {TOKEN_PATH})\" \
         http://{ip}/kapis/tenant.kubesphere.io/v1beta1/clusters"
    );
    match kubectl(&["exec", "-n", ns, pod, "--", "/bin/busybox", "sh", "-c", &script]) {
        Ok(out) => out,
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn on_the_node_deleting_the_token_secret_makes_the_running_pods_next_call_401() -> anyhow::Result<()> {
    let ns = TestNamespace::create("node-revoke")?;
    sample_service_account(ns.name())?;
    let secret = token_secret_name(ns.name(), "sample")?;
    let mut pod = seed_object(SEED_POD, ns.name())?;
    runnable(&mut pod["spec"]["containers"][0]);
    kubectl_with_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    wait_running(ns.name(), "sample-pod")?;
    let ip = ks_apiserver_ip()?;

    // Authenticated, not yet authorized: the seed's 403.
    let before = call_from_pod(ns.name(), "sample-pod", &ip);
    assert!(before.contains("403 Forbidden"), "{before}");

    kubectl(&["delete", "secret", &secret, "-n", ns.name()])?;
    let after = poll("the Pod's call to answer 401", Duration::from_secs(30), || {
        let out = call_from_pod(ns.name(), "sample-pod", &ip);
        Ok(out.contains("401 Unauthorized").then_some(out))
    })?;
    assert!(!after.contains("403"), "{after}");
    Ok(())
}

/// Attack: a Pod reaches nothing outside this machine (the CNI gives it no default route, only the Pod and
/// Service ranges). Without that guard the connection below leaves the machine.
#[test]
fn on_the_node_a_pod_has_no_route_out_of_the_machine() -> anyhow::Result<()> {
    let ns = TestNamespace::create("node-egress")?;
    let mut pod = seed_object(SEED_POD, ns.name())?;
    pod["metadata"]["annotations"]
        .as_object_mut()
        .expect("the seed Pod has annotations")
        .remove("kubesphere.io/serviceaccount-name");
    runnable(&mut pod["spec"]["containers"][0]);
    kubectl_with_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    wait_running(ns.name(), "sample-pod")?;
    let routes = kubectl(&[
        "exec",
        "-n",
        ns.name(),
        "sample-pod",
        "--",
        "/bin/busybox",
        "ip",
        "route",
    ])?;
    assert!(!routes.contains("default"), "{routes}");
    // The kernel's answer for an address outside the machine: no route.
    let out = match kubectl(&[
        "exec",
        "-n",
        ns.name(),
        "sample-pod",
        "--",
        "/bin/busybox",
        "ip",
        "route",
        "get",
        "1.1.1.1",
    ]) {
        Ok(out) => out,
        Err(e) => format!("{e:#}"),
    };
    assert!(
        out.contains("unreachable"),
        "a Pod reached outside the machine: {out}"
    );
    Ok(())
}

/// Attack: the kubelet's API (exec, logs, Pod list) on the node address answers only authenticated and
/// authorized callers (webhook authentication and authorization, anonymous off). Without that guard an
/// anonymous request lists the node's Pods.
#[test]
fn on_the_node_the_kubelet_api_refuses_anonymous_callers() -> anyhow::Result<()> {
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "https://10.244.0.1:10250/pods",
        ])
        .output()?;
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(status.trim(), "401", "anonymous GET /pods on the kubelet");
    Ok(())
}

/// Expiring tokens: the controller rewrites the token in the same Secret at 80% of its lifetime, the kubelet
/// refreshes the mounted file, and the running Pod's next call uses the new token.
#[test]
fn on_the_node_the_kubelet_refreshes_the_token_file_after_the_controller_rotates_it() -> anyhow::Result<()> {
    let ns = TestNamespace::create("node-rotate")?;
    let mut sa = seed_object(SEED_SERVICE_ACCOUNT, ns.name())?;
    sa["metadata"]["annotations"] = serde_json::json!({"ksiam.kubesphere.io/token-ttl-seconds": "60"});
    kubectl_with_stdin(&["apply", "-f", "-"], &sa.to_string())?;
    let secret = token_secret_name(ns.name(), "sample")?;
    let first = secret_token(ns.name(), &secret)?;

    let mut pod = seed_object(SEED_POD, ns.name())?;
    runnable(&mut pod["spec"]["containers"][0]);
    kubectl_with_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    wait_running(ns.name(), "sample-pod")?;
    assert_eq!(token_in(ns.name(), "sample-pod")?, first);

    // Rotation at 48 s, then the kubelet's next sync of the projected volume.
    let second = poll(
        "the mounted token file to change",
        Duration::from_secs(120),
        || {
            let now = token_in(ns.name(), "sample-pod")?;
            Ok((now != first).then_some(now))
        },
    )?;
    assert_eq!(
        second,
        secret_token(ns.name(), &secret)?,
        "the file holds the Secret's new token"
    );
    assert_eq!(
        token_secret_name(ns.name(), "sample")?,
        secret,
        "rotation rewrites the same Secret"
    );
    let out = call_from_pod(ns.name(), "sample-pod", &ks_apiserver_ip()?);
    assert!(
        out.contains("403 Forbidden"),
        "the new token authenticates: {out}"
    );
    Ok(())
}
