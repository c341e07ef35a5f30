//! The RBAC-evaluation core of ksiam: everything an authorization decision needs, and nothing else.
//!
//! - [`request`]: the request-info resolver (HTTP method + path + query → [`RequestInfo`], [`Attributes`]).
//! - [`path`], [`query`], [`target`]: the request target as the gateway receives it, accepted only when it has one
//!   reading, resolved, and written back out exactly as it was read (what is authorized is what is forwarded).
//! - [`model`]: roles, bindings and namespaces as the evaluation sees them.
//! - [`Snapshot`] / [`PolicyIndex`] / [`PolicyStore`]: the compiled policy, indexed by subject and scope, updated one object
//!   at a time, read without locks.
//! - [`Authorizer`]: KubeSphere's union of the path allow-list and RBAC, with the `AlwaysAllow` and
//!   `AlwaysDeny` modes.
//! - [`status`]: the 401/403 `Status` bodies, byte-compatible with ks-apiserver.
//! - [`review`]: the rules a subject holds and who may make a request (RulesFor, WhoCan).
//! - [`rego`]: `iam.kubesphere.io/rego-override` policies, evaluated with regorus under the `rego` feature.
//!
//! This crate does no I/O, never panics on any input, and every decision carries its reason.
//!
//! # Features
//!
//! - `rego` (off by default): evaluate `iam.kubesphere.io/rego-override` policies with the regorus engine.
//!   Without it, a role's rules still apply and its rego policy never allows.
//! - `testing` (off by default): `generate`, the deterministic policy generator behind the benchmarks, and
//!   `naive`, the literal reference evaluator the snapshot is tested against. Not a stable API.
//!
//! ```
//! use ksiam_rbac::{model::*, request::resolve, Authorizer, Mode, PolicyIndex, PolicyStore};
//!
//! let policy: Policy = serde_json::from_str(r#"{
//!   "roles": [{"kind": "ClusterRole", "name": "view", "rules": [{"verbs": ["get", "list"], "apiGroups": ["*"], "resources": ["*"]}]}],
//!   "bindings": [{"kind": "ClusterRoleBinding", "name": "b", "roleRef": {"kind": "ClusterRole", "name": "view"},
//!                 "subjects": [{"kind": "ServiceAccount", "apiGroup": "kubesphere.io", "name": "sample", "namespace": "default"}]}]
//! }"#).unwrap();
//! let store = PolicyStore::new(PolicyIndex::build(&policy));
//! store.set_ready(true);
//! let authz = Authorizer::new(Mode::Rbac);
//!
//! let info = resolve("GET", "/api/v1/namespaces/default/pods", "").unwrap();
//! let user = "kubesphere:serviceaccount:default:sample";
//! assert!(authz.decide(&store, &info.attributes(user, &[])).allowed());
//! let info = resolve("DELETE", "/api/v1/namespaces/default/pods/p", "").unwrap();
//! assert!(!authz.decide(&store, &info.attributes(user, &[])).allowed());
//! ```

#![deny(missing_docs)]

#[cfg(feature = "testing")]
pub mod generate;
pub mod matching;
pub mod model;
#[cfg(feature = "testing")]
pub mod naive;
pub mod path;
pub mod query;
pub mod rego;
pub mod request;
pub mod review;
pub mod snapshot;
pub mod status;
pub mod target;

pub use self::{
    query::{Query, QueryError},
    request::{Attributes, RequestInfo, Scope, resolve, resolve_query},
    snapshot::{Decision, Denial, Grant, Granted, PolicyIndex, PolicyStore, Snapshot},
    status::Status,
    target::{Target, TargetError},
};

/// Paths every caller may reach (spec §9.1); a trailing `*` is a prefix match.
pub const ALWAYS_ALLOWED_PATHS: [&str; 9] = [
    "/oauth/*",
    "/dist/*",
    "/.well-known/openid-configuration",
    "/version",
    "/metrics",
    "/livez",
    "/healthz",
    "/openapi/v2",
    "/openapi/v3",
];

/// Whether a non-resource path is on the allow-list.
pub fn path_always_allowed(path: &str) -> bool {
    let path = path.strip_prefix('/').unwrap_or(path);
    ALWAYS_ALLOWED_PATHS.iter().any(|p| {
        let p = p.strip_prefix('/').unwrap_or(p);
        match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        }
    })
}

/// The `authorization.mode` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// Allow everything.
    AlwaysAllow,
    /// Deny everything.
    AlwaysDeny,
    /// The path allow-list, then RBAC.
    #[default]
    #[serde(rename = "RBAC")]
    Rbac,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "AlwaysAllow" => Ok(Self::AlwaysAllow),
            "AlwaysDeny" => Ok(Self::AlwaysDeny),
            "RBAC" => Ok(Self::Rbac),
            other => Err(format!(
                "authorization mode {other:?} is not supported (AlwaysAllow, AlwaysDeny, RBAC)"
            )),
        }
    }
}

/// The outcome of the whole authorizer.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Allowed by the mode or the path allow-list.
    AllowedWithoutRbac(&'static str),
    /// Decided by RBAC (allowed or not).
    Rbac(Decision),
    /// Denied by `AlwaysDeny`.
    AlwaysDeny,
}

impl Verdict {
    /// Whether the request may proceed.
    pub fn allowed(&self) -> bool {
        match self {
            Self::AllowedWithoutRbac(_) => true,
            Self::Rbac(d) => d.allowed(),
            Self::AlwaysDeny => false,
        }
    }

    /// The reason text (appended to 403 messages when non-empty).
    pub fn reason(&self, a: &Attributes<'_>) -> String {
        match self {
            Self::AllowedWithoutRbac(why) => (*why).to_owned(),
            Self::Rbac(d) => d.reason(a),
            Self::AlwaysDeny => "Everything is forbidden.".to_owned(),
        }
    }
}

/// KubeSphere's authorizer: the mode, then (for RBAC) the path allow-list, then the RBAC snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Authorizer {
    mode: Mode,
}

impl Authorizer {
    /// An authorizer in `mode`.
    pub fn new(mode: Mode) -> Self {
        Self { mode }
    }

    /// Decides a request against the store's current snapshot.
    pub fn decide(&self, store: &PolicyStore, a: &Attributes<'_>) -> Verdict {
        match self.mode {
            Mode::AlwaysAllow => Verdict::AllowedWithoutRbac("AlwaysAllow mode"),
            Mode::AlwaysDeny => Verdict::AlwaysDeny,
            Mode::Rbac if !a.resource_request && path_always_allowed(a.path) => {
                Verdict::AllowedWithoutRbac("path is always allowed")
            }
            Mode::Rbac => Verdict::Rbac(store.decide(a).0),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Decides a request against one loaded `snapshot` (so that several decisions share it); `ready` is the
    /// store's readiness, and a store that is not ready denies as [`PolicyStore::decide`] does.
    pub fn decide_on(&self, snapshot: &Snapshot, ready: bool, a: &Attributes<'_>) -> Verdict {
        match self.mode {
            Mode::AlwaysAllow => Verdict::AllowedWithoutRbac("AlwaysAllow mode"),
            Mode::AlwaysDeny => Verdict::AlwaysDeny,
            Mode::Rbac if !a.resource_request && path_always_allowed(a.path) => {
                Verdict::AllowedWithoutRbac("path is always allowed")
            }
            Mode::Rbac if !ready => Verdict::Rbac(Decision::Deny(Denial {
                not_ready: true,
                errors: Vec::new(),
            })),
            Mode::Rbac => Verdict::Rbac(snapshot.decide(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        for p in [
            "/oauth/token",
            "/oauth/",
            "/dist/a/b.js",
            "/version",
            "version",
            "/healthz",
            "/openapi/v3",
        ] {
            assert!(path_always_allowed(p), "{p}");
        }
        for p in [
            "/oauth",
            "/version/x",
            "/healthz/",
            "/kapis/x",
            "/",
            "/openapi/v3/apis",
        ] {
            assert!(!path_always_allowed(p), "{p}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!("RBAC".parse::<Mode>(), Ok(Mode::Rbac));
        assert!("rbac".parse::<Mode>().is_err());
        let store = PolicyStore::default();
        store.set_ready(true);
        let info = resolve("GET", "/api/v1/pods", "").unwrap();
        let a = info.attributes("u", &[]);
        assert!(Authorizer::new(Mode::AlwaysAllow).decide(&store, &a).allowed());
        assert!(!Authorizer::new(Mode::AlwaysDeny).decide(&store, &a).allowed());
        assert!(!Authorizer::new(Mode::Rbac).decide(&store, &a).allowed());
        let info = resolve("GET", "/version", "").unwrap();
        assert!(
            Authorizer::new(Mode::Rbac)
                .decide(&store, &info.attributes("u", &[]))
                .allowed()
        );
    }

    #[test]
    fn not_ready_fails_closed() {
        let store = PolicyStore::default();
        let info = resolve("GET", "/api/v1/pods", "").unwrap();
        let a = info.attributes("u", &[]);
        let v = Authorizer::new(Mode::Rbac).decide(&store, &a);
        assert!(!v.allowed());
        assert!(v.reason(&a).contains("not ready"));
    }
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
