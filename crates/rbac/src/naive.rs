//! A deliberately naive evaluator that follows spec §9.3 literally, for testing the indexed snapshot.
//!
//! It walks every binding of the policy for every request, recompiles rego on every call, and is written
//! to be obviously right rather than fast. The property tests assert that [`crate::Snapshot`] agrees with it.

use crate::{
    matching::{rule_allows, subject_applies},
    model::{Binding, BindingKind, Policy, PolicyRule, Role, RoleKind},
    rego::RegoPolicy,
    request::{Attributes, Scope},
};

/// The naive verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NaiveDecision {
    /// Whether some binding allowed the request.
    pub allowed: bool,
    /// Role-reference errors met on the way (deduplicated, in order).
    pub errors: Vec<String>,
}

/// Decides `a` against `policy` by walking everything.
pub fn decide(policy: &Policy, a: &Attributes<'_>) -> NaiveDecision {
    let mut errors = Vec::new();
    let allowed = walk(policy, a, &mut errors);
    errors.dedup();
    NaiveDecision { allowed, errors }
}

fn walk(policy: &Policy, a: &Attributes<'_>, errors: &mut Vec<String>) -> bool {
    let of_kind = |kind: BindingKind| policy.bindings.iter().filter(move |b| b.kind == kind);

    // 1. GlobalRoleBindings: a bad roleRef is recorded and skipped.
    for b in of_kind(BindingKind::GlobalRoleBinding) {
        if !applies(b, a, "") {
            continue;
        }
        match resolve(policy, b, "") {
            Err(e) => errors.push(e),
            Ok(role) if role_allows(role, a) => return true,
            Ok(_) => {}
        }
    }
    if a.scope == Scope::Global {
        return false;
    }

    // 2. The target workspace.
    let workspace = match a.scope {
        Scope::Namespace => policy
            .namespaces
            .iter()
            .find(|n| n.name == a.namespace)
            .and_then(|n| n.workspace.clone())
            .unwrap_or_default(),
        Scope::Workspace => a.workspace.to_owned(),
        _ => String::new(),
    };

    // 3-5. In these phases a bad roleRef aborts the evaluation (upstream returns from the walk). Upstream
    // meets bindings in informer-cache order; we check the whole phase for bad references first, so the
    // outcome does not depend on that order (fail closed).
    let phase = |bindings: Vec<&Binding>, default_ns: &str, errors: &mut Vec<String>| -> Result<bool, ()> {
        let applicable: Vec<&Binding> = bindings
            .into_iter()
            .filter(|b| applies(b, a, default_ns))
            .collect();
        for b in &applicable {
            if let Err(e) = resolve(policy, b, default_ns) {
                errors.push(e);
                return Err(());
            }
        }
        Ok(applicable
            .iter()
            .any(|b| resolve(policy, b, default_ns).is_ok_and(|r| role_allows(r, a))))
    };

    if !workspace.is_empty() {
        let wrbs = of_kind(BindingKind::WorkspaceRoleBinding)
            .filter(|b| b.workspace.as_deref() == Some(workspace.as_str()))
            .collect();
        match phase(wrbs, "", errors) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(()) => return false,
        }
    }
    if a.scope == Scope::Namespace {
        let rbs = of_kind(BindingKind::RoleBinding)
            .filter(|b| b.namespace == a.namespace)
            .collect();
        match phase(rbs, a.namespace, errors) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(()) => return false,
        }
    }
    phase(of_kind(BindingKind::ClusterRoleBinding).collect(), "", errors).unwrap_or(false)
}

fn applies(b: &Binding, a: &Attributes<'_>, default_ns: &str) -> bool {
    b.subjects
        .iter()
        .any(|s| subject_applies(s, a.user, a.groups, default_ns))
}

/// The role a binding refers to: `Ok(None)` when it does not exist (grants nothing), `Err` for a kind the
/// evaluation does not know.
fn resolve<'p>(policy: &'p Policy, b: &Binding, namespace: &str) -> Result<Option<&'p Role>, String> {
    let Some(kind) = RoleKind::from_ref_kind(&b.role_ref.kind) else {
        return Err(format!(
            "unsupported role reference kind: {}",
            crate::status::go_quote(&b.role_ref.kind)
        ));
    };
    let ns = if kind == RoleKind::Role { namespace } else { "" };
    Ok(policy
        .roles
        .iter()
        .find(|r| r.kind == kind && r.name == b.role_ref.name && r.namespace == ns))
}

fn role_allows(role: Option<&Role>, a: &Attributes<'_>) -> bool {
    let Some(role) = role else { return false };
    if role
        .rego
        .as_deref()
        .is_some_and(|src| RegoPolicy::compile(src).allows(a))
    {
        return true;
    }
    role.rules.iter().any(|r: &PolicyRule| rule_allows(r, a))
}
