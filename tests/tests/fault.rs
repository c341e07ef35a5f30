//! Idempotency under faults: ServiceAccounts created while the process running the controllers is killed
//! (SIGKILL, no chance to clean up) and restarted at random moments. Afterwards every ServiceAccount has
//! exactly one token Secret, recorded in its `secrets`, and no token Secret is orphaned.
//!
//! `cargo xtask e2e` restarts a killed `ksiam all` like a kubelet would and keeps its current pid in
//! `KSIAM_PID_FILE`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ksiam_e2e::{TestNamespace, get_json, kubectl_with_stdin, poll, secret_names};

const SERVICE_ACCOUNTS: usize = 200;
const BATCH: usize = 20;

/// A small deterministic generator; the seed is printed so a failing run can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pid_file() -> anyhow::Result<std::path::PathBuf> {
    std::env::var_os("KSIAM_PID_FILE")
        .map(Into::into)
        .ok_or_else(|| anyhow::anyhow!("KSIAM_PID_FILE is not set: run via `cargo xtask e2e`"))
}

fn current_pid() -> anyhow::Result<u32> {
    Ok(std::fs::read_to_string(pid_file()?)?.trim().parse()?)
}

/// The leader Lease's `renewTime` (the stack's `ksiam all` holds `kubesphere-system/ksiam-controller`).
fn lease_renewed() -> anyhow::Result<String> {
    let lease = get_json(&["lease", "ksiam-controller", "-n", "kubesphere-system"])?;
    Ok(lease["spec"]["renewTime"].to_string())
}

/// Kills `ksiam all` with SIGKILL and waits until its replacement serves again (`/readyz`) and holds the
/// leader Lease again (its `renewTime` changed: the killed process cannot write it any more). Returns both
/// delays.
fn kill_and_wait_for_restart() -> anyhow::Result<(Duration, Duration)> {
    let old = current_pid()?;
    let status = std::process::Command::new("kill")
        .args(["-9", &old.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -9 {old} failed");
    let start = Instant::now();
    let renewed = lease_renewed()?;
    poll("ksiam all to be restarted", Duration::from_secs(60), || {
        Ok((current_pid()? != old && ksiam_e2e::gateway_ready()).then_some(()))
    })?;
    let ready = start.elapsed();
    poll(
        "the restarted ksiam all to hold the Lease",
        Duration::from_secs(60),
        || Ok((lease_renewed()? != renewed).then_some(())),
    )?;
    Ok((ready, start.elapsed()))
}

fn manifest(ns: &str, names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: {n}\n  namespace: {ns}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn service_accounts_get_exactly_one_token_secret_while_the_controller_is_killed() -> anyhow::Result<()> {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1;
    eprintln!("fault schedule seed: {seed}");
    let mut rng = XorShift(seed);
    let ns = TestNamespace::create("fault")?;
    let names: Vec<String> = (0..SERVICE_ACCOUNTS).map(|i| format!("sa-{i:03}")).collect();

    let mut kills = 0;
    for batch in names.chunks(BATCH) {
        kubectl_with_stdin(&["apply", "-f", "-"], &manifest(ns.name(), batch))?;
        // Kill in about two batches out of three, at a random moment while the batch is being reconciled.
        if !rng.next().is_multiple_of(3) {
            std::thread::sleep(Duration::from_millis(rng.next() % 400));
            let (ready, leader) = kill_and_wait_for_restart()?;
            kills += 1;
            eprintln!(
                "killed ksiam all after batch starting {}; /readyz after {ready:?}, Lease held again after {leader:?}",
                batch[0]
            );
        }
    }
    // At least one kill always happens, so the test never passes without a fault.
    if kills == 0 {
        kill_and_wait_for_restart()?;
        kills = 1;
    }
    eprintln!("{kills} kills during {SERVICE_ACCOUNTS} creations");

    // Converged: every ServiceAccount records exactly one token Secret, the only one it has, and no token
    // Secret is orphaned. Polled until it holds (a reconcile still in flight may delete a stray); a stray
    // that stays fails at the deadline with the last observation.
    poll(
        "exactly one recorded token Secret per ServiceAccount, none orphaned",
        Duration::from_secs(120),
        || converged(ns.name()).map(Some),
    )?;
    Ok(())
}

/// `Ok` when every ServiceAccount of `ns` records exactly the one token Secret it has, and every token
/// Secret belongs to one of them; otherwise an error saying what is not so yet.
fn converged(ns: &str) -> anyhow::Result<()> {
    let sas = get_json(&["serviceaccounts.kubesphere.io", "-n", ns])?;
    let secrets = get_json(&[
        "secrets",
        "-n",
        ns,
        "--field-selector",
        "type=kubesphere.io/service-account-token",
    ])?;
    let mut by_sa: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in secrets["items"].as_array().into_iter().flatten() {
        let sa = s["metadata"]["annotations"]["kubesphere.io/service-account.name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = s["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(
            s["data"]["token"].as_str().is_some_and(|t| !t.is_empty()),
            "token Secret {name} has no token"
        );
        by_sa.entry(sa).or_default().push(name);
    }
    let sa_names: BTreeSet<String> = sas["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sa| sa["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(
        sa_names.len() == SERVICE_ACCOUNTS,
        "{} ServiceAccounts",
        sa_names.len()
    );
    let orphans: Vec<_> = by_sa.keys().filter(|sa| !sa_names.contains(*sa)).collect();
    anyhow::ensure!(
        orphans.is_empty(),
        "token Secrets of no ServiceAccount: {orphans:?}"
    );
    for sa in sas["items"].as_array().into_iter().flatten() {
        let name = sa["metadata"]["name"].as_str().unwrap_or_default();
        let held = by_sa.get(name).cloned().unwrap_or_default();
        anyhow::ensure!(
            held.len() == 1,
            "ServiceAccount {name} has token Secrets {held:?}"
        );
        let recorded = secret_names(sa);
        anyhow::ensure!(
            recorded == [held[0].as_str()],
            "ServiceAccount {name} records {recorded:?}"
        );
    }
    Ok(())
}
