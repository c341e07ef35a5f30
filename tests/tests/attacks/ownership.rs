//! Ownership: whose token a Secret may hold, which Secrets the controller may write, what a workspace
//! manager change grants, and that `ksiam authz` on its own applies revocation.
//!
//! - `ownership_revocation_is_keyed_by_owner`: a revoked token re-stored in a token Secret of another namespace (even
//!   one annotated for a ServiceAccount of the same name there), or in its own namespace annotated for another
//!   ServiceAccount, stays revoked.
//! - `ownership_a_service_account_cannot_claim_another_token_secret`: `secrets[0]` naming another
//!   ServiceAccount's token Secret (with the TTL annotation that makes the controller write tokens) never gets
//!   that Secret written; a Secret of another type carrying the ServiceAccount's UID label is not deleted.
//! - `ownership_a_workspace_manager_change_grants_nothing`: any User may patch WorkspaceTemplates (GlobalRole
//!   `authenticated`); making oneself `system-workspace`'s manager must not bind one as its admin.
//! - `ownership_ksiam_authz_alone_refuses_revoked_tokens`: the standalone authorizer's TokenReview applies
//!   revocation like `ksiam all`.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use ksiam_e2e::{
    TestNamespace, e2e, gateway_addr, get_json, kubectl, kubectl_with_stdin, kubectl_with_token, poll,
    secret_names, secret_token, token_secret_name,
};

/// A path every authenticated KubeSphere ServiceAccount without roles gets 403 for (401 when not authenticated).
const PROBE: &str = "/kapis/tenant.kubesphere.io/v1beta1/clusters";

/// The status of a GET of `target` through the gateway with `token`.
fn gateway_status(target: &str, token: &str) -> anyhow::Result<u16> {
    let mut tcp = TcpStream::connect(gateway_addr())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "GET {target} HTTP/1.1\r\nHost: ks-apiserver\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
}

/// Asserts that `token` gets `want` from the gateway on every try for `for_how_long`.
fn stays(what: &str, token: &str, want: u16, for_how_long: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < for_how_long {
        let got = gateway_status(PROBE, token)?;
        anyhow::ensure!(got == want, "{what}: the gateway answered {got}, want {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn create_sa(ns: &str, name: &str) -> anyhow::Result<()> {
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
        ),
    )?;
    Ok(())
}

/// A hand-made token Secret `ns/name` annotated for `sa`, holding `token`.
fn store_token(ns: &str, name: &str, sa: &str, token: &str) -> anyhow::Result<()> {
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {"kubesphere.io/service-account.name": sa},
        },
        "type": "kubesphere.io/service-account-token",
        "stringData": {"token": token},
    });
    kubectl_with_stdin(&["apply", "-f", "-"], &secret.to_string())?;
    Ok(())
}

/// A live token of a fresh ServiceAccount `ns/name`, once the gateway accepts it (403: authenticated, no roles).
fn live_token(ns: &str, name: &str) -> anyhow::Result<(String, String)> {
    create_sa(ns, name)?;
    let secret = token_secret_name(ns, name)?;
    let token = secret_token(ns, &secret)?;
    poll(
        &format!("the token of {ns}/{name} to authenticate"),
        Duration::from_secs(30),
        || Ok((gateway_status(PROBE, &token)? == 403).then_some(())),
    )?;
    Ok((secret, token))
}

#[test]
fn ownership_revocation_is_keyed_by_owner() -> anyhow::Result<()> {
    let home = TestNamespace::create("atk-revive")?;
    let elsewhere = TestNamespace::create("atk-revive-b")?;
    let (home, elsewhere) = (home.name(), elsewhere.name());
    let (secret, token) = live_token(home, "bot")?;

    // Revoke: delete its Secret.
    kubectl(&["delete", "secret", &secret, "-n", home])?;
    poll(
        "the deleted Secret's token to be refused",
        Duration::from_secs(10),
        || Ok((gateway_status(PROBE, &token)? == 401).then_some(())),
    )?;

    // Re-stored in another namespace, annotated for a ServiceAccount of the same name that exists there.
    create_sa(elsewhere, "bot")?;
    token_secret_name(elsewhere, "bot")?;
    store_token(elsewhere, "revived", "bot", &token)?;
    // Re-stored in its own namespace, annotated for another (existing) ServiceAccount.
    create_sa(home, "other")?;
    token_secret_name(home, "other")?;
    store_token(home, "revived-other", "other", &token)?;
    // Both Secrets really hold the token (the filler leaves a Secret with a token alone).
    for (ns, name) in [(elsewhere, "revived"), (home, "revived-other")] {
        assert_eq!(secret_token(ns, name)?, token, "{ns}/{name}");
    }
    stays(
        "a revoked token re-stored elsewhere",
        &token,
        401,
        Duration::from_secs(4),
    )?;

    // The control: the same token in a token Secret of its own ServiceAccount would be live.
    store_token(home, "own-again", "bot", &token)?;
    poll(
        "the token to be live in its owner's Secret",
        Duration::from_secs(10),
        || Ok((gateway_status(PROBE, &token)? == 403).then_some(())),
    )?;
    Ok(())
}

#[test]
fn ownership_a_service_account_cannot_claim_another_token_secret() -> anyhow::Result<()> {
    let ns = TestNamespace::create("atk-claim")?;
    let ns = ns.name();
    let (victim_secret, victim_token) = live_token(ns, "victim")?;

    // The thief names the victim's Secret first and asks for expiring tokens (which the controller rotates in
    // place: the write the attack is after).
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: thief\n  namespace: {ns}\n  \
             annotations:\n    ksiam.kubesphere.io/token-ttl-seconds: '60'\nsecrets:\n- name: {victim_secret}\n"
        ),
    )?;
    // The thief gets a token Secret of its own, first; the victim's entry stays, untouched.
    let own = poll("the thief's own token Secret", Duration::from_secs(30), || {
        let sa = get_json(&["serviceaccounts.kubesphere.io", "thief", "-n", ns])?;
        let names = secret_names(&sa);
        Ok(names.first().filter(|n| **n != victim_secret).map(|n| {
            (
                n.to_string(),
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        }))
    })?;
    let (own, names) = own;
    assert_eq!(names, [own.clone(), victim_secret.clone()]);
    let thief_token = secret_token(ns, &own)?;
    let claims = ksiam_token::decode_unverified(&thief_token)?.1;
    assert!(
        claims.contains(&format!("kubesphere:serviceaccount:{ns}:thief")),
        "{claims}"
    );

    // A Secret of another type carrying the thief's UID label.
    let uid = kubectl(&[
        "get",
        "serviceaccounts.kubesphere.io",
        "thief",
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    let decoy = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "decoy",
            "namespace": ns,
            "labels": {"ksiam.kubesphere.io/service-account-uid": uid.trim()},
            "annotations": {"kubesphere.io/service-account.name": "thief"},
        },
        "type": "Opaque",
        "stringData": {"keep": "me"},
    });
    kubectl_with_stdin(&["apply", "-f", "-"], &decoy.to_string())?;

    // Several reconciles (each annotation change is one).
    for i in 0..4 {
        kubectl(&[
            "annotate",
            "--overwrite",
            "serviceaccounts.kubesphere.io",
            "thief",
            "-n",
            ns,
            &format!("e2e/poke={i}"),
        ])?;
        std::thread::sleep(Duration::from_millis(750));
        assert_eq!(
            secret_token(ns, &victim_secret)?,
            victim_token,
            "the victim's Secret was written (reconcile {i})"
        );
    }
    kubectl(&["get", "secret", "decoy", "-n", ns]).map_err(|e| {
        anyhow::anyhow!("a Secret of another type with the thief's UID label was deleted: {e:#}")
    })?;
    // The victim's token still works.
    assert_eq!(gateway_status(PROBE, &victim_token)?, 403);
    Ok(())
}

/// Restores `system-workspace`'s manager (and deletes the User) when dropped.
struct Restore {
    manager: Option<String>,
    user: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let patch = serde_json::json!({"spec": {"template": {"spec": {"manager": self.manager}}}});
        let _ = kubectl(&[
            "patch",
            "workspacetemplates.tenant.kubesphere.io",
            "system-workspace",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
        let _ = kubectl(&[
            "delete",
            "users.iam.kubesphere.io",
            &self.user,
            "--ignore-not-found",
        ]);
    }
}

/// The HS256 key of the running ksiam (`KSIAM_JWT_SECRET_FILE`, one trailing newline dropped).
fn jwt_keys() -> anyhow::Result<ksiam_token::KeySet> {
    e2e();
    let file = std::env::var("KSIAM_JWT_SECRET_FILE")
        .map_err(|_| anyhow::anyhow!("KSIAM_JWT_SECRET_FILE is not set: run via `cargo xtask e2e`"))?;
    let mut key = std::fs::read(&file)?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    Ok(ksiam_token::KeySet::legacy(&key))
}

#[test]
fn ownership_a_workspace_manager_change_grants_nothing() -> anyhow::Result<()> {
    // A plain KubeSphere User (group system:authenticated, so the built-in GlobalRole `authenticated`, which
    // may patch WorkspaceTemplates). A ServiceAccount's user name cannot be a manager: `:` is not allowed in
    // the binding's user-ref label.
    let user = format!("mallory-{}", ksiam_e2e::random_suffix());
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1\nkind: User\nmetadata:\n  name: {user}\nspec:\n  email: {user}@example.com\n"
        ),
    )?;
    let token =
        ksiam_token::Issuer::new(jwt_keys()?, ksiam_token::DEFAULT_ISSUER).issue(&ksiam_token::Claims {
            iss: Some(ksiam_token::DEFAULT_ISSUER.into()),
            sub: Some(user.clone()),
            iat: Some(ksiam_token::now_unix()),
            token_type: Some("access_token".into()),
            username: Some(user.clone()),
            ..Default::default()
        })?;
    poll(
        "the User's token to authenticate",
        Duration::from_secs(30),
        || Ok((gateway_status("/api/v1/namespaces/kube-system/secrets", &token)? == 403).then_some(())),
    )?;
    let before = get_json(&["workspacetemplates.tenant.kubesphere.io", "system-workspace"])?;
    let restore = Restore {
        manager: before["spec"]["template"]["spec"]["manager"]
            .as_str()
            .map(str::to_owned),
        user: user.clone(),
    };
    let secrets = "/api/v1/namespaces/kube-system/secrets";
    assert_eq!(
        gateway_status(secrets, &token)?,
        403,
        "mallory starts without access"
    );

    // The patch through kube-apiserver (authorized by ksiam's SubjectAccessReview webhook); a server-side apply,
    // because `kubectl patch` reads the object first and `authenticated` may not get WorkspaceTemplates.
    let patch = serde_json::json!({
        "apiVersion": "tenant.kubesphere.io/v1beta1",
        "kind": "WorkspaceTemplate",
        "metadata": {"name": "system-workspace"},
        "spec": {"template": {"spec": {"manager": user}}},
    })
    .to_string();
    let dir = std::env::temp_dir().join(format!("ksiam-e2e-manager-{}", ksiam_e2e::random_suffix()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("patch.json");
    std::fs::write(&file, &patch)?;
    let file = file.display().to_string();
    let (patched, out) = poll("the manager patch to be decided", Duration::from_secs(30), || {
        let (ok, out) = kubectl_with_token(
            &token,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=mallory",
                "-f",
                &file,
            ],
        )?;
        // Not authorized yet (the User travels to the caches): try again.
        Ok((ok || !out.contains("cannot patch resource")).then_some((ok, out)))
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    // Authorization lets the patch through (the hole's precondition); an admission check may refuse it.
    assert!(
        patched || out.contains("denied the request"),
        "the manager patch failed for another reason: {out}"
    );
    if patched {
        let now = get_json(&["workspacetemplates.tenant.kubesphere.io", "system-workspace"])?;
        assert_eq!(now["spec"]["template"]["spec"]["manager"], user.as_str());
    }
    eprintln!("manager patch by mallory: succeeded={patched}: {}", out.trim());

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let bindings = get_json(&["workspacerolebindings.iam.kubesphere.io"])?;
        let granted: Vec<&str> = bindings["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| {
                b["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["name"] == user.as_str())
            })
            .filter_map(|b| b["metadata"]["name"].as_str())
            .collect();
        assert!(granted.is_empty(), "bound by the manager patch: {granted:?}");
        let status = gateway_status(secrets, &token)?;
        assert_eq!(status, 403, "mallory reads kube-system's Secrets");
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(restore);
    Ok(())
}

/// A free local port.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Stops the process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// POSTs a TokenReview for `token` to `addr`'s `/authenticate`: `(authenticated, error)`.
fn token_review(addr: &str, token: &str) -> anyhow::Result<(bool, String)> {
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    })
    .to_string();
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "POST /authenticate HTTP/1.1\r\nHost: ksiam\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    let review: serde_json::Value = serde_json::from_str(body.trim())
        .map_err(|e| anyhow::anyhow!("TokenReview answer is not JSON ({e}): {head}"))?;
    Ok((
        review["status"]["authenticated"] == true,
        review["status"]["error"].as_str().unwrap_or_default().to_owned(),
    ))
}

#[test]
fn ownership_ksiam_authz_alone_refuses_revoked_tokens() -> anyhow::Result<()> {
    e2e();
    let bin = std::env::var("KSIAM_BIN")
        .map_err(|_| anyhow::anyhow!("KSIAM_BIN is not set: run via `cargo xtask e2e`"))?;
    let secret_file = std::env::var("KSIAM_JWT_SECRET_FILE")
        .map_err(|_| anyhow::anyhow!("KSIAM_JWT_SECRET_FILE is not set: run via `cargo xtask e2e`"))?;
    let ns = TestNamespace::create("atk-authz")?;
    let ns = ns.name();
    let (secret, token) = live_token(ns, "bot")?;

    let webhooks = format!("127.0.0.1:{}", free_port()?);
    let grpc = format!("127.0.0.1:{}", free_port()?);
    let log = std::env::temp_dir().join(format!("ksiam-e2e-authz-{}.log", ksiam_e2e::random_suffix()));
    let mut authz = Child(
        std::process::Command::new(&bin)
            .args([
                "authz",
                "--authz-grpc-listen",
                &grpc,
                "--authz-webhook-listen",
                &webhooks,
            ])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--jwt-secret-file")
            .arg(&secret_file)
            .env("KUBECONFIG", &e2e().kubeconfig)
            // Plaintext gRPC on loopback, where builds ask for it explicitly (ignored where they do not).
            .env("KSIAM_GRPC_INSECURE_LOOPBACK", "true")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    // Once synced, the live token authenticates.
    let started = poll(
        "ksiam authz to authenticate the live token",
        Duration::from_secs(30),
        || {
            if let Some(status) = authz.0.try_wait()? {
                return Ok(Some(Err(anyhow::anyhow!(
                    "ksiam authz exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ))));
            }
            Ok(token_review(&webhooks, &token)?.0.then_some(Ok(())))
        },
    );
    let _ = std::fs::remove_file(&log);
    started??;
    // Revoked: its Secret deleted.
    kubectl(&["delete", "secret", &secret, "-n", ns])?;
    let error = poll(
        "ksiam authz to refuse the revoked token",
        Duration::from_secs(10),
        || {
            let (authenticated, error) = token_review(&webhooks, &token)?;
            Ok((!authenticated).then_some(error))
        },
    )?;
    assert_eq!(error, "token has been revoked");
    // And a token of a ServiceAccount that does not exist (signed with the right key) is refused too.
    let mut key = std::fs::read(&secret_file)?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    let secret = ksiam_token::KeySet::legacy(&key);
    let ghost = ksiam_token::Issuer::new(secret, ksiam_token::DEFAULT_ISSUER).issue_sa_token(
        ns,
        "ghost",
        ksiam_token::now_unix(),
        None,
    )?;
    store_token(ns, "ghost-token", "ghost", &ghost)?;
    std::thread::sleep(Duration::from_secs(1));
    let (authenticated, error) = token_review(&webhooks, &ghost)?;
    assert!(!authenticated, "a token of a missing ServiceAccount");
    assert_eq!(error, r#"ServiceAccount.kubesphere.io "ghost" not found"#);
    Ok(())
}
