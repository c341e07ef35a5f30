//! Reviews of a snapshot: the rules a subject holds in a scope ([`rules_for`]) and the subjects that may
//! make a request ([`who_can`]). Both follow the phases of spec §9.3 exactly as [`Snapshot::decide`] does,
//! so what they report is what decisions do. They allocate freely; they are not on the request path.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    Snapshot,
    matching::{SubjectKey, subject_applies},
    model::{BindingKind, PolicyRule, RoleKind, Subject},
    request::{Attributes, Scope},
    snapshot::{CompiledBinding, CompiledRole},
    status::go_quote,
};

/// A rule a subject holds, with the binding and role it comes from.
#[derive(Clone, Debug)]
pub struct RuleSource {
    /// The rule.
    pub rule: PolicyRule,
    /// The binding that grants the role.
    pub binding: Arc<CompiledBinding>,
    /// The role holding the rule.
    pub role: Arc<CompiledRole>,
}

/// A subject that may make a request, and the bindings that allow it.
#[derive(Clone, Debug)]
pub struct SubjectGrant {
    /// The subject, with a ServiceAccount's namespace filled in from its RoleBinding when omitted.
    pub subject: Subject,
    /// The bindings (of the applicable phases) that name this subject and whose role allows the request.
    pub bindings: Vec<Arc<CompiledBinding>>,
}

fn ref_error(b: &CompiledBinding) -> Option<String> {
    match b.role_kind() {
        Some(_) => None,
        None => Some(format!(
            "unsupported role reference kind: {}",
            go_quote(&b.role_ref.kind)
        )),
    }
}

fn push_unique(errors: &mut Vec<String>, e: String) {
    if !errors.contains(&e) {
        errors.push(e);
    }
}

/// The workspace a request in `scope` targets (phase 2 of spec §9.3).
fn target_workspace<'a>(snap: &'a Snapshot, scope: Scope, namespace: &'a str, workspace: &'a str) -> &'a str {
    match scope {
        Scope::Namespace => snap.namespace_workspace(namespace).unwrap_or(""),
        Scope::Workspace => workspace,
        _ => "",
    }
}

/// The rules `user` (in `groups`) holds for requests in `scope`, in evaluation order: GlobalRoleBindings,
/// then (unless `scope` is Global) the WorkspaceRoleBindings of the target workspace, the RoleBindings of
/// `namespace` (Namespace scope), and ClusterRoleBindings.
///
/// For Namespace scope the target workspace is the namespace's `kubesphere.io/workspace` label, as in a
/// decision (`workspace` is then ignored); for Workspace scope it is `workspace`.
///
/// The second value lists what makes the rules incomplete: unsupported role-reference kinds (in the
/// workspace, namespace and cluster phases such an error ends the evaluation, as it does for a decision,
/// so later phases are not listed) and roles whose rego override may allow more than their rules.
pub fn rules_for(
    snap: &Snapshot,
    user: &str,
    groups: &[String],
    scope: Scope,
    namespace: &str,
    workspace: &str,
) -> (Vec<RuleSource>, Vec<String>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut seen: Vec<*const CompiledBinding> = Vec::new();
    let mut add =
        |b: &Arc<CompiledBinding>, role_ns: &str, rules: &mut Vec<RuleSource>, errors: &mut Vec<String>| {
            if seen.contains(&Arc::as_ptr(b)) {
                return;
            }
            seen.push(Arc::as_ptr(b));
            let Some(kind) = b.role_kind() else { return };
            let Some(role) = snap.role(kind, role_ns, &b.role_ref.name) else {
                return;
            };
            if role.rego.is_some() {
                push_unique(
                    errors,
                    format!(
                        "{} {} has a rego-override policy; what it allows is not listed as rules",
                        role.kind.as_str(),
                        go_quote(&role.name)
                    ),
                );
            }
            rules.extend(role.rules.iter().map(|r| RuleSource {
                rule: r.clone(),
                binding: b.clone(),
                role: role.clone(),
            }));
        };

    // 1. GlobalRoleBindings: bad references are skipped.
    for b in snap.subject_bindings(user, groups, BindingKind::GlobalRoleBinding, "") {
        match ref_error(&b) {
            Some(e) => push_unique(&mut errors, e),
            None => add(&b, "", &mut rules, &mut errors),
        }
    }
    if scope == Scope::Global {
        return (rules, errors);
    }

    // 2-5. A bad reference ends the evaluation.
    let ws = target_workspace(snap, scope, namespace, workspace);
    let mut phases: Vec<(Vec<Arc<CompiledBinding>>, &str)> = Vec::new();
    if !ws.is_empty() {
        phases.push((
            snap.subject_bindings(user, groups, BindingKind::WorkspaceRoleBinding, ws),
            "",
        ));
    }
    if scope == Scope::Namespace {
        phases.push((
            snap.subject_bindings(user, groups, BindingKind::RoleBinding, namespace),
            namespace,
        ));
    }
    phases.push((
        snap.subject_bindings(user, groups, BindingKind::ClusterRoleBinding, ""),
        "",
    ));
    for (bindings, role_ns) in phases {
        if let Some(e) = bindings.iter().find_map(|b| ref_error(b)) {
            push_unique(&mut errors, e);
            break;
        }
        for b in &bindings {
            add(b, role_ns, &mut rules, &mut errors);
        }
    }
    (rules, errors)
}

/// A subject as evaluated: a ServiceAccount's namespace defaulted to its RoleBinding's namespace.
fn normalize(s: &Subject, binding_namespace: &str) -> Subject {
    let mut s = s.clone();
    if s.kind == "ServiceAccount" && s.namespace.is_empty() {
        s.namespace = binding_namespace.to_owned();
    }
    s
}

/// The user name and groups a decision for `subject` is made with: a user (or ServiceAccount user name)
/// with no groups, or a group member with an empty user name (so only the group's bindings apply).
pub fn subject_identity(subject: &Subject) -> Option<(String, Vec<String>)> {
    match SubjectKey::of(subject, "")? {
        SubjectKey::User(u) => Some((u, Vec::new())),
        SubjectKey::Group(g) => Some((String::new(), vec![g])),
    }
}

/// The subjects that may make the request `a` (its `user` and `groups` are ignored), each with the
/// bindings that allow it, sorted by kind, namespace and name.
///
/// Every subject named in a binding of the snapshot is considered, and kept when [`Snapshot::decide`]
/// allows the request for it alone (a user or ServiceAccount without groups; a group through a member
/// with no bindings of its own), so the answer agrees with decisions, including a bad role reference
/// that denies. Only RBAC is reviewed: the mode and the path allow-list of [`crate::Authorizer`] are not.
///
/// The second value lists the unsupported role-reference kinds met among the applicable bindings.
pub fn who_can(snap: &Snapshot, a: &Attributes<'_>) -> (Vec<SubjectGrant>, Vec<String>) {
    let ws = target_workspace(snap, a.scope, a.namespace, a.workspace);
    let applies = |b: &CompiledBinding| match b.kind {
        BindingKind::GlobalRoleBinding => true,
        BindingKind::WorkspaceRoleBinding => {
            a.scope != Scope::Global && !ws.is_empty() && b.workspace.as_deref() == Some(ws)
        }
        BindingKind::RoleBinding => a.scope == Scope::Namespace && &*b.namespace == a.namespace,
        BindingKind::ClusterRoleBinding => a.scope != Scope::Global,
    };

    let mut errors = Vec::new();
    let mut candidates: BTreeMap<(String, String, String, String), Subject> = BTreeMap::new();
    let mut granting: Vec<Arc<CompiledBinding>> = Vec::new();
    for b in snap.bindings() {
        for s in b.subjects.iter() {
            let s = normalize(s, &b.namespace);
            if SubjectKey::of(&s, "").is_some() {
                candidates
                    .entry((
                        s.kind.clone(),
                        s.namespace.clone(),
                        s.name.clone(),
                        s.api_group.clone(),
                    ))
                    .or_insert(s);
            }
        }
        if !applies(&b) {
            continue;
        }
        let Some(kind) = b.role_kind() else {
            push_unique(&mut errors, ref_error(&b).unwrap_or_default());
            continue;
        };
        let role_ns = if kind == RoleKind::Role { a.namespace } else { "" };
        if snap
            .role(kind, role_ns, &b.role_ref.name)
            .is_some_and(|r| r.allows(a))
        {
            granting.push(b);
        }
    }

    let mut out = Vec::new();
    for subject in candidates.into_values() {
        let Some((user, groups)) = subject_identity(&subject) else {
            continue;
        };
        let attrs = Attributes {
            user: &user,
            groups: &groups,
            ..*a
        };
        if !snap.decide(&attrs).allowed() {
            continue;
        }
        let bindings: Vec<Arc<CompiledBinding>> = granting
            .iter()
            .filter(|b| {
                b.subjects
                    .iter()
                    .any(|s| subject_applies(s, &user, &groups, &b.namespace))
            })
            .cloned()
            .collect();
        out.push(SubjectGrant { subject, bindings });
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Policy;

    fn policy() -> Policy {
        serde_json::from_value(serde_json::json!({
            "roles": [
                {"kind": "GlobalRole", "name": "viewer", "rules": [{"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}]},
                {"kind": "ClusterRole", "name": "admin", "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]},
                {"kind": "Role", "namespace": "ns1", "name": "edit", "rules": [{"verbs": ["create"], "apiGroups": [""], "resources": ["pods"]}]},
                {"kind": "WorkspaceRole", "name": "ws-view", "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]}
            ],
            "bindings": [
                {"kind": "GlobalRoleBinding", "name": "g", "roleRef": {"kind": "GlobalRole", "name": "viewer"},
                 "subjects": [{"kind": "User", "name": "alice"}]},
                {"kind": "ClusterRoleBinding", "name": "c", "roleRef": {"kind": "ClusterRole", "name": "admin"},
                 "subjects": [{"kind": "Group", "name": "admins"}]},
                {"kind": "RoleBinding", "namespace": "ns1", "name": "r", "roleRef": {"kind": "Role", "name": "edit"},
                 "subjects": [{"kind": "ServiceAccount", "apiGroup": "kubesphere.io", "name": "sa"}]},
                {"kind": "WorkspaceRoleBinding", "name": "w", "workspace": "w1", "roleRef": {"kind": "WorkspaceRole", "name": "ws-view"},
                 "subjects": [{"kind": "User", "name": "alice"}]}
            ],
            "namespaces": [{"name": "ns1", "workspace": "w1"}]
        }))
        .unwrap()
    }

    #[test]
    fn rules_in_evaluation_order() {
        let snap = Snapshot::build(&policy());
        let (rules, errors) = rules_for(&snap, "alice", &[], Scope::Namespace, "ns1", "");
        assert!(errors.is_empty());
        let names: Vec<&str> = rules.iter().map(|r| &*r.binding.name).collect();
        assert_eq!(names, ["g", "w"], "global first, then the namespace's workspace");
        let (rules, _) = rules_for(&snap, "alice", &[], Scope::Global, "", "");
        assert_eq!(rules.len(), 1);
        let sa = "kubesphere:serviceaccount:ns1:sa";
        let (rules, _) = rules_for(&snap, sa, &[], Scope::Namespace, "ns1", "");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].rule.verbs, ["create"]);
        assert_eq!(&*rules[0].role.name, "edit");
        let (rules, _) = rules_for(&snap, sa, &[], Scope::Namespace, "ns2", "");
        assert!(rules.is_empty());
    }

    #[test]
    fn bad_reference_ends_the_listing_like_a_decision() {
        let mut p = policy();
        p.bindings.push(serde_json::from_value(serde_json::json!(
            {"kind": "WorkspaceRoleBinding", "name": "bad", "workspace": "w1", "roleRef": {"kind": "Bogus", "name": "x"},
             "subjects": [{"kind": "Group", "name": "admins"}]}))
        .unwrap());
        let snap = Snapshot::build(&p);
        let groups = vec!["admins".to_owned()];
        let (rules, errors) = rules_for(&snap, "bob", &groups, Scope::Namespace, "ns1", "");
        assert!(rules.is_empty());
        assert_eq!(errors, [r#"unsupported role reference kind: "Bogus""#]);
        let (rules, errors) = rules_for(&snap, "bob", &groups, Scope::Cluster, "", "");
        assert_eq!(
            rules.len(),
            1,
            "the workspace phase does not apply at cluster scope"
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn who_can_lists_subjects_with_their_bindings() {
        let snap = Snapshot::build(&policy());
        let a = Attributes {
            verb: "create",
            resource: "pods",
            namespace: "ns1",
            resource_request: true,
            scope: Scope::Namespace,
            ..Default::default()
        };
        let (subjects, errors) = who_can(&snap, &a);
        assert!(errors.is_empty());
        let got: Vec<(String, String, Vec<String>)> = subjects
            .iter()
            .map(|g| {
                (
                    g.subject.kind.clone(),
                    format!("{}/{}", g.subject.namespace, g.subject.name),
                    g.bindings.iter().map(|b| b.name.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("Group".into(), "/admins".into(), vec!["c".into()]),
                ("ServiceAccount".into(), "ns1/sa".into(), vec!["r".into()]),
            ]
        );
        let global = Attributes {
            verb: "get",
            resource: "users",
            api_group: "iam.kubesphere.io",
            resource_request: true,
            scope: Scope::Global,
            ..Default::default()
        };
        let (subjects, _) = who_can(&snap, &global);
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].subject.name, "alice");
    }
}
