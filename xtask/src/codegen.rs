//! `cargo xtask codegen [--check]`.

use std::path::Path;

pub fn run(_root: &Path, _check: bool) -> anyhow::Result<()> {
    anyhow::bail!("codegen is not written yet")
}
