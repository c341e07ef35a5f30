//! `review::who_can` and `review::rules_for` agree with `Snapshot::decide` on random policies and requests.
//! The generators are those of `oracle.rs`.

use ksiam_rbac::{
    Attributes, Snapshot,
    model::{Policy, Subject},
    review::{self, subject_identity},
};
use proptest::prelude::*;

mod common;

use common::*;

/// Every distinct subject named by a binding, as evaluated (a ServiceAccount's namespace defaulted from
/// its RoleBinding).
fn named_subjects(p: &Policy) -> Vec<Subject> {
    let mut out: Vec<Subject> = Vec::new();
    for b in &p.bindings {
        for s in &b.subjects {
            let mut s = s.clone();
            if s.kind == "ServiceAccount" && s.namespace.is_empty() {
                s.namespace = b.namespace.clone();
            }
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Sound: every subject who_can returns is allowed by decide, and each listed binding names it.
    /// Complete: every subject named in any binding that decide allows is returned.
    #[test]
    fn who_can_agrees_with_decide(p in policy(), req in request()) {
        let snap = Snapshot::build(&p);
        let a = req.attrs();
        let (grants, _errors) = review::who_can(&snap, &a);
        for g in &grants {
            let (user, groups) = subject_identity(&g.subject).expect("returned subjects can match");
            let d = snap.decide(&Attributes { user: &user, groups: &groups, ..a });
            prop_assert!(d.allowed(), "{:?} returned but denied", g.subject);
            prop_assert!(!g.bindings.is_empty(), "{:?} returned without bindings", g.subject);
        }
        for s in named_subjects(&p) {
            let Some((user, groups)) = subject_identity(&s) else { continue };
            let allowed = snap.decide(&Attributes { user: &user, groups: &groups, ..a }).allowed();
            let listed = grants.iter().any(|g| g.subject == s);
            prop_assert_eq!(allowed, listed, "subject {:?}", s);
        }
    }

    /// When decide allows, its deciding binding is among the bindings rules_for lists for that scope;
    /// when rules_for lists a rule that matches (and no rego is involved), decide allows.
    #[test]
    fn rules_for_agrees_with_decide(p in policy(), req in request()) {
        let snap = Snapshot::build(&p);
        let a = req.attrs();
        let (rules, errors) = review::rules_for(&snap, a.user, a.groups, a.scope, a.namespace, a.workspace);
        let d = snap.decide(&a);
        let by_rule = rules.iter().any(|r| ksiam_rbac::matching::rule_allows(&r.rule, &a));
        if by_rule {
            prop_assert!(d.allowed(), "a listed rule allows, decide denies: {:?}", d);
        }
        if let ksiam_rbac::Decision::Allow(g) = &d
            && let ksiam_rbac::Granted::Rule(_) = g.granted
        {
            prop_assert!(rules.iter().any(|r| std::sync::Arc::ptr_eq(&r.binding, &g.binding)),
                "deciding binding {} not listed", g.binding.name);
            prop_assert!(by_rule);
        }
        if d.allowed() && !by_rule {
            prop_assert!(!errors.is_empty(), "allowed by rego only: rules_for must say its list is incomplete");
        }
    }
}
