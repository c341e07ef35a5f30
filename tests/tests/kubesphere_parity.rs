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

// === the listed differences (ARCHITECTURE.md, "Deliberate differences"), pinned against the live peer ===

/// A token signed with the shared JWT secret (`KSIAM_JWT_SECRET_FILE`).
fn signed(claims: &ksiam_token::Claims) -> anyhow::Result<String> {
    let file = std::env::var("KSIAM_JWT_SECRET_FILE")
        .map_err(|_| anyhow::anyhow!("KSIAM_JWT_SECRET_FILE is not set: run via `cargo xtask e2e`"))?;
    let secret = std::fs::read_to_string(file)?;
    let keys = ksiam_token::KeySet::legacy(secret.trim_end().as_bytes());
    Ok(ksiam_token::Issuer::new(keys, ksiam_token::DEFAULT_ISSUER).issue(claims)?)
}

/// `message` of a `Status` body.
fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).map_or_else(
        |_| body.to_owned(),
        |v| v["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn listed_difference_a_deleted_service_accounts_token() -> anyhow::Result<()> {
    let ns = TestNamespace::create("ks-parity-deleted")?;
    let token = token_known_to_both(ns.name(), "gone")?;
    kubectl(&[
        "delete",
        "serviceaccounts.kubesphere.io",
        "gone",
        "-n",
        ns.name(),
        "--wait=true",
    ])?;
    let [ours, theirs] = poll(
        "both gateways to refuse the token",
        Duration::from_secs(30),
        || {
            let answers = both(
                "/kapis/tenant.kubesphere.io/v1beta1/clusters",
                &token,
                "Go-http-client/1.1",
            )?;
            Ok((answers[0].0 == 401 && answers[1].0 == 401).then_some(answers))
        },
    )?;
    assert_eq!(message(&ours.1), "token has been revoked");
    assert_eq!(
        message(&theirs.1),
        r#"ServiceAccount.kubesphere.io "gone" not found"#
    );
    Ok(())
}

#[test]
fn listed_differences_expired_and_future_tokens_are_401_with_other_time_formats() -> anyhow::Result<()> {
    let now = ksiam_token::now_unix();
    let claims = |iat: i64, exp: Option<i64>| ksiam_token::Claims {
        iss: Some(ksiam_token::DEFAULT_ISSUER.into()),
        sub: Some("admin".into()),
        iat: Some(iat),
        exp,
        token_type: Some("static_token".into()),
        username: Some("admin".into()),
        ..Default::default()
    };
    let expired = signed(&claims(now - 3_600, Some(now - 61)))?;
    let [ours, theirs] = both(
        "/kapis/tenant.kubesphere.io/v1beta1/clusters",
        &expired,
        "Go-http-client/1.1",
    )?;
    assert_eq!((ours.0, theirs.0), (401, 401));
    let (ours, theirs) = (message(&ours.1), message(&theirs.1));
    // ksiam: whole seconds (`1m1s`); ks-apiserver: a Go duration to the nanosecond (`1m1.23456789s`).
    let ours = ours.strip_prefix("jwt: token is expired by ").expect(&ours);
    let theirs = theirs.strip_prefix("jwt: token is expired by ").expect(&theirs);
    assert!(
        ours.starts_with("1m") && ours.ends_with('s') && !ours.contains('.'),
        "{ours}"
    );
    assert!(theirs.starts_with("1m") && theirs.contains('.'), "{theirs}");

    let future = signed(&claims(now + 3_600, None))?;
    let [ours, theirs] = both(
        "/kapis/tenant.kubesphere.io/v1beta1/clusters",
        &future,
        "Go-http-client/1.1",
    )?;
    assert_eq!((ours.0, theirs.0), (401, 401));
    let (ours, theirs) = (message(&ours.1), message(&theirs.1));
    assert_eq!(
        ours,
        format!(
            "jwt: token used before issued, iat:{}, now:{}",
            now + 3_600,
            ours_now(&ours)
        )
    );
    assert!(
        theirs.starts_with("jwt: token used before issued, iat:") && theirs.contains(" UTC"),
        "{theirs}"
    );
    Ok(())
}

/// The `now` ksiam printed (seconds since the epoch).
fn ours_now(message: &str) -> String {
    message.rsplit("now:").next().unwrap_or_default().to_owned()
}

#[test]
fn listed_difference_unknown_clusters_are_hidden_from_anonymous_callers() -> anyhow::Result<()> {
    let target = "/clusters/nowhere/api/v1/namespaces/default/pods";
    let ours = request_anonymous(&gateway_addr(), target)?;
    let theirs = request_anonymous(&ks_apiserver_addr(), target)?;
    assert_eq!(ours.0, 401, "{}", ours.1);
    assert_eq!(message(&ours.1), "The request cannot be authenticated.");
    assert_eq!(theirs.0, 400, "{}", theirs.1);
    assert!(theirs.1.contains("cluster nowhere not exists"), "{}", theirs.1);
    Ok(())
}

fn request_anonymous(addr: &str, target: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(tcp, "GET {target} HTTP/1.0\r\nHost: ks-apiserver\r\n\r\n")?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

#[test]
fn listed_differences_of_a_platform_admin() -> anyhow::Result<()> {
    let ns = TestNamespace::create("ks-parity-admin")?;
    let token = token_known_to_both(ns.name(), "admin")?;
    let binding = format!("{}-platform-admin", ns.name());
    apply(&serde_json::json!({
        "apiVersion": "iam.kubesphere.io/v1beta1",
        "kind": "GlobalRoleBinding",
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "GlobalRole", "name": "platform-admin"},
        "subjects": [{"apiGroup": "kubesphere.io", "kind": "ServiceAccount", "name": "admin", "namespace": ns.name()}],
    }))?;
    let checked = (|| -> anyhow::Result<()> {
        let [ours, theirs] = poll("both gateways to allow", Duration::from_secs(30), || {
            let a = both(
                "/kapis/tenant.kubesphere.io/v1beta1/clusters",
                &token,
                "Go-http-client/1.1",
            )?;
            Ok((a[0].0 == 200 && a[1].0 == 200).then_some(a))
        })?;
        // Successful `/kapis` answers: ksiam writes compact JSON without an empty `status`; ks-apiserver
        // indents by one space and writes `"status": {}` for a Cluster without status.
        assert!(
            ours.1.starts_with("{\"items\":[") && !ours.1.contains("\"status\":{}"),
            "{}",
            ours.1
        );
        assert!(
            theirs.1.starts_with("{\n \"items\": [") && theirs.1.contains("\"status\": {}"),
            "{}",
            theirs.1
        );

        // A `/kapis` API only KubeSphere serves: ks-apiserver answers it, ksiam forwards it to
        // kube-apiserver, which has no such path.
        let [ours, theirs] = both(
            "/kapis/iam.kubesphere.io/v1beta1/users",
            &token,
            "Go-http-client/1.1",
        )?;
        assert_eq!(
            (ours.0, theirs.0),
            (404, 200),
            "ksiam: {}\nks-apiserver: {}",
            ours.1,
            theirs.1
        );

        // `/clusters/<c>/api/v1` with nothing after the version: ks-apiserver's request-info resolver
        // panics (the connection closes without an answer); ksiam answers.
        let [ours, theirs] = both("/clusters/host/api/v1", &token, "Go-http-client/1.1")?;
        assert_ne!(ours.0, 0, "ksiam answers");
        assert_eq!(theirs.0, 0, "ks-apiserver answered: {}", theirs.1);
        Ok(())
    })();
    kubectl(&["delete", "globalrolebindings.iam.kubesphere.io", &binding])?;
    checked
}

/// The tenant lists count a binding only when it is labelled `iam.kubesphere.io/user-ref=<user>` (KubeSphere
/// selects bindings by that label before it looks at subjects); found by `cargo xtask conformance
/// --kubesphere`.
#[test]
fn tenant_lists_count_only_bindings_labelled_with_the_user() -> anyhow::Result<()> {
    let suffix = ksiam_e2e::random_suffix();
    let (user, ws) = (format!("member-{suffix}"), format!("ws-{suffix}"));
    let ns = TestNamespace::create("ks-parity-member")?;
    let iam = "iam.kubesphere.io/v1beta1";
    apply(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": iam, "kind": "User", "metadata": {"name": user}, "spec": {"email": format!("{user}@example.com")}},
        {"apiVersion": "tenant.kubesphere.io/v1beta1", "kind": "WorkspaceTemplate", "metadata": {"name": ws},
         "spec": {"template": {"spec": {}}}},
        {"apiVersion": "tenant.kubesphere.io/v1beta1", "kind": "Workspace", "metadata": {"name": ws}, "spec": {}},
        {"apiVersion": iam, "kind": "WorkspaceRole", "metadata": {"name": format!("{ws}-viewer-x"),
         "labels": {"kubesphere.io/workspace": ws}},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        {"apiVersion": iam, "kind": "WorkspaceRoleBinding", "metadata": {"name": format!("{ws}-{user}"),
         "labels": {"kubesphere.io/workspace": ws}},
         "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "WorkspaceRole", "name": format!("{ws}-viewer-x")},
         "subjects": [{"apiGroup": "iam.kubesphere.io", "kind": "User", "name": user}]},
        {"apiVersion": iam, "kind": "RoleBinding", "metadata": {"name": format!("{user}-view"), "namespace": ns.name()},
         "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "Role", "name": "viewer"},
         "subjects": [{"apiGroup": "iam.kubesphere.io", "kind": "User", "name": user}]},
    ]}))?;
    let token = signed(&ksiam_token::Claims {
        iss: Some(ksiam_token::DEFAULT_ISSUER.into()),
        sub: Some(user.clone()),
        iat: Some(ksiam_token::now_unix()),
        token_type: Some("static_token".into()),
        username: Some(user.clone()),
        ..Default::default()
    })?;
    let lists = || -> anyhow::Result<Vec<(u16, Vec<String>)>> {
        let mut out = Vec::new();
        for path in ["workspaces", "namespaces"] {
            for (status, body) in both(
                &format!("/kapis/tenant.kubesphere.io/v1beta1/{path}"),
                &token,
                "Go-http-client/1.1",
            )? {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let names = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
                    .collect();
                out.push((status, names));
            }
        }
        Ok(out)
    };
    let result = (|| -> anyhow::Result<()> {
        // Unlabelled bindings: the user is in no workspace and no namespace on either side.
        let unlabelled = poll("both gateways to know the user", Duration::from_secs(30), || {
            let l = lists()?;
            Ok(l.iter().all(|(s, _)| *s == 200).then_some(l))
        })?;
        for (_, names) in &unlabelled {
            assert!(
                !names.contains(&ws) && !names.iter().any(|n| n == ns.name()),
                "{unlabelled:?}"
            );
        }
        kubectl(&[
            "label",
            "workspacerolebindings.iam.kubesphere.io",
            &format!("{ws}-{user}"),
            &format!("iam.kubesphere.io/user-ref={user}"),
        ])?;
        kubectl(&[
            "label",
            "rolebindings.iam.kubesphere.io",
            &format!("{user}-view"),
            "-n",
            ns.name(),
            &format!("iam.kubesphere.io/user-ref={user}"),
        ])?;
        let labelled = poll(
            "both gateways to list the memberships",
            Duration::from_secs(30),
            || {
                let l = lists()?;
                Ok(l.iter()
                    .all(|(s, names)| *s == 200 && !names.is_empty())
                    .then_some(l))
            },
        )?;
        assert_eq!(labelled[0], labelled[1], "workspaces: ksiam vs ks-apiserver");
        assert_eq!(labelled[2], labelled[3], "namespaces: ksiam vs ks-apiserver");
        assert!(labelled[0].1.contains(&ws), "{labelled:?}");
        assert!(labelled[2].1.iter().any(|n| n == ns.name()), "{labelled:?}");
        Ok(())
    })();
    for (kind, name) in [
        ("workspacerolebindings.iam.kubesphere.io", format!("{ws}-{user}")),
        ("workspaceroles.iam.kubesphere.io", format!("{ws}-viewer-x")),
        ("workspaces.tenant.kubesphere.io", ws.clone()),
        ("workspacetemplates.tenant.kubesphere.io", ws.clone()),
        ("users.iam.kubesphere.io", user.clone()),
    ] {
        kubectl(&["delete", kind, &name, "--ignore-not-found"])?;
    }
    result
}
