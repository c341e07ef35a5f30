//! KubeSphere itself as a peer: `ks-apiserver` (and `ks-controller-manager`) built from KubeSphere's own
//! source and run beside ksiam's gateway on the same control plane, with the same JWT secret.
//!
//! The source is `../shared/peers/kubesphere/src` (the first ancestor of the workspace holding
//! `shared/peers/kubesphere/src`, or `KSIAM_KUBESPHERE_SRC`), at the commit its `README.md` names. It is a
//! peer to compare against, never a source of code. Where the binaries come from, first match wins:
//! 1. `${XDG_CACHE_HOME:-$HOME/.cache}/ksiam/kubesphere/<commit>/` (250 MB; run from there, not copied);
//! 2. a Go build of a writable copy of the source in `target/kubesphere/src` (about 3 min cold on 2 cores,
//!    40 s with a warm Go build cache), then moved into the cache.
//!
//! The build is started in a background thread ([`build_in_background`]) before the control plane and
//! ksiam are built, so it overlaps them. Running ks-apiserver ([`start`]) needs the `extensions.kubesphere.io`
//! CRDs (it exits at start-up without `APIService`) and a `kubesphere.yaml` in its working directory:
//! the admin kubeconfig, ksiam's JWT secret, and `multicluster.clusterRole: host` (left empty, it skips the
//! ServiceAccount-existence check that ksiam always does).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::control_plane::{ControlPlane, Kubectl, free_port};
use crate::progress::{Step, say};

/// The two programs, as built from `./cmd/<name>`.
pub const PROGRAMS: [&str; 2] = ["ks-apiserver", "ks-controller-manager"];

/// The binaries of one KubeSphere commit.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The commit they were built from.
    pub commit: String,
    /// The source tree they were built from (read-only; its CRDs are applied from there).
    pub source: PathBuf,
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
}

/// A running ks-apiserver.
#[derive(Clone, Debug)]
pub struct KubeSphere {
    /// `http://127.0.0.1:PORT` (plain HTTP; it listens on every interface).
    pub apiserver: String,
    /// The KubeSphere commit it was built from.
    pub commit: String,
    /// Its working directory, holding `kubesphere.yaml` (ks-controller-manager reads the same file).
    pub dir: PathBuf,
    /// The ks-controller-manager binary of the same commit (not started: it would compete with ksiam's
    /// controllers and binds the fixed ports 8443 and 8080).
    pub controller_manager: PathBuf,
}

/// The source tree: `KSIAM_KUBESPHERE_SRC`, else `shared/peers/kubesphere/src` in the closest ancestor of
/// `root` that has one (`../shared/` of a checkout).
pub fn source(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KSIAM_KUBESPHERE_SRC").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        if !dir.join("go.work").is_file() {
            bail!("KSIAM_KUBESPHERE_SRC={} has no go.work", dir.display());
        }
        return Ok(dir);
    }
    root.ancestors()
        .skip(1)
        .map(|a| a.join("shared").join("peers").join("kubesphere").join("src"))
        .find(|d| d.join("go.work").is_file())
        .with_context(|| {
            format!(
                "KubeSphere's source is not there: no shared/peers/kubesphere/src above {} \
                 (set KSIAM_KUBESPHERE_SRC)",
                root.display()
            )
        })
}

/// The commit the source tree is at: the first 40-hex-digit word of the `README.md` beside it.
pub fn commit(source: &Path) -> anyhow::Result<String> {
    let readme = source.parent().unwrap_or(source).join("README.md");
    let text = fs::read_to_string(&readme).with_context(|| format!("reading {}", readme.display()))?;
    commit_in(&text).with_context(|| format!("{} names no commit", readme.display()))
}

fn commit_in(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 40)
        .map(str::to_ascii_lowercase)
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/ksiam/kubesphere/<commit>/`.
pub fn cache_dir(commit: &str) -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(base.join("ksiam").join("kubesphere").join(commit))
}

/// A build running in a background thread.
pub struct Pending(JoinHandle<anyhow::Result<Binaries>>);

/// Starts [`ensure`] in a background thread: the Go build overlaps whatever the caller does next.
pub fn build_in_background(root: &Path) -> Pending {
    let root = root.to_owned();
    Pending(thread::spawn(move || ensure(&root)))
}

impl Pending {
    /// Waits for the build.
    pub fn wait(self) -> anyhow::Result<Binaries> {
        match self.0.join() {
            Ok(result) => result,
            Err(_) => bail!("the KubeSphere build thread panicked"),
        }
    }
}

/// Makes sure both binaries exist in the cache for the source's commit, building them if needed.
pub fn ensure(root: &Path) -> anyhow::Result<Binaries> {
    let source = self::source(root)?;
    let commit = self::commit(&source)?;
    let cache = cache_dir(&commit)?;
    let bins = Binaries {
        apiserver: cache.join(PROGRAMS[0]),
        controller_manager: cache.join(PROGRAMS[1]),
        commit: commit.clone(),
        source: source.clone(),
    };
    if bins.apiserver.is_file() && bins.controller_manager.is_file() {
        say(format!("KubeSphere {}: {}", short(&commit), cache.display()));
        return Ok(bins);
    }
    let step = Step::start(format!(
        "KubeSphere {}: go build ks-apiserver and ks-controller-manager (about 3 min cold)",
        short(&commit)
    ));
    let version = crate::process::run(Command::new("go").arg("version"))
        .context("Go is needed once to build KubeSphere's ks-apiserver and ks-controller-manager")?;
    say(format!("KubeSphere build uses {}", version.trim()));
    let work = root.join("target").join("kubesphere");
    let src = work.join("src");
    copy_source(&source, &src)?;
    fs::create_dir_all(&cache)?;
    let log = work.join("build.log");
    for name in PROGRAMS {
        let out = cache.join(name);
        if out.is_file() {
            continue;
        }
        let partial = cache.join(format!("{name}.partial-{}", std::process::id()));
        go_build(&src, name, &partial, &log)?;
        fs::rename(&partial, &out)?;
    }
    step.done();
    Ok(bins)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Copies the read-only source tree to `to` (replacing what was there) and makes it writable.
fn copy_source(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    fs::create_dir_all(to.parent().unwrap_or(Path::new(".")))?;
    crate::process::run(Command::new("cp").arg("-R").arg(from).arg(to))?;
    crate::process::run(Command::new("chmod").args(["-R", "u+w"]).arg(to))?;
    Ok(())
}

/// `go build ./cmd/<name>`, its output appended to `log`, with a progress line every 30 s.
fn go_build(src: &Path, name: &str, out: &Path, log: &Path) -> anyhow::Result<()> {
    let file = fs::File::options().create(true).append(true).open(log)?;
    let mut child = Command::new("go")
        .current_dir(src)
        // go.work puts staging/src/kubesphere.io/* in the workspace; `-mod=mod` is refused there.
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-buildvcs=false")
        .args(["build", "-trimpath", "-ldflags", "-s -w", "-o"])
        .arg(out)
        .arg(format!("./cmd/{name}"))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("running go build")?;
    let start = Instant::now();
    let mut next = Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if crate::process::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted while building {name}");
        }
        if start.elapsed() >= next {
            say(format!(
                "go build {name}: {}s so far (log {})",
                next.as_secs(),
                log.display()
            ));
            next += Duration::from_secs(30);
        }
        thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("go build {name} failed with {status}\n{}", tail.join("\n"));
    }
    say(format!(
        "go build {name}: done in {:.1}s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// KubeSphere's CRDs that `deploy/crds/` does not define (ksiam's own definitions are kept): the
/// `extensions.kubesphere.io` kinds ks-apiserver needs at start-up and the others it watches.
pub fn apply_crds(root: &Path, bins: &Binaries, kubectl: &Kubectl) -> anyhow::Result<()> {
    let dir = bins
        .source
        .join("config")
        .join("ks-core")
        .join("charts")
        .join("ks-crds")
        .join("crds");
    let ours = root.join("deploy").join("crds");
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".yaml") else {
            continue;
        };
        // `<group>_<plural>.yaml` upstream, `<plural>.<group>.yaml` in deploy/crds/.
        let Some((group, plural)) = stem.split_once('_') else {
            continue;
        };
        if ours.join(format!("{plural}.{group}.yaml")).is_file() {
            continue;
        }
        files.push(path);
    }
    files.sort();
    let mut args: Vec<String> = ["apply", "--server-side", "--force-conflicts"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for f in &files {
        args.push("-f".into());
        args.push(f.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl.run(&args)?;
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    for f in &names {
        wait.push("-f");
        wait.push(f);
    }
    kubectl.run(&wait)?;
    say(format!("applied {} of KubeSphere's CRDs", files.len()));
    Ok(())
}

/// ks-apiserver's `kubesphere.yaml`.
pub fn config(kubeconfig: &Path, jwt_secret: &str) -> String {
    let quoted = serde_json::Value::from(jwt_secret).to_string();
    let kubeconfig = serde_json::Value::from(kubeconfig.display().to_string()).to_string();
    format!(
        "kubernetes:\n  kubeconfig: {kubeconfig}\n  qps: 1000\n  burst: 2000\n\
         cache:\n  type: InMemoryCache\n\
         authentication:\n  authenticateRateLimiterMaxTries: 10\n  authenticateRateLimiterDuration: 10m0s\n  \
         loginHistoryRetentionPeriod: 168h\n  multipleLogin: true\n  issuer:\n    \
         url: \"{issuer}\"\n    jwtSecret: {quoted}\n    maximumClockSkew: 10s\n    \
         accessTokenMaxAge: 2h\n    accessTokenInactivityTimeout: 30m\n\
         authorization:\n  mode: RBAC\n\
         multicluster:\n  clusterRole: host\n  hostClusterName: host\n",
        issuer = ISSUER,
    )
}

/// The `iss` KubeSphere's default configuration sets (and ksiam's controller writes).
const ISSUER: &str = "http://ks-console.kubesphere-system.svc:30880";

/// Applies KubeSphere's extra CRDs, writes `kubesphere.yaml` and starts ks-apiserver under the control
/// plane's supervisor (so it stops with it); waits until `/healthz` answers.
pub fn start(
    root: &Path,
    cp: &mut ControlPlane,
    bins: &Binaries,
    jwt_secret_file: &Path,
) -> anyhow::Result<KubeSphere> {
    let step = Step::start("ks-apiserver beside ksiam");
    apply_crds(root, bins, &cp.kubectl())?;
    let dir = cp.run_dir.join("kubesphere");
    fs::create_dir_all(&dir)?;
    let secret = fs::read_to_string(jwt_secret_file)
        .with_context(|| format!("reading {}", jwt_secret_file.display()))?;
    crate::pki::write_secret(
        &dir.join("kubesphere.yaml"),
        &config(&cp.kubeconfig, secret.trim()),
    )?;
    let addr = free_port()?;
    let mut cmd = Command::new(&bins.apiserver);
    cmd.current_dir(&dir)
        .arg(format!("--insecure-port={}", addr.port()))
        .arg("-v=2");
    cp.procs
        .spawn("ks-apiserver", cmd, &cp.run_dir.join("ks-apiserver.log"))?;
    cp.procs
        .wait_ready("ks-apiserver", Duration::from_secs(120), || {
            crate::stack::http_ok(addr, "/healthz")
        })?;
    step.done();
    Ok(KubeSphere {
        apiserver: format!("http://{addr}"),
        commit: bins.commit.clone(),
        dir,
        controller_manager: bins.controller_manager.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_is_the_first_full_hash() {
        let text = "at commit\n`04a29b5c601470fa6bc2f2e92358dcb802a0d414`, the commit of deadbeef";
        assert_eq!(
            commit_in(text).as_deref(),
            Some("04a29b5c601470fa6bc2f2e92358dcb802a0d414")
        );
        assert_eq!(commit_in("abc 123"), None);
        assert_eq!(commit_in(&"a".repeat(41)), None, "41 hex digits are no commit");
    }

    #[test]
    fn the_config_quotes_the_secret_and_the_path() {
        let yaml = config(Path::new("/run/a b/kubeconfig"), "s\"e:c");
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["authentication"]["issuer"]["jwtSecret"], "s\"e:c");
        assert_eq!(v["kubernetes"]["kubeconfig"], "/run/a b/kubeconfig");
        assert_eq!(v["multicluster"]["clusterRole"], "host");
        assert_eq!(v["authorization"]["mode"], "RBAC");
    }
}
