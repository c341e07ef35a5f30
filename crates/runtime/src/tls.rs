//! Serving certificates: PEM files re-read when they change, or a CA and serving certificate generated at start.
//!
//! ```text
//! TlsSource::Files ──load──► CertifiedKey ──► ArcSwap in CertResolver ◄── rustls, per handshake
//!      └── poll mtimes every RELOAD_INTERVAL ──reload──┘   └── CA bundle ──► watch channel (re-registration)
//! TlsSource::SelfSigned ── rcgen CA + leaf, once ──┘
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files, re-read when their modification time or size changes (cert-manager, a mounted Secret).
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
        /// The CA bundle for `caBundle`; when absent the certificate file itself is used (right for a
        /// self-signed certificate).
        ca: Option<PathBuf>,
    },
    /// A CA and a serving certificate generated in memory at start, valid for the given names.
    SelfSigned {
        /// DNS names of the serving certificate.
        dns_names: Vec<String>,
        /// IP addresses of the serving certificate.
        ip_addresses: Vec<IpAddr>,
    },
}

impl TlsSource {
    /// A self-signed certificate for `127.0.0.1`, for a webhook the API server reaches on loopback.
    pub fn loopback() -> Self {
        Self::SelfSigned {
            dns_names: Vec::new(),
            ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
        }
    }

    /// A self-signed certificate for the in-cluster names of the Service `namespace/name`.
    pub fn for_service(namespace: &str, name: &str) -> Self {
        Self::SelfSigned {
            dns_names: vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
            ],
            ip_addresses: Vec::new(),
        }
    }
}

/// Why certificates could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM that was expected.
    #[error("invalid PEM in {path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    /// The CA bundle is not UTF-8 text.
    #[error("the CA bundle {0} is not PEM text")]
    CaNotText(PathBuf),
    /// The key does not fit the certificate, or its algorithm is not supported.
    #[error("unusable certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the self-signed certificates failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The client CA could not be used to verify clients.
    #[error("cannot verify clients with the CA in {path}: {message}")]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A self-signed certificate was asked for without any name.
    #[error("a self-signed certificate needs at least one DNS name or IP address")]
    NoNames,
}

/// The crypto provider used for serving: aws-lc-rs, as everywhere in ksiam.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

// === impl CertResolver ===

/// Serves whatever certificate is current; swapping it needs no lock and affects the next handshake.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is never printed; the chain length is enough to tell certificates apart in a log.
        f.debug_struct("CertResolver")
            .field("chain_len", &self.current.load().cert.len())
            .finish()
    }
}

impl CertResolver {
    fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    fn set(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The certificate chain currently served.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

// === impl ServerTls ===

/// Loaded serving material: the resolver for rustls and the CA bundle clients should trust.
pub struct ServerTls {
    resolver: Arc<CertResolver>,
    ca_bundle: watch::Sender<String>,
    files: Option<WatchedFiles>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("resolver", &self.resolver)
            .field("files", &self.files.as_ref().map(|files| &files.cert))
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads (or generates) the serving certificate.
    pub fn load(source: &TlsSource) -> Result<Self, TlsError> {
        let provider = provider();
        match source {
            TlsSource::Files { cert, key, ca } => {
                let files = WatchedFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                    stamps: Vec::new(),
                };
                let (certified, ca_pem) = files.load(&provider)?;
                let files = WatchedFiles {
                    stamps: files.stamps(),
                    ..files
                };
                Ok(Self {
                    resolver: Arc::new(CertResolver::new(certified)),
                    ca_bundle: watch::Sender::new(ca_pem),
                    files: Some(files),
                })
            }
            TlsSource::SelfSigned {
                dns_names,
                ip_addresses,
            } => {
                let (certified, ca_pem) = self_signed(dns_names, ip_addresses, &provider)?;
                Ok(Self {
                    resolver: Arc::new(CertResolver::new(certified)),
                    ca_bundle: watch::Sender::new(ca_pem),
                    files: None,
                })
            }
        }
    }

    /// A rustls server configuration that serves the current certificate (HTTP/1.1 only).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        self.server_config_verifying(None)
    }

    /// [`ServerTls::server_config`] that, with `client_ca`, accepts only clients presenting a certificate
    /// that CA signed (kube-apiserver's identity towards its admission webhooks).
    pub fn server_config_verifying(
        &self,
        client_ca: Option<&Path>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let builder =
            rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let client_ca = |message: String| TlsError::ClientCa {
                    path: path.to_owned(),
                    message,
                };
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| client_ca(e.to_string()))?;
                if certs.is_empty() {
                    return Err(client_ca("no certificate in the file".into()));
                }
                for cert in certs {
                    roots.add(cert)?;
                }
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| client_ca(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The resolver rustls asks for a certificate on every handshake.
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }

    /// The PEM CA bundle that verifies the serving certificate (for `caBundle`).
    pub fn ca_bundle(&self) -> String {
        self.ca_bundle.borrow().clone()
    }

    /// Notified with the new CA bundle whenever reloaded files change it.
    pub fn ca_bundle_updates(&self) -> watch::Receiver<String> {
        self.ca_bundle.subscribe()
    }

    /// Checks the files every `interval` and swaps in the new certificate when they changed, until dropped.
    /// Does nothing for a self-signed source. A reload that fails keeps the previous certificate.
    pub fn reload_task(&self, interval: Duration) -> Option<impl Future<Output = ()> + Send + 'static> {
        let mut files = self.files.clone()?;
        let resolver = self.resolver.clone();
        let ca_bundle = self.ca_bundle.clone();
        Some(async move {
            let provider = provider();
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let stamps = files.stamps();
                if stamps == files.stamps {
                    continue;
                }
                match files.load(&provider) {
                    Ok((certified, ca_pem)) => {
                        files.stamps = stamps;
                        resolver.set(certified);
                        ca_bundle.send_if_modified(|current| {
                            let changed = *current != ca_pem;
                            if changed {
                                *current = ca_pem;
                            }
                            changed
                        });
                        tracing::info!(cert = %files.cert.display(), "reloaded the serving certificate");
                    }
                    // Files are often written one after the other: retry on the next tick, keep serving the old one.
                    Err(error) => {
                        tracing::warn!(%error, "cannot reload the serving certificate; keeping the previous one")
                    }
                }
            }
        })
    }
}

/// Certificate files and what they looked like when last loaded.
#[derive(Clone, Debug)]
struct WatchedFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    stamps: Vec<Option<(SystemTime, u64)>>,
}

impl WatchedFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// Modification time and size of each file (`None` when it cannot be read right now).
    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }

    fn load(&self, provider: &CryptoProvider) -> Result<(CertifiedKey, String), TlsError> {
        let cert_pem = read(&self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                path: self.cert.clone(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(self.cert.clone()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?).map_err(|source| TlsError::Pem {
            path: self.key.clone(),
            source,
        })?;
        let certified = CertifiedKey::from_der(chain, key, provider)?;
        let (ca_path, ca_pem) = match &self.ca {
            Some(ca) => (ca, read(ca)?),
            None => (&self.cert, cert_pem),
        };
        let ca_pem = String::from_utf8(ca_pem).map_err(|_| TlsError::CaNotText(ca_path.clone()))?;
        Ok((certified, ca_pem))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Generates a CA and a serving certificate it signed; returns the serving key and the CA PEM.
fn self_signed(
    dns_names: &[String],
    ip_addresses: &[IpAddr],
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, String), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, SanType,
    };

    if dns_names.is_empty() && ip_addresses.is_empty() {
        return Err(TlsError::NoNames);
    }

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ksiam-webhook-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::default();
    let common_name = dns_names
        .first()
        .cloned()
        .or_else(|| ip_addresses.first().map(IpAddr::to_string))
        .unwrap_or_default();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for name in dns_names {
        leaf_params
            .subject_alt_names
            .push(SanType::DnsName(name.clone().try_into()?));
    }
    for ip in ip_addresses {
        leaf_params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let certified = CertifiedKey::from_der(vec![leaf_cert.der().clone()], key, provider)?;
    Ok((certified, ca_cert.pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ksiam-webhook-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    /// A self-signed certificate for `name` as (cert PEM, key PEM).
    fn pem_pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn self_signed_needs_a_name() {
        let source = TlsSource::SelfSigned {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        };
        assert!(matches!(ServerTls::load(&source), Err(TlsError::NoNames)));
    }

    #[test]
    fn self_signed_gives_a_ca_bundle_and_a_leaf() {
        let tls =
            ServerTls::load(&TlsSource::for_service("kubesphere-system", "ksiam-webhook")).expect("load");
        assert!(tls.ca_bundle().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(tls.resolver().chain().len(), 1);
        // The CA is not the leaf.
        let ca = CertificateDer::from_pem_slice(tls.ca_bundle().as_bytes()).expect("ca pem");
        assert_ne!(ca, tls.resolver().chain()[0]);
        assert!(tls.reload_task(RELOAD_INTERVAL).is_none());
        tls.server_config().expect("server config");
    }

    #[test]
    fn files_are_loaded_and_the_cert_is_the_default_ca_bundle() {
        let dir = temp_dir("files");
        let (cert, key) = pem_pair("localhost");
        std::fs::write(dir.join("tls.crt"), &cert).expect("write");
        std::fs::write(dir.join("tls.key"), &key).expect("write");
        let tls = ServerTls::load(&TlsSource::Files {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: None,
        })
        .expect("load");
        assert_eq!(tls.ca_bundle(), cert);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let dir = temp_dir("mismatch");
        let (cert, _) = pem_pair("localhost");
        let (_, other_key) = pem_pair("localhost");
        std::fs::write(dir.join("tls.crt"), cert).expect("write");
        std::fs::write(dir.join("tls.key"), other_key).expect("write");
        let result = ServerTls::load(&TlsSource::Files {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: None,
        });
        assert!(matches!(result, Err(TlsError::Rustls(_))), "{result:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = ServerTls::load(&TlsSource::Files {
            cert: PathBuf::from("/nonexistent/tls.crt"),
            key: PathBuf::from("/nonexistent/tls.key"),
            ca: None,
        })
        .expect_err("missing files");
        assert!(error.to_string().contains("/nonexistent/tls.crt"), "{error}");
    }

    #[tokio::test]
    async fn changed_files_are_reloaded() {
        let dir = temp_dir("reload");
        let (cert1, key1) = pem_pair("localhost");
        std::fs::write(dir.join("tls.crt"), &cert1).expect("write");
        std::fs::write(dir.join("tls.key"), &key1).expect("write");
        let tls = ServerTls::load(&TlsSource::Files {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: None,
        })
        .expect("load");
        let before = tls.resolver().chain();
        let mut updates = tls.ca_bundle_updates();
        let task = tokio::spawn(tls.reload_task(Duration::from_millis(20)).expect("files reload"));

        // A different certificate (and size) so the change is seen even on coarse mtime clocks.
        let (cert2, key2) = pem_pair("a-longer-name.example.com");
        std::fs::write(dir.join("tls.key"), &key2).expect("write");
        std::fs::write(dir.join("tls.crt"), &cert2).expect("write");

        tokio::time::timeout(Duration::from_secs(10), updates.changed())
            .await
            .expect("reloaded in time")
            .expect("sender alive");
        assert_eq!(*updates.borrow(), cert2);
        assert_ne!(tls.resolver().chain(), before);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
