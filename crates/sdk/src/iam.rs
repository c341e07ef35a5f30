//! `iam.kubesphere.io/v1beta1` SubjectAccessReview: ask the server whether a subject may do something.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `apiVersion` of [`SubjectAccessReview`].
pub const IAM_API_VERSION: &str = "iam.kubesphere.io/v1beta1";

/// A question to KubeSphere's authorizer, and its answer in [`status`](Self::status).
///
/// Send it with [`Client::subject_access_review`](crate::Client::subject_access_review). The user and
/// groups are taken as given: no group is added, so
/// `user: kubesphere:serviceaccount:<namespace>:<name>` asks about exactly that ServiceAccount.
///
/// ```
/// use kubesphere_client::{ResourceAttributes, SubjectAccessReview};
///
/// let review = SubjectAccessReview::resource(
///     "kubesphere:serviceaccount:default:sample",
///     ResourceAttributes {
///         verb: "list".into(),
///         group: "tenant.kubesphere.io".into(),
///         resource: "clusters".into(),
///         resource_scope: "Global".into(),
///         ..Default::default()
///     },
/// );
/// assert_eq!(
///     serde_json::to_string(&review).unwrap(),
///     r#"{"apiVersion":"iam.kubesphere.io/v1beta1","kind":"SubjectAccessReview","spec":{"resourceAttributes":{"resourceScope":"Global","verb":"list","group":"tenant.kubesphere.io","resource":"clusters"},"user":"kubesphere:serviceaccount:default:sample"}}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAccessReview {
    /// `iam.kubesphere.io/v1beta1`.
    pub api_version: String,
    /// `SubjectAccessReview`.
    pub kind: String,
    /// The question.
    pub spec: SubjectAccessReviewSpec,
    /// The answer, filled in by the server.
    #[serde(default, skip_serializing_if = "SubjectAccessReviewStatus::is_unset")]
    pub status: SubjectAccessReviewStatus,
}

/// Who asks to do what: one of `resource_attributes` and `non_resource_attributes` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAccessReviewSpec {
    /// A request for an API resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_attributes: Option<ResourceAttributes>,
    /// A request for a path that is not an API resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_resource_attributes: Option<NonResourceAttributes>,
    /// The user name, for example `kubesphere:serviceaccount:default:sample`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The user's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra user attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
    /// The user's UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The attributes of a resource request. Empty fields are left out.
///
/// The scope the server evaluates is `Namespace` when `namespace` is set, else `Workspace` when
/// `workspace` is set, else `resource_scope` (`Global` or `Cluster`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAttributes {
    /// `Global`, `Cluster`, `Workspace` or `Namespace`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_scope: String,
    /// The workspace, for workspace-scoped requests.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workspace: String,
    /// The namespace, for namespaced requests.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The verb, for example `get`, `list`, `create`; `*` means all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
    /// The API group; empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The API version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The resource, for example `clusters`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// The subresource, for example `status`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// The object name; empty means all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The attributes of a request for a path that is not an API resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NonResourceAttributes {
    /// The URL path, for example `/healthz`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// The HTTP verb in lower case, for example `get`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
}

/// The server's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAccessReviewStatus {
    /// Whether the request would be allowed.
    #[serde(default)]
    pub allowed: bool,
    /// Whether the request would be denied explicitly; `allowed` and `denied` both false means no opinion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    /// Why, when the server says.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// An error met while evaluating, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub evaluation_error: String,
}

// === impl SubjectAccessReview ===

impl SubjectAccessReview {
    /// A review with this spec and no answer yet.
    pub fn new(spec: SubjectAccessReviewSpec) -> Self {
        Self {
            api_version: IAM_API_VERSION.to_owned(),
            kind: "SubjectAccessReview".to_owned(),
            spec,
            status: SubjectAccessReviewStatus::default(),
        }
    }

    /// May `user` (with no groups) do the resource request `attributes`?
    pub fn resource(user: impl Into<String>, attributes: ResourceAttributes) -> Self {
        Self::new(SubjectAccessReviewSpec {
            resource_attributes: Some(attributes),
            user: user.into(),
            ..Default::default()
        })
    }

    /// May `user` (with no groups) do `verb` on the non-resource `path`?
    pub fn non_resource(user: impl Into<String>, path: impl Into<String>, verb: impl Into<String>) -> Self {
        Self::new(SubjectAccessReviewSpec {
            non_resource_attributes: Some(NonResourceAttributes {
                path: path.into(),
                verb: verb.into(),
            }),
            user: user.into(),
            ..Default::default()
        })
    }
}

// === impl SubjectAccessReviewStatus ===

impl SubjectAccessReviewStatus {
    fn is_unset(&self) -> bool {
        *self == Self::default()
    }
}
