//! The authorizer service on the real API server, through its gRPC API (`KSIAM_AUTHZ_GRPC`):
//!
//! - each of the seed's four §1.4 bindings, applied alone with the seed's own YAML, gives exactly the outcomes
//!   of spec §9.4 over a table of requests at every scope (including the Global-scope tenant-clusters list
//!   that cluster-admin must not allow);
//! - policy changes (binding created and deleted, role rules changed, namespace workspace label changed)
//!   reach decisions quickly; the delays are printed (p50/max) — figures, not assertions.

use std::time::{Duration, Instant};

use ksiam_e2e::{
    GrpcIdentity, SEED_CLUSTER_ROLE_BINDING, SEED_GLOBAL_ROLE_BINDING, SEED_ROLE_AND_BINDING,
    SEED_WORKSPACE_ROLE_BINDING, TestNamespace, e2e, grpc_channel, grpc_tls, kubectl, kubectl_with_stdin,
};
use ksiam_proto::authz::v1::{self as pb, authorizer_client::AuthorizerClient};

const SAMPLE: &str = "kubesphere:serviceaccount:default:sample";

/// One request of the table, and which bindings allow it (G = global, C = cluster, R = role in default,
/// W = workspace system-workspace).
struct Case {
    what: String,
    attributes: pb::Attributes,
    allowed_by: &'static str,
}

fn resource(verb: &str, group: &str, resource: &str, scope: pb::Scope, ns: &str, ws: &str) -> pb::Attributes {
    let path = match scope {
        pb::Scope::Namespace if group.is_empty() => format!("/api/v1/namespaces/{ns}/{resource}"),
        pb::Scope::Namespace => format!("/apis/{group}/v1/namespaces/{ns}/{resource}"),
        pb::Scope::Workspace => format!("/kapis/{group}/v1beta1/workspaces/{ws}/{resource}"),
        _ if group.is_empty() => format!("/api/v1/{resource}"),
        _ => format!("/apis/{group}/v1/{resource}"),
    };
    pb::Attributes {
        user: SAMPLE.to_owned(),
        verb: verb.to_owned(),
        api_group: group.to_owned(),
        api_version: "v1".to_owned(),
        resource: resource.to_owned(),
        namespace: ns.to_owned(),
        workspace: ws.to_owned(),
        resource_request: true,
        kubernetes_request: path.starts_with("/api"),
        path,
        scope: scope as i32,
        ..Default::default()
    }
}

fn cases(outside_ns: &str) -> Vec<Case> {
    use pb::Scope::{Cluster, Global, Namespace, Workspace};
    let mut cases = Vec::new();
    let mut add = |what: &str, attributes: pb::Attributes, allowed_by: &'static str| {
        cases.push(Case {
            what: what.to_owned(),
            attributes,
            allowed_by,
        });
    };
    // Global scope: only the GlobalRoleBinding.
    add(
        "list tenant clusters (Global)",
        resource("list", "tenant.kubesphere.io", "clusters", Global, "", ""),
        "G",
    );
    add(
        "list workspaces (Global)",
        resource("list", "tenant.kubesphere.io", "workspaces", Global, "", ""),
        "G",
    );
    add(
        "get users (Global)",
        resource("get", "iam.kubesphere.io", "users", Global, "", ""),
        "G",
    );
    add(
        "create globalroles (Global)",
        resource("create", "iam.kubesphere.io", "globalroles", Global, "", ""),
        "G",
    );
    add(
        "list cluster.kubesphere.io clusters (Global)",
        resource("list", "cluster.kubesphere.io", "clusters", Global, "", ""),
        "G",
    );
    // Cluster scope: global and cluster bindings.
    add(
        "list nodes (Cluster)",
        resource("list", "", "nodes", Cluster, "", ""),
        "GC",
    );
    add(
        "list namespaces (Cluster)",
        resource("list", "", "namespaces", Cluster, "", ""),
        "GC",
    );
    add(
        "delete clusterroles (Cluster)",
        resource(
            "delete",
            "rbac.authorization.k8s.io",
            "clusterroles",
            Cluster,
            "",
            "",
        ),
        "GC",
    );
    add(
        "list pods across namespaces (Cluster)",
        resource("list", "", "pods", Cluster, "", ""),
        "GC",
    );
    // Workspace scope: global, cluster, and the workspace binding for its own workspace.
    add(
        "list namespaces of system-workspace",
        resource(
            "list",
            "tenant.kubesphere.io",
            "namespaces",
            Workspace,
            "",
            "system-workspace",
        ),
        "GCW",
    );
    add(
        "delete workspacerolebindings of system-workspace",
        resource(
            "delete",
            "iam.kubesphere.io",
            "workspacerolebindings",
            Workspace,
            "",
            "system-workspace",
        ),
        "GCW",
    );
    add(
        "list namespaces of another workspace",
        resource(
            "list",
            "tenant.kubesphere.io",
            "namespaces",
            Workspace,
            "",
            "other-workspace",
        ),
        "GC",
    );
    // Namespace scope.
    add(
        "list pods in default",
        resource("list", "", "pods", Namespace, "default", ""),
        "GCRW",
    );
    add(
        "delete secrets in default",
        resource("delete", "", "secrets", Namespace, "default", ""),
        "GCRW",
    );
    add(
        "create deployments in default",
        resource("create", "apps", "deployments", Namespace, "default", ""),
        "GCRW",
    );
    add(
        "list pods in kube-system (system-workspace)",
        resource("list", "", "pods", Namespace, "kube-system", ""),
        "GCW",
    );
    add(
        "get secrets in kubesphere-system (system-workspace)",
        resource("get", "", "secrets", Namespace, "kubesphere-system", ""),
        "GCW",
    );
    add(
        "list pods in a namespace of no workspace",
        resource("list", "", "pods", Namespace, outside_ns, ""),
        "GC",
    );
    add(
        "create configmaps in a namespace of no workspace",
        resource("create", "", "configmaps", Namespace, outside_ns, ""),
        "GC",
    );
    add(
        "list pods in a namespace that does not exist",
        resource("list", "", "pods", Namespace, "no-such-namespace-e2e", ""),
        "GC",
    );
    // Non-resource requests (scope ""): global bindings always; cluster bindings, being evaluated for every
    // non-Global scope, too.
    let mut healthz = pb::Attributes {
        user: SAMPLE.to_owned(),
        verb: "GET".to_owned(),
        path: "/apis/custom/healthz".to_owned(),
        ..Default::default()
    };
    add("GET a non-resource path", healthz.clone(), "GC");
    healthz.user = "kubesphere:serviceaccount:default:someone-else".to_owned();
    add("another ServiceAccount, same request", healthz, "");
    let mut other = resource("list", "", "pods", Namespace, "default", "");
    other.user = "kubesphere:serviceaccount:other:sample".to_owned();
    add(
        "a ServiceAccount of the same name in another namespace",
        other,
        "",
    );
    cases
}

/// The authorizer over mutual TLS as `ksiam-admin` (the tests' identity).
async fn client() -> anyhow::Result<AuthorizerClient<tonic::transport::Channel>> {
    e2e();
    let channel = grpc_channel("KSIAM_AUTHZ_GRPC", &grpc_tls(GrpcIdentity::Admin)?).await?;
    Ok(AuthorizerClient::new(channel))
}

async fn decide(
    client: &mut AuthorizerClient<tonic::transport::Channel>,
    a: &pb::Attributes,
) -> anyhow::Result<pb::AuthorizeResponse> {
    Ok(client
        .authorize(pb::AuthorizeRequest {
            attributes: Some(a.clone()),
        })
        .await?
        .into_inner())
}

/// Polls (every 5 ms, up to 10 s) until `a` is decided `want`; returns how long that took.
async fn until(
    client: &mut AuthorizerClient<tonic::transport::Channel>,
    a: &pb::Attributes,
    want: bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if decide(client, a).await?.allowed == want {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(10),
            "{} {} {}/{} was not decided {want} within 10 s",
            a.user,
            a.verb,
            a.namespace,
            a.resource
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `ksiam can-i` and `ksiam who-can` against the authorizer's gRPC API, while the seed's RoleBinding is applied.
fn can_i_and_who_can() -> anyhow::Result<()> {
    let bin = std::env::var("KSIAM_BIN")
        .map_err(|_| anyhow::anyhow!("KSIAM_BIN is not set: run via `cargo xtask e2e`"))?;
    let run = |args: &[&str]| -> anyhow::Result<(Option<i32>, String)> {
        let out = std::process::Command::new(&bin).args(args).output()?;
        Ok((
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let (code, out) = run(&[
        "can-i",
        "delete",
        "pods",
        "--namespace",
        "default",
        "--as-sa",
        "default/sample",
    ])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("yes"), "{out}");
    assert!(out.contains("sample-admin"), "names the deciding binding: {out}");
    let (code, out) = run(&[
        "can-i",
        "delete",
        "pods",
        "--namespace",
        "kube-system",
        "--as-sa",
        "default/sample",
    ])?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("no"), "{out}");
    let (code, out) = run(&["who-can", "delete", "pods", "--namespace", "default"])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("sample") && out.contains("sample-admin"), "{out}");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[test]
fn seed_1_4_bindings_give_the_spec_outcomes_through_grpc_authorize() -> anyhow::Result<()> {
    let outside = TestNamespace::create("authz-nows")?;
    let table = cases(outside.name());
    let bindings = [
        (
            'G',
            SEED_GLOBAL_ROLE_BINDING,
            "globalrolebinding/sample-platform-admin",
        ),
        (
            'C',
            SEED_CLUSTER_ROLE_BINDING,
            "clusterrolebinding.iam.kubesphere.io/sample-cluster-admin",
        ),
        (
            'R',
            SEED_ROLE_AND_BINDING,
            "rolebinding.iam.kubesphere.io/sample-admin -n default",
        ),
        (
            'W',
            SEED_WORKSPACE_ROLE_BINDING,
            "workspacerolebinding/sample-admin",
        ),
    ];
    runtime()?.block_on(async {
        let mut client = client().await?;
        // Nothing bound yet: every request is denied.
        for case in &table {
            until(&mut client, &case.attributes, false).await?;
        }
        for (tag, yaml, object) in bindings {
            kubectl_with_stdin(&["apply", "-f", "-"], yaml)?;
            // The binding has arrived once its most specific allow shows.
            let probe = table
                .iter()
                .find(|c| c.allowed_by.contains(tag))
                .expect("every binding allows something");
            until(&mut client, &probe.attributes, true).await?;
            let mut wrong = Vec::new();
            for case in &table {
                let got = decide(&mut client, &case.attributes).await?;
                let want = case.allowed_by.contains(tag);
                if got.allowed != want {
                    wrong.push(format!(
                        "{}: got {} (reason {:?}), want {want}",
                        case.what, got.allowed, got.reason
                    ));
                } else if want {
                    assert!(
                        got.reason.starts_with("RBAC: allowed by"),
                        "{}: {:?}",
                        case.what,
                        got.reason
                    );
                }
                assert!(got.generation > 0, "every answer names its snapshot generation");
            }
            if tag == 'R' {
                can_i_and_who_can()?;
            }
            let args: Vec<&str> = std::iter::once("delete").chain(object.split(' ')).collect();
            kubectl(&args)?;
            until(&mut client, &probe.attributes, false).await?;
            assert!(
                wrong.is_empty(),
                "binding {tag} ({object}):\n{}",
                wrong.join("\n")
            );
        }
        anyhow::Ok(())
    })
}

#[test]
fn policy_changes_reach_decisions_quickly() -> anyhow::Result<()> {
    let ns = TestNamespace::create("authz-prop")?;
    let ns = ns.name().to_owned();
    let user = format!("kubesphere:serviceaccount:{ns}:prop");
    let mut pods = resource("list", "", "pods", pb::Scope::Namespace, &ns, "");
    pods.user = user.clone();
    let mut delays: Vec<(&str, Duration)> = Vec::new();
    runtime()?.block_on(async {
        let mut client = client().await?;
        let role = |verbs: &str| {
            format!(
                "apiVersion: iam.kubesphere.io/v1beta1\nkind: Role\nmetadata:\n  name: prop\n  namespace: {ns}\n\
                 rules:\n- apiGroups: ['']\n  resources: ['pods']\n  verbs: [{verbs}]\n"
            )
        };
        let binding = format!(
            "apiVersion: iam.kubesphere.io/v1beta1\nkind: RoleBinding\nmetadata:\n  name: prop\n  namespace: {ns}\n\
             roleRef:\n  apiGroup: iam.kubesphere.io\n  kind: Role\n  name: prop\n\
             subjects:\n- apiGroup: kubesphere.io\n  kind: ServiceAccount\n  name: prop\n  namespace: {ns}\n"
        );
        let wrb = format!(
            "apiVersion: iam.kubesphere.io/v1beta1\nkind: WorkspaceRoleBinding\nmetadata:\n  name: prop-{ns}\n  labels:\n    kubesphere.io/workspace: system-workspace\n\
             roleRef:\n  apiGroup: iam.kubesphere.io\n  kind: WorkspaceRole\n  name: system-workspace-admin\n\
             subjects:\n- apiGroup: kubesphere.io\n  kind: ServiceAccount\n  name: prop\n  namespace: {ns}\n"
        );
        kubectl_with_stdin(&["apply", "-f", "-"], &role("'get'"))?;
        until(&mut client, &pods, false).await?;
        for _ in 0..5 {
            kubectl_with_stdin(&["apply", "-f", "-"], &binding)?;
            delays.push(("binding created", until(&mut client, &pods, false).await.map(|_| Duration::ZERO)?));
            kubectl_with_stdin(&["apply", "-f", "-"], &role("'get', 'list'"))?;
            delays.push(("role rules changed", until(&mut client, &pods, true).await?));
            kubectl(&["delete", "rolebinding.iam.kubesphere.io", "prop", "-n", &ns])?;
            delays.push(("binding deleted", until(&mut client, &pods, false).await?));
            kubectl_with_stdin(&["apply", "-f", "-"], &binding)?;
            delays.push(("binding created", until(&mut client, &pods, true).await?));
            kubectl(&["delete", "rolebinding.iam.kubesphere.io", "prop", "-n", &ns])?;
            until(&mut client, &pods, false).await?;
            kubectl_with_stdin(&["apply", "-f", "-"], &role("'get'"))?;

            kubectl_with_stdin(&["apply", "-f", "-"], &wrb)?;
            kubectl(&["label", "namespace", &ns, "kubesphere.io/workspace=system-workspace", "--overwrite"])?;
            delays.push(("namespace joined a workspace", until(&mut client, &pods, true).await?));
            kubectl(&["label", "namespace", &ns, "kubesphere.io/workspace-"])?;
            delays.push(("namespace left the workspace", until(&mut client, &pods, false).await?));
            kubectl(&["delete", "workspacerolebinding", &format!("prop-{ns}")])?;
        }
        anyhow::Ok(())
    })?;
    let mut all: Vec<Duration> = delays.iter().map(|(_, d)| *d).filter(|d| !d.is_zero()).collect();
    all.sort();
    let p = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "policy propagation (kubectl returned → gRPC decision changed), {} changes: p50 {:?}, p99 {:?}, max {:?}",
        all.len(),
        p(0.5),
        p(0.99),
        all[all.len() - 1]
    );
    for kind in [
        "binding created",
        "binding deleted",
        "role rules changed",
        "namespace joined a workspace",
        "namespace left the workspace",
    ] {
        let mut d: Vec<Duration> = delays
            .iter()
            .filter(|(k, d)| *k == kind && !d.is_zero())
            .map(|(_, d)| *d)
            .collect();
        d.sort();
        if let Some(max) = d.last() {
            eprintln!("  {kind}: n={} median {:?} max {max:?}", d.len(), d[d.len() / 2]);
        }
    }
    Ok(())
}
