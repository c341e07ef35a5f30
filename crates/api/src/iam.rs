//! `iam.kubesphere.io/v1beta1`: roles, role bindings, role templates and built-in role templates.
//!
//! ```text
//!   GlobalRoleBinding ──roleRef──► GlobalRole       (scope Global, and every other scope)
//!   WorkspaceRoleBinding ─────────► WorkspaceRole    (scope Workspace; binding labelled kubesphere.io/workspace)
//!   ClusterRoleBinding ───────────► ClusterRole      (scopes Cluster, Workspace, Namespace)
//!   RoleBinding (namespaced) ─────► Role (same ns)   (scope Namespace)
//!
//!   RoleTemplate ──aggregationRoleTemplates──► any role kind (write-time only)
//!   BuiltinRole ──instantiated per namespace / workspace──► Role / WorkspaceRole
//! ```
//!
//! Except for [`RoleTemplate`], none of these objects has a `spec` on the wire: the fields of each
//! `*Spec` struct sit at the top level of the object (kube's `no_spec`), exactly like KubeSphere's
//! Go types. In Rust they are still reached through `.spec`.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::constants::REGO_OVERRIDE_ANNOTATION;

/// Which role templates a role aggregates its rules from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregationRoleTemplates {
    /// Names of the role templates to aggregate (ignored for selection when `roleSelector` is set;
    /// the controller then rewrites it to the templates actually used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub template_names: Vec<String>,
    /// Selects role templates by label; the role's scope label is added to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_selector: Option<LabelSelector>,
}

/// The top-level fields of a [`GlobalRole`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "GlobalRole",
    plural = "globalroles",
    singular = "globalrole",
    category = "iam",
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    doc = "GlobalRole is a set of rules granted at every scope, including Global."
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::require_rules)]
pub struct GlobalRoleSpec {
    /// Role templates whose rules are aggregated into `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_role_templates: Option<AggregationRoleTemplates>,
    /// Rules of this role. Required, but may be empty.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

/// The top-level fields of a [`GlobalRoleBinding`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "GlobalRoleBinding",
    plural = "globalrolebindings",
    singular = "globalrolebinding",
    category = "iam",
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    doc = "GlobalRoleBinding grants the rules of a GlobalRole to users, groups and ServiceAccounts."
)]
#[serde(rename_all = "camelCase")]
pub struct GlobalRoleBindingSpec {
    /// Users, groups and ServiceAccounts the role is granted to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<Subject>,
    /// The GlobalRole granted.
    pub role_ref: RoleRef,
}

/// The top-level fields of a [`WorkspaceRole`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "WorkspaceRole",
    plural = "workspaceroles",
    singular = "workspacerole",
    category = "iam",
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Workspace","type":"string","jsonPath":".metadata.labels.kubesphere\\.io/workspace"}"#,
    printcolumn = r#"{"name":"Alias","type":"string","jsonPath":".metadata.annotations.kubesphere\\.io/alias-name"}"#,
    doc = "WorkspaceRole is a set of rules granted inside one workspace and its namespaces."
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRoleSpec {
    /// Role templates whose rules are aggregated into `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_role_templates: Option<AggregationRoleTemplates>,
    /// Rules of this role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<PolicyRule>,
}

/// The top-level fields of a [`WorkspaceRoleBinding`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "WorkspaceRoleBinding",
    plural = "workspacerolebindings",
    singular = "workspacerolebinding",
    category = "iam",
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Workspace","type":"string","jsonPath":".metadata.labels.kubesphere\\.io/workspace"}"#,
    doc = "WorkspaceRoleBinding grants the rules of a WorkspaceRole inside the workspace named by its \
           kubesphere.io/workspace label."
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRoleBindingSpec {
    /// Users, groups and ServiceAccounts the role is granted to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<Subject>,
    /// The WorkspaceRole granted.
    pub role_ref: RoleRef,
}

/// The top-level fields of a [`ClusterRole`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "ClusterRole",
    plural = "clusterroles",
    singular = "clusterrole",
    category = "iam",
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    doc = "ClusterRole is a set of rules granted in the cluster, its workspaces and namespaces."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoleSpec {
    /// Role templates whose rules are aggregated into `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_role_templates: Option<AggregationRoleTemplates>,
    /// Rules of this role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<PolicyRule>,
}

/// The top-level fields of a [`ClusterRoleBinding`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "ClusterRoleBinding",
    plural = "clusterrolebindings",
    singular = "clusterrolebinding",
    category = "iam",
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    doc = "ClusterRoleBinding grants the rules of an iam ClusterRole in the cluster."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoleBindingSpec {
    /// Users, groups and ServiceAccounts the role is granted to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<Subject>,
    /// The ClusterRole granted.
    pub role_ref: RoleRef,
}

/// The top-level fields of a [`Role`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "Role",
    plural = "roles",
    singular = "role",
    category = "iam",
    namespaced,
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    doc = "Role is a set of rules granted inside its namespace."
)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Role templates whose rules are aggregated into `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_role_templates: Option<AggregationRoleTemplates>,
    /// Rules of this role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<PolicyRule>,
}

/// The top-level fields of a [`RoleBinding`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "RoleBinding",
    plural = "rolebindings",
    singular = "rolebinding",
    category = "iam",
    namespaced,
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    doc = "RoleBinding grants the rules of a Role of its namespace (or of a ClusterRole) inside its namespace."
)]
#[serde(rename_all = "camelCase")]
pub struct RoleBindingSpec {
    /// Users, groups and ServiceAccounts the role is granted to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<Subject>,
    /// The Role (looked up in the binding's namespace) or ClusterRole granted.
    pub role_ref: RoleRef,
}

/// The spec of a RoleTemplate, the only iam kind with a spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "RoleTemplate",
    plural = "roletemplates",
    singular = "roletemplate",
    category = "iam",
    derive = "Default",
    derive = "PartialEq",
    doc = "RoleTemplate is a named, reusable set of rules that roles aggregate."
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::require_rules)]
pub struct RoleTemplateSpec {
    /// Display name by language code, e.g. `en`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub display_name: BTreeMap<String, String>,
    /// Description by language code, e.g. `en`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub description: BTreeMap<String, String>,
    /// Rules this template contributes to the roles that aggregate it.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

/// The top-level fields of a [`BuiltinRole`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "BuiltinRole",
    plural = "builtinroles",
    singular = "builtinrole",
    category = "iam",
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    doc = "BuiltinRole is a role template instantiated in every namespace or workspace whose labels \
           match targetSelector."
)]
#[serde(rename_all = "camelCase")]
pub struct BuiltinRoleSpec {
    /// The complete role object to create (a Role or a WorkspaceRole, with apiVersion, kind and metadata).
    #[schemars(schema_with = "crate::schema::embedded_resource")]
    pub role: RawExtension,
    /// Namespaces (or workspace templates) whose labels match get the role. Empty matches everything.
    #[serde(default)]
    pub target_selector: LabelSelector,
}

/// The spec of a KubeSphere User. ksiam only reads users (the tenant API needs their
/// granted-clusters annotation); it does not manage them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "iam.kubesphere.io",
    version = "v1beta1",
    kind = "User",
    plural = "users",
    singular = "user",
    category = "iam",
    status = "UserStatus",
    derive = "Default",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Email","type":"string","jsonPath":".spec.email"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.state"}"#,
    doc = "User is a KubeSphere user account."
)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// Email address of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Preferred language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Groups the user belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Password hash (or a plain password that the controller replaces with its hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The status of a User.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// `Active`, `Disabled` or `AuthLimitExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the user is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// When the user last logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_time: Option<Time>,
}

// === impl BuiltinRoleSpec ===

impl BuiltinRoleSpec {
    /// Decodes the embedded role into a typed object (for example [`Role`] or [`WorkspaceRole`]).
    pub fn role_as<K: serde::de::DeserializeOwned>(&self) -> Result<K, serde_json::Error> {
        K::deserialize(&self.role.0)
    }
}

/// A role of any of the four iam kinds: what the authorizer needs from it.
pub trait IamRole: kube::Resource<DynamicType = ()> {
    /// The rules stored on the role (aggregation has already written template rules into them).
    fn rules(&self) -> &[PolicyRule];

    /// The Rego policy of the [`REGO_OVERRIDE_ANNOTATION`] annotation, if any.
    fn rego_override(&self) -> Option<&str> {
        self.meta()
            .annotations
            .as_ref()?
            .get(REGO_OVERRIDE_ANNOTATION)
            .map(String::as_str)
    }
}

/// A role binding of any of the four iam kinds.
pub trait IamRoleBinding: kube::Resource<DynamicType = ()> {
    /// Who the role is granted to.
    fn subjects(&self) -> &[Subject];
    /// Which role is granted.
    fn role_ref(&self) -> &RoleRef;
}

// === impl IamRole ===

impl IamRole for GlobalRole {
    fn rules(&self) -> &[PolicyRule] {
        &self.spec.rules
    }
}

impl IamRole for WorkspaceRole {
    fn rules(&self) -> &[PolicyRule] {
        &self.spec.rules
    }
}

impl IamRole for ClusterRole {
    fn rules(&self) -> &[PolicyRule] {
        &self.spec.rules
    }
}

impl IamRole for Role {
    fn rules(&self) -> &[PolicyRule] {
        &self.spec.rules
    }
}

// === impl IamRoleBinding ===

impl IamRoleBinding for GlobalRoleBinding {
    fn subjects(&self) -> &[Subject] {
        &self.spec.subjects
    }
    fn role_ref(&self) -> &RoleRef {
        &self.spec.role_ref
    }
}

impl IamRoleBinding for WorkspaceRoleBinding {
    fn subjects(&self) -> &[Subject] {
        &self.spec.subjects
    }
    fn role_ref(&self) -> &RoleRef {
        &self.spec.role_ref
    }
}

impl IamRoleBinding for ClusterRoleBinding {
    fn subjects(&self) -> &[Subject] {
        &self.spec.subjects
    }
    fn role_ref(&self) -> &RoleRef {
        &self.spec.role_ref
    }
}

impl IamRoleBinding for RoleBinding {
    fn subjects(&self) -> &[Subject] {
        &self.spec.subjects
    }
    fn role_ref(&self) -> &RoleRef {
        &self.spec.role_ref
    }
}

/// The workspace a WorkspaceRole or WorkspaceRoleBinding belongs to: its `kubesphere.io/workspace` label.
pub fn workspace_of<K: kube::Resource>(obj: &K) -> Option<&str> {
    obj.labels()
        .get(crate::constants::WORKSPACE_LABEL)
        .map(String::as_str)
}
