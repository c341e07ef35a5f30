//! Records the commit this crate was built from, for the default User-Agent (`kubesphere/<commit>`).
//!
//! Sources, first match wins: the `KUBESPHERE_CLIENT_GIT_COMMIT` environment variable, the
//! `.cargo_vcs_info.json` that `cargo package` writes into a published crate, `git rev-parse HEAD`.
//! Nothing found gives `unknown`, as the Go SDK does.

use std::{path::Path, process::Command};

const ENV: &str = "KUBESPHERE_CLIENT_GIT_COMMIT";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={ENV}");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let manifest_dir = Path::new(&manifest_dir);

    let commit = std::env::var(ENV)
        .ok()
        .filter(|commit| !commit.trim().is_empty())
        .or_else(|| from_vcs_info(manifest_dir))
        .or_else(|| from_git(manifest_dir))
        .map(|commit| commit.trim().chars().take(7).collect::<String>())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env={ENV}={commit}");
}

/// `cargo package` records `{"git": {"sha1": "<40 hex>"}, ...}`; a plain search avoids a build dependency.
fn from_vcs_info(manifest_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest_dir.join(".cargo_vcs_info.json")).ok()?;
    let after_key = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let value = after_key
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let sha: String = value.chars().take_while(char::is_ascii_hexdigit).collect();
    (sha.len() >= 7).then_some(sha)
}

fn from_git(manifest_dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(manifest_dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let sha = git(&["rev-parse", "HEAD"])?;
    // Rebuild when HEAD moves: a commit or checkout rewrites HEAD or appends to its reflog.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for file in ["HEAD", "logs/HEAD"] {
            let path = Path::new(&git_dir).join(file);
            if path.exists() {
                println!("cargo::rerun-if-changed={}", path.display());
            }
        }
    }
    (sha.len() >= 7 && sha.chars().all(|c| c.is_ascii_hexdigit())).then_some(sha)
}
