//! The authorizing proxy to kube-apiserver (spec §6.1 `WithKubeAPIServer`).
//!
//! Requests reach here only after the filter chain allowed them. They go upstream with the gateway's
//! own credentials: the caller's `Authorization`, every `Impersonate-*`, the front-proxy `X-Remote-*`
//! headers and the KubeSphere headers are dropped, hop-by-hop headers are removed (except the
//! `Connection: Upgrade` pair of an upgrade). Bodies stream both ways; upgrades (exec, attach,
//! port-forward over SPDY or WebSocket) are spliced after the 101.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    response::Response,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version, header};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use ksiam_rbac::{Status, status::wants_pretty};
use kube::client::ConfigExt as _;
use tower::{BoxError, ServiceBuilder, ServiceExt as _, util::BoxCloneSyncService};

use crate::{RequestContext, Shared, filter::is_upgrade, status_response, text_response};

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded as they are.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The kube-apiserver client.
pub(crate) struct Upstream {
    service: BoxCloneSyncService<Request<Body>, http::Response<Incoming>, BoxError>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    base_path: String,
}

impl Upstream {
    pub(crate) fn new(config: &kube::Config, connect_timeout: Duration) -> Result<Self, kube::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout.unwrap_or(connect_timeout)));
        let https = config.rustls_https_connector_with_connector(http)?;
        let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(https);
        let service = ServiceBuilder::new()
            .layer(config.extra_headers_layer()?)
            .option_layer(config.auth_layer()?)
            .map_err(BoxError::from)
            .service(client);
        let parts = config.cluster_url.clone().into_parts();
        let bad = || kube::Error::Service("the kube-apiserver URL has no scheme or host".into());
        Ok(Self {
            service: BoxCloneSyncService::new(service),
            scheme: parts.scheme.ok_or_else(bad)?,
            authority: parts.authority.ok_or_else(bad)?,
            base_path: parts
                .path_and_query
                .map(|p| p.path().trim_end_matches('/').to_owned())
                .unwrap_or_default(),
        })
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.base_path))
            .build()
    }
}

/// Everything the filter chain let through that no route serves: proxied when kube-apiserver serves it,
/// 404 otherwise.
pub(crate) async fn fallback(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let Some(ctx) = req.extensions().get::<Arc<RequestContext>>().cloned() else {
        return text_response(StatusCode::NOT_FOUND, "404 page not found");
    };
    if !ctx.info.is_kubernetes_request {
        return text_response(StatusCode::NOT_FOUND, "404 page not found");
    }
    let query = req.uri().query().unwrap_or("");
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pretty = wants_pretty(query, user_agent);
    let Some(upstream) = &shared.upstream else {
        return status_response(
            &Status::failure(
                503,
                "ServiceUnavailable",
                "the Kubernetes API server is not configured",
            ),
            pretty,
        );
    };
    proxy(&shared, upstream, &ctx, req, pretty).await
}

async fn proxy(
    shared: &Shared,
    upstream: &Upstream,
    ctx: &RequestContext,
    req: Request,
    pretty: bool,
) -> Response {
    let limit = shared.config.body_limit;
    let too_large = || {
        status_response(
            &Status::failure(
                413,
                "RequestEntityTooLarge",
                format!("Request entity too large: limit is {limit}"),
            ),
            pretty,
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let (long_running, upgrade) = streaming(ctx, req.headers());
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if shared.config.impersonate && !may_impersonate(&ctx.user) {
        return status_response(
            &Status::failure(
                403,
                "Forbidden",
                format!(
                    "the user {} is reserved for Kubernetes and cannot be proxied",
                    ksiam_rbac::status::go_quote(&ctx.user)
                ),
            ),
            pretty,
        );
    }

    let (mut parts, body) = req.into_parts();
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = upstream.uri(pq) else {
        return status_response(
            &Status::failure(400, "BadRequest", "the request URI is not valid"),
            pretty,
        );
    };
    let mut out = Request::new(if upgrade {
        Body::empty()
    } else {
        Body::new(Limited::new(body, limit))
    });
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = forward_request_headers(&parts.headers, upgrade);
    if let Some(peer) = peer
        && let Ok(v) = HeaderValue::from_str(&peer.to_string())
    {
        out.headers_mut().insert(X_FORWARDED_FOR, v);
    }
    if shared.config.impersonate
        && let Err(error) = impersonate(out.headers_mut(), ctx)
    {
        return status_response(&Status::failure(400, "BadRequest", error), pretty);
    }

    let call = upstream.service.clone().oneshot(out);
    let result = if long_running {
        call.await
    } else {
        match tokio::time::timeout(shared.config.request_timeout, call).await {
            Ok(result) => result,
            Err(_) => {
                return status_response(
                    &Status::failure(
                        504,
                        "Timeout",
                        format!(
                            "Timeout: request did not complete within {}s",
                            shared.config.request_timeout.as_secs()
                        ),
                    ),
                    pretty,
                );
            }
        }
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(error) => {
            if caused_by_limit(&*error) {
                return too_large();
            }
            tracing::warn!(error = %chain(&*error), "kube-apiserver request failed");
            return status_response(
                &Status::failure(
                    503,
                    "ServiceUnavailable",
                    format!("the Kubernetes API server is unavailable: {}", chain(&*error)),
                ),
                pretty,
            );
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        match client_upgrade {
            Some(client_upgrade) => {
                tokio::spawn(async move {
                    match tokio::join!(client_upgrade, upstream_upgrade) {
                        (Ok(client), Ok(server)) => {
                            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
                            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await
                            {
                                tracing::debug!(%error, "upgraded connection ended");
                            }
                        }
                        (Err(error), _) | (_, Err(error)) => {
                            tracing::debug!(%error, "connection upgrade failed");
                        }
                    }
                });
            }
            None => {
                return status_response(
                    &Status::failure(502, "BadGateway", "the upstream switched protocols unasked"),
                    pretty,
                );
            }
        }
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    strip_hop_by_hop(resp.headers_mut());
    resp.map(Body::new)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Names the gateway never impersonates: Kubernetes' own identities (`system:…`) could hold native RBAC
/// grants that KubeSphere never gave. `system:anonymous` and KubeSphere's `system:pre-registration` are
/// KubeSphere identities too.
fn may_impersonate(user: &str) -> bool {
    !user.starts_with("system:") || matches!(user, "system:anonymous" | "system:pre-registration")
}

/// Adds `Impersonate-User`, one `Impersonate-Group` per group and the `Impersonate-Extra-*` marker of
/// identities ksiam authenticated (which is how the SubjectAccessReview webhook knows them).
fn impersonate(headers: &mut HeaderMap, ctx: &RequestContext) -> Result<(), String> {
    let bad = |what: &str| format!("the caller's {what} cannot be sent as an HTTP header");
    headers.insert(
        HeaderName::from_static("impersonate-user"),
        HeaderValue::from_str(&ctx.user).map_err(|_| bad("user name"))?,
    );
    for group in &ctx.groups {
        headers.append(
            HeaderName::from_static("impersonate-group"),
            HeaderValue::from_str(group).map_err(|_| bad("group"))?,
        );
    }
    headers.insert(
        HeaderName::from_static(IMPERSONATE_MARKER),
        HeaderValue::from_static(ksiam_api::constants::AUTHENTICATED_BY_KSIAM),
    );
    Ok(())
}

/// `Impersonate-Extra-` and the percent-encoded key [`ksiam_api::constants::AUTHENTICATED_BY_EXTRA`].
const IMPERSONATE_MARKER: &str = "impersonate-extra-ksiam.kubesphere.io%2fauthenticated-by";

/// `(long_running, upgrade)`: only the long-running requests may switch protocols; an `Upgrade` on
/// anything else is ignored (not forwarded), and the request keeps its timeout.
fn streaming(ctx: &RequestContext, headers: &HeaderMap) -> (bool, bool) {
    let long_running = is_long_running(ctx);
    (long_running, long_running && is_upgrade(headers))
}

/// Watches, proxies, exec/attach/port-forward and logs run for as long as they like.
fn is_long_running(ctx: &RequestContext) -> bool {
    let info = &ctx.info;
    matches!(info.verb.as_str(), "watch" | "proxy")
        || matches!(
            info.subresource.as_str(),
            "exec" | "attach" | "portforward" | "proxy" | "log"
        )
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a client header is never forwarded: credentials, impersonation, the KubeSphere headers and
/// the front-proxy identity headers.
fn is_caller_identity(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "cookie"
            | "x-kubesphere-authorization"
            | "x-kubesphere-rawquery"
            | "host"
            | "x-forwarded-for"
            | "x-real-ip"
            | "forwarded"
    ) || name.starts_with("impersonate-")
        || name.starts_with("x-remote-")
}

fn forward_request_headers(src: &HeaderMap, upgrade: bool) -> HeaderMap {
    let listed: Vec<String> = connection_tokens(src).map(str::to_ascii_lowercase).collect();
    let mut out = HeaderMap::with_capacity(src.len());
    for (name, value) in src {
        let n = name.as_str();
        if is_caller_identity(n) || HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if upgrade && let Some(protocol) = src.get(header::UPGRADE) {
        out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        out.insert(header::UPGRADE, protocol.clone());
    }
    out
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn caused_by_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if e.is::<LengthLimitError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_credentials_and_hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("impersonate-user", "admin"),
            ("impersonate-group", "system:masters"),
            ("impersonate-extra-scopes", "x"),
            ("impersonate-uid", "1"),
            ("x-remote-user", "admin"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("cookie", "token=secret"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = forward_request_headers(&h, false);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "content-type"]);
    }

    #[test]
    fn only_long_running_requests_upgrade_or_run_without_a_timeout() {
        let ctx = |method: &str, target: &str| {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            RequestContext {
                info: ksiam_rbac::resolve(method, path, query).unwrap(),
                user: "u".into(),
                groups: Vec::new(),
            }
        };
        let mut upgrade = HeaderMap::new();
        upgrade.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        upgrade.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let plain = HeaderMap::new();
        for target in [
            "/api/v1/namespaces/n/configmaps",
            "/api/v1/namespaces/n/secrets/s",
            "/apis/apps/v1/namespaces/n/deployments",
        ] {
            assert_eq!(
                streaming(&ctx("GET", target), &upgrade),
                (false, false),
                "{target}"
            );
        }
        for target in [
            "/api/v1/namespaces/n/pods/p/exec?command=sh",
            "/api/v1/namespaces/n/pods/p/portforward",
            "/api/v1/namespaces/n/pods?watch=1",
            "/api/v1/namespaces/n/services/s/proxy",
        ] {
            assert_eq!(streaming(&ctx("GET", target), &upgrade), (true, true), "{target}");
            assert_eq!(streaming(&ctx("GET", target), &plain), (true, false), "{target}");
        }
    }

    #[test]
    fn kubernetes_names_are_never_impersonated() {
        for user in [
            "system:admin",
            "system:kube-controller-manager",
            "system:serviceaccount:kube-system:x",
        ] {
            assert!(!may_impersonate(user), "{user}");
        }
        for user in [
            "alice",
            "system:anonymous",
            "system:pre-registration",
            "kubesphere:serviceaccount:default:sample",
        ] {
            assert!(may_impersonate(user), "{user}");
        }
    }

    #[test]
    fn upgrades_keep_their_connection_pair() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(is_upgrade(&h));
        let out = forward_request_headers(&h, true);
        assert_eq!(out.get(header::UPGRADE).unwrap(), "SPDY/3.1");
        assert_eq!(out.get(header::CONNECTION).unwrap(), "Upgrade");
        assert!(out.get(header::AUTHORIZATION).is_none());
    }
}
