//! The whole seed walkthrough (`../shared/seed/kubesphere-serviceaccount.md`), in order, as one test against
//! the real API server and the gateway (`KSIAM_GATEWAY`): 1.1 ServiceAccount → 1.2 Pod with the mounted
//! token → 1.3 the API answers 403 (curl-like client and the SDK example program) → 1.4 each binding,
//! then revocation of the token by deleting its Secret.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use ksiam_e2e::{
    SEED_CLUSTER_ROLE_BINDING, SEED_GLOBAL_ROLE_BINDING, SEED_POD, SEED_ROLE_AND_BINDING,
    SEED_SERVICE_ACCOUNT, SEED_WORKSPACE_ROLE_BINDING, e2e, get_json, kubectl, kubectl_with_stdin, poll,
    secret_token, token_secret_name,
};

/// The 403 of seed §1.3, as printed there.
const SEED_403: &str = r#"{
  "kind": "Status",
  "apiVersion": "v1",
  "metadata": {},
  "status": "Failure",
  "message": "clusters.tenant.kubesphere.io is forbidden: User \"kubesphere:serviceaccount:default:sample\" cannot list resource \"clusters\" in API group \"tenant.kubesphere.io\" at the cluster scope",
  "reason": "Forbidden",
  "details": {
    "group": "tenant.kubesphere.io",
    "kind": "clusters"
  },
  "code": 403
}"#;

const CLUSTERS: &str = "/kapis/tenant.kubesphere.io/v1beta1/clusters";

fn gateway() -> String {
    e2e();
    std::env::var("KSIAM_GATEWAY")
        .expect("KSIAM_GATEWAY is not set: run via `cargo xtask e2e`")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// `curl --location "$KSIAM_GATEWAY$path" --header 'Accept: application/json, text/plain, */*'
/// --header "Authorization: Bearer $token"`: the status and the body.
fn curl(path: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = std::net::TcpStream::connect(gateway())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.0\r\nHost: ks-apiserver.kubesphere-system\r\nUser-Agent: curl/8.5.0\r\n\
         Accept: application/json, text/plain, */*\r\nAuthorization: Bearer {token}\r\n\r\n"
    )?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)?;
    let text = String::from_utf8(out)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn without_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// `token=$(kubectl get secrets $(kubectl get serviceaccounts.kubesphere.io sample -n default -o
/// jsonpath={.secrets[].name}) -n default -o jsonpath={.data.token} | base64 -d)`
fn sample_token() -> anyhow::Result<(String, String)> {
    let secret = token_secret_name("default", "sample")?;
    let token = secret_token("default", &secret)?;
    Ok((secret, token))
}

/// Runs the SDK's `list_clusters` example (the seed's Go program in Rust) against the gateway.
fn sdk_example(token: &str) -> anyhow::Result<String> {
    let bin = std::env::var("KSIAM_SDK_EXAMPLE")
        .map_err(|_| anyhow::anyhow!("KSIAM_SDK_EXAMPLE is not set: run via `cargo xtask e2e`"))?;
    let dir = std::env::temp_dir().join(format!("ksiam-e2e-sdk-{}", ksiam_e2e::random_suffix()));
    std::fs::create_dir_all(&dir)?;
    let token_file = dir.join("token");
    std::fs::write(&token_file, token)?;
    let out = std::process::Command::new(bin)
        .env("KUBESPHERE_HOST", format!("http://{}", gateway()))
        .env("KUBESPHERE_TOKEN_FILE", &token_file)
        .output()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Polls the gateway until `path` answers `status`.
fn until_status(path: &str, token: &str, status: u16) -> anyhow::Result<String> {
    poll(
        &format!("GET {path} to answer {status}"),
        Duration::from_secs(20),
        || {
            let (got, body) = curl(path, token)?;
            Ok((got == status).then_some(body))
        },
    )
}

fn delete(kind: &str, name: &str, ns: Option<&str>) -> anyhow::Result<()> {
    let mut args = vec!["delete", kind, name, "--ignore-not-found"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    kubectl(&args)?;
    Ok(())
}

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = delete("globalrolebinding", "sample-platform-admin", None);
        let _ = delete(
            "clusterrolebinding.iam.kubesphere.io",
            "sample-cluster-admin",
            None,
        );
        let _ = delete("rolebinding.iam.kubesphere.io", "sample-admin", Some("default"));
        let _ = delete("workspacerolebinding", "sample-admin", None);
        let _ = delete("pod", "sample-pod", Some("default"));
    }
}

#[test]
fn the_seed_walkthrough_end_to_end() -> anyhow::Result<()> {
    let _cleanup = Cleanup;
    // 1.1 Create a ServiceAccount.
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_SERVICE_ACCOUNT)?;
    let (secret, token) = sample_token()?;
    assert!(secret.starts_with("sample-"), "{secret}");

    // 1.2 A Pod annotated with the ServiceAccount gets the token mounted.
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_POD)?;
    let pod = get_json(&["pod", "sample-pod", "-n", "default"])?;
    let mount = &pod["spec"]["containers"][0]["volumeMounts"];
    assert!(
        mount.as_array().is_some_and(|m| m.iter().any(|m| {
            m["mountPath"] == "/var/run/secrets/kubesphere.io/serviceaccount" && m["readOnly"] == true
        })),
        "{mount}"
    );

    // 1.3 The API answers, with the seed's 403.
    let body = until_status(CLUSTERS, &token, 403)?;
    assert_eq!(without_whitespace(&body), without_whitespace(SEED_403), "{body}");
    let sdk = sdk_example(&token)?;
    assert!(
        sdk.contains(r#"clusters.tenant.kubesphere.io is forbidden: User "kubesphere:serviceaccount:default:sample" cannot list resource "clusters" in API group "tenant.kubesphere.io" at the cluster scope"#),
        "SDK example output: {sdk}"
    );

    // 1.4 GlobalRole: the same call lists clusters.
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_GLOBAL_ROLE_BINDING)?;
    let body = until_status(CLUSTERS, &token, 200)?;
    let list: serde_json::Value = serde_json::from_str(&body)?;
    assert!(
        list["items"].is_array() && list["totalItems"].is_number(),
        "{body}"
    );
    assert!(
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["metadata"]["name"] == "host"),
        "the host cluster is listed: {body}"
    );
    let sdk = sdk_example(&token)?;
    assert!(
        sdk.contains("\"totalItems\"") && sdk.contains("\"host\""),
        "SDK example output after the binding: {sdk}"
    );
    delete("globalrolebinding", "sample-platform-admin", None)?;
    until_status(CLUSTERS, &token, 403)?;

    // ClusterRole: Global-scope requests stay forbidden, cluster-scoped ones are allowed.
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_CLUSTER_ROLE_BINDING)?;
    until_status("/api/v1/nodes", &token, 200)?;
    let (status, body) = curl(CLUSTERS, &token)?;
    assert_eq!(status, 403, "cluster-admin does not reach Global scope: {body}");
    delete(
        "clusterrolebinding.iam.kubesphere.io",
        "sample-cluster-admin",
        None,
    )?;
    until_status("/api/v1/nodes", &token, 403)?;

    // Role: pods in default, not in kube-system.
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_ROLE_AND_BINDING)?;
    let body = until_status("/api/v1/namespaces/default/pods", &token, 200)?;
    assert!(body.contains("sample-pod"), "{body}");
    let (status, body) = curl("/api/v1/namespaces/kube-system/pods", &token)?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(r#"pods is forbidden: User \"kubesphere:serviceaccount:default:sample\" cannot list resource \"pods\" in API group \"\" in the namespace \"kube-system\""#),
        "{body}"
    );
    delete("rolebinding.iam.kubesphere.io", "sample-admin", Some("default"))?;
    until_status("/api/v1/namespaces/default/pods", &token, 403)?;

    // WorkspaceRole: namespaces of system-workspace are reachable.
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_WORKSPACE_ROLE_BINDING)?;
    until_status("/api/v1/namespaces/kube-system/pods", &token, 200)?;
    until_status("/api/v1/namespaces/default/pods", &token, 200)?;
    let (status, _) = curl("/api/v1/nodes", &token)?;
    assert_eq!(
        status, 403,
        "the workspace binding grants nothing at cluster scope"
    );

    // Beyond KubeSphere: deleting the token Secret revokes the token; a new Secret with a new token appears.
    kubectl(&["delete", "secret", &secret, "-n", "default", "--wait=false"])?;
    let deleted = Instant::now();
    let body = loop {
        let (status, body) = curl("/api/v1/namespaces/default/pods", &token)?;
        if status == 401 {
            break body;
        }
        anyhow::ensure!(
            deleted.elapsed() < Duration::from_secs(10),
            "the revoked token still works: {status}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "token refused {:?} after `kubectl delete secret` returned",
        deleted.elapsed()
    );
    assert!(body.contains(r#""message": "token has been revoked""#), "{body}");
    let (fresh_secret, fresh) = poll("a new token Secret", Duration::from_secs(30), || {
        let (name, token) = sample_token()?;
        Ok((name != secret).then_some((name, token)))
    })?;
    assert_ne!(fresh, token);
    assert!(fresh_secret.starts_with("sample-"));
    until_status("/api/v1/namespaces/default/pods", &fresh, 200)?;
    Ok(())
}
