//! `cargo xtask codegen [--check]`: writes the files `ksiam_api::generated_files` describes
//! (CRD YAML under `deploy/crds/`, `deploy/builtin-roles.yaml`), or with `--check` fails when
//! any of them is missing or differs from what would be written.

use std::path::Path;

use anyhow::Context as _;

/// Writes every generated file under `root` (printing one line per file written), or with `check`
/// writes nothing and fails listing the files that are missing or out of date.
pub fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    let files = ksiam_api::generate::try_generated_files().context("generating files")?;
    let mut stale = Vec::new();
    for (rel, contents) in &files {
        let path = root.join(rel);
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        if current.as_deref() == Some(contents.as_str()) {
            continue;
        }
        if check {
            stale.push(*rel);
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {rel}");
    }
    if !stale.is_empty() {
        anyhow::bail!(
            "generated files are out of date (run `cargo xtask codegen`):\n  {}",
            stale.join("\n  ")
        );
    }
    Ok(())
}
