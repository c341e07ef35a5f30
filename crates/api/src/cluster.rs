//! `cluster.kubesphere.io/v1alpha1` Cluster: a Kubernetes cluster managed by KubeSphere.
//!
//! Only what the tenant API needs is modelled: how to reach the cluster, whether it is enabled,
//! and whether it is ready. The kubeconfig must never leave the server, see
//! [`Cluster::without_kubeconfig`].

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of a Cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.kubesphere.io",
    version = "v1alpha1",
    kind = "Cluster",
    plural = "clusters",
    singular = "cluster",
    status = "ClusterStatus",
    derive = "Default",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Federated","type":"boolean","jsonPath":".spec.joinFederation"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Active","type":"boolean","jsonPath":".spec.enable"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.kubernetesVersion"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "Cluster is a Kubernetes cluster (the host or a member) managed by KubeSphere."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Whether the cluster joins the federation control plane.
    #[serde(default, skip_serializing_if = "is_false")]
    pub join_federation: bool,
    /// Whether the cluster is enabled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable: bool,
    /// The provider of the cluster, e.g. a cloud vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// How to connect to the cluster.
    #[serde(default)]
    pub connection: Connection,
    /// Whether the Kubernetes API of the cluster is exposed outside it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub external_kube_api_enabled: bool,
    /// KubeSphere configuration of the member cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::bytes")]
    pub config: Option<ByteString>,
}

/// How KubeSphere connects to a Cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// `direct` (reachable from the host) or `proxy` (through a tunnel).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Endpoint of the member's ks-apiserver.
    #[serde(
        rename = "kubesphereAPIEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubesphere_api_endpoint: Option<String>,
    /// Endpoint of the member's kube-apiserver.
    #[serde(
        rename = "kubernetesAPIEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes_api_endpoint: Option<String>,
    /// Externally reachable endpoint of the member's kube-apiserver.
    #[serde(
        rename = "externalKubernetesAPIEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_kubernetes_api_endpoint: Option<String>,
    /// Kubeconfig with credentials for the member cluster. Secret: never return it to API clients.
    #[serde(rename = "kubeconfig", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::bytes")]
    pub kubeconfig: Option<ByteString>,
    /// Token of the proxy tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Port the tunnel exposes for the member's kube-apiserver.
    #[serde(
        rename = "kubernetesAPIServerPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes_api_server_port: Option<u16>,
    /// Port the tunnel exposes for the member's ks-apiserver.
    #[serde(
        rename = "kubesphereAPIServerPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubesphere_api_server_port: Option<u16>,
}

/// The status of a Cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Observed conditions; `Ready` tells whether the cluster can be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterCondition>,
    /// Kubernetes version of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// KubeSphere version running in the cluster.
    #[serde(
        rename = "kubeSphereVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubesphere_version: Option<String>,
    /// Number of nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<i64>,
    /// Zones the nodes run in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Region the cluster runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Which KubeSphere components are enabled in the cluster.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub configz: std::collections::BTreeMap<String, bool>,
    /// UID of the cluster's `kube-system` namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One observed condition of a Cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCondition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Condition type telling whether a [`Cluster`] is ready to be used.
pub const CLUSTER_CONDITION_READY: &str = "Ready";

fn is_false(b: &bool) -> bool {
    !*b
}

// === impl Cluster ===

impl Cluster {
    /// Whether the cluster has a `Ready` condition with status `True`.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == CLUSTER_CONDITION_READY && c.status == "True")
        })
    }

    /// This cluster with `spec.connection.kubeconfig` removed, as the tenant API returns it.
    #[must_use]
    pub fn without_kubeconfig(mut self) -> Self {
        self.spec.connection.kubeconfig = None;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Cluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cluster.kubesphere.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "host", "labels": {"cluster-role.kubesphere.io/host": ""}},
            "spec": {
                "enable": true,
                "provider": "kubeadm",
                "connection": {
                    "type": "direct",
                    "kubernetesAPIEndpoint": "https://10.0.0.1:6443",
                    "kubeconfig": "YXBpVmVyc2lvbjogdjE=",
                },
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}],
                "kubernetesVersion": "v1.34.4",
                "nodeCount": 3,
            },
        }))
        .expect("cluster")
    }

    #[test]
    fn kubeconfig_can_be_removed_from_responses() {
        let cluster = host();
        assert_eq!(
            cluster
                .spec
                .connection
                .kubeconfig
                .as_ref()
                .map(|k| k.0.as_slice()),
            Some(&b"apiVersion: v1"[..])
        );
        let json = serde_json::to_value(cluster.without_kubeconfig()).expect("serialize");
        assert!(json["spec"]["connection"].get("kubeconfig").is_none());
        assert_eq!(
            json["spec"]["connection"]["kubernetesAPIEndpoint"],
            "https://10.0.0.1:6443"
        );
        assert_eq!(json["spec"]["enable"], true);
    }

    #[test]
    fn fields_round_trip_with_go_names() {
        let json = serde_json::to_value(host()).expect("serialize");
        assert_eq!(json["spec"]["connection"]["kubeconfig"], "YXBpVmVyc2lvbjogdjE=");
        assert_eq!(json["status"]["nodeCount"], 3);
        assert!(
            json["spec"].get("joinFederation").is_none(),
            "false booleans are omitted like Go's omitempty"
        );
    }

    #[test]
    fn readiness_comes_from_the_ready_condition() {
        assert!(host().is_ready());
        let mut cluster = host();
        if let Some(status) = cluster.status.as_mut() {
            status.conditions[0].status = "False".into();
        }
        assert!(!cluster.is_ready());
        assert!(!Cluster::new("bare", ClusterSpec::default()).is_ready());
    }
}
