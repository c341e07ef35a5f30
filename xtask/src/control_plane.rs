//! The local control plane: etcd, kube-apiserver and kube-controller-manager on loopback, as child processes.
//!
//! ```text
//!  etcd 127.0.0.1:<free> ◄── kube-apiserver https://127.0.0.1:<free> ◄── kube-controller-manager
//!   (--unsafe-no-fsync)        client certs (ca.crt), static tokens          (garbage collector, namespace,
//!                              RBAC, admission webhooks on                     serviceaccount(-token), root CA,
//!                                                                              role aggregation, deployment, replicaset)
//! ```
//!
//! No scheduler and no kubelet: Pods stay Pending. Everything lives in one run directory under `target/`:
//! `pki/`, `tokens.csv`, `kubeconfig`, `etcd/` (data), one log per component and `state.json` (pids).
//! The flags follow `shared/design/control-plane.md` §3.2 and §4.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::k8s_bin::Binaries;
use crate::pki::{self, ADMIN_USER, Pki};
use crate::probe;
use crate::process::Supervisor;
use crate::progress::Step;

pub use crate::suite::Backend;

/// `cargo xtask up [--detach] [--with-kubesphere] [--node [--chart]]`.
pub fn up(root: &Path, detach: bool, with_kubesphere: bool, node: bool, chart: bool) -> anyhow::Result<()> {
    crate::stack::up(root, detach, with_kubesphere, node, chart)
}

/// `cargo xtask down`.
pub fn down(root: &Path) -> anyhow::Result<()> {
    crate::stack::down(root)
}

/// `cargo xtask test`.
pub fn test(root: &Path, node: bool) -> anyhow::Result<()> {
    crate::suite::test(root, node)
}

/// `cargo xtask e2e [--backend local|kind] [-- args]`.
pub fn e2e(root: &Path, backend: Backend, dev_images: bool, args: &[String]) -> anyhow::Result<()> {
    crate::suite::e2e(root, backend, dev_images, args)
}

/// How the control plane is started.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Serve a node (`cargo xtask up --node`): kube-apiserver binds and advertises this address (the node's
    /// bridge, reachable from Pods) instead of loopback, authorizes kubelets (`Node`), runs the
    /// ServiceAccount admission plugin (Pods get their projected token) and calls admission webhooks on Pod
    /// IPs; the controller manager also runs the controllers Pods and Services need.
    pub node: Option<std::net::Ipv4Addr>,
}

/// KCM controllers: enough for namespaces, ServiceAccounts, garbage collection, aggregated roles and Deployments
/// that create (forever Pending) Pods.
const CONTROLLERS: &[&str] = &[
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
];

/// Added with a node: Services' endpoints, PodDisruptionBudgets, orphaned Pods, and the node lifecycle (it
/// lifts the `not-ready` taint a kubelet registers with).
const NODE_CONTROLLERS: &[&str] = &[
    "endpointslice-controller",
    "node-lifecycle-controller",
    "disruption-controller",
    "pod-garbage-collector-controller",
];

/// The gRPC PEM files of a control plane (see [`ControlPlane::grpc_pki`]).
#[derive(Clone, Debug)]
pub struct GrpcPki {
    pub ca: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    /// `(CN, certificate, key)`.
    pub clients: Vec<(&'static str, PathBuf, PathBuf)>,
}

impl GrpcPki {
    /// The certificate and key of client identity `cn`.
    pub fn client(&self, cn: &str) -> Option<(&PathBuf, &PathBuf)> {
        self.clients
            .iter()
            .find(|(name, _, _)| *name == cn)
            .map(|(_, crt, key)| (crt, key))
    }
}

/// A running control plane; dropping it stops every process.
pub struct ControlPlane {
    pub run_dir: PathBuf,
    /// Where kube-apiserver expects ksiam's TokenReview (`/authenticate`) and SubjectAccessReview
    /// (`/authorize`) webhooks, and the serving certificate and key for them (signed by the cluster CA).
    pub authn_authz_webhooks: (SocketAddr, PathBuf, PathBuf),
    /// The PEM files of ksiam's gRPC APIs: the cluster CA (trusted for client certificates, and by clients
    /// for the server), the serving certificate and key, and the client identities (`pki::GRPC_CLIENTS`).
    pub grpc_pki: GrpcPki,
    pub kubeconfig: PathBuf,
    /// ksiam's own credentials (the user `ksiam`, bound to deploy/rbac/ksiam.yaml).
    pub ksiam_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    /// The kubelet's kubeconfig (`system:node:<name>`, group `system:nodes`) when started for a node.
    pub node_kubeconfig: Option<PathBuf>,
    pub procs: Supervisor,
}

// === impl ControlPlane ===

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager in `run_dir` and waits until each is ready.
    #[allow(dead_code)] // The stack starts through `start_with`; kept as the plain entry point.
    pub fn start(bins: &Binaries, run_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(bins, run_dir, &Options::default())
    }

    /// [`ControlPlane::start`] with `options`.
    pub fn start_with(bins: &Binaries, run_dir: &Path, options: &Options) -> anyhow::Result<Self> {
        let step = Step::start(format!("control plane in {}", run_dir.display()));
        fs::create_dir_all(run_dir)?;
        let run_dir = run_dir.canonicalize()?;
        let mut procs = Supervisor::new(run_dir.join("state.json"));

        let pki = pki::generate(&run_dir.join("pki"))?;
        let admin_token = pki::random_hex(32)?;
        let tokens = run_dir.join("tokens.csv");
        // ksiam's own identity: the user `ksiam`, no groups, granted deploy/rbac/ksiam.yaml (least
        // privilege: not cluster-admin).
        let ksiam_token = pki::random_hex(32)?;
        let mut token_lines = format!(
            "{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n{ksiam_token},{KSIAM_USER},{KSIAM_USER}\n"
        );
        // The kubelet's identity, for the Node authorizer and NodeRestriction.
        let node_token = pki::random_hex(32)?;
        let node_user = format!("system:node:{}", crate::node::NODE_NAME);
        if options.node.is_some() {
            token_lines += &format!("{node_token},{node_user},{node_user},\"system:nodes\"\n");
        }
        pki::write_secret(&tokens, &token_lines)?;
        pki::write_secret(&run_dir.join("admin-token"), &admin_token)?;
        let tls = probe::tls_trusting(pki.ca_der.clone())?;

        let etcd_addr = free_port()?;
        let peer_addr = free_port()?;
        let etcd_url = format!("http://{etcd_addr}");
        let peer_url = format!("http://{peer_addr}");
        let mut etcd = Command::new(&bins.etcd);
        etcd.arg("--name=ksiam")
            .arg(format!("--data-dir={}", run_dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=ksiam={peer_url}"))
            .args(["--unsafe-no-fsync=true", "--log-level=warn"]);
        procs.spawn("etcd", etcd, &run_dir.join("etcd.log"))?;
        procs.wait_ready("etcd", Duration::from_secs(60), || {
            probe::ok(etcd_addr, "/health", None, None, "\"health\":\"true\"")
        })?;

        // kube-apiserver asks ksiam (once it runs) about KubeSphere tokens and KubeSphere RBAC, after its own
        // authenticators and RBAC. Short caches: a revoked token or a new binding shows within seconds.
        let webhooks_addr = free_port()?;
        let webhook_kubeconfig = |path: &str| -> anyhow::Result<PathBuf> {
            let file = run_dir.join(format!("ksiam-{path}-webhook.kubeconfig"));
            let config = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: ksiam\n  cluster:\n    server: https://{webhooks_addr}/{path}\n    certificate-authority: {ca}\nusers:\n- name: kube-apiserver\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: ksiam\n  context: {{cluster: ksiam, user: kube-apiserver}}\ncurrent-context: ksiam\n",
                ca = pki.ca_crt.display(),
                crt = pki.webhook_client_crt.display(),
                key = pki.webhook_client_key.display(),
            );
            fs::write(&file, config)?;
            Ok(file)
        };
        // kube-apiserver presents the same client certificate to admission webhooks (ksiam's answer only
        // clients the cluster CA signed).
        let admission_kubeconfig = run_dir.join("admission-webhooks.kubeconfig");
        fs::write(
            &admission_kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n",
                crt = pki.webhook_client_crt.display(),
                key = pki.webhook_client_key.display(),
            ),
        )?;
        let admission_config = run_dir.join("admission.yaml");
        fs::write(
            &admission_config,
            format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n\
                 - name: ValidatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n\
                 \x20   kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {k}\n\
                 - name: MutatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n\
                 \x20   kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {k}\n",
                k = admission_kubeconfig.display()
            ),
        )?;
        let authn_config = webhook_kubeconfig("authenticate")?;
        let authz_config = webhook_kubeconfig("authorize")?;

        let mut api_addr = free_port()?;
        if let Some(ip) = options.node {
            api_addr.set_ip(ip.into());
        }
        let mut apiserver = Command::new(&bins.kube_apiserver);
        apiserver
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--bind-address={}", api_addr.ip()))
            .arg(format!("--secure-port={}", api_addr.port()));
        match options.node {
            // A loopback advertise address needs the endpoint reconciler off (control-plane.md §3.2).
            None => apiserver.args(["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]),
            // The `kubernetes` Service points at the bridge address, which Pods reach.
            Some(ip) => apiserver
                .arg(format!("--advertise-address={ip}"))
                .arg(format!(
                    "--kubelet-client-certificate={}",
                    pki.admin_crt.display()
                ))
                .arg(format!("--kubelet-client-key={}", pki.admin_key.display()))
                .arg("--kubelet-preferred-address-types=InternalIP")
                .arg("--enable-aggregator-routing=true"),
        };
        apiserver
            .arg(format!("--tls-cert-file={}", pki.apiserver_crt.display()))
            .arg(format!("--tls-private-key-file={}", pki.apiserver_key.display()))
            .arg(format!("--client-ca-file={}", pki.ca_crt.display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg(format!("--service-account-issuer=https://{api_addr}"))
            .arg(format!("--service-account-key-file={}", pki.sa_pub.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ))
            .arg(if options.node.is_some() {
                "--authorization-mode=Node,RBAC,Webhook"
            } else {
                "--authorization-mode=RBAC,Webhook"
            })
            .arg(format!(
                "--authorization-webhook-config-file={}",
                authz_config.display()
            ))
            .args([
                "--authorization-webhook-version=v1",
                "--authorization-webhook-cache-authorized-ttl=2s",
                "--authorization-webhook-cache-unauthorized-ttl=1s",
            ])
            .arg(format!(
                "--authentication-token-webhook-config-file={}",
                authn_config.display()
            ))
            .args([
                "--authentication-token-webhook-version=v1",
                "--authentication-token-webhook-cache-ttl=1s",
            ])
            .arg(format!(
                "--admission-control-config-file={}",
                admission_config.display()
            ));
        if options.node.is_some() {
            apiserver.arg(
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,NodeRestriction,\
                 MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            );
        } else {
            apiserver
                .arg("--enable-admission-plugins=NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook")
                .arg("--disable-admission-plugins=ServiceAccount");
        }
        apiserver
            .args([
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
            ])
            .args(["--profiling=false", "--v=1"]);
        procs.spawn("kube-apiserver", apiserver, &run_dir.join("kube-apiserver.log"))?;
        procs.wait_ready("kube-apiserver", Duration::from_secs(120), || {
            probe::ok(api_addr, "/readyz", Some(&tls), Some(&admin_token), "ok")
        })?;

        let kubeconfig = run_dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, api_addr, &pki)?;
        let node_kubeconfig = match options.node {
            Some(_) => {
                let path = run_dir.join("node.kubeconfig");
                write_token_kubeconfig(&path, api_addr, &pki, &node_user, &node_token)?;
                Some(path)
            }
            None => None,
        };
        let ksiam_kubeconfig = run_dir.join("ksiam.kubeconfig");
        write_token_kubeconfig(&ksiam_kubeconfig, api_addr, &pki, KSIAM_USER, &ksiam_token)?;

        let mut kcm = Command::new(&bins.kube_controller_manager);
        kcm.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg(format!(
                "--controllers={}",
                if options.node.is_some() {
                    [CONTROLLERS, NODE_CONTROLLERS].concat().join(",")
                } else {
                    CONTROLLERS.join(",")
                }
            ))
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.sa_key.display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca_crt.display()))
            .arg("--use-service-account-credentials=false")
            .args(["--bind-address=127.0.0.1", "--secure-port=0", "--v=1"]);
        procs.spawn(
            "kube-controller-manager",
            kcm,
            &run_dir.join("kube-controller-manager.log"),
        )?;
        // The ServiceAccount controller creating `default/default` shows the controllers are running.
        procs.wait_ready("kube-controller-manager", Duration::from_secs(90), || {
            let path = "/api/v1/namespaces/default/serviceaccounts/default";
            probe::ok(
                api_addr,
                path,
                Some(&tls),
                Some(&admin_token),
                "\"name\":\"default\"",
            )
        })?;

        step.done();
        Ok(Self {
            authn_authz_webhooks: (webhooks_addr, pki.webhooks_crt.clone(), pki.webhooks_key.clone()),
            grpc_pki: GrpcPki {
                ca: pki.ca_crt.clone(),
                server_crt: pki.grpc_crt.clone(),
                server_key: pki.grpc_key.clone(),
                clients: pki.grpc_clients.clone(),
            },
            run_dir,
            kubeconfig,
            ksiam_kubeconfig,
            kubectl: bins.kubectl.clone(),
            node_kubeconfig,
            procs,
        })
    }

    /// kubectl with this control plane's kubeconfig.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            bin: self.kubectl.clone(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }
}

/// A free loopback port: bind port 0, read the port the kernel chose, release it.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// ksiam's user in the local control plane.
pub const KSIAM_USER: &str = "ksiam";

/// The admin kubeconfig (client certificate, `system:masters`).
fn write_kubeconfig(path: &Path, api: SocketAddr, pki: &Pki) -> anyhow::Result<()> {
    let credentials = serde_json::json!({
        "client-certificate": pki.admin_crt,
        "client-key": pki.admin_key,
    });
    write_kubeconfig_for(path, api, pki, ADMIN_USER, credentials)
}

/// A kubeconfig whose only credential is a bearer token.
fn write_token_kubeconfig(
    path: &Path,
    api: SocketAddr,
    pki: &Pki,
    user: &str,
    token: &str,
) -> anyhow::Result<()> {
    write_kubeconfig_for(path, api, pki, user, serde_json::json!({"token": token}))
}

fn write_kubeconfig_for(
    path: &Path,
    api: SocketAddr,
    pki: &Pki,
    user: &str,
    credentials: serde_json::Value,
) -> anyhow::Result<()> {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ksiam", "cluster": {
            "server": format!("https://{api}"),
            "certificate-authority": pki.ca_crt,
        }}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "ksiam", "context": {"cluster": "ksiam", "user": user}}],
        "current-context": "ksiam",
    });
    pki::write_secret(path, &serde_yaml::to_string(&kubeconfig)?)
}

/// A kubectl binary bound to one kubeconfig.
#[derive(Clone)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

// === impl Kubectl ===

impl Kubectl {
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        cmd
    }

    /// Runs kubectl with `args`, returning stdout or failing with its output.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::process::run(self.cmd().args(args))
    }

    /// `kubectl apply -f -` with `manifest` (YAML or JSON) on stdin.
    pub fn apply(&self, manifest: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut child = self
            .cmd()
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(manifest.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!(
                "kubectl apply failed with {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}
