//! Objects of the seed walkthrough (`../shared/seed/kubesphere-serviceaccount.md`), verbatim, and waiting for
//! the controller to give a ServiceAccount its token Secret.

use std::time::Duration;

use crate::{kubectl, poll};

/// Seed §1.1: the ServiceAccount, exactly as the walkthrough applies it.
pub const SEED_SERVICE_ACCOUNT: &str = "apiVersion: kubesphere.io/v1alpha1
kind: ServiceAccount
metadata:
  name: sample
  namespace: default
secrets: []
";

/// Waits (up to 30 s) until the KubeSphere ServiceAccount `ns/sa` lists a token Secret, and returns its name
/// (`kubectl get serviceaccounts.kubesphere.io <sa> -o jsonpath={.secrets[].name}`).
pub fn token_secret_name(ns: &str, sa: &str) -> anyhow::Result<String> {
    poll(
        &format!("the token secret of {ns}/{sa}"),
        Duration::from_secs(30),
        || {
            let out = kubectl(&[
                "get",
                "serviceaccounts.kubesphere.io",
                sa,
                "-n",
                ns,
                "-o",
                "jsonpath={.secrets[].name}",
            ])?;
            Ok((!out.is_empty()).then_some(out))
        },
    )
}
