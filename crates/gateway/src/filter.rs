//! KubeSphere's filter chain (spec §6.1): request info, authentication, multicluster, authorization.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use base64::Engine as _;
use http::{StatusCode, Uri, header};
use ksiam_rbac::{RequestInfo, Status, Target, TargetError, status::wants_pretty_param};
use ksiam_token::AuthError;

use crate::{Shared, json_response, status_response, text_response};

/// The `X-KubeSphere-Authorization` header, copied into `Authorization` when that is empty.
const KS_AUTHORIZATION: &str = "x-kubesphere-authorization";
/// The `X-KubeSphere-Rawquery` header, the query when the URL has none.
const KS_RAWQUERY: &str = "x-kubesphere-rawquery";
const ANONYMOUS_USER: &str = "system:anonymous";
const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// What the filter chain learned, available to handlers as a request extension.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The resolved request (its `path` is the decoded path without `/clusters/<host>`).
    pub info: RequestInfo,
    /// The user name.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
}

/// The whole chain as one middleware.
pub(crate) async fn filter(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let resp = run(&shared, &mut req, next).await;
    shared.metrics.observe(&method, &resp, started.elapsed());
    resp
}

async fn run(shared: &Shared, req: &mut Request, next: Next) -> Response {
    let request_uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();

    // X-KubeSphere-Authorization → Authorization.
    let headers = req.headers_mut();
    if let Some(ks) = headers.remove(KS_AUTHORIZATION)
        && headers.get(header::AUTHORIZATION).is_none_or(|v| v.is_empty())
    {
        headers.insert(header::AUTHORIZATION, ks);
    }
    // The request target: one reading of the path and of the query (the URL's, else
    // X-KubeSphere-Rawquery), resolved; what is forwarded is written back from that reading.
    let raw_query_header = match req.headers().get(KS_RAWQUERY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return status_response(
                &Status::failure(400, "BadRequest", "the X-KubeSphere-Rawquery header is not ASCII"),
                false,
            );
        }
    };
    let target = Target::parse(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query(),
        raw_query_header,
    );
    let pretty = wants_pretty_param(
        target.as_ref().ok().and_then(|t| t.query.first("pretty")),
        &user_agent,
    );
    let target = match target {
        Ok(t) => t,
        Err(TargetError::Resolve(error)) => {
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "Internal Server Error: {}: failed to crate RequestInfo: {error}",
                    ksiam_rbac::status::go_quote(&request_uri)
                ),
            );
        }
        Err(error) => {
            return status_response(&Status::failure(400, "BadRequest", error.to_string()), pretty);
        }
    };

    // Authentication.
    let (user, groups) = match authenticate(shared, req.headers_mut()) {
        Ok(who) => who,
        Err(message) => return status_response(&Status::unauthorized(message), pretty),
    };
    let info = &target.info;

    // Multicluster: the host is served here, nothing else is. Which clusters exist is told only to
    // authenticated callers.
    if !info.cluster.is_empty() && info.cluster != shared.config.host_cluster {
        if user == ANONYMOUS_USER {
            return status_response(&Status::unauthorized(CANNOT_AUTHENTICATE), pretty);
        }
        let cluster = info.cluster.as_str();
        return if shared.caches.clusters.get(cluster).is_none() {
            // ks-apiserver's answer, byte for byte: 400 and the Go `StatusError` as raw, indented JSON.
            let status = Status::failure(400, "BadRequest", format!("cluster {cluster} not exists"));
            json_response(StatusCode::BAD_REQUEST, status.to_status_error_json())
        } else {
            text_response(
                StatusCode::NOT_IMPLEMENTED,
                &format!("proxying to member cluster {cluster} is not supported"),
            )
        };
    }
    let uri = match Uri::builder().path_and_query(target.forwarded()).build() {
        Ok(uri) => uri,
        Err(_) => {
            return status_response(
                &Status::failure(400, "BadRequest", "the request target is not valid"),
                pretty,
            );
        }
    };

    // Authorization: the request as resolved, and for the streaming subresources of an upgrade (exec,
    // attach, port-forward over WebSocket are GETs) also `create`, as kube-apiserver requires.
    let upgrade = is_upgrade(req.headers());
    let attributes = info.attributes(&user, &groups);
    let create = needs_create(info, upgrade).then_some(ksiam_rbac::Attributes {
        verb: "create",
        ..attributes
    });
    for attributes in std::iter::once(attributes).chain(create) {
        match shared.authorize.authorize(attributes).await {
            Ok(d) if d.allowed => {}
            Ok(d) => return status_response(&Status::forbidden(&attributes, &d.reason), pretty),
            Err(error) => {
                return text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!(
                        "Internal Server Error: {}: {error}",
                        ksiam_rbac::status::go_quote(&request_uri)
                    ),
                );
            }
        }
    }

    *req.uri_mut() = uri;
    req.headers_mut().remove(KS_RAWQUERY);
    let info = target.info;
    req.extensions_mut()
        .insert(Arc::new(RequestContext { info, user, groups }));
    let req = std::mem::replace(req, Request::new(Body::empty()));
    next.run(req).await
}

/// Subresources that stream over an upgraded connection; kube-apiserver (≥ 1.30) also requires `create` on
/// them when they are upgraded, whatever the method.
const STREAMING_SUBRESOURCES: [&str; 4] = ["exec", "attach", "portforward", "proxy"];

/// Whether a request also needs `create`: exec, attach and port-forward reached with a GET (the WebSocket
/// form), and any streaming subresource or `proxy` verb on an upgraded connection.
fn needs_create(info: &RequestInfo, upgrade: bool) -> bool {
    if !info.is_resource_request || info.verb == "create" {
        return false;
    }
    let streaming = STREAMING_SUBRESOURCES.contains(&info.subresource.as_str());
    (streaming && info.subresource != "proxy" && info.verb == "get")
        || (upgrade && (streaming || info.verb == "proxy"))
}

/// Whether the client asks for a connection upgrade (`Connection: upgrade` and `Upgrade`).
pub(crate) fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The authenticator union (spec §6.2): anonymous, basic, bearer. `Err` is the 401 message.
fn authenticate(shared: &Shared, headers: &mut http::HeaderMap) -> Result<(String, Vec<String>), String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok((ANONYMOUS_USER.into(), vec![UNAUTHENTICATED_GROUP.into()]));
    };
    let Ok(value) = value.to_str() else {
        return Err(CANNOT_AUTHENTICATE.into());
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok((ANONYMOUS_USER.into(), vec![UNAUTHENTICATED_GROUP.into()]));
    }
    if is_basic(value) {
        // ksiam keeps no User passwords: basic credentials never authenticate.
        return Err(CANNOT_AUTHENTICATE.into());
    }
    let mut parts = value.split(' ');
    let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
        return Err(CANNOT_AUTHENTICATE.into());
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(CANNOT_AUTHENTICATE.into());
    }
    match shared.authn.authenticate(token) {
        Ok(user) => Ok((user.username, user.groups)),
        Err(error) => Err(auth_message(&error)),
    }
}

fn auth_message(error: &AuthError) -> String {
    error.to_string()
}

/// The 401 message when no authenticator errored.
const CANNOT_AUTHENTICATE: &str = "The request cannot be authenticated.";

/// Whether the header carries well-formed HTTP Basic credentials (Go's `Request.BasicAuth`).
fn is_basic(value: &str) -> bool {
    let Some(prefix) = value.get(..6) else {
        return false;
    };
    if !prefix.eq_ignore_ascii_case("basic ") {
        return false;
    }
    base64::engine::general_purpose::STANDARD
        .decode(&value[6..])
        .ok()
        .is_some_and(|raw| raw.contains(&b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_subresources_need_create() {
        let info = |method: &str, path: &str| ksiam_rbac::resolve(method, path, "").unwrap();
        let exec = info("GET", "/api/v1/namespaces/n/pods/p/exec");
        assert!(needs_create(&exec, false) && needs_create(&exec, true));
        assert!(!needs_create(
            &info("POST", "/api/v1/namespaces/n/pods/p/exec"),
            true
        ));
        assert!(needs_create(
            &info("GET", "/api/v1/namespaces/n/pods/p/attach"),
            false
        ));
        assert!(needs_create(
            &info("GET", "/api/v1/namespaces/n/pods/p/portforward"),
            false
        ));
        let proxy = info("GET", "/api/v1/namespaces/n/services/s/proxy");
        assert!(!needs_create(&proxy, false) && needs_create(&proxy, true));
        assert!(needs_create(&info("GET", "/api/v1/proxy/nodes/n"), true));
        assert!(!needs_create(
            &info("GET", "/api/v1/namespaces/n/pods/p/log"),
            true
        ));
        assert!(!needs_create(&info("GET", "/api/v1/namespaces/n/pods"), true));
        assert!(!needs_create(&info("GET", "/version"), true));
    }

    #[test]
    fn basic_detection() {
        assert!(is_basic("Basic YTpi"));
        assert!(is_basic("basic YTpi"));
        assert!(!is_basic("Basic !!"));
        assert!(!is_basic("Bearer x"));
        assert!(!is_basic("Basic"));
    }
}
