//! Built-in role provisioning (spec §10.1).
//!
//! - Every `WorkspaceTemplate` gets the workspace-scoped BuiltinRoles whose `targetSelector` matches its labels,
//!   as WorkspaceRoles `<ws>-<role>` labelled `kubesphere.io/workspace=<ws>`. So `system-workspace-admin`
//!   exists once `system-workspace` does.
//! - On its first reconcile only (while the finalizer `kubesphere.io/cascading-deletion` is absent, as
//!   upstream), a WorkspaceTemplate with a manager gets the WorkspaceRoleBinding `<ws>-admin` for that manager,
//!   by a create: an existing binding is left exactly as it is, and a later change of `manager` grants
//!   nothing (the built-in GlobalRole `authenticated` may patch WorkspaceTemplates, so granting on every
//!   change would make any user the admin of any workspace). Then the finalizer is added; it is removed when
//!   the WorkspaceTemplate is deleted.
//! - Every Namespace labelled `kubesphere.io/workspace` gets the namespace-scoped BuiltinRoles (`admin`,
//!   `operator`, `viewer`) whose `targetSelector` matches its labels.
//!
//! Upstream also deletes every iam Role and RoleBinding of a namespace that has no workspace label. That
//! destroys user data on a label change, so ksiam does not do it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::Namespace,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use ksiam_api::{
    constants as c,
    iam::{BuiltinRole, Role, WorkspaceRole, WorkspaceRoleBinding, WorkspaceRoleBindingSpec},
    tenant::WorkspaceTemplate,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use tracing::{info, warn};

use crate::Error;

const FIELD_MANAGER: &str = "ksiam-role-provisioner";
const RESYNC: Duration = Duration::from_secs(600);

/// Whether `labels` match `selector` (matchLabels and matchExpressions; an empty selector matches all).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

pub use ksiam_api::builtin::workspace_role_name;

async fn builtin_roles(client: &Client, scope: &str) -> Result<Vec<BuiltinRole>, Error> {
    let api: Api<BuiltinRole> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default().labels(&format!("{}={scope}", c::SCOPE_LABEL)))
        .await?
        .items)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Runs both provisioners until the futures made by `shutdown` resolve.
pub async fn run<F>(client: Client, readiness: crate::Readiness, shutdown: impl Fn() -> F)
where
    F: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    let ctx = Arc::new(client.clone());
    let templates = Controller::new(
        Api::<WorkspaceTemplate>::all(client.clone()),
        watcher::Config::default(),
    );
    tokio::spawn(
        readiness
            .register("workspace-roles")
            .when_synced(templates.store()),
    );
    let templates = templates
        .graceful_shutdown_on(shutdown())
        .run(reconcile_workspace, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "workspace role provisioning failed");
            }
        });
    let namespaces = Controller::new(
        Api::<Namespace>::all(client),
        watcher::Config::default().labels(c::WORKSPACE_LABEL),
    );
    tokio::spawn(
        readiness
            .register("namespace-roles")
            .when_synced(namespaces.store()),
    );
    let namespaces = namespaces
        .graceful_shutdown_on(shutdown())
        .run(reconcile_namespace, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "namespace role provisioning failed");
            }
        });
    futures::join!(templates, namespaces);
}

fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Client>) -> Action {
    warn!(%error, "requeueing role provisioning");
    Action::requeue(Duration::from_secs(5))
}

/// Instantiates the workspace-scoped built-in roles for one WorkspaceTemplate.
pub async fn reconcile_workspace(wt: Arc<WorkspaceTemplate>, client: Arc<Client>) -> Result<Action, Error> {
    let templates: Api<WorkspaceTemplate> = Api::all((*client).clone());
    let initialised = wt
        .finalizers()
        .iter()
        .any(|f| f == c::CASCADING_DELETION_FINALIZER);
    if wt.metadata.deletion_timestamp.is_some() {
        if initialised {
            set_finalizers(&templates, &wt, without_cascading_deletion(wt.finalizers())).await?;
        }
        return Ok(Action::await_change());
    }
    let ws = wt.name_any();
    let roles: Api<WorkspaceRole> = Api::all((*client).clone());
    for builtin in builtin_roles(&client, c::SCOPE_LABEL_WORKSPACE).await? {
        if !selector_matches(&builtin.spec.target_selector, wt.labels()) {
            continue;
        }
        let mut role: WorkspaceRole = match builtin.spec.role_as() {
            Ok(r) => r,
            Err(e) => {
                warn!(builtin = %builtin.name_any(), error = %e, "BuiltinRole does not embed a WorkspaceRole");
                continue;
            }
        };
        let name = workspace_role_name(&ws, &role.name_any());
        role.metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(merged(
                role.metadata.labels.take(),
                [(c::WORKSPACE_LABEL, ws.as_str())],
            )),
            annotations: role.metadata.annotations.take(),
            ..Default::default()
        };
        roles.patch(&name, &apply_params(), &Patch::Apply(&role)).await?;
    }
    if !initialised {
        if let Some(binding) = manager_binding(&wt) {
            create_once(&client, &binding).await?;
        }
        let mut finalizers = wt.finalizers().to_vec();
        finalizers.push(c::CASCADING_DELETION_FINALIZER.to_owned());
        set_finalizers(&templates, &wt, finalizers).await?;
    }
    info!(workspace = %ws, "workspace roles provisioned");
    Ok(Action::requeue(RESYNC))
}

/// The WorkspaceRoleBinding `<ws>-admin` that makes the WorkspaceTemplate's manager (if any) its admin.
pub fn manager_binding(wt: &WorkspaceTemplate) -> Option<WorkspaceRoleBinding> {
    let manager = wt.manager().filter(|m| !m.is_empty())?;
    let ws = wt.name_any();
    let admin = workspace_role_name(&ws, "admin");
    let name = format!("{ws}-admin");
    Some(WorkspaceRoleBinding {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(merged(
                None,
                [
                    (c::WORKSPACE_LABEL, ws.as_str()),
                    (c::USER_REF_LABEL, manager),
                    (c::ROLE_REF_LABEL, admin.as_str()),
                ],
            )),
            ..Default::default()
        },
        spec: WorkspaceRoleBindingSpec {
            subjects: vec![k8s_openapi::api::rbac::v1::Subject {
                api_group: Some(c::IAM_GROUP.into()),
                kind: c::USER_SUBJECT_KIND.into(),
                name: manager.into(),
                namespace: None,
            }],
            role_ref: k8s_openapi::api::rbac::v1::RoleRef {
                api_group: c::IAM_GROUP.into(),
                kind: c::WORKSPACE_ROLE_KIND.into(),
                name: admin,
            },
        },
    })
}

/// Creates `binding` unless a binding of that name exists, which is then left exactly as it is.
async fn create_once(client: &Client, binding: &WorkspaceRoleBinding) -> Result<(), Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match Api::<WorkspaceRoleBinding>::all(client.clone())
        .create(&params, binding)
        .await
    {
        Ok(_) => {
            info!(binding = %binding.name_any(), "workspace manager bound");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `finalizers` without `kubesphere.io/cascading-deletion`.
pub fn without_cascading_deletion(finalizers: &[String]) -> Vec<String> {
    finalizers
        .iter()
        .filter(|f| *f != c::CASCADING_DELETION_FINALIZER)
        .cloned()
        .collect()
}

/// Writes the WorkspaceTemplate's finalizers, conditional on the resourceVersion read (a conflict requeues).
async fn set_finalizers(
    templates: &Api<WorkspaceTemplate>,
    wt: &WorkspaceTemplate,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": wt.resource_version() },
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match templates
        .patch(&wt.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Instantiates the namespace-scoped built-in roles in one namespace that belongs to a workspace.
pub async fn reconcile_namespace(ns: Arc<Namespace>, client: Arc<Client>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_some() || !ns.labels().contains_key(c::WORKSPACE_LABEL) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let roles: Api<Role> = Api::namespaced((*client).clone(), &name);
    for builtin in builtin_roles(&client, c::SCOPE_LABEL_NAMESPACE).await? {
        if !selector_matches(&builtin.spec.target_selector, ns.labels()) {
            continue;
        }
        let mut role: Role = match builtin.spec.role_as() {
            Ok(r) => r,
            Err(e) => {
                warn!(builtin = %builtin.name_any(), error = %e, "BuiltinRole does not embed a Role");
                continue;
            }
        };
        let role_name = role.name_any();
        role.metadata = ObjectMeta {
            name: Some(role_name.clone()),
            namespace: Some(name.clone()),
            labels: role.metadata.labels.take(),
            annotations: role.metadata.annotations.take(),
            ..Default::default()
        };
        roles
            .patch(&role_name, &apply_params(), &Patch::Apply(&role))
            .await?;
    }
    Ok(Action::requeue(RESYNC))
}

fn merged<'a>(
    base: Option<BTreeMap<String, String>>,
    extra: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    let mut m = base.unwrap_or_default();
    m.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
    m
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    #[test]
    fn selectors() {
        let labels = BTreeMap::from([("kubesphere.io/managed".to_owned(), "true".to_owned())]);
        assert!(selector_matches(&LabelSelector::default(), &labels));
        let s = LabelSelector {
            match_labels: Some(BTreeMap::from([("kubesphere.io/managed".into(), "true".into())])),
            ..Default::default()
        };
        assert!(selector_matches(&s, &labels));
        assert!(!selector_matches(&s, &BTreeMap::new()));
        let e = |op: &str, values: Option<Vec<String>>| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubesphere.io/managed".into(),
                operator: op.into(),
                values,
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&e("In", Some(vec!["true".into()])), &labels));
        assert!(!selector_matches(&e("NotIn", Some(vec!["true".into()])), &labels));
        assert!(selector_matches(&e("Exists", None), &labels));
        assert!(!selector_matches(&e("DoesNotExist", None), &labels));
        assert!(!selector_matches(&e("Bogus", None), &labels));
    }

    #[test]
    fn the_manager_binding_names_the_manager_and_the_admin_role() {
        let mut wt: WorkspaceTemplate = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenant.kubesphere.io/v1beta1",
            "kind": "WorkspaceTemplate",
            "metadata": {"name": "ws1"},
            "spec": {"template": {"spec": {"manager": "alice"}}},
        }))
        .unwrap();
        let b = manager_binding(&wt).unwrap();
        assert_eq!(b.name_any(), "ws1-admin");
        assert_eq!(b.spec.role_ref.name, "ws1-admin");
        assert_eq!(b.spec.subjects.len(), 1);
        assert_eq!(b.spec.subjects[0].name, "alice");
        assert_eq!(b.labels()[c::USER_REF_LABEL], "alice");
        wt.spec.template.spec.manager = Some(String::new());
        assert!(manager_binding(&wt).is_none(), "no manager, no binding");
        wt.spec.template.spec.manager = None;
        assert!(manager_binding(&wt).is_none());
    }

    #[test]
    fn only_the_cascading_deletion_finalizer_is_removed() {
        let f = vec![
            "a".to_owned(),
            c::CASCADING_DELETION_FINALIZER.to_owned(),
            "b".to_owned(),
        ];
        assert_eq!(without_cascading_deletion(&f), ["a", "b"]);
    }

    #[test]
    fn long_workspace_names_are_hashed() {
        assert_eq!(
            workspace_role_name("system-workspace", "admin"),
            "system-workspace-admin"
        );
        let long = "w".repeat(60);
        let n = workspace_role_name(&long, "admin");
        assert!(n.starts_with("admin.") && n.len() <= 63, "{n}");
        assert_ne!(n, workspace_role_name(&"v".repeat(60), "admin"));
    }
}
