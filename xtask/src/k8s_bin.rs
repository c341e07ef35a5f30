//! kube-apiserver, kube-controller-manager, kubectl and etcd (the control plane), kubelet, kube-scheduler,
//! kube-proxy and CoreDNS (the node) and helm, built from the Go module proxy.
//!
//! Where a binary comes from, first match wins:
//! 1. `KSIAM_KUBE_APISERVER`, `KSIAM_KUBE_CONTROLLER_MANAGER`, `KSIAM_KUBECTL`, `KSIAM_ETCD`, `KSIAM_KUBELET`,
//!    `KSIAM_KUBE_SCHEDULER`, `KSIAM_KUBE_PROXY`, `KSIAM_COREDNS`, `KSIAM_HELM`;
//! 2. `target/k8s-bin/v<version>/` (this checkout);
//! 3. `${XDG_CACHE_HOME:-$HOME/.cache}/ksiam/k8s-bin/v<version>/` (copied into `target/`, so a fresh clone on
//!    the same machine, as in CI, skips the Go build);
//! 4. a Go build in throw-away modules under `target/` (10-25 min cold on 2 cores), then copied to the cache.
//!
//! `k8s.io/kubernetes` requires its staging modules at `v0.0.0` and points them at `./staging/src/...`; replaces
//! of a dependency are ignored, so our module replaces each of them with its published `v0.<minor>.<patch>` tag.
//! The list is read from the `go.mod` the proxy serves for the pinned version, never hard-coded.
//! etcd, CoreDNS and helm get a module each, so minimal version selection cannot move the API server's
//! dependencies. CoreDNS and helm carry their version in the file name (`coredns-1.14.7`, `helm-3.21.4`).
//!
//! Measured on 2 cores with a warm Go build cache (after the control plane's build): kubelet 59 s,
//! kube-scheduler 15 s, kube-proxy 33 s; cold figures are in docs/benchmarks.md.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::process::run;
use crate::progress::{Step, say};

/// Must match the `k8s-openapi` feature the crates use (`v1_34`).
pub const KUBE_VERSION: &str = "1.34.4";
/// The etcd release kube-apiserver 1.34 is tested with (3.6.x).
pub const ETCD_VERSION: &str = "3.6.16";
/// CoreDNS for the node's cluster DNS (its `kubernetes` plugin, no `forward`).
pub const COREDNS_VERSION: &str = "1.14.7";
/// helm v3 (the chart is `apiVersion: v2`).
pub const HELM_VERSION: &str = "3.21.4";

/// Paths of the four programs.
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
}

/// Paths of the node's programs.
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kube_proxy: PathBuf,
    pub coredns: PathBuf,
}

#[derive(Clone, Copy)]
enum Source {
    /// Built from `k8s.io/kubernetes/cmd/<name>`.
    Kubernetes,
    /// Built from `go.etcd.io/etcd/server/v3`.
    Etcd,
    /// Built from `github.com/coredns/coredns`.
    Coredns,
    /// Built from `helm.sh/helm/v3/cmd/helm`.
    Helm,
}

const NODE_PROGRAMS: [(&str, &str, Source); 4] = [
    ("kubelet", "KSIAM_KUBELET", Source::Kubernetes),
    ("kube-scheduler", "KSIAM_KUBE_SCHEDULER", Source::Kubernetes),
    ("kube-proxy", "KSIAM_KUBE_PROXY", Source::Kubernetes),
    (COREDNS_FILE, "KSIAM_COREDNS", Source::Coredns),
];
const COREDNS_FILE: &str = "coredns-1.14.7";
const HELM_FILE: &str = "helm-3.21.4";
const HELM_PROGRAMS: [(&str, &str, Source); 1] = [(HELM_FILE, "KSIAM_HELM", Source::Helm)];

const PROGRAMS: [(&str, &str, Source); 4] = [
    ("kube-apiserver", "KSIAM_KUBE_APISERVER", Source::Kubernetes),
    (
        "kube-controller-manager",
        "KSIAM_KUBE_CONTROLLER_MANAGER",
        Source::Kubernetes,
    ),
    ("kubectl", "KSIAM_KUBECTL", Source::Kubernetes),
    ("etcd", "KSIAM_ETCD", Source::Etcd),
];

/// `target/k8s-bin/v<version>/`.
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target")
        .join("k8s-bin")
        .join(format!("v{KUBE_VERSION}"))
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/ksiam/k8s-bin/v<version>/`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("ksiam")
            .join("k8s-bin")
            .join(format!("v{KUBE_VERSION}")),
    )
}

/// Finds kubectl without building anything: the override, `target/`, the cache, then `PATH`.
pub fn find_kubectl(root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KSIAM_KUBECTL") {
        return Some(p.into());
    }
    let candidates = [Some(target_dir(root)), cache_dir()];
    candidates
        .into_iter()
        .flatten()
        .map(|d| d.join("kubectl"))
        .chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join("kubectl")),
        )
        .find(|p| p.is_file())
}

/// Makes sure all four programs exist, building what is missing, and returns their paths.
pub fn ensure(root: &Path) -> anyhow::Result<Binaries> {
    let paths = ensure_programs(
        root,
        &PROGRAMS,
        &format!("kubernetes v{KUBE_VERSION} + etcd v{ETCD_VERSION} binaries"),
    )?;
    let mut paths = paths.into_iter();
    let mut next = || paths.next().expect("one path per program");
    Ok(Binaries {
        kube_apiserver: next(),
        kube_controller_manager: next(),
        kubectl: next(),
        etcd: next(),
    })
}

/// kubelet, kube-scheduler, kube-proxy and CoreDNS, built when missing.
pub fn ensure_node(root: &Path) -> anyhow::Result<NodeBinaries> {
    let paths = ensure_programs(
        root,
        &NODE_PROGRAMS,
        &format!("node binaries (kubernetes v{KUBE_VERSION}, coredns v{COREDNS_VERSION})"),
    )?;
    let mut paths = paths.into_iter();
    let mut next = || paths.next().expect("one path per program");
    Ok(NodeBinaries {
        kubelet: next(),
        kube_scheduler: next(),
        kube_proxy: next(),
        coredns: next(),
    })
}

/// helm, built when missing.
pub fn ensure_helm(root: &Path) -> anyhow::Result<PathBuf> {
    let mut paths = ensure_programs(root, &HELM_PROGRAMS, &format!("helm v{HELM_VERSION}"))?;
    Ok(paths.remove(0))
}

fn ensure_programs(
    root: &Path,
    programs: &[(&str, &str, Source)],
    title: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    let step = Step::start(title);
    let out = target_dir(root);
    fs::create_dir_all(&out)?;
    let cache = cache_dir();

    let mut paths = Vec::new();
    let mut missing = Vec::new();
    for &(name, var, source) in programs {
        if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("{var}={} does not exist", p.display());
            }
            say(format!("{name}: {} (from {var})", p.display()));
            paths.push(p);
            continue;
        }
        let path = out.join(name);
        if !path.is_file()
            && let Some(cached) = cache.as_ref().map(|c| c.join(name)).filter(|c| c.is_file())
        {
            say(format!("{name}: restoring from {}", cached.display()));
            copy_atomic(&cached, &path)?;
        }
        if !path.is_file() {
            missing.push((name, source));
        }
        paths.push(path);
    }

    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(n, _)| *n).collect();
        say(format!(
            "building {} from the Go module proxy (minutes on 2 cores; see docs/benchmarks.md)",
            names.join(", ")
        ));
        let _lock = BuildLock::acquire(&root.join("target"))?;
        // Another xtask may have built them while this one waited for the lock.
        missing.retain(|(name, _)| !out.join(name).is_file());
        go_build(root, &out, &missing)?;
    }

    // Keep a copy outside target/, so a fresh clone (CI) or `cargo clean` does not pay the Go build again.
    if let Some(cache) = &cache {
        for &(name, var, _) in programs {
            let (built, cached) = (out.join(name), cache.join(name));
            if std::env::var_os(var).is_none() && built.is_file() && !cached.is_file() {
                fs::create_dir_all(cache)?;
                copy_atomic(&built, &cached)?;
                say(format!("{name}: cached in {}", cached.display()));
            }
        }
    }
    step.done();
    Ok(paths)
}

/// Copies via a temporary file and a rename, so an interrupted copy never leaves a truncated binary.
fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_extension("partial");
    fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    fs::rename(&tmp, to)?;
    Ok(())
}

fn go(dir: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0");
    cmd
}

fn go_build(root: &Path, out: &Path, missing: &[(&str, Source)]) -> anyhow::Result<()> {
    let version = run(Command::new("go").arg("version")).context(
        "Go is needed once to build kube-apiserver and etcd (or set KSIAM_KUBE_APISERVER, \
         KSIAM_KUBE_CONTROLLER_MANAGER, KSIAM_KUBECTL and KSIAM_ETCD)",
    )?;
    say(format!("using {}", version.trim()));

    let kube: Vec<&str> = missing
        .iter()
        .filter(|(_, s)| matches!(s, Source::Kubernetes))
        .map(|(n, _)| *n)
        .collect();
    if !kube.is_empty() {
        build_kubernetes(&root.join("target").join("k8s-build"), out, &kube)?;
    }
    if missing.iter().any(|(_, s)| matches!(s, Source::Etcd)) {
        build_etcd(&root.join("target").join("etcd-build"), out)?;
    }
    if missing.iter().any(|(_, s)| matches!(s, Source::Coredns)) {
        build_module(
            &root.join("target").join("coredns-build"),
            out,
            COREDNS_FILE,
            "github.com/coredns/coredns",
            COREDNS_VERSION,
            "-s -w",
        )?;
    }
    if missing.iter().any(|(_, s)| matches!(s, Source::Helm)) {
        build_module(
            &root.join("target").join("helm-build"),
            out,
            HELM_FILE,
            "helm.sh/helm/v3/cmd/helm",
            HELM_VERSION,
            &format!("-s -w -X helm.sh/helm/v3/internal/version.version=v{HELM_VERSION}"),
        )?;
    }
    Ok(())
}

fn build_kubernetes(work: &Path, out: &Path, names: &[&str]) -> anyhow::Result<()> {
    fs::create_dir_all(work)?;
    let go_mod = work.join("go.mod");
    if !go_mod.is_file() {
        // k8s.io/kubernetes sets `godebug default=go1.24`, which only applies to a main module: copy it.
        fs::write(
            &go_mod,
            "module local/k8stestbins\n\ngo 1.24.0\n\ngodebug default=go1.24\n",
        )?;
    }

    let step = Step::start(format!(
        "read the staging modules of k8s.io/kubernetes v{KUBE_VERSION}"
    ));
    let info = run(go(work).args([
        "mod",
        "download",
        "-json",
        &format!("k8s.io/kubernetes@v{KUBE_VERSION}"),
    ]))?;
    let info: serde_json::Value = serde_json::from_str(&info).context("parsing `go mod download -json`")?;
    let upstream = info["GoMod"]
        .as_str()
        .context("`go mod download -json` printed no GoMod path")?;
    let staging = staging_modules(&fs::read_to_string(upstream)?);
    if staging.is_empty() {
        bail!("found no `=> ./staging/src/...` replaces in {upstream}");
    }
    let tag = format!(
        "v0.{}",
        KUBE_VERSION
            .split_once('.')
            .map_or(KUBE_VERSION, |(_, rest)| rest)
    );
    let mut edit = go(work);
    edit.args(["mod", "edit"]);
    for m in &staging {
        edit.arg(format!("-replace={m}={m}@{tag}"));
    }
    run(&mut edit)?;
    say(format!(
        "replaced {} staging modules with their {tag} tags",
        staging.len()
    ));
    step.done();

    let step = Step::start(format!("go get -tool ({})", names.join(", ")));
    let mut get = go(work);
    get.args(["get", "-tool"]);
    for name in names {
        get.arg(format!("k8s.io/kubernetes/cmd/{name}@v{KUBE_VERSION}"));
    }
    run_with_heartbeat("go get -tool", &mut get)?;
    step.done();

    let minor = KUBE_VERSION.split('.').nth(1).context("malformed KUBE_VERSION")?;
    let mut ldflags = String::from("-s -w");
    for pkg in ["k8s.io/client-go/pkg/version", "k8s.io/component-base/version"] {
        ldflags += &format!(
            " -X {pkg}.gitVersion=v{KUBE_VERSION} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor} \
             -X {pkg}.gitTreeState=clean"
        );
    }
    for name in names {
        build_one(
            work,
            out,
            name,
            &format!("k8s.io/kubernetes/cmd/{name}"),
            &ldflags,
        )?;
    }
    Ok(())
}

fn build_etcd(work: &Path, out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(work)?;
    let go_mod = work.join("go.mod");
    if !go_mod.is_file() {
        fs::write(&go_mod, "module local/etcdbin\n\ngo 1.24.0\n")?;
    }
    // `go install` refuses etcd's server module (it has replace directives); as a dependency it builds.
    let step = Step::start("go get -tool etcd");
    run_with_heartbeat(
        "go get -tool",
        go(work).args([
            "get",
            "-tool",
            &format!("go.etcd.io/etcd/server/v3@v{ETCD_VERSION}"),
        ]),
    )?;
    step.done();
    build_one(work, out, "etcd", "go.etcd.io/etcd/server/v3", "-s -w")
}

/// A program from its own module, required as a tool of a throw-away module (so its replaces do not matter).
fn build_module(
    work: &Path,
    out: &Path,
    name: &str,
    package: &str,
    version: &str,
    ldflags: &str,
) -> anyhow::Result<()> {
    fs::create_dir_all(work)?;
    let go_mod = work.join("go.mod");
    if !go_mod.is_file() {
        fs::write(&go_mod, format!("module local/{name}\n\ngo 1.24.0\n"))?;
    }
    let step = Step::start(format!("go get -tool {package}@v{version}"));
    run_with_heartbeat(
        "go get -tool",
        go(work).args(["get", "-tool", &format!("{package}@v{version}")]),
    )?;
    step.done();
    build_one(work, out, name, package, ldflags)
}

fn build_one(work: &Path, out: &Path, name: &str, package: &str, ldflags: &str) -> anyhow::Result<()> {
    let step = Step::start(format!("go build {name}"));
    let partial = out.join(format!("{name}.partial"));
    let mut cmd = go(work);
    cmd.args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
        .arg(&partial)
        .arg(package);
    run_with_heartbeat(&format!("go build {name}"), &mut cmd)?;
    fs::rename(&partial, out.join(name))?;
    step.done();
    Ok(())
}

/// The module paths that `k8s.io/kubernetes`' go.mod points at `./staging/src/...`.
fn staging_modules(go_mod: &str) -> Vec<String> {
    go_mod
        .lines()
        .map(|l| l.trim().trim_start_matches("replace").trim())
        .filter_map(|l| l.split_once("=>"))
        .filter(|(_, to)| to.trim().starts_with("./staging/src/"))
        .map(|(from, _)| from.split_whitespace().next().unwrap_or_default().to_owned())
        .filter(|m| m.starts_with("k8s.io/"))
        .collect()
}

/// Runs a long Go command with inherited output, printing a heartbeat line every 30 s.
fn run_with_heartbeat(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("running {cmd:?}"))?;
    let mut next_beat = Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= next_beat {
            say(format!(
                "  ... {what} still running ({}s)",
                start.elapsed().as_secs()
            ));
            next_beat += Duration::from_secs(30);
        }
        sleep(Duration::from_millis(500));
    };
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// One Go build at a time per checkout: a second xtask waits for the first instead of racing it.
struct BuildLock(PathBuf);

// === impl BuildLock ===

impl BuildLock {
    fn acquire(target: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(target)?;
        let path = target.join("k8s-build.lock");
        let mut waited = false;
        loop {
            match fs::File::options().write(true).create_new(true).open(&path) {
                Ok(_) => {
                    fs::write(&path, std::process::id().to_string())?;
                    return Ok(Self(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let alive =
                        !holder.trim().is_empty() && Path::new(&format!("/proc/{}", holder.trim())).exists();
                    if !alive {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if !waited {
                        say(format!(
                            "waiting for the Go build of pid {} ({})",
                            holder.trim(),
                            path.display()
                        ));
                        waited = true;
                    }
                    sleep(Duration::from_secs(2));
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_modules_are_read_from_the_replace_block() {
        let go_mod = "module k8s.io/kubernetes\n\nrequire (\n\tk8s.io/api v0.0.0\n)\n\nreplace (\n\
                      \tk8s.io/api => ./staging/src/k8s.io/api\n\
                      \tk8s.io/externaljwt => ./staging/src/k8s.io/externaljwt\n\
                      \tgithub.com/x/y => github.com/x/y v1.0.0\n)\n\
                      replace k8s.io/kms => ./staging/src/k8s.io/kms\n";
        assert_eq!(
            staging_modules(go_mod),
            ["k8s.io/api", "k8s.io/externaljwt", "k8s.io/kms"]
        );
    }
}
