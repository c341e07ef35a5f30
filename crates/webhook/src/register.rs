//! The `MutatingWebhookConfiguration` that routes pod creation to the injector (spec §7.1), and the
//! `ValidatingWebhookConfiguration` of the authorization-boundary checks ([`crate::admission`]), both applied
//! with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use ksiam_api::constants::{
    POD_INJECTOR_WEBHOOK_CONFIGURATION, POD_INJECTOR_WEBHOOK_NAME, POD_INJECTOR_WEBHOOK_PATH,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::admission::{KUBESPHERE_IDENTITY_CEL, NAMESPACE_WEBHOOK_PATH, WORKSPACE_TEMPLATE_WEBHOOK_PATH};

/// Name of the `ValidatingWebhookConfiguration` of the authorization-boundary checks.
pub const ADMISSION_WEBHOOK_CONFIGURATION: &str = "ksiam-admission.kubesphere.io";
/// Name of the WorkspaceTemplate check in it.
pub const WORKSPACE_TEMPLATE_WEBHOOK_NAME: &str = "workspacetemplates.ksiam.kubesphere.io";
/// Name of the Namespace check in it.
pub const NAMESPACE_WEBHOOK_NAME: &str = "namespaces.ksiam.kubesphere.io";

/// Field manager of the server-side apply.
pub const FIELD_MANAGER: &str = "ksiam-webhook";

/// How long the API server waits for an answer. KubeSphere uses 30 s; a pod create should never wait that long
/// for a webhook that only does two GETs.
pub const TIMEOUT_SECONDS: i32 = 5;

/// Annotation asking cert-manager's CA injector to fill `caBundle` from a Certificate (`<namespace>/<name>`).
pub const CERT_MANAGER_INJECT_CA_FROM: &str = "cert-manager.io/inject-ca-from";

/// Namespaces whose pods are never sent to the webhook.
pub const EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];

/// What the API server does when it cannot reach the webhook (explicit denials always apply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Admit the pod without injection, as KubeSphere does.
    #[default]
    Ignore,
    /// Reject the pod.
    Fail,
}

impl FailurePolicy {
    /// The value of `failurePolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "Ignore",
            Self::Fail => "Fail",
        }
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "Ignore" | "ignore" => Ok(Self::Ignore),
            "Fail" | "fail" => Ok(Self::Fail),
            other => Err(format!(
                "unknown failure policy {other:?}, expected Ignore or Fail"
            )),
        }
    }
}

/// How the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookTarget {
    /// `clientConfig.url: https://<host>:<port>/serviceaccount-pod-injector`, for a webhook outside the cluster
    /// (loopback, development). `port: None` means the port the server actually bound.
    Url {
        /// Host name or IP address the API server connects to.
        host: String,
        /// Port, or `None` for the bound port.
        port: Option<u16>,
    },
    /// `clientConfig.service`, for a webhook running in the cluster behind a Service.
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
        /// Service port.
        port: u16,
    },
}

/// Where `caBundle` comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaBundleSource {
    /// The given PEM (the webhook's own CA).
    Pem(String),
    /// cert-manager's CA injector, from the Certificate `<namespace>/<name>`; `caBundle` is then left to it.
    CertManager(String),
}

/// Everything that goes into the webhook configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Where the API server sends reviews; a `Url` target must have its port resolved.
    pub target: WebhookTarget,
    /// `caBundle`.
    pub ca_bundle: CaBundleSource,
    /// `failurePolicy`.
    pub failure_policy: FailurePolicy,
}

/// The `clientConfig` reaching `path` on the registered target, and the annotations for cert-manager.
fn client_config(registration: &Registration, path: &str) -> (WebhookClientConfig, BTreeMap<String, String>) {
    let mut client_config = match &registration.target {
        WebhookTarget::Url { host, port } => {
            let authority = match port {
                Some(port) => format_authority(host, *port),
                None => format_host(host),
            };
            WebhookClientConfig {
                url: Some(format!("https://{authority}{path}")),
                ..WebhookClientConfig::default()
            }
        }
        WebhookTarget::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(path.to_owned()),
                port: Some(i32::from(*port)),
            }),
            ..WebhookClientConfig::default()
        },
    };
    let mut annotations = BTreeMap::new();
    match &registration.ca_bundle {
        CaBundleSource::Pem(pem) => client_config.ca_bundle = Some(ByteString(pem.as_bytes().to_vec())),
        CaBundleSource::CertManager(certificate) => {
            annotations.insert(CERT_MANAGER_INJECT_CA_FROM.to_owned(), certificate.clone());
        }
    }
    (client_config, annotations)
}

/// The `MutatingWebhookConfiguration` for `registration`.
pub fn webhook_configuration(registration: &Registration) -> MutatingWebhookConfiguration {
    let (client_config, annotations) = client_config(registration, POD_INJECTOR_WEBHOOK_PATH);
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(POD_INJECTOR_WEBHOOK_CONFIGURATION.to_owned()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: POD_INJECTOR_WEBHOOK_NAME.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config,
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: Some("*".to_owned()),
            }]),
            failure_policy: Some(registration.failure_policy.as_str().to_owned()),
            match_policy: Some("Exact".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".to_owned(),
                    operator: "NotIn".to_owned(),
                    values: Some(EXCLUDED_NAMESPACES.iter().map(|ns| (*ns).to_owned()).collect()),
                }]),
                match_labels: None,
            }),
            ..MutatingWebhook::default()
        }]),
    }
}

/// Creates or updates the webhook configuration (server-side apply, field manager `ksiam-webhook`, forcing
/// ownership of the fields it sets) and returns what the API server stored.
pub async fn register(
    client: Client,
    registration: &Registration,
) -> Result<MutatingWebhookConfiguration, kube::Error> {
    let api = Api::<MutatingWebhookConfiguration>::all(client);
    let config = webhook_configuration(registration);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(
        POD_INJECTOR_WEBHOOK_CONFIGURATION,
        &params,
        &Patch::Apply(&config),
    )
    .await
}

/// The `ValidatingWebhookConfiguration` of the authorization-boundary checks for `registration`.
///
/// Its `failurePolicy` is always `Fail` (an unreachable check must not let an escalation through), and its
/// `matchConditions` send only KubeSphere identities ([`crate::admission::is_kubesphere_identity`]), so
/// Kubernetes' own identities (the namespace controller's `/finalize`, `system:masters`) never wait for it.
pub fn admission_configuration(registration: &Registration) -> ValidatingWebhookConfiguration {
    let webhook = |name: &str, path: &str, rule: RuleWithOperations| {
        let (client_config, _) = client_config(registration, path);
        ValidatingWebhook {
            name: name.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config,
            rules: Some(vec![rule]),
            failure_policy: Some(FailurePolicy::Fail.as_str().to_owned()),
            match_policy: Some("Equivalent".to_owned()),
            match_conditions: Some(vec![MatchCondition {
                name: "kubesphere-identity".to_owned(),
                expression: KUBESPHERE_IDENTITY_CEL.to_owned(),
            }]),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            ..ValidatingWebhook::default()
        }
    };
    let strings = |items: &[&str]| Some(items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    let (_, annotations) = client_config(registration, "");
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(ADMISSION_WEBHOOK_CONFIGURATION.to_owned()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            webhook(
                WORKSPACE_TEMPLATE_WEBHOOK_NAME,
                WORKSPACE_TEMPLATE_WEBHOOK_PATH,
                RuleWithOperations {
                    api_groups: strings(&["tenant.kubesphere.io"]),
                    api_versions: strings(&["*"]),
                    operations: strings(&["CREATE", "UPDATE"]),
                    resources: strings(&["workspacetemplates"]),
                    scope: Some("Cluster".to_owned()),
                },
            ),
            webhook(
                NAMESPACE_WEBHOOK_NAME,
                NAMESPACE_WEBHOOK_PATH,
                RuleWithOperations {
                    api_groups: strings(&[""]),
                    api_versions: strings(&["v1"]),
                    operations: strings(&["CREATE", "UPDATE"]),
                    resources: strings(&["namespaces", "namespaces/finalize", "namespaces/status"]),
                    scope: Some("Cluster".to_owned()),
                },
            ),
        ]),
    }
}

/// Creates or updates the `ValidatingWebhookConfiguration` of the checks, as [`register`] does the
/// mutating one.
pub async fn register_admission(
    client: Client,
    registration: &Registration,
) -> Result<ValidatingWebhookConfiguration, kube::Error> {
    let api = Api::<ValidatingWebhookConfiguration>::all(client);
    let config = admission_configuration(registration);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(ADMISSION_WEBHOOK_CONFIGURATION, &params, &Patch::Apply(&config))
        .await
}

/// `host:port`, with brackets around an IPv6 address.
fn format_authority(host: &str, port: u16) -> String {
    format!("{}:{port}", format_host(host))
}

fn format_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn url_registration_matches_spec() {
        let config = webhook_configuration(&Registration {
            target: WebhookTarget::Url {
                host: "127.0.0.1".to_owned(),
                port: Some(8443),
            },
            ca_bundle: CaBundleSource::Pem("PEM".to_owned()),
            failure_policy: FailurePolicy::default(),
        });
        let value = serde_json::to_value(&config).expect("serialize");
        assert_eq!(
            value,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "serviceaccount.kubesphere.io"},
                "webhooks": [{
                    "name": "serviceaccount-pod-injector.kubesphere.io",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {
                        "url": "https://127.0.0.1:8443/serviceaccount-pod-injector",
                        "caBundle": "UEVN",
                    },
                    "rules": [{
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "*",
                    }],
                    "failurePolicy": "Ignore",
                    "matchPolicy": "Exact",
                    "sideEffects": "None",
                    "timeoutSeconds": 5,
                    "namespaceSelector": {"matchExpressions": [{
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": ["kube-system"],
                    }]},
                }],
            })
        );
    }

    #[test]
    fn service_registration_with_cert_manager() {
        let config = webhook_configuration(&Registration {
            target: WebhookTarget::Service {
                namespace: "kubesphere-system".to_owned(),
                name: "ksiam-webhook".to_owned(),
                port: 443,
            },
            ca_bundle: CaBundleSource::CertManager("kubesphere-system/ksiam-webhook".to_owned()),
            failure_policy: FailurePolicy::Fail,
        });
        let value = serde_json::to_value(&config).expect("serialize");
        assert_eq!(
            value["metadata"]["annotations"],
            json!({"cert-manager.io/inject-ca-from": "kubesphere-system/ksiam-webhook"})
        );
        let webhook = &value["webhooks"][0];
        assert_eq!(
            webhook["clientConfig"],
            json!({"service": {
                "namespace": "kubesphere-system",
                "name": "ksiam-webhook",
                "path": "/serviceaccount-pod-injector",
                "port": 443,
            }})
        );
        assert_eq!(webhook["failurePolicy"], "Fail");
    }

    #[test]
    fn admission_registration_fails_closed_for_kubesphere_identities_only() {
        let config = admission_configuration(&Registration {
            target: WebhookTarget::Url {
                host: "127.0.0.1".to_owned(),
                port: Some(8443),
            },
            ca_bundle: CaBundleSource::Pem("PEM".to_owned()),
            failure_policy: FailurePolicy::Ignore,
        });
        let value = serde_json::to_value(&config).expect("serialize");
        assert_eq!(value["kind"], "ValidatingWebhookConfiguration");
        assert_eq!(value["metadata"]["name"], "ksiam-admission.kubesphere.io");
        let webhooks = value["webhooks"].as_array().expect("webhooks");
        assert_eq!(webhooks.len(), 2);
        for webhook in webhooks {
            assert_eq!(
                webhook["failurePolicy"], "Fail",
                "the registration's Ignore is for the injector"
            );
            assert_eq!(webhook["clientConfig"]["caBundle"], "UEVN");
            assert_eq!(
                webhook["matchConditions"][0]["expression"],
                KUBESPHERE_IDENTITY_CEL
            );
            assert_eq!(webhook["sideEffects"], "None");
        }
        assert_eq!(
            webhooks[0]["clientConfig"]["url"],
            "https://127.0.0.1:8443/validate-workspacetemplates"
        );
        assert_eq!(
            webhooks[0]["rules"],
            json!([{"apiGroups": ["tenant.kubesphere.io"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["workspacetemplates"], "scope": "Cluster"}])
        );
        assert_eq!(
            webhooks[1]["clientConfig"]["url"],
            "https://127.0.0.1:8443/validate-namespaces"
        );
        assert_eq!(
            webhooks[1]["rules"][0]["resources"],
            json!(["namespaces", "namespaces/finalize", "namespaces/status"])
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(format_authority("::1", 443), "[::1]:443");
        assert_eq!(format_authority("[::1]", 443), "[::1]:443");
        assert_eq!(format_authority("webhook.local", 443), "webhook.local:443");
    }

    #[test]
    fn failure_policy_parses() {
        assert_eq!("Fail".parse::<FailurePolicy>(), Ok(FailurePolicy::Fail));
        assert_eq!("ignore".parse::<FailurePolicy>(), Ok(FailurePolicy::Ignore));
        assert!("Maybe".parse::<FailurePolicy>().is_err());
    }
}
