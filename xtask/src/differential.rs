//! The differential resolver test: what the gateway authorizes (`ksiam_rbac::Target`) against what
//! kube-apiserver makes of the request the gateway forwards (Kubernetes' own code, in the Go peer
//! `benches/peers/k8s-requestinfo`).
//!
//! ```text
//!   generated + mutated request targets ──► Target::parse(method, path, url query | X-KubeSphere-Rawquery)
//!        refused (TargetError): counted            │ accepted, served by kube-apiserver
//!                                                  ▼
//!                         target.forwarded() ──► k8s-requestinfo: url.ParseRequestURI, RequestInfoFactory,
//!                                                  url.ParseQuery, the list-options ParameterCodec
//!        └──────────── compared request by request: every difference is a failure ────────────┘
//! ```
//!
//! For every accepted Kubernetes request the peer must read the forwarded target without error, with the
//! same decoded path and the same query pairs. When kube-apiserver would execute the request (its
//! `RequestInfoFactory` succeeds and, for list, watch and deletecollection, its list options decode), its
//! verb, group, version, resource, subresource, namespace, name and resource-ness must equal what was
//! authorized, and the first `labelSelector`, `fieldSelector` and `watch` it reads must be ours. A watch
//! KubeSphere rescopes to a workspace must be one kube-apiserver filters by exactly that workspace label.
//! Re-resolving the forwarded target must give the same reading (idempotence).
//!
//! Not compared, on purpose:
//! - `scope`, `workspace` and `cluster`: KubeSphere concepts kube-apiserver does not have. The cluster prefix
//!   is removed before forwarding (so the path kube-apiserver sees has none, which the path comparison
//!   checks); the one place where a workspace changes what is authorized without changing what Kubernetes
//!   reads, the watch rescoping by `labelSelector=kubesphere.io/workspace=<ws>`, is checked against the label
//!   selector kube-apiserver actually applies.
//! - The letter case of non-resource verbs: KubeSphere keeps the HTTP method (`GET`), Kubernetes lowercases
//!   it; the two are compared case-insensitively.
//! - Requests kube-apiserver refuses (a `RequestInfoFactory` error, or list options it cannot decode on a
//!   list, watch or deletecollection): nothing is executed, so they are counted, not compared.
//!
//! Inputs are generated from a seed (`KSIAM_DIFF_SEED`, or `--seed`), so a failure can be replayed.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use ksiam_rbac::request::workspace_of_selector;
use ksiam_rbac::{RequestInfo, Scope, Target, TargetError};
use serde_json::Value;

use crate::peers::K8S_REQUESTINFO;
use crate::progress::{Step, say};

/// Generated inputs in `cargo xtask conformance` (and so `cargo xtask test`).
pub const QUICK: usize = 5_000;
/// Generated inputs in `cargo xtask conformance --full`.
pub const FULL: usize = 100_000;
/// The seed unless `KSIAM_DIFF_SEED` or `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 0x6b73_6961_6d31_3221;
/// Disagreements printed in full (one per kind is always printed: the shortest).
const SHOWN: usize = 10;

/// Known inputs that are always checked first: every one that ever exposed a difference, and the spellings
/// of the holes of issue 12.
/// `(method, path, url query, X-KubeSphere-Rawquery)`.
pub const REGRESSIONS: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    // Issue 12, hole 1: a `#` hides a watch and a workspace selector from the forwarded URI.
    (
        "GET",
        "/api/v1/secrets",
        None,
        Some("#&watch=1&labelSelector=kubesphere.io/workspace%3Dws"),
    ),
    (
        "GET",
        "/api/v1/secrets",
        Some("a=b#&watch=1&labelSelector=kubesphere.io/workspace%3Dws"),
        None,
    ),
    // Issue 12, hole 4: pairs Go's net/url drops.
    (
        "GET",
        "/api/v1/namespaces/n/secrets",
        Some("fieldSelector=metadata.name%3Dallowed;"),
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces/n/secrets",
        Some("fieldSelector=metadata.name%3Dallowed&x=%zz"),
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces/n/secrets",
        Some("x=%zz&fieldSelector=metadata.name%3Dallowed"),
        None,
    ),
    // Field selectors read as Kubernetes reads them.
    (
        "GET",
        "/api/v1/namespaces/n/secrets",
        Some("fieldSelector=metadata.name%3D%3Dallowed"),
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces/n/secrets",
        Some("fieldSelector=metadata.name%3Da%5C%2Cb"),
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces/n/secrets",
        Some("fieldSelector=metadata.name%3Db,metadata.name%3Da"),
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces/n/secrets",
        Some("fieldSelector=metadata.name+%3D+a"),
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces/n/secrets",
        Some("fieldSelector=metadata.name%21%3Da"),
        None,
    ),
    (
        "DELETE",
        "/api/v1/namespaces/n/secrets",
        Some("fieldSelector=metadata.name%3Da"),
        None,
    ),
    // Watch forms and the workspace rescoping.
    (
        "GET",
        "/clusters/host/api/v1/namespaces",
        None,
        Some("watch=1&labelSelector=kubesphere.io/workspace%3Dws"),
    ),
    (
        "GET",
        "/api/v1/watch/namespaces",
        Some("labelSelector=kubesphere.io%2Fworkspace%3D%3Dws"),
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces",
        Some("watch=FALSE&labelSelector=kubesphere.io/workspace%3Dws"),
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces",
        Some("watch&labelSelector=kubesphere.io/workspace%3Dws"),
        None,
    ),
    // Cluster prefixes, leading and legacy.
    ("GET", "/api/clusters/host", None, None),
    ("GET", "/api/clusters/host/v1/namespaces/n/pods", None, None),
    ("GET", "/clusters/host/api/v1", None, None),
    // Namespace subresources.
    ("PUT", "/api/v1/namespaces/n/finalize", None, None),
    ("PATCH", "/api/v1/namespaces/n/status", None, None),
    // Path spellings.
    (
        "GET",
        "/api/v1/namespaces/default/../kube-system/secrets",
        None,
        None,
    ),
    (
        "GET",
        "/api/v1/namespaces/default%2F..%2Fkube-system/secrets",
        None,
        None,
    ),
    ("GET", "/%61pi/v1/namespaces/n/pods", None, None),
    // Found by this test (seed 0x6b7369616d313221), closed: KubeSphere's workspace path form
    // (`.../workspaces/<ws>/<resource>...`) was applied to /api and /apis, where kube-apiserver reads
    // `workspaces` as the resource, `<ws>` as the name and the next part as a subresource.
    ("GET", "/api/v1/workspaces/a.b/n1", None, None),
    ("PUT", "/api/v1/workspaces/n1/namespaces/p", None, None),
    (
        "PUT",
        "/apis/tenant.kubesphere.io/v1beta1/workspacetemplates/ws/status",
        None,
        None,
    ),
    (
        "DELETE",
        "/apis/tenant.kubesphere.io/v1beta1/workspaces/ws/namespaces/kube-system",
        None,
        None,
    ),
    // Found by this test, closed (refused now): a literal `#` in the raw path was accepted, forwarded as
    // `%23`, and that forwarded path was then refused by `path::canonical` (not idempotent).
    ("DELETE", "/api/v1/us#ers", None, None),
    // Found by the fuzz target, closed (refused now): a forwarded path that names a cluster again read
    // differently when resolved again (kube-apiserver reads it as ksiam first did: version `clusters`).
    ("GET", "/api/clusters/a/clusters/b/v1/pods", None, None),
    ("GET", "/clusters/a/api/clusters/b/v1/pods", None, None),
];

/// `cargo xtask conformance [--full]`: the differential step.
pub fn run_cli(root: &Path, full: bool) -> anyhow::Result<()> {
    let seed = match std::env::var("KSIAM_DIFF_SEED") {
        Ok(v) => parse_seed(&v)?,
        Err(_) => DEFAULT_SEED,
    };
    let count = match std::env::var("KSIAM_DIFF_COUNT") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("KSIAM_DIFF_COUNT={v} is not a count"))?,
        Err(_) if full => FULL,
        Err(_) => QUICK,
    };
    run(root, count, seed)
}

/// A seed in decimal or `0x` hex.
pub fn parse_seed(v: &str) -> anyhow::Result<u64> {
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.with_context(|| format!("seed {v:?} is not a number"))
}

/// Generates `count` inputs from `seed` (after the regression table), and compares them all.
pub fn run(root: &Path, count: usize, seed: u64) -> anyhow::Result<()> {
    let peer = K8S_REQUESTINFO.ensure(root)?;
    say(format!("k8s-requestinfo: {}", K8S_REQUESTINFO.versions(&peer)?));
    let step = Step::start(format!(
        "differential: {count} generated request targets (seed {seed:#x}) + {} regressions",
        REGRESSIONS.len()
    ));
    let start = Instant::now();
    let mut inputs: Vec<Input> = REGRESSIONS
        .iter()
        .map(|&(m, p, q, h)| Input {
            method: m.to_owned(),
            path: p.to_owned(),
            url_query: q.map(str::to_owned),
            header: h.map(str::to_owned),
        })
        .collect();
    let mut rng = Rng::new(seed);
    inputs.extend((0..count).map(|_| generate(&mut rng)));

    let mut summary = Summary {
        inputs: inputs.len(),
        ..Summary::default()
    };
    let mut sent: Vec<(usize, Target)> = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        match input.parse() {
            Err(e) => *summary.refused.entry(refusal_kind(&e)).or_default() += 1,
            Ok(t) if t.info.is_kubernetes_request => sent.push((i, t)),
            Ok(_) => summary.not_kubernetes += 1,
        }
    }
    let requests: Vec<(String, String)> = sent
        .iter()
        .map(|(i, t)| (inputs[*i].method.clone(), t.forwarded()))
        .collect();
    let readings = ask_peer(&peer, &requests)?;
    let mut disagreements = Vec::new();
    for ((i, ours), kube) in sent.iter().zip(&readings) {
        let input = &inputs[*i];
        let outcome = compare(&input.method, ours, kube);
        summary.count(ours, &outcome);
        if let Outcome::Differ(diffs) = outcome {
            disagreements.push(Disagreement {
                input: input.clone(),
                forwarded: ours.forwarded(),
                ours: describe_ours(ours),
                kube: kube.clone(),
                diffs,
            });
        }
    }
    step.done();
    say(format!(
        "{} ({:.1}s)",
        summary.line(disagreements.len(), seed),
        start.elapsed().as_secs_f64()
    ));
    say(format!("  refused by kind: {:?}", summary.refused));
    say(format!("  compared: {:?}", summary.compared_by));
    if disagreements.is_empty() {
        return Ok(());
    }
    // One per kind of difference (the shortest input), then the first few in input order.
    let mut by_kind: BTreeMap<String, &Disagreement> = BTreeMap::new();
    for d in &disagreements {
        let kind = d.kind();
        let shorter = by_kind
            .get(&kind)
            .is_none_or(|prev| d.input.len() < prev.input.len());
        if shorter {
            by_kind.insert(kind, d);
        }
    }
    say(format!(
        "{} disagreements, {} kinds; the shortest of each kind:",
        disagreements.len(),
        by_kind.len()
    ));
    for (kind, d) in &by_kind {
        say(format!("  [{kind}] {d}"));
    }
    say("the first ones:");
    for d in disagreements.iter().take(SHOWN) {
        say(format!("  {d}"));
    }
    let out = root.join("target").join("peers").join("differential");
    std::fs::create_dir_all(&out)?;
    let file = out.join(format!("disagreements-{seed:#x}.txt"));
    let text: String = disagreements.iter().map(|d| format!("{d}\n")).collect();
    std::fs::write(&file, text)?;
    bail!(
        "the gateway authorizes something other than what kube-apiserver executes on {} of {} inputs (seed {seed:#x}); \
         all of them in {}",
        disagreements.len(),
        summary.inputs,
        file.display()
    )
}

/// One request as the gateway receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub method: String,
    /// The raw path (still percent-encoded).
    pub path: String,
    /// The URL's query (without `?`), if it has one.
    pub url_query: Option<String>,
    /// `X-KubeSphere-Rawquery`, if sent.
    pub header: Option<String>,
}

impl Input {
    pub fn parse(&self) -> Result<Target, TargetError> {
        Target::parse(
            &self.method,
            &self.path,
            self.url_query.as_deref(),
            self.header.as_deref(),
        )
    }

    fn len(&self) -> usize {
        self.path.len()
            + self.url_query.as_ref().map_or(0, String::len)
            + self.header.as_ref().map_or(0, String::len)
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(q) = &self.url_query {
            write!(f, "?{q}")?;
        }
        if let Some(h) = &self.header {
            write!(f, " [X-KubeSphere-Rawquery: {h}]")?;
        }
        Ok(())
    }
}

fn refusal_kind(e: &TargetError) -> &'static str {
    match e {
        TargetError::Path(_) => "path",
        TargetError::Query(_) => "query",
        TargetError::Resolve(_) => "resolve",
    }
}

/// Sends `(method, target)` lines to the peer and reads one reading per line.
fn ask_peer(peer: &Path, requests: &[(String, String)]) -> anyhow::Result<Vec<Value>> {
    let mut child = Command::new(peer)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", peer.display()))?;
    let mut stdin = child.stdin.take().context("peer stdin")?;
    let lines: Vec<String> = requests
        .iter()
        .map(|(m, t)| serde_json::json!({ "method": m, "target": t }).to_string())
        .collect();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(&mut stdin);
        for l in &lines {
            writeln!(out, "{l}")?;
        }
        out.flush()
    });
    let stdout = child.stdout.take().context("peer stdout")?;
    let mut readings = Vec::with_capacity(requests.len());
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        readings
            .push(serde_json::from_str(&line).with_context(|| format!("k8s-requestinfo printed {line:?}"))?);
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
        .context("writing to k8s-requestinfo")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("k8s-requestinfo failed with {status}");
    }
    if readings.len() != requests.len() {
        bail!(
            "k8s-requestinfo answered {} of {} requests",
            readings.len(),
            requests.len()
        );
    }
    Ok(readings)
}

/// The result of comparing one forwarded request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// kube-apiserver executes exactly what was authorized.
    Same,
    /// kube-apiserver refuses the request (and forwards nothing was read differently).
    KubeRefuses,
    /// Differences, one line each.
    Differ(Vec<String>),
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Compares our reading of a request with Kubernetes' reading of the target we forward.
pub fn compare(method: &str, ours: &Target, kube: &Value) -> Outcome {
    let mut diffs = Vec::new();
    let forwarded = ours.forwarded();
    let info = &ours.info;
    if !s(kube, "parseError").is_empty() {
        diffs.push(format!(
            "net/http cannot parse the forwarded target: {}",
            s(kube, "parseError")
        ));
        return Outcome::Differ(diffs);
    }
    // What is on the wire must read the same in Go: path and every pair.
    if s(kube, "path") != info.path {
        diffs.push(format!("path: ours {:?}, kube {:?}", info.path, s(kube, "path")));
    }
    if !s(kube, "queryError").is_empty() {
        diffs.push(format!(
            "net/url refuses the forwarded query: {}",
            s(kube, "queryError")
        ));
    }
    let mut ours_query: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in ours.query.pairs() {
        ours_query.entry(k).or_default().push(v);
    }
    let kube_query: BTreeMap<&str, Vec<&str>> = kube
        .get("query")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, vs)| {
                    let vs = vs
                        .as_array()
                        .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).collect());
                    (k.as_str(), vs)
                })
                .collect()
        })
        .unwrap_or_default();
    if ours_query != kube_query {
        diffs.push(format!("query: ours {ours_query:?}, kube {kube_query:?}"));
    }
    // Re-resolving what we forward must give what we authorized (the cluster prefix is gone by then).
    match Target::parse(method, &path_of(&forwarded), query_of(&forwarded), None) {
        Ok(again) => {
            // Everything the authorizer reads, but the cluster (the prefix is gone by then).
            let decided = |i: &RequestInfo| {
                let mut a = i.attributes("", &[]);
                a.cluster = "";
                format!("{a:?}")
            };
            let got = decided(&again.info);
            if got != decided(info) || again.query != ours.query {
                diffs.push(format!("not idempotent: forwarded resolves to {got:?}"));
            }
        }
        Err(e) => diffs.push(format!("not idempotent: the forwarded target is refused: {e}")),
    }

    let kube_verb = s(kube, "verb");
    let refuses = !s(kube, "infoError").is_empty()
        || (matches!(kube_verb, "list" | "watch" | "deletecollection")
            && !s(kube, "listOptionsError").is_empty());
    if refuses {
        return if diffs.is_empty() {
            Outcome::KubeRefuses
        } else {
            Outcome::Differ(diffs)
        };
    }
    let kube_resource_request = kube.get("isResourceRequest").and_then(Value::as_bool) == Some(true);
    let verb_same = if info.is_resource_request {
        info.verb == kube_verb
    } else {
        info.verb.eq_ignore_ascii_case(kube_verb)
    };
    if !verb_same {
        diffs.push(format!("verb: ours {:?}, kube {kube_verb:?}", info.verb));
    }
    for (field, ours_v, key) in [
        ("group", &info.api_group, "apiGroup"),
        ("version", &info.api_version, "apiVersion"),
        ("resource", &info.resource, "resource"),
        ("subresource", &info.subresource, "subresource"),
        ("namespace", &info.namespace, "namespace"),
        ("name", &info.name, "name"),
    ] {
        if ours_v != s(kube, key) {
            diffs.push(format!("{field}: ours {ours_v:?}, kube {:?}", s(kube, key)));
        }
    }
    if info.is_resource_request != kube_resource_request {
        diffs.push(format!(
            "resource request: ours {}, kube {kube_resource_request}",
            info.is_resource_request
        ));
    }
    // The selectors and watch flag kube-apiserver's list handler reads.
    let first = |key: &str| kube_query.get(key).and_then(|v| v.first().copied());
    for key in ["labelSelector", "fieldSelector", "watch"] {
        if ours.query.first(key) != first(key) {
            diffs.push(format!(
                "{key}: ours {:?}, kube {:?}",
                ours.query.first(key),
                first(key)
            ));
        }
    }
    if s(kube, "listOptionsError").is_empty() && info.is_resource_request && info.name.is_empty() {
        let ours_watch = info.verb == "watch";
        let kube_watch = kube.get("watch").and_then(Value::as_bool) == Some(true);
        if kube_verb == "list" && kube_watch != ours_watch {
            diffs.push(format!(
                "watch: ours {ours_watch}, kube's list options {kube_watch}"
            ));
        }
    }
    // A watch rescoped to a workspace is authorized for that workspace only: kube-apiserver must filter
    // by exactly that label.
    if info.verb == "watch"
        && info.scope == Scope::Workspace
        && let Some(ws) = workspace_of_selector(ours.query.first("labelSelector").unwrap_or_default())
    {
        let want = format!("kubesphere.io/workspace={ws}");
        if s(kube, "labelSelector") != want {
            diffs.push(format!(
                "workspace watch: authorized for workspace {ws:?}, kube filters by {:?}",
                s(kube, "labelSelector")
            ));
        }
    }
    if diffs.is_empty() {
        Outcome::Same
    } else {
        Outcome::Differ(diffs)
    }
}

fn path_of(target: &str) -> String {
    target.split_once('?').map_or(target, |(p, _)| p).to_owned()
}

fn query_of(target: &str) -> Option<&str> {
    target.split_once('?').map(|(_, q)| q)
}

fn describe_ours(t: &Target) -> String {
    let i = &t.info;
    format!(
        "verb={} group={:?} version={:?} ns={:?} resource={:?} sub={:?} name={:?} resource_request={} \
         scope={} workspace={:?} cluster={:?}",
        i.verb,
        i.api_group,
        i.api_version,
        i.namespace,
        i.resource,
        i.subresource,
        i.name,
        i.is_resource_request,
        i.scope,
        i.workspace,
        i.cluster
    )
}

struct Disagreement {
    input: Input,
    forwarded: String,
    ours: String,
    kube: Value,
    diffs: Vec<String>,
}

impl Disagreement {
    /// The fields that differ, without their values: inputs of one kind share a cause.
    fn kind(&self) -> String {
        let mut fields: Vec<&str> = self
            .diffs
            .iter()
            .map(|d| d.split(':').next().unwrap_or(d))
            .collect();
        fields.dedup();
        fields.join(",")
    }
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = &self.kube;
        write!(
            f,
            "{}\n      forwarded {}\n      differs: {}\n      ours: {}\n      kube: verb={} group={:?} version={:?} \
             ns={:?} resource={:?} sub={:?} name={:?} resource_request={} infoError={:?} listOptionsError={:?} \
             labelSelector={:?} fieldSelector={:?} watch={}",
            self.input,
            self.forwarded,
            self.diffs.join("; "),
            self.ours,
            s(k, "verb"),
            s(k, "apiGroup"),
            s(k, "apiVersion"),
            s(k, "namespace"),
            s(k, "resource"),
            s(k, "subresource"),
            s(k, "name"),
            k.get("isResourceRequest").and_then(Value::as_bool) == Some(true),
            s(k, "infoError"),
            s(k, "listOptionsError"),
            s(k, "labelSelector"),
            s(k, "fieldSelector"),
            k.get("watch").and_then(Value::as_bool) == Some(true),
        )
    }
}

#[derive(Default)]
struct Summary {
    inputs: usize,
    refused: BTreeMap<&'static str, usize>,
    not_kubernetes: usize,
    compared: usize,
    kube_refuses: usize,
    /// What the compared requests were, to show the generator reaches the interesting cases.
    compared_by: BTreeMap<&'static str, usize>,
}

impl Summary {
    fn count(&mut self, ours: &Target, outcome: &Outcome) {
        match outcome {
            Outcome::KubeRefuses => self.kube_refuses += 1,
            Outcome::Same | Outcome::Differ(_) => {
                self.compared += 1;
                let i = &ours.info;
                let mut tag = |t| *self.compared_by.entry(t).or_default() += 1;
                if !i.is_resource_request {
                    tag("non-resource");
                }
                match i.verb.as_str() {
                    "list" => tag("list"),
                    "watch" => tag("watch"),
                    "deletecollection" => tag("deletecollection"),
                    "get" => tag("get"),
                    "proxy" => tag("proxy"),
                    _ => {}
                }
                if !i.subresource.is_empty() {
                    tag("subresource");
                }
                if !i.cluster.is_empty() {
                    tag("cluster prefix");
                }
                if matches!(i.verb.as_str(), "list" | "watch" | "deletecollection") && !i.name.is_empty() {
                    tag("name from fieldSelector");
                }
                if i.verb == "watch" && i.scope == Scope::Workspace {
                    tag("workspace watch");
                }
            }
        }
    }

    fn line(&self, disagreements: usize, seed: u64) -> String {
        let refused: usize = self.refused.values().sum();
        format!(
            "differential: {} inputs, {refused} refused, {} not Kubernetes requests, {} compared, \
             {} kube-would-refuse, {disagreements} disagreements (seed {seed:#x})",
            self.inputs, self.not_kubernetes, self.compared, self.kube_refuses
        )
    }
}

// === the generator ===

/// SplitMix64: small, fast, and the same sequence on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "GET", "GET", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "DELETE", "OPTIONS",
    "CONNECT", "TRACE", "get", "PROPFIND",
];
const GROUPS: &[&str] = &[
    "apps",
    "rbac.authorization.k8s.io",
    "tenant.kubesphere.io",
    "iam.kubesphere.io",
    "batch",
    "apiextensions.k8s.io",
    "v1",
];
const VERSIONS: &[&str] = &["v1", "v1", "v1beta1", "v1alpha2", "v2"];
const RESOURCES: &[&str] = &[
    "pods",
    "secrets",
    "configmaps",
    "namespaces",
    "deployments",
    "services",
    "nodes",
    "serviceaccounts",
    "users",
    "globalroles",
    "workspacetemplates",
    "clusterroles",
    "rolebindings",
    "events",
];
const SUBRESOURCES: &[&str] = &[
    "status",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "finalize",
    "scale",
    "binding",
    "eviction",
    "token",
    "ephemeralcontainers",
];
const NAMES: &[&str] = &[
    "default",
    "kube-system",
    "p",
    "a.b",
    "x-y",
    "ws",
    "host",
    "n1",
    "system-workspace",
];
/// Segments that mean something to one resolver or the other, and characters on which URL parsers differ.
const TRICKY: &[&str] = &[
    "watch",
    "proxy",
    "namespaces",
    "status",
    "finalize",
    "clusters",
    "api",
    "apis",
    "kapis",
    "workspaces",
    "workspacetemplates",
    "v1",
    "..",
    ".",
    "",
    "...",
    "a:b",
    "a@b",
    "a~b",
    "a!b",
    "a$b",
    "a'b",
    "a(b)",
    "a*b",
    "a+b",
    "a,b",
    "a=b",
    "a&b",
    "a;b",
    "a#b",
    "a?b",
    "a%b",
    "a b",
    "a/b",
    "a\\b",
    "\u{e9}",
    "%",
];

fn name(rng: &mut Rng) -> String {
    if rng.chance(12) {
        (*rng.pick(TRICKY)).to_owned()
    } else {
        (*rng.pick(NAMES)).to_owned()
    }
}

fn hex_escape(out: &mut String, b: u8, lower: bool) {
    let digits: &[u8; 16] = if lower {
        b"0123456789abcdef"
    } else {
        b"0123456789ABCDEF"
    };
    out.push('%');
    out.push(char::from(digits[usize::from(b >> 4)]));
    out.push(char::from(digits[usize::from(b & 15)]));
}

/// Writes `s` percent-encoded in one of several ways: as is, escaping what must be escaped, escaping
/// random bytes, escaping every byte, or twice.
fn encode(rng: &mut Rng, s: &str, must: &[u8]) -> String {
    let lower = rng.chance(30);
    let mut out = String::new();
    match rng.below(20) {
        // As is: whatever the text holds goes on the wire.
        0..=2 => out.push_str(s),
        // Every byte.
        3 => s.bytes().for_each(|b| hex_escape(&mut out, b, lower)),
        // Twice: the escape's `%` escaped again.
        4 => {
            for b in s.bytes() {
                out.push_str("%25");
                let mut once = String::new();
                hex_escape(&mut once, b, lower);
                out.push_str(&once[1..]);
            }
        }
        // What must be escaped, plus random others.
        n => {
            let extra = n >= 15;
            for b in s.bytes() {
                let needed = must.contains(&b) || !b.is_ascii() || b.is_ascii_control() || b == b' ';
                if b == b' ' && !must.contains(&b'/') && rng.chance(50) {
                    out.push('+');
                } else if needed || (extra && rng.chance(25)) {
                    hex_escape(&mut out, b, lower);
                } else {
                    out.push(char::from(b));
                }
            }
        }
    }
    out
}

/// Path segments of a request served by kube-apiserver (or near one).
fn path_segments(rng: &mut Rng) -> Vec<String> {
    let mut segs: Vec<String> = Vec::new();
    let leading_cluster = rng.chance(15);
    if leading_cluster {
        segs.push("clusters".into());
        segs.push(name(rng));
    }
    let prefix = match rng.below(100) {
        0..=44 => "api",
        45..=91 => "apis",
        92..=94 => "kapis",
        _ => *rng.pick(&["version", "healthz", "openapi", "metrics", "clusters", "oauth"]),
    };
    segs.push(prefix.into());
    if !leading_cluster && rng.chance(12) {
        segs.push("clusters".into());
        segs.push(name(rng));
    }
    if prefix == "apis" || prefix == "kapis" {
        segs.push((*rng.pick(GROUPS)).into());
    }
    if rng.chance(96) {
        segs.push((*rng.pick(VERSIONS)).into());
    }
    if rng.chance(15) {
        segs.push((*rng.pick(&["watch", "watch", "proxy"])).into());
    }
    match rng.below(100) {
        // A namespaced resource.
        0..=39 => {
            segs.push("namespaces".into());
            segs.push(name(rng));
            segs.push((*rng.pick(RESOURCES)).into());
            if rng.chance(55) {
                segs.push(name(rng));
                if rng.chance(35) {
                    segs.push((*rng.pick(SUBRESOURCES)).into());
                    if rng.chance(20) {
                        segs.push(name(rng));
                    }
                }
            }
        }
        // The namespaces themselves, their status and finalize.
        40..=54 => {
            segs.push("namespaces".into());
            if rng.chance(80) {
                segs.push(name(rng));
                if rng.chance(50) {
                    segs.push((*rng.pick(&["status", "finalize", "finalize", "pods", "x"])).into());
                }
            }
        }
        // A cluster-scoped resource.
        55..=79 => {
            segs.push((*rng.pick(RESOURCES)).into());
            if rng.chance(50) {
                segs.push(name(rng));
                if rng.chance(30) {
                    segs.push((*rng.pick(SUBRESOURCES)).into());
                }
            }
        }
        // KubeSphere's workspace forms.
        80..=89 => {
            segs.push((*rng.pick(&["workspaces", "workspacetemplates"])).into());
            if rng.chance(85) {
                segs.push(name(rng));
                for _ in 0..rng.below(4) {
                    segs.push(if rng.chance(50) {
                        (*rng.pick(RESOURCES)).into()
                    } else {
                        name(rng)
                    });
                }
            }
        }
        // Random segments.
        _ => {
            for _ in 0..rng.below(5) {
                segs.push(if rng.chance(50) {
                    (*rng.pick(TRICKY)).into()
                } else {
                    name(rng)
                });
            }
        }
    }
    if rng.chance(8) {
        let at = rng.below(segs.len() + 1);
        segs.insert(at, (*rng.pick(&[".", "..", ""])).into());
    }
    segs
}

fn label_selector(rng: &mut Rng) -> String {
    let ws = name(rng);
    match rng.below(12) {
        0..=4 => format!("kubesphere.io/workspace={ws}"),
        5 => format!("kubesphere.io/workspace=={ws}"),
        6 => format!("kubesphere.io/workspace!={ws}"),
        7 => format!("kubesphere.io/workspace in ({ws})"),
        8 => format!("a=b,kubesphere.io/workspace={ws}"),
        9 => format!("kubesphere.io/workspace={ws},kubesphere.io/workspace=other"),
        10 => format!(" kubesphere.io/workspace = {ws} "),
        _ => format!("app={ws}"),
    }
}

fn field_selector(rng: &mut Rng) -> String {
    let n = name(rng);
    match rng.below(16) {
        0..=3 => format!("metadata.name={n}"),
        4 => format!("metadata.name=={n}"),
        5 => format!("metadata.name!={n}"),
        6 => format!("metadata.name={n}\\,x"),
        7 => format!("metadata.name={n}\\=x"),
        8 => format!("metadata.name={n},metadata.namespace=x"),
        9 => format!("spec.nodeName=x,metadata.name={n}"),
        10 => format!("metadata.name={n},metadata.name=other"),
        11 => format!(" metadata.name = {n} "),
        12 => "metadata.name=".to_owned(),
        13 => format!("metadata.name={n}\\x"),
        14 => format!("metadata.name={n}=x"),
        _ => format!("status.phase={n}"),
    }
}

/// One `key=value` pair of a query, or a junk token.
fn pair(rng: &mut Rng) -> String {
    const KEY_MUST: &[u8] = b"%&#+;=";
    const VALUE_MUST: &[u8] = b"%&#+;";
    let (key, value): (&str, Option<String>) = match rng.below(100) {
        0..=14 => {
            let v = *rng.pick(&["1", "true", "0", "false", "FALSE", "", "yes", "True"]);
            ("watch", (!rng.chance(8)).then(|| v.to_owned()))
        }
        15..=34 => ("labelSelector", Some(label_selector(rng))),
        35..=59 => ("fieldSelector", Some(field_selector(rng))),
        60..=63 => ("dryRun", Some("All".into())),
        64..=65 => ("dryrun", Some("All".into())),
        66..=69 => ("resourceVersion", Some((*rng.pick(&["0", "123", ""])).into())),
        70..=72 => ("limit", Some((*rng.pick(&["500", "-1", "x"])).into())),
        73..=75 => ("timeoutSeconds", Some((*rng.pick(&["30", "abc"])).into())),
        76..=78 => ("command", Some((*rng.pick(&["sh", "-c", "echo hi"])).into())),
        79..=80 => ("allowWatchBookmarks", Some("true".into())),
        81..=82 => ("continue", Some("abc".into())),
        83..=84 => ("pretty", Some("true".into())),
        // A junk token, written as is.
        _ => {
            return (*rng.pick(&[
                "#",
                ";",
                "%zz",
                "%",
                "%2",
                "+",
                "&",
                "=",
                "%26",
                "%3D",
                "%23",
                "%3B",
                "%25",
                "%2B",
                "%2523",
                "%00",
                "%ff",
                "a=%c3%a9",
                "watch%3D1",
                "fieldSelector%3Dmetadata.name%3Dx",
                "#watch=1",
                "?watch=1",
                "x=1#y",
                "a;b=c",
            ]))
            .to_owned();
        }
    };
    let key = encode(rng, key, KEY_MUST);
    match value {
        None => key,
        Some(v) => format!("{key}={}", encode(rng, &v, VALUE_MUST)),
    }
}

fn query(rng: &mut Rng) -> String {
    let mut out = String::new();
    if rng.chance(5) {
        out.push('&');
    }
    for i in 0..=rng.below(5) {
        if i > 0 {
            out.push_str(if rng.chance(95) { "&" } else { ";" });
        }
        out.push_str(&pair(rng));
    }
    if rng.chance(5) {
        out.push('&');
    }
    out
}

/// Small edits anywhere in a target: the spellings no generator thinks of.
fn mutate(rng: &mut Rng, target: &str) -> String {
    const TOKENS: &[&str] = &[
        "/",
        ".",
        "..",
        ";",
        "#",
        "?",
        "&",
        "=",
        "+",
        "%",
        "%2",
        "%zz",
        "%25",
        "%2F",
        "%2f",
        "%2E",
        "%2e",
        "%3B",
        "%3b",
        "%23",
        "%3F",
        "%26",
        "%3D",
        "%2B",
        "%00",
        "%5C",
        "\\",
        " ",
        "//",
        "/./",
        "/../",
        "watch/",
        "namespaces/",
        "clusters/c/",
        ",",
        "!",
        "==",
        "!=",
        "\\,",
        "\\=",
        "%2C",
        "%5C%2C",
    ];
    let mut b: Vec<u8> = target.as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(b.len() + 1);
        match rng.below(6) {
            0 | 1 => {
                let t = rng.pick(TOKENS).as_bytes();
                b.splice(at..at, t.iter().copied());
            }
            2 if at < b.len() => {
                let end = (at + 1 + rng.below(3)).min(b.len());
                b.drain(at..end);
            }
            3 if at < b.len() => {
                // Escape one byte.
                let mut e = String::new();
                hex_escape(&mut e, b[at], rng.chance(50));
                b.splice(at..=at, e.bytes());
            }
            4 => {
                // Unescape one escape, if there is one from here on.
                if let Some(p) = b[at..]
                    .windows(3)
                    .position(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
                {
                    let p = at + p;
                    let v = u8::from_str_radix(std::str::from_utf8(&b[p + 1..p + 3]).unwrap_or("00"), 16)
                        .unwrap_or(0);
                    b.splice(p..p + 3, [v]);
                }
            }
            _ => {
                // Repeat a piece between separators.
                let seps = |c: &u8| matches!(c, b'/' | b'&' | b'?');
                let start = b[..at].iter().rposition(seps).unwrap_or(0);
                let end = b[at..].iter().position(seps).map_or(b.len(), |p| at + p);
                let piece = b[start..end].to_vec();
                b.splice(end..end, piece);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// One input: a generated target, mutated half of the time, sent with its query in the URL, in the
/// `X-KubeSphere-Rawquery` header, or both.
pub fn generate(rng: &mut Rng) -> Input {
    const PATH_MUST: &[u8] = b"%/?#;\\";
    let method = (*rng.pick(METHODS)).to_owned();
    let segs = path_segments(rng);
    let mut path = String::new();
    for s in &segs {
        path.push('/');
        path.push_str(&encode(rng, s, PATH_MUST));
    }
    if rng.chance(6) {
        path.push('/');
    }
    let mut target = path;
    let with_query = rng.chance(75);
    if with_query {
        target.push('?');
        target.push_str(&query(rng));
    }
    if rng.chance(50) {
        target = mutate(rng, &target);
    }
    let (path, q) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target, None),
    };
    let (url_query, header) = match (q, rng.below(20)) {
        (None, _) => (None, None),
        (Some(q), 0..=10) => (Some(q), None),
        (Some(q), 11..=16) => (None, Some(q)),
        // Both: the URL's query wins.
        (Some(q), 17) => (Some(q), Some(query(rng))),
        // An empty URL query: the header is read.
        (Some(q), 18) => (Some(String::new()), Some(q)),
        (Some(q), _) => (Some(query(rng)), Some(q)),
    };
    Input {
        method,
        path,
        url_query,
        header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(raw: &str) -> Target {
        let (p, q) = raw.split_once('?').map_or((raw, None), |(p, q)| (p, Some(q)));
        Target::parse("GET", p, q, None).unwrap()
    }

    fn kube(overrides: Value) -> Value {
        let mut v = serde_json::json!({
            "path": "/api/v1/namespaces/n/pods", "rawQuery": "", "verb": "list", "apiPrefix": "api",
            "apiGroup": "", "apiVersion": "v1", "namespace": "n", "resource": "pods", "subresource": "",
            "name": "", "isResourceRequest": true, "infoPath": "/api/v1/namespaces/n/pods", "query": {},
            "labelSelector": "", "fieldSelector": "", "watch": false
        });
        for (k, val) in overrides.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    }

    #[test]
    fn the_same_reading_is_same() {
        let t = target("/api/v1/namespaces/n/pods");
        assert_eq!(compare("GET", &t, &kube(serde_json::json!({}))), Outcome::Same);
    }

    #[test]
    fn every_authorized_field_is_compared() {
        let t = target("/api/v1/namespaces/n/pods");
        for (key, value) in [
            ("verb", "watch"),
            ("apiGroup", "apps"),
            ("apiVersion", "v2"),
            ("namespace", "kube-system"),
            ("resource", "secrets"),
            ("subresource", "exec"),
            ("name", "p"),
            ("path", "/api/v1/secrets"),
        ] {
            let k = kube(serde_json::json!({ key: value }));
            assert!(matches!(compare("GET", &t, &k), Outcome::Differ(_)), "{key}");
        }
        let k = kube(serde_json::json!({ "isResourceRequest": false }));
        assert!(matches!(compare("GET", &t, &k), Outcome::Differ(_)));
    }

    #[test]
    fn a_dropped_or_extra_pair_is_a_difference() {
        let t = target("/api/v1/namespaces/n/pods?fieldSelector=metadata.name%3Dp");
        let k = kube(serde_json::json!({ "name": "p", "query": {} }));
        assert!(matches!(compare("GET", &t, &k), Outcome::Differ(d) if d[0].starts_with("query")));
        let k = kube(serde_json::json!({
            "name": "p", "query": { "fieldSelector": ["metadata.name=p"], "watch": ["1"] }
        }));
        assert!(matches!(compare("GET", &t, &k), Outcome::Differ(_)));
        let k = kube(serde_json::json!({
            "name": "p", "query": { "fieldSelector": ["metadata.name=p"] }, "queryError": "invalid semicolon"
        }));
        assert!(matches!(compare("GET", &t, &k), Outcome::Differ(_)));
    }

    #[test]
    fn what_kube_refuses_is_counted_not_compared() {
        let t = target("/api/v1/namespaces/n/pods?fieldSelector=metadata.name%3Dp");
        let q = serde_json::json!({ "fieldSelector": ["metadata.name=p"] });
        let k = kube(serde_json::json!({ "query": q, "listOptionsError": "bad" }));
        assert_eq!(compare("GET", &t, &k), Outcome::KubeRefuses);
        // But a list whose options decode is compared (here: kube did not read the name).
        let k = kube(serde_json::json!({ "query": q }));
        assert!(matches!(compare("GET", &t, &k), Outcome::Differ(d) if d[0].starts_with("name")));
    }

    #[test]
    fn a_workspace_watch_must_be_filtered_by_that_workspace() {
        let t = target("/api/v1/namespaces?watch=1&labelSelector=kubesphere.io%2Fworkspace%3Dws");
        let q = serde_json::json!({ "watch": ["1"], "labelSelector": ["kubesphere.io/workspace=ws"] });
        let base = serde_json::json!({
            "path": "/api/v1/namespaces", "namespace": "", "resource": "namespaces", "verb": "watch",
            "query": q, "watch": true
        });
        let mut k = kube(base.clone());
        k["labelSelector"] = "kubesphere.io/workspace=ws".into();
        assert_eq!(compare("GET", &t, &k), Outcome::Same);
        let mut k = kube(base);
        k["labelSelector"] = "kubesphere.io/workspace in (ws,other)".into();
        assert!(matches!(compare("GET", &t, &k), Outcome::Differ(d) if d[0].starts_with("workspace watch")));
    }

    #[test]
    fn non_resource_verbs_compare_without_case() {
        let t = target("/api");
        let k = kube(serde_json::json!({
            "path": "/api", "verb": "get", "apiPrefix": "", "apiVersion": "", "namespace": "", "resource": "",
            "isResourceRequest": false
        }));
        assert_eq!(compare("GET", &t, &k), Outcome::Same);
    }

    #[test]
    fn the_generator_is_deterministic_and_varied() {
        let a: Vec<Input> = {
            let mut r = Rng::new(7);
            (0..500).map(|_| generate(&mut r)).collect()
        };
        let b: Vec<Input> = {
            let mut r = Rng::new(7);
            (0..500).map(|_| generate(&mut r)).collect()
        };
        assert_eq!(a, b);
        let header = a.iter().filter(|i| i.header.is_some()).count();
        let accepted = a.iter().filter(|i| i.parse().is_ok()).count();
        assert!(
            header > 50 && accepted > 100 && accepted < 490,
            "{header} {accepted}"
        );
        assert_eq!(parse_seed("0x10").unwrap(), 16);
        assert_eq!(parse_seed("16").unwrap(), 16);
    }
}
