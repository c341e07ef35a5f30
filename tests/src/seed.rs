//! Objects of the seed walkthrough (`../shared/seed/kubesphere-serviceaccount.md`), verbatim, and waiting for
//! the controller to give a ServiceAccount its token Secret.

use std::time::Duration;

use crate::{kubectl, poll};

/// Seed §1.1: the ServiceAccount, exactly as the walkthrough applies it.
pub const SEED_SERVICE_ACCOUNT: &str = "apiVersion: kubesphere.io/v1alpha1
kind: ServiceAccount
metadata:
  name: sample
  namespace: default
secrets: []
";

/// The names in a KubeSphere ServiceAccount's `secrets` (as `kubectl get -o json` returns it), in order.
pub fn secret_names(sa: &serde_json::Value) -> Vec<&str> {
    sa["secrets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect()
}

/// Waits (up to 30 s) until the KubeSphere ServiceAccount `ns/sa` lists a token Secret, and returns its name
/// (`kubectl get serviceaccounts.kubesphere.io <sa> -o jsonpath={.secrets[].name}`).
pub fn token_secret_name(ns: &str, sa: &str) -> anyhow::Result<String> {
    poll(
        &format!("the token secret of {ns}/{sa}"),
        Duration::from_secs(30),
        || {
            let out = kubectl(&[
                "get",
                "serviceaccounts.kubesphere.io",
                sa,
                "-n",
                ns,
                "-o",
                "jsonpath={.secrets[].name}",
            ])?;
            Ok((!out.is_empty()).then_some(out))
        },
    )
}

/// Seed §1.2: the Pod.
pub const SEED_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubesphere.io/creator: admin
    kubesphere.io/imagepullsecrets: '{}'
    kubesphere.io/serviceaccount-name: sample   # <----- Set the ServiceAccount
  name: sample-pod
  namespace: default
spec:
  containers:
  - image: nginx
    imagePullPolicy: IfNotPresent
    name: container-5tkfmj
    ports:
    - containerPort: 80
      name: http-80
      protocol: TCP
    resources: {}
";

/// Seed §1.4: the GlobalRoleBinding.
pub const SEED_GLOBAL_ROLE_BINDING: &str = "apiVersion: iam.kubesphere.io/v1beta1
kind: GlobalRoleBinding
metadata:
  labels:
    iam.kubesphere.io/role-ref: platform-admin
  name: sample-platform-admin
roleRef:
  apiGroup: iam.kubesphere.io
  kind: GlobalRole
  name: platform-admin
subjects:
- apiGroup: kubesphere.io
  kind: ServiceAccount
  name: sample
  namespace: default
";

/// Seed §1.4: the ClusterRoleBinding.
pub const SEED_CLUSTER_ROLE_BINDING: &str = "apiVersion: iam.kubesphere.io/v1beta1
kind: ClusterRoleBinding
metadata:
  labels:
    iam.kubesphere.io/role-ref: cluster-admin
  name: sample-cluster-admin
roleRef:
  apiGroup: iam.kubesphere.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- apiGroup: kubesphere.io
  kind: ServiceAccount
  name: sample
  namespace: default
";

/// Seed §1.4: the Role and RoleBinding.
pub const SEED_ROLE_AND_BINDING: &str = "apiVersion: iam.kubesphere.io/v1beta1
kind: Role
metadata:
  annotations:
    kubesphere.io/creator: system
    kubesphere.io/description: '{\"zh\": \"管理项目中的所有资源。\", \"en\": \"Manage all resources
      in the project.\"}'
  name: admin
  namespace: default
rules:
- apiGroups:
  - '*'
  resources:
  - '*'
  verbs:
  - '*'
---
apiVersion: iam.kubesphere.io/v1beta1
kind: RoleBinding
metadata:
  labels:
    iam.kubesphere.io/role-ref: admin
  name: sample-admin
  namespace: default
roleRef:
  apiGroup: iam.kubesphere.io
  kind: Role
  name: admin
subjects:
- apiGroup: kubesphere.io
  kind: ServiceAccount
  name: sample
  namespace: default
";

/// Seed §1.4: the WorkspaceRoleBinding.
pub const SEED_WORKSPACE_ROLE_BINDING: &str = "apiVersion: iam.kubesphere.io/v1beta1
kind: WorkspaceRoleBinding
metadata:
  labels:
    iam.kubesphere.io/role-ref: system-workspace-admin
    kubesphere.io/workspace: system-workspace
  name: sample-admin
roleRef:
  apiGroup: iam.kubesphere.io
  kind: WorkspaceRole
  name: system-workspace-admin
subjects:
- apiGroup: kubesphere.io
  kind: ServiceAccount
  name: sample
  namespace: default
";

/// Waits (up to 30 s) until the Secret `ns/secret` holds a token, and returns it (`kubectl get secrets
/// <secret> -n <ns> -o jsonpath={.data.token} | base64 -d`).
pub fn secret_token(ns: &str, secret: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    poll(
        &format!("the token in {ns}/{secret}"),
        Duration::from_secs(30),
        || {
            let b64 = kubectl(&["get", "secrets", secret, "-n", ns, "-o", "jsonpath={.data.token}"])?;
            if b64.is_empty() {
                return Ok(None);
            }
            let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim())?;
            Ok(Some(String::from_utf8(raw)?))
        },
    )
}
