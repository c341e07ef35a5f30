//! `kubesphere.io/v1alpha1` ServiceAccount: the identity a pod uses to call the KubeSphere API.
//!
//! The object has no `spec`: its only field besides `metadata` is the top-level `secrets` list.
//! On the Rust side the fields live in [`ServiceAccountSpec`], which is flattened onto the root
//! object on the wire and in the CRD schema.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The top-level fields of a KubeSphere [`ServiceAccount`] (there is no `spec` on the wire).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubesphere.io",
    version = "v1alpha1",
    kind = "ServiceAccount",
    plural = "serviceaccounts",
    singular = "serviceaccount",
    namespaced,
    no_spec,
    derive = "Default",
    derive = "PartialEq",
    doc = "ServiceAccount binds together a name understood by KubeSphere users and a token secret \
           that processes in pods use to authenticate to the KubeSphere API."
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSpec {
    /// Secrets holding this ServiceAccount's token.
    /// The first entry is the secret that the pod webhook mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::atomic_object_references")]
    pub secrets: Vec<ObjectReference>,
}

// === impl ServiceAccount ===

impl ServiceAccount {
    /// The name of the token secret the pod webhook mounts: the `name` of the first `secrets` entry.
    pub fn token_secret_name(&self) -> Option<&str> {
        self.spec.secrets.first().and_then(|s| s.name.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_secrets_are_omitted() {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubesphere.io/v1alpha1",
            "kind": "ServiceAccount",
            "metadata": {"name": "sample", "namespace": "default"},
            "secrets": [],
        }))
        .expect("deserialize");
        assert!(sa.spec.secrets.is_empty());
        let json = serde_json::to_value(&sa).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "apiVersion": "kubesphere.io/v1alpha1",
                "kind": "ServiceAccount",
                "metadata": {"name": "sample", "namespace": "default"},
            })
        );
    }

    #[test]
    fn secrets_sit_at_the_top_level() {
        let mut sa = ServiceAccount::new("sample", ServiceAccountSpec::default());
        sa.spec.secrets.push(ObjectReference {
            name: Some("sample-lqmbj".into()),
            namespace: Some("default".into()),
            ..ObjectReference::default()
        });
        let json = serde_json::to_value(&sa).expect("serialize");
        assert_eq!(
            json["secrets"],
            serde_json::json!([{"name": "sample-lqmbj", "namespace": "default"}])
        );
        assert!(json.get("spec").is_none());
        assert_eq!(sa.token_secret_name(), Some("sample-lqmbj"));
        let back: ServiceAccount = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, sa);
    }

    #[test]
    fn no_token_secret_without_secrets() {
        assert_eq!(
            ServiceAccount::new("x", ServiceAccountSpec::default()).token_secret_name(),
            None
        );
    }
}
