//! Running the control plane's kubectl.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::e2e;

fn command(args: &[&str]) -> Command {
    let env = e2e();
    let mut cmd = Command::new(&env.kubectl);
    cmd.arg("--kubeconfig").arg(&env.kubeconfig).args(args);
    cmd
}

/// Runs `kubectl <args>` and returns its stdout; fails with its stderr if kubectl fails.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    kubectl_with_stdin(args, "")
}

/// Runs `kubectl <args>` with `stdin` as its input.
pub fn kubectl_with_stdin(args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting kubectl {}", args.join(" ")))?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `kubectl apply -f -` with one object or a `List`.
pub fn apply(manifest: &serde_json::Value) -> anyhow::Result<()> {
    kubectl_with_stdin(&["apply", "-f", "-"], &manifest.to_string())?;
    Ok(())
}

/// `kubectl get <args> -o json`, parsed.
pub fn get_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut all = vec!["get"];
    all.extend(args);
    all.extend(["-o", "json"]);
    let out = kubectl(&all)?;
    serde_json::from_str(&out).with_context(|| format!("parsing the output of kubectl {}", all.join(" ")))
}
