//! `tenant.kubesphere.io/v1beta1` Workspace and WorkspaceTemplate: the tenancy unit of KubeSphere.
//!
//! A WorkspaceTemplate on the host cluster describes a workspace and the clusters it is placed
//! on; each placed cluster gets a Workspace built from `spec.template`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of a Workspace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tenant.kubesphere.io",
    version = "v1beta1",
    kind = "Workspace",
    plural = "workspaces",
    singular = "workspace",
    derive = "Default",
    derive = "PartialEq",
    doc = "Workspace groups namespaces across clusters under one set of members and roles."
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// The user who manages the workspace; gets the workspace's admin role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// Whether network isolation between the workspace and others is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_isolation: Option<bool>,
}

/// The spec of a WorkspaceTemplate.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tenant.kubesphere.io",
    version = "v1beta1",
    kind = "WorkspaceTemplate",
    plural = "workspacetemplates",
    singular = "workspacetemplate",
    derive = "Default",
    derive = "PartialEq",
    doc = "WorkspaceTemplate describes a workspace and the clusters it is placed on."
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceTemplateSpec {
    /// The Workspace to create in every placed cluster.
    #[serde(default)]
    pub template: WorkspaceTemplateTemplate,
    /// The clusters the workspace is placed on.
    #[serde(default)]
    pub placement: Placement,
}

/// The spec.template of a WorkspaceTemplate: metadata and spec of the Workspaces it creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceTemplateTemplate {
    /// Labels and annotations of the created Workspaces.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub metadata: ObjectMeta,
    /// Spec of the created Workspaces.
    #[serde(default)]
    pub spec: WorkspaceSpec,
}

/// Which clusters a WorkspaceTemplate is placed on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Clusters named explicitly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterReference>,
    /// Clusters selected by label (used when `clusters` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
}

/// A reference to a Cluster by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReference {
    /// Name of the Cluster.
    pub name: String,
}

// === impl WorkspaceTemplate ===

impl WorkspaceTemplate {
    /// The manager of the workspace: `spec.template.spec.manager`.
    pub fn manager(&self) -> Option<&str> {
        self.spec.template.spec.manager.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_template_fields_round_trip() {
        let original = serde_json::json!({
            "apiVersion": "tenant.kubesphere.io/v1beta1",
            "kind": "WorkspaceTemplate",
            "metadata": {"name": "system-workspace"},
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubesphere.io/creator": "admin"}},
                    "spec": {"manager": "admin"},
                },
                "placement": {
                    "clusters": [{"name": "host"}],
                    "clusterSelector": {"matchLabels": {"env": "prod"}},
                },
            },
        });
        let template: WorkspaceTemplate = serde_json::from_value(original.clone()).expect("template");
        assert_eq!(template.manager(), Some("admin"));
        assert_eq!(template.spec.placement.clusters[0].name, "host");
        assert_eq!(serde_json::to_value(&template).expect("serialize"), original);
    }

    #[test]
    fn workspace_manager_is_optional() {
        let ws: Workspace = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenant.kubesphere.io/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "ws1"},
            "spec": {},
        }))
        .expect("workspace");
        assert_eq!(ws.spec.manager, None);
    }
}
