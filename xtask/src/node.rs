//! A real single node beside the local control plane: containerd + runc + CNI (Debian packages), kubelet,
//! kube-proxy and kube-scheduler (built like kube-apiserver), CoreDNS as a Pod, and images built here.
//!
//! ```text
//!  host                                   bridge ksiam0 10.244.0.1/24 (kube-apiserver binds here)
//!  ├── containerd  /run/ksiam/containerd/containerd.sock ── runc (root /run/ksiam/runc)
//!  ├── kubelet     /var/lib/ksiam/kubelet, node `ksiam-node` (InternalIP 10.244.0.1)
//!  ├── kube-proxy  iptables mode, Services 10.0.0.0/24 (kubernetes 10.0.0.1, kube-dns 10.0.0.10)
//!  └── kube-scheduler
//!  Pods 10.244.0.2-254 on ksiam0; routes: their /24 and the Service range only (no default route)
//! ```
//!
//! No image comes from a registry: the sandbox image is a `pause.c` compiled here with gcc, CoreDNS and the
//! test image (Debian's static busybox) are packed by [`crate::image`] and imported with
//! `ctr -n k8s.io images import`.
//!
//! One node per machine (the bridge, iptables chains and `/kubepods` cgroups are global): `/run/ksiam/node.lock`
//! is held (flock) while a node starts, runs or stops, and `/run/ksiam/state.json` records its processes, so a
//! node left by a crashed or detached xtask is found and torn down ([`teardown`]) before a new one starts.
//!
//! Facts this relies on are in `shared/design/node.md` (containerd 1.6 needs `restrict_oom_score_adj` in a VM
//! without CAP_SYS_RESOURCE; kubelet 1.34 on cgroup v1 needs `failCgroupV1: false`).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::control_plane::{ControlPlane, Kubectl};
use crate::image::{self, Entry, Image};
use crate::k8s_bin::{self, NodeBinaries};
use crate::process::{self, Supervisor, run};
use crate::progress::{Step, say};

/// The node's name (its kubelet's `system:node:<name>` identity).
pub const NODE_NAME: &str = "ksiam-node";
/// The bridge Pods attach to; its address is the gateway, the node's InternalIP and kube-apiserver's address.
pub const BRIDGE: &str = "ksiam0";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const POD_CIDR: &str = "10.244.0.0/24";
/// Must match kube-apiserver's `--service-cluster-ip-range`.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
pub const DNS_IP: &str = "10.0.0.10";

/// Sockets, containerd's state, runc's root, the lock and the state file (short: socket paths ≤ 108 bytes).
const RUN: &str = "/run/ksiam";
/// containerd's root (imported images survive a teardown: a warm start imports nothing twice), the kubelet's
/// root and the CNI configuration.
const DATA: &str = "/var/lib/ksiam";

/// containerd's `sandbox_image`; imported under exactly this name, so containerd never tries to pull it.
pub const PAUSE_IMAGE: &str = "localhost/ksiam/pause:3.10";
pub const COREDNS_IMAGE: &str = "localhost/ksiam/coredns:1.14.7";
/// Debian's static busybox: a shell and coreutils for test Pods (`/bin/busybox sh -c ...`).
pub const BUSYBOX_IMAGE: &str = "localhost/ksiam/busybox:1.35";

/// Debian packages and a file each installs.
const PACKAGES: [(&str, &str); 6] = [
    ("containerd", "/usr/bin/containerd"),
    ("runc", "/usr/sbin/runc"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iptables", "/usr/sbin/iptables"),
    ("conntrack", "/usr/sbin/conntrack"),
    ("busybox-static", "/bin/busybox"),
];

fn run_dir() -> PathBuf {
    PathBuf::from(RUN)
}
fn socket() -> PathBuf {
    run_dir().join("containerd").join("containerd.sock")
}
fn runc_root() -> PathBuf {
    run_dir().join("runc")
}
fn state_file() -> PathBuf {
    run_dir().join("state.json")
}
/// Present while a node runs detached (`up --node --detach`): its processes are then not leftovers.
fn detached_marker() -> PathBuf {
    run_dir().join("detached")
}
fn kubelet_root() -> PathBuf {
    Path::new(DATA).join("kubelet")
}
fn cni_dir() -> PathBuf {
    Path::new(DATA).join("cni")
}

/// Checks what the node needs from the machine and installs missing Debian packages (as root). Fails with
/// a message that names the way out when the machine cannot run a node.
pub fn preflight() -> anyhow::Result<()> {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        bail!(
            "the node backend needs root (containerd, kubelet, network namespaces, iptables); run as root, or \
             leave the node out explicitly with `cargo xtask test --no-node` / `cargo xtask e2e --backend local`"
        );
    }
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir() && Path::new("/sys/fs/cgroup/cpu").exists();
    let v2 = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|c| c.contains("memory"));
    if !v1 && !v2 {
        bail!(
            "the node backend needs cgroups with the memory and cpu controllers (none under /sys/fs/cgroup); \
             leave the node out explicitly with `cargo xtask test --no-node`"
        );
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        if which("apt-get").is_none() {
            bail!(
                "the node needs {} (Debian package names); install them, or leave the node out with \
                 `cargo xtask test --no-node`",
                missing.join(" ")
            );
        }
        let step = Step::start(format!("apt-get install {}", missing.join(" ")));
        let apt = |args: &[&str]| {
            let mut cmd = Command::new("apt-get");
            cmd.args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null());
            process::run_inherit(&mut cmd)
        };
        apt(&["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        apt(&args)?;
        step.done();
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The machine-wide node lock, held from before the bridge exists until after teardown.
pub struct NodeLock {
    _lock: Flock<fs::File>,
}

// === impl NodeLock ===

impl NodeLock {
    /// Takes the lock (failing at once if another xtask holds it), then tears down whatever a crashed or
    /// detached node left behind, unless that node still runs under a live xtask.
    pub fn acquire(kube_proxy: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(run_dir())?;
        let path = run_dir().join("node.lock");
        let file = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, errno)) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "another node runs on this machine ({} is held by pid {}: {errno}); only one node can run \
                     per machine — stop it first (`cargo xtask down`)",
                    path.display(),
                    holder.trim()
                );
            }
        };
        fs::write(&path, std::process::id().to_string())?;
        let running = process::recorded_running(&state_file())?;
        if !running.is_empty() {
            if detached_marker().exists() || process::owner_running(&state_file())? {
                bail!(
                    "a node started by `cargo xtask up --node --detach` is still running (pids {running:?}); \
                     stop it with `cargo xtask down`"
                );
            }
            say(format!(
                "found the node of an xtask that died without stopping it (pids {running:?}): tearing it down"
            ));
        }
        teardown(Some(kube_proxy));
        Ok(Self { _lock: lock })
    }
}

/// Creates the bridge with the gateway address (kube-apiserver binds to it before any Pod exists; the CNI
/// bridge plugin then finds it in place) and enables IPv4 forwarding (Pod → Service → Pod).
pub fn prepare_network() -> anyhow::Result<()> {
    let exists = Path::new("/sys/class/net").join(BRIDGE).exists();
    if !exists {
        run(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
    }
    let addrs = run(Command::new("ip").args(["-4", "addr", "show", "dev", BRIDGE]))?;
    if !addrs.contains(&format!("inet {GATEWAY}/24")) {
        run(Command::new("ip").args(["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE]))?;
    }
    run(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
    fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling net.ipv4.ip_forward")?;
    let nf = fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").unwrap_or_default();
    if nf.trim() != "1" {
        fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1").context(
            "Pod → Service → Pod on one bridge needs net.bridge.bridge-nf-call-iptables=1 (br_netfilter)",
        )?;
    }
    Ok(())
}

/// A running node; dropping it stops its processes and tears it down.
pub struct Node {
    pub procs: Supervisor,
    pub kube_proxy: PathBuf,
    /// How long `start` took (the figure in docs/benchmarks.md).
    pub started_in: Duration,
    detached: bool,
    _lock: NodeLock,
}

// === impl Node ===

impl Node {
    /// Starts containerd, imports the images, starts kubelet, kube-proxy and kube-scheduler against `cp`
    /// (started with [`crate::control_plane::Options::node`]), deploys CoreDNS and waits until the node is
    /// Ready and cluster DNS answers.
    pub fn start(
        root: &Path,
        cp: &ControlPlane,
        bins: &NodeBinaries,
        lock: NodeLock,
    ) -> anyhow::Result<Self> {
        let start = Instant::now();
        let step = Step::start(format!("node {NODE_NAME}"));
        let logs = cp.run_dir.clone();
        let kube_proxy = bins.kube_proxy.clone();
        process::on_signal({
            let kube_proxy = kube_proxy.clone();
            move || teardown(Some(&kube_proxy))
        });
        // Built first, so that an error below drops it: its Drop stops what started and tears down.
        let mut node = Self {
            procs: Supervisor::new(state_file()),
            kube_proxy,
            started_in: Duration::ZERO,
            detached: false,
            _lock: lock,
        };
        let procs = &mut node.procs;

        // containerd.
        for dir in [run_dir().join("containerd"), runc_root(), cni_dir().join("net.d")] {
            fs::create_dir_all(dir)?;
        }
        let containerd_config = run_dir().join("containerd.toml");
        fs::write(&containerd_config, containerd_toml())?;
        fs::write(cni_dir().join("net.d").join("10-ksiam.conflist"), cni_conflist())?;
        let mut containerd = Command::new("containerd");
        containerd.arg("--config").arg(&containerd_config);
        procs.spawn("containerd", containerd, &logs.join("containerd.log"))?;
        procs.wait_ready("containerd", Duration::from_secs(60), || {
            ctr()
                .args(["version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })?;

        // Images: pause (the sandbox), CoreDNS, busybox for test Pods.
        let images = node_images(root, bins)?;
        for archive in &images {
            import_image(archive)?;
        }

        // kubelet.
        let kubelet_config = run_dir().join("kubelet.yaml");
        fs::write(
            &kubelet_config,
            kubelet_yaml(&cp.run_dir.join("pki").join("ca.crt")),
        )?;
        let node_kubeconfig = cp
            .node_kubeconfig
            .as_ref()
            .context("the control plane was not started for a node (no node kubeconfig)")?;
        let mut kubelet = Command::new(&bins.kubelet);
        kubelet
            .arg(format!("--config={}", kubelet_config.display()))
            .arg(format!("--kubeconfig={}", node_kubeconfig.display()))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={GATEWAY}"))
            .arg(format!("--root-dir={}", kubelet_root().display()))
            .arg("--v=1");
        procs.spawn("kubelet", kubelet, &logs.join("kubelet.log"))?;

        // kube-proxy and kube-scheduler use the admin kubeconfig.
        let proxy_config = run_dir().join("kube-proxy.yaml");
        fs::write(&proxy_config, kube_proxy_yaml(&cp.kubeconfig))?;
        let mut proxy = Command::new(&bins.kube_proxy);
        proxy
            .arg(format!("--config={}", proxy_config.display()))
            .arg("--v=1");
        procs.spawn("kube-proxy", proxy, &logs.join("kube-proxy.log"))?;
        let mut scheduler = Command::new(&bins.kube_scheduler);
        scheduler
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .args([
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--v=1",
            ]);
        procs.spawn("kube-scheduler", scheduler, &logs.join("kube-scheduler.log"))?;

        let kubectl = cp.kubectl();
        procs.wait_ready("kubelet", Duration::from_secs(120), || {
            kubectl
                .run(&[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .is_ok_and(|s| s.trim() == "True")
        })?;
        procs.wait_ready("kube-proxy", Duration::from_secs(60), || {
            crate::stack::http_ok("127.0.0.1:10256".parse().expect("literal address"), "/healthz")
        })?;

        // Cluster DNS.
        kubectl.apply(&coredns_manifest())?;
        wait_available(
            &kubectl,
            "kube-system",
            "coredns",
            Duration::from_secs(180),
            procs,
        )?;

        step.done();
        node.started_in = start.elapsed();
        say(format!(
            "node {NODE_NAME} ready in {:.1}s",
            node.started_in.as_secs_f64()
        ));
        Ok(node)
    }

    /// Leaves the node running after this xtask exits; `cargo xtask down` stops it.
    pub fn detach(mut self) {
        self.detached = true;
        let _ = fs::write(detached_marker(), std::process::id().to_string());
        let procs = std::mem::replace(&mut self.procs, Supervisor::new(run_dir().join("detached.json")));
        procs.detach();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.procs.stop_all();
        teardown(Some(&self.kube_proxy));
    }
}

/// Waits until Deployment `name` has all its replicas available, failing with its Pods' state and events
/// (or as soon as a process of the node exits).
pub fn wait_available(
    kubectl: &Kubectl,
    namespace: &str,
    name: &str,
    timeout: Duration,
    procs: &mut Supervisor,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let deployment = format!("deployment/{name}");
    loop {
        if kubectl
            .run(&["-n", namespace, "rollout", "status", &deployment, "--timeout=5s"])
            .is_ok()
        {
            say(format!(
                "{namespace}/{name} is available after {:.1}s",
                start.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        procs.check_running()?;
        if start.elapsed() > timeout {
            let pods = kubectl
                .run(&["-n", namespace, "get", "pods", "-o", "wide"])
                .unwrap_or_default();
            let events = kubectl
                .run(&["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"])
                .unwrap_or_default();
            bail!(
                "{namespace}/{name} was not available after {}s\n{pods}\n{events}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ctr() -> Command {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address").arg(socket()).args(["-n", "k8s.io"]);
    cmd
}

/// Whether the node's containerd answers (an image can be imported).
pub fn containerd_running() -> bool {
    socket().exists()
        && ctr()
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// `ctr -n k8s.io images import <archive>` into the node's containerd.
pub fn import_image(archive: &Path) -> anyhow::Result<()> {
    let out = run(ctr().args(["images", "import"]).arg(archive))?;
    say(format!("imported {}: {}", archive.display(), out.trim()));
    Ok(())
}

/// Builds the node's own images into `target/images/` (pause from C, CoreDNS, busybox).
fn node_images(root: &Path, bins: &NodeBinaries) -> anyhow::Result<Vec<PathBuf>> {
    let step = Step::start("node images (pause, coredns, busybox)");
    let dir = image::images_dir(root);
    fs::create_dir_all(&dir)?;

    let pause_bin = dir.join("pause");
    let source = root.join("xtask").join("pause").join("pause.c");
    run(Command::new("gcc")
        .args(["-Os", "-static", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&pause_bin)
        .arg(&source))
    .context("compiling xtask/pause/pause.c (needs gcc and the static libc, Debian's libc6-dev)")?;
    run(Command::new("strip").arg(&pause_bin))?;
    let pause = image::write_archive(
        &Image {
            name: PAUSE_IMAGE.into(),
            entrypoint: vec!["/pause".into()],
            user: "65535:65535".into(),
            env: vec![],
            entries: vec![Entry::File {
                path: "pause".into(),
                mode: 0o755,
                data: fs::read(&pause_bin)?,
            }],
        },
        &dir.join("pause.tar"),
    )?;

    let coredns = image::write_archive(
        &Image {
            name: COREDNS_IMAGE.into(),
            entrypoint: vec!["/coredns".into()],
            user: "65532:65532".into(),
            env: vec![],
            entries: image::static_program_entries("/coredns", &bins.coredns)?,
        },
        &dir.join("coredns.tar"),
    )?;

    let busybox = image::write_archive(
        &Image {
            name: BUSYBOX_IMAGE.into(),
            entrypoint: vec!["/bin/busybox".into()],
            user: "65532:65532".into(),
            env: vec!["PATH=/bin".into()],
            entries: {
                let mut e = image::static_program_entries("/bin/busybox", Path::new("/bin/busybox"))?;
                e.insert(0, Entry::Dir { path: "bin".into() });
                e
            },
        },
        &dir.join("busybox.tar"),
    )?;
    step.done();
    Ok(vec![pause.path, coredns.path, busybox.path])
}

fn containerd_toml() -> String {
    format!(
        r#"# Written by cargo xtask up --node; see xtask/src/node.rs.
version = 2
root = "{data}/containerd"
state = "{run}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{data}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # The VM lacks CAP_SYS_RESOURCE: without this every sandbox fails ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc}"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}/net.d"
    max_conf_num = 1
"#,
        data = DATA,
        run = RUN,
        sock = socket().display(),
        pause = PAUSE_IMAGE,
        runc = runc_root().display(),
        cni = cni_dir().display(),
    )
}

/// A bridge with host-local IPAM; Pods get a route to the Service range only (no default route: a Pod never
/// reaches anything outside this machine).
fn cni_conflist() -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "ksiam",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "isDefaultGateway": false,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": cni_dir().join("ipam"),
                "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY.to_string()}]],
                "routes": [{"dst": SERVICE_CIDR}],
            },
        }],
    })
    .to_string()
}

fn kubelet_yaml(ca: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {gw}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{sock}
imageServiceEndpoint: unix://{sock}
# The host is cgroup v1 (kubelet 1.35 refuses it by default; 1.34 only with this).
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
clusterDNS: [{dns}]
clusterDomain: cluster.local
resolvConf: ""
# Every image is imported by hand: never garbage-collect one.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%, imagefs.inodesFree: 1%}}
maxPods: 60
serializeImagePulls: false
# Projected volumes (tokens) are refreshed on every sync.
syncFrequency: 10s
volumePluginDir: {root}/volume-plugins
"#,
        gw = GATEWAY,
        ca = ca.display(),
        sock = socket().display(),
        dns = DNS_IP,
        root = kubelet_root().display(),
    )
}

fn kube_proxy_yaml(kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {node}
mode: iptables
clusterCIDR: {pods}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack sysctls alone.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
iptables: {{localhostNodePorts: false}}
"#,
        kubeconfig = kubeconfig.display(),
        node = NODE_NAME,
        pods = POD_CIDR,
    )
}

/// CoreDNS as a Deployment behind `kube-dns` (10.0.0.10): cluster names only, no `forward`.
fn coredns_manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:1053 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 5
        }}
        cache 5
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 1053, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 1053, protocol: TCP}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 10}}
        resources: {{requests: {{cpu: 10m, memory: 32Mi}}, limits: {{memory: 128Mi}}}}
        securityContext:
          runAsNonRoot: true
          runAsUser: 65532
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {{drop: [ALL]}}
          seccompProfile: {{type: RuntimeDefault}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {dns}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, targetPort: 1053, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}}
"#,
        image = COREDNS_IMAGE,
        dns = DNS_IP,
    )
}

/// Removes everything a node leaves on the machine, whether it stopped cleanly or crashed: the containers
/// (runc) and their shims, mounts under the node's directories and its network namespaces, kube-proxy's
/// iptables rules, the bridge, the kubelet's cgroups and state. Idempotent and best effort: every failure
/// is printed, none stops the rest.
pub fn teardown(kube_proxy: Option<&Path>) {
    // Processes a detached or crashed xtask recorded (kubelet first: it would restart containers).
    if let Ok(stopped) = process::stop_recorded(&state_file())
        && stopped > 0
    {
        say(format!("node teardown: stopped {stopped} node processes"));
    }
    // Containers: kill and delete them through runc, then their shims.
    let runc_ns = runc_root().join("k8s.io");
    if runc_ns.is_dir() {
        let ids = Command::new("runc")
            .arg("--root")
            .arg(&runc_ns)
            .args(["list", "-q"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.lines().filter(|l| !l.trim().is_empty()) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_ns)
                .args(["kill", "--all", id, "KILL"])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_ns)
                .args(["delete", "--force", id])
                .stderr(Stdio::null())
                .status();
        }
    }
    let socket = socket().display().to_string();
    for pid in processes_matching(|cmdline| {
        cmdline.first().is_some_and(|a| a.contains("containerd-shim")) && cmdline.iter().any(|a| *a == socket)
    }) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    // kube-proxy's chains.
    if let Some(kube_proxy) = kube_proxy.filter(|p| p.is_file()) {
        let _ = Command::new(kube_proxy)
            .args(["--cleanup", "--v=0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    // Mounts: the kubelet's volumes, containerd's rootfs and shm mounts, the Pods' network namespaces.
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mount_path))
        .filter(|p| {
            p.starts_with(&format!("{DATA}/"))
                || p.starts_with(&format!("{RUN}/"))
                || p.starts_with("/run/netns/cni-")
        })
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    mounts.dedup();
    for m in &mounts {
        if let Err(e) = nix::mount::umount2(Path::new(m), nix::mount::MntFlags::MNT_DETACH) {
            say(format!("node teardown: umount {m}: {e}"));
        }
    }
    if !mounts.is_empty() {
        say(format!("node teardown: unmounted {} mounts", mounts.len()));
    }
    if let Ok(dir) = fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            if entry.file_name().to_string_lossy().starts_with("cni-") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    // The bridge (the Pods' veth ends went with their namespaces).
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        match run(Command::new("ip").args(["link", "del", BRIDGE])) {
            Ok(_) => say(format!("node teardown: deleted bridge {BRIDGE}")),
            Err(e) => say(format!("node teardown: {e:#}")),
        }
    }
    // The kubelet's cgroups (empty once the containers are gone), deepest first.
    for controller in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        remove_cgroup_tree(&controller.path().join("kubepods"));
    }
    let _ = fs::remove_file(detached_marker());
    // State that must not outlive the node; containerd's root (the imported images) stays.
    for dir in [
        kubelet_root(),
        cni_dir().join("ipam"),
        run_dir().join("containerd"),
        runc_root(),
    ] {
        if dir.exists()
            && let Err(e) = fs::remove_dir_all(&dir)
        {
            say(format!("node teardown: removing {}: {e}", dir.display()));
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for child in fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&child.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(v) = u8::from_str_radix(&raw[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pids whose command line (argv) satisfies `pred`.
fn processes_matching(pred: impl Fn(&[&str]) -> bool) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&raw);
            let args: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
            !args.is_empty() && pred(&args)
        })
        .collect()
}

/// `cargo xtask down` for a detached node: stops its processes and tears it down (under the lock).
pub fn down(root: &Path) -> anyhow::Result<()> {
    if !state_file().exists() && !Path::new("/sys/class/net").join(BRIDGE).exists() {
        return Ok(());
    }
    let kube_proxy = k8s_bin::target_dir(root).join("kube-proxy");
    let lock_path = run_dir().join("node.lock");
    let file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    let _lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "{} is held by a running xtask ({e}): stop that one (Ctrl-C)",
            lock_path.display()
        )
    })?;
    teardown(Some(&kube_proxy));
    say("node stopped and torn down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape_mount_path("/run/plain"), "/run/plain");
    }

    #[test]
    fn pods_get_no_default_route() {
        let conf: serde_json::Value = serde_json::from_str(&cni_conflist()).unwrap();
        let routes = &conf["plugins"][0]["ipam"]["routes"];
        assert_eq!(routes, &serde_json::json!([{"dst": SERVICE_CIDR}]));
        assert_eq!(conf["plugins"][0]["isDefaultGateway"], false);
    }

    #[test]
    fn the_containerd_socket_path_fits_a_unix_socket() {
        // sun_path is 108 bytes including the NUL; containerd adds ".ttrpc".
        assert!(socket().as_os_str().len() + ".ttrpc".len() < 108);
    }
}
