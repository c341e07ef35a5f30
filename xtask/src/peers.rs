//! The Go peers of `benches/peers/<name>/`, built from the Go module proxy into `target/`.
//!
//! Each peer is a small Go module with a committed `go.mod`/`go.sum` (k8s-rbac carries the `replace`
//! directives `k8s.io/kubernetes` needs for its staging modules, as `k8s_bin.rs` writes them).
//! A build is keyed by the peer's name and a hash of its sources (`go.mod`, `go.sum`, `*.go`), so an edit
//! rebuilds it and nothing else does. Where a binary comes from, first match wins:
//! 1. `target/peers/bin/<name>-<hash>/<name>`;
//! 2. `${XDG_CACHE_HOME:-$HOME/.cache}/ksiam/peers/<name>-<hash>/<name>` (copied into `target/`);
//! 3. `go build` (k8s-rbac: about 2.5 min on 2 cores with a warm module cache), then copied to the cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::process::{run, run_inherit};
use crate::progress::{Step, say};

/// A Go peer under `benches/peers/`.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// Directory and binary name.
    pub name: &'static str,
}

/// Kubernetes' RBAC authorizer (v1.34.4) over informer-style listers.
pub const K8S_RBAC: Peer = Peer { name: "k8s-rbac" };
/// golang-jwt v4 HS256 verification.
pub const GOLANG_JWT: Peer = Peer { name: "golang-jwt" };

// === impl Peer ===

impl Peer {
    fn source_dir(self, root: &Path) -> PathBuf {
        root.join("benches").join("peers").join(self.name)
    }

    /// `<name>-<16 hex digits>`: the cache key of the current sources.
    pub fn key(self, root: &Path) -> anyhow::Result<String> {
        let dir = self.source_dir(root);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.retain(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name == "go.mod" || name == "go.sum" || name.ends_with(".go")
        });
        files.sort();
        let mut hash = Fnv::default();
        for f in &files {
            hash.write(f.file_name().unwrap_or_default().as_encoded_bytes());
            hash.write(&[0]);
            hash.write(&fs::read(f)?);
            hash.write(&[0]);
        }
        Ok(format!("{}-{:016x}", self.name, hash.0))
    }

    /// Makes sure the peer's binary exists for the current sources and returns its path.
    pub fn ensure(self, root: &Path) -> anyhow::Result<PathBuf> {
        let key = self.key(root)?;
        let out = root.join("target").join("peers").join("bin").join(&key);
        let bin = out.join(self.name);
        if bin.is_file() {
            say(format!("{}: {}", self.name, bin.display()));
            return Ok(bin);
        }
        fs::create_dir_all(&out)?;
        let cached = cache_dir().map(|c| c.join(&key).join(self.name));
        if let Some(cached) = cached.as_ref().filter(|c| c.is_file()) {
            say(format!("{}: restoring from {}", self.name, cached.display()));
            copy_atomic(cached, &bin)?;
            return Ok(bin);
        }
        let step = Step::start(format!("go build {} ({key})", self.name));
        let version = run(Command::new("go").arg("version"))
            .context("Go is needed once to build the peers of benches/peers/")?;
        say(format!("using {}", version.trim()));
        let partial = out.join(format!("{}.partial-{}", self.name, std::process::id()));
        run_inherit(
            Command::new("go")
                .current_dir(self.source_dir(root))
                .env("GOTOOLCHAIN", "local")
                .env("GOFLAGS", "-mod=mod")
                .env("CGO_ENABLED", "0")
                .args(["build", "-trimpath", "-ldflags", "-s -w", "-o"])
                .arg(&partial)
                .arg("."),
        )?;
        fs::rename(&partial, &bin)?;
        step.done();
        if let Some(cached) = cached {
            fs::create_dir_all(cached.parent().unwrap_or(Path::new(".")))?;
            copy_atomic(&bin, &cached)?;
            say(format!("{}: cached in {}", self.name, cached.display()));
        }
        Ok(bin)
    }

    /// What the binary reports with `-version` (Go and module versions).
    pub fn versions(self, bin: &Path) -> anyhow::Result<String> {
        let out = run(Command::new(bin).arg("-version"))?;
        let out = out.trim();
        if out.is_empty() {
            bail!("{} -version printed nothing", bin.display());
        }
        Ok(out.to_owned())
    }
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/ksiam/peers/`.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("ksiam").join("peers"))
}

/// Copies via a temporary file and a rename, so an interrupted copy never leaves a truncated binary.
fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_extension(format!("partial-{}", std::process::id()));
    fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    fs::rename(&tmp, to)?;
    Ok(())
}

/// 64-bit FNV-1a: a stable hash for cache keys (std's hasher may change between Rust releases).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_values() {
        let hash = |s: &str| {
            let mut h = Fnv::default();
            h.write(s.as_bytes());
            h.0
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn key_changes_with_the_sources_only() {
        let root = std::env::temp_dir().join(format!("xtask-peers-{}", std::process::id()));
        let dir = root.join("benches").join("peers").join("p");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("go.mod"), "module p\n").unwrap();
        fs::write(dir.join("main.go"), "package main\n").unwrap();
        let peer = Peer { name: "p" };
        let first = peer.key(&root).unwrap();
        assert!(first.starts_with("p-"), "{first}");
        fs::write(dir.join("README.md"), "not a source").unwrap();
        assert_eq!(peer.key(&root).unwrap(), first);
        fs::write(dir.join("main.go"), "package main\n\nfunc main() {}\n").unwrap();
        assert_ne!(peer.key(&root).unwrap(), first);
        fs::remove_dir_all(root).unwrap();
    }
}
