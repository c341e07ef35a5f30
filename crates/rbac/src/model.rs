//! The policy objects the core evaluates: roles, bindings and namespaces, reduced to what a decision reads.
//!
//! These mirror the `iam.kubesphere.io/v1beta1` objects (rules, `roleRef`, `subjects`) without any Kubernetes
//! client types, so the core stays free of I/O crates. The authorizer service converts watched objects into
//! these; benchmarks and tests build them directly or load them from JSON/YAML.

use serde::{Deserialize, Serialize};

/// A Kubernetes `PolicyRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs, `*` for all.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// API groups, `""` for core, `*` for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*/subresource`, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// When non-empty, the rule applies only to these object names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource paths; a trailing `*` is a prefix match.
    #[serde(default, rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

/// A Kubernetes RBAC `Subject`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// For ServiceAccounts: `kubesphere.io` or `rbac.authorization.k8s.io`; anything else never matches.
    #[serde(default)]
    pub api_group: String,
    /// The user, group or ServiceAccount name.
    pub name: String,
    /// The ServiceAccount namespace (RoleBindings default it to their own namespace).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A binding's `roleRef`. `apiGroup` is ignored by the evaluation; `kind` decides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// Informational only.
    #[serde(default)]
    pub api_group: String,
    /// `GlobalRole`, `WorkspaceRole`, `ClusterRole` or `Role`; any other kind is an evaluation error.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

/// The four role kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RoleKind {
    /// `iam.kubesphere.io/v1beta1 GlobalRole` (cluster-scoped).
    GlobalRole,
    /// `iam.kubesphere.io/v1beta1 WorkspaceRole` (cluster-scoped).
    WorkspaceRole,
    /// `iam.kubesphere.io/v1beta1 ClusterRole` (cluster-scoped).
    ClusterRole,
    /// `iam.kubesphere.io/v1beta1 Role` (namespaced).
    Role,
}

impl RoleKind {
    /// Parses a `roleRef.kind`.
    pub fn from_ref_kind(kind: &str) -> Option<Self> {
        match kind {
            "GlobalRole" => Some(Self::GlobalRole),
            "WorkspaceRole" => Some(Self::WorkspaceRole),
            "ClusterRole" => Some(Self::ClusterRole),
            "Role" => Some(Self::Role),
            _ => None,
        }
    }

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GlobalRole => "GlobalRole",
            Self::WorkspaceRole => "WorkspaceRole",
            Self::ClusterRole => "ClusterRole",
            Self::Role => "Role",
        }
    }
}

/// The four binding kinds, in evaluation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BindingKind {
    /// Evaluated for every request.
    GlobalRoleBinding,
    /// Evaluated for Workspace- and Namespace-scope requests of its workspace.
    WorkspaceRoleBinding,
    /// Evaluated for Namespace-scope requests in its namespace.
    RoleBinding,
    /// Evaluated for every request that is not Global-scope.
    ClusterRoleBinding,
}

impl BindingKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GlobalRoleBinding => "GlobalRoleBinding",
            Self::WorkspaceRoleBinding => "WorkspaceRoleBinding",
            Self::RoleBinding => "RoleBinding",
            Self::ClusterRoleBinding => "ClusterRoleBinding",
        }
    }
}

/// A role of any kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Which of the four kinds.
    pub kind: RoleKind,
    /// Only for [`RoleKind::Role`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The role's name.
    pub name: String,
    /// The rules stored on the role (aggregation is a write-time concern).
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// The `iam.kubesphere.io/rego-override` annotation, when present and non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego: Option<String>,
}

impl Role {
    /// The identity of this role.
    pub fn key(&self) -> RoleKey {
        RoleKey {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A binding of any kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// Which of the four kinds.
    pub kind: BindingKind,
    /// Only for [`BindingKind::RoleBinding`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The binding's name.
    pub name: String,
    /// The `kubesphere.io/workspace` label. Only read for WorkspaceRoleBindings, which never apply without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The referenced role.
    pub role_ref: RoleRef,
    /// Who the binding applies to.
    #[serde(default)]
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// The identity of this binding.
    pub fn key(&self) -> BindingKey {
        BindingKey {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A namespace and the workspace that controls it (its `kubesphere.io/workspace` label).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// The namespace name.
    pub name: String,
    /// The workspace label value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// Identifies a role.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleKey {
    /// The kind.
    pub kind: RoleKind,
    /// Empty unless the kind is `Role`.
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// Identifies a binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingKey {
    /// The kind.
    pub kind: BindingKind,
    /// Empty unless the kind is `RoleBinding`.
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// A whole policy: what the naive evaluator walks and what a snapshot is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Every role.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Every binding.
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// Every namespace that exists (with or without a workspace).
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
}
