//! One fresh namespace per test, so tests can run in parallel and never see each other's objects.

use std::io::Read as _;

use crate::kubectl;

/// A namespace with a random suffix, deleted (without waiting) when dropped.
pub struct TestNamespace {
    name: String,
}

// === impl TestNamespace ===

impl TestNamespace {
    /// Creates `<prefix>-<random>` with the label `ksiam.io/e2e=true`.
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        let prefix: String = prefix.chars().take(50).collect();
        let name = format!("{prefix}-{}", random_suffix());
        kubectl(&["create", "namespace", &name])?;
        let ns = Self { name };
        kubectl(&["label", "namespace", &ns.name, "ksiam.io/e2e=true"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // The namespace controller removes the contents; nothing waits for it.
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// Eight random lowercase hex characters (valid in any Kubernetes name).
pub fn random_suffix() -> String {
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
