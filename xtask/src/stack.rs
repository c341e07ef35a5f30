//! The whole local stack: control plane, KubeSphere's CRDs and built-in roles, system namespaces and workspace,
//! and `ksiam all` once that binary exists. `cargo xtask up` / `down` and the e2e run all start it this way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::control_plane::{ControlPlane, GrpcPki, Kubectl, free_port};
use crate::k8s_bin;
use crate::process::{self, install_signal_handler};
use crate::progress::{Step, say};

/// Namespaces KubeSphere puts into `system-workspace`; the last two are KubeSphere's own.
const SYSTEM_NAMESPACES: [&str; 6] = [
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "kubesphere-system",
    "kubesphere-controls-system",
];
const SYSTEM_LABELS: [(&str, &str); 3] = [
    ("kubesphere.io/workspace", "system-workspace"),
    ("kubesphere.io/managed", "true"),
    ("kubesphere.io/protected-resource", "true"),
];

/// A running stack; dropping it stops everything.
pub struct Stack {
    /// The node (`--node`); declared first, so it stops before the control plane.
    pub node: Option<crate::node::Node>,
    pub cp: ControlPlane,
    /// `KSIAM_GATEWAY` and `KSIAM_JWT_SECRET_FILE`, when `ksiam all` runs.
    pub ksiam: Option<KsiamAll>,
    /// KubeSphere's own ks-apiserver beside the gateway (`KUBESPHERE_APISERVER`), when asked for.
    pub kubesphere: Option<crate::kubesphere::KubeSphere>,
}

pub struct KsiamAll {
    pub gateway: String,
    /// `http://127.0.0.1:PORT` of the admin server (`/livez`, `/readyz`, `/metrics`).
    pub admin: String,
    pub jwt_secret_file: PathBuf,
    /// `https://127.0.0.1:PORT` of the authorizer's gRPC API (mutual TLS).
    pub authz_grpc: String,
    /// `https://127.0.0.1:PORT` of the token service's gRPC API (mutual TLS).
    pub token_grpc: String,
    /// The CA and client identities for both gRPC APIs.
    pub grpc_pki: GrpcPki,
    /// `https://127.0.0.1:PORT` of kube-apiserver's TokenReview and SubjectAccessReview webhooks (they
    /// accept only clients with a certificate from the cluster CA).
    pub authz_webhooks: String,
    /// The file holding the pid of the process running the controllers (`ksiam all`, or `ksiam controller`
    /// in the split topology; it changes when the process is restarted).
    pub pid_file: PathBuf,
    /// Every ksiam process's pid file, by name (the restart test kills each in turn).
    pub pid_files: Vec<(String, PathBuf)>,
    /// The `ksiam` binary.
    pub bin: PathBuf,
}

// === impl Stack ===

impl Stack {
    /// Builds what is missing and starts everything in `run_dir`, with `ksiam` built in the cargo profile
    /// `profile` (`dev` or `release`).
    pub fn start_with_profile(root: &Path, run_dir: &Path, profile: &str) -> anyhow::Result<Self> {
        Self::start_with(root, run_dir, profile, None, false, true)
    }

    /// Like [`Stack::start_with_profile`], with KubeSphere's ks-apiserver beside ksiam's gateway when
    /// `kubesphere` is a build (started early with [`crate::kubesphere::build_in_background`]), a real node
    /// (`crate::node`) when `node` is true, and without the local ksiam processes when `local_ksiam` is false
    /// (ksiam then runs as Pods from the chart).
    pub fn start_with(
        root: &Path,
        run_dir: &Path,
        profile: &str,
        kubesphere: Option<crate::kubesphere::Pending>,
        node: bool,
        local_ksiam: bool,
    ) -> anyhow::Result<Self> {
        if node {
            crate::node::preflight()?;
        }
        let bins = k8s_bin::ensure(root)?;
        let node_bins = node.then(|| k8s_bin::ensure_node(root)).transpose()?;
        let ksiam_bin = if local_ksiam {
            build_ksiam(root, profile)?
        } else {
            None
        };
        let lock = match &node_bins {
            Some(b) => {
                let lock = crate::node::NodeLock::acquire(&b.kube_proxy)?;
                crate::node::prepare_network()?;
                Some(lock)
            }
            None => None,
        };
        let options = crate::control_plane::Options {
            node: node.then_some(crate::node::GATEWAY),
        };
        let mut cp = ControlPlane::start_with(&bins, run_dir, &options)?;
        bootstrap_with(root, &cp.kubectl(), local_ksiam)?;
        let node = match (lock, &node_bins) {
            (Some(lock), Some(b)) => Some(crate::node::Node::start(root, &cp, b, lock)?),
            _ => None,
        };
        let ksiam = match ksiam_bin {
            Some(bin) if Topology::current()? == Topology::Split => Some(start_split(&mut cp, &bin)?),
            Some(bin) => Some(start_ksiam(&mut cp, &bin)?),
            None if !local_ksiam => None,
            None => {
                say("ksiam all: not built yet (no `ksiam` binary with an `all` subcommand)");
                None
            }
        };
        let kubesphere = match (kubesphere, &ksiam) {
            (None, _) => None,
            (Some(build), Some(k)) => {
                let ks = build.wait()?;
                Some(crate::kubesphere::start(root, &mut cp, &ks, &k.jwt_secret_file)?)
            }
            (Some(_), None) => bail!("ks-apiserver runs beside the local ksiam, which is not started"),
        };
        Ok(Self {
            node,
            cp,
            ksiam,
            kubesphere,
        })
    }

    /// The environment a user or a test needs to reach the stack, as `(name, value)` pairs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("KUBECONFIG", self.cp.kubeconfig.display().to_string()),
            ("KSIAM_KUBECTL", self.cp.kubectl.display().to_string()),
        ];
        if self.node.is_some() {
            env.push(("KSIAM_NODE", crate::node::NODE_NAME.to_owned()));
            env.push(("KSIAM_NODE_TEST_IMAGE", crate::node::BUSYBOX_IMAGE.to_owned()));
        }
        if let Some(k) = &self.ksiam {
            env.push(("KSIAM_GATEWAY", k.gateway.clone()));
            env.push(("KSIAM_ADMIN", k.admin.clone()));
            env.push(("KSIAM_JWT_SECRET_FILE", k.jwt_secret_file.display().to_string()));
            env.push(("KSIAM_AUTHZ_GRPC", k.authz_grpc.clone()));
            env.push(("KSIAM_AUTHZ_ADDR", k.authz_grpc.clone()));
            env.push(("KSIAM_TOKEN_GRPC", k.token_grpc.clone()));
            env.push(("KSIAM_AUTHZ_WEBHOOKS", k.authz_webhooks.clone()));
            // gRPC client identities: the admin by default (`ksiam can-i`/`who-can`), the controller
            // (IssueToken) and the gateway (a verifier) for the tests.
            let pki = &k.grpc_pki;
            env.push(("KSIAM_GRPC_CA", pki.ca.display().to_string()));
            for (cn, crt_var, key_var) in [
                ("ksiam-admin", "KSIAM_GRPC_CLIENT_CERT", "KSIAM_GRPC_CLIENT_KEY"),
                (
                    "ksiam-controller",
                    "KSIAM_GRPC_CONTROLLER_CERT",
                    "KSIAM_GRPC_CONTROLLER_KEY",
                ),
                (
                    "ksiam-gateway",
                    "KSIAM_GRPC_GATEWAY_CERT",
                    "KSIAM_GRPC_GATEWAY_KEY",
                ),
            ] {
                if let Some((crt, key)) = pki.client(cn) {
                    env.push((crt_var, crt.display().to_string()));
                    env.push((key_var, key.display().to_string()));
                }
            }
            env.push(("KSIAM_PID_FILE", k.pid_file.display().to_string()));
            let pid_files: Vec<String> = k
                .pid_files
                .iter()
                .map(|(name, path)| format!("{name}={}", path.display()))
                .collect();
            env.push(("KSIAM_PID_FILES", pid_files.join(",")));
            env.push(("KSIAM_BIN", k.bin.display().to_string()));
        }
        if let Some(ks) = &self.kubesphere {
            env.push(("KUBESPHERE_APISERVER", ks.apiserver.clone()));
            env.push(("KUBESPHERE_CONFIG_DIR", ks.dir.display().to_string()));
            env.push((
                "KUBESPHERE_CONTROLLER_MANAGER",
                ks.controller_manager.display().to_string(),
            ));
        }
        env
    }
}

/// Applies what KubeSphere has in every cluster before its own controllers start.
#[allow(dead_code)] // The entry point for callers that run `ksiam all` themselves.
pub fn bootstrap(root: &Path, kubectl: &Kubectl) -> anyhow::Result<()> {
    bootstrap_with(root, kubectl, true)
}

/// [`bootstrap`]; without ksiam's own identity (`deploy/rbac/ksiam.yaml`) when `ksiam_identity` is false (the
/// Helm chart then brings its ClusterRole).
pub fn bootstrap_with(root: &Path, kubectl: &Kubectl, ksiam_identity: bool) -> anyhow::Result<()> {
    let step = Step::start("bootstrap: CRDs, built-in roles, system namespaces and workspace");
    let crds = root.join("deploy").join("crds");
    if has_yaml(&crds)? {
        let dir = format!("{}/", crds.display());
        kubectl.run(&["apply", "--server-side", "--force-conflicts", "-f", &dir])?;
        kubectl.run(&["wait", "--for=condition=Established", "--timeout=60s", "-f", &dir])?;
        say("CRDs from deploy/crds/ are Established");
    } else {
        say("skipping deploy/crds/: not generated yet (run `cargo xtask codegen`)");
    }

    let roles = root.join("deploy").join("builtin-roles.yaml");
    if roles.is_file() {
        kubectl.run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &roles.display().to_string(),
        ])?;
        say("applied deploy/builtin-roles.yaml");
    } else {
        say("skipping deploy/builtin-roles.yaml: not generated yet (run `cargo xtask codegen`)");
    }

    let rbac = root.join("deploy").join("rbac").join("ksiam.yaml");
    if !ksiam_identity {
        say("not applying deploy/rbac/ksiam.yaml: the chart brings ksiam's ClusterRole");
    } else if rbac.is_file() {
        kubectl.run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &rbac.display().to_string(),
        ])?;
        say("applied deploy/rbac/ksiam.yaml (ksiam's own identity: least privilege, not cluster-admin)");
    } else {
        say("skipping deploy/rbac/ksiam.yaml: not generated yet (run `cargo xtask codegen`)");
    }

    let labels: serde_json::Map<String, serde_json::Value> = SYSTEM_LABELS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    let namespaces: Vec<_> = SYSTEM_NAMESPACES
        .iter()
        .map(|name| {
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels},
            })
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": namespaces});
    kubectl.apply(&list.to_string())?;
    say(format!("labelled namespaces {}", SYSTEM_NAMESPACES.join(" ")));

    let has_workspaces = kubectl
        .cmd()
        .args(["get", "crd", "workspacetemplates.tenant.kubesphere.io"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?
        .success();
    if has_workspaces {
        let workspace = serde_json::json!({
            "apiVersion": "tenant.kubesphere.io/v1beta1",
            "kind": "WorkspaceTemplate",
            "metadata": {"name": "system-workspace"},
            "spec": {"template": {"spec": {"manager": "admin"}}},
        });
        kubectl.apply(&workspace.to_string())?;
        say("created WorkspaceTemplate system-workspace");
        // The host cluster, as KubeSphere's installer registers it (what `/kapis/.../clusters` lists).
        let host = serde_json::json!({
            "apiVersion": "cluster.kubesphere.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "host", "labels": {"cluster-role.kubesphere.io/host": ""}},
            "spec": {"enable": true, "joinFederation": true, "connection": {"type": "direct"}},
        });
        kubectl.apply(&host.to_string())?;
        say("created Cluster host");
    } else {
        say("skipping WorkspaceTemplate system-workspace: its CRD is not installed yet");
    }
    step.done();
    Ok(())
}

fn has_yaml(dir: &Path) -> anyhow::Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Builds the `ksiam` binary if the workspace has that package; `None` while it (or its `all` subcommand) does
/// not exist yet.
fn build_ksiam(root: &Path, profile: &str) -> anyhow::Result<Option<PathBuf>> {
    let metadata = process::run(cargo_command().current_dir(root).args([
        "metadata",
        "--no-deps",
        "--format-version=1",
    ]))?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    let has_bin = metadata["packages"].as_array().into_iter().flatten().any(|p| {
        p["name"] == "ksiam"
            && p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["name"] == "ksiam" && t["kind"][0] == "bin")
    });
    if !has_bin {
        return Ok(None);
    }
    let step = Step::start(format!("cargo build --profile {profile} -p ksiam"));
    process::run_inherit(cargo_command().current_dir(root).args([
        "build",
        "--profile",
        profile,
        "-p",
        "ksiam",
        "--bin",
        "ksiam",
    ]))?;
    step.done();
    let dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata: no target_directory")?;
    let bin = Path::new(dir)
        .join(match profile {
            "dev" | "test" => "debug",
            "release" | "bench" => "release",
            other => other,
        })
        .join("ksiam");
    let has_all = Command::new(&bin)
        .args(["all", "--help"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?
        .success();
    Ok(has_all.then_some(bin))
}

/// Starts `ksiam all` against the control plane and waits until its gateway accepts connections.
///
/// Its configuration goes through the environment (clap `env` fallbacks), so flags can still change:
/// `KUBECONFIG`, `KSIAM_JWT_SECRET_FILE` (the HS256 secret), `KSIAM_GATEWAY_LISTEN`, the authorizer's gRPC
/// and webhook listeners and the webhook's serving certificate (the one kube-apiserver was told to trust).
///
/// Like a kubelet, the stack restarts `ksiam all` when it is killed (SIGKILL, exit 137) — the fault tests
/// kill it on purpose, reading its current pid from `ksiam.pid`. Any other exit stops the loop, so a
/// process that fails on start-up still fails the start.
fn start_ksiam(cp: &mut ControlPlane, built: &Path) -> anyhow::Result<KsiamAll> {
    let (bin, jwt_secret_file) = prepare_run(cp, built)?;
    let bin = bin.as_path();
    let listen = free_port()?;
    let grpc = free_port()?;
    let token_grpc = free_port()?;
    let admin = free_port()?;
    let pid_file = cp.run_dir.join("ksiam.pid");
    let (webhooks, crt, key) = cp.authn_authz_webhooks.clone();
    let pki = cp.grpc_pki.clone();
    let os = |p: &Path| p.as_os_str().to_owned();
    let env: Env = vec![
        ("KSIAM_JWT_SECRET_FILE", os(&jwt_secret_file)),
        ("KSIAM_GATEWAY_LISTEN", listen.to_string().into()),
        ("KSIAM_ADMIN_LISTEN", admin.to_string().into()),
        ("KSIAM_AUTHZ_GRPC_LISTEN", grpc.to_string().into()),
        ("KSIAM_TOKEN_GRPC_LISTEN", token_grpc.to_string().into()),
        ("KSIAM_AUTHZ_WEBHOOK_LISTEN", webhooks.to_string().into()),
        ("KSIAM_AUTHZ_TLS_CERT_FILE", os(&crt)),
        ("KSIAM_AUTHZ_TLS_KEY_FILE", os(&key)),
        // Only kube-apiserver (its webhook client certificate, signed by the cluster CA) may ask.
        ("KSIAM_AUTHZ_CLIENT_CA_FILE", os(&pki.ca)),
        // Likewise for the admission webhooks (kube-apiserver's --admission-control-config-file).
        ("KSIAM_WEBHOOK_CLIENT_CA_FILE", os(&pki.ca)),
        // Both gRPC APIs: mutual TLS, client certificates from the cluster CA, the default allow-list.
        ("KSIAM_GRPC_TLS_CERT_FILE", os(&pki.server_crt)),
        ("KSIAM_GRPC_TLS_KEY_FILE", os(&pki.server_key)),
        ("KSIAM_GRPC_CLIENT_CA_FILE", os(&pki.ca)),
    ];
    spawn_restarting(cp, "ksiam", bin, &["all"], &env, &pid_file)?;
    cp.procs
        .wait_ready("ksiam", Duration::from_secs(90), || http_ok(admin, "/readyz"))?;
    Ok(KsiamAll {
        gateway: format!("http://{listen}"),
        admin: format!("http://{admin}"),
        jwt_secret_file,
        authz_grpc: format!("https://{grpc}"),
        token_grpc: format!("https://{token_grpc}"),
        grpc_pki: cp.grpc_pki.clone(),
        authz_webhooks: format!("https://{webhooks}"),
        pid_files: vec![("ksiam".to_owned(), pid_file.clone())],
        pid_file,
        bin: bin.to_owned(),
    })
}

/// How ksiam runs: one `ksiam all`, or one process per service talking gRPC (`KSIAM_TOPOLOGY`, set by
/// `--topology` of `cargo xtask up` and `cargo xtask e2e`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// `ksiam all`: every part in one process.
    #[default]
    All,
    /// `ksiam token serve`, `ksiam authz`, `ksiam controller`, `ksiam webhook` and `ksiam gateway
    /// --authz-addr`, each its own process.
    Split,
}

impl Topology {
    /// The topology chosen by `--topology` ([`Topology::select`]), else `KSIAM_TOPOLOGY`, else `all`.
    pub fn current() -> anyhow::Result<Self> {
        if let Some(t) = SELECTED.get() {
            return Ok(*t);
        }
        match std::env::var("KSIAM_TOPOLOGY").as_deref() {
            Err(_) | Ok("") | Ok("all") => Ok(Self::All),
            Ok("split") => Ok(Self::Split),
            Ok(other) => anyhow::bail!("KSIAM_TOPOLOGY={other}: expected all or split"),
        }
    }

    /// Makes the stacks this process starts use `self`.
    pub fn select(self) {
        let _ = SELECTED.set(self);
    }
}

static SELECTED: std::sync::OnceLock<Topology> = std::sync::OnceLock::new();

/// Copies the built binary into the run directory and writes a fresh JWT secret there. A copy runs because
/// `target/<profile>/ksiam` is rewritten by any later build (another checkout sharing CARGO_TARGET_DIR
/// included), and the restart loop execs the binary again after each kill.
fn prepare_run(cp: &ControlPlane, built: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let bin = cp.run_dir.join("ksiam");
    std::fs::copy(built, &bin)
        .with_context(|| format!("copying {} to {}", built.display(), bin.display()))?;
    let jwt_secret_file = cp.run_dir.join("jwt-secret");
    crate::pki::write_secret(&jwt_secret_file, &crate::pki::random_hex(32)?)?;
    Ok((bin, jwt_secret_file))
}

/// Environment variables of a process.
type Env = Vec<(&'static str, std::ffi::OsString)>;

/// Runs `args` of the ksiam binary under the restart loop (SIGKILL → restarted, like a kubelet would;
/// any other exit stops it), its current pid in `pid_file`.
fn spawn_restarting(
    cp: &mut ControlPlane,
    name: &str,
    bin: &Path,
    args: &[&str],
    env: &[(&str, std::ffi::OsString)],
    pid_file: &Path,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(
            "while :; do \"$@\" & echo $! > \"$KSIAM_PID_FILE\"; wait $!; rc=$?; \
             [ $rc -eq 137 ] || exit $rc; echo 'ksiam was killed: restarting' >&2; done",
        )
        .arg("ksiam-restarter")
        .arg(bin)
        .args(args)
        .env("KSIAM_PID_FILE", pid_file)
        .env("KUBECONFIG", &cp.ksiam_kubeconfig);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cp.procs.spawn(name, cmd, &cp.run_dir.join(format!("{name}.log")))
}

/// The split topology: each service its own process, talking gRPC over mutual TLS (the gateway asks the
/// authorizer; the gateway and the authorizer follow the token service's revocations; the controller asks
/// it to issue).
fn start_split(cp: &mut ControlPlane, built: &Path) -> anyhow::Result<KsiamAll> {
    let (bin, jwt_secret_file) = prepare_run(cp, built)?;
    let bin = bin.as_path();
    let pki = cp.grpc_pki.clone();
    let (webhooks, crt, key) = cp.authn_authz_webhooks.clone();
    let (gateway, authz_grpc, token_grpc) = (free_port()?, free_port()?, free_port()?);
    let os = |p: &Path| p.as_os_str().to_owned();
    let common = |admin: std::net::SocketAddr| -> Env {
        vec![
            ("KSIAM_ADMIN_LISTEN", admin.to_string().into()),
            ("KSIAM_GRPC_TLS_CERT_FILE", os(&pki.server_crt)),
            ("KSIAM_GRPC_TLS_KEY_FILE", os(&pki.server_key)),
            ("KSIAM_GRPC_CLIENT_CA_FILE", os(&pki.ca)),
        ]
    };
    let identity = |cn: &str| -> anyhow::Result<(std::ffi::OsString, std::ffi::OsString)> {
        let (crt, key) = pki
            .client(cn)
            .with_context(|| format!("the gRPC client certificate of {cn} is missing"))?;
        Ok((os(crt), os(key)))
    };
    let (gateway_crt, gateway_key) = identity("ksiam-gateway")?;
    let (authz_crt, authz_key) = identity("ksiam-authz")?;
    let (controller_crt, controller_key) = identity("ksiam-controller")?;
    let secret = os(&jwt_secret_file);
    let token_addr: std::ffi::OsString = format!("https://{token_grpc}").into();
    let controller_pid = cp.run_dir.join("ksiam.pid");
    let mut admins = Vec::new();
    let mut pid_files = Vec::new();
    let services: [(&str, Vec<&str>, Env); 5] = [
        (
            "ksiam-token",
            vec!["token", "serve"],
            vec![
                ("KSIAM_TOKEN_GRPC_LISTEN", token_grpc.to_string().into()),
                ("KSIAM_JWT_SECRET_FILE", secret.clone()),
            ],
        ),
        (
            "ksiam-authz",
            vec!["authz"],
            vec![
                ("KSIAM_AUTHZ_GRPC_LISTEN", authz_grpc.to_string().into()),
                ("KSIAM_AUTHZ_WEBHOOK_LISTEN", webhooks.to_string().into()),
                ("KSIAM_AUTHZ_TLS_CERT_FILE", os(&crt)),
                ("KSIAM_AUTHZ_TLS_KEY_FILE", os(&key)),
                ("KSIAM_AUTHZ_CLIENT_CA_FILE", os(&pki.ca)),
                ("KSIAM_JWT_SECRET_FILE", secret.clone()),
                ("KSIAM_TOKEN_ADDR", token_addr.clone()),
                ("KSIAM_GRPC_CA", os(&pki.ca)),
                ("KSIAM_GRPC_CLIENT_CERT", authz_crt),
                ("KSIAM_GRPC_CLIENT_KEY", authz_key),
            ],
        ),
        // No signing key: the controller asks the token service (as ksiam-controller) to issue.
        (
            "ksiam-controller",
            vec!["controller"],
            vec![
                ("KSIAM_TOKEN_ADDR", token_addr.clone()),
                ("KSIAM_GRPC_CA", os(&pki.ca)),
                ("KSIAM_GRPC_CLIENT_CERT", controller_crt),
                ("KSIAM_GRPC_CLIENT_KEY", controller_key),
            ],
        ),
        (
            "ksiam-webhook",
            vec!["webhook"],
            vec![("KSIAM_WEBHOOK_CLIENT_CA_FILE", os(&pki.ca))],
        ),
        (
            "ksiam-gateway",
            vec!["gateway"],
            vec![
                ("KSIAM_GATEWAY_LISTEN", gateway.to_string().into()),
                ("KSIAM_AUTHZ_ADDR", format!("https://{authz_grpc}").into()),
                ("KSIAM_JWT_SECRET_FILE", secret),
                ("KSIAM_TOKEN_ADDR", token_addr),
                ("KSIAM_GRPC_CA", os(&pki.ca)),
                ("KSIAM_GRPC_CLIENT_CERT", gateway_crt),
                ("KSIAM_GRPC_CLIENT_KEY", gateway_key),
            ],
        ),
    ];
    for (name, args, extra) in services {
        let admin = free_port()?;
        let mut env = common(admin);
        env.extend(extra);
        let pid_file = if name == "ksiam-controller" {
            controller_pid.clone()
        } else {
            cp.run_dir.join(format!("{name}.pid"))
        };
        spawn_restarting(cp, name, bin, &args, &env, &pid_file)?;
        admins.push((name, admin));
        pid_files.push((name.to_owned(), pid_file));
    }
    let mut gateway_admin = None;
    for (name, admin) in admins {
        cp.procs
            .wait_ready(name, Duration::from_secs(90), || http_ok(admin, "/readyz"))?;
        if name == "ksiam-gateway" {
            gateway_admin = Some(admin);
        }
    }
    let gateway_admin = gateway_admin.context("the gateway was not started")?;
    cp.procs
        .wait_ready("ksiam-gateway", Duration::from_secs(90), || {
            http_ok(gateway, "/readyz")
        })?;
    say(
        "split topology: ksiam token serve, authz (--token-addr), controller (--token-addr, no signing key), \
         webhook, gateway (--authz-addr, --token-addr); mutual TLS between them",
    );
    Ok(KsiamAll {
        gateway: format!("http://{gateway}"),
        admin: format!("http://{gateway_admin}"),
        jwt_secret_file,
        authz_grpc: format!("https://{authz_grpc}"),
        token_grpc: format!("https://{token_grpc}"),
        grpc_pki: pki,
        authz_webhooks: format!("https://{webhooks}"),
        pid_file: controller_pid,
        pid_files,
        bin: bin.to_owned(),
    })
}

/// Whether `GET path` on `addr` answers 200 (plain HTTP/1.0, one short-lived connection).
pub fn http_ok(addr: std::net::SocketAddr, path: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR`, else `<root>/target`.
pub fn cargo_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// `$CARGO` when run through cargo, else `cargo`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| "cargo".into(), PathBuf::from)
}

static NON_INCREMENTAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, [`cargo_command`] builds without incremental compilation (unless `CARGO_INCREMENTAL` is set).
///
/// `cargo xtask test` does this: it runs on clean clones, where incremental state only costs disk (2.1 GB of
/// the 5.3 GB debug target directory on a cold run), and a CI run once ran out of disk.
pub fn build_without_incremental() {
    NON_INCREMENTAL.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A `cargo` command ([`cargo`]), non-incremental after [`build_without_incremental`].
pub fn cargo_command() -> Command {
    let mut cmd = Command::new(cargo());
    if NON_INCREMENTAL.load(std::sync::atomic::Ordering::Relaxed)
        && std::env::var_os("CARGO_INCREMENTAL").is_none()
    {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

/// `target/ksiam-up/`: the run directory of `cargo xtask up`.
fn up_dir(root: &Path) -> PathBuf {
    root.join("target").join("ksiam-up")
}

/// `cargo xtask up [--detach] [--with-kubesphere] [--node [--chart]]`.
pub fn up(root: &Path, detach: bool, with_kubesphere: bool, node: bool, chart: bool) -> anyhow::Result<()> {
    install_signal_handler()?;
    let dir = up_dir(root);
    let state = dir.join("state.json");
    let running = process::recorded_running(&state)?;
    if !running.is_empty() {
        bail!("the stack is already up (pids {running:?}); run `cargo xtask down` first");
    }
    clean_run_dir(&dir, false)?;

    if chart && !node {
        bail!("--chart installs ksiam on the node: it needs --node");
    }
    // With --chart, ksiam runs as Pods from deploy/helm/ksiam (the static release image) instead of a local
    // `ksiam all`.
    let images = if chart {
        Some((
            crate::image::build_ksiam_image(root)?,
            crate::k8s_bin::ensure_helm(root)?,
        ))
    } else {
        None
    };
    let kubesphere = with_kubesphere.then(|| crate::kubesphere::build_in_background(root));
    let stack = Stack::start_with(root, &dir, "dev", kubesphere, node, !chart)?;
    if let Some((image, helm)) = &images {
        crate::node::import_image(&image.path)?;
        crate::chart::install(helm, root, &stack.cp.kubeconfig, &stack.cp.run_dir, &[])?;
    }
    let env_file = dir.join("env");
    let mut env: String = stack
        .env()
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect();
    if let Some(bin_dir) = stack.cp.kubectl.parent() {
        env += &format!(
            "export PATH={}:\"$PATH\"\n",
            shell_quote(&bin_dir.display().to_string())
        );
    }
    fs::write(&env_file, env)?;
    process::remove_on_signal(&env_file);

    let rel = env_file
        .strip_prefix(root)
        .unwrap_or(&env_file)
        .display()
        .to_string();
    println!("\nThe stack is up. In a shell:\n\n    . {rel}\n    kubectl get --raw /readyz\n");
    for (k, v) in stack.env() {
        println!("    {k}={v}");
    }
    println!("\nLogs: {}/*.log", dir.display());

    if detach {
        println!("Stop it with `cargo xtask down`.");
        let Stack { cp, node, .. } = stack;
        if let Some(node) = node {
            node.detach();
        }
        cp.procs.detach();
        return Ok(());
    }
    println!("Press Ctrl-C to stop everything.");
    let mut stack = stack;
    loop {
        sleep(Duration::from_secs(2));
        let node = stack.node.as_mut().map_or(Ok(()), |n| n.procs.check_running());
        if let Err(e) = node.and_then(|()| stack.cp.procs.check_running()) {
            let _ = fs::remove_file(&env_file);
            return Err(e);
        }
    }
}

/// `cargo xtask down`: stops what `up --detach` started, by recorded pid, and removes its state.
pub fn down(root: &Path) -> anyhow::Result<()> {
    crate::node::down(root)?;
    let dir = up_dir(root);
    let state = dir.join("state.json");
    if !state.exists() {
        say(format!("nothing to stop: no {}", state.display()));
        return Ok(());
    }
    let stopped = process::stop_recorded(&state)?;
    say(format!("stopped {stopped} processes"));
    clean_run_dir(&dir, true)
}

/// Removes a run directory's state and data; `keep_logs` keeps the logs for a post-mortem.
fn clean_run_dir(dir: &Path, keep_logs: bool) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if keep_logs && path.extension().is_some_and(|e| e == "log") {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Quotes a value for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
