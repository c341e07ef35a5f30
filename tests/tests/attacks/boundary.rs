//! What the gateway authorizes is what kube-apiserver executes, and kube-apiserver's own webhooks grant
//! nothing KubeSphere did not. Every request here is one an attacker sends; each test names its class.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use ksiam_e2e::{
    TestNamespace, gateway_addr, gateway_request, kubectl, kubectl_with_stdin, kubectl_with_token, poll,
    service_account_token,
};

/// Waits until `token` gets 200 for `target` through the gateway (the binding reached the authorizer).
fn wait_allowed(token: &str, target: &str) -> anyhow::Result<String> {
    poll(&format!("200 for {target}"), Duration::from_secs(15), || {
        let (status, body) = gateway_request("GET", target, Some(token), &[])?;
        Ok((status == 200).then_some(body))
    })
}

/// Hole 1: parameters hidden after authorization. A workspace viewer is allowed a Workspace-scope watch of
/// namespaces labelled into its workspace; a `#` in `X-KubeSphere-Rawquery` used to make kube-apiserver
/// receive a plain, cluster-wide list of Secrets instead. The gateway now refuses the ambiguous query.
#[test]
fn hidden_parameters_are_refused_not_cut() -> anyhow::Result<()> {
    let ns = TestNamespace::create("atk-hidden")?;
    let ns = ns.name();
    create_secret(ns, "precious", "hidden-value")?;
    let token = service_account_token(ns, "viewer")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1
kind: WorkspaceRoleBinding
metadata:
  name: {ns}-viewer
  labels: {{kubesphere.io/workspace: system-workspace}}
roleRef: {{apiGroup: iam.kubesphere.io, kind: WorkspaceRole, name: system-workspace-viewer}}
subjects:
- {{apiGroup: kubesphere.io, kind: ServiceAccount, name: viewer, namespace: {ns}}}
"
        ),
    )?;
    // The legitimate request is allowed (so a refusal below is the parser's, not a missing grant).
    poll(
        "the workspace-scoped watch to be allowed",
        Duration::from_secs(15),
        || {
            let mut tcp = TcpStream::connect(gateway_addr())?;
            tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
            write!(
                tcp,
                "GET /api/v1/namespaces?watch=1&timeoutSeconds=1&labelSelector=kubesphere.io%2Fworkspace%3Dsystem-workspace HTTP/1.1\r\n\
             Host: g\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )?;
            let mut head = [0u8; 12];
            tcp.read_exact(&mut head)?;
            Ok((&head[9..12] == b"200").then_some(()))
        },
    )?;
    for raw in [
        "#&watch=1&labelSelector=kubesphere.io/workspace%3Dsystem-workspace",
        "x=1#&watch=1&labelSelector=kubesphere.io%2Fworkspace%3Dsystem-workspace",
    ] {
        let (status, body) = gateway_request(
            "GET",
            "/api/v1/secrets",
            Some(&token),
            &[("X-KubeSphere-Rawquery", raw)],
        )?;
        assert_eq!(status, 400, "{raw}: {body}");
        assert!(!body.contains("precious"), "{raw}: {body}");
    }
    // Two readings of `watch` (first says list, last says watch).
    let (status, body) = gateway_request(
        "GET",
        "/api/v1/secrets?watch=1&labelSelector=kubesphere.io%2Fworkspace%3Dsystem-workspace&watch=0",
        Some(&token),
        &[],
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("precious"), "{body}");
    Ok(())
}

/// Hole 4: query-parser differential. Go's `net/url` drops a pair holding `;` or a bad `%` escape; a
/// lenient parser kept the `fieldSelector` that satisfied `resourceNames`, and kube-apiserver listed every
/// Secret of the namespace.
#[test]
fn query_parser_differentials_are_refused() -> anyhow::Result<()> {
    let ns = TestNamespace::create("atk-query")?;
    let ns = ns.name();
    create_secret(ns, "allowed", "v")?;
    create_secret(ns, "precious", "hidden-value")?;
    let token = service_account_token(ns, "lister")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1
kind: Role
metadata: {{name: one-secret, namespace: {ns}}}
rules:
- {{apiGroups: [\"\"], resources: [secrets], resourceNames: [allowed], verbs: [get, list]}}
---
apiVersion: iam.kubesphere.io/v1beta1
kind: RoleBinding
metadata: {{name: lister-one-secret, namespace: {ns}}}
roleRef: {{apiGroup: iam.kubesphere.io, kind: Role, name: one-secret}}
subjects:
- {{apiGroup: kubesphere.io, kind: ServiceAccount, name: lister, namespace: {ns}}}
"
        ),
    )?;
    let list = format!("/api/v1/namespaces/{ns}/secrets");
    let body = wait_allowed(&token, &format!("{list}?fieldSelector=metadata.name%3Dallowed"))?;
    assert!(
        body.contains("\"allowed\"") && !body.contains("precious"),
        "{body}"
    );
    for query in [
        "fieldSelector=metadata.name%3Dallowed,x%3D;",
        "fieldSelector=metadata.name%3Dallowed,x%3D%zz",
        "fieldSelector=metadata.name%3Dallowed,x%3D%ff",
        "fieldSelector=metadata.name%3Dallowed&fieldSelector=metadata.name%3Dprecious",
        "fieldSelector=metadata.name%3Dallowed;fieldSelector=",
    ] {
        let (status, body) = gateway_request("GET", &format!("{list}?{query}"), Some(&token), &[])?;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(!body.contains("precious"), "{query}: {body}");
    }
    // Kubernetes reads the sorted terms: the first `metadata.name` after sorting is the one authorized.
    let (status, body) = gateway_request(
        "GET",
        &format!("{list}?fieldSelector=metadata.name%3Dprecious,metadata.name%3Dallowed"),
        Some(&token),
        &[],
    )?;
    assert!(!body.contains("\"name\":\"precious\""), "{status} {body}");
    Ok(())
}

/// Hole 3: exec, attach and port-forward over WebSocket are GETs; Kubernetes (≥ 1.30) also requires
/// `create`. A viewer (`*` get/list/watch) must not exec.
#[test]
fn websocket_exec_needs_create() -> anyhow::Result<()> {
    let ns = TestNamespace::create("atk-exec")?;
    let ns = ns.name();
    let token = service_account_token(ns, "viewer")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1
kind: Role
metadata: {{name: viewer, namespace: {ns}}}
rules:
- {{apiGroups: [\"*\"], resources: [\"*\"], verbs: [get, list, watch]}}
---
apiVersion: iam.kubesphere.io/v1beta1
kind: RoleBinding
metadata: {{name: viewer, namespace: {ns}}}
roleRef: {{apiGroup: iam.kubesphere.io, kind: Role, name: viewer}}
subjects:
- {{apiGroup: kubesphere.io, kind: ServiceAccount, name: viewer, namespace: {ns}}}
"
        ),
    )?;
    wait_allowed(&token, &format!("/api/v1/namespaces/{ns}/configmaps"))?;
    let upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ];
    for sub in [
        "exec?command=sh&stdout=true",
        "attach?stdout=true",
        "portforward?ports=80",
    ] {
        let target = format!("/api/v1/namespaces/{ns}/pods/p/{sub}");
        for headers in [&upgrade[..], &[]] {
            let (status, body) = gateway_request("GET", &target, Some(&token), headers)?;
            assert_eq!(status, 403, "{target}: {body}");
            assert!(body.contains("cannot create resource"), "{target}: {body}");
        }
    }
    Ok(())
}

/// Hole 5a: every Kubernetes identity is in `system:authenticated`; KubeSphere's `authenticated`
/// GlobalRole (which lists iam Users) must not apply to it through the SubjectAccessReview webhook.
#[test]
fn kubernetes_identities_get_no_kubesphere_grants() -> anyhow::Result<()> {
    let ns = TestNamespace::create("atk-k8s-sa")?;
    let ns = ns.name();
    kubectl(&["create", "serviceaccount", "pod-identity", "-n", ns])?;
    let token = kubectl(&["create", "token", "pod-identity", "-n", ns])?;
    let (ok, out) = kubectl_with_token(token.trim(), &["get", "users.iam.kubesphere.io"])?;
    assert!(
        !ok && out.contains("Forbidden"),
        "a Pod's own token listed Users: {out}"
    );
    let (ok, out) = kubectl_with_token(token.trim(), &["get", "globalroles.iam.kubesphere.io"])?;
    assert!(!ok && out.contains("Forbidden"), "{out}");
    Ok(())
}

/// Hole 5b and 5c: through kube-apiserver, global resources are judged at Global scope (a cluster viewer
/// does not list Users, as through the gateway), and the gateway's path allow-list does not apply to
/// kube-apiserver's own paths (`/metrics`).
#[test]
fn kube_apiserver_webhook_uses_the_gateway_scopes_and_no_allow_list() -> anyhow::Result<()> {
    let ns = TestNamespace::create("atk-scope")?;
    let ns = ns.name();
    let token = service_account_token(ns, "cviewer")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1
kind: ClusterRoleBinding
metadata: {{name: {ns}-cviewer}}
roleRef: {{apiGroup: iam.kubesphere.io, kind: ClusterRole, name: cluster-viewer}}
subjects:
- {{apiGroup: kubesphere.io, kind: ServiceAccount, name: cviewer, namespace: {ns}}}
"
        ),
    )?;
    let result = (|| {
        poll(
            "the cluster viewer lists pods through kube-apiserver",
            Duration::from_secs(15),
            || {
                let (ok, _) = kubectl_with_token(&token, &["get", "pods", "-A"])?;
                Ok(ok.then_some(()))
            },
        )?;
        let (ok, out) = kubectl_with_token(&token, &["get", "users.iam.kubesphere.io"])?;
        assert!(
            !ok && out.contains("Forbidden"),
            "a cluster viewer listed Users: {out}"
        );
        let (status, body) =
            gateway_request("GET", "/apis/iam.kubesphere.io/v1beta1/users", Some(&token), &[])?;
        assert_eq!(status, 403, "the gateway agrees: {body}");
        // (cluster-viewer itself allows GET on every non-resource URL; a ServiceAccount with no binding
        // must not get kube-apiserver's /metrics through the gateway's allow-list.)
        let nobody = service_account_token(ns, "nobody")?;
        let (ok, out) = kubectl_with_token(&nobody, &["get", "--raw", "/metrics"])?;
        assert!(
            !ok && out.contains("Forbidden"),
            "kube-apiserver's /metrics: {out}"
        );
        anyhow::Ok(())
    })();
    let _ = kubectl(&[
        "delete",
        "clusterrolebinding.iam.kubesphere.io",
        &format!("{ns}-cviewer"),
    ]);
    result
}

/// Defense in depth: the gateway sends proxied requests as the caller, so kube-apiserver authorizes and
/// audits them as the caller (its SelfSubjectReview answers with the caller, ksiam's marker included).
#[test]
fn proxied_requests_run_as_the_caller() -> anyhow::Result<()> {
    let ns = TestNamespace::create("atk-imp")?;
    let ns = ns.name();
    let token = service_account_token(ns, "whoami")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1
kind: ClusterRole
metadata: {{name: {ns}-whoami}}
rules:
- {{apiGroups: [authentication.k8s.io], resources: [selfsubjectreviews], verbs: [create]}}
---
apiVersion: iam.kubesphere.io/v1beta1
kind: ClusterRoleBinding
metadata: {{name: {ns}-whoami}}
roleRef: {{apiGroup: iam.kubesphere.io, kind: ClusterRole, name: {ns}-whoami}}
subjects:
- {{apiGroup: kubesphere.io, kind: ServiceAccount, name: whoami, namespace: {ns}}}
"
        ),
    )?;
    let body = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let len = body.len().to_string();
    let result = poll(
        "a SelfSubjectReview through the gateway",
        Duration::from_secs(15),
        || {
            let mut tcp = TcpStream::connect(gateway_addr())?;
            tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(
                tcp,
                "POST /apis/authentication.k8s.io/v1/selfsubjectreviews HTTP/1.1\r\nHost: g\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\
             X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n{body}"
            )?;
            let mut out = String::new();
            let _ = tcp.read_to_string(&mut out);
            Ok(out.starts_with("HTTP/1.1 201").then_some(out))
        },
    );
    let _ = kubectl(&[
        "delete",
        "clusterrolebinding.iam.kubesphere.io",
        &format!("{ns}-whoami"),
    ]);
    let _ = kubectl(&["delete", "clusterrole.iam.kubesphere.io", &format!("{ns}-whoami")]);
    let out = result?;
    let user = format!("kubesphere:serviceaccount:{ns}:whoami");
    assert!(out.contains(&format!("\"username\":\"{user}\"")), "{out}");
    assert!(out.contains("ksiam.kubesphere.io/authenticated-by"), "{out}");
    Ok(())
}

/// Hole 12: which member clusters exist is told only to authenticated callers, and an unknown one is 400
/// (ks-apiserver's answer).
#[test]
fn cluster_names_are_told_only_after_authentication() -> anyhow::Result<()> {
    let (status, body) = gateway_request("GET", "/clusters/no-such-cluster/api/v1/pods", None, &[])?;
    assert_eq!(status, 401, "{body}");
    let (status, body) = gateway_request("GET", "/clusters/host-not/api/v1/pods", None, &[])?;
    assert_eq!(status, 401, "{body}");
    let ns = TestNamespace::create("atk-clusters")?;
    let token = service_account_token(ns.name(), "member")?;
    // The gateway's ServiceAccount cache may see the new ServiceAccount a moment after its token exists.
    let (status, body) = poll("the token to authenticate", Duration::from_secs(15), || {
        let (status, body) =
            gateway_request("GET", "/clusters/no-such-cluster/api/v1/pods", Some(&token), &[])?;
        Ok((status != 401).then_some((status, body)))
    })?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cluster no-such-cluster not exists"), "{body}");
    Ok(())
}

/// Hole 7 (the webhooks as policy oracles): kube-apiserver's SubjectAccessReview and TokenReview webhooks
/// answer only kube-apiserver (a client certificate from the cluster CA), not whoever reaches the port.
#[test]
fn kube_apiserver_webhooks_answer_only_kube_apiserver() -> anyhow::Result<()> {
    let url = std::env::var("KSIAM_AUTHZ_WEBHOOKS").expect("KSIAM_AUTHZ_WEBHOOKS: run via `cargo xtask e2e`");
    let ca = std::env::var("KSIAM_GRPC_CA").expect("KSIAM_GRPC_CA: run via `cargo xtask e2e`");
    let pki = PathBuf::from(
        std::env::var("KSIAM_E2E_RUN_DIR").expect("KSIAM_E2E_RUN_DIR: run via `cargo xtask e2e`"),
    )
    .join("pki");
    let sar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"alice","groups":["system:authenticated"],"extra":{"ksiam.kubesphere.io/authenticated-by":["ksiam"]},"resourceAttributes":{"verb":"list","group":"iam.kubesphere.io","resource":"users"}}}"#;
    let tr = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"x.y.z"}}"#;
    let client = (pki.join("webhook-client.crt"), pki.join("webhook-client.key"));
    let curl = |path: &str, body: &str, client: Option<&(PathBuf, PathBuf)>| {
        curl_post(&format!("{url}{path}"), body, ServerTrust::Ca(&ca), client)
    };
    for (path, body) in [("/authorize", sar), ("/authenticate", tr)] {
        let (ok, out) = curl(path, body, None)?;
        assert!(
            !ok && !out.contains("\"status\""),
            "{path} without a client certificate: {out}"
        );
        let (ok, out) = curl(path, body, Some(&client))?;
        assert!(
            ok && out.contains("\"status\""),
            "{path} as kube-apiserver: {out}"
        );
    }
    Ok(())
}

/// The admission webhooks (Pod injection, the validating checks) answer only kube-apiserver too: an
/// AdmissionReview from anyone else would learn token Secret names and admission decisions.
#[test]
fn admission_webhooks_answer_only_kube_apiserver() -> anyhow::Result<()> {
    let pki = PathBuf::from(
        std::env::var("KSIAM_E2E_RUN_DIR").expect("KSIAM_E2E_RUN_DIR: run via `cargo xtask e2e`"),
    )
    .join("pki");
    let url = poll(
        "the registered Pod-injection webhook",
        Duration::from_secs(30),
        || {
            let url = kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                "serviceaccount.kubesphere.io",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.url}",
            ])?;
            Ok((!url.is_empty()).then_some(url))
        },
    )?;
    let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"default","operation":"CREATE","userInfo":{"username":"x"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"kubesphere.io/serviceaccount-name":"sample"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#;
    let client = (pki.join("webhook-client.crt"), pki.join("webhook-client.key"));
    // The server certificate is the webhook's own self-signed one; what is tested is the client side.
    let curl = |client: Option<&(PathBuf, PathBuf)>| curl_post(&url, review, ServerTrust::Any, client);
    let (ok, out) = curl(None)?;
    assert!(
        !ok && !out.contains("\"response\""),
        "without a client certificate: {out}"
    );
    let (ok, out) = curl(Some(&client))?;
    assert!(ok && out.contains("\"uid\":\"u1\""), "as kube-apiserver: {out}");
    Ok(())
}

fn create_secret(ns: &str, name: &str, value: &str) -> anyhow::Result<()> {
    kubectl(&[
        "create",
        "secret",
        "generic",
        name,
        "-n",
        ns,
        &format!("--from-literal=k={value}"),
    ])?;
    Ok(())
}

/// How curl checks the server.
enum ServerTrust<'a> {
    /// Trust this CA file.
    Ca(&'a str),
    /// Do not check (the server's own certificate is not what a test is about).
    Any,
}

/// `curl -d body url` as JSON, with a client certificate and key when given: `(succeeded, output)`.
fn curl_post(
    url: &str,
    body: &str,
    server: ServerTrust<'_>,
    client: Option<&(PathBuf, PathBuf)>,
) -> anyhow::Result<(bool, String)> {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-H", "Content-Type: application/json"]);
    match server {
        ServerTrust::Ca(ca) => cmd.args(["--cacert", ca]),
        ServerTrust::Any => cmd.arg("-k"),
    };
    if let Some((crt, key)) = client {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    let out = cmd.args(["-d", body, url]).output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}
