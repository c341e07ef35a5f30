//! Spec §9.4: the four bindings of the seed walkthrough, and what each lets `default/sample` do.

use ksiam_rbac::{
    PolicyIndex, PolicyStore,
    model::{Binding, BindingKind, Namespace, Policy, PolicyRule, Role, RoleKind, RoleRef, Subject},
    resolve,
};

const SA: &str = "kubesphere:serviceaccount:default:sample";

fn all() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..Default::default()
        },
        PolicyRule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Default::default()
        },
    ]
}

fn base() -> Policy {
    let role = |kind, ns: &str, name: &str| Role {
        kind,
        namespace: ns.into(),
        name: name.into(),
        rules: all(),
        rego: None,
    };
    Policy {
        roles: vec![
            role(RoleKind::GlobalRole, "", "platform-admin"),
            role(RoleKind::ClusterRole, "", "cluster-admin"),
            role(RoleKind::Role, "default", "admin"),
            role(RoleKind::WorkspaceRole, "", "system-workspace-admin"),
        ],
        bindings: vec![],
        namespaces: vec![
            Namespace {
                name: "default".into(),
                workspace: Some("system-workspace".into()),
            },
            Namespace {
                name: "kube-system".into(),
                workspace: Some("system-workspace".into()),
            },
            Namespace {
                name: "other".into(),
                workspace: None,
            },
        ],
    }
}

fn seed_binding(kind: BindingKind, role_kind: &str, role: &str) -> Binding {
    Binding {
        kind,
        namespace: if kind == BindingKind::RoleBinding {
            "default".into()
        } else {
            String::new()
        },
        name: "sample-binding".into(),
        workspace: (kind == BindingKind::WorkspaceRoleBinding).then(|| "system-workspace".into()),
        role_ref: RoleRef {
            api_group: "iam.kubesphere.io".into(),
            kind: role_kind.into(),
            name: role.into(),
        },
        subjects: vec![Subject {
            kind: "ServiceAccount".into(),
            api_group: "kubesphere.io".into(),
            name: "sample".into(),
            namespace: "default".into(),
        }],
    }
}

/// (method, path, query) → allowed, for each request of the table.
fn outcomes(policy: &Policy) -> Vec<(String, bool, String)> {
    let store = PolicyStore::new(PolicyIndex::build(policy));
    store.set_ready(true);
    REQUESTS
        .iter()
        .map(|(m, p)| {
            let (path, query) = p.split_once('?').unwrap_or((p, ""));
            let info = resolve(m, path, query).unwrap();
            let a = info.attributes(SA, &[]);
            let d = store.decide(&a).0;
            (format!("{m} {p}"), d.allowed(), d.reason(&a))
        })
        .collect()
}

const REQUESTS: [(&str, &str); 8] = [
    ("GET", "/kapis/tenant.kubesphere.io/v1beta1/clusters"),
    (
        "GET",
        "/kapis/tenant.kubesphere.io/v1beta1/workspaces/system-workspace",
    ),
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/namespaces/default/pods"),
    ("DELETE", "/apis/apps/v1/namespaces/default/deployments/d"),
    ("GET", "/api/v1/namespaces/kube-system/pods"),
    ("GET", "/api/v1/namespaces/other/pods"),
    ("GET", "/healthz/x"),
];

fn expect(policy: &Policy, expected: [bool; 8]) {
    let got = outcomes(policy);
    for ((req, allowed, reason), want) in got.iter().zip(expected) {
        assert_eq!(*allowed, want, "{req}: {reason}");
    }
}

#[test]
fn fresh_service_account_can_do_nothing() {
    expect(&base(), [false; 8]);
}

#[test]
fn global_role_binding_to_platform_admin_allows_everything() {
    let mut p = base();
    p.bindings.push(seed_binding(
        BindingKind::GlobalRoleBinding,
        "GlobalRole",
        "platform-admin",
    ));
    expect(&p, [true; 8]);
}

#[test]
fn cluster_role_binding_to_cluster_admin_does_not_reach_global_scope() {
    let mut p = base();
    p.bindings.push(seed_binding(
        BindingKind::ClusterRoleBinding,
        "ClusterRole",
        "cluster-admin",
    ));
    expect(&p, [false, true, true, true, true, true, true, true]);
}

#[test]
fn role_binding_to_admin_allows_its_namespace_only() {
    let mut p = base();
    p.bindings
        .push(seed_binding(BindingKind::RoleBinding, "Role", "admin"));
    expect(&p, [false, false, false, true, true, false, false, false]);
    // A RoleBinding is named with its namespace, as KubeSphere (Kubernetes) describes it.
    let (_, allowed, reason) = &outcomes(&p)[3];
    assert!(allowed);
    assert_eq!(
        reason,
        r#"RBAC: allowed by RoleBinding "sample-binding/default" of Role "admin" to ServiceAccount "sample/default""#
    );
}

#[test]
fn workspace_role_binding_allows_the_workspace_and_its_namespaces() {
    let mut p = base();
    p.bindings.push(seed_binding(
        BindingKind::WorkspaceRoleBinding,
        "WorkspaceRole",
        "system-workspace-admin",
    ));
    expect(&p, [false, true, false, true, true, true, false, false]);
    let (_, allowed, reason) = &outcomes(&p)[3];
    assert!(allowed);
    // Upstream says "GlobalRoleBinding" here; we name the kind that decided.
    assert_eq!(
        reason,
        r#"RBAC: allowed by WorkspaceRoleBinding "sample-binding" of WorkspaceRole "system-workspace-admin" to ServiceAccount "sample/default""#
    );
}

#[test]
fn workspace_role_binding_without_its_label_never_applies() {
    let mut p = base();
    let mut b = seed_binding(
        BindingKind::WorkspaceRoleBinding,
        "WorkspaceRole",
        "system-workspace-admin",
    );
    b.workspace = None;
    p.bindings.push(b);
    expect(&p, [false; 8]);
}

#[test]
fn empty_api_group_service_account_subject_never_matches() {
    let mut p = base();
    let mut b = seed_binding(BindingKind::GlobalRoleBinding, "GlobalRole", "platform-admin");
    b.subjects[0].api_group = String::new();
    p.bindings.push(b);
    expect(&p, [false; 8]);
}

#[test]
fn missing_role_grants_nothing_and_bad_kind_is_reported() {
    let mut p = base();
    p.bindings.push(seed_binding(
        BindingKind::ClusterRoleBinding,
        "ClusterRole",
        "does-not-exist",
    ));
    expect(&p, [false; 8]);
    let mut p = base();
    p.bindings
        .push(seed_binding(BindingKind::ClusterRoleBinding, "Bogus", "x"));
    let (_, allowed, reason) = &outcomes(&p)[2];
    assert!(!allowed);
    assert_eq!(reason, r#"RBAC: unsupported role reference kind: "Bogus""#);
}

#[test]
fn explain_names_the_rule_and_reports_broken_rego() {
    let mut p = base();
    p.bindings
        .push(seed_binding(BindingKind::RoleBinding, "Role", "admin"));
    p.roles.push(Role {
        kind: RoleKind::ClusterRole,
        namespace: String::new(),
        name: "broken".into(),
        rules: vec![],
        rego: Some("package authz\nallow { nope".into()),
    });
    p.bindings.push(Binding {
        name: "to-broken".into(),
        ..seed_binding(BindingKind::ClusterRoleBinding, "ClusterRole", "broken")
    });
    let snap = ksiam_rbac::Snapshot::build(&p);
    let info = resolve("GET", "/api/v1/namespaces/default/pods", "").unwrap();
    let text = snap.explain(&info.attributes(SA, &[]));
    assert!(
        text.starts_with(
            "allowed: RBAC: allowed by RoleBinding \"sample-binding/default\" of Role \"admin\""
        ),
        "{text}"
    );
    assert!(text.contains("rule #0"), "{text}");
    let info = resolve("GET", "/api/v1/nodes", "").unwrap();
    let text = snap.explain(&info.attributes(SA, &[]));
    assert!(text.starts_with("denied:"), "{text}");
    assert!(
        text.contains(r#"ClusterRole "broken": rego-override does not compile"#),
        "{text}"
    );
}
