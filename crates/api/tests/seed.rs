//! The objects of the seed walkthrough (`shared/seed/kubesphere-serviceaccount.md`) deserialize
//! into our types and serialize back without losing or adding a field.

use ksiam_api::{
    ClusterRoleBinding, GlobalRoleBinding, Role, RoleBinding, ServiceAccount, WorkspaceRoleBinding,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

const SERVICE_ACCOUNT: &str = r#"
apiVersion: kubesphere.io/v1alpha1
kind: ServiceAccount
metadata:
  name: sample
  namespace: default
secrets: []
"#;

const GLOBAL_ROLE_BINDING: &str = r#"
apiVersion: iam.kubesphere.io/v1beta1
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
"#;

const CLUSTER_ROLE_BINDING: &str = r#"
apiVersion: iam.kubesphere.io/v1beta1
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
"#;

const ROLE: &str = r#"
apiVersion: iam.kubesphere.io/v1beta1
kind: Role
metadata:
  annotations:
    kubesphere.io/creator: system
    kubesphere.io/description: '{"zh": "管理项目中的所有资源。", "en": "Manage all resources
      in the project."}'
  name: admin
  namespace: default
rules:
- apiGroups:
  - '*'
  resources:
  - '*'
  verbs:
  - '*'
"#;

const ROLE_BINDING: &str = r#"
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
"#;

const WORKSPACE_ROLE_BINDING: &str = r#"
apiVersion: iam.kubesphere.io/v1beta1
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
"#;

/// Deserializes `yaml` as `K`, serializes it back, and returns (original, round-tripped) as JSON values.
fn round_trip<K: Serialize + DeserializeOwned>(yaml: &str) -> (K, serde_json::Value, serde_json::Value) {
    let original: serde_json::Value = serde_yaml::from_str(yaml).expect("seed YAML");
    let typed: K = serde_yaml::from_str(yaml).expect("typed object");
    let back = serde_json::to_value(&typed).expect("serialize");
    (typed, original, back)
}

fn assert_lossless<K: Serialize + DeserializeOwned>(yaml: &str) -> K {
    let (typed, original, back) = round_trip::<K>(yaml);
    assert_eq!(back, original);
    typed
}

#[test]
fn seed_service_account_round_trips_without_the_empty_secrets() {
    let (sa, mut original, back) = round_trip::<ServiceAccount>(SERVICE_ACCOUNT);
    assert!(sa.spec.secrets.is_empty());
    assert_eq!(
        original.as_object_mut().and_then(|o| o.remove("secrets")),
        Some(serde_json::json!([]))
    );
    assert_eq!(back, original);
}

#[test]
fn seed_service_account_with_its_secret_round_trips() {
    let yaml = SERVICE_ACCOUNT.replace(
        "secrets: []",
        "secrets:\n- name: sample-lqmbj\n  namespace: default",
    );
    let sa: ServiceAccount = assert_lossless(&yaml);
    assert_eq!(sa.token_secret_name(), Some("sample-lqmbj"));
}

#[test]
fn seed_global_role_binding_round_trips() {
    let b: GlobalRoleBinding = assert_lossless(GLOBAL_ROLE_BINDING);
    assert_eq!(b.spec.role_ref.name, "platform-admin");
    assert_eq!(b.spec.subjects[0].api_group.as_deref(), Some("kubesphere.io"));
}

#[test]
fn seed_cluster_role_binding_round_trips() {
    let b: ClusterRoleBinding = assert_lossless(CLUSTER_ROLE_BINDING);
    assert_eq!(b.spec.role_ref.kind, "ClusterRole");
}

#[test]
fn seed_role_round_trips() {
    let r: Role = assert_lossless(ROLE);
    assert_eq!(r.spec.rules.len(), 1);
    assert_eq!(r.spec.rules[0].verbs, ["*"]);
}

#[test]
fn seed_role_binding_round_trips() {
    let b: RoleBinding = assert_lossless(ROLE_BINDING);
    assert_eq!(b.metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn seed_workspace_role_binding_round_trips() {
    let b: WorkspaceRoleBinding = assert_lossless(WORKSPACE_ROLE_BINDING);
    assert_eq!(ksiam_api::iam::workspace_of(&b), Some("system-workspace"));
}

#[test]
fn serialized_objects_lead_with_api_version_kind_metadata() {
    let b: GlobalRoleBinding = serde_yaml::from_str(GLOBAL_ROLE_BINDING).expect("typed object");
    let yaml = serde_yaml::to_string(&b).expect("serialize");
    let keys: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.starts_with([' ', '-']))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "subjects", "roleRef"]);
}

/// A ServiceAccount as kube-apiserver 1.34 returned it (with server-set metadata and managedFields).
const SERVER_SERVICE_ACCOUNT: &str = r#"{
    "apiVersion": "kubesphere.io/v1alpha1",
    "kind": "ServiceAccount",
    "metadata": {
        "creationTimestamp": "2026-11-28T16:25:04Z",
        "generation": 1,
        "managedFields": [{
            "apiVersion": "kubesphere.io/v1alpha1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:secrets": {}},
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "time": "2026-11-28T16:25:04Z"
        }],
        "name": "filled",
        "namespace": "default",
        "resourceVersion": "279",
        "uid": "8cbc15f0-971f-4772-89d8-ed84329dea13"
    },
    "secrets": [{"name": "filled-abcde", "namespace": "default"}]
}"#;

#[test]
fn api_server_responses_round_trip() {
    let sa: ServiceAccount = serde_json::from_str(SERVER_SERVICE_ACCOUNT).expect("server object");
    assert_eq!(sa.token_secret_name(), Some("filled-abcde"));
    assert_eq!(sa.metadata.resource_version.as_deref(), Some("279"));
    let original: serde_json::Value = serde_json::from_str(SERVER_SERVICE_ACCOUNT).expect("json");
    assert_eq!(serde_json::to_value(&sa).expect("serialize"), original);
}
