//! The indexed snapshot must agree with the naive, literal evaluator on every decision, for random policies
//! and random requests, before and after random incremental updates.

use ksiam_rbac::{
    PolicyIndex, Snapshot,
    model::{Binding, Namespace, Policy, Role},
    naive,
};
use proptest::prelude::*;

mod common;

use common::*;

#[derive(Clone, Debug)]
enum Update {
    UpsertRole(Role),
    RemoveRole(usize),
    UpsertBinding(Binding),
    RemoveBinding(usize),
    UpsertNamespace(Namespace),
    RemoveNamespace(usize),
}

fn update() -> impl Strategy<Value = Update> {
    prop_oneof![
        role().prop_map(Update::UpsertRole),
        any::<usize>().prop_map(Update::RemoveRole),
        binding().prop_map(Update::UpsertBinding),
        any::<usize>().prop_map(Update::RemoveBinding),
        namespace().prop_map(Update::UpsertNamespace),
        any::<usize>().prop_map(Update::RemoveNamespace),
    ]
}

fn apply(policy: &mut Policy, snap: &mut PolicyIndex, u: Update) {
    match u {
        Update::UpsertRole(r) => {
            policy.roles.retain(|x| x.key() != r.key());
            snap.upsert_role(&r);
            policy.roles.push(r);
        }
        Update::RemoveRole(i) if !policy.roles.is_empty() => {
            let r = policy.roles.remove(i % policy.roles.len());
            snap.remove_role(&r.key());
        }
        Update::UpsertBinding(b) => {
            policy.bindings.retain(|x| x.key() != b.key());
            snap.upsert_binding(&b);
            policy.bindings.push(b);
        }
        Update::RemoveBinding(i) if !policy.bindings.is_empty() => {
            let b = policy.bindings.remove(i % policy.bindings.len());
            snap.remove_binding(&b.key());
        }
        Update::UpsertNamespace(n) => {
            policy.namespaces.retain(|x| x.name != n.name);
            snap.upsert_namespace(&n);
            policy.namespaces.push(n);
        }
        Update::RemoveNamespace(i) if !policy.namespaces.is_empty() => {
            let n = policy.namespaces.remove(i % policy.namespaces.len());
            snap.remove_namespace(&n.name);
        }
        _ => {}
    }
}

fn agree(policy: &Policy, snap: &Snapshot, requests: &[Req]) -> Result<(), TestCaseError> {
    for r in requests {
        let a = r.attrs();
        let fast = snap.decide(&a);
        let slow = naive::decide(policy, &a);
        prop_assert_eq!(
            fast.allowed(),
            slow.allowed,
            "request {:?}\npolicy {:#?}\nreason {}",
            r,
            policy,
            fast.reason(&a)
        );
        if !slow.allowed {
            // Denials report the same role-reference errors.
            prop_assert_eq!(fast.reason(&a).is_empty(), slow.errors.is_empty(), "{:?}", r);
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("KSIAM_ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_agrees_with_naive_evaluator(
        mut policy in policy(),
        requests in proptest::collection::vec(request(), 1..24),
        updates in proptest::collection::vec(update(), 0..8),
    ) {
        let mut index = PolicyIndex::build(&policy);
        agree(&policy, index.snapshot(), &requests)?;
        for u in updates {
            apply(&mut policy, &mut index, u);
            agree(&policy, index.snapshot(), &requests)?;
        }
        let snap = index.snapshot();
        // After all updates, an incrementally maintained snapshot equals a fresh build.
        let fresh = Snapshot::build(&policy);
        for r in &requests {
            prop_assert_eq!(fresh.decide(&r.attrs()).allowed(), snap.decide(&r.attrs()).allowed());
        }
        prop_assert_eq!(fresh.counts(), snap.counts());
    }
}
