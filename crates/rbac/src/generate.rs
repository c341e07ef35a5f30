//! Deterministic policy generator for benchmarks and peer comparisons.
//!
//! `generate(n, seed)` builds a policy with `n` bindings spread over the four scopes (GlobalRoleBindings,
//! WorkspaceRoleBindings, RoleBindings, ClusterRoleBindings), roles of all four kinds (about 10% with
//! wildcard rules), namespaces in workspaces, and many distractor subjects (users, groups, ServiceAccounts).
//! One target user, `alice`, in four groups, holds a fixed set of bindings whatever `n` is, so the three
//! request sets measure how a decision scales with *unrelated* bindings:
//!
//! - `allow_first`: allowed by the first binding evaluated (alice's GlobalRoleBinding);
//! - `allow_last`: allowed only by the last binding evaluated (a ClusterRoleBinding of one of her groups);
//! - `deny`: allowed by nothing, after walking every binding alice has.

use crate::model::{Binding, BindingKind, Namespace, Policy, PolicyRule, Role, RoleKind, RoleRef, Subject};

/// The target user.
pub const TARGET_USER: &str = "alice";
/// The target user's groups.
pub const TARGET_GROUPS: [&str; 4] = ["team-a", "team-b", "oncall", "readers"];
/// Number of bindings the target user has, whatever the size.
pub const TARGET_BINDINGS: usize = 12;

/// A generated policy and the target subject.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The policy.
    pub policy: Policy,
    /// The namespace the requests use.
    pub namespace: String,
}

/// A request in the generated request sets, as owned attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The verb.
    pub verb: &'static str,
    /// The API group.
    pub api_group: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// The namespace.
    pub namespace: String,
}

impl Generated {
    /// The request allowed by the first binding evaluated.
    pub fn allow_first(&self) -> Request {
        Request {
            verb: "get",
            api_group: "apps",
            resource: "widgets",
            namespace: self.namespace.clone(),
        }
    }

    /// The request allowed only by the last binding evaluated.
    pub fn allow_last(&self) -> Request {
        Request {
            verb: "delete",
            api_group: "apps",
            resource: "gadgets",
            namespace: self.namespace.clone(),
        }
    }

    /// A request nothing allows.
    pub fn deny(&self) -> Request {
        Request {
            verb: "escalate",
            api_group: "apps",
            resource: "gizmos",
            namespace: self.namespace.clone(),
        }
    }
}

/// A small deterministic PRNG (SplitMix64), so every run and every peer sees the same policy.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Picks an element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const VERBS: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];
const GROUPS: [&str; 5] = ["", "apps", "batch", "iam.kubesphere.io", "tenant.kubesphere.io"];
const RESOURCES: [&str; 8] = [
    "pods",
    "deployments",
    "jobs",
    "users",
    "workspaces",
    "secrets",
    "configmaps",
    "services",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        api_groups: strings(groups),
        resources: strings(resources),
        ..Default::default()
    }
}

fn random_rule(rng: &mut Rng) -> PolicyRule {
    if rng.below(10) == 0 {
        // About one role in ten carries a wildcard rule; never over the generator's request resources.
        return rule(&["*"], &["*"], &[*rng.pick(&RESOURCES)]);
    }
    let verbs: Vec<&str> = (0..1 + rng.below(3)).map(|_| *rng.pick(&VERBS)).collect();
    rule(
        &verbs,
        &[*rng.pick(&GROUPS)],
        &[*rng.pick(&RESOURCES), *rng.pick(&RESOURCES)],
    )
}

fn role(kind: RoleKind, namespace: &str, name: String, rules: Vec<PolicyRule>) -> Role {
    Role {
        kind,
        namespace: namespace.to_owned(),
        name,
        rules,
        rego: None,
    }
}

fn subject(kind: &str, name: String, api_group: &str, namespace: &str) -> Subject {
    Subject {
        kind: kind.into(),
        api_group: api_group.into(),
        name,
        namespace: namespace.into(),
    }
}

fn binding(
    kind: BindingKind,
    namespace: &str,
    name: String,
    role_ref: (&str, String),
    subjects: Vec<Subject>,
) -> Binding {
    Binding {
        kind,
        namespace: namespace.to_owned(),
        name,
        workspace: None,
        role_ref: RoleRef {
            api_group: "iam.kubesphere.io".into(),
            kind: role_ref.0.into(),
            name: role_ref.1,
        },
        subjects,
    }
}

/// Generates a policy with `n` bindings in total.
pub fn generate(n: usize, seed: u64) -> Generated {
    let mut rng = Rng::new(seed);
    let namespaces = (n / 10).max(4);
    let workspaces = (n / 100).max(2);
    let roles_per_kind = (n / 40).max(4);
    let users = (n / 2).max(8);
    let groups = (n / 20).max(4);
    let mut p = Policy::default();

    for i in 0..namespaces {
        // One namespace in eight belongs to no workspace.
        let workspace = (i % 8 != 7).then(|| format!("ws-{}", i % workspaces));
        p.namespaces.push(Namespace {
            name: format!("ns-{i}"),
            workspace,
        });
    }
    for kind in [
        RoleKind::GlobalRole,
        RoleKind::WorkspaceRole,
        RoleKind::ClusterRole,
    ] {
        for i in 0..roles_per_kind {
            let rules = (0..1 + rng.below(4)).map(|_| random_rule(&mut rng)).collect();
            p.roles.push(role(
                kind,
                "",
                format!("{}-{i}", kind.as_str().to_lowercase()),
                rules,
            ));
        }
    }
    for i in 0..namespaces {
        let ns = format!("ns-{i}");
        for j in 0..2 {
            let rules = (0..1 + rng.below(4)).map(|_| random_rule(&mut rng)).collect();
            p.roles
                .push(role(RoleKind::Role, &ns, format!("role-{j}"), rules));
        }
    }

    // The target's bindings: fixed, whatever n is. Evaluation order: global, workspace, namespace, cluster.
    let target_ns = "ns-0".to_owned();
    let target_ws = "ws-0".to_owned();
    let user = || subject("User", TARGET_USER.into(), "iam.kubesphere.io", "");
    let group = |i: usize| subject("Group", TARGET_GROUPS[i].into(), "", "");
    p.roles.push(role(
        RoleKind::GlobalRole,
        "",
        "target-get-widgets".into(),
        vec![rule(&["get"], &["apps"], &["widgets"])],
    ));
    p.roles.push(role(
        RoleKind::ClusterRole,
        "",
        "target-delete-gadgets".into(),
        vec![rule(&["delete"], &["apps"], &["gadgets"])],
    ));
    p.roles.push(role(
        RoleKind::GlobalRole,
        "",
        "target-noop".into(),
        vec![rule(&["list"], &["apps"], &["things"])],
    ));
    p.roles.push(role(
        RoleKind::WorkspaceRole,
        "",
        "target-noop".into(),
        vec![rule(&["list"], &["apps"], &["things"])],
    ));
    p.roles.push(role(
        RoleKind::ClusterRole,
        "",
        "target-noop".into(),
        vec![rule(&["list"], &["apps"], &["things"])],
    ));
    p.roles.push(role(
        RoleKind::Role,
        &target_ns,
        "target-noop".into(),
        vec![rule(&["list"], &["apps"], &["things"])],
    ));
    let mut target = vec![
        binding(
            BindingKind::GlobalRoleBinding,
            "",
            "target-g0".into(),
            ("GlobalRole", "target-get-widgets".into()),
            vec![user()],
        ),
        binding(
            BindingKind::GlobalRoleBinding,
            "",
            "target-g1".into(),
            ("GlobalRole", "target-noop".into()),
            vec![group(0)],
        ),
        binding(
            BindingKind::GlobalRoleBinding,
            "",
            "target-g2".into(),
            ("GlobalRole", "target-noop".into()),
            vec![group(1)],
        ),
    ];
    for i in 0..3 {
        let mut b = binding(
            BindingKind::WorkspaceRoleBinding,
            "",
            format!("target-w{i}"),
            ("WorkspaceRole", "target-noop".into()),
            vec![if i == 0 { user() } else { group(i) }],
        );
        b.workspace = Some(target_ws.clone());
        target.push(b);
    }
    for i in 0..3 {
        target.push(binding(
            BindingKind::RoleBinding,
            &target_ns,
            format!("target-r{i}"),
            ("Role", "target-noop".into()),
            vec![if i == 0 { user() } else { group(i) }],
        ));
    }
    target.push(binding(
        BindingKind::ClusterRoleBinding,
        "",
        "target-c0".into(),
        ("ClusterRole", "target-noop".into()),
        vec![user()],
    ));
    target.push(binding(
        BindingKind::ClusterRoleBinding,
        "",
        "target-c1".into(),
        ("ClusterRole", "target-noop".into()),
        vec![group(2)],
    ));
    target.push(binding(
        BindingKind::ClusterRoleBinding,
        "",
        "target-c2".into(),
        ("ClusterRole", "target-delete-gadgets".into()),
        vec![group(3)],
    ));
    debug_assert_eq!(target.len(), TARGET_BINDINGS);

    // Distractors: everything else, bound to other users, groups and ServiceAccounts.
    let distractors = n.saturating_sub(TARGET_BINDINGS);
    for i in 0..distractors {
        let kind = match i % 4 {
            0 => BindingKind::GlobalRoleBinding,
            1 => BindingKind::WorkspaceRoleBinding,
            2 => BindingKind::RoleBinding,
            _ => BindingKind::ClusterRoleBinding,
        };
        let ns_i = rng.below(namespaces);
        let ns = format!("ns-{ns_i}");
        let subjects = (0..1 + rng.below(3))
            .map(|_| match rng.below(3) {
                0 => subject(
                    "User",
                    format!("user-{}", rng.below(users)),
                    "iam.kubesphere.io",
                    "",
                ),
                1 => subject("Group", format!("group-{}", rng.below(groups)), "", ""),
                _ => subject(
                    "ServiceAccount",
                    format!("sa-{}", rng.below(users)),
                    "kubesphere.io",
                    &ns,
                ),
            })
            .collect();
        let (role_kind, role_name) = match kind {
            BindingKind::GlobalRoleBinding => {
                ("GlobalRole", format!("globalrole-{}", rng.below(roles_per_kind)))
            }
            BindingKind::WorkspaceRoleBinding => (
                "WorkspaceRole",
                format!("workspacerole-{}", rng.below(roles_per_kind)),
            ),
            BindingKind::ClusterRoleBinding => (
                "ClusterRole",
                format!("clusterrole-{}", rng.below(roles_per_kind)),
            ),
            BindingKind::RoleBinding => ("Role", format!("role-{}", rng.below(2))),
        };
        let namespace = if kind == BindingKind::RoleBinding {
            ns.as_str()
        } else {
            ""
        };
        let mut b = binding(
            kind,
            namespace,
            format!("b-{i}"),
            (role_kind, role_name),
            subjects,
        );
        if kind == BindingKind::WorkspaceRoleBinding {
            b.workspace = Some(format!("ws-{}", rng.below(workspaces)));
        }
        p.bindings.push(b);
    }
    // The target's bindings sit in the middle of the list, so list order flatters no one.
    let at = p.bindings.len() / 2;
    p.bindings.splice(at..at, target);
    Generated {
        policy: p,
        namespace: target_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attributes, Scope, Snapshot, naive};

    fn attrs<'a>(r: &'a Request, groups: &'a [String]) -> Attributes<'a> {
        Attributes {
            user: TARGET_USER,
            groups,
            verb: r.verb,
            api_group: r.api_group,
            resource: r.resource,
            namespace: &r.namespace,
            resource_request: true,
            scope: Scope::Namespace,
            ..Default::default()
        }
    }

    #[test]
    fn request_sets_decide_as_named() {
        let groups: Vec<String> = TARGET_GROUPS.iter().map(|s| s.to_string()).collect();
        for n in [100, 1000] {
            let g = generate(n, 7);
            assert_eq!(g.policy.bindings.len(), n);
            let snap = Snapshot::build(&g.policy);
            for (req, allowed) in [(g.allow_first(), true), (g.allow_last(), true), (g.deny(), false)] {
                let a = attrs(&req, &groups);
                assert_eq!(snap.decide(&a).allowed(), allowed, "{req:?}");
                assert_eq!(naive::decide(&g.policy, &a).allowed, allowed, "{req:?}");
            }
            let d = snap.decide(&attrs(&g.allow_first(), &groups));
            assert!(d.reason(&attrs(&g.allow_first(), &groups)).contains("target-g0"));
            let d = snap.decide(&attrs(&g.allow_last(), &groups));
            assert!(d.reason(&attrs(&g.allow_last(), &groups)).contains("target-c2"));
        }
    }

    #[test]
    fn deterministic() {
        assert_eq!(generate(500, 3).policy, generate(500, 3).policy);
        assert_ne!(generate(500, 3).policy, generate(500, 4).policy);
    }
}
