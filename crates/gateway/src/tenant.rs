//! `/kapis/tenant.kubesphere.io/v1beta1` (spec §11) and `POST .../iam.kubesphere.io/v1beta1/subjectaccessreviews`
//! (spec §11.3), answered from the informer caches.
//!
//! Handler errors are plain text like upstream's `http.Error`; the filter chain has already answered
//! 401/403 as JSON `Status`.

// Helpers return the finished error response as `Err`; it is moved once, on a cold path.
#![allow(clippy::result_large_err)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use axum::{
    Extension,
    extract::{Path, RawQuery, Request, State},
    response::Response,
};
use http::StatusCode;
use k8s_openapi::api::rbac::v1::Subject;
use ksiam_api::constants::{
    GRANTED_CLUSTERS_ANNOTATION, SERVICE_ACCOUNT_USERNAME_PREFIX, USER_REF_LABEL, WORKSPACE_LABEL,
};
use ksiam_rbac::{Attributes, Scope, Status, status::go_quote};
use kube::{Resource, ResourceExt as _};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    RequestContext, Shared,
    query::{ListQuery, ListResult},
    status_response, text_response,
};

type Ctx = Extension<Arc<RequestContext>>;

/// An object as JSON, with `apiVersion` and `kind` filled in.
fn to_json<K: Resource<DynamicType = ()> + Serialize>(o: &K) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            Value::String(K::api_version(&()).into_owned()),
        );
        m.insert("kind".into(), Value::String(K::kind(&()).into_owned()));
    }
    v
}

fn list_response(result: &ListResult) -> Response {
    crate::json_response(
        StatusCode::OK,
        serde_json::to_string(result).unwrap_or_else(|_| r#"{"items":[],"totalItems":0}"#.into()),
    )
}

fn parse_query(raw: Option<&str>) -> Result<ListQuery, Response> {
    ListQuery::parse(raw.unwrap_or("")).map_err(|m| text_response(StatusCode::BAD_REQUEST, &m))
}

/// An internal authorization question about the caller (a list at `scope`).
fn list_attributes<'a>(
    ctx: &'a RequestContext,
    api_group: &'a str,
    resource: &'a str,
    scope: Scope,
    workspace: &'a str,
) -> Attributes<'a> {
    Attributes {
        user: &ctx.user,
        groups: &ctx.groups,
        verb: "list",
        api_group,
        api_version: "*",
        resource,
        workspace,
        resource_request: true,
        scope,
        ..Default::default()
    }
}

/// Asks the authorizer; `Err` is the 500 to return.
async fn allowed(shared: &Shared, a: Attributes<'_>) -> Result<bool, Response> {
    shared
        .authorize
        .authorize(a)
        .await
        .map(|d| d.allowed)
        .map_err(|e| text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
}

fn subject_is(s: &Subject, ctx: &RequestContext) -> bool {
    (s.kind == "User" && s.name == ctx.user) || (s.kind == "Group" && ctx.groups.contains(&s.name))
}

/// Whether a binding makes the caller a member for the tenant lists, as ks-apiserver reads it: the binding
/// is labelled `iam.kubesphere.io/user-ref=<caller>` (KubeSphere selects by that label first) and one of its
/// subjects is the caller or one of the caller's groups. A binding without the label grants what its role
/// says but lists nothing (`cargo xtask conformance --kubesphere` found this against ks-apiserver).
fn member_by(labels: &BTreeMap<String, String>, subjects: &[Subject], ctx: &RequestContext) -> bool {
    labels.get(USER_REF_LABEL) == Some(&ctx.user) && subjects.iter().any(|s| subject_is(s, ctx))
}

/// `GET /clusters`: every cluster for those who may list `cluster.kubesphere.io` clusters, otherwise
/// the User's granted clusters. A ServiceAccount has no User: it gets an empty list where upstream
/// answers 500.
pub(crate) async fn clusters(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Ctx,
    RawQuery(q): RawQuery,
) -> Response {
    let query = match parse_query(q.as_deref()) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let a = list_attributes(&ctx, "cluster.kubesphere.io", "clusters", Scope::Global, "");
    let all = match allowed(&shared, a).await {
        Ok(all) => all,
        Err(resp) => return resp,
    };
    let caches = &shared.caches;
    let clusters: Vec<Value> = if all {
        caches
            .clusters
            .all()
            .iter()
            .map(|c| to_json(&(**c).clone().without_kubeconfig()))
            .collect()
    } else {
        let Some(user) = caches.users.get(&ctx.user) else {
            if ctx.user.starts_with(SERVICE_ACCOUNT_USERNAME_PREFIX) {
                return list_response(&ListResult {
                    items: Vec::new(),
                    total_items: 0,
                });
            }
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "failed to describe user: User.iam.kubesphere.io {} not found",
                    go_quote(&ctx.user)
                ),
            );
        };
        let mut names: BTreeSet<String> = user
            .annotations()
            .get(GRANTED_CLUSTERS_ANNOTATION)
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if query.filter("roleBindingExists") == Some("true")
            && caches
                .role_bindings
                .all()
                .iter()
                .any(|rb| rb.labels().get(USER_REF_LABEL) == Some(&ctx.user))
        {
            // Only the host cluster's bindings are visible here.
            names.insert(shared.config.host_cluster.clone());
        }
        names
            .iter()
            .filter_map(|n| caches.clusters.get(n))
            .map(|c| to_json(&(*c).clone().without_kubeconfig()))
            .collect()
    };
    list_response(&query.apply(clusters))
}

/// The workspace names the caller's WorkspaceRoleBindings reach (ServiceAccount subjects are ignored).
fn bound_workspaces(shared: &Shared, ctx: &RequestContext) -> BTreeSet<String> {
    shared
        .caches
        .workspace_role_bindings
        .all()
        .iter()
        .filter(|b| member_by(b.labels(), &b.spec.subjects, ctx))
        .filter_map(|b| b.labels().get(WORKSPACE_LABEL).cloned())
        .collect()
}

/// `GET /workspaces`.
pub(crate) async fn workspaces(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Ctx,
    RawQuery(q): RawQuery,
) -> Response {
    let query = match parse_query(q.as_deref()) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let a = list_attributes(&ctx, "*", "workspaces", Scope::Global, "");
    let items: Vec<Value> = match allowed(&shared, a).await {
        Err(resp) => return resp,
        Ok(true) => shared
            .caches
            .workspaces
            .all()
            .iter()
            .map(|w| to_json(&**w))
            .collect(),
        Ok(false) => bound_workspaces(&shared, &ctx)
            .iter()
            .filter_map(|n| shared.caches.workspaces.get(n))
            .map(|w| to_json(&*w))
            .collect(),
    };
    list_response(&query.apply(items))
}

/// `GET /workspacetemplates`.
pub(crate) async fn workspace_templates(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Ctx,
    RawQuery(q): RawQuery,
) -> Response {
    let query = match parse_query(q.as_deref()) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let a = list_attributes(&ctx, "*", "workspaces", Scope::Global, "");
    let cache = &shared.caches.workspace_templates;
    let items: Vec<Value> = match allowed(&shared, a).await {
        Err(resp) => return resp,
        Ok(true) => cache.all().iter().map(|w| to_json(&**w)).collect(),
        Ok(false) => bound_workspaces(&shared, &ctx)
            .iter()
            .filter_map(|n| cache.get(n))
            .map(|w| to_json(&*w))
            .collect(),
    };
    list_response(&query.apply(items))
}

/// `GET /workspaces/{workspace}`.
pub(crate) async fn workspace(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match shared.caches.workspaces.get(&name) {
        Some(w) => crate::json_response(StatusCode::OK, to_json(&*w).to_string()),
        None => text_response(
            StatusCode::NOT_FOUND,
            &format!("Workspace.tenant.kubesphere.io {} not found", go_quote(&name)),
        ),
    }
}

/// Namespaces of the caller's RoleBindings (ServiceAccount subjects are ignored).
fn bound_namespaces(shared: &Shared, ctx: &RequestContext) -> BTreeSet<String> {
    shared
        .caches
        .role_bindings
        .all()
        .iter()
        .filter(|b| member_by(b.labels(), &b.spec.subjects, ctx))
        .filter_map(|b| b.namespace())
        .collect()
}

async fn list_namespaces(
    shared: &Shared,
    ctx: &RequestContext,
    raw: Option<&str>,
    workspace: Option<&str>,
) -> Response {
    let query = match parse_query(raw) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let (scope, ws) = match workspace {
        Some(ws) => (Scope::Workspace, ws),
        None => (Scope::Cluster, ""),
    };
    let in_workspace = |ns: &k8s_openapi::api::core::v1::Namespace| {
        workspace.is_none_or(|ws| ns.labels().get(WORKSPACE_LABEL).map(String::as_str) == Some(ws))
    };
    let cache = &shared.caches.namespaces;
    let items: Vec<Value> = match allowed(shared, list_attributes(ctx, "", "namespaces", scope, ws)).await {
        Err(resp) => return resp,
        Ok(true) => cache
            .all()
            .iter()
            .filter(|ns| in_workspace(ns))
            .map(|ns| to_json(&**ns))
            .collect(),
        Ok(false) => bound_namespaces(shared, ctx)
            .iter()
            .filter_map(|n| cache.get(n))
            .filter(|ns| in_workspace(ns))
            .map(|ns| to_json(&*ns))
            .collect(),
    };
    list_response(&query.apply(items))
}

/// `GET /namespaces`.
pub(crate) async fn namespaces(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Ctx,
    RawQuery(q): RawQuery,
) -> Response {
    list_namespaces(&shared, &ctx, q.as_deref(), None).await
}

/// `GET /workspaces/{workspace}/namespaces`.
pub(crate) async fn workspace_namespaces(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Ctx,
    Path(workspace): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    list_namespaces(&shared, &ctx, q.as_deref(), Some(&workspace)).await
}

/// `POST /kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews`: a review (or a list of them) with its
/// `status` filled in.
pub(crate) async fn subject_access_review(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let limit = shared.config.body_limit;
    let body = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(body) => body,
        Err(_) => {
            return status_response(
                &Status::failure(
                    413,
                    "RequestEntityTooLarge",
                    format!("Request entity too large: limit is {limit}"),
                ),
                false,
            );
        }
    };
    let mut review: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return text_response(StatusCode::BAD_REQUEST, "the body is not a SubjectAccessReview"),
        Err(e) => return text_response(StatusCode::BAD_REQUEST, &format!("cannot decode the body: {e}")),
    };
    if let Some(items) = review.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            if let Err(resp) = review_one(&shared, item).await {
                return resp;
            }
        }
    } else if let Err(resp) = review_one(&shared, &mut review).await {
        return resp;
    }
    crate::json_response(StatusCode::OK, review.to_string())
}

async fn review_one(shared: &Shared, review: &mut Value) -> Result<(), Response> {
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let user = s(&spec, "user");
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    let (ra, nra) = (spec.get("resourceAttributes"), spec.get("nonResourceAttributes"));
    let fields: [String; 10] = match (ra, nra) {
        (Some(r), _) => [
            s(r, "verb"),
            s(r, "group"),
            s(r, "version"),
            s(r, "resource"),
            s(r, "subresource"),
            s(r, "name"),
            s(r, "namespace"),
            s(r, "workspace"),
            s(r, "resourceScope"),
            String::new(),
        ],
        (None, Some(n)) => {
            let mut f: [String; 10] = Default::default();
            f[0] = s(n, "verb");
            f[9] = s(n, "path");
            f
        }
        (None, None) => Default::default(),
    };
    let [
        verb,
        group,
        version,
        resource,
        subresource,
        name,
        namespace,
        workspace,
        scope,
        path,
    ] = &fields;
    let scope = if !namespace.is_empty() {
        Scope::Namespace
    } else if !workspace.is_empty() {
        Scope::Workspace
    } else {
        Scope::parse(scope)
    };
    let a = Attributes {
        user: &user,
        groups: &groups,
        verb,
        api_group: group,
        api_version: version,
        resource,
        subresource,
        name,
        namespace,
        workspace,
        resource_request: ra.is_some(),
        path,
        scope,
        ..Default::default()
    };
    let d = shared
        .authorize
        .authorize(a)
        .await
        .map_err(|e| text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    if let Some(m) = review.as_object_mut() {
        let mut status = json!({ "allowed": d.allowed });
        if d.denied {
            status["denied"] = Value::Bool(true);
        }
        if !d.reason.is_empty() {
            status["reason"] = Value::String(d.reason);
        }
        m.insert("status".into(), status);
    }
    Ok(())
}
