//! Leader election with two more `ksiam all` replicas (README: "several replicas can run"; ARCHITECTURE.md:
//! "only the leader Lease holder runs the controllers").
//!
//! The stack's own `ksiam all` keeps its Lease; the two replicas started here (the same binary and
//! configuration, other ports) share a Lease of their own, named for this test, with a 5 s duration. Only
//! the holder starts the controllers; the other stands by and starts none. The holder is then killed with
//! SIGKILL, and the time until the standby holds the Lease and runs the controllers is printed (it is bounded
//! by the Lease duration plus one retry; no timing is asserted).
//!
//! Every replica registers the admission webhook configurations with its own address when it starts (the
//! writes non-leaders do; in a cluster they all name the same Service), so this test puts back the stack's
//! configurations when it ends. Its own test binary: nothing else runs meanwhile.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ksiam_e2e::{get_json, kubectl, kubectl_with_stdin, poll, random_suffix};

const LEASE_NAMESPACE: &str = "kubesphere-system";
const STARTED: &str = "ServiceAccount controller running";

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 12];
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_ok()
        && stream.read_exact(&mut head).is_ok()
        && &head[9..12] == b"200"
}

/// The stack's `ksiam all`: its binary and environment (all of its configuration is in the environment).
fn stack_process() -> anyhow::Result<(PathBuf, BTreeMap<String, String>)> {
    let pid_file = std::env::var_os("KSIAM_PID_FILE")
        .ok_or_else(|| anyhow::anyhow!("KSIAM_PID_FILE is not set: run via `cargo xtask e2e`"))?;
    let pid: u32 = std::fs::read_to_string(pid_file)?.trim().parse()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    let env = environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    Ok((exe, env))
}

/// A `ksiam all` replica started by this test; killed when dropped.
struct Replica {
    identity: &'static str,
    child: Child,
    log: PathBuf,
}

impl Replica {
    fn start(identity: &'static str, lease: &str) -> anyhow::Result<Self> {
        let (exe, mut env) = stack_process()?;
        let gateway = free_port()?;
        for key in [
            "KSIAM_AUTHZ_GRPC_LISTEN",
            "KSIAM_TOKEN_GRPC_LISTEN",
            "KSIAM_AUTHZ_WEBHOOK_LISTEN",
            "KSIAM_ADMIN_LISTEN",
        ] {
            env.insert(key.into(), free_port()?.to_string());
        }
        env.insert("KSIAM_GATEWAY_LISTEN".into(), gateway.to_string());
        env.insert("KSIAM_WEBHOOK_LISTEN".into(), "127.0.0.1:0".into());
        // In the split topology the process holding the controllers has no signing key of its own.
        env.insert(
            "KSIAM_JWT_SECRET_FILE".into(),
            std::env::var("KSIAM_JWT_SECRET_FILE").map_err(|_| {
                anyhow::anyhow!("KSIAM_JWT_SECRET_FILE is not set: run via `cargo xtask e2e`")
            })?,
        );
        env.insert("KSIAM_LEASE_NAME".into(), lease.into());
        env.insert("KSIAM_LEASE_IDENTITY".into(), identity.into());
        env.insert("KSIAM_LEASE_DURATION_SECONDS".into(), "5".into());
        // The default filter logs the Lease and the controllers at info.
        env.remove("RUST_LOG");
        env.remove("KSIAM_PID_FILE");
        let dir = std::env::var_os("KSIAM_E2E_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let log = dir.join(format!("leader-{identity}-{}.log", random_suffix()));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(exe)
            .arg("all")
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let mut replica = Self { identity, child, log };
        poll(
            &format!("{identity} to answer /readyz"),
            Duration::from_secs(90),
            || {
                if let Some(status) = replica.child.try_wait()? {
                    anyhow::bail!("{identity} exited with {status}: {}", replica.log_text());
                }
                Ok(http_ok(gateway, "/readyz").then_some(()))
            },
        )?;
        Ok(replica)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stack's admission webhook configurations, put back as they were when dropped.
struct SavedWebhookConfigurations(Vec<serde_json::Value>);

impl SavedWebhookConfigurations {
    fn save() -> anyhow::Result<Self> {
        let mut saved = Vec::new();
        for kind in ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"] {
            let list = get_json(&[kind])?;
            for mut item in list["items"].as_array().cloned().unwrap_or_default() {
                let meta = item["metadata"].as_object_mut();
                if let Some(meta) = meta {
                    for field in [
                        "resourceVersion",
                        "uid",
                        "managedFields",
                        "creationTimestamp",
                        "generation",
                    ] {
                        meta.remove(field);
                    }
                }
                item["apiVersion"] = "admissionregistration.k8s.io/v1".into();
                item["kind"] = if kind.starts_with("mutating") {
                    "MutatingWebhookConfiguration".into()
                } else {
                    "ValidatingWebhookConfiguration".into()
                };
                saved.push(item);
            }
        }
        Ok(Self(saved))
    }
}

impl Drop for SavedWebhookConfigurations {
    fn drop(&mut self) {
        for item in &self.0 {
            if let Err(e) = kubectl_with_stdin(&["replace", "-f", "-"], &item.to_string()) {
                eprintln!("could not restore {}: {e:#}", item["metadata"]["name"]);
            }
        }
    }
}

fn holder(lease: &str) -> anyhow::Result<Option<String>> {
    let l = get_json(&["lease", lease, "-n", LEASE_NAMESPACE])?;
    Ok(l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

#[test]
fn only_the_lease_holder_runs_the_controllers_and_a_standby_takes_over_after_sigkill() -> anyhow::Result<()> {
    let saved = SavedWebhookConfigurations::save()?;
    let lease = format!("ksiam-e2e-{}", random_suffix());
    struct DeleteLease(String);
    impl Drop for DeleteLease {
        fn drop(&mut self) {
            let _ = kubectl(&[
                "delete",
                "lease",
                &self.0,
                "-n",
                LEASE_NAMESPACE,
                "--ignore-not-found",
            ]);
        }
    }
    let _lease_guard = DeleteLease(lease.clone());

    let mut a = Replica::start("replica-a", &lease)?;
    poll("replica-a to hold the Lease", Duration::from_secs(30), || {
        Ok((holder(&lease)?.as_deref() == Some("replica-a")).then_some(()))
    })?;
    poll(
        "replica-a to run the controllers",
        Duration::from_secs(30),
        || Ok(a.log_text().contains(STARTED).then_some(())),
    )?;
    let b = Replica::start("replica-b", &lease)?;
    poll("replica-b to stand by", Duration::from_secs(30), || {
        Ok(b.log_text().contains("standing by").then_some(()))
    })?;
    // Several Lease periods pass while replica-a renews: replica-b never holds it nor starts a controller.
    for _ in 0..3 {
        let renewed = get_json(&["lease", &lease, "-n", LEASE_NAMESPACE])?["spec"]["renewTime"].clone();
        poll("replica-a to renew the Lease", Duration::from_secs(30), || {
            let l = get_json(&["lease", &lease, "-n", LEASE_NAMESPACE])?;
            Ok((l["spec"]["renewTime"] != renewed).then_some(l))
        })
        .and_then(|l| {
            anyhow::ensure!(l["spec"]["holderIdentity"] == "replica-a", "holder changed: {l}");
            Ok(())
        })?;
    }
    let standby = b.log_text();
    assert!(
        !standby.contains(STARTED) && !standby.contains("acquired the leader lease"),
        "the standby started controllers:\n{standby}"
    );

    // SIGKILL the holder: no release, the Lease has to expire.
    let killed = Instant::now();
    a.kill()?;
    poll(
        "replica-b to take the Lease over",
        Duration::from_secs(60),
        || Ok((holder(&lease)?.as_deref() == Some("replica-b")).then_some(())),
    )?;
    let held = killed.elapsed();
    poll(
        "replica-b to run the controllers",
        Duration::from_secs(30),
        || Ok(b.log_text().contains(STARTED).then_some(())),
    )?;
    let running = killed.elapsed();
    eprintln!(
        "holder SIGKILLed → standby holds the Lease after {held:?}, runs the controllers after {running:?} \
         (Lease duration 5 s, retries every 2 s)"
    );
    let l = get_json(&["lease", &lease, "-n", LEASE_NAMESPACE])?;
    assert_eq!(l["spec"]["leaseTransitions"], 1, "{l}");
    assert_eq!(b.identity, "replica-b");
    drop(b);
    drop(saved);
    Ok(())
}
