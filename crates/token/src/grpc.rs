//! The `ksiam.token.v1.TokenService` gRPC server ([`TokenService`]), a [`serve`] helper that adds gRPC
//! health and reflection, and a typed client ([`TokenClient`]).
//!
//! ```text
//!  set_keys / update_keys / rotate ──► ArcSwap<Keys> ─────────────► IssueToken, VerifyToken
//!                                  └─► watch<KeysState> ──────────► WatchKeys (one task per stream)
//!  hold / release ──► LiveTokens (is_live) ───────────────────────► VerifyToken (when enforcing)
//!                 └─► LiveIds (same data, as a persistent set)
//!                        └─► watch<LiveSnapshot> ─────────────────► WatchRevocations (one task per stream,
//!                                                                    diffing against what it last sent)
//! ```
//!
//! Streams are fed from `tokio::sync::watch` channels, so a slow subscriber never holds up a writer: it
//! skips intermediate states and receives the difference between what it saw last and the current state.
//! Tokens appear only in `IssueTokenResponse.token`; no status message, log line or `Debug` output here
//! contains one.
//!
//! Who may call what is decided before the service sees a call ([`crate::grpc_auth`]): mutual TLS and an
//! allow-list per method (by default only `ksiam-controller` may IssueToken).

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use ksiam_proto::token::v1::{
    self as pb,
    token_service_client::TokenServiceClient,
    token_service_server::{self, TokenServiceServer},
};
use parking_lot::Mutex;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, watch},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Response, Status,
    codegen::BoxStream,
    transport::{Channel, Server},
};

use crate::{
    Error, Issuer, Key, KeySet, LiveTokens, VerifiedUser, Verifier,
    grpc_auth::{ClientTls, GrpcSecurity, SecurityError},
    parse_sa_username, sa_username, token_id,
};

/// Events a slow watcher may have queued before its stream task waits (and starts coalescing changes).
const STREAM_BUFFER: usize = 8;

/// The token service: issues and verifies tokens over gRPC and streams key and live-token changes.
///
/// Cheap to clone; clones share all state. Change keys with [`TokenService::set_keys`],
/// [`TokenService::update_keys`] or [`TokenService::rotate`], and the live-token set with
/// [`TokenService::hold`] and [`TokenService::release`]: each notifies the matching watchers.
#[derive(Clone)]
pub struct TokenService {
    shared: Arc<Shared>,
}

struct Shared {
    issuer_url: String,
    /// Whether VerifyToken rejects tokens that no Secret holds.
    enforce_live: AtomicBool,
    keys: ArcSwap<Keys>,
    /// Serializes key updates; holds the key-set generation.
    keys_generation: Mutex<u64>,
    keys_tx: watch::Sender<Arc<KeysState>>,
    live: Arc<LiveTokens>,
    /// Serializes live-token updates and mirrors `live` as a set that is cheap to snapshot.
    live_ids: Mutex<LiveIds>,
    live_tx: watch::Sender<Arc<LiveSnapshot>>,
    /// Set once by [`TokenService::close_streams`]: every watch stream ends.
    closing: watch::Sender<bool>,
    /// The `iat` of each issued token: strictly increasing per ServiceAccount.
    iat: crate::UniqueIat,
}

/// The key set with the issuer and verifier built from it.
struct Keys {
    set: KeySet,
    issuer: Issuer,
    verifier: Verifier,
}

/// What WatchKeys sends.
struct KeysState {
    generation: u64,
    key_ids: Vec<String>,
    active_key_id: String,
    jwks_json: String,
}

/// The ids of the live tokens, by Secret and as a persistent set (O(1) to snapshot).
#[derive(Default)]
struct LiveIds {
    by_secret: HashMap<String, String>,
    counts: HashMap<String, usize>,
    ids: imbl::OrdSet<String>,
}

/// What WatchRevocations diffs.
struct LiveSnapshot {
    generation: u64,
    ids: imbl::OrdSet<String>,
}

// === impl TokenService ===

impl TokenService {
    /// A service issuing with `keys`' active key and setting `iss` to `issuer_url`. VerifyToken checks
    /// signatures and claims only until [`TokenService::enforce_live_tokens`] turns on revocation.
    pub fn new(keys: KeySet, issuer_url: impl Into<String>) -> Self {
        let issuer_url = issuer_url.into();
        let keys_state = KeysState::new(1, &keys);
        let (keys_tx, _) = watch::channel(Arc::new(keys_state));
        let (live_tx, _) = watch::channel(Arc::new(LiveSnapshot {
            generation: 0,
            ids: imbl::OrdSet::new(),
        }));
        let (closing, _) = watch::channel(false);
        let shared = Shared {
            keys: ArcSwap::from_pointee(Keys::new(keys, &issuer_url)),
            issuer_url,
            enforce_live: AtomicBool::new(false),
            keys_generation: Mutex::new(1),
            keys_tx,
            live: Arc::new(LiveTokens::default()),
            live_ids: Mutex::new(LiveIds::default()),
            live_tx,
            closing,
            iat: crate::UniqueIat::default(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Whether VerifyToken also requires the token to be held by a token Secret (failing with
    /// [`Error::Revoked`] otherwise). Off by default: turn it on once [`TokenService::hold`] has been fed
    /// every existing token Secret, or every token is revoked until then.
    pub fn enforce_live_tokens(&self, enforce: bool) {
        self.shared.enforce_live.store(enforce, Ordering::Relaxed);
    }

    /// The `iss` claim of issued tokens.
    pub fn issuer_url(&self) -> &str {
        &self.shared.issuer_url
    }

    /// The current key set.
    pub fn keys(&self) -> KeySet {
        self.shared.keys.load().set.clone()
    }

    /// Replaces the key set and notifies WatchKeys subscribers.
    pub fn set_keys(&self, keys: KeySet) {
        let mut generation = self.shared.keys_generation.lock();
        *generation += 1;
        self.publish_keys(*generation, keys);
    }

    /// Edits the key set in place and notifies WatchKeys subscribers; on error nothing changes.
    pub fn update_keys(&self, edit: impl FnOnce(&mut KeySet) -> Result<(), Error>) -> Result<(), Error> {
        let mut generation = self.shared.keys_generation.lock();
        let mut keys = self.shared.keys.load().set.clone();
        edit(&mut keys)?;
        *generation += 1;
        self.publish_keys(*generation, keys);
        Ok(())
    }

    /// Rotation step one and two at once: adds `key` as `kid` and makes it the signing key. Tokens signed
    /// by the previous keys keep verifying until those are removed (`update_keys(|k| Ok(k.remove(old)))`).
    pub fn rotate(&self, kid: &str, key: Key) -> Result<(), Error> {
        self.update_keys(|keys| {
            keys.add_key(kid, key);
            keys.activate(Some(kid))
        })
    }

    fn publish_keys(&self, generation: u64, keys: KeySet) {
        let state = KeysState::new(generation, &keys);
        self.shared
            .keys
            .store(Arc::new(Keys::new(keys, &self.shared.issuer_url)));
        self.shared.keys_tx.send_replace(Arc::new(state));
    }

    /// Records that token Secret `secret_key` (`namespace/name`) holds `token`, and notifies
    /// WatchRevocations subscribers if that changed the live set.
    pub fn hold(&self, secret_key: &str, token: &str) {
        let id = token_id(token);
        let mut ids = self.shared.live_ids.lock();
        self.shared.live.hold(secret_key, token);
        if ids.hold(secret_key, id) {
            self.publish_live(&ids);
        }
    }

    /// Records that token Secret `secret_key` is gone or holds no token (revoking its token unless another
    /// Secret holds it too), and notifies WatchRevocations subscribers if that changed anything.
    pub fn release(&self, secret_key: &str) {
        let mut ids = self.shared.live_ids.lock();
        self.shared.live.release(secret_key);
        if ids.release(secret_key) {
            self.publish_live(&ids);
        }
    }

    /// Releases every Secret for which `keep` returns false (after a watch re-list).
    pub fn retain(&self, keep: &mut dyn FnMut(&str) -> bool) {
        let gone: Vec<String> = {
            let ids = self.shared.live_ids.lock();
            ids.by_secret.keys().filter(|k| !keep(k)).cloned().collect()
        };
        for key in gone {
            self.release(&key);
        }
    }

    fn publish_live(&self, ids: &LiveIds) {
        self.shared.live_tx.send_replace(Arc::new(LiveSnapshot {
            generation: self.shared.live.generation(),
            ids: ids.ids.clone(),
        }));
    }

    /// The live-token set, for in-process verifiers (`is_live`, `generation`). Change it only through
    /// [`TokenService::hold`] and [`TokenService::release`], or watchers miss the change.
    pub fn live_tokens(&self) -> &Arc<LiveTokens> {
        &self.shared.live
    }

    /// Ends every open WatchKeys and WatchRevocations stream, and every one opened later, so that a
    /// graceful shutdown is not held up by them. [`serve`] calls this when its shutdown signal fires.
    pub fn close_streams(&self) {
        self.shared.closing.send_replace(true);
    }

    /// The tonic service to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> TokenServiceServer<Self> {
        TokenServiceServer::new(self)
    }

    /// Verifies `token` as VerifyToken does (signature, claims, and liveness when enforced).
    pub fn verify(&self, token: &str) -> Result<VerifiedUser, Error> {
        let user = self.shared.keys.load().verifier.verify(token)?;
        if self.shared.enforce_live.load(Ordering::Relaxed) && !self.shared.live.is_live(&token_id(token)) {
            return Err(Error::Revoked);
        }
        Ok(user)
    }

    /// A stream of `make(state)` for the current state of `rx` and then each change, ending when the
    /// client goes away or [`TokenService::close_streams`] is called.
    fn watch_stream<S, T>(
        &self,
        mut rx: watch::Receiver<S>,
        mut make: impl FnMut(&S) -> T + Send + 'static,
    ) -> BoxStream<T>
    where
        S: Send + Sync + 'static,
        T: Send + 'static,
    {
        let mut closing = self.shared.closing.subscribe();
        let (tx, out) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            loop {
                let event = make(&rx.borrow_and_update());
                tokio::select! {
                    sent = tx.send(Ok(event)) => if sent.is_err() { return },
                    () = closed(&mut closing) => return,
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = closed(&mut closing) => return,
                    () = tx.closed() => return,
                }
            }
        });
        Box::pin(ReceiverStream::new(out))
    }
}

/// Resolves once the closing flag is set (or its sender is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer_url", &self.shared.issuer_url)
            .field("enforce_live", &self.shared.enforce_live.load(Ordering::Relaxed))
            .field("keys_generation", &self.shared.keys_tx.borrow().generation)
            .field("live_generation", &self.shared.live.generation())
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl token_service_server::TokenService for TokenService {
    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let pb::IssueTokenRequest {
            namespace,
            name,
            expires_in_seconds,
        } = request.into_inner();
        if namespace.is_empty() || name.is_empty() {
            return Err(Status::invalid_argument("namespace and name are required"));
        }
        if parse_sa_username(&sa_username(&namespace, &name)) != Some((namespace.as_str(), name.as_str())) {
            return Err(Status::invalid_argument(
                "namespace and name must not contain ':'",
            ));
        }
        // Strictly increasing per ServiceAccount: two tokens of one ServiceAccount never coincide.
        let issued_at = self.shared.iat.next(&format!("{namespace}/{name}"));
        let expires_at = match expires_in_seconds {
            None => None,
            Some(seconds) if seconds > 0 => Some(
                issued_at
                    .checked_add(seconds)
                    .ok_or_else(|| Status::invalid_argument("expires_in_seconds is too large"))?,
            ),
            Some(_) => return Err(Status::invalid_argument("expires_in_seconds must be positive")),
        };
        let keys = self.shared.keys.load();
        let token = keys
            .issuer
            .issue_sa_token(&namespace, &name, issued_at, expires_at)
            .map_err(|err| match err {
                Error::NoSigningKey => Status::failed_precondition(err.to_string()),
                err => Status::internal(err.to_string()),
            })?;
        Ok(Response::new(pb::IssueTokenResponse {
            token_id: token_id(&token),
            token,
            key_id: keys.set.active_key_id().unwrap_or_default().to_owned(),
            issued_at,
            expires_at,
        }))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        let token = request.into_inner().token;
        let user = self
            .verify(&token)
            .map_err(|err| Status::unauthenticated(err.to_string()))?;
        let service_account = user
            .service_account()
            .map(|(namespace, name)| pb::ServiceAccountRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        Ok(Response::new(pb::VerifyTokenResponse {
            service_account,
            token_id: token_id(&token),
            username: user.username,
            token_type: user.token_type,
            expires_at: user.expires_at,
            extra: user
                .extra
                .into_iter()
                .map(|(key, values)| (key, pb::StringList { values }))
                .collect(),
        }))
    }

    type WatchKeysStream = BoxStream<pb::KeySetEvent>;

    async fn watch_keys(
        &self,
        _request: Request<pb::WatchKeysRequest>,
    ) -> Result<Response<Self::WatchKeysStream>, Status> {
        let rx = self.shared.keys_tx.subscribe();
        Ok(Response::new(self.watch_stream(rx, |state: &Arc<KeysState>| {
            pb::KeySetEvent {
                generation: state.generation,
                key_ids: state.key_ids.clone(),
                jwks_json: state.jwks_json.clone(),
                active_key_id: state.active_key_id.clone(),
            }
        })))
    }

    type WatchRevocationsStream = BoxStream<pb::RevocationEvent>;

    async fn watch_revocations(
        &self,
        _request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let rx = self.shared.live_tx.subscribe();
        let mut last: Option<Arc<LiveSnapshot>> = None;
        Ok(Response::new(self.watch_stream(
            rx,
            move |current: &Arc<LiveSnapshot>| {
                let event = revocation_event(last.as_deref(), current);
                last = Some(Arc::clone(current));
                event
            },
        )))
    }
}

/// The event that takes a subscriber from `last` (none yet: a full snapshot) to `current`.
fn revocation_event(last: Option<&LiveSnapshot>, current: &LiveSnapshot) -> pb::RevocationEvent {
    let mut event = pb::RevocationEvent {
        generation: current.generation,
        full: last.is_none(),
        ..Default::default()
    };
    match last {
        None => event.live_token_ids_added = current.ids.iter().cloned().collect(),
        Some(last) => {
            for item in last.ids.diff(&current.ids) {
                match item {
                    imbl::ordset::DiffItem::Add(id) => event.live_token_ids_added.push(id.clone()),
                    imbl::ordset::DiffItem::Remove(id) => event.live_token_ids_removed.push(id.clone()),
                }
            }
        }
    }
    event
}

// === impl Keys ===

impl Keys {
    fn new(set: KeySet, issuer_url: &str) -> Self {
        Self {
            issuer: Issuer::new(set.clone(), issuer_url),
            verifier: Verifier::new(set.clone()),
            set,
        }
    }
}

// === impl KeysState ===

impl KeysState {
    fn new(generation: u64, keys: &KeySet) -> Self {
        let jwks = keys.jwks();
        let has_public_keys = jwks["keys"].as_array().is_some_and(|keys| !keys.is_empty());
        Self {
            generation,
            key_ids: keys.key_ids().map(str::to_owned).collect(),
            active_key_id: keys.active_key_id().unwrap_or_default().to_owned(),
            jwks_json: if has_public_keys {
                jwks.to_string()
            } else {
                String::new()
            },
        }
    }
}

impl crate::HoldTokens for TokenService {
    fn hold(&self, key: &str, token: &str) {
        TokenService::hold(self, key, token);
    }
    fn release(&self, key: &str) {
        TokenService::release(self, key);
    }
    fn retain(&self, keep: &mut dyn FnMut(&str) -> bool) {
        TokenService::retain(self, keep);
    }
}

// === impl LiveIds ===

impl LiveIds {
    /// Mirrors `LiveTokens::hold`; whether anything changed.
    fn hold(&mut self, secret_key: &str, id: String) -> bool {
        if self.by_secret.get(secret_key) == Some(&id) {
            return false;
        }
        self.release(secret_key);
        let count = self.counts.entry(id.clone()).or_default();
        *count += 1;
        if *count == 1 {
            self.ids.insert(id.clone());
        }
        self.by_secret.insert(secret_key.to_owned(), id);
        true
    }

    /// Mirrors `LiveTokens::release`; whether anything changed.
    fn release(&mut self, secret_key: &str) -> bool {
        let Some(id) = self.by_secret.remove(secret_key) else {
            return false;
        };
        if let Some(count) = self.counts.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&id);
                self.ids.remove(&id);
            }
        }
        true
    }
}

// === serve ===

/// Why [`serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("building the gRPC reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The server failed.
    #[error("serving gRPC")]
    Transport(#[source] tonic::transport::Error),
    /// The TLS configuration could not be loaded, or plaintext was asked for off loopback.
    #[error("securing gRPC")]
    Security(#[source] SecurityError),
}

/// How long [`serve`] lets in-flight calls finish after its shutdown signal before it drops the
/// remaining connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `service` on `listener` together with `grpc.health.v1.Health` (the server and
/// `ksiam.token.v1.TokenService` SERVING) and `grpc.reflection.v1.ServerReflection`, until `shutdown`
/// resolves, admitting calls as `security` says (health is open to every client; reflection follows the
/// allow-list). Then health turns NOT_SERVING, the watch streams end ([`TokenService::close_streams`]),
/// and the server finishes in-flight calls and returns, after at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    service: TokenService,
    security: &GrpcSecurity,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with_grace(listener, service, security, shutdown, SHUTDOWN_GRACE).await
}

/// [`serve`] with a chosen grace period: calls still open `grace` after the shutdown signal (a client's
/// `Health/Watch` stream, say) are cut off.
pub async fn serve_with_grace(
    listener: TcpListener,
    service: TokenService,
    security: &GrpcSecurity,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), ServeError> {
    let closer = service.clone();
    serve_service(
        listener,
        service.into_server(),
        pb::FILE_DESCRIPTOR_SET,
        security,
        Box::new(|| true),
        async move {
            shutdown.await;
            closer.close_streams();
        },
        grace,
    )
    .await
}

/// Whether a served service is ready (polled for its health status).
pub type ServiceReady = Box<dyn Fn() -> bool + Send + Sync>;

/// How often [`serve_service`] polls readiness for the health status.
const READINESS_POLL: Duration = Duration::from_millis(200);

/// The one way ksiam serves a gRPC service (the token service, the authorizer): on `listener`, behind
/// `security`'s mutual TLS and allow-list (health open to every client, reflection following the
/// allow-list), with `grpc.health.v1.Health` (the server `""` and the service SERVING while `ready()`)
/// and `grpc.reflection.v1.ServerReflection` over `descriptor_set`. When `shutdown` resolves (after its
/// own clean-up, such as ending watch streams), health turns NOT_SERVING and in-flight calls get `grace`
/// to finish.
#[allow(clippy::too_many_arguments)]
pub async fn serve_service<S>(
    listener: TcpListener,
    service: S,
    descriptor_set: &'static [u8],
    security: &GrpcSecurity,
    ready: ServiceReady,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), ServeError>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let incoming = security.incoming(listener).map_err(ServeError::Security)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let set = |health: tonic_health::server::HealthReporter, serving: bool| async move {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health.set_service_status(S::NAME, status).await;
    };
    let initially = ready();
    set(health.clone(), initially).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let reporter = health.clone();
    let follow = tokio::spawn(async move {
        let mut serving = Some(initially);
        loop {
            let now = ready();
            if serving != Some(now) {
                serving = Some(now);
                set(reporter.clone(), now).await;
            }
            tokio::select! {
                _ = stop_rx.changed() => break,
                () = tokio::time::sleep(READINESS_POLL) => {}
            }
        }
    });
    let (fired, shutdown_fired) = oneshot::channel::<()>();
    let on_shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = follow.await;
        set(health, false).await;
        let _ = fired.send(());
    };
    let server = Server::builder()
        .layer(security.layer())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, on_shutdown);
    let grace_over = async move {
        match shutdown_fired.await {
            Ok(()) => tokio::time::sleep(grace).await,
            // The shutdown future was dropped without firing: the server has stopped by itself.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = server => result.map_err(ServeError::Transport),
        () = grace_over => Ok(()),
    }
}

// === client ===

/// Why a [`TokenClient`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is invalid or the connection failed.
    #[error("connecting to the token service")]
    Connect(#[source] tonic::transport::Error),
    /// The token did not verify; the text is the service's reason (a [`crate::Error`] text).
    #[error("{0}")]
    Unauthenticated(String),
    /// Any other gRPC status (invalid argument, no signing key, unavailable, …).
    #[error("token service answered {}: {}", .0.code(), .0.message())]
    Status(#[source] Box<Status>),
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated => Self::Unauthenticated(status.message().to_owned()),
            _ => Self::Status(Box::new(status)),
        }
    }
}

/// A token issued by a remote token service. `Debug` does not print the token.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Its id (base64url of its SHA-256), as in the live-token set.
    pub token_id: String,
    /// The `kid` header; `None` for the legacy KubeSphere secret.
    pub key_id: Option<String>,
    /// The `iat` claim.
    pub issued_at: i64,
    /// The `exp` claim.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .field("key_id", &self.key_id)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A typed client for a remote `ksiam.token.v1.TokenService`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TokenClient {
    inner: TokenServiceClient<Channel>,
}

impl TokenClient {
    /// Connects to `uri` in plaintext (for example `http://127.0.0.1:9090`: a server in insecure loopback
    /// mode, which refuses IssueToken).
    pub async fn connect(uri: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(uri, None).await
    }

    /// Connects to `uri` (`https://…`) with the client identity and server CA of `tls`, or in plaintext
    /// without.
    pub async fn connect_with(uri: impl Into<String>, tls: Option<&ClientTls>) -> Result<Self, ClientError> {
        let channel = crate::grpc_auth::connect(uri, tls)
            .await
            .map_err(ClientError::Connect)?;
        Ok(Self::new(channel))
    }

    /// A client over an existing channel.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: TokenServiceClient::new(channel),
        }
    }

    /// Issues a token for ServiceAccount `namespace/name`, expiring `expires_in_seconds` from now if set.
    pub async fn issue(
        &self,
        namespace: &str,
        name: &str,
        expires_in_seconds: Option<i64>,
    ) -> Result<IssuedToken, ClientError> {
        let response = self
            .inner
            .clone()
            .issue_token(pb::IssueTokenRequest {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                expires_in_seconds,
            })
            .await?
            .into_inner();
        Ok(IssuedToken {
            token: response.token,
            token_id: response.token_id,
            key_id: Some(response.key_id).filter(|kid| !kid.is_empty()),
            issued_at: response.issued_at,
            expires_at: response.expires_at,
        })
    }

    /// Verifies `token`; a rejected token is [`ClientError::Unauthenticated`] with the reason.
    pub async fn verify(&self, token: &str) -> Result<VerifiedUser, ClientError> {
        let response = self
            .inner
            .clone()
            .verify_token(pb::VerifyTokenRequest {
                token: token.to_owned(),
            })
            .await?
            .into_inner();
        Ok(VerifiedUser {
            username: response.username,
            token_type: response.token_type,
            expires_at: response.expires_at,
            extra: response
                .extra
                .into_iter()
                .map(|(key, list)| (key, list.values))
                .collect(),
        })
    }

    /// The generated client, for the watch streams.
    pub fn grpc(&self) -> TokenServiceClient<Channel> {
        self.inner.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mirror in `LiveIds` must agree with `LiveTokens` on every change, or WatchRevocations
    /// subscribers and in-process `is_live` checks would disagree.
    #[test]
    fn live_ids_mirror_live_tokens_on_every_change() {
        let service = TokenService::new(KeySet::legacy(b"secret"), "iss");
        let tokens: Vec<String> = (0..5).map(|i| format!("token-{i}")).collect();
        let secrets: Vec<String> = (0..7).map(|i| format!("ns/secret-{i}")).collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut published = service.shared.live_tx.subscribe();
        for step in 0..2000 {
            // xorshift: a fixed, reproducible sequence of holds and releases.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let secret = &secrets[(state % 7) as usize];
            let before = service.live_tokens().generation();
            if state.is_multiple_of(3) {
                service.release(secret);
            } else {
                service.hold(secret, &tokens[((state >> 8) % 5) as usize]);
            }
            let changed = service.live_tokens().generation() != before;
            assert_eq!(
                published.has_changed().unwrap(),
                changed,
                "step {step}: notified iff changed"
            );
            let snapshot = Arc::clone(&published.borrow_and_update());
            assert_eq!(
                snapshot.generation,
                service.live_tokens().generation(),
                "step {step}"
            );
            for token in &tokens {
                let id = token_id(token);
                assert_eq!(
                    snapshot.ids.contains(&id),
                    service.live_tokens().is_live(&id),
                    "step {step}"
                );
            }
        }
    }

    #[test]
    fn revocation_events_are_a_snapshot_then_differences() {
        let set = |ids: &[&str]| LiveSnapshot {
            generation: ids.len() as u64,
            ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        };
        let first = revocation_event(None, &set(&["a", "b"]));
        assert!(first.full);
        assert_eq!(first.live_token_ids_added, ["a", "b"]);
        assert!(first.live_token_ids_removed.is_empty());

        let next = revocation_event(Some(&set(&["a", "b"])), &set(&["b", "c", "d"]));
        assert!(!next.full);
        assert_eq!(next.generation, 3);
        assert_eq!(next.live_token_ids_added, ["c", "d"]);
        assert_eq!(next.live_token_ids_removed, ["a"]);

        let same = revocation_event(Some(&set(&["a"])), &set(&["a"]));
        assert!(!same.full && same.live_token_ids_added.is_empty() && same.live_token_ids_removed.is_empty());
    }
}
