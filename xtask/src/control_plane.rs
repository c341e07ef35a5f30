//! The local control plane: build kube-apiserver/etcd from Go modules, run them, run the tests.

use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Local,
    Kind,
}

pub fn up(_root: &Path, _detach: bool) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}

pub fn down(_root: &Path) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}

pub fn test(_root: &Path) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}

pub fn e2e(_root: &Path, _backend: Backend, _args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
