//! The control plane's PKI, generated fresh for every run with rcgen (no openssl needed).
//!
//! ```text
//! ca.crt/ca.key ──signs──► apiserver.crt/.key  (serverAuth; IP 127.0.0.1, 10.0.0.1, 10.244.0.1; DNS localhost, kubernetes.default.svc)
//!               ├─signs──► admin.crt/.key      (clientAuth; CN=ksiam-admin, O=system:masters)
//!               ├─signs──► ksiam-webhooks.crt/.key (serverAuth; IP 127.0.0.1: ksiam's TokenReview + SubjectAccessReview webhooks)
//!               ├─signs──► webhook-client.crt/.key (clientAuth; kube-apiserver's identity towards ksiam's webhooks)
//!               ├─signs──► ksiam-grpc.crt/.key (serverAuth; IP 127.0.0.1: ksiam's gRPC APIs, which trust ca.crt for clients)
//!               └─signs──► grpc-<identity>.crt/.key (clientAuth; CN=ksiam-admin | ksiam-controller | ksiam-gateway | ksiam-authz:
//!                          the gRPC client identities of the CLI and the tests)
//! sa.key/sa.pub            ServiceAccount token signing key pair (ECDSA P-256)
//! ```

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// The admin user of the local control plane (client certificate and static token).
pub const ADMIN_USER: &str = "ksiam-admin";

/// Paths of the PEM files written by [`generate`].
pub struct Pki {
    pub ca_crt: PathBuf,
    pub ca_der: CertificateDer<'static>,
    pub apiserver_crt: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_crt: PathBuf,
    pub admin_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    pub webhooks_crt: PathBuf,
    pub webhooks_key: PathBuf,
    /// The gRPC APIs' serving certificate and key.
    /// kube-apiserver's client certificate for ksiam's TokenReview/SubjectAccessReview webhooks.
    pub webhook_client_crt: PathBuf,
    pub webhook_client_key: PathBuf,
    pub grpc_crt: PathBuf,
    pub grpc_key: PathBuf,
    /// gRPC client identities: `(CN, certificate, key)` for each of [`GRPC_CLIENTS`].
    pub grpc_clients: Vec<(&'static str, PathBuf, PathBuf)>,
}

/// The gRPC client identities `cargo xtask up` issues certificates for: the admin (the CLI's `can-i` and
/// `who-can`, and the e2e tests' policy queries), the controller (the only identity that may IssueToken)
/// the gateway (a verifier that may not issue tokens nor query the policy) and the authorizer (a verifier
/// following the token service's revocations in the split topology).
pub const GRPC_CLIENTS: [&str; 4] = ["ksiam-admin", "ksiam-controller", "ksiam-gateway", "ksiam-authz"];

/// Generates the CA, the serving and admin certificates and the ServiceAccount key pair into `dir`.
pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
    fs::create_dir_all(dir)?;

    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ksiam-local-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    // 10.244.0.1: the node's bridge, where kube-apiserver listens when a node runs (`up --node`).
    let serving_names = [
        "127.0.0.1",
        "localhost",
        "10.0.0.1",
        "10.244.0.1",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    let mut serving = CertificateParams::new(serving_names.map(String::from).to_vec())?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate()?;
    let serving_cert = serving.signed_by(&serving_key, &ca)?;

    let mut admin = CertificateParams::default();
    admin.distinguished_name.push(DnType::CommonName, ADMIN_USER);
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate()?;
    let admin_cert = admin.signed_by(&admin_key, &ca)?;

    let mut webhooks = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    webhooks
        .distinguished_name
        .push(DnType::CommonName, "ksiam-webhooks");
    webhooks.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    webhooks.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let webhooks_key = KeyPair::generate()?;
    let webhooks_cert = webhooks.signed_by(&webhooks_key, &ca)?;

    let mut grpc = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    grpc.distinguished_name.push(DnType::CommonName, "ksiam-grpc");
    grpc.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    grpc.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let grpc_key = KeyPair::generate()?;
    let grpc_cert = grpc.signed_by(&grpc_key, &ca)?;
    let grpc_crt_path = dir.join("ksiam-grpc.crt");
    let grpc_key_path = dir.join("ksiam-grpc.key");
    write_public(&grpc_crt_path, &grpc_cert.pem())?;
    write_secret(&grpc_key_path, &grpc_key.serialize_pem())?;
    let mut grpc_clients = Vec::new();
    for cn in GRPC_CLIENTS {
        let mut client = CertificateParams::default();
        client.distinguished_name.push(DnType::CommonName, cn);
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = client.signed_by(&key, &ca)?;
        let short = cn.trim_start_matches("ksiam-");
        let (crt_path, key_path) = (
            dir.join(format!("grpc-{short}.crt")),
            dir.join(format!("grpc-{short}.key")),
        );
        write_public(&crt_path, &cert.pem())?;
        write_secret(&key_path, &key.serialize_pem())?;
        grpc_clients.push((cn, crt_path, key_path));
    }

    // kube-apiserver's client certificate for ksiam's TokenReview and SubjectAccessReview webhooks, which
    // accept only clients the cluster CA signed.
    let mut webhook_client = CertificateParams::default();
    webhook_client
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver-webhook-client");
    webhook_client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    webhook_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let webhook_client_key = KeyPair::generate()?;
    let webhook_client_cert = webhook_client.signed_by(&webhook_client_key, &ca)?;
    let webhook_client_crt_path = dir.join("webhook-client.crt");
    let webhook_client_key_path = dir.join("webhook-client.key");
    write_public(&webhook_client_crt_path, &webhook_client_cert.pem())?;
    write_secret(&webhook_client_key_path, &webhook_client_key.serialize_pem())?;

    let sa = KeyPair::generate()?;

    let pki = Pki {
        webhook_client_crt: webhook_client_crt_path,
        webhook_client_key: webhook_client_key_path,
        ca_crt: dir.join("ca.crt"),
        ca_der: ca.der().clone(),
        apiserver_crt: dir.join("apiserver.crt"),
        apiserver_key: dir.join("apiserver.key"),
        admin_crt: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
        webhooks_crt: dir.join("ksiam-webhooks.crt"),
        webhooks_key: dir.join("ksiam-webhooks.key"),
        grpc_crt: grpc_crt_path,
        grpc_key: grpc_key_path,
        grpc_clients,
    };
    write_public(&pki.webhooks_crt, &webhooks_cert.pem())?;
    write_secret(&pki.webhooks_key, &webhooks_key.serialize_pem())?;
    write_public(&pki.ca_crt, &ca.pem())?;
    write_secret(&dir.join("ca.key"), &ca_key_pem)?;
    write_public(&pki.apiserver_crt, &serving_cert.pem())?;
    write_secret(&pki.apiserver_key, &serving_key.serialize_pem())?;
    write_public(&pki.admin_crt, &admin_cert.pem())?;
    write_secret(&pki.admin_key, &admin_key.serialize_pem())?;
    write_secret(&pki.sa_key, &sa.serialize_pem())?;
    write_public(&pki.sa_pub, &sa.public_key_pem())?;
    Ok(pki)
}

fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Writes a file only its owner can read (private keys, tokens).
pub fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// `n` random bytes as lowercase hex, from the kernel's generator.
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
