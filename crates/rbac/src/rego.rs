//! `iam.kubesphere.io/rego-override` policies, compiled once per role version.
//!
//! KubeSphere compiles the module `authz.rego` and queries `data.authz.allow` with the request attributes as
//! input, using Go field names as keys. A policy that does not compile, or fails to evaluate, never allows;
//! the compile error is kept so `explain` can report it.
//!
//! Policies are written by whoever may edit a role, so an evaluation is bounded: it stops after
//! [`EVALUATION_LIMIT`] of wall time (and then does not allow). A server can also move evaluations off its
//! async workers with [`set_evaluation_wrapper`] (the gateway and the authorizer use tokio's
//! `block_in_place`); rule-only decisions never pay for that.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use crate::request::Attributes;

/// The rule KubeSphere queries.
pub const ENTRYPOINT: &str = "data.authz.allow";

/// How long one evaluation may run before it is stopped (and does not allow).
pub const EVALUATION_LIMIT: Duration = Duration::from_millis(10);

/// Runs an evaluation (the closure) and returns its result: see [`set_evaluation_wrapper`].
pub type EvaluationWrapper = fn(&mut dyn FnMut() -> bool) -> bool;

static WRAPPER: OnceLock<EvaluationWrapper> = OnceLock::new();

/// Installs, once per process, a function every rego evaluation runs through: a server uses it to tell its
/// runtime that the thread is about to block (tokio's `block_in_place`). Returns `false` when one was
/// already installed.
pub fn set_evaluation_wrapper(wrapper: EvaluationWrapper) -> bool {
    WRAPPER.set(wrapper).is_ok()
}

/// A compiled (or failed) rego-override policy.
#[derive(Clone)]
pub struct RegoPolicy {
    source: Arc<str>,
    compiled: Result<Compiled, Arc<str>>,
}

#[cfg(feature = "rego")]
type Compiled = regorus::CompiledPolicy;
#[cfg(not(feature = "rego"))]
type Compiled = ();

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("bytes", &self.source.len())
            .field("error", &self.compiled.as_ref().err())
            .finish()
    }
}

impl PartialEq for RegoPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl RegoPolicy {
    /// Compiles `source` as module `authz.rego` (Rego v1 syntax first, then v0, since KubeSphere's shipped
    /// policies predate v1).
    pub fn compile(source: &str) -> Self {
        Self {
            source: source.into(),
            compiled: compile(source).map_err(Arc::from),
        }
    }

    /// The policy text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compile error, if the policy did not compile.
    pub fn error(&self) -> Option<&str> {
        self.compiled.as_ref().err().map(|e| &**e)
    }

    /// Whether the policy allows the request. Errors count as "not allowed".
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        match &self.compiled {
            Ok(policy) => match WRAPPER.get() {
                Some(wrap) => wrap(&mut || evaluate(policy, a)),
                None => evaluate(policy, a),
            },
            Err(_) => false,
        }
    }
}

/// The evaluation input, with KubeSphere's (Go) field names.
pub fn input_json(a: &Attributes<'_>) -> serde_json::Value {
    serde_json::json!({
        "User": { "Name": a.user, "UID": "", "Groups": a.groups, "Extra": null },
        "Verb": a.verb,
        "Cluster": a.cluster,
        "Workspace": a.workspace,
        "Namespace": a.namespace,
        "APIGroup": a.api_group,
        "APIVersion": a.api_version,
        "Resource": a.resource,
        "Subresource": a.subresource,
        "Name": a.name,
        "KubernetesRequest": a.kubernetes_request,
        "ResourceRequest": a.resource_request,
        "Path": a.path,
        "ResourceScope": a.scope.as_str(),
    })
}

#[cfg(feature = "rego")]
fn compile(source: &str) -> Result<Compiled, String> {
    let attempt = |v0: bool| -> Result<Compiled, String> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(v0);
        engine
            .add_policy("authz.rego".to_owned(), source.to_owned())
            .map_err(|e| e.to_string())?;
        engine
            .compile_with_entrypoint(&ENTRYPOINT.into())
            .map_err(|e| e.to_string())
    };
    attempt(false).or_else(|v1_error| attempt(true).map_err(|_| v1_error))
}

#[cfg(feature = "rego")]
fn evaluate(policy: &Compiled, a: &Attributes<'_>) -> bool {
    matches!(try_evaluate(policy, a), Ok(true))
}

/// Evaluates with the time limit; `Err` is the engine's error (a policy error, or the limit).
#[cfg(feature = "rego")]
fn try_evaluate(policy: &Compiled, a: &Attributes<'_>) -> Result<bool, String> {
    static LIMIT: std::sync::Once = std::sync::Once::new();
    LIMIT.call_once(|| {
        regorus::utils::limits::set_fallback_execution_timer_config(Some(
            regorus::utils::limits::ExecutionTimerConfig {
                limit: EVALUATION_LIMIT,
                check_interval: std::num::NonZeroU32::MIN,
            },
        ));
    });
    let input = regorus::Value::from_json_str(&input_json(a).to_string()).map_err(|e| e.to_string())?;
    let value = policy.eval_with_input(input).map_err(|e| format!("{e:#}"))?;
    Ok(value == regorus::Value::Bool(true))
}

#[cfg(not(feature = "rego"))]
fn compile(_source: &str) -> Result<Compiled, String> {
    Err("rego-override policies are not supported: ksiam-rbac was built without the `rego` feature".into())
}

#[cfg(not(feature = "rego"))]
fn evaluate(_policy: &Compiled, _a: &Attributes<'_>) -> bool {
    false
}

#[cfg(all(test, feature = "rego"))]
mod tests {
    use super::*;
    use crate::request::Scope;

    #[test]
    fn a_runaway_policy_is_stopped_and_does_not_allow() {
        // Billions of steps if nothing stops it.
        let p = RegoPolicy::compile(
            "package authz\nimport rego.v1\nallow if {\n  count([1 | some x in numbers.range(1, 5000); some y in numbers.range(1, 5000); x != y]) > 0\n}\n",
        );
        assert!(p.error().is_none(), "{:?}", p.error());
        let Ok(compiled) = &p.compiled else { unreachable!() };
        let error = try_evaluate(compiled, &Attributes::default()).unwrap_err();
        assert!(error.contains("time limit") || error.contains("limit"), "{error}");
        assert!(!p.allows(&Attributes::default()));
    }

    #[test]
    fn v0_and_v1_policies() {
        let v0 = "package authz\ndefault allow = false\nallow {\n  resources_in_cluster_scope\n}\nresources_in_cluster_scope {\n  input.ResourceScope == \"Cluster\"\n}\n";
        let v1 = "package authz\ndefault allow := false\nallow if input.ResourceScope in {\"Workspace\", \"Namespace\"}\n";
        for (src, allowed, denied) in [
            (v0, Scope::Cluster, Scope::Global),
            (v1, Scope::Namespace, Scope::Cluster),
        ] {
            let p = RegoPolicy::compile(src);
            assert_eq!(p.error(), None, "{src}");
            assert!(p.allows(&Attributes {
                scope: allowed,
                resource_request: true,
                ..Default::default()
            }));
            assert!(!p.allows(&Attributes {
                scope: denied,
                resource_request: true,
                ..Default::default()
            }));
        }
    }

    #[test]
    fn broken_policies_never_allow() {
        let p = RegoPolicy::compile("package authz\nallow { this is not rego");
        assert!(p.error().is_some());
        assert!(!p.allows(&Attributes::default()));
        let p = RegoPolicy::compile("package authz\nallow := 1 / 0");
        assert!(!p.allows(&Attributes::default()));
    }

    #[test]
    fn input_uses_go_field_names() {
        let p = RegoPolicy::compile(
            "package authz\nallow if {\n input.User.Name == \"u\"\n input.Verb == \"get\"\n input.Resource == \"users\"\n input.Name == input.User.Name\n}\n",
        );
        let ok = Attributes {
            user: "u",
            verb: "get",
            resource: "users",
            name: "u",
            ..Default::default()
        };
        assert!(p.allows(&ok));
        assert!(!p.allows(&Attributes { name: "v", ..ok }));
    }
}
