//! The gateway against the real API server (`KSIAM_GATEWAY`): seed §1.3's 403, RBAC through the proxy,
//! and path confusion that must never reach another namespace.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use ksiam_e2e::{
    TestNamespace, e2e, kubectl, kubectl_with_stdin, poll, random_suffix, secret_token, token_secret_name,
};

/// `host:port` of the gateway (plain HTTP).
fn gateway() -> String {
    e2e();
    let url = std::env::var("KSIAM_GATEWAY").expect("KSIAM_GATEWAY is not set: run via `cargo xtask e2e`");
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// A GET with `target` written verbatim; returns the status and the body.
fn get(target: &str, token: &str, user_agent: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(gateway())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "GET {target} HTTP/1.1\r\nHost: ks-apiserver\r\nUser-Agent: {user_agent}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.to_owned() }))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn service_account_token(ns: &str, name: &str) -> anyhow::Result<String> {
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\nsecrets: []\n"
        ),
    )?;
    secret_token(ns, &token_secret_name(ns, name)?)
}

#[test]
fn seed_1_3_fresh_service_account_gets_the_seed_403() -> anyhow::Result<()> {
    let ns = TestNamespace::create("gw-seed")?;
    let token = service_account_token(ns.name(), "sample")?;
    let (status, body) = get(
        "/kapis/tenant.kubesphere.io/v1beta1/clusters",
        &token,
        "curl/8.5.0",
    )?;
    assert_eq!(status, 403, "{body}");
    let expected = format!(
        "{{\n  \"kind\": \"Status\",\n  \"apiVersion\": \"v1\",\n  \"metadata\": {{}},\n  \"status\": \"Failure\",\n  \"message\": \"clusters.tenant.kubesphere.io is forbidden: User \\\"kubesphere:serviceaccount:{ns}:sample\\\" cannot list resource \\\"clusters\\\" in API group \\\"tenant.kubesphere.io\\\" at the cluster scope\",\n  \"reason\": \"Forbidden\",\n  \"details\": {{\n    \"group\": \"tenant.kubesphere.io\",\n    \"kind\": \"clusters\"\n  }},\n  \"code\": 403\n}}",
        ns = ns.name()
    );
    assert_eq!(body, expected);
    Ok(())
}

/// Deliberate difference (ARCHITECTURE.md): a ServiceAccount allowed through the filter (`list` on
/// `clusters.tenant.kubesphere.io`) but without `list` on `clusters.cluster.kubesphere.io` has no User to
/// read granted clusters from; KubeSphere answers 500 ("failed to describe user"), ksiam an empty list.
#[test]
fn service_account_without_cluster_list_permission_gets_an_empty_list_from_the_real_gateway()
-> anyhow::Result<()> {
    let ns = TestNamespace::create("gw-clusters")?;
    let token = service_account_token(ns.name(), "lister")?;
    let name = format!("e2e-tenant-lister-{}", random_suffix());
    // Cluster-scoped objects outlive the namespace: deleted when this guard drops.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for kind in [
                "globalrolebindings.iam.kubesphere.io",
                "globalroles.iam.kubesphere.io",
            ] {
                let _ = kubectl(&["delete", kind, &self.0, "--ignore-not-found", "--wait=false"]);
            }
        }
    }
    let _cleanup = Cleanup(name.clone());
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1
kind: GlobalRole
metadata:
  name: {name}
rules:
- apiGroups: [\"tenant.kubesphere.io\"]
  resources: [\"clusters\"]
  verbs: [\"list\"]
---
apiVersion: iam.kubesphere.io/v1beta1
kind: GlobalRoleBinding
metadata:
  name: {name}
roleRef:
  apiGroup: iam.kubesphere.io
  kind: GlobalRole
  name: {name}
subjects:
- apiGroup: kubesphere.io
  kind: ServiceAccount
  name: lister
  namespace: {ns}
",
            ns = ns.name()
        ),
    )?;
    let (status, body) = poll(
        "the GlobalRoleBinding reaches the authorizer",
        Duration::from_secs(10),
        || {
            let (status, body) = get("/kapis/tenant.kubesphere.io/v1beta1/clusters", &token, "e2e")?;
            Ok((status != 403).then_some((status, body)))
        },
    )?;
    assert_eq!((status, body.as_str()), (200, r#"{"items":[],"totalItems":0}"#));
    Ok(())
}

#[test]
fn namespace_role_reaches_kube_apiserver_and_nothing_else() -> anyhow::Result<()> {
    let ns = TestNamespace::create("gw-proxy")?;
    let token = service_account_token(ns.name(), "reader")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1
kind: RoleBinding
metadata:
  name: reader-view
  namespace: {ns}
roleRef:
  apiGroup: iam.kubesphere.io
  kind: Role
  name: reader
subjects:
- apiGroup: kubesphere.io
  kind: ServiceAccount
  name: reader
  namespace: {ns}
---
apiVersion: iam.kubesphere.io/v1beta1
kind: Role
metadata:
  name: reader
  namespace: {ns}
rules:
- apiGroups: [\"\"]
  resources: [\"configmaps\"]
  verbs: [\"get\", \"list\"]
",
            ns = ns.name()
        ),
    )?;
    let own = format!("/api/v1/namespaces/{}/configmaps", ns.name());
    let (status, body) = poll(
        "the binding reaches the authorizer",
        Duration::from_secs(10),
        || {
            let (status, body) = get(&own, &token, "e2e")?;
            Ok((status == 200).then_some((status, body)))
        },
    )?;
    assert_eq!(status, 200);
    assert!(body.contains("\"kind\":\"ConfigMapList\""), "{body}");

    for target in [
        "/api/v1/namespaces/kube-system/configmaps".to_owned(),
        format!("/api/v1/namespaces/{}/../kube-system/configmaps", ns.name()),
        format!("/api/v1/namespaces/{}/%2e%2e/kube-system/configmaps", ns.name()),
        format!("/api/v1/namespaces/{}%2f..%2fkube-system/configmaps", ns.name()),
        format!("/api/v1/namespaces/{};/../kube-system/configmaps", ns.name()),
        format!("//api/v1/namespaces/{}/../kube-system/configmaps", ns.name()),
    ] {
        let (status, body) = get(&target, &token, "e2e")?;
        assert!(matches!(status, 400 | 403), "{target}: {status} {body}");
        assert!(!body.contains("ConfigMapList"), "{target}: {body}");
    }
    Ok(())
}

#[test]
fn a_watch_through_the_proxy_delivers_events() -> anyhow::Result<()> {
    let ns = TestNamespace::create("gw-watch")?;
    let token = service_account_token(ns.name(), "watcher")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1\nkind: Role\nmetadata:\n  name: watcher\n  namespace: {ns}\n\
             rules:\n- apiGroups: ['']\n  resources: ['configmaps']\n  verbs: ['get', 'list', 'watch']\n---\n\
             apiVersion: iam.kubesphere.io/v1beta1\nkind: RoleBinding\nmetadata:\n  name: watcher\n  namespace: {ns}\n\
             roleRef:\n  apiGroup: iam.kubesphere.io\n  kind: Role\n  name: watcher\n\
             subjects:\n- apiGroup: kubesphere.io\n  kind: ServiceAccount\n  name: watcher\n  namespace: {ns}\n",
            ns = ns.name()
        ),
    )?;
    let list = format!("/api/v1/namespaces/{}/configmaps", ns.name());
    poll(
        "the binding reaches the authorizer",
        Duration::from_secs(10),
        || Ok((get(&list, &token, "e2e")?.0 == 200).then_some(())),
    )?;

    // Open the watch, then create an object: its ADDED event must arrive over the open stream.
    let mut tcp = TcpStream::connect(gateway())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        tcp,
        "GET {list}?watch=1&timeoutSeconds=30 HTTP/1.1\r\nHost: ks-apiserver\r\nAuthorization: Bearer {token}\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    kubectl(&[
        "create",
        "configmap",
        "watched",
        "-n",
        ns.name(),
        "--from-literal=k=v",
    ])?;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !(seen.contains("\"ADDED\"") && seen.contains("\"name\":\"watched\"")) {
        let n = tcp.read(&mut buf)?;
        anyhow::ensure!(n > 0, "the watch ended before the event arrived: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Ok(())
}
