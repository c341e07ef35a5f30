//! Namespace self-edit (hole 10, inherited from upstream): a namespace admin (Role `admin`, `*` on `*` in
//! the namespace) must not move its namespace to another workspace, weaken its pod-security labels, or
//! finalize it; those need `update namespaces` at Cluster scope. Ordinary labels stay its own, and
//! kube-controller-manager's namespace deletion (which calls `/finalize`) keeps working.

use std::time::Duration;

use ksiam_e2e::{TestNamespace, kubectl, kubectl_with_stdin, kubectl_with_token, poll};

use crate::escalation::service_account;

const DENIED_BY: &str = r#"admission webhook "namespaces.ksiam.kubesphere.io" denied the request"#;

fn label(ns: &str, key: &str) -> anyhow::Result<String> {
    let path = key.replace('.', "\\.");
    kubectl(&[
        "get",
        "namespace",
        ns,
        "-o",
        &format!("jsonpath={{.metadata.labels.{path}}}"),
    ])
}

#[test]
fn namespaces_self_edits_need_cluster_scope() -> anyhow::Result<()> {
    let ns = TestNamespace::create("nsattack")?;
    let ns = ns.name();
    kubectl(&[
        "label",
        "namespace",
        ns,
        "kubesphere.io/workspace=system-workspace",
        "pod-security.kubernetes.io/enforce=baseline",
        "--overwrite",
    ])?;

    // The namespace admin: the built-in Role `admin` (`*` on `*`), bound to a KubeSphere ServiceAccount.
    let (user, token) = service_account(ns, "nsadmin")?;
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1\nkind: Role\nmetadata:\n  name: admin\n  namespace: {ns}\n\
             rules:\n- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['*']\n---\n\
             apiVersion: iam.kubesphere.io/v1beta1\nkind: RoleBinding\nmetadata:\n  name: nsadmin-admin\n  namespace: {ns}\n\
             roleRef:\n  apiGroup: iam.kubesphere.io\n  kind: Role\n  name: admin\n\
             subjects:\n- apiGroup: kubesphere.io\n  kind: ServiceAccount\n  name: nsadmin\n  namespace: {ns}\n"
        ),
    )?;
    poll("the RoleBinding to take effect", Duration::from_secs(30), || {
        let (ok, _) = kubectl_with_token(&token, &["get", "namespace", ns])?;
        Ok(ok.then_some(()))
    })?;

    // 1. Moving the namespace to another workspace.
    let (ok, out) = kubectl_with_token(
        &token,
        &[
            "label",
            "namespace",
            ns,
            "kubesphere.io/workspace=attacker-workspace",
            "--overwrite",
        ],
    )?;
    assert!(!ok, "the namespace moved: {out}");
    assert!(out.contains(DENIED_BY), "{out}");
    assert!(
        out.contains(&format!(
            r#"changing the label "kubesphere.io/workspace" of namespace "{ns}" is not allowed: user "{user}" cannot update namespaces at Cluster scope"#
        )),
        "{out}"
    );
    assert_eq!(label(ns, "kubesphere.io/workspace")?, "system-workspace");
    // … or out of any workspace.
    let (ok, out) = kubectl_with_token(&token, &["label", "namespace", ns, "kubesphere.io/workspace-"])?;
    assert!(!ok && out.contains(DENIED_BY), "{out}");

    // 2. Weakening pod security.
    let (ok, out) = kubectl_with_token(
        &token,
        &[
            "label",
            "namespace",
            ns,
            "pod-security.kubernetes.io/enforce=privileged",
            "--overwrite",
        ],
    )?;
    assert!(!ok, "pod security was weakened: {out}");
    assert!(out.contains(DENIED_BY), "{out}");
    assert!(
        out.contains(r#"the label "pod-security.kubernetes.io/enforce""#),
        "{out}"
    );
    assert_eq!(label(ns, "pod-security.kubernetes.io/enforce")?, "baseline");

    // 3. PUT /finalize.
    let object = kubectl(&["get", "namespace", ns, "-o", "json"])?;
    let dir = std::env::temp_dir().join(format!("ksiam-e2e-finalize-{ns}"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("namespace.json");
    std::fs::write(&file, object)?;
    let finalize = kubectl_with_token(
        &token,
        &[
            "replace",
            "--raw",
            &format!("/api/v1/namespaces/{ns}/finalize"),
            "-f",
            &file.display().to_string(),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, out) = finalize?;
    assert!(!ok, "the namespace admin finalized its namespace: {out}");
    assert!(out.contains("namespaces.ksiam.kubesphere.io"), "{out}");

    // 4. An ordinary label is still the namespace admin's to set.
    let (ok, out) = kubectl_with_token(&token, &["label", "namespace", ns, "team=blue", "--overwrite"])?;
    assert!(ok, "an ordinary label change is allowed: {out}");
    assert_eq!(label(ns, "team")?, "blue");

    // 5. kube-controller-manager's namespace deletion (it finalizes through /finalize) still completes.
    let doomed = TestNamespace::create("nsdelete")?;
    kubectl(&[
        "label",
        "namespace",
        doomed.name(),
        "kubesphere.io/workspace=system-workspace",
    ])?;
    kubectl_with_stdin(
        &["create", "-n", doomed.name(), "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: content\n",
    )?;
    kubectl(&["delete", "namespace", doomed.name(), "--wait=false"])?;
    poll("the namespace to be deleted", Duration::from_secs(60), || {
        let out = kubectl(&[
            "get",
            "namespace",
            doomed.name(),
            "--ignore-not-found",
            "-o",
            "name",
        ])?;
        Ok(out.trim().is_empty().then_some(()))
    })?;
    Ok(())
}
