//! ksiam's own Kubernetes identity and the least privilege it needs (generated into
//! `deploy/rbac/ksiam.yaml`, applied by `cargo xtask up`).
//!
//! ksiam is not cluster-admin. The gateway sends proxied requests as the caller (impersonation), so
//! kube-apiserver authorizes what it executes as the caller, through ksiam's SubjectAccessReview webhook;
//! ksiam's identity only needs `impersonate` for that, limited to the groups KubeSphere identities have
//! and to ksiam's own `extra` marker. Everything else is what the controllers, the watches and the
//! webhooks' self-registration read and write.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::constants::{AUTHENTICATED_BY_EXTRA, AUTHENTICATED_BY_KSIAM, RBAC_GROUP};

/// The name of the ClusterRole, its binding and (in the local control plane) the user.
pub const KSIAM_IDENTITY: &str = "ksiam";

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |s: &[&str]| Some(s.iter().map(|x| (*x).to_owned()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

fn named(mut rule: PolicyRule, names: &[&str]) -> PolicyRule {
    rule.resource_names = Some(names.iter().map(|n| (*n).to_owned()).collect());
    rule
}

/// The ClusterRole `ksiam`: what `ksiam all` needs, and nothing else.
pub fn cluster_role() -> ClusterRole {
    let extra = format!("userextras/{AUTHENTICATED_BY_EXTRA}");
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(KSIAM_IDENTITY.into()),
            ..Default::default()
        },
        rules: Some(vec![
            // Token Secrets: created, filled, rotated and deleted by the controllers; watched for revocation.
            rule(&[""], &["secrets"], &WRITE),
            // Namespaces (workspace labels, built-in Roles), Pods (stale token mounts), the root CA
            // ConfigMap, events.
            rule(&[""], &["namespaces", "pods"], &READ),
            rule(
                &[""],
                &["configmaps"],
                &["get", "list", "watch", "create", "update", "patch"],
            ),
            rule(
                &["", "events.k8s.io"],
                &["events"],
                &["create", "update", "patch"],
            ),
            // Restarting workloads whose Pods mount a replaced token Secret.
            rule(
                &["apps"],
                &["deployments", "statefulsets", "daemonsets", "replicasets"],
                &["get", "list", "watch", "patch"],
            ),
            // Leader election.
            rule(&["coordination.k8s.io"], &["leases"], &WRITE),
            // Self-registration of the admission webhooks.
            rule(
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
                &["get", "list", "watch", "create", "update", "patch"],
            ),
            // KubeSphere's objects: ServiceAccounts, the IAM roles and bindings (watched by the authorizer,
            // provisioned by the controllers), workspaces and clusters.
            rule(
                &["kubesphere.io"],
                &["serviceaccounts"],
                &["get", "list", "watch", "update", "patch"],
            ),
            rule(&["iam.kubesphere.io"], &["*"], &WRITE),
            rule(
                &["tenant.kubesphere.io"],
                &["workspaces", "workspacetemplates"],
                &["get", "list", "watch", "update", "patch"],
            ),
            rule(&["cluster.kubesphere.io"], &["clusters"], &READ),
            // Proxied requests run as the caller: any user name (the gateway refuses `system:` names), only
            // the groups KubeSphere identities carry, and only ksiam's own marker as `extra`.
            rule(&[""], &["users"], &["impersonate"]),
            named(
                rule(&[""], &["groups"], &["impersonate"]),
                &["system:authenticated", "system:unauthenticated"],
            ),
            named(
                rule(&["authentication.k8s.io"], &[extra.as_str()], &["impersonate"]),
                &[AUTHENTICATED_BY_KSIAM],
            ),
        ]),
        ..Default::default()
    }
}

/// Binds [`cluster_role`] to the user `ksiam` (the local control plane's identity for ksiam; a chart binds
/// a ServiceAccount instead).
pub fn cluster_role_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(KSIAM_IDENTITY.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: "ClusterRole".into(),
            name: KSIAM_IDENTITY.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some(RBAC_GROUP.into()),
            kind: "User".into(),
            name: KSIAM_IDENTITY.into(),
            namespace: None,
        }]),
    }
}
