//! Escalation through the workspace controller (hole 2): the built-in GlobalRole `authenticated` allows
//! `patch workspacetemplates`, and the controller binds `<ws>-admin` to `spec.template.spec.manager`. A
//! ServiceAccount bound to `authenticated` must not make itself manager of `system-workspace` (which would
//! give it kube-system), nor remove the `kubesphere.io/cascading-deletion` finalizer that keeps the manager
//! binding from being created again; a platform-admin may do both.

use std::time::Duration;

use ksiam_e2e::{
    TestNamespace, e2e, kubectl, kubectl_with_stdin, kubectl_with_token, poll, random_suffix, secret_token,
    token_secret_name,
};

const DENIED_BY: &str = r#"admission webhook "workspacetemplates.ksiam.kubesphere.io" denied the request"#;
const FINALIZER: &str = "kubesphere.io/cascading-deletion";

/// Sends one `PATCH` (JSON merge patch) of `body` to kube-apiserver's `path` with `token`, and nothing else
/// (kubectl would GET first, which `authenticated` does not allow): `(HTTP status, the Status message or
/// the response body)`.
pub(crate) fn merge_patch_with_token(token: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let admin: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&e2e().kubeconfig)?)?;
    let cluster = &admin["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().unwrap_or_default();
    let Some(ca) = cluster["certificate-authority"].as_str() else {
        anyhow::bail!("the admin kubeconfig names no CA file");
    };
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--cacert", ca, "--request", "PATCH"])
        .args(["--header", "Content-Type: application/merge-patch+json"])
        .args(["--header", "Accept: application/json"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args(["--data-binary", body, "--write-out", "\n%{http_code}"])
        .arg(format!("{server}{path}"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    // A refusal is a `Status`: its message, unescaped; anything else as it came.
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .filter(|v| v["kind"] == "Status")
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned());
    Ok((code.trim().parse()?, message))
}

fn workspace_path(name: &str) -> String {
    format!("/apis/tenant.kubesphere.io/v1beta1/workspacetemplates/{name}")
}

/// Creates the KubeSphere ServiceAccount `ns/name` and returns its user name and token.
pub(crate) fn service_account(ns: &str, name: &str) -> anyhow::Result<(String, String)> {
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
        ),
    )?;
    let secret = token_secret_name(ns, name)?;
    Ok((
        format!("kubesphere:serviceaccount:{ns}:{name}"),
        secret_token(ns, &secret)?,
    ))
}

/// Binds the KubeSphere ServiceAccount `ns/name` to the GlobalRole `role` and waits until kube-apiserver
/// lets it `probe` (kubectl arguments).
fn bind_global_role(ns: &str, name: &str, role: &str, token: &str, probe: &[&str]) -> anyhow::Result<String> {
    let binding = format!("e2e-{ns}-{name}");
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1\nkind: GlobalRoleBinding\nmetadata:\n  name: {binding}\n\
             roleRef:\n  apiGroup: iam.kubesphere.io\n  kind: GlobalRole\n  name: {role}\n\
             subjects:\n- apiGroup: kubesphere.io\n  kind: ServiceAccount\n  name: {name}\n  namespace: {ns}\n"
        ),
    )?;
    poll(
        "the GlobalRoleBinding to take effect",
        Duration::from_secs(30),
        || {
            let (ok, _) = kubectl_with_token(token, probe)?;
            Ok(ok.then_some(()))
        },
    )?;
    Ok(binding)
}

fn manager(workspace: &str) -> anyhow::Result<String> {
    kubectl(&[
        "get",
        "workspacetemplate",
        workspace,
        "-o",
        "jsonpath={.spec.template.spec.manager}",
    ])
}

fn manager_patch(user: &str) -> String {
    serde_json::json!({"spec": {"template": {"spec": {"manager": user}}}}).to_string()
}

/// Deletes a cluster-scoped object when dropped.
struct Cleanup(Vec<(&'static str, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = kubectl(&["delete", kind, name, "--wait=false", "--ignore-not-found"]);
        }
    }
}

#[test]
fn escalation_a_manager_change_needs_the_power_to_grant_the_workspace() -> anyhow::Result<()> {
    let ns = TestNamespace::create("escalation")?;
    let ns = ns.name();
    let mut cleanup = Cleanup(Vec::new());

    // An attacker with the GlobalRole every logged-in user has.
    let (attacker, attacker_token) = service_account(ns, "attacker")?;
    let patch_probe = [
        "auth",
        "can-i",
        "patch",
        "workspacetemplates.tenant.kubesphere.io",
    ];
    cleanup.0.push((
        "globalrolebinding",
        bind_global_role(ns, "attacker", "authenticated", &attacker_token, &patch_probe)?,
    ));
    let before = manager("system-workspace")?;
    assert_ne!(before, attacker);

    // 1. Becoming manager of system-workspace (hence admin of kube-system): denied by the webhook.
    let (code, out) = merge_patch_with_token(
        &attacker_token,
        &workspace_path("system-workspace"),
        &manager_patch(&attacker),
    )?;
    let ok = code == 200;
    if ok {
        // Put it back before failing, so that the rest of the run is not affected.
        let _ = kubectl(&[
            "patch",
            "workspacetemplate",
            "system-workspace",
            "--type=merge",
            "-p",
            &manager_patch(&before),
        ]);
    }
    assert!(!ok, "the manager patch went through: {out}");
    assert_eq!(code, 403, "{out}");
    assert!(out.contains(DENIED_BY), "{out}");
    assert!(
        out.contains(&format!(
            r#"changing the manager of workspace "system-workspace" from "{before}" to "{attacker}" is not allowed: it grants the WorkspaceRole "system-workspace-admin", and user "{attacker}" cannot grant it"#
        )),
        "{out}"
    );
    assert_eq!(manager("system-workspace")?, before);

    // 2. Removing the finalizer that keeps the manager binding from being made again: denied.
    let workspace = format!("e2e-escalation-{}", random_suffix());
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &serde_json::json!({
            "apiVersion": "tenant.kubesphere.io/v1beta1",
            "kind": "WorkspaceTemplate",
            "metadata": {"name": workspace, "finalizers": [FINALIZER]},
            "spec": {"template": {"spec": {"manager": "admin"}}},
        })
        .to_string(),
    )?;
    cleanup.0.push(("workspacetemplate", workspace.clone()));
    let drop_finalizer = serde_json::json!({"metadata": {"finalizers": null}}).to_string();
    let (code, out) = merge_patch_with_token(&attacker_token, &workspace_path(&workspace), &drop_finalizer)?;
    assert_eq!(code, 403, "the finalizer removal was not refused: {out}");
    assert!(out.contains(DENIED_BY), "{out}");
    assert!(
        out.contains(&format!(
            r#"removing the finalizer "{FINALIZER}" from workspace "{workspace}" while it is not being deleted is not allowed"#
        )),
        "{out}"
    );
    // The attacker may still patch what grants nothing (the role allows the patch itself).
    let (code, out) = merge_patch_with_token(
        &attacker_token,
        &workspace_path(&workspace),
        r#"{"metadata":{"annotations":{"kubesphere.io/description":"harmless"}}}"#,
    )?;
    assert_eq!(code, 200, "a patch that grants nothing is allowed: {out}");

    // 3. A platform-admin may change the manager and remove the finalizer.
    let (admin, admin_token) = service_account(ns, "platform")?;
    let probe = [
        "auth",
        "can-i",
        "delete",
        "workspacetemplates.tenant.kubesphere.io",
    ];
    cleanup.0.push((
        "globalrolebinding",
        bind_global_role(ns, "platform", "platform-admin", &admin_token, &probe)?,
    ));
    let (ok, out) = kubectl_with_token(
        &admin_token,
        &[
            "patch",
            "workspacetemplate",
            &workspace,
            "--type=merge",
            "-p",
            &manager_patch(&admin),
        ],
    )?;
    assert!(ok, "a platform-admin changes the manager: {out}");
    assert_eq!(manager(&workspace)?, admin);
    let (ok, out) = kubectl_with_token(
        &admin_token,
        &[
            "patch",
            "workspacetemplate",
            &workspace,
            "--type=merge",
            "-p",
            &drop_finalizer,
        ],
    )?;
    assert!(ok, "a platform-admin removes the finalizer: {out}");
    Ok(())
}
