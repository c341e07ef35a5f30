//! P5 and P7: our servers and their Go peers under the same load, from `ksiam-bench load` (one client, pinned
//! to core 1; both servers pinned to core 0), rendered as sub-sections of the generated block
//! (`<!-- xtask-bench:p5:begin -->` … `<!-- xtask-bench:p5:end -->`), so `--only p5,p7` replaces just those.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::{Stats, met, pin_prefix, pinned, pinning, ratio, stats, time};
use crate::conformance::Prepared;
use crate::peers::{CR_WEBHOOK, GRPC_GO, Peer};
use crate::process::run as run_cmd;
use crate::progress::{Step, say};

/// Policy sizes of the gRPC load: 100k (the P5 setup) and 10 (where transport dominates both).
pub const GRPC_SIZES: [usize; 2] = [10, 100_000];
const SECONDS: &str = "3";
const REPEATS: usize = 3;
const CONCURRENCY: &str = "1,8,64";
/// The concurrency the saturation goals are read at.
const SATURATION: usize = 64;

/// One `LOAD` line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Run {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu: f64,
}

/// Runs of one (server, concurrency).
pub type Runs = BTreeMap<(String, usize), Vec<Run>>;

/// Parses the `LOAD kind=… server=… concurrency=… rps=… p50_us=… p99_us=… server_cpu=…` lines.
pub fn parse(output: &str) -> anyhow::Result<Runs> {
    let mut runs = Runs::new();
    for line in output.lines().filter(|l| l.starts_with("LOAD ")) {
        let field = |key: &str| -> anyhow::Result<&str> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .with_context(|| format!("no {key} in {line}"))
        };
        let num = |key: &str| -> anyhow::Result<f64> { Ok(field(key)?.parse()?) };
        runs.entry((field("server")?.to_owned(), field("concurrency")?.parse()?))
            .or_default()
            .push(Run {
                rps: num("rps")?,
                p50_us: num("p50_us")?,
                p99_us: num("p99_us")?,
                cpu: num("server_cpu")?,
            });
    }
    if runs.is_empty() {
        bail!("no LOAD lines in:\n{output}");
    }
    Ok(runs)
}

/// Medians over the runs of one (server, concurrency).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub rps: Stats,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu: f64,
    /// Median over the runs of req/s ÷ server CPU.
    pub per_core: f64,
}

pub fn summarize(runs: &[Run]) -> Option<Summary> {
    let med = |f: fn(&Run) -> f64| stats(runs.iter().map(f).collect()).map(|s| s.median);
    Some(Summary {
        rps: stats(runs.iter().map(|r| r.rps).collect())?,
        p50_us: med(|r| r.p50_us)?,
        p99_us: med(|r| r.p99_us)?,
        cpu: med(|r| r.cpu)?,
        per_core: med(|r| if r.cpu > 0.0 { r.rps / r.cpu } else { 0.0 })?,
    })
}

fn us(v: f64) -> String {
    time(v * 1e3)
}

fn rps(s: &Stats) -> String {
    format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Runs one part (`p5` or `p7`) and renders its section.
pub fn run(root: &Path, prepared: &Prepared, part: &str) -> anyhow::Result<String> {
    let start = Instant::now();
    let before = loadavg();
    let pin = pinning();
    let server_cpu = if pin.is_some() { "0" } else { "none" };
    let (peer, kind): (Peer, &str) = match part {
        "p5" => (GRPC_GO, "grpc"),
        "p7" => (CR_WEBHOOK, "webhook"),
        _ => bail!("unknown load part {part}"),
    };
    let peer_bin = peer.ensure(root)?;
    let versions = peer.versions(&peer_bin)?;
    let key = peer.key(root)?;
    let sizes: Vec<Option<usize>> = if kind == "grpc" {
        GRPC_SIZES.iter().copied().map(Some).collect()
    } else {
        vec![None]
    };
    let mut results = Vec::new();
    for n in &sizes {
        let mut cmd = pinned(&pin, &prepared.ksiam_bench.to_string_lossy());
        cmd.args(["load", kind, "--peer"])
            .arg(&peer_bin)
            .args([
                "--server-cpu",
                server_cpu,
                "--concurrency",
                CONCURRENCY,
                "--seconds",
                SECONDS,
            ])
            .args(["--repeats", &REPEATS.to_string()]);
        if let Some(n) = n {
            cmd.arg("--policy")
                .arg(prepared.data.join(format!("policy-{n}.json")))
                .arg("--cases")
                .arg(prepared.data.join(format!("cases-{n}.json")));
        }
        let step = Step::start(format!(
            "ksiam-bench load {kind}{} ({REPEATS} × {SECONDS} s per server and concurrency)",
            n.map(|n| format!(" N={n}")).unwrap_or_default()
        ));
        let out = run_cmd(&mut cmd)?;
        step.done();
        results.push((*n, parse(&out)?));
    }
    let after = loadavg();
    let secs = start.elapsed().as_secs();
    say(format!("{part} wall time: {}m{:02}s", secs / 60, secs % 60));
    let date = run_cmd(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
        .trim()
        .to_owned();
    let bench = pin_prefix(&pin);
    let client = if pin.is_some() {
        "`taskset -c 1`, "
    } else {
        "not pinned, "
    };
    let common = format!(
        "Generated by `cargo xtask bench` (all parts, or `--only {part}`) on {date} in {}m{:02}s; load average (1 min, `/proc/loadavg`) {before} before, {after} after, on 2 cores shared with other work.\n\
         Servers pinned to core 0 (`taskset -c {server_cpu}`; ours on one tokio thread, the Go peer with GOMAXPROCS=1), the client to core 1 ({client}one tokio thread), the same requests to both, ours then the peer's for each (repeat, in flight).\n\
         Median (min–max) of {REPEATS} runs of {SECONDS} s after a 1 s warm-up; p50/p99 and CPU are medians over the runs. CPU = the server's CPU time (`/proc/<pid>/stat`, all threads) ÷ wall time; per core = req/s ÷ CPU, median over the runs. Ratio = ours ÷ peer.\n\
         Peer: {versions}.\n",
        secs / 60,
        secs % 60
    );
    let mut s = String::new();
    if kind == "grpc" {
        let _ = writeln!(s, "### P5: gRPC `Authorize` (unary) vs grpc-go\n");
        s.push_str(&common);
        let _ = writeln!(
            s,
            "Policy: the k8s-form policy of P1 (`target/peers/bench/policy-<N>.json`); ours converts it with `generate::k8s::from_objects` and serves it with `ksiam_authz::serve_grpc` (`ksiam-bench serve-grpc`), the peer loads it into Kubernetes' RBAC authorizer over informer listers behind the same proto (`benches/peers/grpc-go`). Requests: `allow_first`, `allow_last`, `deny` in rotation, each checked first on both; plaintext HTTP/2, the requests in flight spread over up to 4 connections.\n"
        );
        let _ = writeln!(
            s,
            "| N | in flight | ksiam-authz req/s | p50 / p99 | CPU | per core | grpc-go req/s | p50 / p99 | CPU | per core | ratio (per core) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    } else {
        let _ = writeln!(s, "### P7: admission webhook over HTTPS vs controller-runtime\n");
        s.push_str(&common);
        let _ = writeln!(
            s,
            "Both serve `POST /serviceaccount-pod-injector` over TLS 1.3 with a self-signed certificate made at start, with the benchmark's in-memory ServiceAccount lookup: ours is `ksiam_webhook::Server` with `MemoryLookup` (`ksiam-bench serve-webhook`), the peer a `controller-runtime` `admission.Handler` in its webhook server (`benches/peers/controller-runtime-webhook`). Request: the AdmissionReview of the seed pod; both answers were checked to patch it into the same pod. HTTP/1.1 keep-alive, one connection per request in flight.\n"
        );
        let _ = writeln!(
            s,
            "| in flight | ksiam-webhook req/s | p50 / p99 | CPU | per core | controller-runtime req/s | p50 / p99 | CPU | per core | ratio (per core) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    }
    let peer_name = if kind == "grpc" {
        "grpc-go"
    } else {
        "controller-runtime"
    };
    let mut goal_lines = Vec::new();
    for (n, runs) in &results {
        let mut levels: Vec<usize> = runs.keys().map(|(_, c)| *c).collect();
        levels.dedup();
        levels.sort_unstable();
        levels.dedup();
        for c in levels {
            let get = |server: &str| runs.get(&(server.to_owned(), c)).and_then(|r| summarize(r));
            let (Some(o), Some(t)) = (get("ours"), get(peer_name)) else {
                bail!("missing results at {c} in flight");
            };
            let x = o.per_core / t.per_core;
            let prefix = n.map(|n| format!("| {n} ")).unwrap_or_default();
            let _ = writeln!(
                s,
                "{prefix}| {c} | {} | {} / {} | {:.2} | {:.0} | {} | {} / {} | {:.2} | {:.0} | {} |",
                rps(&o.rps),
                us(o.p50_us),
                us(o.p99_us),
                o.cpu,
                o.per_core,
                rps(&t.rps),
                us(t.p50_us),
                us(t.p99_us),
                t.cpu,
                t.per_core,
                ratio(x)
            );
            if c == SATURATION {
                let raw = o.rps.median / t.rps.median;
                match (kind, n) {
                    ("grpc", Some(n)) => goal_lines.push(format!(
                        "- P5 at N = {n}, {c} in flight: ours {} req/s per core vs grpc-go {:.0} ({} per core, {} in raw req/s); goal ≥ 2×: {}.",
                        format_args!("{:.0}", o.per_core),
                        t.per_core,
                        ratio(x),
                        ratio(raw),
                        met(x >= 2.0)
                    )),
                    _ => goal_lines.push(format!(
                        "- P7 throughput at {c} in flight: ours {:.0} req/s per core vs controller-runtime {:.0} ({} per core, {} in raw req/s); goal ≥ 3×: {}.",
                        o.per_core,
                        t.per_core,
                        ratio(x),
                        ratio(raw),
                        met(x >= 3.0)
                    )),
                }
            }
            if kind == "webhook" && c == 1 {
                goal_lines.push(format!(
                    "- P7 latency at 1 in flight (HTTP round trip over loopback, client included): ours p99 {}; goal ≤ 1 ms: {} (controller-runtime: {}).",
                    us(o.p99_us),
                    met(o.p99_us <= 1_000.0),
                    us(t.p99_us)
                ));
            }
        }
    }
    s.push('\n');
    for g in goal_lines {
        let _ = writeln!(s, "{g}");
    }
    let _ = writeln!(
        s,
        "\nCommand (after `cargo xtask bench --only {part}` built everything):\n\n```sh"
    );
    let sizes_note = if kind == "grpc" {
        " --policy target/peers/bench/policy-<N>.json --cases target/peers/bench/cases-<N>.json"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "{bench}target/release/ksiam-bench load {kind} --peer target/peers/bin/{key}/{} --server-cpu {server_cpu} --concurrency {CONCURRENCY} --seconds {SECONDS} --repeats {REPEATS}{sizes_note}",
        peer.name
    );
    let _ = writeln!(s, "```");
    Ok(s)
}

fn markers(part: &str) -> (String, String) {
    (
        format!("<!-- xtask-bench:{part}:begin -->"),
        format!("<!-- xtask-bench:{part}:end -->"),
    )
}

/// Replaces the sub-section `part` of the generated block, or inserts it just before the block's end.
pub fn replace_section(doc: &str, part: &str, text: &str) -> anyhow::Result<String> {
    let (begin, end) = markers(part);
    let block = format!("{begin}\n{}\n{end}", text.trim_end());
    match (find_marker(doc, &begin), find_marker(doc, &end)) {
        (Some(b), Some(e)) if b < e => Ok(format!("{}{block}{}", &doc[..b], &doc[e + end.len()..])),
        (None, None) => {
            let Some(at) = doc.find(super::END) else {
                bail!("docs/benchmarks.md has no {} marker", super::END);
            };
            Ok(format!("{}{block}\n\n{}", &doc[..at], &doc[at..]))
        }
        _ => bail!("mismatched {begin} / {end} markers"),
    }
}

/// The text of `part`'s sub-block in `doc` (without its markers), if it has one.
pub fn section(doc: &str, part: &str) -> Option<String> {
    let (begin, end) = markers(part);
    let b = find_marker(doc, &begin)?;
    let e = find_marker(doc, &end)?;
    (b < e).then(|| doc[b + begin.len()..e].trim_matches('\n').to_owned())
}

/// Where `marker` stands on a line of its own: markers count only as whole lines, since prose may quote them.
fn find_marker(doc: &str, marker: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = doc[from..].find(marker) {
        let at = from + i;
        let line_start = at == 0 || doc.as_bytes()[at - 1] == b'\n';
        let line_end = doc[at + marker.len()..].starts_with('\n') || at + marker.len() == doc.len();
        if line_start && line_end {
            return Some(at);
        }
        from = at + marker.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_lines_group_by_server_and_concurrency() {
        let out = "CHECK ok\n\
            LOAD kind=grpc server=ours concurrency=8 run=0 requests=10 seconds=1.0 rps=100.0 p50_us=10.0 p99_us=20.0 server_cpu=0.5\n\
            LOAD kind=grpc server=ours concurrency=8 run=1 requests=10 seconds=1.0 rps=300.0 p50_us=30.0 p99_us=60.0 server_cpu=1.0\n\
            LOAD kind=grpc server=ours concurrency=8 run=2 requests=10 seconds=1.0 rps=200.0 p50_us=20.0 p99_us=40.0 server_cpu=1.0\n\
            LOAD kind=grpc server=grpc-go concurrency=8 run=0 requests=10 seconds=1.0 rps=50.0 p50_us=1.0 p99_us=2.0 server_cpu=1.0\n";
        let runs = parse(out).unwrap();
        assert_eq!(runs.len(), 2);
        let s = summarize(&runs[&("ours".to_owned(), 8)]).unwrap();
        assert_eq!(
            s.rps,
            Stats {
                min: 100.0,
                median: 200.0,
                max: 300.0
            }
        );
        assert_eq!((s.p50_us, s.p99_us, s.cpu), (20.0, 40.0, 1.0));
        // per core per run: 200, 300, 200 → median 200.
        assert_eq!(s.per_core, 200.0);
        assert!(parse("nothing").is_err());
        assert!(parse("LOAD server=x\n").is_err());
    }

    #[test]
    fn sections_are_replaced_or_inserted_before_the_end_marker() {
        let doc = format!("a\n{}\nold\n{}\nz\n", super::super::BEGIN, super::super::END);
        let once = replace_section(&doc, "p5", "five").unwrap();
        assert!(
            once.contains(
                "<!-- xtask-bench:p5:begin -->\nfive\n<!-- xtask-bench:p5:end -->\n\n<!-- xtask-bench:end -->"
            ),
            "{once}"
        );
        let twice = replace_section(&once, "p5", "FIVE").unwrap();
        assert_eq!(twice, once.replace("five", "FIVE"));
        assert!(replace_section("no markers", "p5", "x").is_err());
        let quoted = format!("see `<!-- xtask-bench:p5:begin -->` below\n{once}");
        let replaced = replace_section(&quoted, "p5", "FIVE").unwrap();
        assert!(
            replaced.starts_with("see `<!-- xtask-bench:p5:begin -->` below\n"),
            "{replaced}"
        );
        assert!(replaced.contains("\nFIVE\n"), "{replaced}");
    }

    #[test]
    fn a_kept_section_survives_a_rewrite_of_the_generated_block() {
        let doc = format!("a\n{}\nold\n{}\nz\n", super::super::BEGIN, super::super::END);
        let doc = replace_section(&doc, "p5", "five\nrows").unwrap();
        let quoted = format!("see `<!-- xtask-bench:p5:begin -->`\n{doc}");
        assert_eq!(section(&quoted, "p5").as_deref(), Some("five\nrows"));
        assert_eq!(section(&quoted, "p7"), None);
        // What `--only p4` does: the block is rewritten, then P5 is put back.
        let rewritten = super::super::replace_generated(&quoted, "new micro tables").unwrap();
        assert_eq!(section(&rewritten, "p5"), None);
        let restored = replace_section(&rewritten, "p5", &section(&quoted, "p5").unwrap()).unwrap();
        assert!(restored.contains("new micro tables"), "{restored}");
        assert_eq!(section(&restored, "p5").as_deref(), Some("five\nrows"));
        assert!(!restored.contains("old"), "{restored}");
    }
}
