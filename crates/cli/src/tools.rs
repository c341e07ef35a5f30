//! The user tools `ksiam can-i` and `ksiam who-can`.
//!
//! The tools ask the gRPC service at `--server` / `KSIAM_AUTHZ_ADDR`; without one they list the policy
//! once from the cluster (kubeconfig) and decide locally with the same code the service runs.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use ksiam_authz::AuthzClient;
use ksiam_rbac::{
    Attributes, Authorizer, Mode, PolicyIndex, PolicyStore, Scope, matching::KUBESPHERE_SA_PREFIX, resolve,
    review,
};

/// The request flags shared by `can-i` and `who-can`.
#[derive(Args, Clone, Debug)]
#[command(group(ArgGroup::new("scope").args(["namespace", "workspace", "cluster", "global"])))]
pub struct RequestArgs {
    /// The verb (`get`, `list`, `create`, …; the HTTP method for a non-resource path).
    pub verb: String,
    /// `RESOURCE[.GROUP]` (`pods`, `deployments.apps`, `clusters.tenant.kubesphere.io`), or a non-resource
    /// path starting with `/`.
    pub resource: String,
    /// The subresource.
    #[arg(long, default_value = "")]
    pub subresource: String,
    /// The object name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Namespace scope.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Workspace scope.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Cluster scope (the default unless the resource is a KubeSphere global one).
    #[arg(long)]
    pub cluster: bool,
    /// Global scope (the default for users, workspaces, global roles, clusters …).
    #[arg(long)]
    pub global: bool,
    /// The authorizer's gRPC address (`https://host:port`, or `http://` for a plaintext loopback server);
    /// decide locally from the cluster without it.
    #[arg(long, env = "KSIAM_AUTHZ_ADDR")]
    pub server: Option<String>,
    /// The client identity presented to the authorizer.
    #[command(flatten)]
    pub grpc: crate::grpc::GrpcClientArgs,
}

/// `ksiam can-i`.
#[derive(Args, Clone, Debug)]
#[command(group(ArgGroup::new("identity").required(true).args(["as_sa", "as_user"])))]
pub struct CanIArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Ask for KubeSphere ServiceAccount `NAMESPACE/NAME` (no groups, as KubeSphere authenticates it).
    #[arg(long = "as-sa", value_name = "NS/NAME", conflicts_with = "groups")]
    as_sa: Option<String>,
    /// Ask for this user.
    #[arg(long = "as", value_name = "USER")]
    as_user: Option<String>,
    /// A group of the user (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
}

/// `ksiam who-can`.
#[derive(Args, Clone, Debug)]
pub struct WhoCanArgs {
    #[command(flatten)]
    request: RequestArgs,
}

/// An owned request built from the flags.
#[derive(Debug, Default)]
struct Request {
    user: String,
    groups: Vec<String>,
    verb: String,
    api_group: String,
    resource: String,
    subresource: String,
    name: String,
    namespace: String,
    workspace: String,
    path: String,
    resource_request: bool,
    scope: Scope,
}

impl Request {
    fn from_args(r: &RequestArgs, user: String, groups: Vec<String>) -> Self {
        let mut req = Request {
            user,
            groups,
            verb: r.verb.clone(),
            ..Default::default()
        };
        if r.resource.starts_with('/') {
            req.path = r.resource.clone();
            return req;
        }
        req.resource_request = true;
        let (resource, group) = r.resource.split_once('.').unwrap_or((&r.resource, ""));
        req.resource = resource.to_owned();
        req.api_group = group.to_owned();
        req.subresource = r.subresource.clone();
        req.name = r.name.clone();
        req.scope = if let Some(ns) = &r.namespace {
            req.namespace = ns.clone();
            Scope::Namespace
        } else if let Some(ws) = &r.workspace {
            req.workspace = ws.clone();
            Scope::Workspace
        } else if r.global {
            Scope::Global
        } else if r.cluster {
            Scope::Cluster
        } else {
            default_scope(&req.api_group, &req.resource)
        };
        req
    }

    fn attributes(&self) -> Attributes<'_> {
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

/// Global or Cluster, as KubeSphere's resolver scopes a list of this resource.
fn default_scope(group: &str, resource: &str) -> Scope {
    let path = if group.is_empty() {
        format!("/api/v1/{resource}")
    } else {
        format!("/kapis/{group}/v1/{resource}")
    };
    match resolve("GET", &path, "") {
        Ok(info) if info.scope == Scope::Global => Scope::Global,
        _ => Scope::Cluster,
    }
}

/// Exit status when the question could not be answered (connection, cluster access).
const EXIT_ERROR: u8 = 2;

fn block_on<T>(fut: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut))
}

async fn local_store() -> anyhow::Result<PolicyStore> {
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client from the kubeconfig")?;
    let (policy, warnings) = ksiam_authz::list_policy(&client)
        .await
        .context("cannot list the policy from the cluster")?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let store = PolicyStore::new(PolicyIndex::build(&policy));
    store.set_ready(true);
    Ok(store)
}

/// `ksiam can-i`: prints `yes`/`no` and the reason; exit 0 yes, 1 no, 2 when it could not ask.
pub fn can_i(args: CanIArgs, out: &mut impl std::io::Write) -> ExitCode {
    let (user, groups) = match (&args.as_sa, &args.as_user) {
        (Some(sa), _) => match sa.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                (format!("{KUBESPHERE_SA_PREFIX}{ns}:{name}"), Vec::new())
            }
            _ => {
                eprintln!("error: --as-sa takes NAMESPACE/NAME, got {sa:?}");
                return ExitCode::from(crate::EXIT_USAGE);
            }
        },
        (None, Some(user)) => (user.clone(), args.groups.clone()),
        (None, None) => return ExitCode::from(crate::EXIT_USAGE),
    };
    let req = Request::from_args(&args.request, user, groups);
    let answer = block_on(async {
        let a = req.attributes();
        match &args.request.server {
            Some(server) => {
                let tls = args.request.grpc.tls_for(server)?;
                let client = AuthzClient::connect_with(server.clone(), tls.as_ref()).await?;
                let r = client.authorize(&a).await?;
                anyhow::Ok((r.allowed, r.reason))
            }
            None => {
                let store = local_store().await?;
                let verdict = Authorizer::new(Mode::Rbac).decide(&store, &a);
                let text = match &verdict {
                    ksiam_rbac::Verdict::Rbac(_) => store.load().explain(&a),
                    other => other.reason(&a),
                };
                anyhow::Ok((verdict.allowed(), text))
            }
        }
    });
    match answer.and_then(|r| r) {
        Ok((allowed, reason)) => {
            let _ = writeln!(out, "{}", if allowed { "yes" } else { "no" });
            if !reason.is_empty() {
                let _ = writeln!(out, "{reason}");
            }
            if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `ksiam who-can`: one line per subject with the bindings that allow it.
pub fn who_can(args: WhoCanArgs, out: &mut impl std::io::Write) -> ExitCode {
    let req = Request::from_args(&args.request, String::new(), Vec::new());
    let answer = block_on(async {
        let a = req.attributes();
        let mut lines: Vec<(String, String, Vec<String>)> = Vec::new();
        let errors = match &args.request.server {
            Some(server) => {
                let tls = args.request.grpc.tls_for(server)?;
                let client = AuthzClient::connect_with(server.clone(), tls.as_ref()).await?;
                let r = client.who_can(&a).await?;
                for g in r.subjects {
                    let s = g.subject.unwrap_or_default();
                    let bindings = g
                        .bindings
                        .iter()
                        .map(|b| describe_binding(&b.kind, &b.namespace, &b.name))
                        .collect();
                    lines.push((s.kind, subject_name(&s.namespace, &s.name), bindings));
                }
                r.errors
            }
            None => {
                let store = local_store().await?;
                let (subjects, errors) = review::who_can(&store.load(), &a);
                for g in subjects {
                    let bindings = g
                        .bindings
                        .iter()
                        .map(|b| describe_binding(b.kind.as_str(), &b.namespace, &b.name))
                        .collect();
                    lines.push((
                        g.subject.kind.clone(),
                        subject_name(&g.subject.namespace, &g.subject.name),
                        bindings,
                    ));
                }
                errors
            }
        };
        anyhow::Ok((lines, errors))
    });
    match answer.and_then(|r| r) {
        Ok((lines, errors)) => {
            let _ = writeln!(out, "{:<16} {:<40} BINDINGS", "KIND", "SUBJECT");
            for (kind, name, bindings) in lines {
                let _ = writeln!(out, "{kind:<16} {name:<40} {}", bindings.join(", "));
            }
            for e in errors {
                eprintln!("warning: {e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn subject_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

fn describe_binding(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{}", subject_name(namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: CanIArgs,
    }

    fn parse(args: &[&str]) -> Result<CanIArgs, clap::Error> {
        T::try_parse_from(std::iter::once("can-i").chain(args.iter().copied())).map(|t| t.a)
    }

    #[test]
    fn requests_from_flags() {
        let a = parse(&[
            "list",
            "clusters.tenant.kubesphere.io",
            "--as-sa",
            "default/sample",
        ])
        .unwrap();
        let r = Request::from_args(&a.request, "u".into(), vec![]);
        assert_eq!(
            (r.resource.as_str(), r.api_group.as_str()),
            ("clusters", "tenant.kubesphere.io")
        );
        assert_eq!(
            r.scope,
            Scope::Global,
            "KubeSphere scopes tenant clusters globally"
        );
        let a = parse(&[
            "get",
            "pods",
            "-n",
            "default",
            "--subresource",
            "log",
            "--as",
            "u",
        ])
        .unwrap();
        let r = Request::from_args(&a.request, "u".into(), vec![]);
        assert_eq!(
            (r.scope, r.namespace.as_str(), r.subresource.as_str()),
            (Scope::Namespace, "default", "log")
        );
        let a = parse(&["list", "deployments.apps", "--as", "u", "--group", "g"]).unwrap();
        let r = Request::from_args(&a.request, "u".into(), a.groups.clone());
        assert_eq!((r.scope, r.api_group.as_str()), (Scope::Cluster, "apps"));
        let a = parse(&["GET", "/healthz", "--as", "u"]).unwrap();
        let r = Request::from_args(&a.request, "u".into(), vec![]);
        assert!(!r.resource_request);
        assert_eq!((r.path.as_str(), r.scope), ("/healthz", Scope::None));
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["get", "pods"]).is_err(), "an identity is required");
        assert!(parse(&["get", "pods", "--as", "u", "--as-sa", "a/b"]).is_err());
        assert!(
            parse(&["get", "pods", "--as-sa", "a/b", "--group", "g"]).is_err(),
            "SAs have no groups"
        );
        assert!(parse(&["get", "pods", "--as", "u", "-n", "a", "--global"]).is_err());
        let bad = parse(&["get", "pods", "--as-sa", "nonamespace"]).unwrap();
        let mut out = Vec::new();
        assert_eq!(can_i(bad, &mut out), ExitCode::from(crate::EXIT_USAGE));
    }
}
