//! Random policies and requests shared by the property tests (`oracle.rs`, `review.rs`).

#![allow(dead_code)]

use ksiam_rbac::{
    Attributes, Scope,
    model::{Binding, BindingKind, Namespace, Policy, PolicyRule, Role, RoleKind, RoleRef, Subject},
};
use proptest::prelude::*;

pub const USERS: [&str; 6] = [
    "u0",
    "u1",
    "kubesphere:serviceaccount:ns0:sa0",
    "kubesphere:serviceaccount:ns1:sa0",
    "system:serviceaccount:ns0:sa0",
    "g0",
];
pub const GROUPS: [&str; 3] = ["g0", "g1", "system:authenticated"];
pub const NAMESPACES: [&str; 3] = ["ns0", "ns1", "ns2"];
pub const WORKSPACES: [&str; 2] = ["w0", "w1"];

pub fn one_of(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(items).prop_map(str::to_owned)
}

pub fn some_of(items: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(one_of(items), 0..=max)
}

pub fn rule() -> impl Strategy<Value = PolicyRule> {
    (
        some_of(&["get", "list", "create", "*", "GET"], 2),
        some_of(&["", "apps", "*"], 2),
        some_of(&["pods", "pods/log", "*/log", "*", "deployments"], 2),
        prop_oneof![3 => Just(vec![]), 1 => some_of(&["n0", "n1"], 1)],
        prop_oneof![3 => Just(vec![]), 1 => some_of(&["/healthz", "/api/*", "*", "/api"], 2)],
    )
        .prop_map(
            |(verbs, api_groups, resources, resource_names, non_resource_urls)| PolicyRule {
                verbs,
                api_groups,
                resources,
                resource_names,
                non_resource_urls,
            },
        )
}

pub const REGO: [&str; 3] = [
    "package authz\ndefault allow = false\nallow {\n  input.ResourceScope == \"Workspace\"\n}\n",
    "package authz\nallow if input.Verb == \"get\"\n",
    "package authz\nallow { not valid",
];

pub fn role() -> impl Strategy<Value = Role> {
    (
        proptest::sample::select(&[RoleKind::GlobalRole, RoleKind::WorkspaceRole, RoleKind::ClusterRole, RoleKind::Role][..]),
        one_of(&NAMESPACES),
        one_of(&["r0", "r1"]),
        proptest::collection::vec(rule(), 0..3),
        prop_oneof![20 => Just(None), 1 => proptest::sample::select(&REGO[..]).prop_map(|s| Some(s.to_owned()))],
    )
        .prop_map(|(kind, ns, name, rules, rego)| Role {
            kind,
            namespace: if kind == RoleKind::Role { ns } else { String::new() },
            name,
            rules,
            rego,
        })
}

pub fn subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        one_of(&["u0", "u1", "g0"]).prop_map(|name| Subject {
            kind: "User".into(),
            name,
            ..Default::default()
        }),
        one_of(&GROUPS).prop_map(|name| Subject {
            kind: "Group".into(),
            name,
            ..Default::default()
        }),
        (
            one_of(&["kubesphere.io", "rbac.authorization.k8s.io", ""]),
            one_of(&["ns0", "ns1", ""])
        )
            .prop_map(|(api_group, namespace)| Subject {
                kind: "ServiceAccount".into(),
                api_group,
                name: "sa0".into(),
                namespace
            }),
        Just(Subject {
            kind: "Robot".into(),
            name: "u0".into(),
            ..Default::default()
        }),
    ]
}

pub fn binding() -> impl Strategy<Value = Binding> {
    (
        proptest::sample::select(
            &[
                BindingKind::GlobalRoleBinding,
                BindingKind::WorkspaceRoleBinding,
                BindingKind::RoleBinding,
                BindingKind::ClusterRoleBinding,
            ][..],
        ),
        one_of(&NAMESPACES),
        one_of(&["b0", "b1", "b2"]),
        prop_oneof![3 => one_of(&WORKSPACES).prop_map(Some), 1 => Just(None)],
        prop_oneof![
            20 => one_of(&["GlobalRole", "WorkspaceRole", "ClusterRole", "Role"]),
            1 => Just("Bogus".to_owned()),
        ],
        one_of(&["r0", "r1", "missing"]),
        proptest::collection::vec(subject(), 0..3),
    )
        .prop_map(
            |(kind, ns, name, workspace, role_kind, role_name, subjects)| Binding {
                kind,
                namespace: if kind == BindingKind::RoleBinding {
                    ns
                } else {
                    String::new()
                },
                name,
                workspace,
                role_ref: RoleRef {
                    api_group: "iam.kubesphere.io".into(),
                    kind: role_kind,
                    name: role_name,
                },
                subjects,
            },
        )
}

pub fn namespace() -> impl Strategy<Value = Namespace> {
    (
        one_of(&NAMESPACES),
        prop_oneof![2 => one_of(&WORKSPACES).prop_map(Some), 1 => Just(None)],
    )
        .prop_map(|(name, workspace)| Namespace { name, workspace })
}

/// Keys are unique in a real cluster: keep the last object of each key.
pub fn normalize(mut p: Policy) -> Policy {
    let mut roles: Vec<Role> = Vec::new();
    for r in p.roles.drain(..).rev() {
        if !roles.iter().any(|x| x.key() == r.key()) {
            roles.push(r);
        }
    }
    let mut bindings: Vec<Binding> = Vec::new();
    for b in p.bindings.drain(..).rev() {
        if !bindings.iter().any(|x| x.key() == b.key()) {
            bindings.push(b);
        }
    }
    let mut namespaces: Vec<Namespace> = Vec::new();
    for n in p.namespaces.drain(..).rev() {
        if !namespaces.iter().any(|x| x.name == n.name) {
            namespaces.push(n);
        }
    }
    Policy {
        roles,
        bindings,
        namespaces,
    }
}

pub fn policy() -> impl Strategy<Value = Policy> {
    (
        proptest::collection::vec(role(), 0..8),
        proptest::collection::vec(binding(), 0..10),
        proptest::collection::vec(namespace(), 0..4),
    )
        .prop_map(|(roles, bindings, namespaces)| {
            normalize(Policy {
                roles,
                bindings,
                namespaces,
            })
        })
}

#[derive(Clone, Debug)]
pub struct Req {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub namespace: String,
    pub workspace: String,
    pub resource_request: bool,
    pub path: String,
    pub scope: Scope,
}

impl Req {
    pub fn attrs(&self) -> Attributes<'_> {
        Attributes {
            user: &self.user,
            groups: &self.groups,
            verb: &self.verb,
            api_group: &self.api_group,
            resource: &self.resource,
            subresource: &self.subresource,
            name: &self.name,
            namespace: &self.namespace,
            workspace: &self.workspace,
            resource_request: self.resource_request,
            path: &self.path,
            scope: self.scope,
            ..Default::default()
        }
    }
}

pub fn request() -> impl Strategy<Value = Req> {
    (
        (
            one_of(&USERS),
            some_of(&GROUPS, 2),
            one_of(&["get", "list", "create", "delete", "GET"]),
        ),
        (
            one_of(&["", "apps", "batch"]),
            one_of(&["pods", "deployments", "secrets"]),
            one_of(&["", "log", "status"]),
        ),
        (
            one_of(&["", "n0", "n1"]),
            one_of(&["ns0", "ns1", "ns2", "nsX"]),
            one_of(&["w0", "w1", "wX"]),
        ),
        (
            any::<bool>(),
            one_of(&["/healthz", "/api/v1", "/api", "/version"]),
        ),
        proptest::sample::select(
            &[
                Scope::Global,
                Scope::Cluster,
                Scope::Workspace,
                Scope::Namespace,
                Scope::None,
            ][..],
        ),
    )
        .prop_map(
            |(
                (user, groups, verb),
                (api_group, resource, subresource),
                (name, ns, ws),
                (rr, path),
                scope,
            )| Req {
                user,
                groups,
                verb,
                api_group,
                resource,
                subresource,
                name,
                namespace: if scope == Scope::Namespace {
                    ns
                } else {
                    String::new()
                },
                workspace: if scope == Scope::Workspace {
                    ws
                } else {
                    String::new()
                },
                resource_request: rr,
                path,
                scope,
            },
        )
}
