//! `iam.kubesphere.io/rego-override` policies, compiled once per role version.
//!
//! KubeSphere compiles the module `authz.rego` and queries `data.authz.allow` with the request attributes as
//! input, using Go field names as keys. A policy that does not compile, or fails to evaluate, never allows;
//! the compile error is kept so `explain` can report it.

use std::sync::Arc;

use crate::request::Attributes;

/// The rule KubeSphere queries.
pub const ENTRYPOINT: &str = "data.authz.allow";

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
            Ok(policy) => evaluate(policy, a),
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
    let Ok(input) = regorus::Value::from_json_str(&input_json(a).to_string()) else {
        return false;
    };
    matches!(policy.eval_with_input(input), Ok(v) if v == regorus::Value::Bool(true))
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
