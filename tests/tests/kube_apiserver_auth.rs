//! A KubeSphere ServiceAccount token against kube-apiserver itself, through ksiam's TokenReview and
//! SubjectAccessReview webhooks (which `cargo xtask` configures): Forbidden without a binding, allowed with
//! a KubeSphere RoleBinding, Unauthorized once its token Secret is deleted (revocation).

use std::time::{Duration, Instant};

use ksiam_e2e::{
    TestNamespace, kubectl, kubectl_with_stdin, kubectl_with_token, poll, secret_token, token_secret_name,
};

#[test]
fn kubectl_with_a_kubesphere_service_account_token_against_kube_apiserver() -> anyhow::Result<()> {
    let ns = TestNamespace::create("kubeauth")?;
    let ns = ns.name();
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: reader\n  namespace: {ns}\n"
        ),
    )?;
    let secret = token_secret_name(ns, "reader")?;
    let token = secret_token(ns, &secret)?;
    let user = format!("kubesphere:serviceaccount:{ns}:reader");

    // Authenticated (TokenReview) but not authorized: the SA has no binding.
    let forbidden = poll(
        "kube-apiserver to answer Forbidden",
        Duration::from_secs(30),
        || {
            let (ok, out) = kubectl_with_token(&token, &["get", "pods", "-n", ns])?;
            Ok((!ok && out.contains("Forbidden")).then_some(out))
        },
    )?;
    assert!(
        forbidden.contains(&format!(
            r#"pods is forbidden: User "{user}" cannot list resource "pods" in API group "" in the namespace "{ns}""#
        )),
        "{forbidden}"
    );

    // A KubeSphere Role + RoleBinding (iam.kubesphere.io) makes it allowed.
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1\nkind: Role\nmetadata:\n  name: pod-reader\n  namespace: {ns}\n\
             rules:\n- apiGroups: ['']\n  resources: ['pods']\n  verbs: ['get', 'list']\n---\n\
             apiVersion: iam.kubesphere.io/v1beta1\nkind: RoleBinding\nmetadata:\n  name: reader-pods\n  namespace: {ns}\n\
             roleRef:\n  apiGroup: iam.kubesphere.io\n  kind: Role\n  name: pod-reader\n\
             subjects:\n- apiGroup: kubesphere.io\n  kind: ServiceAccount\n  name: reader\n  namespace: {ns}\n"
        ),
    )?;
    let bound = Instant::now();
    let allowed = poll("the RoleBinding to take effect", Duration::from_secs(30), || {
        let (ok, out) = kubectl_with_token(&token, &["get", "pods", "-n", ns])?;
        Ok(ok.then_some(out))
    })?;
    eprintln!(
        "RoleBinding effective through kube-apiserver after {:?} (webhook caches: 1 s unauthorized)",
        bound.elapsed()
    );
    assert!(allowed.contains("No resources found"), "{allowed}");
    let (ok, out) = kubectl_with_token(&token, &["get", "pods", "-n", "kube-system"])?;
    assert!(
        !ok && out.contains("Forbidden"),
        "other namespaces stay forbidden: {out}"
    );
    let (ok, out) = kubectl_with_token(&token, &["delete", "pod", "not-there", "-n", ns])?;
    assert!(
        !ok && out.contains("Forbidden"),
        "verbs outside the Role stay forbidden: {out}"
    );

    // Deleting the token Secret revokes the token; the controller issues a new one, which works.
    kubectl(&["delete", "secret", &secret, "-n", ns])?;
    let deleted = Instant::now();
    let unauthorized = poll(
        "the deleted Secret's token to be rejected",
        Duration::from_secs(30),
        || {
            let (ok, out) = kubectl_with_token(&token, &["get", "pods", "-n", ns])?;
            Ok((!ok && out.contains("Unauthorized")).then_some(out))
        },
    )?;
    eprintln!(
        "revoked token rejected by kube-apiserver after {:?} (token webhook cache: 1 s)",
        deleted.elapsed()
    );
    assert!(
        unauthorized.contains("You must be logged in to the server (Unauthorized)"),
        "{unauthorized}"
    );
    let fresh_secret = poll("a new token Secret", Duration::from_secs(30), || {
        let name = token_secret_name(ns, "reader")?;
        Ok((name != secret).then_some(name))
    })?;
    let fresh = secret_token(ns, &fresh_secret)?;
    assert_ne!(fresh, token);
    let (ok, out) = poll("the new token to work", Duration::from_secs(30), || {
        let r = kubectl_with_token(&fresh, &["get", "pods", "-n", ns])?;
        Ok(r.0.then_some(r))
    })?;
    assert!(ok, "{out}");
    Ok(())
}
