//! The `ksiam.authz.v1.Authorizer` gRPC service ([`AuthzService`]), [`serve_grpc`] (with gRPC health and
//! reflection), and a typed client with a small decision cache ([`AuthzClient`]).
//!
//! Every response carries the generation of the snapshot it was answered from; AuthorizeBatch answers
//! all its requests from one snapshot. Invalid input is `INVALID_ARGUMENT` with a message naming the
//! field (and, in a batch, its index).
//!
//! Callers are authenticated before the service sees a call ([`ksiam_token::grpc_auth`]): mutual TLS and an
//! allow-list per method (by default Authorize/AuthorizeBatch for the gateway, webhook and admin
//! identities, RulesFor/WhoCan, the policy oracles, for the admin identity only).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use ksiam_proto::authz::v1::{
    self as pb,
    authorizer_client::AuthorizerClient,
    authorizer_server::{self, AuthorizerServer},
};
use ksiam_rbac::{
    Attributes, Authorizer, PolicyStore, Scope, Snapshot, Verdict,
    model::Subject,
    review::{self, RuleSource},
    snapshot::CompiledBinding,
};
use ksiam_token::grpc_auth::{ClientTls, GrpcSecurity};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::Channel};

use crate::metrics::{DecisionResult, Metrics};

// === conversions ===

/// The model scope of a proto scope.
pub fn scope_from_proto(s: pb::Scope) -> Scope {
    match s {
        pb::Scope::None => Scope::None,
        pb::Scope::Global => Scope::Global,
        pb::Scope::Cluster => Scope::Cluster,
        pb::Scope::Workspace => Scope::Workspace,
        pb::Scope::Namespace => Scope::Namespace,
    }
}

/// The proto scope of a model scope.
pub fn scope_to_proto(s: Scope) -> pb::Scope {
    match s {
        Scope::None => pb::Scope::None,
        Scope::Global => pb::Scope::Global,
        Scope::Cluster => pb::Scope::Cluster,
        Scope::Workspace => pb::Scope::Workspace,
        Scope::Namespace => pb::Scope::Namespace,
    }
}

/// The proto form of decision attributes.
pub fn attributes_to_proto(a: &Attributes<'_>) -> pb::Attributes {
    pb::Attributes {
        user: a.user.to_owned(),
        groups: a.groups.to_vec(),
        verb: a.verb.to_owned(),
        api_group: a.api_group.to_owned(),
        api_version: a.api_version.to_owned(),
        resource: a.resource.to_owned(),
        subresource: a.subresource.to_owned(),
        name: a.name.to_owned(),
        namespace: a.namespace.to_owned(),
        workspace: a.workspace.to_owned(),
        cluster: a.cluster.to_owned(),
        resource_request: a.resource_request,
        kubernetes_request: a.kubernetes_request,
        path: a.path.to_owned(),
        scope: scope_to_proto(a.scope) as i32,
    }
}

fn parse_scope(value: i32) -> Result<Scope, String> {
    pb::Scope::try_from(value)
        .map(scope_from_proto)
        .map_err(|_| format!("scope: unknown value {value}"))
}

/// Checks `p` and borrows it as decision attributes. `need_user`: Authorize needs a user, WhoCan does not.
pub fn attributes_from_proto(p: &pb::Attributes, need_user: bool) -> Result<Attributes<'_>, String> {
    let scope = parse_scope(p.scope)?;
    if need_user && p.user.is_empty() {
        return Err("user is required".into());
    }
    if p.verb.is_empty() {
        return Err("verb is required".into());
    }
    if p.resource_request {
        if p.resource.is_empty() {
            return Err("resource is required for a resource request".into());
        }
        match scope {
            Scope::None => return Err("scope is required for a resource request".into()),
            Scope::Namespace if p.namespace.is_empty() => {
                return Err("namespace is required for SCOPE_NAMESPACE".into());
            }
            Scope::Workspace if p.workspace.is_empty() => {
                return Err("workspace is required for SCOPE_WORKSPACE".into());
            }
            _ => {}
        }
    } else if p.path.is_empty() {
        return Err("path is required for a non-resource request".into());
    }
    Ok(Attributes {
        user: &p.user,
        groups: &p.groups,
        verb: &p.verb,
        api_group: &p.api_group,
        api_version: &p.api_version,
        resource: &p.resource,
        subresource: &p.subresource,
        name: &p.name,
        namespace: &p.namespace,
        workspace: &p.workspace,
        cluster: &p.cluster,
        resource_request: p.resource_request,
        kubernetes_request: p.kubernetes_request,
        path: &p.path,
        scope,
    })
}

fn binding_ref(b: &CompiledBinding) -> pb::BindingRef {
    pb::BindingRef {
        kind: b.kind.as_str().to_owned(),
        name: b.name.to_string(),
        namespace: b.namespace.to_string(),
        workspace: b.workspace.as_deref().unwrap_or_default().to_owned(),
    }
}

fn rule_source(r: &RuleSource) -> pb::RuleSource {
    pb::RuleSource {
        rule: Some(pb::PolicyRule {
            verbs: r.rule.verbs.clone(),
            api_groups: r.rule.api_groups.clone(),
            resources: r.rule.resources.clone(),
            resource_names: r.rule.resource_names.clone(),
            non_resource_urls: r.rule.non_resource_urls.clone(),
        }),
        binding: Some(binding_ref(&r.binding)),
        role: Some(pb::RoleRef {
            kind: r.role.kind.as_str().to_owned(),
            name: r.role.name.to_string(),
            namespace: r.role.namespace.to_string(),
        }),
    }
}

fn subject_to_proto(s: &Subject) -> pb::Subject {
    pb::Subject {
        kind: s.kind.clone(),
        api_group: s.api_group.clone(),
        name: s.name.clone(),
        namespace: s.namespace.clone(),
    }
}

// === service ===

/// The authorizer service over a [`PolicyStore`]. Cheap to clone.
#[derive(Clone)]
pub struct AuthzService {
    store: Arc<PolicyStore>,
    authorizer: Authorizer,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AuthzService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzService")
            .field("mode", &self.authorizer.mode())
            .field("ready", &self.store.is_ready())
            .finish()
    }
}

impl AuthzService {
    /// A service deciding with `authorizer` (its mode) on `store`.
    pub fn new(store: Arc<PolicyStore>, authorizer: Authorizer, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            authorizer,
            metrics,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    /// The authorizer (mode).
    pub fn authorizer(&self) -> Authorizer {
        self.authorizer
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decides `a` on `snapshot`, recording the decision in the metrics.
    pub fn decide_on(&self, snapshot: &Snapshot, ready: bool, a: &Attributes<'_>) -> Verdict {
        let started = Instant::now();
        self.recorded(self.authorizer.decide_on(snapshot, ready, a), started)
    }

    fn recorded(&self, verdict: Verdict, started: Instant) -> Verdict {
        let result = if verdict.allowed() {
            DecisionResult::Allowed
        } else {
            DecisionResult::Denied
        };
        self.metrics.decision(result, started.elapsed());
        verdict
    }

    /// Decides with RBAC alone, whatever the mode (never `AlwaysAllow`, never the path allow-list): for
    /// kube-apiserver's SubjectAccessReviews. `AlwaysDeny` still denies.
    pub fn decide_rbac_on(&self, snapshot: &Snapshot, ready: bool, a: &Attributes<'_>) -> Verdict {
        let started = Instant::now();
        let verdict = if self.authorizer.mode() == ksiam_rbac::Mode::AlwaysDeny {
            Verdict::AlwaysDeny
        } else if !ready {
            Verdict::Rbac(ksiam_rbac::Decision::Deny(ksiam_rbac::Denial {
                not_ready: true,
                errors: Vec::new(),
            }))
        } else {
            Verdict::Rbac(snapshot.decide(a))
        };
        self.recorded(verdict, started)
    }

    fn invalid(&self, message: String) -> Status {
        self.metrics.decision(DecisionResult::Error, Duration::ZERO);
        Status::invalid_argument(message)
    }

    /// The tonic service to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> AuthorizerServer<Self> {
        AuthorizerServer::new(self)
    }
}

#[tonic::async_trait]
impl authorizer_server::Authorizer for AuthzService {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let request = request.into_inner();
        let Some(p) = request.attributes.as_ref() else {
            return Err(self.invalid("attributes is required".into()));
        };
        let a = attributes_from_proto(p, true).map_err(|e| self.invalid(format!("attributes.{e}")))?;
        let snapshot = self.store.load();
        let verdict = self.decide_on(&snapshot, self.store.is_ready(), &a);
        Ok(Response::new(pb::AuthorizeResponse {
            allowed: verdict.allowed(),
            reason: verdict.reason(&a),
            generation: snapshot.generation(),
        }))
    }

    async fn authorize_batch(
        &self,
        request: Request<pb::AuthorizeBatchRequest>,
    ) -> Result<Response<pb::AuthorizeBatchResponse>, Status> {
        let request = request.into_inner();
        let attrs = request
            .attributes
            .iter()
            .enumerate()
            .map(|(i, p)| attributes_from_proto(p, true).map_err(|e| format!("attributes[{i}].{e}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(e))?;
        let snapshot = self.store.load();
        let ready = self.store.is_ready();
        let decisions = attrs
            .iter()
            .map(|a| {
                let verdict = self.decide_on(&snapshot, ready, a);
                pb::AuthorizeResponse {
                    allowed: verdict.allowed(),
                    reason: verdict.reason(a),
                    generation: snapshot.generation(),
                }
            })
            .collect();
        Ok(Response::new(pb::AuthorizeBatchResponse {
            decisions,
            generation: snapshot.generation(),
        }))
    }

    async fn rules_for(
        &self,
        request: Request<pb::RulesForRequest>,
    ) -> Result<Response<pb::RulesForResponse>, Status> {
        let r = request.into_inner();
        let scope = parse_scope(r.scope).map_err(Status::invalid_argument)?;
        if r.user.is_empty() && r.groups.is_empty() {
            return Err(Status::invalid_argument("user or groups is required"));
        }
        match scope {
            Scope::Namespace if r.namespace.is_empty() => {
                return Err(Status::invalid_argument(
                    "namespace is required for SCOPE_NAMESPACE",
                ));
            }
            Scope::Workspace if r.workspace.is_empty() => {
                return Err(Status::invalid_argument(
                    "workspace is required for SCOPE_WORKSPACE",
                ));
            }
            _ => {}
        }
        let snapshot = self.store.load();
        let (rules, mut errors) =
            review::rules_for(&snapshot, &r.user, &r.groups, scope, &r.namespace, &r.workspace);
        if !self.store.is_ready() {
            errors.insert(0, "authorizer is not ready: policy not synced yet".into());
        }
        Ok(Response::new(pb::RulesForResponse {
            rules: rules.iter().map(rule_source).collect(),
            errors,
            generation: snapshot.generation(),
        }))
    }

    async fn who_can(
        &self,
        request: Request<pb::WhoCanRequest>,
    ) -> Result<Response<pb::WhoCanResponse>, Status> {
        let request = request.into_inner();
        let Some(p) = request.attributes.as_ref() else {
            return Err(Status::invalid_argument("attributes is required"));
        };
        let a = attributes_from_proto(p, false)
            .map_err(|e| Status::invalid_argument(format!("attributes.{e}")))?;
        let snapshot = self.store.load();
        let (subjects, mut errors) = review::who_can(&snapshot, &a);
        if !self.store.is_ready() {
            errors.insert(0, "authorizer is not ready: policy not synced yet".into());
        }
        Ok(Response::new(pb::WhoCanResponse {
            subjects: subjects
                .iter()
                .map(|g| pb::SubjectGrant {
                    subject: Some(subject_to_proto(&g.subject)),
                    bindings: g.bindings.iter().map(|b| binding_ref(b)).collect(),
                })
                .collect(),
            errors,
            generation: snapshot.generation(),
        }))
    }
}

// === serve ===

/// Why [`serve_grpc`] stopped (the token crate's: both gRPC servers are served the same way).
pub use ksiam_token::grpc::ServeError;

/// How long [`serve_grpc`] lets in-flight calls finish after shutdown before dropping connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `service` on `listener` with `grpc.health.v1.Health` and `grpc.reflection.v1.ServerReflection`
/// until `shutdown` is cancelled, admitting calls as `security` says (health is open to every client,
/// reflection follows the allow-list). Health (the server, `""`, and `ksiam.authz.v1.Authorizer`) is
/// SERVING only while the store is ready; after shutdown it turns NOT_SERVING and in-flight calls get
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve_grpc(
    listener: TcpListener,
    service: AuthzService,
    security: &GrpcSecurity,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_grpc_with_grace(listener, service, security, shutdown, SHUTDOWN_GRACE).await
}

async fn serve_grpc_with_grace(
    listener: TcpListener,
    service: AuthzService,
    security: &GrpcSecurity,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), ServeError> {
    let store = service.store.clone();
    ksiam_token::grpc::serve_service(
        listener,
        service.into_server(),
        pb::FILE_DESCRIPTOR_SET,
        security,
        Box::new(move || store.is_ready()),
        shutdown.cancelled_owned(),
        grace,
    )
    .await
}

// === client ===

/// Why an [`AuthzClient`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is invalid or the connection failed.
    #[error("connecting to the authorizer: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// The service rejected the input.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// Any other gRPC status.
    #[error("authorizer answered {}: {}", .0.code(), .0.message())]
    Status(#[source] Box<Status>),
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        match status.code() {
            tonic::Code::InvalidArgument => Self::InvalidArgument(status.message().to_owned()),
            _ => Self::Status(Box::new(status)),
        }
    }
}

/// Settings of the [`AuthzClient`] decision cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// How many decisions are kept (0 disables the cache). When full, the cache is cleared.
    pub capacity: usize,
    /// How long a decision is reused at most.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 4096,
            ttl: Duration::from_secs(1),
        }
    }
}

#[derive(Default)]
struct Cache {
    generation: Option<u64>,
    entries: HashMap<Vec<u8>, (Instant, pb::AuthorizeResponse)>,
}

impl Cache {
    /// Forgets everything when `generation` differs from the one the entries were answered from (newer,
    /// or older after a service restart).
    fn observe(&mut self, generation: u64) {
        if self.generation != Some(generation) {
            self.entries.clear();
            self.generation = Some(generation);
        }
    }
}

/// A typed client for a remote `ksiam.authz.v1.Authorizer`, with a small cache of Authorize decisions.
///
/// The cache is keyed by the full attributes (user, groups and request). An entry is dropped when any
/// response shows a different snapshot generation than the one it was answered from, and in any case
/// after [`CacheConfig::ttl`]. So a cached decision is at most `ttl` (default 1 s) older than the policy
/// the service held when it answered, plus the service's own watch delay; calls that bypass the cache
/// (batches, reviews) refresh the generation sooner. "Not ready" denials are never cached.
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct AuthzClient {
    inner: AuthorizerClient<Channel>,
    cache: Arc<Mutex<Cache>>,
    config: CacheConfig,
}

impl std::fmt::Debug for AuthzClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzClient")
            .field("cache", &self.config)
            .finish()
    }
}

impl AuthzClient {
    /// Connects to `uri` in plaintext (for example `http://127.0.0.1:9091`: a server in insecure loopback
    /// mode, which answers only Authorize and AuthorizeBatch) with the default cache.
    pub async fn connect(uri: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(uri, None).await
    }

    /// Connects to `uri` (`https://…`) with the client identity and server CA of `tls` (plaintext without),
    /// with the default cache.
    pub async fn connect_with(uri: impl Into<String>, tls: Option<&ClientTls>) -> Result<Self, ClientError> {
        let channel = ksiam_token::grpc_auth::connect(uri, tls)
            .await
            .map_err(ClientError::Connect)?;
        Ok(Self::new(channel, CacheConfig::default()))
    }

    /// A client over an existing channel.
    pub fn new(channel: Channel, config: CacheConfig) -> Self {
        Self {
            inner: AuthorizerClient::new(channel),
            cache: Arc::default(),
            config,
        }
    }

    fn observe(&self, generation: u64) {
        self.cache.lock().observe(generation);
    }

    /// Decides one request (from the cache when possible).
    pub async fn authorize(&self, a: &Attributes<'_>) -> Result<pb::AuthorizeResponse, ClientError> {
        let attrs = attributes_to_proto(a);
        let key = (self.config.capacity > 0).then(|| attrs.encode_to_vec());
        if let Some(key) = &key
            && let Some((at, hit)) = self.cache.lock().entries.get(key)
            && at.elapsed() < self.config.ttl
        {
            return Ok(hit.clone());
        }
        let response = self
            .inner
            .clone()
            .authorize(pb::AuthorizeRequest {
                attributes: Some(attrs),
            })
            .await?
            .into_inner();
        let mut cache = self.cache.lock();
        cache.observe(response.generation);
        if let Some(key) = key
            && !(response.reason.starts_with("authorizer is not ready"))
        {
            if cache.entries.len() >= self.config.capacity {
                cache.entries.clear();
            }
            cache.entries.insert(key, (Instant::now(), response.clone()));
        }
        Ok(response)
    }

    /// Decides several requests from one snapshot (never cached).
    pub async fn authorize_batch(
        &self,
        attrs: &[Attributes<'_>],
    ) -> Result<pb::AuthorizeBatchResponse, ClientError> {
        let response = self
            .inner
            .clone()
            .authorize_batch(pb::AuthorizeBatchRequest {
                attributes: attrs.iter().map(attributes_to_proto).collect(),
            })
            .await?
            .into_inner();
        self.observe(response.generation);
        Ok(response)
    }

    /// The rules a user holds in a scope.
    pub async fn rules_for(&self, request: pb::RulesForRequest) -> Result<pb::RulesForResponse, ClientError> {
        let response = self.inner.clone().rules_for(request).await?.into_inner();
        self.observe(response.generation);
        Ok(response)
    }

    /// Who may make a request (`a.user` and `a.groups` are ignored).
    pub async fn who_can(&self, a: &Attributes<'_>) -> Result<pb::WhoCanResponse, ClientError> {
        let response = self
            .inner
            .clone()
            .who_can(pb::WhoCanRequest {
                attributes: Some(attributes_to_proto(a)),
            })
            .await?
            .into_inner();
        self.observe(response.generation);
        Ok(response)
    }

    /// The generated client.
    pub fn grpc(&self) -> AuthorizerClient<Channel> {
        self.inner.clone()
    }
}
