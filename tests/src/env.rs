//! What `cargo xtask e2e` hands to the tests.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment of an e2e run.
#[derive(Debug)]
pub struct E2e {
    /// The kubectl built with the control plane (`KSIAM_KUBECTL`).
    pub kubectl: PathBuf,
    /// Admin kubeconfig (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// The run directory with logs and PKI (`KSIAM_E2E_RUN_DIR`).
    pub run_dir: Option<PathBuf>,
    /// `local` or `kind` (`KSIAM_E2E_BACKEND`).
    pub backend: String,
}

/// The e2e environment; panics with instructions when the tests were not started by `cargo xtask`.
pub fn e2e() -> &'static E2e {
    static ENV: OnceLock<E2e> = OnceLock::new();
    ENV.get_or_init(|| {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        assert!(
            var("KSIAM_E2E").is_some(),
            "KSIAM_E2E is not set: the e2e tests need the real API server that xtask starts; \
             run via `cargo xtask e2e` (or `cargo xtask test`)"
        );
        let required = |name: &str| {
            var(name)
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("{name} is not set: run via `cargo xtask e2e`, which exports it"))
        };
        E2e {
            kubectl: required("KSIAM_KUBECTL"),
            kubeconfig: required("KUBECONFIG"),
            run_dir: var("KSIAM_E2E_RUN_DIR").map(PathBuf::from),
            backend: std::env::var("KSIAM_E2E_BACKEND").unwrap_or_else(|_| "local".to_owned()),
        }
    })
}

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
