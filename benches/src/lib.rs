//! The data both sides of a peer comparison read, so ksiam and its Go peers (`benches/peers/*`) are measured
//! and checked on the same inputs.
//!
//! - RBAC: policies of the Kubernetes-compatible subset from [`ksiam_rbac::generate::k8s`], written as
//!   `rbac.authorization.k8s.io/v1` objects, the three benchmark request sets, and random requests.
//! - Tokens: one KubeSphere ServiceAccount token (HS256, fixed `iat`) and its secret.

pub mod load;

use std::{fs, path::Path};

use anyhow::Context as _;
use ksiam_rbac::{
    Snapshot,
    generate::k8s::{self, AccessRequest, Generated},
    model::Policy,
};
use ksiam_token::{DEFAULT_ISSUER, Issuer, KeySet};
use serde::{Deserialize, Serialize};

/// The seed of every generated policy.
pub const SEED: u64 = 42;
/// The default seed of the random conformance requests (`cargo xtask conformance` picks one per run).
pub const REQUEST_SEED: u64 = 7;
/// The HS256 secret of the benchmark token.
pub const TOKEN_SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The benchmark token's `iat` (fixed, so the token is the same in every run).
pub const TOKEN_IAT: i64 = 1_700_000_000;

/// A named request of a benchmark request set and the outcome both sides must reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchCase {
    /// `allow_first`, `allow_last` or `deny`.
    pub name: String,
    /// The request.
    pub request: AccessRequest,
    /// The expected outcome.
    pub allowed: bool,
}

/// The three request sets of a generated policy.
pub fn cases(g: &Generated) -> Vec<BenchCase> {
    [
        ("allow_first", g.allow_first(), true),
        ("allow_last", g.allow_last(), true),
        ("deny", g.deny(), false),
    ]
    .into_iter()
    .map(|(name, r, allowed)| BenchCase {
        name: name.into(),
        request: AccessRequest::target(&r),
        allowed,
    })
    .collect()
}

/// The policy of size `n` exactly as the peers read it: generated, written as RBAC v1 objects, read back.
pub fn k8s_policy(n: usize) -> anyhow::Result<(Generated, Policy)> {
    let g = k8s::generate(n, SEED);
    let policy = k8s::from_objects(&k8s::to_objects(&g.policy)?)?;
    Ok((g, policy))
}

/// The benchmark token: a KubeSphere ServiceAccount token for `default/sample`.
pub fn token() -> anyhow::Result<String> {
    Ok(
        Issuer::new(KeySet::legacy(TOKEN_SECRET.as_bytes()), DEFAULT_ISSUER)
            .issue_sa_token("default", "sample", TOKEN_IAT, None)?,
    )
}

/// Writes `policy-<n>.json`, `cases-<n>.json` and, if `requests > 0`, `requests-<n>.json` for every size, and
/// `token.json`, into `dir`. The random requests come from `request_seed`.
pub fn write(dir: &Path, sizes: &[usize], requests: usize, request_seed: u64) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for &n in sizes {
        let g = k8s::generate(n, SEED);
        let objects = k8s::to_objects(&g.policy)?;
        write_json(&dir.join(format!("policy-{n}.json")), &objects)?;
        write_json(&dir.join(format!("cases-{n}.json")), &cases(&g))?;
        if requests > 0 {
            let reqs = k8s::random_requests(&g.policy, requests, request_seed);
            write_json(&dir.join(format!("requests-{n}.json")), &reqs)?;
        }
    }
    let token = serde_json::json!({"secret": TOKEN_SECRET, "token": token()?});
    write_json(&dir.join("token.json"), &token)
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    fs::write(path, serde_json::to_vec(value)?).with_context(|| format!("writing {}", path.display()))
}

/// Reads a policy file of RBAC v1 objects.
pub fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let value: serde_json::Value =
        serde_json::from_slice(&fs::read(path).with_context(|| format!("reading {}", path.display()))?)?;
    Ok(k8s::from_objects(&value)?)
}

/// ksiam-rbac's decision on every request, in order.
pub fn decide(policy: &Policy, requests: &[AccessRequest]) -> Vec<bool> {
    let snapshot = Snapshot::build(policy);
    requests
        .iter()
        .map(|r| snapshot.decide(&r.attributes()).allowed())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_decide_as_named_on_the_policy_the_peers_read() {
        let (g, policy) = k8s_policy(1000).unwrap();
        let cases = cases(&g);
        let reqs: Vec<AccessRequest> = cases.iter().map(|c| c.request.clone()).collect();
        let expected: Vec<bool> = cases.iter().map(|c| c.allowed).collect();
        assert_eq!(decide(&policy, &reqs), expected);
        assert_eq!(expected, [true, true, false]);
    }

    #[test]
    fn token_is_fixed_and_verifies() {
        let t = token().unwrap();
        assert_eq!(t, token().unwrap());
        let user = ksiam_token::Verifier::new(KeySet::legacy(TOKEN_SECRET.as_bytes()))
            .verify(&t)
            .unwrap();
        assert_eq!(user.username, "kubesphere:serviceaccount:default:sample");
    }

    #[test]
    fn written_files_read_back() {
        let dir = std::env::temp_dir().join(format!("ksiam-bench-test-{}", std::process::id()));
        write(&dir, &[10], 50, REQUEST_SEED).unwrap();
        let policy = read_policy(&dir.join("policy-10.json")).unwrap();
        let reqs: Vec<AccessRequest> =
            serde_json::from_slice(&fs::read(dir.join("requests-10.json")).unwrap()).unwrap();
        assert_eq!(reqs.len(), 50);
        assert_eq!(decide(&policy, &reqs), decide(&k8s_policy(10).unwrap().1, &reqs));
        fs::remove_dir_all(dir).unwrap();
    }
}
