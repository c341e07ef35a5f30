//! kube-apiserver's webhooks, served over HTTP(S) with axum:
//!
//! - `POST /authorize`: an `authorization.k8s.io/v1` SubjectAccessReview (the authorization webhook).
//! - `POST /authenticate`: an `authentication.k8s.io/v1` TokenReview (the token webhook), when an
//!   [`Authenticator`] is configured.
//! - `GET /healthz`: 200 once the policy store is ready, 503 before.
//!
//! And [`review_sar`], KubeSphere's `/kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews` for the gateway.
//!
//! SubjectAccessReview mapping (kube-apiserver): `resourceAttributes` with a namespace is a Namespace-scope
//! resource request, without one a Cluster-scope one; `nonResourceAttributes` is a non-resource request
//! whose verb is the uppercase HTTP method (kube-apiserver sends the lowercase method; KubeSphere's rules
//! use `GET`, `POST`, …). kube-apiserver adds `system:authenticated` to every authenticated user, but
//! KubeSphere ServiceAccounts have no groups (spec §6.4), so the groups of `kubesphere:serviceaccount:*`
//! users are dropped before deciding. A denial is `allowed: false` without `denied`, so kube-apiserver asks
//! its next authorizer (NoOpinion). Malformed bodies get 400 with a Kubernetes `Status`.
//! The token is never logged or echoed.

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::{StatusCode, header};
use ksiam_api::constants::{AUTHENTICATED_BY_EXTRA, AUTHENTICATED_BY_KSIAM};
use ksiam_rbac::{Attributes, Scope, Status, matching::KUBESPHERE_SA_PREFIX};
use ksiam_runtime::{
    http::HttpServer,
    tls::{ServerTls, TlsSource},
};
use ksiam_token::Authenticator;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::grpc::AuthzService;

/// Largest accepted review body.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// How long open connections may take to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the webhook handlers use.
#[derive(Clone, Debug)]
pub struct WebhookState {
    /// Decides SubjectAccessReviews.
    pub authz: AuthzService,
    /// Answers TokenReviews; `/authenticate` is not routed without it.
    pub authenticator: Option<Arc<Authenticator>>,
}

/// The routes: `POST /authorize`, `POST /authenticate` (with an authenticator), `GET /healthz`.
///
/// Refused in `AlwaysAllow` mode: kube-apiserver would then allow everything for every identity ksiam
/// vouches for.
pub fn webhook_router(state: WebhookState) -> Result<Router, WebhookServeError> {
    if state.authz.authorizer().mode() == ksiam_rbac::Mode::AlwaysAllow {
        return Err(WebhookServeError::AlwaysAllow);
    }
    let mut router = Router::new()
        .route("/authorize", post(authorize))
        .route("/healthz", get(healthz));
    if state.authenticator.is_some() {
        router = router.route("/authenticate", post(authenticate));
    }
    Ok(router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Arc::new(state)))
}

async fn healthz(State(state): State<Arc<WebhookState>>) -> Response {
    if state.authz.store().is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "policy not synced yet\n").into_response()
    }
}

fn json_response(code: StatusCode, body: String) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn bad_request(message: String) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        Status::failure(400, "BadRequest", message).to_json(false),
    )
}

fn ok_json(v: &Value) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            Status::failure(500, "InternalError", format!("encoding the response: {e}")).to_json(false),
        ),
    }
}

// === SubjectAccessReview ===

/// Attributes owned by a review.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewAttributes {
    /// The user.
    pub user: String,
    /// The groups.
    pub groups: Vec<String>,
    /// The verb.
    pub verb: String,
    /// The API group.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The resource.
    pub resource: String,
    /// The subresource.
    pub subresource: String,
    /// The object name.
    pub name: String,
    /// The namespace.
    pub namespace: String,
    /// The workspace.
    pub workspace: String,
    /// The non-resource path.
    pub path: String,
    /// Whether this is a resource request.
    pub resource_request: bool,
    /// Whether kube-apiserver serves it.
    pub kubernetes_request: bool,
    /// The scope.
    pub scope: Scope,
}

impl ReviewAttributes {
    /// Borrowed for a decision.
    pub fn attributes(&self) -> Attributes<'_> {
        Attributes {
            user: &self.user,
            groups: &self.groups,
            verb: &self.verb,
            api_group: &self.api_group,
            api_version: &self.api_version,
            resource: &self.resource,
            subresource: &self.subresource,
            name: &self.name,
            namespace: &self.namespace,
            workspace: &self.workspace,
            cluster: "",
            resource_request: self.resource_request,
            kubernetes_request: self.kubernetes_request,
            path: &self.path,
            scope: self.scope,
        }
    }
}

/// Which SubjectAccessReview dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    /// kube-apiserver's webhook.
    Kubernetes,
    /// KubeSphere's `/kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews`.
    KubeSphere,
}

fn string_field(obj: &Value, field: &str, at: &str) -> Result<String, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{at}.{field} must be a string")),
    }
}

/// Whether kube-apiserver's review is about an identity ksiam authenticated: `spec.extra` carries the
/// marker that ksiam's TokenReview answers and the gateway's impersonation set.
fn authenticated_by_ksiam(spec: &Value) -> bool {
    spec.get("extra")
        .and_then(|e| e.get(AUTHENTICATED_BY_EXTRA))
        .and_then(Value::as_array)
        .is_some_and(|values| values.iter().any(|v| v.as_str() == Some(AUTHENTICATED_BY_KSIAM)))
}

/// The attributes of a review; `None` when ksiam has no opinion (kube-apiserver's reviews of identities
/// ksiam did not authenticate).
fn sar_attributes(review: &Value, dialect: Dialect) -> Result<Option<ReviewAttributes>, String> {
    let spec = match review.get("spec") {
        Some(spec @ Value::Object(_)) => spec,
        _ => return Err("spec is required".into()),
    };
    let user = string_field(spec, "user", "spec")?;
    let mut groups: Vec<String> = match spec.get("groups") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| "spec.groups must be a list of strings".to_owned())?,
    };
    if user.is_empty() && groups.is_empty() {
        return Err("spec.user or spec.groups is required".into());
    }
    if dialect == Dialect::Kubernetes && !authenticated_by_ksiam(spec) {
        return Ok(None);
    }
    if dialect == Dialect::Kubernetes && user.starts_with(KUBESPHERE_SA_PREFIX) {
        // kube-apiserver added system:authenticated; KubeSphere ServiceAccounts have no groups.
        groups.clear();
    }
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let mut a = ReviewAttributes {
        user,
        groups,
        kubernetes_request: dialect == Dialect::Kubernetes,
        ..Default::default()
    };
    match (resource, non_resource) {
        (Some(_), Some(_)) => {
            return Err(
                "spec.resourceAttributes and spec.nonResourceAttributes are mutually exclusive".into(),
            );
        }
        (None, None) => {
            return Err("spec.resourceAttributes or spec.nonResourceAttributes is required".into());
        }
        (Some(r), None) => {
            let at = "spec.resourceAttributes";
            if !r.is_object() {
                return Err(format!("{at} must be an object"));
            }
            a.resource_request = true;
            a.verb = string_field(r, "verb", at)?;
            a.api_group = string_field(r, "group", at)?;
            a.api_version = string_field(r, "version", at)?;
            a.resource = string_field(r, "resource", at)?;
            a.subresource = string_field(r, "subresource", at)?;
            a.name = string_field(r, "name", at)?;
            a.namespace = string_field(r, "namespace", at)?;
            a.scope = match dialect {
                // The gateway's resolver: global resources at Global scope, and a watch whose label selector
                // names exactly one workspace at that workspace's scope.
                Dialect::Kubernetes => {
                    if a.verb == "watch"
                        && let Some(ws) = watched_workspace(r)
                    {
                        a.workspace = ws;
                    }
                    ksiam_rbac::request::scope_of(&a.api_group, &a.resource, &a.namespace, &a.workspace)
                }
                Dialect::KubeSphere => {
                    a.workspace = string_field(r, "workspace", at)?;
                    if !a.namespace.is_empty() {
                        Scope::Namespace
                    } else if !a.workspace.is_empty() {
                        Scope::Workspace
                    } else {
                        Scope::parse(&string_field(r, "resourceScope", at)?)
                    }
                }
            };
            if a.verb.is_empty() {
                return Err(format!("{at}.verb is required"));
            }
        }
        (None, Some(n)) => {
            let at = "spec.nonResourceAttributes";
            if !n.is_object() {
                return Err(format!("{at} must be an object"));
            }
            a.path = string_field(n, "path", at)?;
            let verb = string_field(n, "verb", at)?;
            a.verb = match dialect {
                // kube-apiserver sends the lowercase HTTP method; KubeSphere's rules use the method itself.
                Dialect::Kubernetes => verb.to_ascii_uppercase(),
                Dialect::KubeSphere => verb,
            };
            if a.verb.is_empty() || a.path.is_empty() {
                return Err(format!("{at}.verb and {at}.path are required"));
            }
        }
    }
    Ok(Some(a))
}

/// The workspace a SubjectAccessReview's label selector names, read as the gateway reads
/// `labelSelector=kubesphere.io/workspace=<ws>`: kube-apiserver sends the selector (feature
/// AuthorizeWithSelectors) as `rawSelector`, or as requirements, where that form is exactly one requirement
/// `kubesphere.io/workspace In [<ws>]`.
fn watched_workspace(resource_attributes: &Value) -> Option<String> {
    let selector = resource_attributes.get("labelSelector")?;
    if let Some(raw) = selector.get("rawSelector").and_then(Value::as_str) {
        return ksiam_rbac::request::workspace_of_selector(raw).map(str::to_owned);
    }
    let [requirement] = selector.get("requirements")?.as_array()?.as_slice() else {
        return None;
    };
    let [value] = requirement.get("values")?.as_array()?.as_slice() else {
        return None;
    };
    let operator = requirement.get("operator")?.as_str()?;
    let key = requirement.get("key")?.as_str()?;
    let selector = format!("{key}={}", value.as_str()?);
    (operator == "In")
        .then(|| ksiam_rbac::request::workspace_of_selector(&selector).map(str::to_owned))
        .flatten()
}

fn decide_into(authz: &AuthzService, review: &mut Value, dialect: Dialect) -> Result<(), String> {
    let Some(attrs) = sar_attributes(review, dialect)? else {
        // Not ours: no opinion, so Kubernetes' own authorizers alone decide.
        if let Some(obj) = review.as_object_mut() {
            obj.insert(
                "status".into(),
                json!({"allowed": false, "reason": "ksiam has no opinion on identities it did not authenticate"}),
            );
        }
        return Ok(());
    };
    let a = attrs.attributes();
    let snapshot = authz.store().load();
    let ready = authz.store().is_ready();
    let verdict = match dialect {
        // kube-apiserver's requests: RBAC only; the gateway's path allow-list is about the gateway's paths.
        Dialect::Kubernetes => authz.decide_rbac_on(&snapshot, ready, &a),
        Dialect::KubeSphere => authz.decide_on(&snapshot, ready, &a),
    };
    let reason = verdict.reason(&a);
    let mut status = json!({"allowed": verdict.allowed()});
    if dialect == Dialect::KubeSphere {
        status["denied"] = json!(!verdict.allowed());
    }
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    if !ready && !verdict.allowed() {
        status["evaluationError"] = json!(reason);
    }
    tracing::debug!(user = %a.user, verb = %a.verb, resource = %a.resource, path = %a.path, allowed = verdict.allowed(), "subject access review");
    if let Some(obj) = review.as_object_mut() {
        obj.insert("status".into(), status);
    }
    Ok(())
}

/// Why [`review_sar`] could not answer: the text for a 400 `Status`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(pub String);

/// KubeSphere's SubjectAccessReview (spec §11.3): `spec.user` and `spec.groups` are used as given;
/// `resourceAttributes.{verb,group,version,resource,subresource,name,namespace,workspace,resourceScope}`
/// with scope Namespace if a namespace is given, else Workspace if a workspace is given, else
/// `resourceScope`; `nonResourceAttributes.{path,verb}` with the verb as given. A `…List` (an object with
/// `items`) reviews each item. Returns the review with `status{allowed, denied, reason}` set.
pub fn review_sar(authz: &AuthzService, mut sar: Value) -> Result<Value, ReviewError> {
    if let Some(items) = sar.get_mut("items").and_then(Value::as_array_mut) {
        for (i, item) in items.iter_mut().enumerate() {
            decide_into(authz, item, Dialect::KubeSphere)
                .map_err(|e| ReviewError(format!("items[{i}].{e}")))?;
        }
        return Ok(sar);
    }
    decide_into(authz, &mut sar, Dialect::KubeSphere).map_err(ReviewError)?;
    Ok(sar)
}

fn parse_review(body: &[u8], api_version: &str, kind: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not a JSON {kind}: {e}"))?;
    let got_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let got_kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    if got_version != api_version || got_kind != kind {
        return Err(format!(
            "expected apiVersion {api_version:?} kind {kind:?}, got apiVersion {got_version:?} kind {got_kind:?}"
        ));
    }
    Ok(v)
}

async fn authorize(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    let mut review = match parse_review(&body, "authorization.k8s.io/v1", "SubjectAccessReview") {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    match decide_into(&state.authz, &mut review, Dialect::Kubernetes) {
        Ok(()) => ok_json(&review),
        Err(e) => {
            state
                .authz
                .metrics()
                .decision(crate::metrics::DecisionResult::Error, Duration::ZERO);
            bad_request(e)
        }
    }
}

// === TokenReview ===

async fn authenticate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    let Some(authenticator) = &state.authenticator else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut review = match parse_review(&body, "authentication.k8s.io/v1", "TokenReview") {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let token = match review.get("spec").and_then(|s| s.get("token")) {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return bad_request("spec.token is required".into()),
    };
    let status = match authenticator.authenticate(&token) {
        Ok(user) => {
            tracing::debug!(user = %user.username, "token review: authenticated");
            let mut extra = user.extra;
            extra.insert(
                AUTHENTICATED_BY_EXTRA.to_owned(),
                vec![AUTHENTICATED_BY_KSIAM.to_owned()],
            );
            json!({
                "authenticated": true,
                "user": {"username": user.username, "groups": user.groups, "extra": extra},
            })
        }
        Err(error) => {
            tracing::debug!(%error, "token review: rejected");
            json!({"authenticated": false, "error": error.to_string()})
        }
    };
    if let Some(obj) = review.as_object_mut() {
        // Never echo the token back.
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("token");
        }
        obj.insert("status".into(), status);
    }
    ok_json(&review)
}

// === serving ===

/// Why [`serve_webhooks`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookServeError {
    /// The serving certificate, its key or the client CA could not be used.
    #[error(transparent)]
    Tls(#[from] ksiam_runtime::tls::TlsError),
    /// kube-apiserver's webhooks were asked for in `AlwaysAllow` mode.
    #[error(
        "kube-apiserver's SubjectAccessReview webhook cannot run in AlwaysAllow mode: it would allow every request of every identity ksiam authenticates"
    )]
    AlwaysAllow,
}

/// The webhook server's TLS: its serving certificate and key (PEM files, re-read when they change, so a
/// rotated certificate is served without a restart) and, when given, the CA whose client certificates are
/// the only ones accepted (kube-apiserver's identity towards its webhooks). Without a client CA anyone who
/// reaches the port can ask for decisions.
#[derive(Clone, Debug)]
pub struct WebhookTls {
    /// The serving certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Accept only clients with a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets open connections finish (up to
/// [`SHUTDOWN_GRACE`]), through the runtime's accept loop. With `tls` it serves HTTPS, requiring client
/// certificates when [`WebhookTls::client_ca`] is set; otherwise plain HTTP.
pub async fn serve_webhooks(
    listener: TcpListener,
    router: Router,
    tls: Option<WebhookTls>,
    shutdown: CancellationToken,
) -> Result<(), WebhookServeError> {
    let mut server =
        HttpServer::from_listener("kube-apiserver-webhooks", listener).with_grace(SHUTDOWN_GRACE);
    if let Some(tls) = &tls {
        if tls.client_ca.is_none() {
            tracing::warn!(
                "kube-apiserver's webhooks accept any client: set a client CA so that only kube-apiserver can ask for decisions"
            );
        }
        let serving = ServerTls::load(&TlsSource::Files {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            ca: None,
        })?;
        server = server.with_tls(&serving, tls.client_ca.as_deref())?;
    }
    server.serve(router, shutdown.cancelled_owned()).await;
    Ok(())
}
