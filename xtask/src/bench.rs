//! `cargo xtask bench`: ksiam next to its peers on the same data and the same machine, and the generated
//! tables of `docs/benchmarks.md` (between `<!-- xtask-bench:begin -->` and `<!-- xtask-bench:end -->`).
//!
//! ```text
//!   conformance --full (10 / 1k / 100k) ─► target/peers/bench/{policy,cases,requests}-<N>.json, token.json
//!   cargo bench -p ksiam-bench --bench peers   ┐
//!   cargo bench -p ksiam-token --bench token   ├─ criterion, pinned with taskset -c 1 ─► target/criterion/
//!   cargo bench -p ksiam-webhook --bench admission ┘
//!   k8s-rbac -mode bench, golang-jwt           ── testing.Benchmark, GOMAXPROCS=1, pinned ─► BENCH lines
//!   └─► docs/benchmarks.md tables: ours, peer, ratio of medians, min/median/max, goal, met or not
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::conformance::{self, FULL_SIZES, Profile, REQUESTS};

mod load;
use crate::peers::{GOLANG_JWT, K8S_RBAC};
use crate::process::{run, run_inherit};
use crate::progress::{Step, say};
use crate::stack::cargo;

pub const BEGIN: &str = "<!-- xtask-bench:begin -->";
pub const END: &str = "<!-- xtask-bench:end -->";
/// Runs of `testing.Benchmark` per Go case.
const GO_COUNT: usize = 5;
/// Criterion flags for every bench of ours.
const CRITERION_ARGS: [&str; 4] = ["--warm-up-time", "1", "--measurement-time", "3"];
const CASES: [&str; 3] = ["allow_first", "allow_last", "deny"];
/// P1 goals: ours must be this many times faster than Kubernetes at each size.
const P1_GOALS: [(usize, f64); 3] = [(10, 5.0), (1_000, 50.0), (100_000, 1_000.0)];

/// min / median / max of one measurement, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// `cargo xtask bench [--only p1,p4,p5,p7]`.
pub fn run_cli(root: &Path, only: &[String]) -> anyhow::Result<()> {
    for o in only {
        if !["p1", "p4", "p5", "p7"].contains(&o.as_str()) {
            bail!("--only takes p1, p4, p5, p7 (got {o:?})");
        }
    }
    let wanted = |p: &str| only.is_empty() || only.iter().any(|o| o == p);
    let micro = wanted("p1") || wanted("p4");
    let data = root.join("target").join("peers").join("bench");
    let sizes: Vec<usize> = if micro {
        FULL_SIZES.to_vec()
    } else {
        load::GRPC_SIZES.to_vec()
    };
    let prepared = conformance::prepare(
        root,
        &sizes,
        Profile::Bench,
        &data,
        conformance::BENCH_REQUEST_SEED,
    )?;
    let doc_path = root.join("docs").join("benchmarks.md");
    let mut doc = fs::read_to_string(&doc_path)?;
    if micro {
        // The P5/P7 sub-blocks live inside the generated block; the ones not rerun now are kept as they were.
        let kept: Vec<(&str, String)> = ["p5", "p7"]
            .into_iter()
            .filter(|p| !wanted(p))
            .filter_map(|p| load::section(&doc, p).map(|text| (p, text)))
            .collect();
        doc = replace_generated(&doc, &micro_tables(root, &prepared)?)?;
        for (part, text) in kept {
            doc = load::replace_section(&doc, part, &text)?;
        }
    }
    for part in ["p5", "p7"] {
        if wanted(part) {
            let section = load::run(root, &prepared, part)?;
            doc = load::replace_section(&doc, part, &section)?;
        }
    }
    fs::write(&doc_path, doc)?;
    say(format!("wrote the generated tables of {}", doc_path.display()));
    Ok(())
}

/// P1, P2, P4 and the in-process webhook figure: conformance, criterion benches and the Go micro-benchmarks.
fn micro_tables(root: &Path, prepared: &conformance::Prepared) -> anyhow::Result<String> {
    let start = Instant::now();
    let data = &prepared.data;
    let step = Step::start("conformance at N = 10, 1,000, 100,000");
    let conformance = match conformance::check(prepared, &FULL_SIZES) {
        Ok(()) => format!(
            "ksiam-rbac and Kubernetes' authorizer agree on all {REQUESTS} random requests at each of N = 10, 1,000, 100,000"
        ),
        Err(e) => format!("**disagreements**: {e:#}"),
    };
    step.done();
    let jwt = GOLANG_JWT.ensure(root)?;
    let pin = pinning();

    // Ours: compile everything first, so the pinned runs measure and do not compile.
    let ours: [(&str, &str); 3] = [
        ("ksiam-bench", "peers"),
        ("ksiam-token", "token"),
        ("ksiam-webhook", "admission"),
    ];
    for (package, bench) in ours {
        let step = Step::start(format!("cargo bench -p {package} --bench {bench} --no-run"));
        run_inherit(
            Command::new(cargo())
                .current_dir(root)
                .args(["bench", "-p", package, "--bench", bench, "--no-run"]),
        )?;
        step.done();
    }
    let mut commands = Vec::new();
    for (package, bench) in ours {
        let args = ["bench", "-p", package, "--bench", bench, "--"];
        let mut cmd = pinned(&pin, &cargo().to_string_lossy());
        cmd.current_dir(root).args(args).args(CRITERION_ARGS);
        let shown = format!(
            "{}cargo {} {}",
            pin_prefix(&pin),
            args.join(" "),
            CRITERION_ARGS.join(" ")
        );
        let step = Step::start(shown.clone());
        run_inherit(&mut cmd)?;
        step.done();
        commands.push(shown);
    }
    let criterion = crate::stack::cargo_target_dir(root).join("criterion");

    // Peers.
    let mut k8s = BTreeMap::new();
    for n in FULL_SIZES {
        let policy = data.join(format!("policy-{n}.json"));
        let cases = data.join(format!("cases-{n}.json"));
        let mut cmd = pinned(&pin, &prepared.k8s_rbac.to_string_lossy());
        cmd.env("GOMAXPROCS", "1")
            .args(["-mode", "bench", "-count", &GO_COUNT.to_string(), "-policy"])
            .arg(&policy)
            .arg("-cases")
            .arg(&cases);
        let step = Step::start(format!("k8s-rbac bench N={n} ({GO_COUNT} runs per case)"));
        for (case, stats) in go_stats(&run(&mut cmd)?)? {
            k8s.insert((case, n), stats);
        }
        step.done();
    }
    commands.push(format!(
        "GOMAXPROCS=1 {}target/peers/bin/{}/k8s-rbac -mode bench -count {GO_COUNT} -policy target/peers/bench/policy-<N>.json -cases target/peers/bench/cases-<N>.json",
        pin_prefix(&pin),
        K8S_RBAC.key(root)?
    ));
    let step = Step::start(format!("golang-jwt bench ({GO_COUNT} runs)"));
    let mut cmd = pinned(&pin, &jwt.to_string_lossy());
    cmd.env("GOMAXPROCS", "1")
        .args(["-count", &GO_COUNT.to_string(), "-token"])
        .arg(data.join("token.json"));
    let jwt_stats = go_stats(&run(&mut cmd)?)?;
    step.done();
    commands.push(format!(
        "GOMAXPROCS=1 {}target/peers/bin/{}/golang-jwt -count {GO_COUNT} -token target/peers/bench/token.json",
        pin_prefix(&pin),
        GOLANG_JWT.key(root)?
    ));

    // Tables.
    let mut rbac = BTreeMap::new();
    for n in FULL_SIZES {
        for case in CASES {
            let ours = criterion_stats(&criterion.join("peer_rbac").join(case).join(n.to_string()))?;
            let theirs = *k8s
                .get(&(case.to_owned(), n))
                .with_context(|| format!("k8s-rbac printed no result for {case} at N={n}"))?;
            rbac.insert((case, n), (ours, theirs));
        }
    }
    let token = (
        criterion_stats(&criterion.join("peer_token").join("verify_hs256"))?,
        *jwt_stats
            .get("verify_hs256")
            .context("golang-jwt printed no result")?,
    );
    let cached = criterion_stats(&criterion.join("token").join("verify_cached"))?;
    let webhook = criterion_stats(&criterion.join("request_seed_pod"))?;
    let env = Environment::collect(root, &prepared.k8s_rbac, &jwt)?;
    let secs = start.elapsed().as_secs();
    say(format!(
        "micro-benchmarks wall time: {}m{:02}s",
        secs / 60,
        secs % 60
    ));
    Ok(render(&Results {
        rbac,
        token,
        cached,
        webhook,
        conformance,
        commands,
        env,
        wall: format!("{}m{:02}s", secs / 60, secs % 60),
    }))
}

/// `taskset -c 1` when taskset exists and the machine has a second core, else nothing.
pub(crate) fn pinning() -> Option<&'static str> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let have = Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    (have && cores > 1).then_some("1")
}

pub(crate) fn pinned(pin: &Option<&str>, program: &str) -> Command {
    match pin {
        Some(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpu, program]);
            cmd
        }
        None => Command::new(program),
    }
}

pub(crate) fn pin_prefix(pin: &Option<&str>) -> String {
    pin.map(|cpu| format!("taskset -c {cpu} ")).unwrap_or_default()
}

/// Per case, min/median/max ns/op over the `BENCH ... case=<c> ... ns_per_op=<x>` lines of a Go peer.
fn go_stats(output: &str) -> anyhow::Result<BTreeMap<String, Stats>> {
    let mut runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in output.lines().filter(|l| l.starts_with("BENCH ")) {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        };
        let (Some(case), Some(ns)) = (field("case"), field("ns_per_op")) else {
            bail!("malformed BENCH line: {line}");
        };
        runs.entry(case.to_owned())
            .or_default()
            .push(ns.parse().with_context(|| format!("ns_per_op in {line}"))?);
    }
    if runs.is_empty() {
        bail!("no BENCH lines in:\n{output}");
    }
    runs.into_iter()
        .map(|(case, v)| Ok((case, stats(v).context("no runs")?)))
        .collect()
}

pub(crate) fn stats(mut v: Vec<f64>) -> Option<Stats> {
    v.sort_by(f64::total_cmp);
    let median = match v.len() {
        0 => return None,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some(Stats {
        min: v[0],
        median,
        max: v[v.len() - 1],
    })
}

/// Criterion's median estimate, and min/max of its samples' mean time per iteration.
fn criterion_stats(dir: &Path) -> anyhow::Result<Stats> {
    let read = |name: &str| -> anyhow::Result<serde_json::Value> {
        let path = dir.join("new").join(name);
        Ok(serde_json::from_slice(
            &fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?)
    };
    let estimates = read("estimates.json")?;
    let sample = read("sample.json")?;
    let median = estimates["median"]["point_estimate"]
        .as_f64()
        .context("estimates.json has no median")?;
    let (Some(iters), Some(times)) = (sample["iters"].as_array(), sample["times"].as_array()) else {
        bail!("{} has no iters/times", dir.display());
    };
    let per_iter: Vec<f64> = iters
        .iter()
        .zip(times)
        .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64()?))
        .collect();
    let s = stats(per_iter).context("sample.json is empty")?;
    Ok(Stats { median, ..s })
}

/// Machine and versions, for the report.
struct Environment {
    cores: usize,
    cpu: String,
    rustc: String,
    peers: Vec<String>,
    date: String,
}

impl Environment {
    fn collect(root: &Path, k8s: &Path, jwt: &Path) -> anyhow::Result<Self> {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let rustc = run(Command::new("rustc").current_dir(root).arg("--version"))?
            .trim()
            .to_owned();
        Ok(Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            rustc,
            peers: vec![
                format!("k8s-rbac: {}", K8S_RBAC.versions(k8s)?),
                format!("golang-jwt: {}", GOLANG_JWT.versions(jwt)?),
            ],
            date: run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
                .trim()
                .to_owned(),
        })
    }
}

struct Results {
    /// (case, N) → (ours, Kubernetes).
    rbac: BTreeMap<(&'static str, usize), (Stats, Stats)>,
    /// (ours, golang-jwt).
    token: (Stats, Stats),
    cached: Stats,
    webhook: Stats,
    conformance: String,
    commands: Vec<String>,
    env: Environment,
    wall: String,
}

/// `123 ns`, `4.56 µs`, `7.89 ms`.
fn time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn spread(s: &Stats) -> String {
    format!("{} ({}–{})", time(s.median), time(s.min), time(s.max))
}

pub(crate) fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.1}×")
    }
}

pub(crate) fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

fn render(r: &Results) -> String {
    let mut s = String::new();
    let e = &r.env;
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench` on {} in {} (wall time, including builds and the conformance run).",
        e.date, r.wall
    );
    let _ = writeln!(
        s,
        "Machine: {} cores, \"{}\" (`/proc/cpuinfo`), {}.",
        e.cores, e.cpu, e.rustc
    );
    let _ = writeln!(s, "Peers: {}.", e.peers.join("; "));
    let _ = writeln!(
        s,
        "Ours: criterion median, (min–max) of its samples' mean time per iteration; peers: median (min–max) of {GO_COUNT} `testing.Benchmark` runs of ~1 s. Ratio = peer median ÷ our median."
    );
    let _ = writeln!(
        s,
        "Conformance (same policies, {REQUESTS} random requests per size): {}.",
        r.conformance
    );
    s.push('\n');
    let _ = writeln!(
        s,
        "### P1: RBAC decision vs Kubernetes' RBAC authorizer (informer-style listers)\n"
    );
    let _ = writeln!(s, "| case | N | ksiam-rbac | Kubernetes v1.34.4 | ratio | goal |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (n, goal) in P1_GOALS {
        for case in CASES {
            if let Some((ours, theirs)) = r.rbac.get(&(case, n)) {
                let x = theirs.median / ours.median;
                let _ = writeln!(
                    s,
                    "| `{case}` | {n} | {} | {} | {} | ≥ {}: {} |",
                    spread(ours),
                    spread(theirs),
                    ratio(x),
                    ratio(goal),
                    met(x >= goal)
                );
            }
        }
    }
    if let (Some((small, _)), Some((big, _))) = (r.rbac.get(&("deny", 10)), r.rbac.get(&("deny", 100_000))) {
        let x = big.median / small.median;
        let _ = writeln!(
            s,
            "\nP2 on this data: our `deny` at N = 100,000 is {x:.2}× our `deny` at N = 10 (goal ≤ 1.5×: {}).",
            met(x <= 1.5)
        );
    }
    let _ = writeln!(s, "\n### P4: token verification\n");
    let _ = writeln!(s, "| benchmark | ksiam-token | peer | ratio | goal |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let (ours, jwt) = r.token;
    let x = jwt.median / ours.median;
    let _ = writeln!(
        s,
        "| HS256 verify, same KubeSphere token | {} | golang-jwt v4 `ParseWithClaims`: {} | {} | ≥ 3×: {} |",
        spread(&ours),
        spread(&jwt),
        ratio(x),
        met(x >= 3.0)
    );
    let _ = writeln!(
        s,
        "| verified-token cache hit (`token/verify_cached`) | {} | — | — | ≤ 100 ns: {} |",
        spread(&r.cached),
        met(r.cached.median <= 100.0)
    );
    let _ = writeln!(s, "\n### P7: admission webhook\n");
    let _ = writeln!(s, "| benchmark | ksiam-webhook | peer | goal |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| `request/seed_pod` (parse AdmissionReview, mutate, encode; in-process, no HTTP) | {} | controller-runtime webhook: over HTTPS in \"P7: webhook load\" below | the handler's own work, for scale against the HTTP p99 below |",
        spread(&r.webhook)
    );
    let _ = writeln!(
        s,
        "\nCommands (run from the repository root; `<N>` is 10, 1000, 100000):\n\n```sh"
    );
    for c in &r.commands {
        let _ = writeln!(s, "{c}");
    }
    let _ = writeln!(s, "```");
    s
}

/// Replaces the text between the markers (appending a marked section if the markers are missing).
pub fn replace_generated(doc: &str, generated: &str) -> anyhow::Result<String> {
    let block = format!("{BEGIN}\n{}\n{END}", generated.trim_end());
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => Ok(format!("{}{block}{}", &doc[..b], &doc[e + END.len()..])),
        (None, None) => Ok(format!(
            "{}\n\n## Side by side with the peers (`cargo xtask bench`)\n\n{block}\n",
            doc.trim_end()
        )),
        _ => bail!("docs/benchmarks.md has mismatched {BEGIN} / {END} markers"),
    }
}

/// The criterion directory of a benchmark, for tests.
#[cfg(test)]
fn fake_criterion(dir: &Path, median: f64, samples: &[(f64, f64)]) -> std::path::PathBuf {
    let new = dir.join("new");
    fs::create_dir_all(&new).unwrap();
    fs::write(
        new.join("estimates.json"),
        serde_json::json!({"median": {"point_estimate": median}}).to_string(),
    )
    .unwrap();
    let (iters, times): (Vec<f64>, Vec<f64>) = samples.iter().copied().unzip();
    fs::write(
        new.join("sample.json"),
        serde_json::json!({"iters": iters, "times": times}).to_string(),
    )
    .unwrap();
    dir.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bench_lines_give_min_median_max_per_case() {
        let out = "noise\n\
            BENCH peer=k8s-rbac case=deny bindings=10 run=0 n=100 ns_per_op=300.0 allocs_per_op=1 bytes_per_op=8\n\
            BENCH peer=k8s-rbac case=deny bindings=10 run=1 n=100 ns_per_op=100.0 allocs_per_op=1 bytes_per_op=8\n\
            BENCH peer=k8s-rbac case=deny bindings=10 run=2 n=100 ns_per_op=200.0 allocs_per_op=1 bytes_per_op=8\n\
            BENCH peer=k8s-rbac case=allow_first bindings=10 run=0 n=100 ns_per_op=50.5 allocs_per_op=1 bytes_per_op=8\n";
        let s = go_stats(out).unwrap();
        assert_eq!(
            s["deny"],
            Stats {
                min: 100.0,
                median: 200.0,
                max: 300.0
            }
        );
        assert_eq!(s["allow_first"].median, 50.5);
        assert!(go_stats("nothing").is_err());
        assert!(go_stats("BENCH case=x\n").is_err());
    }

    #[test]
    fn criterion_stats_read_median_and_sample_extremes() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let d = fake_criterion(&dir, 42.0, &[(10.0, 400.0), (20.0, 1000.0), (30.0, 1200.0)]);
        assert_eq!(
            criterion_stats(&d).unwrap(),
            Stats {
                min: 40.0,
                median: 42.0,
                max: 50.0
            }
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn generated_section_is_replaced_in_place_or_appended() {
        let doc = format!("# B\n\nintro\n\n{BEGIN}\nold\n{END}\n\ntail\n");
        let new = replace_generated(&doc, "new table\n").unwrap();
        assert_eq!(
            new,
            format!("# B\n\nintro\n\n{BEGIN}\nnew table\n{END}\n\ntail\n")
        );
        assert_eq!(replace_generated(&new, "new table").unwrap(), new, "idempotent");
        let appended = replace_generated("# B\n", "t").unwrap();
        assert!(appended.ends_with(&format!("{BEGIN}\nt\n{END}\n")), "{appended}");
        assert!(replace_generated(&format!("{END}{BEGIN}"), "t").is_err());
    }

    #[test]
    fn times_and_ratios_read_well() {
        assert_eq!(time(123.4), "123 ns");
        assert_eq!(time(4_560.0), "4.56 µs");
        assert_eq!(time(7_890_000.0), "7.89 ms");
        assert_eq!(ratio(2.54), "2.5×");
        assert_eq!(ratio(1234.5), "1234×");
    }
}
