//! Tiny blocking HTTP(S) GET for readiness probes (etcd `/health`, kube-apiserver `/readyz`).
//!
//! HTTP/1.0 with `Connection: close`, so the answer is never chunked and ends at EOF.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// A status code and body.
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// A TLS client configuration that trusts only `ca`.
pub fn tls_trusting(ca: CertificateDer<'static>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `GET path` on `addr`, over TLS when `tls` is given (the server name is the address' IP).
pub fn get(
    addr: SocketAddr,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    bearer: Option<&str>,
) -> anyhow::Result<Response> {
    let timeout = Duration::from_secs(5);
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    let mut raw = Vec::new();
    match tls {
        Some(config) => {
            let name = ServerName::from(addr.ip());
            let conn = rustls::ClientConnection::new(Arc::clone(config), name)?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            stream.write_all(request.as_bytes())?;
            // Go servers close without close_notify; what arrived before that is the whole answer.
            if let Err(e) = stream.read_to_end(&mut raw)
                && e.kind() != std::io::ErrorKind::UnexpectedEof
            {
                return Err(e.into());
            }
        }
        None => {
            let mut tcp = tcp;
            tcp.write_all(request.as_bytes())?;
            tcp.read_to_end(&mut raw)?;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("malformed HTTP answer from {addr}{path}"))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

/// True if `GET path` answers 200 and its body contains `needle`.
pub fn ok(
    addr: SocketAddr,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    bearer: Option<&str>,
    needle: &str,
) -> bool {
    get(addr, path, tls, bearer).is_ok_and(|r| r.status == 200 && r.body.contains(needle))
}
