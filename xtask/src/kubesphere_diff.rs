//! `cargo xtask conformance --kubesphere`: ksiam's gateway against KubeSphere's own ks-apiserver, on the same
//! control plane, the same policy and the same tokens.
//!
//! ```text
//!   seed ──► policy: workspaces, namespaces in and out of them, Users, ServiceAccounts, GlobalRoles,
//!            WorkspaceRoles, ClusterRoles, Roles (some with aggregationRoleTemplates), bindings of all four
//!            scopes to Users, Groups and ServiceAccounts, built-in roles ──► kubectl apply
//!        ──► random requests over the resolver's space (/kapis, /api, /apis, /clusters/<c>/…, workspace
//!            paths, list options, dry-run writes; tokens of users, ServiceAccounts, none, bad ones)
//!        ──► the same bytes to ksiam's gateway and to ks-apiserver ──► status codes compared, and for
//!            errors the bodies byte for byte
//! ```
//!
//! A difference is either one of [`KNOWN`] (each listed, with its reason and the test that pins it, in
//! ARCHITECTURE.md's "Deliberate differences" table) or a failure, printed with the request, the policy slice
//! of the caller (its bindings and their roles) and both answers. A difference is re-sent once before it
//! counts, so a cache that had not caught up yet is not reported. The seed is printed; `--seed` replays.
//!
//! Not compared, on purpose: bodies of successful responses (ks-apiserver pretty-prints its own `/kapis`
//! answers with a one-space indent; the proxied ones come from the same kube-apiserver) and headers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ksiam_rbac::generate::Rng;
use serde_json::{Value, json};

use crate::control_plane::Kubectl;
use crate::progress::{Step, say};
use crate::stack::Stack;

/// Requests in `cargo xtask test` (and `cargo xtask conformance --kubesphere`).
pub const QUICK: usize = 600;
/// Requests with `--full`.
pub const FULL: usize = 10_000;
/// The seed unless `--seed` or `KSIAM_KS_DIFF_SEED` says otherwise.
pub const DEFAULT_SEED: u64 = 0x6b73_2d64_6966_6631;
/// Differences printed in full.
const SHOWN: usize = 8;

/// `cargo xtask conformance --kubesphere [--full] [--seed S] [--count N]`.
pub fn run_cli(root: &Path, full: bool, seed: Option<u64>, count: Option<usize>) -> anyhow::Result<()> {
    crate::process::install_signal_handler()?;
    let seed = match seed {
        Some(s) => s,
        None => match std::env::var("KSIAM_KS_DIFF_SEED") {
            Ok(v) => crate::differential::parse_seed(&v)?,
            Err(_) => DEFAULT_SEED,
        },
    };
    let count = count.unwrap_or(if full { FULL } else { QUICK });
    let build = crate::kubesphere::build_in_background(root);
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let runs = root.join("target").join("kubesphere-conformance");
    crate::suite::clean_stale_runs(&runs)?;
    let run_dir = runs.join(format!("run-{epoch}-{}", std::process::id()));
    let mut stack = Stack::start_with(root, &run_dir, "dev", Some(build), false, true)?;
    let run_dir = stack.cp.run_dir.clone();
    let outcome = run(&stack, seed, count);
    // A component that died during the run explains differences better than they do.
    let health = stack.cp.procs.check_running();
    drop(stack);
    let outcome = outcome.and(health);
    match &outcome {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        Err(_) => {
            // Keep the logs, not the data or the copy of the ksiam binary.
            let _ = std::fs::remove_dir_all(run_dir.join("etcd"));
            let _ = std::fs::remove_file(run_dir.join("ksiam"));
            say(format!("logs kept in {}", run_dir.display()));
        }
    }
    outcome
}

/// The whole comparison on a running stack.
pub fn run(stack: &Stack, seed: u64, count: usize) -> anyhow::Result<()> {
    let ksiam = stack.ksiam.as_ref().context("`ksiam all` is not running")?;
    let ks = stack.kubesphere.as_ref().context("ks-apiserver is not running")?;
    let gateways = [addr_of(&ksiam.gateway)?, addr_of(&ks.apiserver)?];
    say(format!(
        "KubeSphere differential against ks-apiserver at {}: seed {seed:#x}, {count} requests (replay: cargo xtask \
         conformance --kubesphere --seed {seed:#x} --count {count})",
        ks.commit
    ));
    let kubectl = stack.cp.kubectl();
    let policy = Policy::generate(seed);
    let step = Step::start(format!(
        "apply the generated policy ({} objects)",
        policy.objects.len()
    ));
    policy.apply(&kubectl)?;
    step.done();
    let secret = std::fs::read(&ksiam.jwt_secret_file)?;
    let secret = String::from_utf8(secret)?.trim_end().to_owned();
    let step = Step::start("tokens: ServiceAccount token Secrets filled, user tokens signed");
    let identities = policy.identities(&kubectl, &secret)?;
    step.done();
    let step = Step::start("wait until both gateways see the policy");
    policy.wait_synced(&gateways, &identities)?;
    step.done();

    let step = Step::start(format!("{count} requests to both gateways"));
    let mut rng = Rng::new(seed ^ 0x7265_7175_6573_7473);
    let mut report = Report::default();
    let start = Instant::now();
    for i in 0..count {
        let case = Case::generate(&mut rng, &policy, &identities);
        let mut answers = [send(gateways[0], &case)?, send(gateways[1], &case)?];
        if !same(&answers[0], &answers[1]) && known(&case, &answers).is_none() {
            // A cache that had not caught up yet: ask again once.
            std::thread::sleep(Duration::from_millis(1500));
            answers = [send(gateways[0], &case)?, send(gateways[1], &case)?];
        }
        report.add(i, &case, &answers, &policy, &identities);
    }
    step.done();
    let secs = start.elapsed().as_secs_f64();
    report.print(secs);
    if !report.unknown.is_empty() {
        bail!(
            "{} unlisted differences between ksiam and ks-apiserver (seed {seed:#x}; replay: cargo xtask conformance \
             --kubesphere --seed {seed:#x} --count {count})",
            report.unknown_total
        );
    }
    Ok(())
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url
        .strip_prefix("http://")
        .with_context(|| format!("{url} is not http://"))?;
    hostport.parse().with_context(|| format!("{url}: not an address"))
}

// === the policy ===

const WORKSPACES: usize = 3;
const NAMESPACES: usize = 6;
const USERS: usize = 6;
const SERVICE_ACCOUNTS: usize = 5;

/// The generated objects and what requests can name.
pub struct Policy {
    objects: Vec<Value>,
    /// `(namespace, workspace)`.
    namespaces: Vec<(String, Option<String>)>,
    workspaces: Vec<String>,
    /// `(namespace, name)` of the KubeSphere ServiceAccounts.
    service_accounts: Vec<(String, String)>,
    users: Vec<String>,
}

fn meta(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    let mut m = json!({"name": name, "labels": labels});
    if let Some(ns) = namespace {
        m["namespace"] = ns.into();
    }
    m
}

const RULE_VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];
const RULE_GROUPS: [&str; 6] = [
    "",
    "apps",
    "iam.kubesphere.io",
    "tenant.kubesphere.io",
    "kubesphere.io",
    "*",
];
const RULE_RESOURCES: [&str; 14] = [
    "pods",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "namespaces",
    "deployments",
    "users",
    "globalroles",
    "workspaces",
    "workspacetemplates",
    "clusters",
    "roles",
    "pods/log",
    "*",
];

fn random_rules(rng: &mut Rng, cluster_wide: bool) -> Vec<Value> {
    (0..1 + rng.below(3))
        .map(|_| {
            if cluster_wide && rng.below(8) == 0 {
                return json!({"nonResourceURLs": [*rng.pick(&["/version", "/api", "/apis", "*", "/kapis/*"])],
                              "verbs": [*rng.pick(&["get", "GET", "*"])]});
            }
            let verbs: Vec<&str> = (0..1 + rng.below(3)).map(|_| *rng.pick(&RULE_VERBS)).collect();
            let groups: Vec<&str> = (0..1 + rng.below(2)).map(|_| *rng.pick(&RULE_GROUPS)).collect();
            let resources: Vec<&str> = (0..1 + rng.below(3))
                .map(|_| *rng.pick(&RULE_RESOURCES))
                .collect();
            let mut rule = json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
            if rng.below(6) == 0 {
                rule["resourceNames"] = json!([*rng.pick(&["cm-0", "ns-0", "host", "user-0", "sa-0"])]);
            }
            rule
        })
        .collect()
}

impl Policy {
    /// The deterministic policy of `seed`.
    pub fn generate(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut objects = Vec::new();
        let workspaces: Vec<String> = (0..WORKSPACES).map(|i| format!("ws-{i}")).collect();
        for ws in &workspaces {
            for kind in ["WorkspaceTemplate", "Workspace"] {
                objects.push(json!({
                    "apiVersion": "tenant.kubesphere.io/v1beta1", "kind": kind,
                    "metadata": meta(ws, None, json!({})),
                    "spec": if kind == "Workspace" { json!({}) } else { json!({"template": {"spec": {}}}) },
                }));
            }
        }
        let namespaces: Vec<(String, Option<String>)> = (0..NAMESPACES)
            .map(|i| {
                // Every third namespace belongs to no workspace.
                let ws = (i % 3 != 2).then(|| workspaces[i % WORKSPACES].clone());
                (format!("ns-{i}"), ws)
            })
            .collect();
        for (ns, ws) in &namespaces {
            let labels = match ws {
                Some(ws) => json!({"kubesphere.io/workspace": ws}),
                None => json!({}),
            };
            objects
                .push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, None, labels)}));
        }
        for (ns, _) in &namespaces {
            objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": meta("cm-0", Some(ns), json!({})), "data": {"k": "v"}}));
        }
        let users: Vec<String> = (0..USERS).map(|i| format!("user-{i}")).collect();
        for u in users
            .iter()
            .chain(["user-off".to_owned(), "sentinel".to_owned()].iter())
        {
            objects.push(json!({"apiVersion": "iam.kubesphere.io/v1beta1", "kind": "User",
                "metadata": meta(u, None, json!({})), "spec": {"email": format!("{u}@example.com")}}));
        }
        let service_accounts: Vec<(String, String)> = (0..SERVICE_ACCOUNTS)
            .map(|i| (namespaces[i % NAMESPACES].0.clone(), format!("sa-{i}")))
            .collect();
        for (ns, name) in service_accounts
            .iter()
            .chain(std::iter::once(&("ns-0".to_owned(), "sa-deleted".to_owned())))
        {
            objects.push(
                json!({"apiVersion": "kubesphere.io/v1alpha1", "kind": "ServiceAccount",
                "metadata": meta(name, Some(ns), json!({})), "secrets": []}),
            );
        }

        // Role templates (aggregationRoleTemplates): neither side aggregates at request time.
        objects.push(
            json!({"apiVersion": "iam.kubesphere.io/v1beta1", "kind": "RoleTemplate",
            "metadata": meta("template-view-pods", None, json!({})),
            "spec": {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}}),
        );
        let iam = "iam.kubesphere.io/v1beta1";
        let mut roles: Vec<(&'static str, Option<String>, String)> = Vec::new();
        for i in 0..4 {
            let name = format!("g-role-{i}");
            let mut role = json!({"apiVersion": iam, "kind": "GlobalRole",
                "metadata": meta(&name, None, json!({})), "rules": random_rules(&mut rng, true)});
            if i == 3 {
                role["aggregationRoleTemplates"] = json!({"templateNames": ["template-view-pods"]});
            }
            objects.push(role);
            roles.push(("GlobalRole", None, name));
        }
        for b in ["platform-admin", "platform-regular", "platform-self-provisioner"] {
            roles.push(("GlobalRole", None, b.to_owned()));
        }
        for ws in &workspaces {
            for i in 0..2 {
                let name = format!("{ws}-w-role-{i}");
                let mut role = json!({"apiVersion": iam, "kind": "WorkspaceRole",
                    "metadata": meta(&name, None, json!({"kubesphere.io/workspace": ws})),
                    "rules": random_rules(&mut rng, false)});
                if i == 1 {
                    role["aggregationRoleTemplates"] = json!({"templateNames": ["template-view-pods"]});
                }
                objects.push(role);
                roles.push(("WorkspaceRole", Some(ws.clone()), name));
            }
        }
        for i in 0..3 {
            let name = format!("c-role-{i}");
            objects.push(json!({"apiVersion": iam, "kind": "ClusterRole",
                "metadata": meta(&name, None, json!({})), "rules": random_rules(&mut rng, true)}));
            roles.push(("ClusterRole", None, name));
        }
        for b in ["cluster-admin", "cluster-viewer"] {
            roles.push(("ClusterRole", None, b.to_owned()));
        }
        for (ns, _) in &namespaces {
            for i in 0..2 {
                let name = format!("r-role-{i}");
                objects.push(json!({"apiVersion": iam, "kind": "Role",
                    "metadata": meta(&name, Some(ns), json!({})), "rules": random_rules(&mut rng, false)}));
                roles.push(("Role", Some(ns.clone()), name));
            }
        }

        // Bindings: about three per identity, over all four scopes.
        let subject = |rng: &mut Rng| -> Value {
            match rng.below(10) {
                0..=3 => json!({"apiGroup": "iam.kubesphere.io", "kind": "User",
                                "name": users[rng.below(USERS)]}),
                4..=7 => {
                    let (ns, name) = &service_accounts[rng.below(SERVICE_ACCOUNTS)];
                    json!({"apiGroup": "kubesphere.io", "kind": "ServiceAccount", "name": name, "namespace": ns})
                }
                8 => json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                            "name": *rng.pick(&["system:authenticated", "group-x"])}),
                _ => json!({"apiGroup": "iam.kubesphere.io", "kind": "User", "name": "user-off"}),
            }
        };
        for i in 0..(USERS + SERVICE_ACCOUNTS) * 3 {
            let (kind, scope, role) = rng.pick(&roles).clone();
            let subjects: Vec<Value> = (0..1 + rng.below(2)).map(|_| subject(&mut rng)).collect();
            let binding_kind = format!("{kind}Binding");
            let name = format!("b-{i}");
            let mut labels = json!({"iam.kubesphere.io/role-ref": role});
            let namespace = match (kind, &scope) {
                ("Role", Some(ns)) => Some(ns.as_str()),
                _ => None,
            };
            if let ("WorkspaceRole", Some(ws)) = (kind, &scope) {
                labels["kubesphere.io/workspace"] = ws.as_str().into();
            }
            objects.push(json!({"apiVersion": iam, "kind": binding_kind,
                "metadata": meta(&name, namespace, labels),
                "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": kind, "name": role},
                "subjects": subjects}));
        }
        // The sentinel, applied last: once both gateways let `sentinel` read its own User, both have seen
        // the bindings (`Policy::wait_synced`).
        objects.push(json!({"apiVersion": iam, "kind": "GlobalRole",
            "metadata": meta("sentinel-get-users", None, json!({})),
            "rules": [{"apiGroups": ["iam.kubesphere.io"], "resources": ["users"], "verbs": ["get"]},
                      {"apiGroups": ["iam.kubesphere.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]}));
        objects.push(json!({"apiVersion": iam, "kind": "GlobalRoleBinding",
            "metadata": meta("zz-sentinel", None, json!({"iam.kubesphere.io/role-ref": "sentinel-get-users"})),
            "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "GlobalRole", "name": "sentinel-get-users"},
            "subjects": [{"apiGroup": "iam.kubesphere.io", "kind": "User", "name": "sentinel"}]}));
        Self {
            objects,
            namespaces,
            workspaces,
            service_accounts,
            users,
        }
    }

    /// Applies every object, disables `user-off`, deletes `sa-deleted` once its token was read (see
    /// [`Policy::identities`]).
    fn apply(&self, kubectl: &Kubectl) -> anyhow::Result<()> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": self.objects});
        kubectl.apply(&list.to_string())?;
        kubectl.run(&[
            "patch",
            "users.iam.kubesphere.io",
            "user-off",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"state":"Disabled"}}"#,
        ])?;
        Ok(())
    }

    /// Every identity a request can carry.
    fn identities(&self, kubectl: &Kubectl, secret: &str) -> anyhow::Result<Vec<Identity>> {
        let keys = ksiam_token::KeySet::legacy(secret.as_bytes());
        let issuer = ksiam_token::Issuer::new(keys, ksiam_token::DEFAULT_ISSUER);
        let now = ksiam_token::now_unix();
        let user_token = |name: &str, iat: i64, exp: Option<i64>| -> anyhow::Result<String> {
            Ok(issuer.issue(&ksiam_token::Claims {
                iss: Some(ksiam_token::DEFAULT_ISSUER.to_owned()),
                sub: Some(name.to_owned()),
                iat: Some(iat),
                exp,
                token_type: Some("static_token".to_owned()),
                username: Some(name.to_owned()),
                ..Default::default()
            })?)
        };
        let mut ids = Vec::new();
        for u in self
            .users
            .iter()
            .map(String::as_str)
            .chain(["user-off", "ghost", "sentinel"])
        {
            ids.push(Identity {
                name: u.to_owned(),
                header: Some(format!("Bearer {}", user_token(u, now - 60, None)?)),
            });
        }
        for (ns, name) in self
            .service_accounts
            .iter()
            .chain(std::iter::once(&("ns-0".to_owned(), "sa-deleted".to_owned())))
        {
            let token = sa_token(kubectl, ns, name)?;
            ids.push(Identity {
                name: format!("kubesphere:serviceaccount:{ns}:{name}"),
                header: Some(format!("Bearer {token}")),
            });
        }
        kubectl.run(&[
            "delete",
            "serviceaccounts.kubesphere.io",
            "sa-deleted",
            "-n",
            "ns-0",
            "--wait=true",
        ])?;
        let other = ksiam_token::Issuer::new(
            ksiam_token::KeySet::legacy(b"not-the-secret"),
            ksiam_token::DEFAULT_ISSUER,
        );
        let forged = other.issue(&ksiam_token::Claims {
            sub: Some("user-0".into()),
            username: Some("user-0".into()),
            token_type: Some("static_token".into()),
            ..Default::default()
        })?;
        let expired = user_token("user-0", now - 3_600, Some(now - 60))?;
        let future = user_token("user-0", now + 3_600, None)?;
        for (name, header) in [
            ("anonymous", None),
            ("bad: expired", Some(format!("Bearer {expired}"))),
            ("bad: iat in the future", Some(format!("Bearer {future}"))),
            ("bad: not a JWT", Some("Bearer not-a-jwt".to_owned())),
            ("bad: another secret", Some(format!("Bearer {forged}"))),
            ("bad: Token scheme", Some(format!("Token {forged}"))),
            ("bad: empty bearer", Some("Bearer ".to_owned())),
        ] {
            ids.push(Identity {
                name: name.to_owned(),
                header,
            });
        }
        Ok(ids)
    }

    /// Waits until both gateways let `sentinel` read its own User (its binding is the last object applied;
    /// the same GlobalRole lets it create SubjectAccessReviews for the differential),
    /// then two more seconds for the other informers.
    fn wait_synced(&self, gateways: &[SocketAddr; 2], ids: &[Identity]) -> anyhow::Result<()> {
        let sentinel = ids
            .iter()
            .find(|i| i.name == "sentinel")
            .context("no sentinel identity")?;
        let case = Case {
            who: sentinel.name.clone(),
            header: sentinel.header.clone(),
            method: "GET",
            target: "/apis/iam.kubesphere.io/v1beta1/users/sentinel".into(),
            user_agent: "ksiam-conformance",
            body: None,
            class: Class::Served,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let a = send(gateways[0], &case)?;
            let b = send(gateways[1], &case)?;
            if a.status == 200 && b.status == 200 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateways did not see the sentinel binding in 60 s: ksiam {} {}, ks-apiserver {} {}",
                    a.status,
                    a.body,
                    b.status,
                    b.body
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    }

    /// The caller's bindings and the roles they reference, for a difference report.
    fn slice(&self, who: &str) -> Vec<String> {
        let (sa_ns, sa_name) = match who.strip_prefix("kubesphere:serviceaccount:") {
            Some(rest) => rest.split_once(':').unwrap_or(("", "")),
            None => ("", ""),
        };
        let applies = |s: &Value| match s["kind"].as_str() {
            Some("User") => s["name"] == who,
            Some("ServiceAccount") => s["name"] == sa_name && s["namespace"] == sa_ns,
            Some("Group") => {
                s["name"] == "system:authenticated" && who != "anonymous" && !who.starts_with("kubesphere:")
            }
            _ => false,
        };
        let mut out = Vec::new();
        for b in &self.objects {
            let kind = b["kind"].as_str().unwrap_or_default();
            if !kind.ends_with("Binding") {
                continue;
            }
            if !b["subjects"].as_array().into_iter().flatten().any(applies) {
                continue;
            }
            let ns = b["metadata"]["namespace"].as_str();
            out.push(format!(
                "{kind} {}{}: {} {}",
                ns.map(|n| format!("{n}/")).unwrap_or_default(),
                b["metadata"]["name"].as_str().unwrap_or_default(),
                b["roleRef"]["kind"].as_str().unwrap_or_default(),
                b["roleRef"]["name"].as_str().unwrap_or_default()
            ));
            let role = self.objects.iter().find(|r| {
                r["kind"] == b["roleRef"]["kind"]
                    && r["metadata"]["name"] == b["roleRef"]["name"]
                    && r["metadata"]["namespace"].as_str() == ns
            });
            match role {
                Some(r) => out.push(format!("    rules: {}", r["rules"])),
                None => out.push("    (built-in role)".to_owned()),
            }
        }
        out
    }
}

/// The token of a ServiceAccount, once ksiam's controller has filled its Secret.
fn sa_token(kubectl: &Kubectl, ns: &str, name: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let secret = kubectl.run(&[
            "get",
            "serviceaccounts.kubesphere.io",
            name,
            "-n",
            ns,
            "-o",
            "jsonpath={.secrets[0].name}",
        ])?;
        if !secret.is_empty() {
            let token = kubectl.run(&["get", "secret", &secret, "-n", ns, "-o", "jsonpath={.data.token}"])?;
            if !token.is_empty() {
                return decode_base64(&token);
            }
        }
        if Instant::now() > deadline {
            bail!("the token Secret of ServiceAccount {ns}/{name} was not filled in 60 s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn decode_base64(s: &str) -> anyhow::Result<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim().bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).context("not base64")? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

/// A caller.
#[derive(Clone, Debug)]
struct Identity {
    /// The user name, or what is wrong with the credentials.
    name: String,
    /// The `Authorization` header.
    header: Option<String>,
}

// === requests ===

/// How a request is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Both serve it (their own `/kapis` handlers, or kube-apiserver behind them): status and error body.
    Served,
    /// A `/kapis` API only ks-apiserver serves: only the authentication and authorization outcome
    /// (401/403 bodies) is compared.
    KubeSphereOnly,
}

/// One request.
#[derive(Clone, Debug)]
struct Case {
    who: String,
    header: Option<String>,
    method: &'static str,
    target: String,
    user_agent: &'static str,
    body: Option<String>,
    class: Class,
}

impl Case {
    fn generate(rng: &mut Rng, p: &Policy, ids: &[Identity]) -> Self {
        // Three requests in four carry a valid user's or ServiceAccount's token (authorization); the rest
        // anything (authentication).
        let valid = USERS + SERVICE_ACCOUNTS;
        let mut id = if rng.below(4) == 0 {
            &ids[rng.below(ids.len())]
        } else {
            let i = rng.below(valid);
            // Users come first in `ids`, then user-off, ghost and sentinel, then the ServiceAccounts.
            &ids[if i < USERS { i } else { i + 3 }]
        };
        let ns = &p.namespaces[rng.below(p.namespaces.len())].0;
        let ns = if rng.below(10) == 0 {
            "ns-missing"
        } else {
            ns.as_str()
        };
        let ws = if rng.below(10) == 0 {
            "ws-missing"
        } else {
            p.workspaces[rng.below(p.workspaces.len())].as_str()
        };
        let name = |rng: &mut Rng| -> String {
            (*rng.pick(&["cm-0", "missing", "sa-0", "user-0", "host", "ns-0"])).to_owned()
        };
        let mut class = Class::Served;
        let mut method = "GET";
        let mut body = None;
        let mut list = false;
        let path = match rng.below(16) {
            14 | 15 => {
                // The authorizer itself, for any subject and scope: KubeSphere's SubjectAccessReview API.
                method = "POST";
                body = Some(random_review(rng, p).to_string());
                // Mostly as `sentinel`, whose GlobalRole may create reviews; sometimes as anybody.
                if rng.below(4) != 0
                    && let Some(sentinel) = ids.iter().find(|i| i.name == "sentinel")
                {
                    id = sentinel;
                }
                "/kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews".to_owned()
            }
            0 => {
                list = true;
                format!(
                    "/api/v1/namespaces/{ns}/{}",
                    rng.pick(&["pods", "configmaps", "secrets", "serviceaccounts", "services"])
                )
            }
            1 => format!("/api/v1/namespaces/{ns}/configmaps/{}", name(rng)),
            2 => {
                list = true;
                format!(
                    "/apis/{}",
                    rng.pick(&[
                        "apps/v1/deployments",
                        "iam.kubesphere.io/v1beta1/users",
                        "iam.kubesphere.io/v1beta1/globalroles",
                        "tenant.kubesphere.io/v1beta1/workspacetemplates",
                        "cluster.kubesphere.io/v1alpha1/clusters",
                        "rbac.authorization.k8s.io/v1/clusterroles",
                    ])
                )
            }
            3 => format!(
                "/apis/{}/{}",
                rng.pick(&[
                    "iam.kubesphere.io/v1beta1/users",
                    "tenant.kubesphere.io/v1beta1/workspacetemplates",
                    "cluster.kubesphere.io/v1alpha1/clusters",
                ]),
                name(rng)
            ),
            4 => {
                list = rng.below(2) == 0;
                if list {
                    format!(
                        "/api/v1/{}",
                        rng.pick(&["namespaces", "pods", "configmaps", "nodes"])
                    )
                } else {
                    format!("/api/v1/namespaces/{ns}")
                }
            }
            5 => {
                list = true;
                format!(
                    "/apis/{}/namespaces/{ns}/{}",
                    rng.pick(&["apps/v1", "iam.kubesphere.io/v1beta1", "kubesphere.io/v1alpha1"]),
                    rng.pick(&["deployments", "roles", "rolebindings", "serviceaccounts"])
                )
            }
            6 | 7 => {
                list = true;
                format!(
                    "/kapis/tenant.kubesphere.io/v1beta1/{}",
                    rng.pick(&["clusters", "workspaces", "workspacetemplates", "namespaces"])
                )
            }
            8 => {
                if rng.below(2) == 0 {
                    format!("/kapis/tenant.kubesphere.io/v1beta1/workspaces/{ws}")
                } else {
                    list = true;
                    format!("/kapis/tenant.kubesphere.io/v1beta1/workspaces/{ws}/namespaces")
                }
            }
            9 => {
                class = Class::KubeSphereOnly;
                (*rng.pick(&[
                    "/kapis/iam.kubesphere.io/v1beta1/users",
                    "/kapis/iam.kubesphere.io/v1beta1/globalroles",
                    "/kapis/resources.kubesphere.io/v1alpha3/namespaces",
                    "/kapis/config.kubesphere.io/v1alpha2/configs/oauth",
                    "/kapis/version",
                ]))
                .to_owned()
            }
            10 => {
                class = Class::KubeSphereOnly;
                match rng.below(3) {
                    0 => format!("/kapis/iam.kubesphere.io/v1beta1/workspaces/{ws}/workspacemembers"),
                    1 => format!("/kapis/iam.kubesphere.io/v1beta1/namespaces/{ns}/namespacemembers"),
                    _ => format!("/kapis/resources.kubesphere.io/v1alpha3/namespaces/{ns}/pods"),
                }
            }
            11 => (*rng.pick(&["/version", "/api", "/apis", "/api/v1"])).to_owned(),
            12 => {
                method = "DELETE";
                format!("/api/v1/namespaces/{ns}/configmaps/{}", name(rng))
            }
            _ => {
                method = "POST";
                body = Some(
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": format!("new-{}", rng.below(1000))}, "data": {"a": "b"}})
                    .to_string(),
                );
                format!("/api/v1/namespaces/{ns}/configmaps")
            }
        };
        // The cluster prefix: the host by name, or a cluster that does not exist.
        let prefix = match rng.below(10) {
            0 | 1 => "/clusters/host",
            2 => "/clusters/member-x",
            _ => "",
        };
        let mut query = Vec::new();
        if method != "GET" && !path.contains("subjectaccessreviews") {
            query.push("dryRun=All".to_owned());
        }
        if list {
            match rng.below(6) {
                0 => query.push("limit=1".into()),
                1 => query.push(format!("labelSelector=kubesphere.io/workspace%3D{ws}")),
                2 => query.push("fieldSelector=metadata.name%3Dcm-0".into()),
                3 => query.push("resourceVersion=0".into()),
                _ => {}
            }
        }
        let mut target = format!("{prefix}{path}");
        if !query.is_empty() {
            target.push('?');
            target.push_str(&query.join("&"));
        }
        let user_agent = if rng.below(5) == 0 {
            "curl/8.5.0"
        } else {
            "ksiam-conformance"
        };
        Case {
            who: id.name.clone(),
            header: id.header.clone(),
            method,
            target,
            user_agent,
            body,
            class,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {} as {} (User-Agent {}){}",
            self.method,
            self.target,
            self.who,
            self.user_agent,
            self.body
                .as_deref()
                .map(|b| format!(", body {b}"))
                .unwrap_or_default()
        )
    }
}

/// A SubjectAccessReview over the policy's subjects, resources and all four scopes.
fn random_review(rng: &mut Rng, p: &Policy) -> Value {
    let user = match rng.below(3) {
        0 => {
            let (ns, name) = &p.service_accounts[rng.below(p.service_accounts.len())];
            format!("kubesphere:serviceaccount:{ns}:{name}")
        }
        _ => p.users[rng.below(p.users.len())].clone(),
    };
    let groups = if rng.below(2) == 0 {
        json!(["system:authenticated"])
    } else {
        json!([])
    };
    let (ns, ws) = &p.namespaces[rng.below(p.namespaces.len())];
    let mut attrs = json!({
        "verb": *rng.pick(&RULE_VERBS[..8]),
        "group": *rng.pick(&RULE_GROUPS[..5]),
        "version": "v1",
        "resource": *rng.pick(&RULE_RESOURCES[..12]),
    });
    match rng.below(4) {
        0 => attrs["namespace"] = ns.as_str().into(),
        1 => attrs["workspace"] = ws.clone().unwrap_or_else(|| "ws-0".into()).into(),
        2 => attrs["resourceScope"] = "Global".into(),
        _ => attrs["resourceScope"] = "Cluster".into(),
    }
    if rng.below(4) == 0 {
        attrs["name"] = (*rng.pick(&["cm-0", "ns-0", "host", "user-0"])).into();
    }
    json!({
        "apiVersion": "iam.kubesphere.io/v1beta1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": attrs},
    })
}

/// An answer: status, content type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// Sends one request (HTTP/1.1, `Connection: close`) and reads the whole answer.
fn send(addr: SocketAddr, case: &Case) -> anyhow::Result<Answer> {
    let timeout = Duration::from_secs(20);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {}\r\nAccept: application/json\r\nConnection: close\r\n",
        case.method, case.target, case.user_agent
    );
    if let Some(h) = &case.header {
        let _ = write!(req, "Authorization: {h}\r\n");
    }
    let body = case.body.as_deref().unwrap_or("");
    if case.body.is_some() {
        let _ = write!(
            req,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr} to {}", case.describe()))?;
    parse_response(&raw).with_context(|| format!("the answer of {addr} to {}", case.describe()))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Answer> {
    if raw.is_empty() {
        // Go's server closes the connection when a handler panics.
        return Ok(Answer {
            status: 0,
            content_type: String::new(),
            body: "(the connection was closed without an answer)".into(),
        });
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line.split(' ').nth(1).context("no status code")?.parse()?;
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("content-type") {
            content_type = v.trim().to_owned();
        }
        if k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Ok(Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size without its line end")?;
        let size = std::str::from_utf8(&data[..eol])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("a chunk is cut short");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Whether two answers agree under the comparison rules (before the known differences): the same status;
/// for errors the same bytes; for the tenant lists (`/kapis/tenant.kubesphere.io/...` answered 200) the
/// same item names in the same order and the same `totalItems`, since which workspaces, namespaces and
/// clusters a caller sees is an authorization outcome.
fn same(a: &Answer, b: &Answer) -> bool {
    if a.status != b.status {
        return false;
    }
    if a.status >= 400 || a.status == 0 {
        return a.body == b.body;
    }
    match (tenant_list(a), tenant_list(b)) {
        (Some(x), Some(y)) => return x == y,
        (None, None) => {}
        _ => return false,
    }
    review_allowed(a) == review_allowed(b)
}

/// `status.allowed` of a SubjectAccessReview answer.
fn review_allowed(a: &Answer) -> Option<bool> {
    let v: Value = serde_json::from_str(&a.body).ok()?;
    if v["kind"] != "SubjectAccessReview" {
        return None;
    }
    Some(v["status"]["allowed"].as_bool().unwrap_or(false))
}

/// The item names and `totalItems` of a tenant list answer (KubeSphere's `{"items": [...], "totalItems": N}`).
fn tenant_list(a: &Answer) -> Option<(Vec<String>, Value)> {
    let v: Value = serde_json::from_str(&a.body).ok()?;
    let total = v.get("totalItems")?.clone();
    let names = v["items"]
        .as_array()?
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    Some((names, total))
}

// === known differences ===

/// A listed difference: ARCHITECTURE.md's "Deliberate differences" table has a row for each `id`.
struct Known {
    id: &'static str,
    /// Whether the difference between `ours` and `theirs` is this one.
    matches: fn(case: &Case, ours: &Answer, theirs: &Answer) -> bool,
}

/// Every difference the run accepts. Each has a row (reason, pinning test) in ARCHITECTURE.md.
const KNOWN: &[Known] = &[
    Known {
        // ks-apiserver serves many more `/kapis` APIs (IAM members, resources, config...); ksiam serves the
        // tenant and SubjectAccessReview ones and forwards the rest, which kube-apiserver does not have.
        // Authentication and authorization of them are compared; what happens after is not.
        id: "kapis-served-by-kubesphere-only",
        matches: |case, ours, theirs| {
            case.class == Class::KubeSphereOnly
                && ![401, 403].contains(&ours.status)
                && ![401, 403].contains(&theirs.status)
        },
    },
    Known {
        // `/clusters/<c>/api` and `/clusters/<c>/api/v1` (nothing after the version): ks-apiserver's
        // RequestInfoFactory indexes past the end of the path and panics (the connection closes without
        // an answer); ksiam reads them as non-resource requests.
        id: "cluster-prefixed-version-path-panics-upstream",
        matches: |case, _ours, theirs| {
            let path = case.target.split('?').next().unwrap_or_default();
            let rest = path.strip_prefix("/clusters/").and_then(|r| r.split_once('/'));
            theirs.status == 0 && matches!(rest, Some((_, "api" | "api/v1")))
        },
    },
    Known {
        // An anonymous request naming a cluster that does not exist: ks-apiserver says so (400), ksiam tells
        // which clusters exist only to authenticated callers (401), as for every other cluster name.
        id: "unknown-cluster-hidden-from-anonymous",
        matches: |case, ours, theirs| {
            case.who == "anonymous"
                && case.target.starts_with("/clusters/")
                && !case.target.starts_with("/clusters/host/")
                && ours.status == 401
                && theirs.status == 400
                && theirs.body.contains("not exists")
        },
    },
    Known {
        // An expired token: ks-apiserver prints the time since `exp` as a Go duration to the nanosecond
        // (`jwt: token is expired by 1m0.123456789s`), ksiam to the second (`by 1m0s`). Both 401.
        id: "expired-token-401-precision",
        matches: |case, ours, theirs| {
            case.who == "bad: expired"
                && ours.status == 401
                && theirs.status == 401
                && ours.body.contains("jwt: token is expired by ")
                && theirs.body.contains("jwt: token is expired by ")
        },
    },
    Known {
        // `iat` in the future: ks-apiserver prints both instants as Go `time.Time` values (the current one
        // with its monotonic clock reading), ksiam as Unix seconds. Both 401.
        id: "future-iat-401-time-format",
        matches: |case, ours, theirs| {
            case.who == "bad: iat in the future"
                && ours.status == 401
                && theirs.status == 401
                && ours.body.contains("jwt: token used before issued, iat:")
                && theirs.body.contains("jwt: token used before issued, iat:")
        },
    },
    Known {
        // A deleted ServiceAccount's token: its Secret is gone too, so ksiam says the token was revoked;
        // ks-apiserver looks the ServiceAccount up and says it is not found. Both 401.
        id: "deleted-service-account-401-message",
        matches: |case, ours, theirs| {
            case.who.ends_with(":sa-deleted")
                && ours.status == 401
                && theirs.status == 401
                && ours.body.contains("token has been revoked")
                && theirs
                    .body
                    .contains(r#"ServiceAccount.kubesphere.io \"sa-deleted\" not found"#)
        },
    },
];

/// The listed difference `answers` (ksiam's, ks-apiserver's) show, if any.
fn known(case: &Case, answers: &[Answer; 2]) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|k| (k.matches)(case, &answers[0], &answers[1]))
        .map(|k| k.id)
}

/// What the run found.
#[derive(Default)]
struct Report {
    total: usize,
    by_status: BTreeMap<u16, usize>,
    /// SubjectAccessReviews answered by ks-apiserver, and how many of them allowed.
    reviews: (usize, usize),
    known: BTreeMap<&'static str, usize>,
    /// Unlisted differences, the first [`SHOWN`] in full.
    unknown: Vec<String>,
    unknown_total: usize,
}

impl Report {
    fn add(&mut self, i: usize, case: &Case, answers: &[Answer; 2], p: &Policy, _ids: &[Identity]) {
        self.total += 1;
        let [ours, theirs] = answers;
        *self.by_status.entry(theirs.status).or_default() += 1;
        if let Some(allowed) = review_allowed(theirs) {
            self.reviews.0 += 1;
            self.reviews.1 += usize::from(allowed);
        }
        if same(ours, theirs) {
            return;
        }
        if let Some(id) = known(case, answers) {
            *self.known.entry(id).or_default() += 1;
            return;
        }
        self.unknown_total += 1;
        if self.unknown.len() >= SHOWN {
            return;
        }
        let mut s = format!("request {i}: {}\n", case.describe());
        let _ = writeln!(s, "  policy slice of {}:", case.who);
        let slice = p.slice(&case.who);
        if slice.is_empty() {
            let _ = writeln!(s, "    (no bindings)");
        }
        for line in slice {
            let _ = writeln!(s, "    {line}");
        }
        for (who, a) in [("ksiam", ours), ("ks-apiserver", theirs)] {
            let _ = writeln!(
                s,
                "  {who}: {} ({})\n    {}",
                a.status,
                a.content_type,
                a.body.trim_end().replace('\n', "\n    ")
            );
        }
        self.unknown.push(s);
    }

    fn print(&self, secs: f64) {
        let statuses: Vec<String> = self.by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        say(format!(
            "KubeSphere differential: {} requests in {secs:.1}s (ks-apiserver's status codes: {})",
            self.total,
            statuses.join(", ")
        ));
        say(format!(
            "  SubjectAccessReviews decided: {} ({} allowed)",
            self.reviews.0, self.reviews.1
        ));
        for (id, n) in &self.known {
            say(format!("  listed difference {id}: {n}"));
        }
        say(format!("  unlisted differences: {}", self.unknown_total));
        for u in &self.unknown {
            say(u.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_answers_parse() {
        let a = parse_response(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (a.status, a.content_type.as_str(), a.body.as_str()),
            (403, "application/json", "abcde")
        );
        let b = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((b.status, b.body.as_str()), (200, "ok"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert_eq!(parse_response(b"").unwrap().status, 0, "a closed connection");
    }

    #[test]
    fn every_listed_difference_is_in_the_architecture_table() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("ARCHITECTURE.md"),
        )
        .unwrap();
        let table = doc
            .split("## Deliberate differences from KubeSphere")
            .nth(1)
            .expect("the table");
        for k in KNOWN {
            assert!(
                table.contains(&format!("known as `{}`", k.id)),
                "{} is not in ARCHITECTURE.md's Deliberate differences table",
                k.id
            );
        }
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), "hello");
        assert_eq!(decode_base64("YQ==").unwrap(), "a");
        assert!(decode_base64("!!").is_err());
    }

    #[test]
    fn the_policy_is_deterministic_and_covers_every_scope() {
        let a = Policy::generate(7);
        let b = Policy::generate(7);
        assert_eq!(a.objects, b.objects);
        for kind in [
            "GlobalRoleBinding",
            "WorkspaceRoleBinding",
            "ClusterRoleBinding",
            "RoleBinding",
        ] {
            assert!(
                a.objects.iter().any(|o| o["kind"] == kind),
                "no {kind} in the generated policy"
            );
        }
        assert!(a.objects.iter().any(|o| !o["aggregationRoleTemplates"].is_null()));
        assert!(a.namespaces.iter().any(|(_, ws)| ws.is_none()));
    }

    #[test]
    fn only_error_bodies_are_compared() {
        let a = |status, body: &str| Answer {
            status,
            content_type: String::new(),
            body: body.into(),
        };
        assert!(same(&a(200, "{}"), &a(200, "{ }")));
        let list = |names: &str, total| format!(r#"{{"items":[{names}],"totalItems":{total}}}"#);
        let ws = |n: &str| format!(r#"{{"metadata":{{"name":"{n}"}},"status":{{}}}}"#);
        assert!(same(
            &a(200, &list(&ws("a"), 1)),
            &a(
                200,
                r#"{ "items": [ {"metadata": {"name": "a"}} ], "totalItems": 1 }"#
            )
        ));
        assert!(!same(&a(200, &list(&ws("a"), 1)), &a(200, &list(&ws("b"), 1))));
        assert!(!same(&a(200, &list(&ws("a"), 1)), &a(200, &list(&ws("a"), 2))));
        assert!(!same(&a(403, "x"), &a(403, "y")));
        assert!(!same(&a(200, "x"), &a(404, "x")));
        let review =
            |allowed| format!(r#"{{"kind":"SubjectAccessReview","status":{{"allowed":{allowed}}}}}"#);
        assert!(same(&a(200, &review(true)), &a(200, &review(true))));
        assert!(!same(&a(200, &review(true)), &a(200, &review(false))));
    }
}
