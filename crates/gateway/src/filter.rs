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
use ksiam_rbac::{RequestInfo, Status, status::wants_pretty};
use ksiam_token::AuthError;

use crate::{Shared, path, status_response, text_response};

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
    // The query: X-KubeSphere-Rawquery when the URL has none, then dryrun → dryRun.
    let mut query = req.uri().query().unwrap_or("").to_owned();
    if query.is_empty()
        && let Some(raw) = req.headers().get(KS_RAWQUERY).and_then(|v| v.to_str().ok())
    {
        query = raw.to_owned();
    }
    if form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "dryrun") {
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| {
                let k = if k == "dryrun" {
                    "dryRun".into()
                } else {
                    k.into_owned()
                };
                (k, v.into_owned())
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
    }
    let pretty = wants_pretty(&query, &user_agent);

    // Path safety before anything reads the path.
    let decoded = match path::canonical(req.uri().path()) {
        Ok(p) => p,
        Err(error) => {
            return status_response(&Status::failure(400, "BadRequest", error.to_string()), pretty);
        }
    };
    let info = match ksiam_rbac::resolve(req.method().as_str(), &decoded, &query) {
        Ok(info) => info,
        Err(error) => {
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "Internal Server Error: {}: failed to crate RequestInfo: {error}",
                    ksiam_rbac::status::go_quote(&request_uri)
                ),
            );
        }
    };

    // Authentication.
    let (user, groups) = match authenticate(shared, req.headers_mut()) {
        Ok(who) => who,
        Err(message) => return status_response(&Status::unauthorized(message), pretty),
    };

    // Multicluster: the host is served here, nothing else is.
    let local_path = if info.cluster.is_empty() {
        decoded
    } else {
        let cluster = info.cluster.as_str();
        if cluster != shared.config.host_cluster {
            return if shared.caches.clusters.get(cluster).is_none() {
                text_response(StatusCode::BAD_REQUEST, &format!("cluster {cluster} not exists"))
            } else {
                text_response(
                    StatusCode::NOT_IMPLEMENTED,
                    &format!("proxying to member cluster {cluster} is not supported"),
                )
            };
        }
        strip_cluster(&decoded, cluster)
    };
    let uri = {
        let mut pq = path::encode(&local_path);
        if !query.is_empty() {
            pq.push('?');
            pq.push_str(&query);
        }
        match Uri::builder().path_and_query(pq).build() {
            Ok(uri) => uri,
            Err(_) => {
                return status_response(
                    &Status::failure(400, "BadRequest", "the request query is not valid"),
                    pretty,
                );
            }
        }
    };

    // Authorization.
    let attributes = info.attributes(&user, &groups);
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

    *req.uri_mut() = uri;
    req.headers_mut().remove(KS_RAWQUERY);
    req.extensions_mut()
        .insert(Arc::new(RequestContext { info, user, groups }));
    let req = std::mem::replace(req, Request::new(Body::empty()));
    next.run(req).await
}

/// Removes `/clusters/<cluster>` (leading, or after the API prefix in the legacy form) from a decoded path.
fn strip_cluster(decoded: &str, cluster: &str) -> String {
    let segments: Vec<&str> = decoded.trim_start_matches('/').split('/').collect();
    let at = if segments.first() == Some(&"clusters") {
        0
    } else {
        1
    };
    if segments.get(at) == Some(&"clusters") && segments.get(at + 1) == Some(&cluster) {
        let mut kept: Vec<&str> = segments[..at].to_vec();
        kept.extend_from_slice(&segments[at + 2..]);
        format!("/{}", kept.join("/"))
    } else {
        decoded.to_owned()
    }
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
    fn strips_host_cluster_prefixes() {
        assert_eq!(
            strip_cluster("/clusters/host/api/v1/pods", "host"),
            "/api/v1/pods"
        );
        assert_eq!(
            strip_cluster(
                "/kapis/clusters/host/tenant.kubesphere.io/v1beta1/workspaces",
                "host"
            ),
            "/kapis/tenant.kubesphere.io/v1beta1/workspaces"
        );
        assert_eq!(strip_cluster("/api/v1/pods", "host"), "/api/v1/pods");
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
