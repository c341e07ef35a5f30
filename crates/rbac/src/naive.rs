//! A deliberately naive evaluator that follows spec §9.3 literally, for testing the indexed snapshot.
//!
//! It walks every binding of the policy for every request, recompiles rego on every call, and is written
//! to be obviously right rather than fast. It shares no matching code with [`crate::Snapshot`]: subject
//! matching, rule matching, role-reference resolution, Go quoting and the reason texts are written here again
//! from the spec (only the rego engine is common), so a bug in the shared matcher cannot hide on both sides.
//! The property tests (`tests/oracle.rs`) assert that the snapshot agrees with it on the decision and on the
//! reason: the binding it names on allow, the error text on deny.

use crate::{
    model::{Binding, BindingKind, Policy, PolicyRule, Role, RoleKind, Subject},
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
    /// On allow: the reason of every binding of the deciding phase that allows the request
    /// (`RBAC: allowed by …`). Upstream meets bindings in informer-cache order, so any of them may be the one
    /// named.
    pub allowed_by: Vec<String>,
}

impl NaiveDecision {
    /// The reason on deny: `""` without errors, else `RBAC: <error>` (one error) or `RBAC: [<e1>, <e2>]`
    /// (Kubernetes' aggregate), errors in the order met.
    pub fn denial_reason(&self) -> String {
        match self.errors.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        }
    }

    /// Whether `reason` is a reason this decision may carry: one of [`Self::allowed_by`] on allow; on deny
    /// [`Self::denial_reason`], with several errors in any order.
    pub fn admits_reason(&self, reason: &str) -> bool {
        if self.allowed {
            return self.allowed_by.iter().any(|r| r == reason);
        }
        if self.errors.len() <= 1 {
            return reason == self.denial_reason();
        }
        let Some(inner) = reason.strip_prefix("RBAC: [").and_then(|r| r.strip_suffix(']')) else {
            return false;
        };
        let mut rest = inner.to_owned();
        let mut errors = self.errors.clone();
        errors.sort_by_key(|e| std::cmp::Reverse(e.len()));
        for e in &errors {
            match rest.find(e.as_str()) {
                Some(i) => rest.replace_range(i..i + e.len(), ""),
                None => return false,
            }
        }
        rest.chars().all(|c| c == ',' || c == ' ') && rest.len() == 2 * (self.errors.len() - 1)
    }
}

/// Decides `a` against `policy` by walking everything.
pub fn decide(policy: &Policy, a: &Attributes<'_>) -> NaiveDecision {
    let mut errors = Vec::new();
    let allowed_by = walk(policy, a, &mut errors);
    let mut unique: Vec<String> = Vec::new();
    for e in errors {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    NaiveDecision {
        allowed: !allowed_by.is_empty(),
        errors: unique,
        allowed_by,
    }
}

/// The reasons of the allowing bindings of the deciding phase; empty on deny.
fn walk(policy: &Policy, a: &Attributes<'_>, errors: &mut Vec<String>) -> Vec<String> {
    let of_kind = |kind: BindingKind| policy.bindings.iter().filter(move |b| b.kind == kind);

    // 1. GlobalRoleBindings: a bad roleRef is recorded and that binding skipped.
    let mut allowing = Vec::new();
    for b in of_kind(BindingKind::GlobalRoleBinding) {
        let Some(subject) = first_matching_subject(b, a, "") else {
            continue;
        };
        match role_of(policy, b, "") {
            Err(e) => errors.push(e),
            Ok(role) if role_allows(role, a) => allowing.push(allow_reason(b, subject, "")),
            Ok(_) => {}
        }
    }
    if !allowing.is_empty() || a.scope == Scope::Global {
        return allowing;
    }

    // 2. The target workspace: the namespace's label, or the request's workspace.
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
    // meets bindings in informer-cache order; ksiam checks the whole phase for bad references first, so the
    // outcome does not depend on that order (fail closed): a deliberate difference.
    let phase =
        |bindings: Vec<&Binding>, default_ns: &str, errors: &mut Vec<String>| -> Result<Vec<String>, ()> {
            let applicable: Vec<(&Binding, &Subject)> = bindings
                .into_iter()
                .filter_map(|b| Some((b, first_matching_subject(b, a, default_ns)?)))
                .collect();
            for (b, _) in &applicable {
                if let Err(e) = role_of(policy, b, default_ns) {
                    errors.push(e);
                    return Err(());
                }
            }
            Ok(applicable
                .iter()
                .filter(|(b, _)| role_of(policy, b, default_ns).is_ok_and(|r| role_allows(r, a)))
                .map(|(b, s)| allow_reason(b, s, default_ns))
                .collect())
        };

    if !workspace.is_empty() {
        let wrbs = of_kind(BindingKind::WorkspaceRoleBinding)
            .filter(|b| b.workspace.as_deref() == Some(workspace.as_str()))
            .collect();
        match phase(wrbs, "", errors) {
            Ok(allowing) if !allowing.is_empty() => return allowing,
            Ok(_) => {}
            Err(()) => return Vec::new(),
        }
    }
    if a.scope == Scope::Namespace {
        let rbs = of_kind(BindingKind::RoleBinding)
            .filter(|b| b.namespace == a.namespace)
            .collect();
        match phase(rbs, a.namespace, errors) {
            Ok(allowing) if !allowing.is_empty() => return allowing,
            Ok(_) => {}
            Err(()) => return Vec::new(),
        }
    }
    phase(of_kind(BindingKind::ClusterRoleBinding).collect(), "", errors).unwrap_or_default()
}

/// The first subject of `b` that stands for the requester ("within a binding only the first matching
/// subject is used").
fn first_matching_subject<'b>(b: &'b Binding, a: &Attributes<'_>, default_ns: &str) -> Option<&'b Subject> {
    b.subjects.iter().find(|s| subject_is(s, a, default_ns))
}

/// Spec §9.3, subject matching.
fn subject_is(s: &Subject, a: &Attributes<'_>, default_ns: &str) -> bool {
    if s.kind == "User" {
        return a.user == s.name;
    }
    if s.kind == "Group" {
        return a.groups.contains(&s.name);
    }
    if s.kind != "ServiceAccount" {
        return false;
    }
    let ns = if s.namespace.is_empty() {
        default_ns
    } else {
        s.namespace.as_str()
    };
    if ns.is_empty() {
        return false;
    }
    let user = if s.api_group == "kubesphere.io" {
        format!("kubesphere:serviceaccount:{ns}:{}", s.name)
    } else if s.api_group == "rbac.authorization.k8s.io" {
        format!("system:serviceaccount:{ns}:{}", s.name)
    } else {
        // Anything else, the empty group included, never matches.
        return false;
    };
    a.user == user
}

/// The role a binding refers to: `Ok(None)` when it does not exist (grants nothing), `Err` for a kind the
/// evaluation does not know. A `Role` is looked up in `namespace` (the RoleBinding's; "" elsewhere, where
/// no Role exists).
fn role_of<'p>(policy: &'p Policy, b: &Binding, namespace: &str) -> Result<Option<&'p Role>, String> {
    let (kind, ns) = match b.role_ref.kind.as_str() {
        "Role" => (RoleKind::Role, namespace),
        "ClusterRole" => (RoleKind::ClusterRole, ""),
        "GlobalRole" => (RoleKind::GlobalRole, ""),
        "WorkspaceRole" => (RoleKind::WorkspaceRole, ""),
        other => {
            return Err(format!("unsupported role reference kind: {}", quote(other)));
        }
    };
    Ok(policy
        .roles
        .iter()
        .find(|r| r.kind == kind && r.name == b.role_ref.name && r.namespace == ns))
}

/// The rego override first, then the rules (spec order).
fn role_allows(role: Option<&Role>, a: &Attributes<'_>) -> bool {
    let Some(role) = role else { return false };
    if role
        .rego
        .as_deref()
        .is_some_and(|src| RegoPolicy::compile(src).allows(a))
    {
        return true;
    }
    role.rules.iter().any(|r| rule_is(r, a))
}

/// Spec §9.3, rule matching (Kubernetes RBAC, case-sensitive).
fn rule_is(r: &PolicyRule, a: &Attributes<'_>) -> bool {
    let verb = r.verbs.iter().any(|v| v == "*" || v == a.verb);
    if !verb {
        return false;
    }
    if !a.resource_request {
        return r.non_resource_urls.iter().any(|u| {
            if u == "*" || u == a.path {
                return true;
            }
            // Go's `strings.TrimRight(rule, "*")` as a prefix.
            u.ends_with('*') && a.path.starts_with(u.trim_end_matches('*'))
        });
    }
    let group = r.api_groups.iter().any(|g| g == "*" || g == a.api_group);
    let combined = if a.subresource.is_empty() {
        a.resource.to_owned()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource = r.resources.iter().any(|x| {
        x == "*" || *x == combined || (!a.subresource.is_empty() && *x == format!("*/{}", a.subresource))
    });
    let name = r.resource_names.is_empty() || r.resource_names.iter().any(|n| n == a.name);
    group && resource && name
}

/// `RBAC: allowed by <Binding> "<name>" of <roleRef.kind> "<role>" to <Subject>`. A RoleBinding is named
/// `"<name>/<namespace>"`, a ServiceAccount subject `"<name>/<namespace>"`. WorkspaceRoleBindings are called
/// what they are (upstream says `GlobalRoleBinding`: a deliberate difference).
fn allow_reason(b: &Binding, s: &Subject, default_ns: &str) -> String {
    let binding = match b.kind {
        BindingKind::GlobalRoleBinding => format!("GlobalRoleBinding {}", quote(&b.name)),
        BindingKind::WorkspaceRoleBinding => format!("WorkspaceRoleBinding {}", quote(&b.name)),
        BindingKind::ClusterRoleBinding => format!("ClusterRoleBinding {}", quote(&b.name)),
        BindingKind::RoleBinding => format!("RoleBinding {}", quote(&format!("{}/{}", b.name, b.namespace))),
    };
    let subject = if s.kind == "ServiceAccount" {
        let ns = if s.namespace.is_empty() {
            default_ns
        } else {
            &s.namespace
        };
        format!("ServiceAccount {}", quote(&format!("{}/{ns}", s.name)))
    } else {
        format!("{} {}", s.kind, quote(&s.name))
    };
    format!(
        "RBAC: allowed by {binding} of {} {} to {subject}",
        b.role_ref.kind,
        quote(&b.role_ref.name)
    )
}

/// Go's `%q` (`strconv.Quote`) for the texts of the tests: `"` and `\` escaped, the C escapes, other ASCII
/// control bytes as `\x..`, everything else as it is.
fn quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\u{7}' => o.push_str("\\a"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{b}' => o.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => o.push_str(&format!("\\x{:02x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RoleRef;

    fn binding(kind: BindingKind, name: &str, role_kind: &str, role: &str, subject: Subject) -> Binding {
        Binding {
            kind,
            namespace: if kind == BindingKind::RoleBinding {
                "ns0".into()
            } else {
                String::new()
            },
            name: name.into(),
            workspace: Some("w0".into()),
            role_ref: RoleRef {
                api_group: "iam.kubesphere.io".into(),
                kind: role_kind.into(),
                name: role.into(),
            },
            subjects: vec![subject],
        }
    }

    fn user(name: &str) -> Subject {
        Subject {
            kind: "User".into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn all_role(kind: RoleKind, name: &str) -> Role {
        Role {
            kind,
            namespace: if kind == RoleKind::Role {
                "ns0".into()
            } else {
                String::new()
            },
            name: name.into(),
            rules: vec![PolicyRule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                ..Default::default()
            }],
            rego: None,
        }
    }

    fn get_pods<'a>(scope: Scope, user: &'a str) -> Attributes<'a> {
        Attributes {
            user,
            verb: "get",
            resource: "pods",
            namespace: if scope == Scope::Namespace { "ns0" } else { "" },
            workspace: if scope == Scope::Workspace { "w0" } else { "" },
            resource_request: true,
            scope,
            ..Default::default()
        }
    }

    #[test]
    fn reasons_name_the_binding_role_and_subject() {
        let policy = Policy {
            roles: vec![all_role(RoleKind::WorkspaceRole, "w0-admin")],
            bindings: vec![binding(
                BindingKind::WorkspaceRoleBinding,
                "u0-admin",
                "WorkspaceRole",
                "w0-admin",
                user("u0"),
            )],
            namespaces: vec![],
        };
        let d = decide(&policy, &get_pods(Scope::Workspace, "u0"));
        assert_eq!(
            d.allowed_by,
            [r#"RBAC: allowed by WorkspaceRoleBinding "u0-admin" of WorkspaceRole "w0-admin" to User "u0""#]
        );
        assert!(d.admits_reason(&d.allowed_by[0]));
        assert!(!d.admits_reason(""));
    }

    #[test]
    fn a_bad_role_ref_in_a_phase_denies_whatever_the_order() {
        let good = binding(
            BindingKind::ClusterRoleBinding,
            "good",
            "ClusterRole",
            "all",
            user("u0"),
        );
        let bad = binding(BindingKind::ClusterRoleBinding, "bad", "Bogus", "all", user("u0"));
        for bindings in [vec![good.clone(), bad.clone()], vec![bad, good]] {
            let policy = Policy {
                roles: vec![all_role(RoleKind::ClusterRole, "all")],
                bindings,
                namespaces: vec![],
            };
            let d = decide(&policy, &get_pods(Scope::Cluster, "u0"));
            assert!(!d.allowed);
            assert_eq!(
                d.denial_reason(),
                r#"RBAC: unsupported role reference kind: "Bogus""#
            );
        }
    }

    #[test]
    fn several_errors_are_admitted_in_any_order() {
        let d = NaiveDecision {
            allowed: false,
            errors: vec!["e: \"A\"".into(), "e: \"B\"".into()],
            allowed_by: vec![],
        };
        assert!(d.admits_reason(r#"RBAC: [e: "A", e: "B"]"#));
        assert!(d.admits_reason(r#"RBAC: [e: "B", e: "A"]"#));
        assert!(!d.admits_reason(r#"RBAC: [e: "B"]"#));
        assert!(!d.admits_reason(r#"RBAC: [e: "A", e: "B", e: "C"]"#));
        assert!(!d.admits_reason(""));
    }

    #[test]
    fn quoting_follows_go() {
        assert_eq!(quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
    }
}
