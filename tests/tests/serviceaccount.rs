//! Seed §1.1 word for word, and the ServiceAccount controller's lifecycle on the real API server.

use std::time::Duration;

use ksiam_e2e::{
    SEED_SERVICE_ACCOUNT, TestNamespace, get_json, kubectl, kubectl_with_stdin, poll, secret_names,
    secret_token, token_secret_name,
};

/// The generateName alphabet of the API server.
fn is_generated_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 5 && rest.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
    })
}

fn verifier() -> anyhow::Result<ksiam_token::Verifier> {
    let path = std::env::var("KSIAM_JWT_SECRET_FILE")
        .map_err(|_| anyhow::anyhow!("KSIAM_JWT_SECRET_FILE is not set: run via `cargo xtask e2e`"))?;
    let secret = std::fs::read_to_string(path)?;
    Ok(ksiam_token::Verifier::new(ksiam_token::KeySet::legacy(
        secret.trim_end_matches('\n').as_bytes(),
    )))
}

#[test]
fn seed_1_1_create_a_service_account() -> anyhow::Result<()> {
    kubectl_with_stdin(&["apply", "-f", "-"], SEED_SERVICE_ACCOUNT)?;

    let table = kubectl(&["get", "serviceaccounts.kubesphere.io", "-n", "default"])?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE"], "{table}");
    assert!(
        lines.any(|l| l.split_whitespace().next() == Some("sample")),
        "{table}"
    );

    let secret = token_secret_name("default", "sample")?;
    assert!(is_generated_name(&secret, "sample-"), "{secret}");

    let table = poll("the secret to have its token", Duration::from_secs(30), || {
        let t = kubectl(&["get", "secrets", &secret, "-n", "default"])?;
        Ok(t.contains(" 1 ").then_some(t))
    })?;
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..3],
        [secret.as_str(), "kubesphere.io/service-account-token", "1"],
        "{table}"
    );
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"]);

    let token = secret_token("default", &secret)?;
    let (header, claims) = ksiam_token::decode_unverified(&token)?;
    assert_eq!(header, r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims: serde_json::Value = serde_json::from_str(&claims)?;
    assert_eq!(claims["iss"], "http://ks-console.kubesphere-system.svc:30880");
    assert_eq!(claims["sub"], "kubesphere:serviceaccount:default:sample");
    assert_eq!(claims["username"], "kubesphere:serviceaccount:default:sample");
    assert_eq!(claims["token_type"], "static_token");
    assert!(claims["iat"].is_i64());
    assert!(claims.get("exp").is_none());
    let user = verifier()?.verify(&token)?;
    assert_eq!(user.username, "kubesphere:serviceaccount:default:sample");

    // The secret is KubeSphere's shape: annotation, no owner references, only `token`.
    let s = get_json(&["secret", &secret, "-n", "default"])?;
    assert_eq!(
        s["metadata"]["annotations"]["kubesphere.io/service-account.name"],
        "sample"
    );
    assert!(s["metadata"].get("ownerReferences").is_none());
    assert_eq!(s["data"].as_object().map(|d| d.len()), Some(1));
    let sa = get_json(&["serviceaccounts.kubesphere.io", "sample", "-n", "default"])?;
    assert_eq!(
        sa["secrets"],
        serde_json::json!([{"name": secret, "namespace": "default"}])
    );
    assert_eq!(
        sa["metadata"]["finalizers"],
        serde_json::json!(["finalizers.kubesphere.io/serviceaccount"])
    );
    // Both were written by server-side apply under the controller's field manager.
    let sa = get_json(&[
        "serviceaccounts.kubesphere.io",
        "sample",
        "-n",
        "default",
        "--show-managed-fields",
    ])?;
    let applied = sa["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["manager"] == "ksiam-controller" && m["operation"] == "Apply")
        .ok_or_else(|| anyhow::anyhow!("no Apply entry of ksiam-controller: {sa}"))?;
    assert!(applied["fieldsV1"].get("f:secrets").is_some(), "{applied}");
    assert!(
        applied["fieldsV1"]["f:metadata"].get("f:finalizers").is_some(),
        "{applied}"
    );
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

fn token_secrets(ns: &str) -> anyhow::Result<Vec<String>> {
    let list = get_json(&[
        "secrets",
        "-n",
        ns,
        "--field-selector",
        "type=kubesphere.io/service-account-token",
    ])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn a_deleted_token_secret_is_recreated_with_a_new_token() -> anyhow::Result<()> {
    let ns = TestNamespace::create("sa-recreate")?;
    create_sa(ns.name(), "app")?;
    let first = token_secret_name(ns.name(), "app")?;
    let old_token = secret_token(ns.name(), &first)?;
    kubectl(&["delete", "secret", &first, "-n", ns.name()])?;
    let second = poll("a new token secret", Duration::from_secs(30), || {
        let n = token_secret_name(ns.name(), "app")?;
        Ok((n != first).then_some(n))
    })?;
    assert!(is_generated_name(&second, "app-"), "{second}");
    let new_token = secret_token(ns.name(), &second)?;
    assert_ne!(old_token, new_token);
    assert_eq!(token_secrets(ns.name())?, [second]);
    Ok(())
}

/// `(type, reason, note)` of the events about ServiceAccount `sa` reported by the controller.
fn controller_events(ns: &str, sa: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let list = get_json(&["events.events.k8s.io", "-n", ns])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["regarding"]["kind"] == "ServiceAccount"
                && e["regarding"]["apiVersion"] == "kubesphere.io/v1alpha1"
                && e["regarding"]["name"] == sa
                && e["reportingController"] == "ks-serviceaccount"
        })
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("type"), text("reason"), text("note"))
        })
        .collect())
}

#[test]
fn events_report_the_created_secret_and_invalid_entries() -> anyhow::Result<()> {
    let ns = TestNamespace::create("sa-events")?;
    create_sa(ns.name(), "app")?;
    token_secret_name(ns.name(), "app")?;
    let synced = (
        "Normal".to_owned(),
        "Synced".to_owned(),
        "Create token secret successfully".to_owned(),
    );
    poll("the Synced event", Duration::from_secs(30), || {
        Ok(controller_events(ns.name(), "app")?
            .contains(&synced)
            .then_some(()))
    })?;

    // Two entries the controller must report (and keep): a Secret of another type, and a missing one.
    kubectl(&[
        "create",
        "secret",
        "generic",
        "opaque",
        "--from-literal=k=v",
        "-n",
        ns.name(),
    ])?;
    kubectl(&[
        "patch",
        "serviceaccounts.kubesphere.io",
        "app",
        "-n",
        ns.name(),
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/secrets/-","value":{"name":"opaque"}},{"op":"add","path":"/secrets/-","value":{"name":"missing"}}]"#,
    ])?;
    let wanted = [
        "unsupported secret opaque type: Opaque",
        r#"secrets "missing" not found"#,
    ];
    let events = poll("the InvalidSecret events", Duration::from_secs(30), || {
        let events = controller_events(ns.name(), "app")?;
        let found = wanted.iter().all(|note| {
            events
                .iter()
                .any(|(t, r, n)| t == "Warning" && r == "InvalidSecret" && n == note)
        });
        Ok(found.then_some(events))
    })?;
    // The token Secret itself is valid: no InvalidSecret names it.
    let secret = token_secret_name(ns.name(), "app")?;
    assert!(
        !events
            .iter()
            .any(|(_, r, n)| r == "InvalidSecret" && n.contains(&secret)),
        "{events:?}"
    );
    let sa = get_json(&["serviceaccounts.kubesphere.io", "app", "-n", ns.name()])?;
    assert_eq!(secret_names(&sa), [secret.as_str(), "opaque", "missing"]);
    Ok(())
}

#[test]
fn deleting_a_service_account_deletes_its_token_secrets() -> anyhow::Result<()> {
    let ns = TestNamespace::create("sa-delete")?;
    create_sa(ns.name(), "app")?;
    token_secret_name(ns.name(), "app")?;
    // A foreign secret named in `secrets` is never deleted.
    kubectl(&[
        "create",
        "secret",
        "generic",
        "keep-me",
        "-n",
        ns.name(),
        "--from-literal=a=b",
    ])?;
    kubectl(&[
        "delete",
        "serviceaccounts.kubesphere.io",
        "app",
        "-n",
        ns.name(),
        "--wait=true",
        "--timeout=30s",
    ])?;
    poll("token secrets to be gone", Duration::from_secs(30), || {
        Ok(token_secrets(ns.name())?.is_empty().then_some(()))
    })?;
    kubectl(&["get", "secret", "keep-me", "-n", ns.name()])?;
    Ok(())
}

#[test]
fn a_hand_made_token_secret_is_filled() -> anyhow::Result<()> {
    let ns = TestNamespace::create("sa-filler")?;
    create_sa(ns.name(), "app")?;
    token_secret_name(ns.name(), "app")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: extra\n  namespace: {}\n  annotations:\n    kubesphere.io/service-account.name: app\ntype: kubesphere.io/service-account-token\n",
            ns.name()
        ),
    )?;
    let token = secret_token(ns.name(), "extra")?;
    assert_eq!(
        verifier()?.verify(&token)?.username,
        format!("kubesphere:serviceaccount:{}:app", ns.name())
    );
    // One naming a missing ServiceAccount stays empty.
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: orphan\n  namespace: {}\n  annotations:\n    kubesphere.io/service-account.name: nobody\ntype: kubesphere.io/service-account-token\n",
            ns.name()
        ),
    )?;
    // No sleep: a Secret for `app` created after `orphan` is filled, so the filler has seen `orphan` too.
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: after-orphan\n  namespace: {}\n  annotations:\n    kubesphere.io/service-account.name: app\ntype: kubesphere.io/service-account-token\n",
            ns.name()
        ),
    )?;
    secret_token(ns.name(), "after-orphan")?;
    assert_eq!(
        kubectl(&[
            "get",
            "secret",
            "orphan",
            "-n",
            ns.name(),
            "-o",
            "jsonpath={.data.token}"
        ])?,
        ""
    );
    Ok(())
}

#[test]
fn many_service_accounts_get_exactly_one_secret_each() -> anyhow::Result<()> {
    let ns = TestNamespace::create("sa-many")?;
    let mut docs = String::new();
    for i in 0..30 {
        docs.push_str(&format!(
            "---\napiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: sa-{i}\n  namespace: {}\n",
            ns.name()
        ));
    }
    kubectl_with_stdin(&["apply", "-f", "-"], &docs)?;
    // Converged: every ServiceAccount names its token Secret, and the token Secrets are exactly those
    // (an orphan from a conflict or a duplicate create would stay, and the deadline would pass).
    let (named, secrets) = poll(
        "30 ServiceAccounts naming exactly the 30 token Secrets",
        Duration::from_secs(60),
        || {
            let sas = get_json(&["serviceaccounts.kubesphere.io", "-n", ns.name()])?;
            let mut named: Vec<String> = sas["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|sa| secret_names(sa).first().map(|n| (*n).to_owned()))
                .collect();
            named.sort();
            let mut secrets = token_secrets(ns.name())?;
            secrets.sort();
            Ok((named.len() == 30 && named == secrets).then_some((named, secrets)))
        },
    )?;
    assert_eq!(named, secrets);
    Ok(())
}

#[test]
fn expiring_tokens_carry_exp_and_are_rotated_in_place() -> anyhow::Result<()> {
    let ns = TestNamespace::create("sa-expiry")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: {}\n  annotations:\n    ksiam.kubesphere.io/token-ttl-seconds: \"60\"\n",
            ns.name()
        ),
    )?;
    let secret = token_secret_name(ns.name(), "app")?;
    let first = secret_token(ns.name(), &secret)?;
    let (_, claims) = ksiam_token::decode_unverified(&first)?;
    let claims: serde_json::Value = serde_json::from_str(&claims)?;
    assert_eq!(
        claims["exp"].as_i64(),
        claims["iat"].as_i64().map(|i| i + 60),
        "{claims}"
    );
    assert!(verifier()?.verify(&first).is_ok());
    // Rotated at 80% of the lifetime (48 s), in the same Secret.
    let second = poll("the token to be rotated", Duration::from_secs(75), || {
        let t = secret_token(ns.name(), &secret)?;
        Ok((t != first).then_some(t))
    })?;
    assert!(verifier()?.verify(&second).is_ok());
    assert_eq!(
        token_secret_name(ns.name(), "app")?,
        secret,
        "same Secret, so mounted files refresh"
    );
    Ok(())
}

/// A MutatingWebhookConfiguration sending UPDATEs of KubeSphere ServiceAccounts in one namespace to
/// `webhook`; deleted when dropped.
struct ServiceAccountWebhook(String);

impl ServiceAccountWebhook {
    fn register(namespace: &str, webhook: &ksiam_e2e::TestWebhook) -> anyhow::Result<Self> {
        let name = format!("ksiam-e2e-sa-{}", ksiam_e2e::random_suffix());
        ksiam_e2e::apply(&serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "race.e2e.ksiam.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "clientConfig": {"url": webhook.url(), "caBundle": webhook.ca_bundle()},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "rules": [{
                    "apiGroups": ["kubesphere.io"],
                    "apiVersions": ["v1alpha1"],
                    "operations": ["UPDATE"],
                    "resources": ["serviceaccounts"],
                }],
            }],
        }))?;
        Ok(Self(name))
    }
}

impl Drop for ServiceAccountWebhook {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.0,
            "--ignore-not-found",
        ]);
    }
}

/// "Never a lost write" (ARCHITECTURE.md): the controller writes `secrets` by server-side apply with the
/// resourceVersion it read as a precondition. A user's edit of `secrets` made while the controller's write is
/// in flight (held in admission by a test webhook, after the controller read the ServiceAccount) makes that
/// write a conflict; the retry reads the edit and keeps it. Without the precondition the forced apply would
/// replace the list and the user's entry would be lost.
#[test]
fn a_user_edit_of_secrets_racing_the_controllers_write_is_kept() -> anyhow::Result<()> {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use parking_lot::Mutex;

    let ns = TestNamespace::create("sa-race")?;
    let ns_name = ns.name().to_owned();
    // The user's entry: an existing Secret that is not a token Secret (it stays, after ours).
    kubectl(&[
        "create",
        "secret",
        "generic",
        "user-config",
        "-n",
        &ns_name,
        "--from-literal=k=v",
    ])?;

    // The `secrets` of every write of `app` by the controller, in order, and the outcome of the user's edit.
    let writes: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let edit: Arc<Mutex<Option<String>>> = Arc::default();
    let edited = Arc::new(AtomicBool::new(false));
    let hook: ksiam_e2e::Hook = {
        let (writes, edit, edited, ns_name) = (writes.clone(), edit.clone(), edited.clone(), ns_name.clone());
        Arc::new(move |req: &serde_json::Value| {
            let by_controller = req["options"]["fieldManager"] == "ksiam-controller"
                || req["userInfo"]["username"] == "ksiam";
            if req["name"] != "app" || !by_controller {
                return;
            }
            writes.lock().push(req["object"]["secrets"].clone());
            if !edited.swap(true, Ordering::SeqCst) {
                // The user's edit lands now: after the controller read the ServiceAccount, before its write.
                let outcome = kubectl(&[
                    "patch",
                    "serviceaccounts.kubesphere.io",
                    "app",
                    "-n",
                    &ns_name,
                    "--type",
                    "merge",
                    "-p",
                    r#"{"secrets":[{"name":"user-config"}]}"#,
                ]);
                *edit.lock() = Some(match outcome {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("{e:#}"),
                });
            }
        })
    };
    let webhook = ksiam_e2e::TestWebhook::start_with_hook("e2e.ksiam.io/seen", "true", hook)?;
    let _config = ServiceAccountWebhook::register(&ns_name, &webhook)?;
    // The configuration is in effect once a server-side dry run of an update is labelled by the webhook.
    create_sa(&ns_name, "probe")?;
    poll(
        "the webhook configuration to take effect",
        Duration::from_secs(30),
        || {
            let out = kubectl(&[
                "label",
                "serviceaccounts.kubesphere.io",
                "probe",
                "-n",
                &ns_name,
                "probe=1",
                "--dry-run=server",
                "-o",
                "json",
            ])?;
            let obj: serde_json::Value = serde_json::from_str(&out)?;
            Ok((obj["metadata"]["labels"]["e2e.ksiam.io/seen"] == "true").then_some(()))
        },
    )?;

    create_sa(&ns_name, "app")?;
    let secrets = poll(
        "app to list its token Secret first and the user's entry after it",
        Duration::from_secs(30),
        || {
            let sa = get_json(&["serviceaccounts.kubesphere.io", "app", "-n", &ns_name])?;
            let names: Vec<String> = secret_names(&sa).into_iter().map(str::to_owned).collect();
            Ok((names.len() == 2 && names[1] == "user-config").then_some(names))
        },
    )?;
    assert_eq!(edit.lock().as_deref(), Some("ok"), "the user's edit");
    // The token Secret is a real one of app's, and the only token Secret.
    let token = secret_token(&ns_name, &secrets[0])?;
    assert_eq!(
        verifier()?.verify(&token)?.username,
        format!("kubesphere:serviceaccount:{ns_name}:app")
    );
    assert_eq!(
        token_secrets(&ns_name)?.len(),
        2,
        "app's and probe's, nothing else"
    );
    // Conflict and retry: the first write was made from the read before the edit (no user entry); it did not
    // land (the edit is there), and a later write carried the edit.
    let writes = writes.lock().clone();
    assert!(writes.len() >= 2, "the controller wrote only {writes:?}");
    let first: Vec<&str> = writes[0]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(first, [secrets[0].as_str()], "the first write: {writes:?}");
    assert!(
        writes[1..].iter().any(|w| w.to_string().contains("user-config")),
        "the retry: {writes:?}"
    );
    Ok(())
}
