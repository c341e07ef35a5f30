//! "A decision's cost does not grow with unrelated bindings" (ARCHITECTURE.md): the bindings a decision
//! can meet are the lists of the user's and groups' index entries for the phases it walks
//! (`Snapshot::subject_bindings` returns exactly those lists). For the generator's target user, whose own
//! bindings are fixed, that number is the same with 100 and with 100,000 bindings in the policy.

use ksiam_rbac::{
    Attributes, Scope, Snapshot,
    generate::{TARGET_BINDINGS, TARGET_GROUPS, TARGET_USER, generate},
    model::BindingKind,
};

/// Bindings a decision in namespace `ns` (of workspace `ws`) can meet: global, workspace, namespace and
/// cluster phases.
fn met(snap: &Snapshot, groups: &[String], ns: &str, ws: &str) -> usize {
    [
        (BindingKind::GlobalRoleBinding, ""),
        (BindingKind::WorkspaceRoleBinding, ws),
        (BindingKind::RoleBinding, ns),
        (BindingKind::ClusterRoleBinding, ""),
    ]
    .into_iter()
    .map(|(kind, scope)| snap.subject_bindings(TARGET_USER, groups, kind, scope).len())
    .sum()
}

#[test]
fn bindings_met_per_decision_do_not_grow_with_unrelated_bindings() {
    let groups: Vec<String> = TARGET_GROUPS.iter().map(|s| s.to_string()).collect();
    let mut seen = Vec::new();
    for n in [100, 100_000] {
        let g = generate(n, 7);
        assert!(
            g.policy.bindings.len() >= n,
            "{} bindings",
            g.policy.bindings.len()
        );
        let snap = Snapshot::build(&g.policy);
        let ws = snap
            .namespace_workspace(&g.namespace)
            .expect("the target namespace is in a workspace")
            .to_owned();
        // The deny request walks every binding the target has.
        let deny = g.deny();
        let a = Attributes {
            user: TARGET_USER,
            groups: &groups,
            verb: deny.verb,
            api_group: deny.api_group,
            resource: deny.resource,
            namespace: &deny.namespace,
            resource_request: true,
            scope: Scope::Namespace,
            ..Default::default()
        };
        assert!(!snap.decide(&a).allowed());
        seen.push((n, met(&snap, &groups, &g.namespace, &ws)));
    }
    assert_eq!(
        seen,
        [(100, TARGET_BINDINGS), (100_000, TARGET_BINDINGS)],
        "bindings met per decision at N = 100 and N = 100,000"
    );
}
