//! Kubernetes objects → the policy model of [`ksiam_rbac::model`].
//!
//! The conversion keeps exactly what the evaluation reads: rules, the rego-override annotation, `roleRef`,
//! subjects, and the `kubesphere.io/workspace` label of WorkspaceRoleBindings and Namespaces. It never
//! fails on a well-formed object; [`ConvertError`] covers objects without a name (or a namespaced kind
//! without a namespace), which the API server never returns but a hand-made object might be.

use k8s_openapi::api::{
    core::v1::Namespace as KubeNamespace,
    rbac::v1::{PolicyRule as KubeRule, RoleRef as KubeRoleRef, Subject as KubeSubject},
};
use ksiam_api::{
    constants::WORKSPACE_LABEL,
    iam::{
        ClusterRole, ClusterRoleBinding, GlobalRole, GlobalRoleBinding, IamRole, IamRoleBinding, Role,
        RoleBinding, WorkspaceRole, WorkspaceRoleBinding,
    },
};
use ksiam_rbac::model::{self, Binding, BindingKind, Namespace, PolicyRule, RoleKind, RoleRef, Subject};
use kube::ResourceExt;

/// Why an object could not be converted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// `metadata.name` is missing or empty.
    #[error("{kind} has no metadata.name")]
    NoName {
        /// The object kind.
        kind: &'static str,
    },
    /// A namespaced object has no `metadata.namespace`.
    #[error("{kind} {name:?} has no metadata.namespace")]
    NoNamespace {
        /// The object kind.
        kind: &'static str,
        /// The object name.
        name: String,
    },
}

fn name_of<K: kube::Resource>(obj: &K, kind: &'static str) -> Result<String, ConvertError> {
    match obj.meta().name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err(ConvertError::NoName { kind }),
    }
}

fn namespace_of<K: kube::Resource>(obj: &K, kind: &'static str, name: &str) -> Result<String, ConvertError> {
    match obj.meta().namespace.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err(ConvertError::NoNamespace {
            kind,
            name: name.to_owned(),
        }),
    }
}

/// A Kubernetes `PolicyRule` as the model's.
pub fn rule(r: &KubeRule) -> PolicyRule {
    PolicyRule {
        verbs: r.verbs.clone(),
        api_groups: r.api_groups.clone().unwrap_or_default(),
        resources: r.resources.clone().unwrap_or_default(),
        resource_names: r.resource_names.clone().unwrap_or_default(),
        non_resource_urls: r.non_resource_urls.clone().unwrap_or_default(),
    }
}

/// A Kubernetes `Subject` as the model's.
pub fn subject(s: &KubeSubject) -> Subject {
    Subject {
        kind: s.kind.clone(),
        api_group: s.api_group.clone().unwrap_or_default(),
        name: s.name.clone(),
        namespace: s.namespace.clone().unwrap_or_default(),
    }
}

fn role_ref(r: &KubeRoleRef) -> RoleRef {
    RoleRef {
        api_group: r.api_group.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
    }
}

/// Converts a role of any kind. The rego override is kept only when non-empty.
pub fn role<K: IamRole>(obj: &K, kind: RoleKind) -> Result<model::Role, ConvertError> {
    let name = name_of(obj, kind.as_str())?;
    let namespace = if kind == RoleKind::Role {
        namespace_of(obj, kind.as_str(), &name)?
    } else {
        String::new()
    };
    Ok(model::Role {
        kind,
        namespace,
        name,
        rules: obj.rules().iter().map(rule).collect(),
        rego: obj
            .rego_override()
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned),
    })
}

/// Converts a binding of any kind. The workspace label is kept for WorkspaceRoleBindings only (the
/// evaluation never reads it on the others).
pub fn binding<K: IamRoleBinding>(obj: &K, kind: BindingKind) -> Result<Binding, ConvertError> {
    let name = name_of(obj, kind.as_str())?;
    let namespace = if kind == BindingKind::RoleBinding {
        namespace_of(obj, kind.as_str(), &name)?
    } else {
        String::new()
    };
    let workspace = if kind == BindingKind::WorkspaceRoleBinding {
        obj.labels().get(WORKSPACE_LABEL).cloned()
    } else {
        None
    };
    Ok(Binding {
        kind,
        namespace,
        name,
        workspace,
        role_ref: role_ref(obj.role_ref()),
        subjects: obj.subjects().iter().map(subject).collect(),
    })
}

/// Converts a core Namespace (its name and workspace label).
pub fn namespace(obj: &KubeNamespace) -> Result<Namespace, ConvertError> {
    Ok(Namespace {
        name: name_of(obj, "Namespace")?,
        workspace: obj.labels().get(WORKSPACE_LABEL).cloned(),
    })
}

/// A [`GlobalRole`].
pub fn global_role(obj: &GlobalRole) -> Result<model::Role, ConvertError> {
    role(obj, RoleKind::GlobalRole)
}

/// A [`WorkspaceRole`].
pub fn workspace_role(obj: &WorkspaceRole) -> Result<model::Role, ConvertError> {
    role(obj, RoleKind::WorkspaceRole)
}

/// An iam [`ClusterRole`].
pub fn cluster_role(obj: &ClusterRole) -> Result<model::Role, ConvertError> {
    role(obj, RoleKind::ClusterRole)
}

/// An iam [`Role`].
pub fn namespaced_role(obj: &Role) -> Result<model::Role, ConvertError> {
    role(obj, RoleKind::Role)
}

/// A [`GlobalRoleBinding`].
pub fn global_role_binding(obj: &GlobalRoleBinding) -> Result<Binding, ConvertError> {
    binding(obj, BindingKind::GlobalRoleBinding)
}

/// A [`WorkspaceRoleBinding`].
pub fn workspace_role_binding(obj: &WorkspaceRoleBinding) -> Result<Binding, ConvertError> {
    binding(obj, BindingKind::WorkspaceRoleBinding)
}

/// An iam [`ClusterRoleBinding`].
pub fn cluster_role_binding(obj: &ClusterRoleBinding) -> Result<Binding, ConvertError> {
    binding(obj, BindingKind::ClusterRoleBinding)
}

/// An iam [`RoleBinding`].
pub fn role_binding(obj: &RoleBinding) -> Result<Binding, ConvertError> {
    binding(obj, BindingKind::RoleBinding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
        serde_json::from_value(v).expect("valid object")
    }

    fn rules_json() -> serde_json::Value {
        json!([
            {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"], "resourceNames": ["p"]},
            {"verbs": ["GET"], "nonResourceURLs": ["/healthz"]}
        ])
    }

    fn expected_rules() -> Vec<PolicyRule> {
        vec![
            PolicyRule {
                verbs: vec!["get".into(), "list".into()],
                api_groups: vec!["".into()],
                resources: vec!["pods".into(), "pods/log".into()],
                resource_names: vec!["p".into()],
                non_resource_urls: vec![],
            },
            PolicyRule {
                verbs: vec!["GET".into()],
                non_resource_urls: vec!["/healthz".into()],
                ..Default::default()
            },
        ]
    }

    fn role_json(kind: &str, namespace: Option<&str>, rego: Option<&str>) -> serde_json::Value {
        let mut meta = json!({"name": "r"});
        if let Some(ns) = namespace {
            meta["namespace"] = json!(ns);
        }
        if let Some(rego) = rego {
            meta["annotations"] = json!({"iam.kubesphere.io/rego-override": rego});
        }
        json!({"apiVersion": "iam.kubesphere.io/v1beta1", "kind": kind, "metadata": meta, "rules": rules_json()})
    }

    #[test]
    fn roles_of_each_kind() {
        let g = global_role(&parse(role_json(
            "GlobalRole",
            None,
            Some("package authz\nallow := true"),
        )))
        .unwrap();
        assert_eq!(g.kind, RoleKind::GlobalRole);
        assert_eq!((g.name.as_str(), g.namespace.as_str()), ("r", ""));
        assert_eq!(g.rules, expected_rules());
        assert_eq!(g.rego.as_deref(), Some("package authz\nallow := true"));

        let w = workspace_role(&parse(role_json("WorkspaceRole", None, Some("  ")))).unwrap();
        assert_eq!(w.kind, RoleKind::WorkspaceRole);
        assert_eq!(w.rego, None, "a blank rego override is no override");

        let c = cluster_role(&parse(role_json("ClusterRole", None, None))).unwrap();
        assert_eq!(c.kind, RoleKind::ClusterRole);
        assert_eq!(c.rules, expected_rules());

        let r = namespaced_role(&parse(role_json("Role", Some("ns1"), None))).unwrap();
        assert_eq!((r.kind, r.namespace.as_str()), (RoleKind::Role, "ns1"));
        assert_eq!(
            namespaced_role(&parse(role_json("Role", None, None))),
            Err(ConvertError::NoNamespace {
                kind: "Role",
                name: "r".into()
            })
        );
        let mut nameless = role_json("GlobalRole", None, None);
        nameless["metadata"] = json!({});
        assert_eq!(
            global_role(&parse(nameless)),
            Err(ConvertError::NoName { kind: "GlobalRole" })
        );
    }

    fn binding_json(kind: &str, namespace: Option<&str>, workspace: Option<&str>) -> serde_json::Value {
        let mut meta = json!({"name": "b"});
        if let Some(ns) = namespace {
            meta["namespace"] = json!(ns);
        }
        if let Some(ws) = workspace {
            meta["labels"] = json!({"kubesphere.io/workspace": ws});
        }
        json!({
            "apiVersion": "iam.kubesphere.io/v1beta1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "X", "name": "admin"},
            "subjects": [
                {"kind": "ServiceAccount", "apiGroup": "kubesphere.io", "name": "sample", "namespace": "default"},
                {"kind": "ServiceAccount", "apiGroup": "kubesphere.io", "name": "other"},
                {"kind": "Group", "name": "g"}
            ]
        })
    }

    #[test]
    fn bindings_of_each_kind() {
        let subjects = vec![
            Subject {
                kind: "ServiceAccount".into(),
                api_group: "kubesphere.io".into(),
                name: "sample".into(),
                namespace: "default".into(),
            },
            Subject {
                kind: "ServiceAccount".into(),
                api_group: "kubesphere.io".into(),
                name: "other".into(),
                namespace: String::new(),
            },
            Subject {
                kind: "Group".into(),
                name: "g".into(),
                ..Default::default()
            },
        ];
        let g = global_role_binding(&parse(binding_json("GlobalRoleBinding", None, Some("w")))).unwrap();
        assert_eq!(g.kind, BindingKind::GlobalRoleBinding);
        assert_eq!(g.workspace, None, "only WorkspaceRoleBindings keep the label");
        assert_eq!(g.subjects, subjects);
        assert_eq!(
            g.role_ref,
            RoleRef {
                api_group: "iam.kubesphere.io".into(),
                kind: "X".into(),
                name: "admin".into()
            }
        );

        let w =
            workspace_role_binding(&parse(binding_json("WorkspaceRoleBinding", None, Some("w1")))).unwrap();
        assert_eq!(
            (w.kind, w.workspace.as_deref()),
            (BindingKind::WorkspaceRoleBinding, Some("w1"))
        );
        let unlabelled =
            workspace_role_binding(&parse(binding_json("WorkspaceRoleBinding", None, None))).unwrap();
        assert_eq!(unlabelled.workspace, None);

        let c = cluster_role_binding(&parse(binding_json("ClusterRoleBinding", None, None))).unwrap();
        assert_eq!(
            (c.kind, c.namespace.as_str()),
            (BindingKind::ClusterRoleBinding, "")
        );

        let r = role_binding(&parse(binding_json("RoleBinding", Some("ns1"), None))).unwrap();
        assert_eq!((r.kind, r.namespace.as_str()), (BindingKind::RoleBinding, "ns1"));
        assert_eq!(
            r.subjects, subjects,
            "subject namespaces are defaulted by the evaluation, not here"
        );
        assert!(matches!(
            role_binding(&parse(binding_json("RoleBinding", None, None))),
            Err(ConvertError::NoNamespace { .. })
        ));
    }

    #[test]
    fn namespaces() {
        let ns: KubeNamespace =
            parse(json!({"metadata": {"name": "n", "labels": {"kubesphere.io/workspace": "w"}}}));
        assert_eq!(
            namespace(&ns).unwrap(),
            Namespace {
                name: "n".into(),
                workspace: Some("w".into())
            }
        );
        let ns: KubeNamespace = parse(json!({"metadata": {"name": "n", "labels": {"other": "w"}}}));
        assert_eq!(namespace(&ns).unwrap().workspace, None);
        let ns: KubeNamespace = parse(json!({"metadata": {}}));
        assert!(namespace(&ns).is_err());
    }
}
