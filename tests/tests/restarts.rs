//! Every ksiam process in turn hangs (SIGSTOP, 3 s) and is then killed (SIGKILL) while requests keep
//! coming: whatever the topology (one `ksiam all`, or the split services talking gRPC), nothing the policy
//! forbids is ever allowed, a revoked token is never accepted, and everything serves again within seconds
//! of the restart.
//!
//! `cargo xtask e2e` restarts killed processes like a kubelet would and lists their pid files in
//! `KSIAM_PID_FILES` (`name=path,…`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};
use std::time::{Duration, Instant};

use ksiam_e2e::{
    TestNamespace, gateway_request, kubectl, kubectl_with_stdin, poll, random_suffix, service_account_token,
    token_secret_name,
};

const CLUSTERS: &str = "/kapis/tenant.kubesphere.io/v1beta1/clusters";

fn pid_files() -> anyhow::Result<Vec<(String, std::path::PathBuf)>> {
    let list = std::env::var("KSIAM_PID_FILES")
        .map_err(|_| anyhow::anyhow!("KSIAM_PID_FILES is not set: run via `cargo xtask e2e`"))?;
    list.split(',')
        .map(|entry| {
            let (name, path) = entry
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("bad KSIAM_PID_FILES entry {entry:?}"))?;
            Ok((name.to_owned(), path.into()))
        })
        .collect()
}

fn pid(path: &std::path::Path) -> anyhow::Result<u32> {
    Ok(std::fs::read_to_string(path)?.trim().parse()?)
}

#[test]
fn every_ksiam_process_killed_in_turn_fails_closed_and_comes_back() -> anyhow::Result<()> {
    let processes = pid_files()?;
    anyhow::ensure!(
        !processes.is_empty(),
        "no ksiam process listed in KSIAM_PID_FILES"
    );
    let ns = TestNamespace::create("restart")?;
    let ns = ns.name().to_owned();
    // `boss` may list clusters (platform-admin); `nobody` may not; `gone`'s token is revoked.
    let boss = service_account_token(&ns, "boss")?;
    let nobody = service_account_token(&ns, "nobody")?;
    let gone = service_account_token(&ns, "gone")?;
    let binding = format!("restart-boss-{}", random_suffix());
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: iam.kubesphere.io/v1beta1\nkind: GlobalRoleBinding\nmetadata:\n  name: {binding}\n  labels:\n    iam.kubesphere.io/role-ref: platform-admin\nroleRef:\n  apiGroup: iam.kubesphere.io\n  kind: GlobalRole\n  name: platform-admin\nsubjects:\n- apiGroup: kubesphere.io\n  kind: ServiceAccount\n  name: boss\n  namespace: {ns}\n"
        ),
    )?;
    let _cleanup = Cleanup(binding.clone());
    poll(
        "the binding to reach the gateway",
        Duration::from_secs(30),
        || Ok((gateway_request("GET", CLUSTERS, Some(&boss), &[])?.0 == 200).then_some(())),
    )?;
    let secret = token_secret_name(&ns, "gone")?;
    // The controller recreates a deleted token Secret with a new token; the old one stays revoked.
    kubectl(&["delete", "secret", &secret, "-n", &ns])?;
    poll(
        "the deleted Secret's token to be refused",
        Duration::from_secs(30),
        || Ok((gateway_request("GET", CLUSTERS, Some(&gone), &[])?.0 == 401).then_some(())),
    )?;

    // Load: forbidden and revoked requests all the time, each answer checked.
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let checked = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, violations, checked) = (stop.clone(), violations.clone(), checked.clone());
        let (nobody, gone) = (nobody.clone(), gone.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (who, token, path) in [
                    ("an unbound ServiceAccount", &nobody, CLUSTERS),
                    ("a revoked token", &gone, CLUSTERS),
                    ("a revoked token", &gone, "/api/v1/namespaces"),
                ] {
                    // A refused connection or a 5xx during a restart is fine; a 2xx never is.
                    if let Ok((status, body)) = gateway_request("GET", path, Some(token), &[]) {
                        checked.fetch_add(1, Ordering::Relaxed);
                        if (200..300).contains(&status) {
                            violations
                                .lock()
                                .push(format!("{who} got {status} for {path}: {body:.200}"));
                        }
                    }
                }
            }
        })
    };

    let mut recovered = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for (name, file) in &processes {
            let old = pid(file)?;
            // A hung dependency first (its connections stay open, nothing answers), then a crash.
            for (signal, pause) in [("-STOP", Duration::from_secs(3)), ("-KILL", Duration::ZERO)] {
                let status = std::process::Command::new("kill")
                    .args([signal, &old.to_string()])
                    .status()?;
                anyhow::ensure!(status.success(), "kill {signal} {old} ({name}) failed");
                std::thread::sleep(pause);
            }
            let start = Instant::now();
            poll(
                &format!("{name} to be restarted and the gateway to serve again"),
                Duration::from_secs(60),
                || {
                    let restarted = pid(file).is_ok_and(|p| p != old);
                    Ok(
                        (restarted && gateway_request("GET", CLUSTERS, Some(&boss), &[])?.0 == 200)
                            .then_some(()),
                    )
                },
            )?;
            recovered.push(format!("{name}: {:.1}s", start.elapsed().as_secs_f64()));
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    load.join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    eprintln!(
        "back after SIGKILL: {} ({} answers checked)",
        recovered.join(", "),
        checked.load(Ordering::Relaxed)
    );
    result?;
    let violations = violations.lock();
    assert!(
        violations.is_empty(),
        "allowed what must be refused:\n{}",
        violations.join("\n")
    );
    assert!(checked.load(Ordering::Relaxed) > 0, "no request was answered");
    // Still refused after everything restarted.
    assert_eq!(gateway_request("GET", CLUSTERS, Some(&nobody), &[])?.0, 403);
    assert_eq!(gateway_request("GET", CLUSTERS, Some(&gone), &[])?.0, 401);
    Ok(())
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "globalrolebinding", &self.0, "--ignore-not-found"]);
    }
}
