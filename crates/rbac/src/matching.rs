//! Rule and subject matching, shared by the indexed snapshot and the naive reference evaluator.

use crate::{
    model::{PolicyRule, Subject},
    request::Attributes,
};

/// The group of KubeSphere ServiceAccount subjects.
pub const KUBESPHERE_SA_GROUP: &str = "kubesphere.io";
/// The group of Kubernetes ServiceAccount subjects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// Prefix of KubeSphere ServiceAccount user names.
pub const KUBESPHERE_SA_PREFIX: &str = "kubesphere:serviceaccount:";
/// Prefix of Kubernetes ServiceAccount user names.
pub const KUBERNETES_SA_PREFIX: &str = "system:serviceaccount:";

/// Whether `rule` allows the request (Kubernetes RBAC semantics, case-sensitive).
pub fn rule_allows(rule: &PolicyRule, a: &Attributes<'_>) -> bool {
    if !has_or_star(&rule.verbs, a.verb) {
        return false;
    }
    if a.resource_request {
        has_or_star(&rule.api_groups, a.api_group)
            && resource_matches(&rule.resources, a.resource, a.subresource)
            && (rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == a.name))
    } else {
        non_resource_url_matches(&rule.non_resource_urls, a.path)
    }
}

/// `*` or an exact member.
pub(crate) fn has_or_star<S: AsRef<str>>(list: &[S], value: &str) -> bool {
    list.iter().any(|v| {
        let v = v.as_ref();
        v == "*" || v == value
    })
}

/// `*`, `resource` / `resource/subresource` exactly, or `*/subresource`; never allocates.
pub(crate) fn resource_matches<S: AsRef<str>>(rules: &[S], resource: &str, subresource: &str) -> bool {
    rules.iter().any(|r| {
        let r = r.as_ref();
        if r == "*" {
            return true;
        }
        if subresource.is_empty() {
            return r == resource;
        }
        // `resource/subresource` without building the combined string.
        if r.len() == resource.len() + 1 + subresource.len()
            && r.starts_with(resource)
            && r.as_bytes()[resource.len()] == b'/'
            && r.ends_with(subresource)
        {
            return true;
        }
        r.len() == subresource.len() + 2 && r.starts_with("*/") && r.ends_with(subresource)
    })
}

/// `*`, an exact path, or a prefix ending in `*` (all trailing `*` trimmed, as Kubernetes does).
pub(crate) fn non_resource_url_matches<S: AsRef<str>>(urls: &[S], path: &str) -> bool {
    urls.iter().any(|u| {
        let u = u.as_ref();
        u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

/// The user name a subject stands for, or the group it names; `None` when it can never match.
///
/// `default_namespace` is the binding's namespace for RoleBindings and `""` otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKey {
    /// Matches the user with exactly this name.
    User(String),
    /// Matches users in this group.
    Group(String),
}

impl SubjectKey {
    /// How `subject` matches users, per spec §9.3.
    pub fn of(subject: &Subject, default_namespace: &str) -> Option<Self> {
        match subject.kind.as_str() {
            "User" => Some(Self::User(subject.name.clone())),
            "Group" => Some(Self::Group(subject.name.clone())),
            "ServiceAccount" => {
                let ns = if subject.namespace.is_empty() {
                    default_namespace
                } else {
                    &subject.namespace
                };
                if ns.is_empty() {
                    return None;
                }
                let prefix = match subject.api_group.as_str() {
                    KUBESPHERE_SA_GROUP => KUBESPHERE_SA_PREFIX,
                    RBAC_GROUP => KUBERNETES_SA_PREFIX,
                    // An empty apiGroup does not match, unlike Kubernetes (parity with KubeSphere).
                    _ => return None,
                };
                Some(Self::User(format!("{prefix}{ns}:{}", subject.name)))
            }
            _ => None,
        }
    }
}

/// Whether `subject` applies to the user, evaluated literally (the reference form of [`SubjectKey::of`]).
pub fn subject_applies(subject: &Subject, user: &str, groups: &[String], default_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user,
        "Group" => groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() {
                default_namespace
            } else {
                &subject.namespace
            };
            if ns.is_empty() {
                return false;
            }
            let prefix = match subject.api_group.as_str() {
                KUBESPHERE_SA_GROUP => KUBESPHERE_SA_PREFIX,
                RBAC_GROUP => KUBERNETES_SA_PREFIX,
                _ => return false,
            };
            user.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(ns))
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| rest == subject.name)
        }
        _ => false,
    }
}

/// Describes a subject the way KubeSphere's reasons do: `ServiceAccount "name/ns"`, `User "name"`.
pub fn describe_subject(s: &Subject, binding_namespace: &str) -> String {
    let mut o = String::new();
    push_subject(&mut o, s, binding_namespace);
    o
}

/// Appends [`describe_subject`]'s text to `o`.
pub fn push_subject(o: &mut String, s: &Subject, binding_namespace: &str) {
    use crate::status::push_go_quoted;
    o.push_str(&s.kind);
    o.push(' ');
    if s.kind == "ServiceAccount" {
        let ns = if s.namespace.is_empty() {
            binding_namespace
        } else {
            &s.namespace
        };
        push_go_quoted(o, &[&s.name, "/", ns]);
    } else {
        push_go_quoted(o, &[&s.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Scope;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn res<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            api_group: group,
            resource,
            subresource: sub,
            name,
            resource_request: true,
            scope: Scope::Cluster,
            ..Default::default()
        }
    }

    #[test]
    fn resource_rules() {
        let r = rule(&["get"], &[""], &["pods"]);
        assert!(rule_allows(&r, &res("get", "", "pods", "", "")));
        assert!(!rule_allows(&r, &res("list", "", "pods", "", "")));
        assert!(!rule_allows(&r, &res("get", "apps", "pods", "", "")));
        assert!(
            !rule_allows(&r, &res("get", "", "pods", "log", "")),
            "pods does not cover pods/log"
        );
        assert!(
            !rule_allows(&r, &res("get", "", "Pods", "", "")),
            "case-sensitive"
        );
        let r = rule(&["get"], &["*"], &["pods/log"]);
        assert!(rule_allows(&r, &res("get", "x", "pods", "log", "")));
        assert!(!rule_allows(&r, &res("get", "x", "pods", "", "")));
        assert!(!rule_allows(&r, &res("get", "x", "pods", "logs", "")));
        assert!(!rule_allows(&r, &res("get", "x", "podsx", "log", "")));
        let r = rule(&["*"], &["*"], &["*/status"]);
        assert!(rule_allows(
            &r,
            &res("update", "apps", "deployments", "status", "")
        ));
        assert!(!rule_allows(&r, &res("update", "apps", "deployments", "", "")));
        assert!(!rule_allows(
            &r,
            &res("update", "apps", "deployments", "statuses", "")
        ));
        let mut r = rule(&["get"], &[""], &["secrets"]);
        r.resource_names = vec!["a".into()];
        assert!(rule_allows(&r, &res("get", "", "secrets", "", "a")));
        assert!(!rule_allows(&r, &res("get", "", "secrets", "", "b")));
        assert!(!rule_allows(&r, &res("list", "", "secrets", "", "")));
    }

    #[test]
    fn non_resource_rules() {
        let r = PolicyRule {
            verbs: vec!["GET".into()],
            non_resource_urls: vec!["/healthz".into(), "/static/images/*".into()],
            ..Default::default()
        };
        let a = |verb, path| Attributes {
            verb,
            path,
            ..Default::default()
        };
        assert!(rule_allows(&r, &a("GET", "/healthz")));
        assert!(
            !rule_allows(&r, &a("get", "/healthz")),
            "non-resource verbs are uppercase methods"
        );
        assert!(rule_allows(&r, &a("GET", "/static/images/x.png")));
        assert!(rule_allows(&r, &a("GET", "/static/images/")));
        assert!(!rule_allows(&r, &a("GET", "/static/image")));
        assert!(!rule_allows(&r, &a("GET", "/healthz/x")));
        let r = rule(&["*"], &["*"], &["*"]);
        assert!(
            !rule_allows(&r, &a("GET", "/healthz")),
            "resource rules never allow non-resource requests"
        );
    }

    #[test]
    fn subjects() {
        let sa = |group: &str, ns: &str| Subject {
            kind: "ServiceAccount".into(),
            api_group: group.into(),
            name: "sample".into(),
            namespace: ns.into(),
        };
        let ks = "kubesphere:serviceaccount:default:sample";
        assert!(subject_applies(&sa("kubesphere.io", "default"), ks, &[], ""));
        assert!(!subject_applies(&sa("kubesphere.io", "other"), ks, &[], ""));
        assert!(
            !subject_applies(&sa("", "default"), ks, &[], ""),
            "empty apiGroup never matches"
        );
        assert!(
            !subject_applies(&sa("kubesphere.io", ""), ks, &[], ""),
            "no namespace, no match"
        );
        assert!(
            subject_applies(&sa("kubesphere.io", ""), ks, &[], "default"),
            "RoleBinding default namespace"
        );
        assert!(subject_applies(
            &sa("rbac.authorization.k8s.io", "default"),
            "system:serviceaccount:default:sample",
            &[],
            ""
        ));
        assert!(!subject_applies(
            &sa("rbac.authorization.k8s.io", "default"),
            ks,
            &[],
            ""
        ));
        for (s, user) in [
            (sa("kubesphere.io", "default"), ks),
            (sa("rbac.authorization.k8s.io", "default"), "x"),
        ] {
            let by_key = SubjectKey::of(&s, "") == Some(SubjectKey::User(user.into()));
            assert_eq!(by_key, subject_applies(&s, user, &[], ""));
        }
        let g = Subject {
            kind: "Group".into(),
            name: "g1".into(),
            ..Default::default()
        };
        assert!(subject_applies(&g, "u", &["g0".into(), "g1".into()], ""));
        assert!(!subject_applies(&g, "g1", &[], ""));
        let odd = Subject {
            kind: "Robot".into(),
            name: "u".into(),
            ..Default::default()
        };
        assert!(!subject_applies(&odd, "u", &[], ""));
        assert_eq!(SubjectKey::of(&odd, ""), None);
    }

    #[test]
    fn subject_descriptions() {
        let s = Subject {
            kind: "ServiceAccount".into(),
            api_group: "kubesphere.io".into(),
            name: "sample".into(),
            namespace: String::new(),
        };
        assert_eq!(
            describe_subject(&s, "default"),
            r#"ServiceAccount "sample/default""#
        );
        let u = Subject {
            kind: "User".into(),
            name: "admin".into(),
            ..Default::default()
        };
        assert_eq!(describe_subject(&u, ""), r#"User "admin""#);
    }
}
