//! The request-info resolver: turns an HTTP method, path and query into what the authorizer decides on.
//!
//! This follows KubeSphere's resolver (spec §8) exactly, with one deliberate difference: a path that leaves
//! nothing after the API version (for example `/clusters/c1/api/v1`) is a non-resource request here, where
//! upstream indexes an empty slice and drops the connection.

use std::fmt;

use crate::query::{Query, QueryError};

/// The scope a request acts in. Upstream these are the strings `Global`, `Cluster`, `Workspace`,
/// `Namespace`, and `""` for non-resource requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    /// Platform-wide objects (users, global roles, workspaces, clusters).
    Global,
    /// Cluster-wide objects.
    Cluster,
    /// Objects of one workspace.
    Workspace,
    /// Objects in one namespace.
    Namespace,
    /// Non-resource requests carry no scope.
    #[default]
    #[serde(rename = "")]
    None,
}

impl Scope {
    /// The upstream string form (`""` for [`Scope::None`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "Global",
            Self::Cluster => "Cluster",
            Self::Workspace => "Workspace",
            Self::Namespace => "Namespace",
            Self::None => "",
        }
    }

    /// Parses the upstream string form; unknown strings are `None`.
    pub fn parse(s: &str) -> Self {
        match s {
            "Global" => Self::Global,
            "Cluster" => Self::Cluster,
            "Workspace" => Self::Workspace,
            "Namespace" => Self::Namespace,
            _ => Self::None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// API prefixes the resolver understands.
const API_PREFIXES: [&str; 4] = ["api", "apis", "kapis", "kapi"];
/// Prefixes whose URLs carry no API group.
const GROUPLESS_PREFIXES: [&str; 2] = ["api", "kapi"];
/// Prefixes proxied to kube-apiserver.
const KUBERNETES_PREFIXES: [&str; 2] = ["api", "apis"];
/// Namespace subresources that stay on the namespace itself.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];
/// `(group, resource)` pairs that live at Global scope.
const GLOBAL_RESOURCES: [(&str, &str); 9] = [
    ("iam.kubesphere.io", "users"),
    ("iam.kubesphere.io", "globalroles"),
    ("iam.kubesphere.io", "globalrolebindings"),
    ("tenant.kubesphere.io", "workspaces"),
    ("tenant.kubesphere.io", "clusters"),
    ("cluster.kubesphere.io", "clusters"),
    ("cluster.kubesphere.io", "labels"),
    ("resources.kubesphere.io", "clusters"),
    ("resources.kubesphere.io", "labels"),
];
const WORKSPACE_SELECTOR_PREFIX: &str = "kubesphere.io/workspace=";

/// What the resolver learned about a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// The URL path, with a leading `/clusters/<c>` removed.
    pub path: String,
    /// The Kubernetes verb for resource requests; the raw HTTP method otherwise.
    pub verb: String,
    /// `api`, `apis`, `kapis` or `kapi`; empty for non-API paths.
    pub api_prefix: String,
    /// The API group (`""` for the core group).
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The namespace, if any.
    pub namespace: String,
    /// The resource.
    pub resource: String,
    /// The subresource.
    pub subresource: String,
    /// The object name.
    pub name: String,
    /// The path parts from the resource on.
    pub parts: Vec<String>,
    /// Whether this is a resource request.
    pub is_resource_request: bool,
    /// Whether this request is served by kube-apiserver (`/api`, `/apis`).
    pub is_kubernetes_request: bool,
    /// The workspace, if any.
    pub workspace: String,
    /// The cluster, if any.
    pub cluster: String,
    /// The scope of the request.
    pub scope: Scope,
}

/// Why a request could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// `watch` or `proxy` with nothing after it (the gateway answers this with HTTP 500, as upstream does).
    #[error("unable to determine kind and namespace from url: {0}")]
    KindAndNamespace(String),
    /// The query was refused by [`Query::parse`] (a 400).
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// Resolves a request. `path` is the decoded URL path, `query` the raw query string (without `?`), read by
/// [`Query::parse`], the one query parser.
pub fn resolve(method: &str, path: &str, query: &str) -> Result<RequestInfo, ResolveError> {
    resolve_query(method, path, &Query::parse(query)?)
}

/// Resolves a request whose query is already parsed.
pub fn resolve_query(method: &str, path: &str, query: &Query) -> Result<RequestInfo, ResolveError> {
    let mut info = RequestInfo {
        path: path.to_owned(),
        verb: method.to_owned(),
        ..Default::default()
    };
    resolve_into(&mut info, method, path, query)?;
    // Always, at the end: is this served by kube-apiserver?
    let prefix = if info.api_prefix.is_empty() {
        let parts = split_path(&info.path);
        if !parts.is_empty() && parts.len() < 3 {
            parts[0]
        } else {
            ""
        }
    } else {
        info.api_prefix.as_str()
    };
    info.is_kubernetes_request = KUBERNETES_PREFIXES.contains(&prefix);
    Ok(info)
}

fn split_path(path: &str) -> Vec<&str> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

fn resolve_into(info: &mut RequestInfo, method: &str, path: &str, query: &Query) -> Result<(), ResolveError> {
    let all = split_path(path);
    let mut parts: &[&str] = &all;
    if parts.len() < 3 {
        return Ok(());
    }
    if parts[0] == "clusters" {
        info.cluster = parts[1].to_owned();
        let prefix = format!("/clusters/{}", parts[1]);
        if let Some(rest) = info.path.strip_prefix(&prefix) {
            info.path = rest.to_owned();
        }
        parts = &parts[2..];
    }
    let Some((&prefix, rest)) = parts.split_first() else {
        return Ok(());
    };
    if !API_PREFIXES.contains(&prefix) {
        return Ok(());
    }
    info.api_prefix = prefix.to_owned();
    parts = rest;

    // Legacy form `/kapis/clusters/<c>/...`. Upstream keeps `clusters/<c>` as the next parts when nothing
    // follows them (and so authorizes a resource `<c>` while `/<prefix>` is served); here nothing is left.
    if info.cluster.is_empty() && parts.first() == Some(&"clusters") && parts.len() > 1 {
        info.cluster = parts[1].to_owned();
        let needle = format!("/clusters/{}", parts[1]);
        if let Some(at) = info.path.find(&needle) {
            info.path.replace_range(at..at + needle.len(), "");
        }
        parts = &parts[2..];
    }

    if !GROUPLESS_PREFIXES.contains(&prefix) {
        if parts.len() < 3 {
            return Ok(());
        }
        info.api_group = parts[0].to_owned();
        parts = &parts[1..];
    }

    // Upstream indexes past the end here (`/clusters/c/api/v1`); we call it a non-resource request.
    if parts.len() < 2 {
        return Ok(());
    }
    info.is_resource_request = true;
    info.api_version = parts[0].to_owned();
    parts = &parts[1..];

    if parts[0] == "watch" || parts[0] == "proxy" {
        if parts.len() < 2 {
            info.is_resource_request = false;
            return Err(ResolveError::KindAndNamespace(url_for_error(path, query)));
        }
        info.verb = parts[0].to_owned();
        parts = &parts[1..];
    } else {
        info.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_owned();
    }

    if parts[0] == "workspaces" || parts[0] == "workspacetemplates" {
        if parts.len() > 1 {
            info.workspace = parts[1].to_owned();
        }
        // KubeSphere's `/kapis/.../workspaces/<ws>/<resource>` form. kube-apiserver has no such form: on
        // `/api` and `/apis` the parts stay as Kubernetes reads them (`<ws>` is the name, what follows a
        // subresource), so what is authorized is what it executes; the workspace still sets the scope.
        if parts.len() > 2 && !KUBERNETES_PREFIXES.contains(&prefix) {
            parts = &parts[2..];
        }
    }

    if parts[0] == "namespaces" && parts.len() > 1 {
        info.namespace = parts[1].to_owned();
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts = &parts[2..];
        }
    }

    info.parts = parts.iter().map(|p| (*p).to_owned()).collect();
    if parts.len() >= 3 && info.verb != "proxy" {
        info.subresource = parts[2].to_owned();
    }
    if parts.len() >= 2 {
        info.name = parts[1].to_owned();
    }
    info.resource = parts[0].to_owned();

    info.scope = resource_scope(info);

    if info.name.is_empty() && info.verb == "get" {
        let opts = ListQuery::parse(query);
        info.verb = if opts.watch { "watch" } else { "list" }.to_owned();
        if let Some(name) = opts.field_name
            && is_valid_path_segment_name(&name)
        {
            info.name = name;
        }
    }

    if info.verb == "watch"
        && let Some(ws) = workspace_of_selector(query.first("labelSelector").unwrap_or_default())
    {
        info.workspace = ws.to_owned();
        info.scope = Scope::Workspace;
    }

    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_owned();
    }
    Ok(())
}

fn url_for_error(path: &str, query: &Query) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// Whether a (decoded) path starts with a cluster prefix, leading (`/clusters/<c>/…`) or after an API prefix
/// (`/<prefix>/clusters/<c>/…`): the gateway removes one such prefix, and refuses a path that would name a
/// cluster again once it is removed.
pub fn names_a_cluster(path: &str) -> bool {
    let parts = split_path(path);
    match parts.as_slice() {
        ["clusters", _, _, ..] => true,
        [prefix, "clusters", _, ..] => API_PREFIXES.contains(prefix),
        _ => false,
    }
}

/// The workspace a watch's label selector names, when the selector is exactly
/// `kubesphere.io/workspace=<ws>` with `<ws>` a valid label value (upstream rescopes such watches to the
/// workspace). Anything else names no workspace, and the watch keeps its own scope.
pub fn workspace_of_selector(selector: &str) -> Option<&str> {
    selector
        .strip_prefix(WORKSPACE_SELECTOR_PREFIX)
        .filter(|ws| is_label_value(ws) && !ws.is_empty())
}

/// A Kubernetes label value: at most 63 characters, alphanumerics and `-_.`, starting and ending with an
/// alphanumeric.
fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_none_or(u8::is_ascii_alphanumeric)
        && b.last().is_none_or(u8::is_ascii_alphanumeric)
}

fn resource_scope(info: &RequestInfo) -> Scope {
    scope_of(&info.api_group, &info.resource, &info.namespace, &info.workspace)
}

/// The scope of a resource request (spec §8): Global for the platform-wide resources (Workspace when a
/// workspace is named), else Namespace, Workspace or Cluster by what is named.
pub fn scope_of(api_group: &str, resource: &str, namespace: &str, workspace: &str) -> Scope {
    let global = is_global_resource(api_group, resource);
    if global {
        return if workspace.is_empty() {
            Scope::Global
        } else {
            Scope::Workspace
        };
    }
    if !namespace.is_empty() {
        Scope::Namespace
    } else if !workspace.is_empty() {
        Scope::Workspace
    } else {
        Scope::Cluster
    }
}

/// Whether `(group, resource)` is one of the platform-wide resources that live at Global scope.
pub fn is_global_resource(api_group: &str, resource: &str) -> bool {
    GLOBAL_RESOURCES
        .iter()
        .any(|(g, r)| *g == api_group && *r == resource)
}

/// The `ListOptions` fields the resolver reads.
struct ListQuery {
    watch: bool,
    field_name: Option<String>,
}

impl ListQuery {
    fn parse(query: &Query) -> Self {
        let watch = query
            .first("watch")
            .is_some_and(|v| !(v == "0" || v.eq_ignore_ascii_case("false")));
        let field_name = query
            .first("fieldSelector")
            .and_then(|s| exact_match(s, "metadata.name"));
        Self { watch, field_name }
    }
}

/// The value a field selector requires `field` to equal, read as Kubernetes reads it
/// (`fields.ParseSelector`, then `RequiresExactMatch`): terms split on unescaped `,` and sorted; each term
/// split at its first operator (`!=`, `==` or `=`, with no regard for escapes); only the value is
/// unescaped. The first sorted term `field=value` or `field==value` wins. A selector Kubernetes cannot parse
/// requires nothing (kube-apiserver then ignores the list options, and its list handler refuses the
/// request).
fn exact_match(selector: &str, field: &str) -> Option<String> {
    let mut terms = split_unescaped(selector, ',');
    terms.sort_unstable();
    let mut found = None;
    for term in terms {
        if term.is_empty() {
            continue;
        }
        let (key, equality, value) = split_term(term)?;
        let value = unescape_field(value)?;
        if equality && key == field && found.is_none() {
            found = Some(value);
        }
    }
    found
}

/// Splits on `sep` where it is not escaped with a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Splits a term at the first position where `!=`, `==` or `=` starts (in that order of preference at a
/// position): `(key, whether the operator is an equality, value)`; `None` without an operator.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        if let Some(value) = rest.strip_prefix("!=") {
            return Some((&term[..i], false, value));
        }
        if let Some(value) = rest.strip_prefix("==") {
            return Some((&term[..i], true, value));
        }
        if let Some(value) = rest.strip_prefix('=') {
            return Some((&term[..i], true, value));
        }
    }
    None
}

/// Kubernetes' `fields.UnescapeValue`: `\\`, `\,` and `\=` are escapes; any other escape, a trailing
/// backslash, and an unescaped `,` or `=` are invalid.
fn unescape_field(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return None,
            },
            ',' | '=' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

/// Everything an authorization decision reads, borrowed from the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attributes<'a> {
    /// The user name (for KubeSphere ServiceAccounts `kubesphere:serviceaccount:<ns>:<name>`).
    pub user: &'a str,
    /// The user's groups (none for ServiceAccounts).
    pub groups: &'a [String],
    /// The verb (uppercase HTTP method for non-resource requests).
    pub verb: &'a str,
    /// The API group.
    pub api_group: &'a str,
    /// The API version.
    pub api_version: &'a str,
    /// The resource.
    pub resource: &'a str,
    /// The subresource.
    pub subresource: &'a str,
    /// The object name.
    pub name: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The workspace.
    pub workspace: &'a str,
    /// The cluster.
    pub cluster: &'a str,
    /// Whether this is a resource request.
    pub resource_request: bool,
    /// Whether kube-apiserver serves this request.
    pub kubernetes_request: bool,
    /// The request path.
    pub path: &'a str,
    /// The scope.
    pub scope: Scope,
}

impl RequestInfo {
    /// The attributes of this request made by `user` in `groups`.
    pub fn attributes<'a>(&'a self, user: &'a str, groups: &'a [String]) -> Attributes<'a> {
        Attributes {
            user,
            groups,
            verb: &self.verb,
            api_group: &self.api_group,
            api_version: &self.api_version,
            resource: &self.resource,
            subresource: &self.subresource,
            name: &self.name,
            namespace: &self.namespace,
            workspace: &self.workspace,
            cluster: &self.cluster,
            resource_request: self.is_resource_request,
            kubernetes_request: self.is_kubernetes_request,
            path: &self.path,
            scope: self.scope,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn check(
        method: &str,
        url: &str,
        verb: &str,
        group: &str,
        resource: &str,
        name: &str,
        ns: &str,
        ws: &str,
        cluster: &str,
        scope: Scope,
        k8s: bool,
    ) {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let info = resolve(method, path, query).expect("resolves");
        assert_eq!(
            (
                info.verb.as_str(),
                info.api_group.as_str(),
                info.resource.as_str(),
                info.name.as_str(),
                info.namespace.as_str(),
                info.workspace.as_str(),
                info.cluster.as_str(),
                info.scope,
                info.is_kubernetes_request
            ),
            (verb, group, resource, name, ns, ws, cluster, scope, k8s),
            "{method} {url}: {info:?}"
        );
    }

    // Every row of the table in spec §8.
    #[test]
    fn spec_table() {
        use Scope::*;
        let t = "tenant.kubesphere.io";
        check(
            "GET",
            "/kapis/tenant.kubesphere.io/v1beta1/clusters",
            "list",
            t,
            "clusters",
            "",
            "",
            "",
            "",
            Global,
            false,
        );
        check(
            "GET",
            "/kapis/tenant.kubesphere.io/v1beta1/workspaces",
            "list",
            t,
            "workspaces",
            "",
            "",
            "",
            "",
            Global,
            false,
        );
        check(
            "GET",
            "/kapis/tenant.kubesphere.io/v1beta1/workspaces/ws1",
            "get",
            t,
            "workspaces",
            "ws1",
            "",
            "ws1",
            "",
            Workspace,
            false,
        );
        check(
            "GET",
            "/kapis/tenant.kubesphere.io/v1beta1/workspacetemplates",
            "list",
            t,
            "workspacetemplates",
            "",
            "",
            "",
            "",
            Cluster,
            false,
        );
        check(
            "GET",
            "/kapis/tenant.kubesphere.io/v1beta1/workspaces/ws1/namespaces",
            "list",
            t,
            "namespaces",
            "",
            "",
            "ws1",
            "",
            Workspace,
            false,
        );
        check(
            "GET",
            "/kapis/resources.kubesphere.io/v1alpha3/namespaces/ns1/pods/p1",
            "get",
            "resources.kubesphere.io",
            "pods",
            "p1",
            "ns1",
            "",
            "",
            Namespace,
            false,
        );
        check(
            "DELETE",
            "/apis/apps/v1/namespaces/ns1/deployments",
            "deletecollection",
            "apps",
            "deployments",
            "",
            "ns1",
            "",
            "",
            Namespace,
            true,
        );
        check(
            "GET",
            "/api/v1/namespaces/ns1",
            "get",
            "",
            "namespaces",
            "ns1",
            "ns1",
            "",
            "",
            Namespace,
            true,
        );
        check(
            "GET",
            "/api/v1/watch/namespaces?labelSelector=kubesphere.io/workspace=w",
            "watch",
            "",
            "namespaces",
            "",
            "",
            "w",
            "",
            Workspace,
            true,
        );
        check(
            "GET",
            "/clusters/c1/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "list",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "",
            "",
            "c1",
            Cluster,
            true,
        );
        check(
            "GET",
            "/kapis/clusters/c1/resources.kubesphere.io/v1alpha3/nodes",
            "list",
            "resources.kubesphere.io",
            "nodes",
            "",
            "",
            "",
            "c1",
            Cluster,
            false,
        );
        check(
            "POST",
            "/kapis/foo/bar/",
            "POST",
            "",
            "",
            "",
            "",
            "",
            "",
            None,
            false,
        );
        check("GET", "/version", "GET", "", "", "", "", "", "", None, false);
        check("GET", "/oauth/token", "GET", "", "", "", "", "", "", None, false);
    }

    #[test]
    fn non_resource_requests_keep_the_uppercase_method() {
        let info = resolve("GET", "/api", "").unwrap();
        assert!(!info.is_resource_request);
        assert_eq!(info.verb, "GET");
        assert!(info.is_kubernetes_request);
        let info = resolve("GET", "/apis/apps/v1", "").unwrap();
        assert!(!info.is_resource_request);
        assert_eq!(info.verb, "GET");
    }

    #[test]
    fn cluster_prefixed_version_paths_do_not_panic() {
        for p in [
            "/clusters/c1/api/v1",
            "/clusters/c1/apis/apps/v1",
            "/clusters/c1/api",
            "/clusters/c1/kapi/v1",
        ] {
            let info = resolve("GET", p, "").unwrap();
            assert!(!info.is_resource_request, "{p}");
            assert_eq!(info.verb, "GET");
            assert_eq!(info.cluster, "c1");
        }
        let info = resolve("GET", "/clusters/c1/api/v1", "").unwrap();
        assert_eq!(info.path, "/api/v1");
        assert!(info.is_kubernetes_request);
    }

    #[test]
    fn watch_and_proxy_need_a_kind() {
        let err = resolve("GET", "/api/v1/watch", "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to determine kind and namespace from url: /api/v1/watch"
        );
        let info = resolve("GET", "/api/v1/namespaces/ns1/pods/p1/proxy/x/y", "").unwrap();
        assert_eq!((info.verb.as_str(), info.subresource.as_str()), ("get", "proxy"));
        let info = resolve("GET", "/api/v1/proxy/namespaces/ns1/pods/p1/x", "").unwrap();
        assert_eq!(
            (info.verb.as_str(), info.resource.as_str(), info.name.as_str()),
            ("proxy", "pods", "p1")
        );
        assert_eq!(info.subresource, "", "proxy requests have no subresource");
    }

    #[test]
    fn list_watch_and_field_selector_name() {
        let r = |q: &str| resolve("GET", "/api/v1/namespaces/ns1/pods", q).unwrap();
        assert_eq!(r("").verb, "list");
        assert_eq!(r("watch=true").verb, "watch");
        assert_eq!(r("watch=1").verb, "watch");
        assert_eq!(r("watch=").verb, "watch");
        assert_eq!(r("watch=FALSE").verb, "list");
        assert_eq!(r("watch=0").verb, "list");
        assert_eq!(r("fieldSelector=metadata.name%3Dp1").name, "p1");
        assert_eq!(
            r("fieldSelector=metadata.name%3D%3Dp1,status.phase%3DRunning").name,
            "p1"
        );
        assert_eq!(r("fieldSelector=metadata.name%21%3Dp1").name, "");
        assert_eq!(r("fieldSelector=metadata.name%3D..").name, "");
        assert_eq!(r("fieldSelector=metadata.name%3Da%2Fb").name, "");
        assert_eq!(r("fieldSelector=garbage").name, "");
    }

    #[test]
    fn subresources_and_namespace_subresources() {
        let info = resolve("PUT", "/api/v1/namespaces/ns1/finalize", "").unwrap();
        assert_eq!(
            (
                info.resource.as_str(),
                info.name.as_str(),
                info.subresource.as_str()
            ),
            ("namespaces", "ns1", "finalize")
        );
        let info = resolve("GET", "/api/v1/namespaces/ns1/pods/p1/log", "").unwrap();
        assert_eq!(
            (
                info.resource.as_str(),
                info.name.as_str(),
                info.subresource.as_str()
            ),
            ("pods", "p1", "log")
        );
        assert_eq!(info.verb, "get");
    }

    #[test]
    fn global_resources_in_a_workspace_are_workspace_scoped() {
        let info = resolve("GET", "/kapis/iam.kubesphere.io/v1beta1/workspaces/w1/users", "").unwrap();
        assert_eq!(
            (info.scope, info.workspace.as_str(), info.resource.as_str()),
            (Scope::Workspace, "w1", "users")
        );
        let info = resolve("GET", "/kapis/iam.kubesphere.io/v1beta1/users/u1", "").unwrap();
        assert_eq!(info.scope, Scope::Global);
    }

    #[test]
    fn methods_map_to_verbs() {
        for (m, v) in [
            ("POST", "create"),
            ("PUT", "update"),
            ("PATCH", "patch"),
            ("DELETE", "delete"),
            ("HEAD", "get"),
            ("OPTIONS", ""),
        ] {
            assert_eq!(
                resolve(m, "/api/v1/namespaces/ns1/pods/p1", "").unwrap().verb,
                v,
                "{m}"
            );
        }
    }
}
