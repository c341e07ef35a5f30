//! The client: a `kube::Client` that authenticates to ks-apiserver, plus typed `/kapis` calls.

use std::sync::Arc;

use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use kube::{
    client::{Body, ClientBuilder},
    core::{Status, response::StatusSummary},
};
use serde::de::DeserializeOwned;

use crate::{
    Config, Error, ListQuery, SubjectAccessReview, TenantList, layer::KubeSphereLayer, token::TokenFile,
};

/// The tenant API: clusters, workspaces and namespaces visible to the caller.
pub const TENANT_API: &str = "/kapis/tenant.kubesphere.io/v1beta1";
/// The path of `POST` SubjectAccessReview.
pub const SUBJECT_ACCESS_REVIEWS_PATH: &str = "/kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews";

/// A client of the KubeSphere API server.
///
/// [`kube()`](Self::kube) is a plain `kube::Client` for the Kubernetes APIs that ks-apiserver proxies
/// (`/api`, `/apis`), used with `kube::Api<T>`; the methods here cover KubeSphere's own `/kapis`.
/// Cloning is cheap and clones share the connection pool and the token.
#[derive(Clone)]
pub struct Client {
    kube: kube::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("default_namespace", &self.kube.default_namespace())
            .finish_non_exhaustive()
    }
}

impl TryFrom<Config> for kube::Client {
    type Error = Error;

    /// A `kube::Client` whose every request carries the current token of `config` (and its User-Agent).
    fn try_from(config: Config) -> Result<Self, Error> {
        let user_agent = config
            .user_agent
            .as_deref()
            .filter(|ua| !ua.is_empty())
            .map(|ua| HeaderValue::from_str(ua).map_err(|_| Error::InvalidUserAgent(ua.to_owned())))
            .transpose()?;
        let token = Arc::new(TokenFile::new(
            config.token_file.clone(),
            config.token.clone(),
            config.token_reload_interval,
        ));

        let mut kube_config = kube::Config::new(config.host);
        kube_config.default_namespace = config.default_namespace;
        kube_config.tls_server_name = config.tls_server_name;
        if let Some(certs) = config.ca_certs {
            kube_config.root_cert = Some(certs);
            // kube re-reads this file about once a minute, so a rotated CA is picked up too.
            kube_config.root_cert_file = config.ca_file;
        }
        // No kube auth: the layer below sets Authorization, re-reading the token file on change.
        kube_config.auth_info = Default::default();

        let layer = KubeSphereLayer { token, user_agent };
        Ok(ClientBuilder::try_from(kube_config)?.with_layer(&layer).build())
    }
}

impl TryFrom<Config> for Client {
    type Error = Error;

    fn try_from(config: Config) -> Result<Self, Error> {
        Ok(Self {
            kube: kube::Client::try_from(config)?,
        })
    }
}

impl From<kube::Client> for Client {
    /// Wraps a `kube::Client` that already authenticates to ks-apiserver.
    fn from(kube: kube::Client) -> Self {
        Self { kube }
    }
}

// === impl Client ===

impl Client {
    /// The underlying `kube::Client`, for `kube::Api<T>` on the proxied Kubernetes APIs.
    pub fn kube(&self) -> &kube::Client {
        &self.kube
    }

    /// The underlying `kube::Client`.
    pub fn into_kube(self) -> kube::Client {
        self.kube
    }

    /// `GET /kapis/tenant.kubesphere.io/v1beta1/clusters`: the clusters the caller may see.
    pub async fn list_clusters(&self, query: &ListQuery) -> Result<TenantList, Error> {
        self.list(&format!("{TENANT_API}/clusters"), query).await
    }

    /// `GET /kapis/tenant.kubesphere.io/v1beta1/workspaces`: the workspaces the caller may see.
    pub async fn list_workspaces(&self, query: &ListQuery) -> Result<TenantList, Error> {
        self.list(&format!("{TENANT_API}/workspaces"), query).await
    }

    /// `GET /kapis/tenant.kubesphere.io/v1beta1/workspacetemplates`.
    pub async fn list_workspace_templates(&self, query: &ListQuery) -> Result<TenantList, Error> {
        self.list(&format!("{TENANT_API}/workspacetemplates"), query)
            .await
    }

    /// `GET /kapis/tenant.kubesphere.io/v1beta1/namespaces`: the namespaces the caller may see.
    pub async fn list_namespaces(&self, query: &ListQuery) -> Result<TenantList, Error> {
        self.list(&format!("{TENANT_API}/namespaces"), query).await
    }

    /// `GET` any KubeSphere list endpoint (`{"items":[...],"totalItems":N}`), items decoded as `T`.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &ListQuery,
    ) -> Result<TenantList<T>, Error> {
        let query = query.to_query_string();
        let uri = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        self.request_json(get(&uri)?).await
    }

    /// `POST /kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews`: the review as answered by the
    /// server, with the decision in `status`.
    pub async fn subject_access_review(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<SubjectAccessReview, Error> {
        let body = serde_json::to_vec(review).map_err(|source| Error::Decode {
            path: SUBJECT_ACCESS_REVIEWS_PATH.to_owned(),
            source,
        })?;
        let request = Request::post(SUBJECT_ACCESS_REVIEWS_PATH)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|source| Error::BuildRequest {
                path: SUBJECT_ACCESS_REVIEWS_PATH.to_owned(),
                source,
            })?;
        self.request_json(request).await
    }

    /// `GET` a path (with its query) and return the body as sent, like the Go SDK's
    /// `Get().AbsPath(path).Do(ctx).Raw()`.
    pub async fn get_raw(&self, path_and_query: &str) -> Result<Vec<u8>, Error> {
        self.request_raw(get(path_and_query)?).await
    }

    /// Sends a request (its URI is a path, the host comes from the config) and returns the body of a
    /// successful (non-4xx/5xx) response. An error response becomes [`Error::Api`].
    pub async fn request_raw(&self, request: Request<Vec<u8>>) -> Result<Vec<u8>, Error> {
        let response = self.kube.send(request.map(Body::from)).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status.is_client_error() || status.is_server_error() {
            return Err(Error::Api(Box::new(status_from_error_body(status, &body))));
        }
        Ok(body.to_vec())
    }

    async fn request_json<T: DeserializeOwned>(&self, request: Request<Vec<u8>>) -> Result<T, Error> {
        let path = request.uri().path().to_owned();
        let body = self.request_raw(request).await?;
        serde_json::from_slice(&body).map_err(|source| Error::Decode { path, source })
    }
}

fn get(path_and_query: &str) -> Result<Request<Vec<u8>>, Error> {
    Request::get(path_and_query)
        .header(header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|source| Error::BuildRequest {
            path: path_and_query.to_owned(),
            source,
        })
}

/// The `Status` of an error response: the server's JSON `Status` as is, or one built from a plain-text body.
fn status_from_error_body(http_status: StatusCode, body: &[u8]) -> Status {
    let json_status = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(|value| value.get("kind").and_then(|kind| kind.as_str()) == Some("Status"))
        .and_then(|value| serde_json::from_value::<Status>(value).ok());
    if let Some(mut status) = json_status {
        if status.code == 0 {
            status.code = http_status.as_u16();
        }
        return status;
    }
    // ks-apiserver's handlers answer with http.Error: the message and a newline, as text/plain.
    let text = String::from_utf8_lossy(body);
    Status {
        status: Some(StatusSummary::Failure),
        code: http_status.as_u16(),
        message: text.trim_end_matches(['\r', '\n']).to_owned(),
        reason: reason_for(http_status).to_owned(),
        ..Status::default()
    }
}

/// The Kubernetes `StatusReason` that the API machinery gives an HTTP status.
fn reason_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_status_is_kept_as_sent() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"m \"q\"","reason":"Forbidden","details":{"group":"g","kind":"clusters"},"code":403}"#;
        let status = status_from_error_body(StatusCode::FORBIDDEN, body);
        assert_eq!(status.code, 403);
        assert_eq!(status.message, "m \"q\"");
        assert_eq!(status.reason, "Forbidden");
        assert_eq!(status.details.unwrap().kind, "clusters");
    }

    #[test]
    fn plain_text_becomes_a_status_with_the_http_code() {
        let status = status_from_error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"failed to describe user: users.iam.kubesphere.io \"x\" not found\n",
        );
        assert_eq!(status.code, 500);
        assert_eq!(status.reason, "InternalError");
        assert_eq!(
            status.message,
            "failed to describe user: users.iam.kubesphere.io \"x\" not found"
        );
        assert!(status.is_failure());
    }

    #[test]
    fn json_that_is_not_a_status_is_treated_as_text() {
        let status = status_from_error_body(StatusCode::NOT_FOUND, br#"{"items":[]}"#);
        assert_eq!(status.code, 404);
        assert_eq!(status.reason, "NotFound");
        assert_eq!(status.message, r#"{"items":[]}"#);
    }
}
