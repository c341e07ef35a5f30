//! The roles and bindings KubeSphere installs: built-in GlobalRoles and GlobalRoleBindings,
//! the `cluster-admin` and `cluster-viewer` ClusterRoles, and the BuiltinRoles that become the
//! `admin`/`operator`/`viewer` Roles of every managed namespace and the
//! `<ws>-admin`/`<ws>-regular`/`<ws>-self-provisioner`/`<ws>-viewer` WorkspaceRoles of every workspace.
//!
//! Everything here is typed data; `cargo xtask codegen` writes it to `deploy/builtin-roles.yaml`.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde::Serialize;

use crate::constants::{
    AUTHENTICATED_GROUP, AUTO_AGGREGATE_ANNOTATION, CONSOLE_SERVICE_ACCOUNT, CREATOR_ANNOTATION,
    DESCRIPTION_ANNOTATION, GLOBAL_ROLE_KIND, GROUP_SUBJECT_KIND, IAM_GROUP, KUBESPHERE_GROUP,
    KUBESPHERE_NAMESPACE, MANAGED_LABEL, PRE_REGISTRATION_GROUP, PRE_REGISTRATION_USER,
    REGO_OVERRIDE_ANNOTATION, ROLE_REF_LABEL, SCOPE_LABEL, SCOPE_LABEL_CLUSTER, SCOPE_LABEL_GLOBAL,
    SCOPE_LABEL_NAMESPACE, SCOPE_LABEL_WORKSPACE, SERVICE_ACCOUNT_SUBJECT_KIND, TENANT_GROUP,
    UNAUTHENTICATED_GROUP, USER_REF_LABEL, USER_SUBJECT_KIND,
};
use crate::iam::{
    AggregationRoleTemplates, BuiltinRole, BuiltinRoleSpec, ClusterRole, ClusterRoleSpec, GlobalRole,
    GlobalRoleBinding, GlobalRoleBindingSpec, GlobalRoleSpec, Role, RoleSpec, WorkspaceRole,
    WorkspaceRoleSpec,
};

// --- Names ---

/// GlobalRole allowing everything everywhere.
pub const PLATFORM_ADMIN: &str = "platform-admin";
/// GlobalRole of ordinary users: nothing until they join a workspace.
pub const PLATFORM_REGULAR: &str = "platform-regular";
/// GlobalRole allowing to create workspaces.
pub const PLATFORM_SELF_PROVISIONER: &str = "platform-self-provisioner";
/// GlobalRole of every authenticated user (group `system:authenticated`; never ServiceAccounts).
pub const AUTHENTICATED: &str = "authenticated";
/// GlobalRole of unauthenticated requests.
pub const ANONYMOUS: &str = "anonymous";
/// GlobalRole of users logging in through an identity provider for the first time.
pub const PRE_REGISTRATION: &str = "pre-registration";
/// GlobalRole of the console's ServiceAccount.
pub const KS_CONSOLE: &str = "ks-console";
/// GlobalRoleBinding making the user `admin` a platform admin.
pub const ADMIN_BINDING: &str = "admin";
/// The initial platform administrator.
pub const ADMIN_USER: &str = "admin";
/// ClusterRole allowing everything in the cluster.
pub const CLUSTER_ADMIN: &str = "cluster-admin";
/// ClusterRole allowing to read everything in the cluster.
pub const CLUSTER_VIEWER: &str = "cluster-viewer";
/// Name of the Role [`PROJECT_ADMIN`] creates in every managed namespace.
pub const NAMESPACE_ADMIN_ROLE: &str = "admin";
/// Name of the Role [`PROJECT_OPERATOR`] creates in every managed namespace.
pub const NAMESPACE_OPERATOR_ROLE: &str = "operator";
/// Name of the Role [`PROJECT_VIEWER`] creates in every managed namespace.
pub const NAMESPACE_VIEWER_ROLE: &str = "viewer";
/// BuiltinRole for the namespace `admin` Role.
pub const PROJECT_ADMIN: &str = "project-admin";
/// BuiltinRole for the namespace `operator` Role.
pub const PROJECT_OPERATOR: &str = "project-operator";
/// BuiltinRole for the namespace `viewer` Role.
pub const PROJECT_VIEWER: &str = "project-viewer";
/// Suffix of the WorkspaceRole [`WORKSPACE_ADMIN`] creates (`<ws>-admin`).
pub const WORKSPACE_ADMIN_ROLE: &str = "admin";
/// Suffix of the WorkspaceRole [`WORKSPACE_REGULAR`] creates (`<ws>-regular`).
pub const WORKSPACE_REGULAR_ROLE: &str = "regular";
/// Suffix of the WorkspaceRole [`WORKSPACE_SELF_PROVISIONER`] creates (`<ws>-self-provisioner`).
pub const WORKSPACE_SELF_PROVISIONER_ROLE: &str = "self-provisioner";
/// Suffix of the WorkspaceRole [`WORKSPACE_VIEWER`] creates (`<ws>-viewer`).
pub const WORKSPACE_VIEWER_ROLE: &str = "viewer";
/// BuiltinRole for the workspace `admin` role.
pub const WORKSPACE_ADMIN: &str = "workspace-admin";
/// BuiltinRole for the workspace `regular` role.
pub const WORKSPACE_REGULAR: &str = "workspace-regular";
/// BuiltinRole for the workspace `self-provisioner` role.
pub const WORKSPACE_SELF_PROVISIONER: &str = "workspace-self-provisioner";
/// BuiltinRole for the workspace `viewer` role.
pub const WORKSPACE_VIEWER: &str = "workspace-viewer";

/// Creator recorded on every built-in object.
const SYSTEM_CREATOR: &str = "system";

/// Groups whose resources a namespace `operator` may change.
pub const OPERATOR_WRITABLE_GROUPS: [&str; 13] = [
    "",
    "apps",
    "extensions",
    "batch",
    "autoscaling",
    "app.k8s.io",
    "operations.kubesphere.io",
    "resources.kubesphere.io",
    "config.istio.io",
    "events.k8s.io",
    "events.kubesphere.io",
    "snapshot.storage.k8s.io",
    "networking.k8s.io",
];

// --- Rego policies ---

/// Rego override of `platform-admin`: allow every request in Cluster, Workspace or Namespace scope.
///
/// Written with `import rego.v1`, so it compiles both with Rego v1 engines and with v0 engines
/// that know the `rego.v1` import. Evaluated as module `authz.rego`, query `data.authz.allow`.
pub const PLATFORM_ADMIN_REGO: &str = r#"package authz

import rego.v1

default allow := false

allow if {
    input.ResourceScope in {"Cluster", "Workspace", "Namespace"}
}
"#;

/// Rego override of `authenticated`: what every logged-in user may do on its own behalf.
///
/// 1. read and change its own `iam.kubesphere.io` User;
/// 2. get, list and watch its own cluster, workspace and namespace memberships;
/// 3. `GET /api` and `GET /api/v1`;
/// 4. get, list and watch anything of `tenant.kubesphere.io` that is not a Kubernetes API request
///    (the tenant API filters by membership itself);
/// 5. exec into its own web kubectl pod `kubesphere-system/ks-managed-kubectl-<user>`.
pub const AUTHENTICATED_REGO: &str = r#"package authz

import rego.v1

default allow := false

read_verbs := {"get", "list", "watch"}

allow if {
    input.ResourceRequest
    input.APIGroup == "iam.kubesphere.io"
    input.Resource == "users"
    input.Name != ""
    input.Name == input.User.Name
}

allow if {
    input.ResourceRequest
    input.Verb in read_verbs
    input.Resource in {"clustermembers", "workspacemembers", "namespacemembers"}
    input.Name != ""
    input.Name == input.User.Name
}

allow if {
    not input.ResourceRequest
    input.Verb == "GET"
    input.Path in {"/api", "/api/v1"}
}

allow if {
    input.ResourceRequest
    not input.KubernetesRequest
    input.APIGroup == "tenant.kubesphere.io"
    input.Verb in read_verbs
}

allow if {
    input.ResourceRequest
    input.Namespace == "kubesphere-system"
    input.Resource == "pods"
    input.Subresource == "exec"
    input.Name == concat("", ["ks-managed-kubectl-", input.User.Name])
}
"#;

// --- Small builders ---

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A resource rule: `verbs` on `resources` of `api_groups`.
fn rule(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(api_groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// A non-resource rule: `verbs` (uppercase HTTP methods or `*`) on `urls`.
fn non_resource_rule(urls: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        non_resource_urls: Some(strings(urls)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const ALL: &[&str] = &["*"];

fn description(en: &str, zh: &str) -> String {
    // A JSON object with fixed keys and no characters that need escaping beyond what serde_json does.
    serde_json::json!({ "en": en, "zh": zh }).to_string()
}

fn meta(name: &str, labels: &[(&str, &str)], annotations: &[(&str, String)]) -> ObjectMeta {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: (!labels.is_empty()).then_some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..ObjectMeta::default()
    }
}

fn role_meta(name: &str, labels: &[(&str, &str)], en: &str, zh: &str, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut annotations = vec![
        (CREATOR_ANNOTATION, SYSTEM_CREATOR.to_owned()),
        (DESCRIPTION_ANNOTATION, description(en, zh)),
    ];
    annotations.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    meta(name, labels, &annotations)
}

fn selector(labels: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..LabelSelector::default()
    }
}

fn subject(kind: &str, api_group: &str, name: &str, namespace: Option<&str>) -> Subject {
    Subject {
        api_group: Some(api_group.to_owned()),
        kind: kind.to_owned(),
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
    }
}

fn global_role_binding(
    name: &str,
    role: &str,
    user_ref: Option<&str>,
    subjects: Vec<Subject>,
) -> GlobalRoleBinding {
    let mut labels = vec![(ROLE_REF_LABEL, role)];
    if let Some(user) = user_ref {
        labels.push((USER_REF_LABEL, user));
    }
    GlobalRoleBinding {
        metadata: meta(name, &labels, &[]),
        spec: GlobalRoleBindingSpec {
            subjects,
            role_ref: RoleRef {
                api_group: IAM_GROUP.to_owned(),
                kind: GLOBAL_ROLE_KIND.to_owned(),
                name: role.to_owned(),
            },
        },
    }
}

/// Serializes a typed object into the raw form a [`BuiltinRole`] embeds.
fn embed<K: Serialize>(obj: &K) -> RawExtension {
    // Every object passed here is a derived iam type whose serialization cannot fail: all map keys
    // are strings. Fall back to null rather than panic; the drift and round-trip tests would catch it.
    RawExtension(serde_json::to_value(obj).unwrap_or(serde_json::Value::Null))
}

// --- GlobalRoles ---

/// The WorkspaceRole a built-in workspace role becomes in a workspace: `<ws>-<role>`, or `<role>.<fnv hash of
/// ws>` when that would exceed 63 characters (spec §10.1). The role provisioner creates these names and the
/// admission checks look them up, so both use this one function.
pub fn workspace_role_name(workspace: &str, role: &str) -> String {
    let name = format!("{workspace}-{role}");
    if name.len() <= 63 {
        return name;
    }
    let hash = workspace.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{role}.{hash:x}")
}

/// `platform-admin`: everything everywhere, plus a Rego override allowing every
/// Cluster/Workspace/Namespace request. Aggregates every global role template.
pub fn platform_admin() -> GlobalRole {
    GlobalRole {
        metadata: role_meta(
            PLATFORM_ADMIN,
            &[],
            "Manage everything on the platform.",
            "管理平台上的全部资源。",
            &[
                (REGO_OVERRIDE_ANNOTATION, PLATFORM_ADMIN_REGO),
                (AUTO_AGGREGATE_ANNOTATION, "true"),
            ],
        ),
        spec: GlobalRoleSpec {
            aggregation_role_templates: Some(AggregationRoleTemplates {
                template_names: Vec::new(),
                role_selector: Some(selector(&[(SCOPE_LABEL, SCOPE_LABEL_GLOBAL)])),
            }),
            rules: vec![rule(ALL, ALL, ALL), non_resource_rule(ALL, ALL)],
        },
    }
}

/// `platform-regular`: no permissions until the user joins a workspace.
pub fn platform_regular() -> GlobalRole {
    GlobalRole {
        metadata: role_meta(
            PLATFORM_REGULAR,
            &[],
            "Cannot access any resource before joining a workspace.",
            "加入企业空间之前无法访问任何资源。",
            &[],
        ),
        spec: GlobalRoleSpec {
            aggregation_role_templates: None,
            rules: Vec::new(),
        },
    }
}

/// `platform-self-provisioner`: create (and watch) workspaces.
pub fn platform_self_provisioner() -> GlobalRole {
    GlobalRole {
        metadata: role_meta(
            PLATFORM_SELF_PROVISIONER,
            &[],
            "Create workspaces and become their administrator.",
            "创建企业空间并成为其管理员。",
            &[],
        ),
        spec: GlobalRoleSpec {
            aggregation_role_templates: Some(AggregationRoleTemplates {
                template_names: strings(&["global-create-workspaces"]),
                role_selector: None,
            }),
            rules: vec![rule(
                &[TENANT_GROUP],
                &["workspaces", "workspacetemplates"],
                &["create", "watch"],
            )],
        },
    }
}

/// `authenticated`: what every logged-in user may read, plus a Rego override for self-service.
/// Bound to the group `system:authenticated`, which ServiceAccounts never have.
pub fn authenticated() -> GlobalRole {
    GlobalRole {
        metadata: role_meta(
            AUTHENTICATED,
            &[],
            "Permissions every logged-in user has.",
            "所有已登录用户都具有的权限。",
            &[(REGO_OVERRIDE_ANNOTATION, AUTHENTICATED_REGO)],
        ),
        spec: GlobalRoleSpec {
            aggregation_role_templates: None,
            rules: vec![
                rule(&["config.kubesphere.io"], &["configs", "platformconfigs"], READ),
                rule(&[IAM_GROUP], &["users", "roletemplates", "categories"], &["list"]),
                rule(
                    &["resources.kubesphere.io"],
                    &["registry", "git"],
                    &["get", "create"],
                ),
                rule(&["resources.kubesphere.io"], &["clusters"], &["get", "list"]),
                rule(
                    ALL,
                    &["storageclasses", "storageclasscapabilities", "nodes"],
                    &["get", "list"],
                ),
                rule(
                    &["resources.kubesphere.io"],
                    &["namespaces", "services"],
                    &["list"],
                ),
                rule(&[TENANT_GROUP], &["workspacetemplates"], &["patch"]),
                rule(
                    &["extensions.kubesphere.io"],
                    &["jsbundles", "extensionentries", "extensions"],
                    &["get", "list"],
                ),
                rule(
                    &["application.kubesphere.io"],
                    &["apps", "categories", "apps/versions", "applications"],
                    &["get", "list"],
                ),
                rule(&["cluster.kubesphere.io"], &["labels"], &["get", "list"]),
                non_resource_rule(&["/static/images/*"], &["GET"]),
            ],
        },
    }
}

/// `anonymous`: read the public platform configuration and static images.
pub fn anonymous() -> GlobalRole {
    GlobalRole {
        metadata: role_meta(
            ANONYMOUS,
            &[],
            "Permissions of requests without credentials.",
            "未认证请求具有的权限。",
            &[],
        ),
        spec: GlobalRoleSpec {
            aggregation_role_templates: None,
            rules: vec![
                rule(&["config.kubesphere.io"], &["configs"], &["get", "list"]),
                non_resource_rule(&["/static/images/*"], &["GET"]),
            ],
        },
    }
}

/// `pre-registration`: create the user object on first login through an identity provider.
pub fn pre_registration() -> GlobalRole {
    GlobalRole {
        metadata: role_meta(
            PRE_REGISTRATION,
            &[],
            "Register a user on first login through an identity provider.",
            "通过身份提供者首次登录时注册用户。",
            &[],
        ),
        spec: GlobalRoleSpec {
            aggregation_role_templates: None,
            rules: vec![rule(&[IAM_GROUP], &["users"], &["create", "list"])],
        },
    }
}

/// `ks-console`: what the console's ServiceAccount reads (extensions and platform configuration).
pub fn ks_console() -> GlobalRole {
    GlobalRole {
        metadata: role_meta(
            KS_CONSOLE,
            &[],
            "Permissions of the KubeSphere console.",
            "KubeSphere 控制台的权限。",
            &[],
        ),
        spec: GlobalRoleSpec {
            aggregation_role_templates: None,
            rules: vec![rule(
                &["extensions.kubesphere.io", "config.kubesphere.io"],
                ALL,
                READ,
            )],
        },
    }
}

/// Every built-in GlobalRole.
pub fn global_roles() -> Vec<GlobalRole> {
    vec![
        platform_admin(),
        platform_regular(),
        platform_self_provisioner(),
        authenticated(),
        anonymous(),
        pre_registration(),
        ks_console(),
    ]
}

// --- GlobalRoleBindings ---

/// Every built-in GlobalRoleBinding: `admin`, `anonymous`, `authenticated`, `pre-registration`, `ks-console`.
pub fn global_role_bindings() -> Vec<GlobalRoleBinding> {
    vec![
        global_role_binding(
            ADMIN_BINDING,
            PLATFORM_ADMIN,
            Some(ADMIN_USER),
            vec![subject(USER_SUBJECT_KIND, IAM_GROUP, ADMIN_USER, None)],
        ),
        global_role_binding(
            ANONYMOUS,
            ANONYMOUS,
            None,
            vec![subject(
                GROUP_SUBJECT_KIND,
                IAM_GROUP,
                UNAUTHENTICATED_GROUP,
                None,
            )],
        ),
        global_role_binding(
            AUTHENTICATED,
            AUTHENTICATED,
            None,
            vec![subject(GROUP_SUBJECT_KIND, IAM_GROUP, AUTHENTICATED_GROUP, None)],
        ),
        global_role_binding(
            PRE_REGISTRATION,
            PRE_REGISTRATION,
            None,
            vec![
                subject(GROUP_SUBJECT_KIND, IAM_GROUP, PRE_REGISTRATION_GROUP, None),
                subject(USER_SUBJECT_KIND, IAM_GROUP, PRE_REGISTRATION_USER, None),
            ],
        ),
        global_role_binding(
            KS_CONSOLE,
            KS_CONSOLE,
            None,
            vec![subject(
                SERVICE_ACCOUNT_SUBJECT_KIND,
                KUBESPHERE_GROUP,
                CONSOLE_SERVICE_ACCOUNT,
                Some(KUBESPHERE_NAMESPACE),
            )],
        ),
    ]
}

// --- ClusterRoles ---

/// `cluster-admin`: everything in the cluster. Aggregates every cluster role template.
pub fn cluster_admin() -> ClusterRole {
    ClusterRole {
        metadata: role_meta(
            CLUSTER_ADMIN,
            &[],
            "Manage all resources in the cluster.",
            "管理集群中的所有资源。",
            &[(AUTO_AGGREGATE_ANNOTATION, "true")],
        ),
        spec: ClusterRoleSpec {
            aggregation_role_templates: Some(AggregationRoleTemplates {
                template_names: Vec::new(),
                role_selector: Some(selector(&[(SCOPE_LABEL, SCOPE_LABEL_CLUSTER)])),
            }),
            rules: vec![rule(ALL, ALL, ALL), non_resource_rule(ALL, ALL)],
        },
    }
}

/// `cluster-viewer`: read everything in the cluster.
pub fn cluster_viewer() -> ClusterRole {
    ClusterRole {
        metadata: role_meta(
            CLUSTER_VIEWER,
            &[],
            "View all resources in the cluster.",
            "查看集群中的所有资源。",
            &[(AUTO_AGGREGATE_ANNOTATION, "true")],
        ),
        spec: ClusterRoleSpec {
            aggregation_role_templates: Some(AggregationRoleTemplates {
                template_names: strings(&[
                    "cluster-view-components",
                    "cluster-view-volume-snapshot-classes",
                    "cluster-view-volumes",
                    "cluster-view-roles",
                ]),
                role_selector: Some(selector(&[(
                    crate::constants::AGGREGATE_TO_CLUSTER_VIEWER_LABEL,
                    "",
                )])),
            }),
            rules: vec![rule(ALL, ALL, READ), non_resource_rule(ALL, &["GET"])],
        },
    }
}

/// Every built-in ClusterRole.
pub fn cluster_roles() -> Vec<ClusterRole> {
    vec![cluster_admin(), cluster_viewer()]
}

// --- BuiltinRoles ---

fn namespace_builtin_role(name: &str, role: Role) -> BuiltinRole {
    BuiltinRole {
        metadata: meta(name, &[(SCOPE_LABEL, SCOPE_LABEL_NAMESPACE)], &[]),
        spec: BuiltinRoleSpec {
            role: embed(&role),
            target_selector: selector(&[(MANAGED_LABEL, "true")]),
        },
    }
}

fn workspace_builtin_role(name: &str, role: WorkspaceRole) -> BuiltinRole {
    BuiltinRole {
        metadata: meta(name, &[(SCOPE_LABEL, SCOPE_LABEL_WORKSPACE)], &[]),
        spec: BuiltinRoleSpec {
            role: embed(&role),
            target_selector: LabelSelector::default(),
        },
    }
}

/// The namespace `admin` Role: everything in the namespace.
pub fn namespace_admin_role() -> Role {
    Role {
        metadata: role_meta(
            NAMESPACE_ADMIN_ROLE,
            &[],
            "Manage every resource in the project.",
            "管理项目内的全部资源。",
            &[],
        ),
        spec: RoleSpec {
            aggregation_role_templates: None,
            rules: vec![rule(ALL, ALL, ALL)],
        },
    }
}

/// The namespace `operator` Role: read everything, change workloads and their configuration.
pub fn namespace_operator_role() -> Role {
    Role {
        metadata: role_meta(
            NAMESPACE_OPERATOR_ROLE,
            &[],
            "View all resources in the project and manage its workloads.",
            "查看项目中的所有资源并管理其中的工作负载。",
            &[],
        ),
        spec: RoleSpec {
            aggregation_role_templates: None,
            rules: vec![rule(ALL, ALL, READ), rule(&OPERATOR_WRITABLE_GROUPS, ALL, ALL)],
        },
    }
}

/// The namespace `viewer` Role: read everything in the namespace.
pub fn namespace_viewer_role() -> Role {
    Role {
        metadata: role_meta(
            NAMESPACE_VIEWER_ROLE,
            &[],
            "View all resources in the project.",
            "查看项目中的所有资源。",
            &[],
        ),
        spec: RoleSpec {
            aggregation_role_templates: None,
            rules: vec![rule(ALL, ALL, READ)],
        },
    }
}

/// Rules that let a workspace member see the workspace, its members and roles.
fn workspace_view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[TENANT_GROUP],
            &["workspaces", "workspacetemplates", "namespaces", "clusters"],
            READ,
        ),
        rule(
            &[IAM_GROUP],
            &[
                "workspacemembers",
                "workspaceroles",
                "workspacerolebindings",
                "users",
            ],
            READ,
        ),
    ]
}

/// The workspace `admin` role: everything in the workspace.
pub fn workspace_admin_role() -> WorkspaceRole {
    WorkspaceRole {
        metadata: role_meta(
            WORKSPACE_ADMIN_ROLE,
            &[],
            "Manage all resources in the workspace.",
            "管理企业空间中的所有资源。",
            &[],
        ),
        spec: WorkspaceRoleSpec {
            aggregation_role_templates: None,
            rules: vec![rule(ALL, ALL, ALL)],
        },
    }
}

/// The workspace `regular` role: view the workspace settings, members and roles.
pub fn workspace_regular_role() -> WorkspaceRole {
    WorkspaceRole {
        metadata: role_meta(
            WORKSPACE_REGULAR_ROLE,
            &[],
            "View the workspace settings, members and roles.",
            "查看企业空间的设置、成员和角色。",
            &[],
        ),
        spec: WorkspaceRoleSpec {
            aggregation_role_templates: None,
            rules: workspace_view_rules(),
        },
    }
}

/// The workspace `self-provisioner` role: what `regular` may do, plus create projects.
pub fn workspace_self_provisioner_role() -> WorkspaceRole {
    let mut rules = workspace_view_rules();
    rules.push(rule(&[TENANT_GROUP], &["namespaces"], &["create"]));
    WorkspaceRole {
        metadata: role_meta(
            WORKSPACE_SELF_PROVISIONER_ROLE,
            &[],
            "Create projects in the workspace and view its settings, members and roles.",
            "在企业空间中创建项目，并查看其设置、成员和角色。",
            &[],
        ),
        spec: WorkspaceRoleSpec {
            aggregation_role_templates: None,
            rules,
        },
    }
}

/// The workspace `viewer` role: read everything in the workspace.
pub fn workspace_viewer_role() -> WorkspaceRole {
    WorkspaceRole {
        metadata: role_meta(
            WORKSPACE_VIEWER_ROLE,
            &[],
            "View all resources in the workspace.",
            "查看企业空间中的所有资源。",
            &[],
        ),
        spec: WorkspaceRoleSpec {
            aggregation_role_templates: None,
            rules: vec![rule(ALL, ALL, READ)],
        },
    }
}

/// Every BuiltinRole: `project-*` (namespace scope, for namespaces labelled
/// `kubesphere.io/managed=true`) and `workspace-*` (workspace scope, every workspace).
pub fn builtin_roles() -> Vec<BuiltinRole> {
    vec![
        namespace_builtin_role(PROJECT_ADMIN, namespace_admin_role()),
        namespace_builtin_role(PROJECT_OPERATOR, namespace_operator_role()),
        namespace_builtin_role(PROJECT_VIEWER, namespace_viewer_role()),
        workspace_builtin_role(WORKSPACE_ADMIN, workspace_admin_role()),
        workspace_builtin_role(WORKSPACE_REGULAR, workspace_regular_role()),
        workspace_builtin_role(WORKSPACE_SELF_PROVISIONER, workspace_self_provisioner_role()),
        workspace_builtin_role(WORKSPACE_VIEWER, workspace_viewer_role()),
    ]
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;
    use crate::constants::ROLE_KIND;

    fn engine(policy: &str, rego_v0: bool) -> regorus::Engine {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(rego_v0);
        if let Err(err) = engine.add_policy("authz.rego".to_owned(), policy.to_owned()) {
            panic!("policy does not compile (rego v0 mode: {rego_v0}): {err}");
        }
        engine
    }

    /// The request attributes as KubeSphere hands them to rego (Go field names), with `overrides` applied.
    fn input(overrides: serde_json::Value) -> serde_json::Value {
        let mut input = serde_json::json!({
            "User": {"Name": "alice", "UID": "", "Groups": ["system:authenticated"], "Extra": null},
            "Verb": "get", "Cluster": "", "Workspace": "", "Namespace": "",
            "APIGroup": "", "APIVersion": "v1", "Resource": "", "Subresource": "", "Name": "",
            "KubernetesRequest": false, "ResourceRequest": true, "Path": "/", "ResourceScope": "Cluster",
        });
        if let (Some(base), Some(extra)) = (input.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        input
    }

    fn allows(policy: &str, rego_v0: bool, overrides: serde_json::Value) -> bool {
        let mut engine = engine(policy, rego_v0);
        let input = regorus::Value::from_json_str(&input(overrides).to_string()).expect("input");
        engine.set_input(input);
        engine
            .eval_bool_query("data.authz.allow".to_owned(), false)
            .expect("evaluation")
    }

    #[test]
    fn platform_admin_rego_allows_exactly_cluster_workspace_and_namespace_scopes() {
        for rego_v0 in [false, true] {
            for scope in ["Cluster", "Workspace", "Namespace"] {
                assert!(
                    allows(
                        PLATFORM_ADMIN_REGO,
                        rego_v0,
                        serde_json::json!({"ResourceScope": scope})
                    ),
                    "{scope}"
                );
            }
            for scope in ["Global", "", "cluster"] {
                assert!(
                    !allows(
                        PLATFORM_ADMIN_REGO,
                        rego_v0,
                        serde_json::json!({"ResourceScope": scope})
                    ),
                    "{scope}"
                );
            }
        }
    }

    #[test]
    fn authenticated_rego_allows_self_service() {
        let allowed = [
            serde_json::json!({"APIGroup": "iam.kubesphere.io", "Resource": "users", "Name": "alice", "Verb": "update", "ResourceScope": "Global"}),
            serde_json::json!({"APIGroup": "iam.kubesphere.io", "Resource": "workspacemembers", "Name": "alice", "Verb": "get"}),
            serde_json::json!({"Resource": "namespacemembers", "Name": "alice", "Verb": "watch"}),
            serde_json::json!({"ResourceRequest": false, "Verb": "GET", "Path": "/api/v1"}),
            serde_json::json!({"ResourceRequest": false, "Verb": "GET", "Path": "/api"}),
            serde_json::json!({"APIGroup": "tenant.kubesphere.io", "Resource": "clusters", "Verb": "list", "ResourceScope": "Global"}),
            serde_json::json!({"Namespace": "kubesphere-system", "Resource": "pods", "Subresource": "exec", "Name": "ks-managed-kubectl-alice", "Verb": "create"}),
        ];
        let denied = [
            serde_json::json!({"APIGroup": "iam.kubesphere.io", "Resource": "users", "Name": "bob", "Verb": "update"}),
            serde_json::json!({"APIGroup": "iam.kubesphere.io", "Resource": "users", "Name": "", "Verb": "list"}),
            serde_json::json!({"Resource": "workspacemembers", "Name": "alice", "Verb": "delete"}),
            serde_json::json!({"ResourceRequest": false, "Verb": "GET", "Path": "/apis"}),
            serde_json::json!({"ResourceRequest": false, "Verb": "POST", "Path": "/api"}),
            serde_json::json!({"APIGroup": "tenant.kubesphere.io", "Resource": "clusters", "Verb": "create"}),
            serde_json::json!({"APIGroup": "tenant.kubesphere.io", "Resource": "clusters", "Verb": "list", "KubernetesRequest": true}),
            serde_json::json!({"Namespace": "kubesphere-system", "Resource": "pods", "Subresource": "exec", "Name": "ks-managed-kubectl-bob"}),
            serde_json::json!({"Namespace": "default", "Resource": "pods", "Subresource": "exec", "Name": "ks-managed-kubectl-alice"}),
            serde_json::json!({"APIGroup": "apps", "Resource": "deployments", "Verb": "list"}),
        ];
        for rego_v0 in [false, true] {
            for case in &allowed {
                assert!(
                    allows(AUTHENTICATED_REGO, rego_v0, case.clone()),
                    "should allow {case}"
                );
            }
            for case in &denied {
                assert!(
                    !allows(AUTHENTICATED_REGO, rego_v0, case.clone()),
                    "should deny {case}"
                );
            }
        }
    }

    #[test]
    fn rego_overrides_are_on_the_right_roles() {
        assert_eq!(
            platform_admin()
                .annotations()
                .get(REGO_OVERRIDE_ANNOTATION)
                .map(String::as_str),
            Some(PLATFORM_ADMIN_REGO)
        );
        assert_eq!(
            authenticated()
                .annotations()
                .get(REGO_OVERRIDE_ANNOTATION)
                .map(String::as_str),
            Some(AUTHENTICATED_REGO)
        );
        let with_rego: Vec<String> = global_roles()
            .iter()
            .filter(|r| r.annotations().contains_key(REGO_OVERRIDE_ANNOTATION))
            .map(ResourceExt::name_any)
            .collect();
        assert_eq!(with_rego, [PLATFORM_ADMIN, AUTHENTICATED]);
    }

    #[test]
    fn global_roles_are_the_seven_of_kubesphere() {
        let names: Vec<String> = global_roles().iter().map(ResourceExt::name_any).collect();
        assert_eq!(
            names,
            [
                PLATFORM_ADMIN,
                PLATFORM_REGULAR,
                PLATFORM_SELF_PROVISIONER,
                AUTHENTICATED,
                ANONYMOUS,
                PRE_REGISTRATION,
                KS_CONSOLE
            ]
        );
        assert!(platform_regular().spec.rules.is_empty());
        let admin = platform_admin();
        assert_eq!(
            admin
                .annotations()
                .get(AUTO_AGGREGATE_ANNOTATION)
                .map(String::as_str),
            Some("true")
        );
        assert!(
            admin
                .spec
                .rules
                .iter()
                .any(|r| r.non_resource_urls.as_deref() == Some(&["*".to_owned()][..]))
        );
    }

    #[test]
    fn global_role_bindings_point_at_built_in_global_roles() {
        let roles: Vec<String> = global_roles().iter().map(ResourceExt::name_any).collect();
        let bindings = global_role_bindings();
        let names: Vec<String> = bindings.iter().map(ResourceExt::name_any).collect();
        assert_eq!(
            names,
            [
                ADMIN_BINDING,
                ANONYMOUS,
                AUTHENTICATED,
                PRE_REGISTRATION,
                KS_CONSOLE
            ]
        );
        for b in &bindings {
            assert_eq!(b.spec.role_ref.kind, GLOBAL_ROLE_KIND);
            assert_eq!(b.spec.role_ref.api_group, IAM_GROUP);
            assert!(roles.contains(&b.spec.role_ref.name), "{}", b.name_any());
            assert_eq!(b.labels().get(ROLE_REF_LABEL), Some(&b.spec.role_ref.name));
            assert!(!b.spec.subjects.is_empty());
        }
        let console = &bindings[4];
        assert_eq!(
            console.spec.subjects,
            [Subject {
                api_group: Some("kubesphere.io".into()),
                kind: "ServiceAccount".into(),
                name: "ks-console".into(),
                namespace: Some("kubesphere-system".into()),
            }]
        );
        assert_eq!(
            bindings[0].labels().get(USER_REF_LABEL).map(String::as_str),
            Some("admin")
        );
        let authenticated_groups: Vec<&str> = bindings[2]
            .spec
            .subjects
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(authenticated_groups, ["system:authenticated"]);
    }

    #[test]
    fn cluster_roles_are_admin_and_viewer() {
        let admin = cluster_admin();
        assert_eq!(
            admin.spec.rules,
            [rule(ALL, ALL, ALL), non_resource_rule(ALL, ALL)]
        );
        let selector = admin
            .spec
            .aggregation_role_templates
            .and_then(|a| a.role_selector)
            .expect("selector");
        assert_eq!(
            selector
                .match_labels
                .unwrap_or_default()
                .get(SCOPE_LABEL)
                .map(String::as_str),
            Some("cluster")
        );
        let viewer = cluster_viewer();
        assert_eq!(
            viewer.spec.rules,
            [rule(ALL, ALL, READ), non_resource_rule(ALL, &["GET"])]
        );
        assert_eq!(
            viewer
                .spec
                .aggregation_role_templates
                .map(|a| a.template_names.len()),
            Some(4)
        );
    }

    #[test]
    fn namespace_builtin_roles_embed_the_project_roles() {
        let roles = builtin_roles();
        let expected = [
            (PROJECT_ADMIN, namespace_admin_role()),
            (PROJECT_OPERATOR, namespace_operator_role()),
            (PROJECT_VIEWER, namespace_viewer_role()),
        ];
        for (builtin, (name, role)) in roles.iter().zip(expected) {
            assert_eq!(builtin.name_any(), name);
            assert_eq!(
                builtin.labels().get(SCOPE_LABEL).map(String::as_str),
                Some("namespace")
            );
            assert_eq!(
                builtin.spec.target_selector,
                selector(&[("kubesphere.io/managed", "true")])
            );
            assert_eq!(builtin.spec.role.0["kind"], ROLE_KIND);
            assert_eq!(builtin.spec.role.0["apiVersion"], "iam.kubesphere.io/v1beta1");
            assert_eq!(builtin.spec.role_as::<Role>().expect("embedded Role"), role);
        }
        let names: Vec<String> = expected_names(&roles[..3]);
        assert_eq!(names, ["admin", "operator", "viewer"]);
    }

    #[test]
    fn workspace_builtin_roles_embed_the_workspace_roles() {
        let roles = builtin_roles();
        let expected = [
            (WORKSPACE_ADMIN, workspace_admin_role()),
            (WORKSPACE_REGULAR, workspace_regular_role()),
            (WORKSPACE_SELF_PROVISIONER, workspace_self_provisioner_role()),
            (WORKSPACE_VIEWER, workspace_viewer_role()),
        ];
        assert_eq!(roles.len(), 7);
        for (builtin, (name, role)) in roles[3..].iter().zip(expected) {
            assert_eq!(builtin.name_any(), name);
            assert_eq!(
                builtin.labels().get(SCOPE_LABEL).map(String::as_str),
                Some("workspace")
            );
            assert_eq!(builtin.spec.target_selector, LabelSelector::default());
            assert_eq!(builtin.spec.role.0["kind"], "WorkspaceRole");
            assert_eq!(
                builtin
                    .spec
                    .role_as::<WorkspaceRole>()
                    .expect("embedded WorkspaceRole"),
                role
            );
        }
        let names: Vec<String> = expected_names(&roles[3..]);
        assert_eq!(names, ["admin", "regular", "self-provisioner", "viewer"]);
    }

    fn expected_names(roles: &[BuiltinRole]) -> Vec<String> {
        roles
            .iter()
            .map(|b| {
                b.spec.role.0["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn operator_may_change_workloads_but_not_rbac() {
        let operator = namespace_operator_role();
        let writes: Vec<&PolicyRule> = operator.spec.rules.iter().filter(|r| r.verbs == ["*"]).collect();
        assert_eq!(writes.len(), 1);
        let groups = writes[0].api_groups.as_deref().unwrap_or_default();
        assert!(groups.contains(&String::new()) && groups.contains(&"apps".to_owned()));
        assert!(
            !groups
                .iter()
                .any(|g| g == "*" || g == "rbac.authorization.k8s.io" || g == IAM_GROUP)
        );
    }

    #[test]
    fn self_provisioner_extends_regular_with_project_creation() {
        let regular = workspace_regular_role().spec.rules;
        let self_provisioner = workspace_self_provisioner_role().spec.rules;
        assert_eq!(self_provisioner[..regular.len()], regular[..]);
        assert_eq!(
            self_provisioner[regular.len()..],
            [rule(&[TENANT_GROUP], &["namespaces"], &["create"])]
        );
    }

    #[test]
    fn built_in_objects_carry_a_parseable_description() {
        let descriptions = global_roles()
            .iter()
            .map(|r| r.annotations().get(DESCRIPTION_ANNOTATION).cloned())
            .chain(
                cluster_roles()
                    .iter()
                    .map(|r| r.annotations().get(DESCRIPTION_ANNOTATION).cloned()),
            )
            .collect::<Vec<_>>();
        for d in descriptions {
            let d = d.expect("description");
            let v: serde_json::Value = serde_json::from_str(&d).expect("JSON description");
            assert!(v["en"].is_string() && v["zh"].is_string(), "{d}");
        }
    }
}
