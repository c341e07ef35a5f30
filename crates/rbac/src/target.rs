//! A request target as the gateway receives it, checked, resolved and ready to forward.
//!
//! This is the boundary between what is authorized and what kube-apiserver executes: the path is accepted
//! only when it has one reading ([`path::canonical`]), the query only when Go's `net/url` reads it the same
//! way ([`Query::parse`]), the resolver decides on that reading, and [`Target::forwarded`] writes exactly
//! that reading back out. No byte of the original request target is forwarded as it came.

use crate::{
    path::{self, PathError},
    query::{Query, QueryError},
    request::{RequestInfo, ResolveError, names_a_cluster, resolve_query},
};

/// Why a request target was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The path has more than one reading (a 400).
    #[error(transparent)]
    Path(#[from] PathError),
    /// The query has more than one reading, or repeats a parameter the authorizer reads (a 400).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The resolver could not make sense of the path (upstream answers 500).
    #[error(transparent)]
    Resolve(ResolveError),
}

impl From<ResolveError> for TargetError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Query(q) => Self::Query(q),
            other => Self::Resolve(other),
        }
    }
}

/// A checked and resolved request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// What the authorizer decides on.
    pub info: RequestInfo,
    /// The query the resolver read, after KubeSphere's rewrites (`dryrun` → `dryRun`).
    pub query: Query,
}

impl Target {
    /// Checks and resolves a request: `raw_path` is the request's path as received (still
    /// percent-encoded), `url_query` the query of the URL, `raw_query_header` the `X-KubeSphere-Rawquery`
    /// header, which KubeSphere reads when the URL has no query.
    pub fn parse(
        method: &str,
        raw_path: &str,
        url_query: Option<&str>,
        raw_query_header: Option<&str>,
    ) -> Result<Self, TargetError> {
        let raw_query = match url_query {
            Some(q) if !q.is_empty() => q,
            _ => raw_query_header.unwrap_or(""),
        };
        let mut query = Query::parse(raw_query)?;
        query.rename("dryrun", "dryRun");
        let decoded = path::canonical(raw_path)?;
        let info = resolve_query(method, &decoded, &query)?;
        if !info.cluster.is_empty() && names_a_cluster(&info.path) {
            return Err(TargetError::Path(PathError::ClusterTwice));
        }
        Ok(Self { info, query })
    }

    /// The path and query to send upstream: the resolved path (a leading `/clusters/<c>` removed),
    /// re-encoded, and the query as the resolver read it, re-encoded.
    pub fn forwarded(&self) -> String {
        let mut out = path::encode(&self.info.path);
        if !self.query.is_empty() {
            out.push('?');
            out.push_str(&self.query.encode());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: &str, raw: &str) -> Result<Target, TargetError> {
        let (path, query) = raw.split_once('?').map_or((raw, None), |(p, q)| (p, Some(q)));
        Target::parse(method, path, query, None)
    }

    #[test]
    fn a_hidden_fragment_is_refused_not_cut() {
        // The raw-query header is text: a `#` in it would be cut by a URI parser after authorization.
        let t = Target::parse(
            "GET",
            "/api/v1/secrets",
            None,
            Some("#&watch=1&labelSelector=kubesphere.io/workspace%3Dws"),
        );
        assert_eq!(t, Err(TargetError::Query(QueryError::Fragment)));
    }

    #[test]
    fn what_is_forwarded_is_what_was_resolved() {
        let t = Target::parse(
            "GET",
            "/clusters/host/api/v1/namespaces",
            None,
            Some("watch=1&labelSelector=kubesphere.io/workspace%3Dws"),
        )
        .unwrap();
        assert_eq!(t.info.verb, "watch");
        assert_eq!(t.info.workspace, "ws");
        assert_eq!(
            t.forwarded(),
            "/api/v1/namespaces?watch=1&labelSelector=kubesphere.io%2Fworkspace%3Dws"
        );
        let t = target(
            "GET",
            "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dp",
        )
        .unwrap();
        assert_eq!((t.info.verb.as_str(), t.info.name.as_str()), ("list", "p"));
        assert_eq!(
            t.forwarded(),
            "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dp"
        );
    }

    #[test]
    fn the_url_query_wins_over_the_header() {
        let t = Target::parse("GET", "/api/v1/pods", Some("watch=1"), Some("watch=0")).unwrap();
        assert_eq!(t.info.verb, "watch");
        assert_eq!(t.forwarded(), "/api/v1/pods?watch=1");
    }

    #[test]
    fn dryrun_is_renamed() {
        let t = target("POST", "/api/v1/namespaces/n/pods?dryrun=All").unwrap();
        assert_eq!(t.forwarded(), "/api/v1/namespaces/n/pods?dryRun=All");
    }

    #[test]
    fn selector_and_escape_differentials_are_refused() {
        for raw in [
            "/api/v1/namespaces/n/secrets?fieldSelector=metadata.name%3Dok;",
            "/api/v1/namespaces/n/secrets?fieldSelector=metadata.name%3Dok&x=%zz",
            "/api/v1/namespaces/n/secrets?fieldSelector=metadata.name%3Dok&fieldSelector=",
            "/api/v1/namespaces/n/secrets?watch=1&watch=0",
        ] {
            assert!(matches!(target("GET", raw), Err(TargetError::Query(_))), "{raw}");
        }
        assert!(matches!(
            target("GET", "/api/v1/namespaces/../secrets"),
            Err(TargetError::Path(_))
        ));
    }

    #[test]
    fn a_path_naming_a_cluster_twice_is_refused() {
        for raw in [
            "/api/clusters/a/clusters/b/v1/pods",
            "/clusters/a/clusters/b/api/v1/pods",
            "/clusters/a/api/clusters/b/v1/pods",
            "/kapis/clusters/a/clusters/b/tenant.kubesphere.io/v1beta1/workspaces",
        ] {
            assert_eq!(
                target("GET", raw),
                Err(TargetError::Path(PathError::ClusterTwice)),
                "{raw}"
            );
        }
        assert!(target("GET", "/clusters/a/api/v1/pods").is_ok());
    }

    #[test]
    fn kubesphere_workspace_forms_are_read_as_kubernetes_reads_them_on_api_and_apis() {
        let t = target(
            "PUT",
            "/apis/tenant.kubesphere.io/v1beta1/workspacetemplates/ws/status",
        )
        .unwrap();
        let i = &t.info;
        assert_eq!(
            (
                i.verb.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str()
            ),
            ("update", "workspacetemplates", "ws", "status")
        );
        assert_eq!(i.workspace, "ws");
        let t = target("PUT", "/api/v1/workspaces/n1/namespaces/p").unwrap();
        let i = &t.info;
        assert_eq!(
            (
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str(),
                i.namespace.as_str()
            ),
            ("workspaces", "n1", "namespaces", "")
        );
        // The KubeSphere API keeps its own form.
        let t = target(
            "GET",
            "/kapis/tenant.kubesphere.io/v1beta1/workspaces/ws/namespaces",
        )
        .unwrap();
        assert_eq!(
            (t.info.resource.as_str(), t.info.workspace.as_str()),
            ("namespaces", "ws")
        );
    }

    #[test]
    fn a_legacy_cluster_prefix_with_nothing_after_it_is_not_a_resource() {
        let t = target("GET", "/api/clusters/host").unwrap();
        assert!(!t.info.is_resource_request, "{:?}", t.info);
        assert_eq!(t.forwarded(), "/api");
    }
}
