//! ksiam's gateway beside KubeSphere's own ks-apiserver (`KUBESPHERE_APISERVER`, built from
//! `../shared/peers/kubesphere/src` and started by `cargo xtask e2e`) on the same control plane, with the
//! same JWT secret: the same request with the same token gets the same status and, for errors, the same
//! bytes. `cargo xtask conformance --kubesphere` does this on generated policies; these pin the cases a
//! client is most likely to depend on.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use ksiam_e2e::{TestNamespace, apply, e2e, gateway_addr, kubectl, poll, service_account_token};

fn ks_apiserver_addr() -> String {
    e2e();
    let url = std::env::var("KUBESPHERE_APISERVER")
        .expect("KUBESPHERE_APISERVER is not set: run via `cargo xtask e2e`, which starts ks-apiserver");
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// One HTTP/1.0 request (never a chunked answer); the status and the raw body.
fn request(addr: &str, target: &str, token: &str, user_agent: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "GET {target} HTTP/1.0\r\nHost: ks-apiserver\r\nUser-Agent: {user_agent}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The answers of ksiam's gateway and of ks-apiserver.
fn both(target: &str, token: &str, user_agent: &str) -> anyhow::Result<[(u16, String); 2]> {
    Ok([
        request(&gateway_addr(), target, token, user_agent)?,
        request(&ks_apiserver_addr(), target, token, user_agent)?,
    ])
}

/// A fresh ServiceAccount's token, once both sides authenticate it (their ServiceAccount caches).
fn token_known_to_both(ns: &str, name: &str) -> anyhow::Result<String> {
    let token = service_account_token(ns, name)?;
    poll(
        "both gateways to know the ServiceAccount",
        Duration::from_secs(30),
        || {
            let [ours, theirs] = both(
                "/kapis/tenant.kubesphere.io/v1beta1/clusters",
                &token,
                "Go-http-client/1.1",
            )?;
            Ok((ours.0 != 401 && theirs.0 != 401).then_some(()))
        },
    )?;
    Ok(token)
}

#[test]
fn the_seed_403_and_its_grant_are_the_same_on_both() -> anyhow::Result<()> {
    let ns = TestNamespace::create("ks-parity")?;
    let token = token_known_to_both(ns.name(), "sample")?;
    let clusters = "/kapis/tenant.kubesphere.io/v1beta1/clusters";
    for ua in ["curl/8.5.0", "Go-http-client/1.1"] {
        let [ours, theirs] = both(clusters, &token, ua)?;
        assert_eq!(ours.0, 403, "{}", ours.1);
        assert_eq!(ours, theirs, "User-Agent {ua}: ksiam vs ks-apiserver");
    }
    let binding = format!("{}-platform-admin", ns.name());
    apply(&serde_json::json!({
        "apiVersion": "iam.kubesphere.io/v1beta1",
        "kind": "GlobalRoleBinding",
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "GlobalRole", "name": "platform-admin"},
        "subjects": [{"apiGroup": "kubesphere.io", "kind": "ServiceAccount", "name": "sample", "namespace": ns.name()}],
    }))?;
    let granted = poll("both gateways to allow", Duration::from_secs(30), || {
        let [ours, theirs] = both(clusters, &token, "Go-http-client/1.1")?;
        Ok((ours.0 == 200 && theirs.0 == 200).then_some((ours, theirs)))
    });
    kubectl(&["delete", "globalrolebindings.iam.kubesphere.io", &binding])?;
    let (ours, theirs) = granted?;
    // Success bodies are compared as JSON (ks-apiserver indents its own answers).
    let ours: serde_json::Value = serde_json::from_str(&ours.1)?;
    let theirs: serde_json::Value = serde_json::from_str(&theirs.1)?;
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&ours), names(&theirs));
    assert_eq!(ours["totalItems"], theirs["totalItems"]);
    Ok(())
}

/// A 403 naming an object: `details` in Go's field order (`name`, `group`, `kind`).
#[test]
fn a_403_naming_an_object_is_byte_identical() -> anyhow::Result<()> {
    let ns = TestNamespace::create("ks-parity-name")?;
    let token = token_known_to_both(ns.name(), "nobody")?;
    for target in [
        format!("/api/v1/namespaces/{}/pods/p1", ns.name()),
        format!("/apis/apps/v1/namespaces/{}/deployments/d1/scale", ns.name()),
        "/apis/iam.kubesphere.io/v1beta1/users/admin".to_owned(),
    ] {
        let [ours, theirs] = both(&target, &token, "Go-http-client/1.1")?;
        assert_eq!(ours.0, 403, "{target}: {}", ours.1);
        assert!(ours.1.contains(r#""details":{"name":"#), "{}", ours.1);
        assert_eq!(ours, theirs, "{target}: ksiam vs ks-apiserver");
    }
    Ok(())
}

/// A cluster that does not exist: ks-apiserver's 400 and its raw `ErrStatus` body.
#[test]
fn an_unknown_cluster_is_byte_identical() -> anyhow::Result<()> {
    let ns = TestNamespace::create("ks-parity-cluster")?;
    let token = token_known_to_both(ns.name(), "traveller")?;
    for ua in ["curl/8.5.0", "Go-http-client/1.1"] {
        let [ours, theirs] = both("/clusters/nowhere/api/v1/namespaces/default/pods", &token, ua)?;
        assert_eq!(ours.0, 400, "{}", ours.1);
        assert_eq!(ours, theirs, "User-Agent {ua}: ksiam vs ks-apiserver");
    }
    Ok(())
}
