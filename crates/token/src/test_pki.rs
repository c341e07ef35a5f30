//! A throw-away PKI for tests of the mutual-TLS gRPC servers (feature `test-pki`): a CA, a serving
//! certificate for 127.0.0.1 written to a temporary directory, and client identities signed by that CA
//! or by a foreign one. Never used outside tests.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::grpc_auth::{ClientTls, TlsFiles};

/// A CA with a serving certificate on disk; the directory is removed on drop.
pub struct TestPki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The serving certificate, its key and the client CA (this CA), as a server reads them.
    pub server: TlsFiles,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// A client certificate (clientAuth) with common name `cn`, signed by `ca`: `(cert PEM, key PEM)`.
fn client_cert(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> (Vec<u8>, Vec<u8>) {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("client certificate");
    (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
}

impl TestPki {
    /// A fresh CA and serving certificate (127.0.0.1, localhost) in a new temporary directory.
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("ksiam-test-pki-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let ca = new_ca("ksiam-test-ca");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("names");
        params.distinguished_name.push(DnType::CommonName, "ksiam-grpc");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("serving certificate");
        let server = TlsFiles {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: dir.join("ca.crt"),
        };
        std::fs::write(&server.cert, cert.pem()).expect("write");
        std::fs::write(&server.key, key.serialize_pem()).expect("write");
        std::fs::write(&server.client_ca, ca.pem()).expect("write");
        Self { dir, ca, server }
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A client presenting a certificate with common name `cn` from this CA.
    pub fn client(&self, cn: &str) -> ClientTls {
        ClientTls::from_pem(self.ca_pem(), Some(client_cert(&self.ca, cn)))
    }

    /// A client that trusts this CA for the server but presents no certificate.
    pub fn anonymous(&self) -> ClientTls {
        ClientTls::from_pem(self.ca_pem(), None)
    }

    /// A client presenting a certificate with common name `cn` from another CA.
    pub fn foreign_client(&self, cn: &str) -> ClientTls {
        let other = new_ca("ksiam-test-ca");
        ClientTls::from_pem(self.ca_pem(), Some(client_cert(&other, cn)))
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
