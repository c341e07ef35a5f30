//! Validating admission for the authorization boundary: what the workspace and namespace controllers turn
//! into grants may only be changed by someone who could make that grant directly.
//!
//! ```text
//! AdmissionRequest ─┬─ not a KubeSphere identity (Kubernetes RBAC governs it) ──────────────► allow
//!  (KubeSphere       ├─ workspacetemplates: manager changed (or set to another on CREATE),
//!   identities)      │     cascading-deletion finalizer removed while not deleting
//!                    │        └─ may grant `<ws>-admin`? (bind it, or hold `*` in the workspace) ─► allow / deny 403
//!                    └─ namespaces: workspace or pod-security label changed, /finalize
//!                             └─ update namespaces at Cluster scope? ─────────────────────► allow / deny 403
//!                          CREATE with a workspace label
//!                             └─ create namespaces in the workspace, or at Cluster scope? ─► allow / deny 403
//! ```
//!
//! The decision ([`decide`]) is pure: it reads the request and asks an [`Authorize`] (in `ksiam all`, the
//! in-process policy store through [`PolicyAuthorizer`]). A store that is not ready denies (fail closed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::UserInfo;
use ksiam_api::constants::{
    AUTHENTICATED_BY_EXTRA, AUTHENTICATED_BY_KSIAM, CASCADING_DELETION_FINALIZER, IAM_GROUP,
    SERVICE_ACCOUNT_USERNAME_PREFIX, TENANT_GROUP, WORKSPACE_LABEL,
};
use ksiam_rbac::{Attributes, Authorizer, PolicyStore, Scope};
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::response::{Status, StatusSummary};
use serde_json::Value;

use crate::review::PodReview;

/// Path of the WorkspaceTemplate check.
pub const WORKSPACE_TEMPLATE_WEBHOOK_PATH: &str = "/validate-workspacetemplates";
/// Path of the Namespace check.
pub const NAMESPACE_WEBHOOK_PATH: &str = "/validate-namespaces";
/// Prefix of the Pod Security Admission labels of a namespace.
pub const POD_SECURITY_LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// What an [`Authorize`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// The subject may.
    Allowed,
    /// The subject may not.
    Denied,
    /// No decision can be made (the policy is not loaded yet); callers deny.
    Unavailable(String),
}

/// The authorizer the checks ask: the same decision the gateway and the SubjectAccessReview webhook make.
pub trait Authorize: Send + Sync {
    /// Whether the subject of `a` may make the request `a` describes.
    fn authorize(&self, a: &Attributes<'_>) -> Authorization;
}

/// [`Authorize`] over an in-process [`PolicyStore`] (what `ksiam all` uses).
#[derive(Clone)]
pub struct PolicyAuthorizer {
    authorizer: Authorizer,
    store: Arc<PolicyStore>,
}

impl std::fmt::Debug for PolicyAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyAuthorizer")
            .field("mode", &self.authorizer.mode())
            .field("ready", &self.store.is_ready())
            .finish()
    }
}

impl PolicyAuthorizer {
    /// Decides with `authorizer` against `store`.
    pub fn new(authorizer: Authorizer, store: Arc<PolicyStore>) -> Self {
        Self { authorizer, store }
    }
}

impl Authorize for PolicyAuthorizer {
    fn authorize(&self, a: &Attributes<'_>) -> Authorization {
        if !self.store.is_ready() {
            return Authorization::Unavailable("the policy store is not ready".to_owned());
        }
        if self.authorizer.decide(&self.store, a).allowed() {
            Authorization::Allowed
        } else {
            Authorization::Denied
        }
    }
}

/// Whether ksiam authenticated `user` (a KubeSphere identity), so that KubeSphere's policy and these checks
/// apply to it. Kubernetes' own identities (`system:masters`, the controller managers, ksiam itself) are
/// governed by Kubernetes RBAC and never checked here.
///
/// The marker is `extra["ksiam.kubesphere.io/authenticated-by"] = ["ksiam"]`; until every ksiam
/// authenticator sets it, a `kubesphere:serviceaccount:` user name counts too.
pub fn is_kubesphere_identity(user: &UserInfo) -> bool {
    user.extra
        .as_ref()
        .and_then(|extra| extra.get(AUTHENTICATED_BY_EXTRA))
        .is_some_and(|values| values.iter().any(|v| v == AUTHENTICATED_BY_KSIAM))
}

/// The CEL `matchConditions` expression that sends only [`is_kubesphere_identity`] requests to the checks
/// (keep the two in step).
pub const KUBESPHERE_IDENTITY_CEL: &str = "has(request.userInfo.extra) && \
     'ksiam.kubesphere.io/authenticated-by' in request.userInfo.extra && \
     'ksiam' in request.userInfo.extra['ksiam.kubesphere.io/authenticated-by']";

/// One admission request, as the checks read it.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// CREATE, UPDATE, …
    pub operation: &'a Operation,
    /// The resource's API group.
    pub group: &'a str,
    /// The resource.
    pub resource: &'a str,
    /// The subresource (`finalize`, `status`), or empty.
    pub subresource: &'a str,
    /// The object's name (may be empty on CREATE; the object's `metadata.name` is used then).
    pub name: &'a str,
    /// Who asks.
    pub user: &'a UserInfo,
    /// The new object.
    pub object: Option<&'a Value>,
    /// The object before the change (UPDATE).
    pub old_object: Option<&'a Value>,
}

impl<'a> Change<'a> {
    /// The change an AdmissionReview describes.
    pub fn of(review: &'a PodReview) -> Self {
        let request = &review.request;
        Self {
            operation: &request.operation,
            group: &request.resource.group,
            resource: &request.resource.resource,
            subresource: request.sub_resource.as_deref().unwrap_or_default(),
            name: &request.name,
            user: &request.user_info,
            object: review.object.as_ref(),
            old_object: review.old_object.as_ref(),
        }
    }

    fn object_name(&self) -> &'a str {
        if !self.name.is_empty() {
            return self.name;
        }
        self.object
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// Why a change is refused: the HTTP code and message of the `AdmissionResponse`'s `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 403 when the requester lacks the permission, 503 when no decision could be made, 400 for a review
    /// without the objects it needs.
    pub code: u16,
    /// What was refused and why.
    pub message: String,
}

impl Refusal {
    fn forbidden(message: String) -> Self {
        Self { code: 403, message }
    }

    fn bad_request(message: String) -> Self {
        Self { code: 400, message }
    }

    /// The `status.reason` for the code.
    pub fn reason(&self) -> &'static str {
        match self.code {
            400 => "BadRequest",
            503 => "ServiceUnavailable",
            _ => "Forbidden",
        }
    }
}

/// Decides `change`: `Ok` to admit it, or why not.
pub fn decide(change: &Change<'_>, authz: &dyn Authorize) -> Result<(), Refusal> {
    if !matches!(change.operation, Operation::Create | Operation::Update)
        || !is_kubesphere_identity(change.user)
    {
        return Ok(());
    }
    match (change.group, change.resource) {
        (TENANT_GROUP, "workspacetemplates") => workspace_template(change, authz),
        ("", "namespaces") => namespace(change, authz),
        _ => Ok(()),
    }
}

/// Answers `review` with [`decide`]'s verdict.
pub fn validate(review: &PodReview, authz: &dyn Authorize) -> AdmissionResponse {
    let response = AdmissionResponse::from(&review.request);
    match decide(&Change::of(review), authz) {
        Ok(()) => response,
        Err(refusal) => {
            let mut response = response.deny(&refusal.message);
            response.result = Status {
                status: Some(StatusSummary::Failure),
                code: refusal.code,
                message: refusal.message.clone(),
                reason: refusal.reason().to_owned(),
                ..Status::default()
            };
            response
        }
    }
}

// === the subject ===

struct Subject<'a> {
    user: &'a str,
    groups: Vec<String>,
}

impl<'a> Subject<'a> {
    fn of(user: &'a UserInfo) -> Self {
        let name = user.username.as_deref().unwrap_or_default();
        // As the SubjectAccessReview webhook: kube-apiserver adds `system:authenticated`, but KubeSphere
        // ServiceAccounts have no groups.
        let groups = if name.starts_with(SERVICE_ACCOUNT_USERNAME_PREFIX) {
            Vec::new()
        } else {
            user.groups.clone().unwrap_or_default()
        };
        Self { user: name, groups }
    }

    fn may(&self, authz: &dyn Authorize, request: Request<'_>) -> Result<bool, Refusal> {
        let a = Attributes {
            user: self.user,
            groups: &self.groups,
            verb: request.verb,
            api_group: request.group,
            resource: request.resource,
            name: request.name,
            workspace: request.workspace,
            resource_request: true,
            kubernetes_request: true,
            scope: request.scope,
            ..Attributes::default()
        };
        match authz.authorize(&a) {
            Authorization::Allowed => Ok(true),
            Authorization::Denied => Ok(false),
            Authorization::Unavailable(why) => Err(Refusal {
                code: 503,
                message: format!("cannot check the permissions of {}: {why}", quote(self.user)),
            }),
        }
    }
}

#[derive(Clone, Copy)]
struct Request<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    name: &'a str,
    workspace: &'a str,
    scope: Scope,
}

// === workspacetemplates ===

fn workspace_template(change: &Change<'_>, authz: &dyn Authorize) -> Result<(), Refusal> {
    let object = change
        .object
        .ok_or_else(|| Refusal::bad_request("the AdmissionReview has no object".to_owned()))?;
    let workspace = change.object_name();
    let subject = Subject::of(change.user);
    let manager = manager_of(Some(object));

    let what = match change.operation {
        Operation::Create => match manager {
            Some(m) if m != subject.user => {
                format!(
                    "creating workspace {} with manager {}",
                    quote(workspace),
                    quote(m)
                )
            }
            _ => return Ok(()),
        },
        _ => {
            let old = change
                .old_object
                .ok_or_else(|| Refusal::bad_request("the AdmissionReview has no oldObject".to_owned()))?;
            let old_manager = manager_of(Some(old));
            let finalizer_removed = has_finalizer(old, CASCADING_DELETION_FINALIZER)
                && !has_finalizer(object, CASCADING_DELETION_FINALIZER)
                && !is_deleting(old);
            if old_manager != manager {
                format!(
                    "changing the manager of workspace {} from {} to {}",
                    quote(workspace),
                    quote(old_manager.unwrap_or_default()),
                    quote(manager.unwrap_or_default())
                )
            } else if finalizer_removed {
                format!(
                    "removing the finalizer {} from workspace {} while it is not being deleted",
                    quote(CASCADING_DELETION_FINALIZER),
                    quote(workspace)
                )
            } else {
                return Ok(());
            }
        }
    };

    let admin = workspace_role_name(workspace, "admin");
    let bind = Request {
        verb: "bind",
        group: IAM_GROUP,
        resource: "workspaceroles",
        name: &admin,
        workspace,
        scope: Scope::Workspace,
    };
    let everything = Request {
        verb: "*",
        group: "*",
        resource: "*",
        name: "",
        workspace,
        scope: Scope::Workspace,
    };
    if subject.may(authz, bind)? || subject.may(authz, everything)? {
        return Ok(());
    }
    Err(Refusal::forbidden(format!(
        "{what} is not allowed: it grants the WorkspaceRole {admin_q}, and user {user} cannot grant it \
         (that needs bind on workspaceroles {admin_q} in workspace {ws}, or every permission in that workspace)",
        admin_q = quote(&admin),
        user = quote(subject.user),
        ws = quote(workspace),
    )))
}

fn manager_of(object: Option<&Value>) -> Option<&str> {
    object?
        .pointer("/spec/template/spec/manager")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
}

fn has_finalizer(object: &Value, finalizer: &str) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|all| all.iter().any(|f| f.as_str() == Some(finalizer)))
}

fn is_deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

pub use ksiam_api::builtin::workspace_role_name;

// === namespaces ===

fn namespace(change: &Change<'_>, authz: &dyn Authorize) -> Result<(), Refusal> {
    let name = change.object_name();
    let subject = Subject::of(change.user);
    let cluster_update = Request {
        verb: "update",
        group: "",
        resource: "namespaces",
        name,
        workspace: "",
        scope: Scope::Cluster,
    };
    let needs_cluster_update = |what: String| -> Result<(), Refusal> {
        if subject.may(authz, cluster_update)? {
            return Ok(());
        }
        Err(Refusal::forbidden(format!(
            "{what} is not allowed: user {} cannot update namespaces at Cluster scope \
             (a role in the namespace or its workspace is not enough)",
            quote(subject.user)
        )))
    };

    if matches!(change.operation, Operation::Update) && change.subresource == "finalize" {
        return needs_cluster_update(format!("finalizing namespace {}", quote(name)));
    }
    let object = change
        .object
        .ok_or_else(|| Refusal::bad_request("the AdmissionReview has no object".to_owned()))?;
    let labels = labels_of(object);

    if matches!(change.operation, Operation::Create) {
        let Some(workspace) = labels.get(WORKSPACE_LABEL) else {
            return Ok(());
        };
        let workspace = workspace.as_str().unwrap_or_default();
        let create = |group, scope, workspace| Request {
            verb: "create",
            group,
            resource: "namespaces",
            name,
            workspace,
            scope,
        };
        let allowed = subject.may(authz, create("", Scope::Cluster, ""))?
            || subject.may(authz, create(TENANT_GROUP, Scope::Workspace, workspace))?
            || subject.may(authz, create("", Scope::Workspace, workspace))?;
        if allowed {
            return Ok(());
        }
        return Err(Refusal::forbidden(format!(
            "creating namespace {} in workspace {} is not allowed: user {} cannot create namespaces in \
             that workspace or at Cluster scope",
            quote(name),
            quote(workspace),
            quote(subject.user)
        )));
    }

    let old = change
        .old_object
        .ok_or_else(|| Refusal::bad_request("the AdmissionReview has no oldObject".to_owned()))?;
    let old_labels = labels_of(old);
    let keys: BTreeSet<&str> = labels.keys().chain(old_labels.keys()).copied().collect();
    let changed: Vec<&str> = keys
        .into_iter()
        .filter(|k| *k == WORKSPACE_LABEL || k.starts_with(POD_SECURITY_LABEL_PREFIX))
        .filter(|k| labels.get(k) != old_labels.get(k))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let plural = if changed.len() == 1 { "" } else { "s" };
    let list: Vec<String> = changed.iter().map(|k| quote(k)).collect();
    needs_cluster_update(format!(
        "changing the label{plural} {} of namespace {}",
        list.join(", "),
        quote(name)
    ))
}

fn labels_of(object: &Value) -> BTreeMap<&str, &Value> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| labels.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

/// A string in double quotes, escaped as JSON.
fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::{encode_review, parse_review};
    use serde_json::json;

    /// Allows exactly the listed `(verb, group, resource, scope)` requests.
    struct Grants(Vec<(&'static str, &'static str, &'static str, Scope)>);

    impl Authorize for Grants {
        fn authorize(&self, a: &Attributes<'_>) -> Authorization {
            let hit = self
                .0
                .iter()
                .any(|(v, g, r, s)| *v == a.verb && *g == a.api_group && *r == a.resource && *s == a.scope);
            if hit {
                Authorization::Allowed
            } else {
                Authorization::Denied
            }
        }
    }

    fn user(name: &str, extra: Option<(&str, &str)>) -> UserInfo {
        UserInfo {
            username: Some(name.to_owned()),
            extra: extra.map(|(k, v)| [(k.to_owned(), vec![v.to_owned()])].into_iter().collect()),
            ..UserInfo::default()
        }
    }

    fn review(resource: &str, sub: Option<&str>, username: &str, object: Value, old: Value) -> Vec<u8> {
        let group = if resource == "workspacetemplates" {
            "tenant.kubesphere.io"
        } else {
            ""
        };
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "uid-7",
                "kind": {"group": group, "version": "v1", "kind": "X"},
                "resource": {"group": group, "version": "v1", "resource": resource},
                "subResource": sub,
                "name": "system-workspace",
                "operation": "UPDATE",
                "userInfo": {"username": username, "groups": ["system:authenticated"],
                             "extra": {AUTHENTICATED_BY_EXTRA: [AUTHENTICATED_BY_KSIAM]}},
                "object": object,
                "oldObject": old,
            },
        })
        .to_string()
        .into_bytes()
    }

    fn workspace(manager: &str) -> Value {
        json!({"metadata": {"name": "system-workspace", "finalizers": [CASCADING_DELETION_FINALIZER]},
               "spec": {"template": {"spec": {"manager": manager}}}})
    }

    #[test]
    fn kubesphere_identities() {
        assert!(is_kubesphere_identity(&user(
            "kubesphere:serviceaccount:ns:sa",
            Some((AUTHENTICATED_BY_EXTRA, AUTHENTICATED_BY_KSIAM))
        )));
        assert!(is_kubesphere_identity(&user(
            "alice",
            Some((AUTHENTICATED_BY_EXTRA, AUTHENTICATED_BY_KSIAM))
        )));
        for native in [
            user("system:kube-controller-manager", None),
            user("system:serviceaccount:kube-system:namespace-controller", None),
            user("kubernetes-admin", None),
            // A Kubernetes identity that merely looks like a KubeSphere ServiceAccount.
            user("kubesphere:serviceaccount:ns:sa", None),
            user("alice", Some((AUTHENTICATED_BY_EXTRA, "oidc"))),
            user("alice", Some(("other", AUTHENTICATED_BY_KSIAM))),
            UserInfo::default(),
        ] {
            assert!(!is_kubesphere_identity(&native), "{native:?}");
        }
    }

    #[test]
    fn a_manager_change_is_denied_with_403_and_a_clear_message() {
        let body = review(
            "workspacetemplates",
            None,
            "kubesphere:serviceaccount:ns:sa",
            workspace("kubesphere:serviceaccount:ns:sa"),
            workspace("admin"),
        );
        let parsed = parse_review(&body).expect("parse");
        let response = validate(&parsed, &Grants(vec![]));
        let encoded: Value = serde_json::from_slice(&encode_review(response).expect("encode")).expect("json");
        let response = &encoded["response"];
        assert_eq!(response["allowed"], false);
        assert_eq!(response["uid"], "uid-7");
        assert_eq!(response["status"]["code"], 403);
        assert_eq!(response["status"]["reason"], "Forbidden");
        assert_eq!(
            response["status"]["message"],
            "changing the manager of workspace \"system-workspace\" from \"admin\" to \
             \"kubesphere:serviceaccount:ns:sa\" is not allowed: it grants the WorkspaceRole \
             \"system-workspace-admin\", and user \"kubesphere:serviceaccount:ns:sa\" cannot grant it (that needs \
             bind on workspaceroles \"system-workspace-admin\" in workspace \"system-workspace\", or every \
             permission in that workspace)"
        );

        // `bind` on the role, or `*` in the workspace, is enough.
        for grants in [
            vec![("bind", IAM_GROUP, "workspaceroles", Scope::Workspace)],
            vec![("*", "*", "*", Scope::Workspace)],
        ] {
            assert!(validate(&parsed, &Grants(grants)).allowed);
        }
    }

    #[test]
    fn kubernetes_identities_are_not_checked() {
        let body = review(
            "namespaces",
            Some("finalize"),
            "system:serviceaccount:kube-system:namespace-controller",
            json!({"metadata": {"name": "x"}}),
            json!({"metadata": {"name": "x"}}),
        );
        // Kubernetes authenticated it: no ksiam marker.
        let mut body: Value = serde_json::from_slice(&body).expect("json");
        body["request"]["userInfo"]
            .as_object_mut()
            .expect("userInfo")
            .remove("extra");
        let body = body.to_string().into_bytes();
        let parsed = parse_review(&body).expect("parse");
        assert!(validate(&parsed, &Grants(vec![])).allowed);
    }

    #[test]
    fn finalize_needs_cluster_scope_update() {
        let body = review(
            "namespaces",
            Some("finalize"),
            "kubesphere:serviceaccount:ns:sa",
            json!({"metadata": {"name": "x"}}),
            json!({"metadata": {"name": "x"}}),
        );
        let parsed = parse_review(&body).expect("parse");
        let namespace_scope = Grants(vec![("update", "", "namespaces", Scope::Namespace)]);
        let response = validate(&parsed, &namespace_scope);
        assert!(!response.allowed);
        assert!(
            response
                .result
                .message
                .contains("cannot update namespaces at Cluster scope"),
            "{}",
            response.result.message
        );
        let cluster_scope = Grants(vec![("update", "", "namespaces", Scope::Cluster)]);
        assert!(validate(&parsed, &cluster_scope).allowed);
    }

    #[test]
    fn a_store_that_is_not_ready_denies() {
        let authz = PolicyAuthorizer::new(Authorizer::new(ksiam_rbac::Mode::Rbac), Arc::default());
        let body = review(
            "workspacetemplates",
            None,
            "kubesphere:serviceaccount:ns:sa",
            workspace("kubesphere:serviceaccount:ns:sa"),
            workspace("admin"),
        );
        let response = validate(&parse_review(&body).expect("parse"), &authz);
        assert!(!response.allowed);
        assert_eq!(response.result.code, 503);
        assert!(
            response.result.message.contains("not ready"),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn missing_objects_are_bad_requests() {
        let body = review(
            "workspacetemplates",
            None,
            "kubesphere:serviceaccount:ns:sa",
            workspace("x"),
            Value::Null,
        );
        let response = validate(&parse_review(&body).expect("parse"), &Grants(vec![]));
        assert!(!response.allowed);
        assert_eq!(response.result.code, 400);
        assert_eq!(response.result.message, "the AdmissionReview has no oldObject");
    }

    #[test]
    fn the_cel_condition_names_the_same_marker() {
        assert!(KUBESPHERE_IDENTITY_CEL.contains(&format!("'{AUTHENTICATED_BY_EXTRA}'")));
        assert!(KUBESPHERE_IDENTITY_CEL.contains(&format!("'{AUTHENTICATED_BY_KSIAM}'")));
    }
}
