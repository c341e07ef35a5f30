//! Who may call ksiam's gRPC servers: mutual TLS and an allow-list per method.
//!
//! ```text
//! TcpListener ─accept─► TLS handshake (rustls, aws-lc-rs; client certificate verified against the client CA,
//!                │       optional at the TLS layer) ─► Conn { PeerInfo }  ──► tonic puts PeerInfo in every request
//!                └─ plaintext only with GrpcSecurity::insecure_loopback on a loopback address
//! AuthLayer (tower, in front of every service): path "/pkg.Service/Method" + PeerInfo ─► AllowList::check
//!   health                       → always open
//!   no client certificate        → UNAUTHENTICATED
//!   identity not listed          → PERMISSION_DENIED naming the method and the identity
//!   plaintext (insecure loopback) → only the methods marked safe without identity; never IssueToken,
//!                                   RulesFor, WhoCan
//! ```
//!
//! The client identity is the certificate subject's common name (CN), as kube-apiserver reads client
//! certificates: a certificate with no CN or with several CNs has no identity and is refused. The server
//! certificate, its key and the client CA are PEM files re-read when they change ([`RELOAD_INTERVAL`]).
//!
//! Used by `ksiam_token::grpc` (TokenService) and `ksiam_authz::grpc` (Authorizer); nothing here is specific
//! to either service, so it can move to a shared runtime crate as it is.

use std::{
    collections::BTreeMap,
    fmt, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use futures::future::{self, Either};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Status,
    transport::{Channel, Endpoint, server::Connected},
};

/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The identities (client certificate CNs) of ksiam's own components, used by [`AllowList::default`].
pub mod identities {
    /// The controller: the only identity that may issue tokens.
    pub const CONTROLLER: &str = "ksiam-controller";
    /// The gateway: asks for decisions, verifies tokens, follows keys and revocations.
    pub const GATEWAY: &str = "ksiam-gateway";
    /// The Pod-injection webhook and other admission components: ask for decisions.
    pub const WEBHOOK: &str = "ksiam-webhook";
    /// The authorizer: verifies tokens, follows keys and revocations.
    pub const AUTHZ: &str = "ksiam-authz";
    /// Any other token verifier: verifies tokens, follows keys and revocations.
    pub const VERIFIER: &str = "ksiam-verifier";
    /// Administrators and the CLI (`ksiam can-i`, `ksiam who-can`): decisions, rules and reverse lookups.
    pub const ADMIN: &str = "ksiam-admin";
}

/// The gRPC health service: open to every client, so probes need no certificate.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

// === AllowList ===

/// Which client identities may call which method, keyed by `package.Service/Method` (or `package.Service/*`
/// for every method of a service; an exact method entry wins over the service's `*` entry).
///
/// Anything not listed is refused, except the gRPC health service. Some methods are also marked as
/// callable over plaintext on loopback ([`GrpcSecurity::insecure_loopback`]); IssueToken, RulesFor and
/// WhoCan never are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    /// `package.Service/Method` or `package.Service/*` → identities.
    rules: BTreeMap<String, Vec<String>>,
    /// Methods (same keys) that plaintext loopback clients may call without an identity.
    plaintext_ok: Vec<String>,
}

/// Why an allow-list entry could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid gRPC allow-list entry {entry:?}: {reason} (expected `package.Service/Method=identity[,identity…]`)"
)]
pub struct AllowListError {
    entry: String,
    reason: &'static str,
}

impl Default for AllowList {
    /// ksiam's components by their [`identities`]:
    ///
    /// | method | identities |
    /// |---|---|
    /// | `ksiam.token.v1.TokenService/IssueToken` | controller |
    /// | `ksiam.token.v1.TokenService/VerifyToken`, `WatchKeys`, `WatchRevocations` | gateway, authz, verifier |
    /// | `ksiam.authz.v1.Authorizer/Authorize`, `AuthorizeBatch` | gateway, webhook, admin |
    /// | `ksiam.authz.v1.Authorizer/RulesFor`, `WhoCan` | admin |
    /// | `grpc.reflection.v1.ServerReflection/*` | admin |
    fn default() -> Self {
        use identities::*;
        let verifiers = [GATEWAY, AUTHZ, VERIFIER];
        let deciders = [GATEWAY, WEBHOOK, ADMIN];
        let rules: [(&str, &[&str]); 9] = [
            ("ksiam.token.v1.TokenService/IssueToken", &[CONTROLLER]),
            ("ksiam.token.v1.TokenService/VerifyToken", &verifiers),
            ("ksiam.token.v1.TokenService/WatchKeys", &verifiers),
            ("ksiam.token.v1.TokenService/WatchRevocations", &verifiers),
            ("ksiam.authz.v1.Authorizer/Authorize", &deciders),
            ("ksiam.authz.v1.Authorizer/AuthorizeBatch", &deciders),
            ("ksiam.authz.v1.Authorizer/RulesFor", &[ADMIN]),
            ("ksiam.authz.v1.Authorizer/WhoCan", &[ADMIN]),
            ("grpc.reflection.v1.ServerReflection/*", &[ADMIN]),
        ];
        let plaintext_ok = [
            "ksiam.token.v1.TokenService/VerifyToken",
            "ksiam.token.v1.TokenService/WatchKeys",
            "ksiam.token.v1.TokenService/WatchRevocations",
            "ksiam.authz.v1.Authorizer/Authorize",
            "ksiam.authz.v1.Authorizer/AuthorizeBatch",
        ];
        Self {
            rules: rules
                .iter()
                .map(|(method, ids)| {
                    (
                        (*method).to_owned(),
                        ids.iter().map(|id| (*id).to_owned()).collect(),
                    )
                })
                .collect(),
            plaintext_ok: plaintext_ok.iter().map(|m| (*m).to_owned()).collect(),
        }
    }
}

impl AllowList {
    /// An empty list: every method but health is refused.
    pub fn empty() -> Self {
        Self {
            rules: BTreeMap::new(),
            plaintext_ok: Vec::new(),
        }
    }

    /// Sets who may call `method` (`package.Service/Method` or `package.Service/*`), replacing what was
    /// listed for it. An empty `identities` lets nobody call it.
    pub fn allow(
        &mut self,
        method: &str,
        identities: impl IntoIterator<Item = impl Into<String>>,
    ) -> &mut Self {
        let method = method.strip_prefix('/').unwrap_or(method).to_owned();
        self.rules
            .insert(method, identities.into_iter().map(Into::into).collect());
        self
    }

    /// Applies entries of the form `package.Service/Method=id1,id2` (the flag `--grpc-allow`), each
    /// replacing the identities of its method.
    pub fn with_entries<S: AsRef<str>>(mut self, entries: &[S]) -> Result<Self, AllowListError> {
        for entry in entries {
            let entry = entry.as_ref();
            let err = |reason| AllowListError {
                entry: entry.to_owned(),
                reason,
            };
            let (method, ids) = entry.split_once('=').ok_or_else(|| err("no `=`"))?;
            let method = method.trim();
            let method = method.strip_prefix('/').unwrap_or(method);
            let (service, name) = method
                .split_once('/')
                .ok_or_else(|| err("the method has no `/`"))?;
            if service.is_empty() || name.is_empty() || name.contains('/') || !service.contains('.') {
                return Err(err("the method is not `package.Service/Method`"));
            }
            if service == HEALTH_SERVICE {
                return Err(err("the health service is always open"));
            }
            let ids: Vec<&str> = ids.split(',').map(str::trim).filter(|i| !i.is_empty()).collect();
            self.allow(method, ids);
        }
        Ok(self)
    }

    /// The identities allowed to call `method` (`package.Service/Method`): its own entry, else its
    /// service's `*` entry.
    pub fn identities(&self, method: &str) -> Option<&[String]> {
        if let Some(ids) = self.rules.get(method) {
            return Some(ids);
        }
        let (service, _) = method.split_once('/')?;
        self.rules.get(&format!("{service}/*")).map(Vec::as_slice)
    }

    /// Whether a call of the HTTP/2 path `path` (`/package.Service/Method`) from `peer` may proceed;
    /// otherwise the gRPC status to answer. Messages name the method and the identity, nothing else.
    pub fn check(&self, path: &str, peer: &Peer) -> Result<(), Status> {
        let method = path.strip_prefix('/').unwrap_or(path);
        if method
            .split_once('/')
            .is_some_and(|(service, _)| service == HEALTH_SERVICE)
        {
            return Ok(());
        }
        match peer {
            Peer::Plaintext => {
                if self.plaintext_ok.iter().any(|m| m == method) {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "{method} requires an authenticated client (mutual TLS); this server accepts plaintext on loopback only for other methods"
                    )))
                }
            }
            Peer::NoCertificate => Err(Status::unauthenticated(format!(
                "{method} requires a client certificate"
            ))),
            Peer::Certificate(None) => Err(Status::permission_denied(format!(
                "{method}: the client certificate has no single common name to identify it"
            ))),
            Peer::Certificate(Some(identity)) => {
                if self
                    .identities(method)
                    .is_some_and(|ids| ids.iter().any(|id| **id == **identity))
                {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "{method} is not allowed for client identity {identity:?}"
                    )))
                }
            }
        }
    }
}

// === peers ===

/// Who is on the other end of a connection, as far as the transport can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A plaintext connection (insecure loopback mode): no identity.
    Plaintext,
    /// A TLS connection without a client certificate.
    NoCertificate,
    /// A TLS connection with a client certificate verified against the client CA; its common name, when
    /// it has exactly one.
    Certificate(Option<Arc<str>>),
}

/// The connection information tonic puts into every request's extensions
/// (`request.extensions().get::<PeerInfo>()`).
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client's identity.
    pub peer: Peer,
}

/// The common name of a certificate's subject, when there is exactly one and it is UTF-8.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<Arc<str>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut names = parsed.subject().iter_common_name();
    let first = names.next()?.as_str().ok()?;
    if names.next().is_some() || first.is_empty() {
        return None;
    }
    Some(Arc::from(first))
}

/// A connection accepted by [`GrpcSecurity::incoming`].
pub struct Conn {
    io: ConnIo,
    info: PeerInfo,
}

enum ConnIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Plain(s) => s.is_write_vectored(),
            ConnIo::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

// === GrpcSecurity ===

/// The PEM files of a mutual-TLS gRPC server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The serving certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA bundle client certificates must chain to.
    pub client_ca: PathBuf,
}

/// Why a gRPC server could not be secured as configured.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A certificate, key or CA file could not be read or parsed.
    #[error("cannot load {path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What was wrong (never the file's contents).
        reason: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("unusable gRPC TLS configuration: {0}")]
    Rustls(String),
    /// Plaintext was asked for on an address that is not loopback.
    #[error("plaintext gRPC (insecure loopback) is only allowed on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    /// The listener has no local address.
    #[error("the gRPC listener has no local address: {0}")]
    Io(#[from] io::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Transport {
    MutualTls(TlsFiles),
    InsecureLoopback,
}

/// How a gRPC server authenticates its clients and which methods each may call.
#[derive(Clone, Debug)]
pub struct GrpcSecurity {
    transport: Transport,
    allow: Arc<AllowList>,
}

impl GrpcSecurity {
    /// Mutual TLS: clients present a certificate from `files.client_ca` (or none, and then only health
    /// answers), and `allow` decides per method by the certificate's common name.
    pub fn mutual_tls(files: TlsFiles, allow: AllowList) -> Self {
        Self {
            transport: Transport::MutualTls(files),
            allow: Arc::new(allow),
        }
    }

    /// Plaintext HTTP/2, refused unless the listener is on a loopback address; the methods `allow` marks
    /// safe without identity answer (Authorize, AuthorizeBatch, VerifyToken, WatchKeys, WatchRevocations
    /// in the default list), every other one is PERMISSION_DENIED. For benchmarks of the bare service and
    /// local experiments.
    pub fn insecure_loopback(allow: AllowList) -> Self {
        Self {
            transport: Transport::InsecureLoopback,
            allow: Arc::new(allow),
        }
    }

    /// Whether this is the plaintext mode.
    pub fn is_plaintext(&self) -> bool {
        self.transport == Transport::InsecureLoopback
    }

    /// The allow-list.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// The tower layer that enforces the allow-list; add it to the `tonic::transport::Server`.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer {
            allow: self.allow.clone(),
        }
    }

    /// The connections of `listener`, after the TLS handshake (done concurrently, at most
    /// [`HANDSHAKE_TIMEOUT`] each), for `Server::serve_with_incoming_shutdown`. Loads the certificates now
    /// (an error here is a start-up error) and re-reads them every [`RELOAD_INTERVAL`] while the stream
    /// lives. Refuses plaintext on an address that is not loopback.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> Result<ReceiverStream<Result<Conn, io::Error>>, SecurityError> {
        let local = listener.local_addr()?;
        let acceptor = match &self.transport {
            Transport::InsecureLoopback => {
                if !local.ip().is_loopback() {
                    return Err(SecurityError::NotLoopback(local));
                }
                None
            }
            Transport::MutualTls(files) => {
                let config = Arc::new(ArcSwap::from_pointee(load_server_config(files)?));
                spawn_reloader(files.clone(), Arc::downgrade(&config));
                Some(config)
            }
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(ReceiverStream::new(rx))
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ArcSwap<ServerConfig>>>,
    tx: mpsc::Sender<Result<Conn, io::Error>>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small request/response messages: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        match &tls {
            None => {
                let conn = Conn {
                    io: ConnIo::Plain(stream),
                    info: PeerInfo {
                        remote_addr: Some(remote),
                        peer: Peer::Plaintext,
                    },
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
            Some(config) => {
                let acceptor = TlsAcceptor::from(config.load_full());
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "gRPC TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "gRPC TLS handshake timed out");
                            return;
                        }
                    };
                    let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        Some(leaf) => Peer::Certificate(common_name(leaf)),
                        None => Peer::NoCertificate,
                    };
                    let conn = Conn {
                        io: ConnIo::Tls(Box::new(tls)),
                        info: PeerInfo {
                            remote_addr: Some(remote),
                            peer,
                        },
                    };
                    let _ = tx.send(Ok(conn)).await;
                });
            }
        }
    }
}

fn load_err(path: &Path, reason: impl fmt::Display) -> SecurityError {
    SecurityError::Load {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let pem = std::fs::read(path).map_err(|e| load_err(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_err(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(load_err(path, "no certificate"));
    }
    Ok(certs)
}

/// The rustls server configuration of `files`: the serving certificate, client certificates verified
/// against the client CA but optional at the TLS layer (so that a call without one is answered with
/// UNAUTHENTICATED, and health works without one), HTTP/2 only.
pub fn load_server_config(files: &TlsFiles) -> Result<ServerConfig, SecurityError> {
    let chain = read_certs(&files.cert)?;
    let key_pem = std::fs::read(&files.key).map_err(|e| load_err(&files.key, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| load_err(&files.key, "no usable private key (PEM PKCS#8, PKCS#1 or SEC1)"))?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| load_err(&files.client_ca, format!("not a CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| SecurityError::Rustls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SecurityError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| SecurityError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Size and modification time of each file, to notice a change.
fn stamps(files: &TlsFiles) -> Vec<Option<(u64, SystemTime)>> {
    [&files.cert, &files.key, &files.client_ca]
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// Re-reads `files` every [`RELOAD_INTERVAL`] while `config` is alive; a failed reload keeps the old one.
fn spawn_reloader(files: TlsFiles, config: Weak<ArcSwap<ServerConfig>>) {
    tokio::spawn(async move {
        let mut seen = stamps(&files);
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let Some(config) = config.upgrade() else {
                return;
            };
            let now = stamps(&files);
            if now == seen {
                continue;
            }
            match load_server_config(&files) {
                Ok(fresh) => {
                    config.store(Arc::new(fresh));
                    seen = now;
                    tracing::info!(cert = %files.cert.display(), "reloaded the gRPC TLS certificates");
                }
                Err(e) => tracing::warn!(error = %e, "keeping the previous gRPC TLS certificates"),
            }
        }
    });
}

// === AuthLayer ===

/// Enforces an [`AllowList`] on every call, before the service sees it.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    allow: Arc<AllowList>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            allow: self.allow.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    allow: Arc<AllowList>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<future::Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .map_or(&Peer::NoCertificate, |info| &info.peer);
        match self.allow.check(request.uri().path(), peer) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(status) => {
                tracing::debug!(path = request.uri().path(), code = ?status.code(), "gRPC call refused");
                Either::Left(future::ready(Ok(status.into_http())))
            }
        }
    }
}

// === client ===

/// A gRPC client's TLS settings: the CA that signed the server's certificate and, normally, the client's
/// own certificate and key (its identity). `Debug` does not print the key.
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// From PEM text: the server's CA and optionally the client certificate and key.
    pub fn from_pem(ca_pem: impl Into<Vec<u8>>, identity: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            identity,
        }
    }

    /// From PEM files.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> io::Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display())))
        };
        Ok(Self::from_pem(read(ca)?, Some((read(cert)?, read(key)?))))
    }

    fn config(&self) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        config
    }
}

/// Connects to `uri`: over TLS with `tls` (the URI should be `https://…`), in plaintext without.
pub async fn connect(
    uri: impl Into<String>,
    tls: Option<&ClientTls>,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(uri.into())?.tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.config())?;
    }
    endpoint.connect().await
}

/// [`connect`] without waiting for the server: the channel connects on its first call and reconnects
/// (with backoff) after the server restarts, so a client can start before its server.
pub fn connect_lazy(
    uri: impl Into<String>,
    tls: Option<&ClientTls>,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(uri.into())?.tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.config())?;
    }
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(identity: &str) -> Peer {
        Peer::Certificate(Some(Arc::from(identity)))
    }

    #[test]
    fn default_list_gives_each_method_to_its_identities() {
        use identities::*;
        let allow = AllowList::default();
        let all = [
            CONTROLLER,
            GATEWAY,
            WEBHOOK,
            AUTHZ,
            VERIFIER,
            ADMIN,
            "someone-else",
        ];
        let table: [(&str, &[&str]); 9] = [
            ("/ksiam.token.v1.TokenService/IssueToken", &[CONTROLLER]),
            (
                "/ksiam.token.v1.TokenService/VerifyToken",
                &[GATEWAY, AUTHZ, VERIFIER],
            ),
            (
                "/ksiam.token.v1.TokenService/WatchKeys",
                &[GATEWAY, AUTHZ, VERIFIER],
            ),
            (
                "/ksiam.token.v1.TokenService/WatchRevocations",
                &[GATEWAY, AUTHZ, VERIFIER],
            ),
            ("/ksiam.authz.v1.Authorizer/Authorize", &[GATEWAY, WEBHOOK, ADMIN]),
            (
                "/ksiam.authz.v1.Authorizer/AuthorizeBatch",
                &[GATEWAY, WEBHOOK, ADMIN],
            ),
            ("/ksiam.authz.v1.Authorizer/RulesFor", &[ADMIN]),
            ("/ksiam.authz.v1.Authorizer/WhoCan", &[ADMIN]),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                &[ADMIN],
            ),
        ];
        for (path, allowed) in table {
            for id in all {
                let got = allow.check(path, &cert(id));
                if allowed.contains(&id) {
                    assert!(got.is_ok(), "{path} for {id}: {got:?}");
                } else {
                    let status = got.expect_err(path);
                    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{path} for {id}");
                    let method = path.trim_start_matches('/');
                    assert!(
                        status.message().contains(method) && status.message().contains(id),
                        "names the method and identity: {}",
                        status.message()
                    );
                }
            }
        }
    }

    #[test]
    fn unlisted_methods_are_refused_and_health_is_open() {
        let allow = AllowList::default();
        for peer in [Peer::Plaintext, Peer::NoCertificate, cert(identities::ADMIN)] {
            assert!(allow.check("/grpc.health.v1.Health/Check", &peer).is_ok());
            assert!(allow.check("/grpc.health.v1.Health/Watch", &peer).is_ok());
            assert!(
                allow
                    .check("/ksiam.authz.v1.Authorizer/NewMethod", &peer)
                    .is_err()
            );
            assert!(allow.check("/other.Service/Call", &peer).is_err());
            assert!(allow.check("", &peer).is_err());
            assert!(allow.check("/", &peer).is_err());
        }
        // A look-alike of the health service is not the health service.
        assert!(
            allow
                .check("/grpc.health.v1.HealthX/Check", &Peer::NoCertificate)
                .is_err()
        );
    }

    #[test]
    fn no_certificate_is_unauthenticated_and_a_nameless_certificate_is_denied() {
        let allow = AllowList::default();
        let path = "/ksiam.authz.v1.Authorizer/Authorize";
        let status = allow.check(path, &Peer::NoCertificate).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = allow.check(path, &Peer::Certificate(None)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn plaintext_never_reaches_issue_token_rules_for_or_who_can() {
        let allow = AllowList::default();
        for path in [
            "/ksiam.token.v1.TokenService/IssueToken",
            "/ksiam.authz.v1.Authorizer/RulesFor",
            "/ksiam.authz.v1.Authorizer/WhoCan",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            let status = allow.check(path, &Peer::Plaintext).unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{path}");
            assert!(
                status.message().contains("requires an authenticated client"),
                "{}",
                status.message()
            );
        }
        for path in [
            "/ksiam.authz.v1.Authorizer/Authorize",
            "/ksiam.authz.v1.Authorizer/AuthorizeBatch",
            "/ksiam.token.v1.TokenService/VerifyToken",
            "/ksiam.token.v1.TokenService/WatchRevocations",
        ] {
            assert!(allow.check(path, &Peer::Plaintext).is_ok(), "{path}");
        }
        // Even an allow-list entry naming an identity does not open a method to plaintext clients.
        let allow = AllowList::default()
            .with_entries(&["ksiam.token.v1.TokenService/IssueToken=ksiam-controller,ksiam-gateway"])
            .unwrap();
        assert!(
            allow
                .check("/ksiam.token.v1.TokenService/IssueToken", &Peer::Plaintext)
                .is_err()
        );
    }

    #[test]
    fn entries_replace_a_method_and_service_wildcards_apply_to_unlisted_methods() {
        let allow = AllowList::empty()
            .with_entries(&[
                "ksiam.token.v1.TokenService/*=ops",
                "/ksiam.token.v1.TokenService/IssueToken = minter , other",
                "ksiam.authz.v1.Authorizer/WhoCan=",
            ])
            .unwrap();
        let issue = "/ksiam.token.v1.TokenService/IssueToken";
        assert!(allow.check(issue, &cert("minter")).is_ok());
        assert!(allow.check(issue, &cert("other")).is_ok());
        assert!(
            allow.check(issue, &cert("ops")).is_err(),
            "the exact entry wins over `*`"
        );
        assert!(
            allow
                .check("/ksiam.token.v1.TokenService/VerifyToken", &cert("ops"))
                .is_ok()
        );
        assert!(
            allow
                .check("/ksiam.authz.v1.Authorizer/WhoCan", &cert("ops"))
                .is_err()
        );
        // Identities compare exactly: no prefix, case or whitespace games.
        for id in ["Minter", "minter ", "mint", "minter,other", ""] {
            assert!(allow.check(issue, &cert(id)).is_err(), "{id:?}");
        }
    }

    #[test]
    fn bad_entries_are_errors() {
        for bad in [
            "IssueToken=ksiam-controller",
            "ksiam.token.v1.TokenService/IssueToken",
            "ksiam.token.v1.TokenService=ksiam-controller",
            "ksiam.token.v1.TokenService/=x",
            "/=x",
            "a.B/c/d=x",
            "grpc.health.v1.Health/Check=x",
        ] {
            assert!(AllowList::default().with_entries(&[bad]).is_err(), "{bad}");
        }
    }
}
