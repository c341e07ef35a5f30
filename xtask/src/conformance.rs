//! `cargo xtask conformance [--full]`: ksiam-rbac and Kubernetes' RBAC authorizer must reach the same
//! allow/deny on random requests over the same policies. The same command runs the differential resolver
//! test first (`differential.rs`: the gateway's resolver against Kubernetes' RequestInfoFactory).
//!
//! ```text
//!   ksiam-bench write ──► target/peers/conformance/{policy,requests}-<N>.json
//!        │                         │
//!        ▼                         ▼
//!   ksiam-bench decide      benches/peers/k8s-rbac -mode decide   (Kubernetes v1.34.4, informer listers)
//!        └──────── allow/deny per request, compared line by line ────────┘
//! ```
//!
//! Policies are the Kubernetes-compatible subset of the generator (`ksiam_rbac::generate::k8s`), where
//! KubeSphere's cluster and namespace semantics equal Kubernetes'. Any disagreement fails the step and is
//! printed with its request. The random requests come from a new seed on every run (printed first;
//! `KSIAM_CONFORMANCE_SEED=<seed>` replays a run), so runs cover different requests over time.
//!
//! The same step has golang-jwt (`benches/peers/golang-jwt`, the library and call KubeSphere uses) verify
//! the token ksiam-token issues, and refuse it with one signature byte changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::peers::{GOLANG_JWT, K8S_RBAC};
use crate::process::{run, run_inherit};
use crate::progress::{Step, say};

/// Random requests per policy size.
pub const REQUESTS: usize = 10_000;
/// Sizes checked by `cargo xtask test` (seconds).
pub const QUICK_SIZES: [usize; 2] = [10, 1_000];
/// Sizes checked by `--full` and by `cargo xtask bench`.
pub const FULL_SIZES: [usize; 3] = [10, 1_000, 100_000];
/// The request seed of `cargo xtask bench` (fixed, so its conformance line is comparable between runs;
/// ksiam-bench's default).
pub const BENCH_REQUEST_SEED: u64 = 7;
/// Disagreements printed in full.
const SHOWN: usize = 10;

/// How ksiam-bench is compiled: `dev` shares artifacts with `cargo test`, `bench` with `cargo bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Bench,
}

/// The data directory and programs of one run, for `cargo xtask bench` to reuse.
pub struct Prepared {
    pub data: PathBuf,
    pub ksiam_bench: PathBuf,
    pub k8s_rbac: PathBuf,
}

/// `cargo xtask conformance [--full]`.
pub fn run_cli(root: &Path, full: bool) -> anyhow::Result<()> {
    let (sizes, profile) = if full {
        (&FULL_SIZES[..], Profile::Bench)
    } else {
        (&QUICK_SIZES[..], Profile::Dev)
    };
    let seed = request_seed()?;
    say(format!(
        "conformance request seed {seed:#x} (replay: KSIAM_CONFORMANCE_SEED={seed:#x} cargo xtask conformance)"
    ));
    // The differential resolver test first (seconds); every part runs, whatever the others' outcome.
    let differential = crate::differential::run_cli(root, full);
    let data = root.join("target").join("peers").join("conformance");
    let prepared = prepare(root, sizes, profile, &data, seed);
    let rbac = prepared
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|prepared| check(prepared, sizes));
    let jwt = prepared
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|prepared| golang_jwt_verifies(root, &prepared.data));
    let errors: Vec<String> = [differential, rbac, jwt]
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

/// The seed of this run's random requests: `KSIAM_CONFORMANCE_SEED` (decimal or `0x` hex), else new.
fn request_seed() -> anyhow::Result<u64> {
    match std::env::var("KSIAM_CONFORMANCE_SEED") {
        Ok(v) => crate::differential::parse_seed(&v),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            // Nanoseconds and the process id, mixed: two runs in one second still differ.
            Ok(splitmix(
                now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32),
            ))
        }
    }
}

/// SplitMix64's finalizer (a bijection: distinct inputs give distinct seeds).
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// golang-jwt v4 (`ParseWithClaims` into KubeSphere's claims, as KubeSphere verifies) accepts the token
/// ksiam-token issued into `data/token.json`, and refuses it once one byte of its signature is changed (so the
/// peer really verifies).
fn golang_jwt_verifies(root: &Path, data: &Path) -> anyhow::Result<()> {
    let jwt = GOLANG_JWT.ensure(root)?;
    let step = Step::start("golang-jwt verifies ksiam-token's token");
    let file = data.join("token.json");
    run(Command::new(&jwt).args(["-count", "0", "-token"]).arg(&file))
        .context("golang-jwt refused the token ksiam-token issued")?;
    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&file)?)?;
    let token = doc["token"].as_str().context("token.json has no token")?;
    let tampered = data.join("token-tampered.json");
    doc["token"] = serde_json::Value::String(tamper(token));
    fs::write(&tampered, serde_json::to_vec(&doc)?)?;
    let refused = Command::new(&jwt)
        .args(["-count", "0", "-token"])
        .arg(&tampered)
        .output()
        .with_context(|| format!("running {}", jwt.display()))?;
    if refused.status.success() {
        bail!("golang-jwt accepted a token with a changed signature: the check proves nothing");
    }
    step.done();
    Ok(())
}

/// The token with the first character of its signature changed to another base64url character.
fn tamper(token: &str) -> String {
    let (head, sig) = token.rsplit_once('.').unwrap_or((token, ""));
    let mut sig: Vec<char> = sig.chars().collect();
    if let Some(c) = sig.first_mut() {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    format!("{head}.{}", sig.into_iter().collect::<String>())
}

/// Builds the Go harness and ksiam-bench, and writes policies, cases, requests (from `request_seed`) and the
/// token into `data`.
pub fn prepare(
    root: &Path,
    sizes: &[usize],
    profile: Profile,
    data: &Path,
    request_seed: u64,
) -> anyhow::Result<Prepared> {
    let k8s_rbac = K8S_RBAC.ensure(root)?;
    let step = Step::start("cargo build -p ksiam-bench");
    let mut build = crate::stack::cargo_command();
    build
        .current_dir(root)
        .args(["build", "-p", "ksiam-bench", "--bin", "ksiam-bench"]);
    let dir = match profile {
        Profile::Dev => "debug",
        Profile::Bench => {
            build.args(["--profile", "bench"]);
            "release"
        }
    };
    run_inherit(&mut build)?;
    step.done();
    let ksiam_bench = crate::stack::cargo_target_dir(root).join(dir).join("ksiam-bench");

    let step = Step::start(format!(
        "write policies and {REQUESTS} random requests per size to {}",
        data.display()
    ));
    let sizes_arg: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
    run(Command::new(&ksiam_bench)
        .arg("write")
        .arg("--out")
        .arg(data)
        .args([
            "--sizes",
            &sizes_arg.join(","),
            "--requests",
            &REQUESTS.to_string(),
            "--request-seed",
            &request_seed.to_string(),
        ]))?;
    step.done();
    Ok(Prepared {
        data: data.to_owned(),
        ksiam_bench,
        k8s_rbac,
    })
}

/// Runs both deciders on every size and fails on any disagreement.
pub fn check(p: &Prepared, sizes: &[usize]) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for &n in sizes {
        let policy = p.data.join(format!("policy-{n}.json"));
        let requests = p.data.join(format!("requests-{n}.json"));
        let start = Instant::now();
        let ours = decisions(
            Command::new(&p.ksiam_bench)
                .arg("decide")
                .arg("--policy")
                .arg(&policy)
                .arg("--requests")
                .arg(&requests),
        )?;
        let ours_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let theirs = decisions(
            Command::new(&p.k8s_rbac)
                .args(["-mode", "decide", "-policy"])
                .arg(&policy)
                .arg("-requests")
                .arg(&requests),
        )?;
        let theirs_secs = start.elapsed().as_secs_f64();
        let raw: Vec<serde_json::Value> = serde_json::from_slice(
            &fs::read(&requests).with_context(|| format!("reading {}", requests.display()))?,
        )?;
        let report = compare(&ours, &theirs, &raw)?;
        say(format!(
            "conformance N={n}: {} requests, {} allowed by both, {} disagreements (ksiam-rbac {ours_secs:.1}s, \
             Kubernetes {theirs_secs:.1}s)",
            ours.len(),
            report.allowed,
            report.disagreements.len()
        ));
        for line in report.disagreements.iter().take(SHOWN) {
            say(format!("  N={n} {line}"));
        }
        if !report.disagreements.is_empty() {
            failures.push(format!("N={n}: {} disagreements", report.disagreements.len()));
        }
    }
    if !failures.is_empty() {
        bail!(
            "ksiam-rbac and Kubernetes' RBAC authorizer disagree ({}); data in {}",
            failures.join(", "),
            p.data.display()
        );
    }
    Ok(())
}

fn decisions(cmd: &mut Command) -> anyhow::Result<Vec<bool>> {
    run(cmd)?
        .lines()
        .map(|l| match l.trim() {
            "allow" => Ok(true),
            "deny" => Ok(false),
            other => bail!("unexpected decision line {other:?}"),
        })
        .collect()
}

/// The outcome of comparing two deciders.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    /// Requests both allowed.
    allowed: usize,
    /// One line per disagreement: index, both verdicts, the request.
    disagreements: Vec<String>,
}

fn compare(ours: &[bool], theirs: &[bool], requests: &[serde_json::Value]) -> anyhow::Result<Report> {
    if ours.len() != requests.len() || theirs.len() != requests.len() {
        bail!(
            "{} requests, but ksiam-rbac decided {} and Kubernetes {}",
            requests.len(),
            ours.len(),
            theirs.len()
        );
    }
    let verdict = |allowed: bool| if allowed { "allow" } else { "deny" };
    let mut report = Report::default();
    for (i, ((&a, &b), r)) in ours.iter().zip(theirs).zip(requests).enumerate() {
        if a != b {
            report.disagreements.push(format!(
                "request {i}: ksiam-rbac {}, Kubernetes {}: {r}",
                verdict(a),
                verdict(b)
            ));
        } else if a {
            report.allowed += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disagreements_name_the_request() {
        let reqs = vec![
            serde_json::json!({"user": "a"}),
            serde_json::json!({"user": "b"}),
            serde_json::json!({"user": "c"}),
        ];
        let r = compare(&[true, false, true], &[true, true, true], &reqs).unwrap();
        assert_eq!(r.allowed, 2);
        assert_eq!(r.disagreements.len(), 1);
        assert!(r.disagreements[0].starts_with("request 1: ksiam-rbac deny, Kubernetes allow"));
        assert!(r.disagreements[0].contains(r#""user":"b""#));
        assert!(
            compare(&[true], &[true, false], &reqs[..1]).is_err(),
            "a short answer is an error"
        );
    }

    #[test]
    fn seeds_differ_and_tampering_changes_only_the_signature() {
        assert_ne!(splitmix(1), splitmix(2));
        let t = "aGVhZA.Y2xhaW1z.AbCd";
        assert_eq!(tamper(t), "aGVhZA.Y2xhaW1z.BbCd");
        assert_eq!(tamper("aGVhZA.Y2xhaW1z.xyz"), "aGVhZA.Y2xhaW1z.Ayz");
    }
}
