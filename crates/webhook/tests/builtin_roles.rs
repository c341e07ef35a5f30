//! No built-in role lets its holder grant itself more through the workspace and namespace controllers.
//!
//! Every built-in role (each GlobalRole, ClusterRole, workspace BuiltinRole instantiated as a WorkspaceRole
//! of workspace `ws-a`, and namespace BuiltinRole instantiated as a Role of namespace `ns-a` in `ws-a`) is
//! bound alone to an attacker, and the attacker tries every controller path to a grant: manager changes,
//! finalizer removal, namespace relabelling, `/finalize`, pod-security labels and namespace creation into a
//! workspace. The decision is [`ksiam_webhook::decide`] over a real ksiam-rbac `PolicyStore` built from the
//! built-in roles, converted as the authorizer converts watched objects.
//!
//! Only roles that already hold everything in a scope may act on it: `platform-admin` and `cluster-admin`
//! everywhere, the workspace `admin` in its own workspace (manager and finalizer only: moving namespaces
//! needs Cluster scope), and the workspace `admin` and `self-provisioner` may create namespaces in their own
//! workspace.

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::UserInfo;
use ksiam_api::builtin;
use ksiam_api::constants::{
    AUTHENTICATED_BY_EXTRA, AUTHENTICATED_BY_KSIAM, AUTHENTICATED_GROUP, CASCADING_DELETION_FINALIZER,
    SCOPE_LABEL, SCOPE_LABEL_NAMESPACE, SCOPE_LABEL_WORKSPACE, WORKSPACE_LABEL,
};
use ksiam_api::iam::{Role, WorkspaceRole};
use ksiam_authz::convert;
use ksiam_rbac::model::{self, Binding, BindingKind, Policy, RoleKind, RoleRef, Subject};
use ksiam_rbac::{Authorizer, Mode, PolicyIndex, PolicyStore};
use ksiam_webhook::admission::{Change, PolicyAuthorizer, workspace_role_name};
use ksiam_webhook::decide;
use kube::ResourceExt;
use kube::core::admission::Operation;
use serde_json::{Value, json};

const OWN_WS: &str = "ws-a";
const OTHER_WS: &str = "ws-b";
const OWN_NS: &str = "ns-a";
const OTHER_NS: &str = "ns-b";
const SA_NAME: &str = "attacker";

/// A built-in role and how it is bound to the attacker.
#[derive(Clone, Debug)]
struct Bound {
    label: String,
    role: model::Role,
    binding_kind: BindingKind,
}

/// Every built-in role, instantiated where a binding can reach it.
fn every_builtin_role() -> Vec<Bound> {
    let mut all = Vec::new();
    for role in builtin::global_roles() {
        all.push(Bound {
            label: format!("GlobalRole {}", role.name_any()),
            role: convert::global_role(&role).expect("convert"),
            binding_kind: BindingKind::GlobalRoleBinding,
        });
    }
    for role in builtin::cluster_roles() {
        all.push(Bound {
            label: format!("ClusterRole {}", role.name_any()),
            role: convert::cluster_role(&role).expect("convert"),
            binding_kind: BindingKind::ClusterRoleBinding,
        });
    }
    for template in builtin::builtin_roles() {
        let scope = template.labels().get(SCOPE_LABEL).cloned().unwrap_or_default();
        if scope == SCOPE_LABEL_WORKSPACE {
            let mut role: WorkspaceRole = template.spec.role_as().expect("WorkspaceRole");
            let name = workspace_role_name(OWN_WS, &role.name_any());
            role.metadata.name = Some(name);
            all.push(Bound {
                label: format!(
                    "WorkspaceRole {} (BuiltinRole {})",
                    role.name_any(),
                    template.name_any()
                ),
                role: convert::workspace_role(&role).expect("convert"),
                binding_kind: BindingKind::WorkspaceRoleBinding,
            });
        } else {
            assert_eq!(
                scope,
                SCOPE_LABEL_NAMESPACE,
                "BuiltinRole {}",
                template.name_any()
            );
            let mut role: Role = template.spec.role_as().expect("Role");
            role.metadata.namespace = Some(OWN_NS.to_owned());
            all.push(Bound {
                label: format!(
                    "Role {OWN_NS}/{} (BuiltinRole {})",
                    role.name_any(),
                    template.name_any()
                ),
                role: convert::namespaced_role(&role).expect("convert"),
                binding_kind: BindingKind::RoleBinding,
            });
        }
    }
    all
}

/// Every built-in role in both workspaces and namespaces, the built-in GlobalRoleBindings, and `bound`
/// bound to `subject`.
fn policy(bound: &Bound, subject: Subject) -> Policy {
    let mut policy = Policy::default();
    for role in builtin::global_roles() {
        policy.roles.push(convert::global_role(&role).expect("convert"));
    }
    for role in builtin::cluster_roles() {
        policy.roles.push(convert::cluster_role(&role).expect("convert"));
    }
    for (ws, ns) in [(OWN_WS, OWN_NS), (OTHER_WS, OTHER_NS)] {
        for template in builtin::builtin_roles() {
            if template.labels().get(SCOPE_LABEL).map(String::as_str) == Some(SCOPE_LABEL_WORKSPACE) {
                let mut role: WorkspaceRole = template.spec.role_as().expect("WorkspaceRole");
                role.metadata.name = Some(workspace_role_name(ws, &role.name_any()));
                policy
                    .roles
                    .push(convert::workspace_role(&role).expect("convert"));
            } else {
                let mut role: Role = template.spec.role_as().expect("Role");
                role.metadata.namespace = Some(ns.to_owned());
                policy
                    .roles
                    .push(convert::namespaced_role(&role).expect("convert"));
            }
        }
        policy.namespaces.push(model::Namespace {
            name: ns.to_owned(),
            workspace: Some(ws.to_owned()),
        });
    }
    for binding in builtin::global_role_bindings() {
        policy
            .bindings
            .push(convert::global_role_binding(&binding).expect("convert"));
    }
    let role_kind = match bound.role.kind {
        RoleKind::GlobalRole => "GlobalRole",
        RoleKind::ClusterRole => "ClusterRole",
        RoleKind::WorkspaceRole => "WorkspaceRole",
        RoleKind::Role => "Role",
    };
    policy.bindings.push(Binding {
        kind: bound.binding_kind,
        namespace: if bound.binding_kind == BindingKind::RoleBinding {
            OWN_NS.to_owned()
        } else {
            String::new()
        },
        name: "attacker-binding".to_owned(),
        workspace: (bound.binding_kind == BindingKind::WorkspaceRoleBinding).then(|| OWN_WS.to_owned()),
        role_ref: RoleRef {
            api_group: "iam.kubesphere.io".to_owned(),
            kind: role_kind.to_owned(),
            name: bound.role.name.clone(),
        },
        subjects: vec![subject],
    });
    policy
}

/// The two kinds of KubeSphere identity, both carrying the ksiam marker: a ServiceAccount and a User.
fn identities() -> Vec<(UserInfo, Subject)> {
    let marker = || {
        Some(
            [(
                AUTHENTICATED_BY_EXTRA.to_owned(),
                vec![AUTHENTICATED_BY_KSIAM.to_owned()],
            )]
            .into_iter()
            .collect(),
        )
    };
    let sa = UserInfo {
        username: Some(format!("kubesphere:serviceaccount:{OWN_NS}:{SA_NAME}")),
        groups: Some(vec![AUTHENTICATED_GROUP.to_owned()]),
        extra: marker(),
        ..UserInfo::default()
    };
    let sa_subject = Subject {
        kind: "ServiceAccount".to_owned(),
        api_group: "kubesphere.io".to_owned(),
        name: SA_NAME.to_owned(),
        namespace: OWN_NS.to_owned(),
    };
    let user = UserInfo {
        username: Some("mallory".to_owned()),
        groups: Some(vec![AUTHENTICATED_GROUP.to_owned()]),
        extra: marker(),
        ..UserInfo::default()
    };
    let user_subject = Subject {
        kind: "User".to_owned(),
        api_group: "iam.kubesphere.io".to_owned(),
        name: "mallory".to_owned(),
        namespace: String::new(),
    };
    vec![(sa, sa_subject), (user, user_subject)]
}

fn workspace(name: &str, manager: &str, finalizer: bool) -> Value {
    let finalizers: Vec<&str> = if finalizer {
        vec![CASCADING_DELETION_FINALIZER]
    } else {
        Vec::new()
    };
    json!({
        "apiVersion": "tenant.kubesphere.io/v1beta1",
        "kind": "WorkspaceTemplate",
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": {"template": {"spec": {"manager": manager}}},
    })
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// One attempt: a change and the roles (by label) allowed to make it.
struct Attempt {
    what: String,
    operation: Operation,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    name: String,
    object: Option<Value>,
    old_object: Option<Value>,
    allowed_for: Vec<&'static str>,
}

/// Roles holding everything everywhere below Global scope.
const EVERYWHERE: [&str; 2] = ["GlobalRole platform-admin", "ClusterRole cluster-admin"];

fn attempts(me: &str) -> Vec<Attempt> {
    let own_ws_admin = "WorkspaceRole ws-a-admin (BuiltinRole workspace-admin)";
    let own_ws_creator = "WorkspaceRole ws-a-self-provisioner (BuiltinRole workspace-self-provisioner)";
    let with = |extra: &[&'static str]| {
        let mut all = EVERYWHERE.to_vec();
        all.extend_from_slice(extra);
        all
    };
    let mut out = Vec::new();
    for (ws, extra) in [(OWN_WS, vec![own_ws_admin]), (OTHER_WS, vec![])] {
        out.push(Attempt {
            what: format!("make itself manager of {ws}"),
            operation: Operation::Update,
            group: "tenant.kubesphere.io",
            resource: "workspacetemplates",
            subresource: "",
            name: ws.to_owned(),
            object: Some(workspace(ws, me, true)),
            old_object: Some(workspace(ws, "admin", true)),
            allowed_for: with(&extra),
        });
        out.push(Attempt {
            what: format!("remove the cascading-deletion finalizer of {ws}"),
            operation: Operation::Update,
            group: "tenant.kubesphere.io",
            resource: "workspacetemplates",
            subresource: "",
            name: ws.to_owned(),
            object: Some(workspace(ws, "admin", false)),
            old_object: Some(workspace(ws, "admin", true)),
            allowed_for: with(&extra),
        });
    }
    out.push(Attempt {
        what: "create a workspace managed by someone else".to_owned(),
        operation: Operation::Create,
        group: "tenant.kubesphere.io",
        resource: "workspacetemplates",
        subresource: "",
        name: "ws-new".to_owned(),
        object: Some(workspace("ws-new", "victim", false)),
        old_object: None,
        allowed_for: with(&[]),
    });
    let in_own = [(WORKSPACE_LABEL, OWN_WS)];
    out.push(Attempt {
        what: format!("move {OWN_NS} to {OTHER_WS}"),
        operation: Operation::Update,
        group: "",
        resource: "namespaces",
        subresource: "",
        name: OWN_NS.to_owned(),
        object: Some(namespace(OWN_NS, &[(WORKSPACE_LABEL, OTHER_WS)])),
        old_object: Some(namespace(OWN_NS, &in_own)),
        allowed_for: with(&[]),
    });
    out.push(Attempt {
        what: format!("take {OTHER_NS} into {OWN_WS}"),
        operation: Operation::Update,
        group: "",
        resource: "namespaces",
        subresource: "",
        name: OTHER_NS.to_owned(),
        object: Some(namespace(OTHER_NS, &in_own)),
        old_object: Some(namespace(OTHER_NS, &[(WORKSPACE_LABEL, OTHER_WS)])),
        allowed_for: with(&[]),
    });
    out.push(Attempt {
        what: format!("weaken the pod security of {OWN_NS}"),
        operation: Operation::Update,
        group: "",
        resource: "namespaces",
        subresource: "",
        name: OWN_NS.to_owned(),
        object: Some(namespace(
            OWN_NS,
            &[in_own[0], ("pod-security.kubernetes.io/enforce", "privileged")],
        )),
        old_object: Some(namespace(
            OWN_NS,
            &[in_own[0], ("pod-security.kubernetes.io/enforce", "restricted")],
        )),
        allowed_for: with(&[]),
    });
    out.push(Attempt {
        what: format!("finalize {OWN_NS}"),
        operation: Operation::Update,
        group: "",
        resource: "namespaces",
        subresource: "finalize",
        name: OWN_NS.to_owned(),
        object: Some(namespace(OWN_NS, &in_own)),
        old_object: Some(namespace(OWN_NS, &in_own)),
        allowed_for: with(&[]),
    });
    for (ws, extra) in [(OWN_WS, vec![own_ws_admin, own_ws_creator]), (OTHER_WS, vec![])] {
        out.push(Attempt {
            what: format!("create a namespace in {ws}"),
            operation: Operation::Create,
            group: "",
            resource: "namespaces",
            subresource: "",
            name: "ns-new".to_owned(),
            object: Some(namespace("ns-new", &[(WORKSPACE_LABEL, ws)])),
            old_object: None,
            allowed_for: with(&extra),
        });
    }
    // An ordinary label is nobody's business here (the authorizer already allowed the update).
    out.push(Attempt {
        what: format!("set an ordinary label on {OWN_NS}"),
        operation: Operation::Update,
        group: "",
        resource: "namespaces",
        subresource: "",
        name: OWN_NS.to_owned(),
        object: Some(namespace(OWN_NS, &[in_own[0], ("team", "blue")])),
        old_object: Some(namespace(OWN_NS, &in_own)),
        allowed_for: vec!["*"],
    });
    out
}

#[test]
fn no_builtin_role_grants_more_than_itself_through_the_controllers() {
    let roles = every_builtin_role();
    // The walk covers every built-in role, so a new one is checked without editing this test.
    assert_eq!(
        roles.len(),
        builtin::global_roles().len() + builtin::cluster_roles().len() + builtin::builtin_roles().len()
    );
    let mut checked = 0;
    let mut failures = Vec::new();
    for bound in &roles {
        for (user, subject) in identities() {
            let store = Arc::new(PolicyStore::new(PolicyIndex::build(&policy(bound, subject))));
            store.set_ready(true);
            let authz = PolicyAuthorizer::new(Authorizer::new(Mode::Rbac), store);
            let me = user.username.clone().unwrap_or_default();
            for attempt in attempts(&me) {
                let change = Change {
                    operation: &attempt.operation,
                    group: attempt.group,
                    resource: attempt.resource,
                    subresource: attempt.subresource,
                    name: &attempt.name,
                    user: &user,
                    object: attempt.object.as_ref(),
                    old_object: attempt.old_object.as_ref(),
                };
                let expected =
                    attempt.allowed_for.contains(&"*") || attempt.allowed_for.contains(&bound.label.as_str());
                let got = decide(&change, &authz);
                checked += 1;
                match (&got, expected) {
                    (Ok(()), true) => {}
                    (Err(refusal), false) => {
                        assert_eq!(refusal.code, 403, "{}: {refusal:?}", bound.label);
                        assert!(refusal.message.contains(&me), "{}", refusal.message);
                    }
                    _ => failures.push(format!(
                        "{} as {me}: {} → {got:?}, expected {}",
                        bound.label,
                        attempt.what,
                        if expected { "allowed" } else { "denied" }
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= roles.len() * 2 * 10, "{checked}");
}
