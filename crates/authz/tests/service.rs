//! The authorizer service in process: a real tonic server and client on 127.0.0.1, and the webhook router
//! driven through tower and over a real listener.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use ksiam_authz::{
    AuthzClient, AuthzService, Metrics, WebhookState, grpc::CacheConfig, metrics::DecisionResult, review_sar,
    serve_grpc, serve_webhooks, webhook_router,
};
use ksiam_proto::authz::v1 as pb;
use ksiam_rbac::{
    Attributes, Authorizer, Mode, PolicyIndex, PolicyStore, Scope,
    model::{Binding, Policy},
};
use ksiam_token::{
    grpc_auth::{AllowList, GrpcSecurity, identities},
    test_pki::TestPki,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const SA: &str = "kubesphere:serviceaccount:default:sample";

use ksiam_api::constants::{AUTHENTICATED_BY_EXTRA, AUTHENTICATED_BY_KSIAM};

/// Seed-like policy: the SA is admin in namespace `default` (RoleBinding) and in workspace `w1`;
/// every member of `system:authenticated` may list tenant clusters (the built-in `authenticated` role).
fn policy() -> Policy {
    serde_json::from_value(json!({
        "roles": [
            {"kind": "Role", "namespace": "default", "name": "admin",
             "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]},
            {"kind": "GlobalRole", "name": "authenticated",
             "rules": [{"verbs": ["list"], "apiGroups": ["tenant.kubesphere.io"], "resources": ["clusters"]},
                       {"verbs": ["GET"], "nonResourceURLs": ["/api/*"]}]},
            {"kind": "WorkspaceRole", "name": "w1-admin",
             "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}
        ],
        "bindings": [
            {"kind": "RoleBinding", "namespace": "default", "name": "sample-admin",
             "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "Role", "name": "admin"},
             "subjects": [{"kind": "ServiceAccount", "apiGroup": "kubesphere.io", "name": "sample"}]},
            {"kind": "GlobalRoleBinding", "name": "authenticated",
             "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "GlobalRole", "name": "authenticated"},
             "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}]},
            {"kind": "WorkspaceRoleBinding", "name": "sample-w1", "workspace": "w1",
             "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "WorkspaceRole", "name": "w1-admin"},
             "subjects": [{"kind": "ServiceAccount", "apiGroup": "kubesphere.io", "name": "sample", "namespace": "default"}]}
        ],
        "namespaces": [{"name": "default"}, {"name": "w1-ns", "workspace": "w1"}]
    }))
    .unwrap()
}

fn service(ready: bool) -> AuthzService {
    let store = Arc::new(PolicyStore::new(PolicyIndex::build(&policy())));
    store.set_ready(ready);
    AuthzService::new(
        store,
        Authorizer::new(Mode::Rbac),
        Arc::new(Metrics::unregistered()),
    )
}

fn pod_attrs<'a>(user: &'a str, groups: &'a [String], verb: &'a str, namespace: &'a str) -> Attributes<'a> {
    Attributes {
        user,
        groups,
        verb,
        api_version: "v1",
        resource: "pods",
        namespace,
        resource_request: true,
        kubernetes_request: true,
        scope: Scope::Namespace,
        ..Default::default()
    }
}

/// A running gRPC server with mutual TLS and the default allow-list, and the CA its clients use.
struct Server {
    uri: String,
    pki: TestPki,
}

impl Server {
    /// A channel presenting a client certificate with common name `identity`.
    async fn channel(&self, identity: &str) -> tonic::transport::Channel {
        ksiam_token::grpc_auth::connect(self.uri.clone(), Some(&self.pki.client(identity)))
            .await
            .unwrap()
    }

    /// The admin client (`ksiam-admin` may call every method).
    async fn admin(&self) -> AuthzClient {
        AuthzClient::connect_with(self.uri.clone(), Some(&self.pki.client(identities::ADMIN)))
            .await
            .unwrap()
    }
}

async fn start(svc: AuthzService) -> (Server, CancellationToken, tokio::task::JoinHandle<()>) {
    let pki = TestPki::new();
    let security = GrpcSecurity::mutual_tls(pki.server.clone(), AllowList::default());
    let (uri, shutdown, task) = start_with(svc, security, "https").await;
    (Server { uri, pki }, shutdown, task)
}

async fn start_with(
    svc: AuthzService,
    security: GrpcSecurity,
    scheme: &str,
) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("{scheme}://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { serve_grpc(listener, svc, &security, stop).await.unwrap() });
    (uri, shutdown, task)
}

/// Health, asked without a client certificate (probes need none).
async fn health(server: &Server, service: &str) -> i32 {
    let channel = ksiam_token::grpc_auth::connect(server.uri.clone(), Some(&server.pki.anonymous()))
        .await
        .unwrap();
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn grpc_authorize_batch_health_and_shutdown() {
    let svc = service(false);
    let store = svc.store().clone();
    let metrics = svc.metrics().clone();
    let (server, shutdown, task) = start(svc).await;
    let client = server.admin().await;

    // Not ready: fail closed, health NOT_SERVING.
    let r = client
        .authorize(&pod_attrs(SA, &[], "get", "default"))
        .await
        .unwrap();
    assert!(!r.allowed);
    assert!(r.reason.contains("not ready"), "{}", r.reason);
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(health(&server, "ksiam.authz.v1.Authorizer").await, not_serving);

    store.set_ready(true);
    // Health follows readiness asynchronously: poll, with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(&server, "ksiam.authz.v1.Authorizer").await != serving {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health not SERVING 10 s after the store became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health(&server, "").await, serving);

    // The not-ready denial was not cached.
    let r = client
        .authorize(&pod_attrs(SA, &[], "get", "default"))
        .await
        .unwrap();
    assert!(r.allowed, "{r:?}");
    assert!(
        r.reason.contains("RoleBinding \"sample-admin/default\""),
        "{}",
        r.reason
    );
    assert_eq!(r.generation, store.load().generation());
    let r = client
        .authorize(&pod_attrs(SA, &[], "get", "other"))
        .await
        .unwrap();
    assert!(!r.allowed);

    // Workspace phase through the namespace label.
    let r = client
        .authorize(&pod_attrs(SA, &[], "delete", "w1-ns"))
        .await
        .unwrap();
    assert!(r.allowed, "{r:?}");

    // Batch: in order, one generation.
    let groups = vec!["system:authenticated".to_owned()];
    let clusters = Attributes {
        user: "alice",
        groups: &groups,
        verb: "list",
        api_group: "tenant.kubesphere.io",
        resource: "clusters",
        resource_request: true,
        scope: Scope::Global,
        ..Default::default()
    };
    let batch = client
        .authorize_batch(&[
            pod_attrs(SA, &[], "get", "default"),
            clusters,
            Attributes {
                user: SA,
                groups: &[],
                ..clusters
            },
        ])
        .await
        .unwrap();
    let allowed: Vec<bool> = batch.decisions.iter().map(|d| d.allowed).collect();
    assert_eq!(
        allowed,
        [true, true, false],
        "an SA without groups cannot list clusters"
    );
    assert!(batch.decisions.iter().all(|d| d.generation == batch.generation));

    // Invalid input.
    let err = client
        .authorize(&Attributes {
            verb: "",
            ..pod_attrs(SA, &[], "get", "default")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ksiam_authz::ClientError::InvalidArgument(m) if m == "attributes.verb is required"),
        "{err}"
    );
    let err = client
        .authorize_batch(&[
            pod_attrs(SA, &[], "get", "default"),
            Attributes {
                namespace: "",
                ..pod_attrs(SA, &[], "get", "default")
            },
        ])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("attributes[1].namespace is required for SCOPE_NAMESPACE"),
        "{err}"
    );
    let status = client
        .grpc()
        .authorize(pb::AuthorizeRequest { attributes: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut bad_scope = ksiam_authz::grpc::attributes_to_proto(&pod_attrs(SA, &[], "get", "default"));
    bad_scope.scope = 42;
    let status = client
        .grpc()
        .authorize(pb::AuthorizeRequest {
            attributes: Some(bad_scope),
        })
        .await
        .unwrap_err();
    assert_eq!(status.message(), "attributes.scope: unknown value 42");
    assert!(metrics.decisions(DecisionResult::Error) >= 3);
    assert!(metrics.decisions(DecisionResult::Allowed) >= 4);

    // RulesFor and WhoCan.
    let rules = client
        .rules_for(pb::RulesForRequest {
            user: SA.into(),
            scope: pb::Scope::Namespace as i32,
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rules.rules.len(), 1);
    assert_eq!(rules.rules[0].binding.as_ref().unwrap().name, "sample-admin");
    assert_eq!(rules.rules[0].role.as_ref().unwrap().namespace, "default");
    let who = client
        .who_can(&pod_attrs("", &[], "delete", "default"))
        .await
        .unwrap();
    let names: Vec<String> = who
        .subjects
        .iter()
        .map(|s| s.subject.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(names, ["sample"]);
    assert_eq!(who.subjects[0].subject.as_ref().unwrap().namespace, "default");
    let err = client
        .grpc()
        .rules_for(pb::RulesForRequest {
            scope: pb::Scope::Cluster as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Shutdown: the server returns.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
}

/// RulesFor and WhoCan are policy oracles: only the admin identity gets them; Authorize is for the
/// gateway, webhook and admin identities; no certificate is UNAUTHENTICATED.
#[tokio::test]
async fn grpc_auth_policy_oracles_only_for_the_admin_identity() {
    let (server, shutdown, _task) = start(service(true)).await;
    let rules = pb::RulesForRequest {
        user: SA.into(),
        scope: pb::Scope::Namespace as i32,
        namespace: "default".into(),
        ..Default::default()
    };
    let a = pod_attrs(SA, &[], "get", "default");
    for id in [
        identities::GATEWAY,
        identities::WEBHOOK,
        identities::CONTROLLER,
        "someone",
    ] {
        let client = AuthzClient::new(server.channel(id).await, CacheConfig::default());
        for (method, result) in [
            ("RulesFor", client.rules_for(rules.clone()).await.map(|_| ())),
            ("WhoCan", client.who_can(&a).await.map(|_| ())),
        ] {
            let Err(ksiam_authz::ClientError::Status(status)) = result else {
                panic!("{id} {method}: {result:?}")
            };
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{id} {method}");
            assert!(
                status
                    .message()
                    .contains(&format!("ksiam.authz.v1.Authorizer/{method}"))
                    && status.message().contains(id),
                "{}",
                status.message()
            );
        }
        let decided = client.authorize(&a).await;
        let may_decide = [identities::GATEWAY, identities::WEBHOOK].contains(&id);
        assert_eq!(decided.is_ok(), may_decide, "{id} Authorize: {decided:?}");
    }
    let admin = server.admin().await;
    assert_eq!(admin.rules_for(rules.clone()).await.unwrap().rules.len(), 1);
    assert_eq!(admin.who_can(&a).await.unwrap().subjects.len(), 1);

    let anonymous = AuthzClient::connect_with(server.uri.clone(), Some(&server.pki.anonymous()))
        .await
        .unwrap();
    let Err(ksiam_authz::ClientError::Status(status)) = anonymous.authorize(&a).await else {
        panic!("no client certificate was not refused")
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let foreign = match AuthzClient::connect_with(
        server.uri.clone(),
        Some(&server.pki.foreign_client(identities::ADMIN)),
    )
    .await
    {
        Ok(client) => client.who_can(&a).await.is_ok(),
        Err(_) => false,
    };
    assert!(!foreign, "an admin certificate from another CA was accepted");
    shutdown.cancel();
}

/// Plaintext on loopback (benchmarks): decisions only; the policy oracles refuse everyone.
#[tokio::test]
async fn grpc_auth_plaintext_loopback_answers_authorize_but_not_the_oracles() {
    let security = GrpcSecurity::insecure_loopback(AllowList::default());
    let (uri, shutdown, _task) = start_with(service(true), security, "http").await;
    let client = AuthzClient::connect(uri).await.unwrap();
    let a = pod_attrs(SA, &[], "get", "default");
    assert!(client.authorize(&a).await.unwrap().allowed);
    assert!(client.authorize_batch(&[a]).await.is_ok());
    let Err(ksiam_authz::ClientError::Status(status)) = client.who_can(&a).await else {
        panic!("WhoCan answered a plaintext client")
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("requires an authenticated client"));
    let refused = client
        .rules_for(pb::RulesForRequest {
            user: SA.into(),
            scope: pb::Scope::Cluster as i32,
            ..Default::default()
        })
        .await;
    assert!(
        matches!(refused, Err(ksiam_authz::ClientError::Status(s)) if s.code() == tonic::Code::PermissionDenied)
    );
    shutdown.cancel();
}

#[tokio::test]
async fn client_cache_is_dropped_when_the_generation_changes() {
    let svc = service(true);
    let store = svc.store().clone();
    let (server, shutdown, _task) = start(svc).await;
    let channel = server.channel(identities::GATEWAY).await;
    let cached = AuthzClient::new(
        channel.clone(),
        CacheConfig {
            capacity: 16,
            ttl: Duration::from_secs(3600),
        },
    );
    let other = AuthzClient::new(channel, CacheConfig::default());
    let a = pod_attrs(SA, &[], "get", "default");
    assert!(cached.authorize(&a).await.unwrap().allowed);

    // Revoke: the cached client keeps answering from its cache…
    let binding: Binding = policy().bindings[0].clone();
    store.update(|idx| idx.remove_binding(&binding.key()));
    let stale = cached.authorize(&a).await.unwrap();
    assert!(stale.allowed, "served from the cache within the ttl");
    // …until any of its responses shows the new generation.
    let fresh = cached.authorize_batch(&[a]).await.unwrap();
    assert!(!fresh.decisions[0].allowed);
    let after = cached.authorize(&a).await.unwrap();
    assert!(!after.allowed, "the cache was dropped");
    assert_eq!(after.generation, store.load().generation());
    assert!(!other.authorize(&a).await.unwrap().allowed);
    shutdown.cancel();
}

async fn call(router: &axum::Router, path: &str, body: Value) -> (StatusCode, Value) {
    call_raw(router, path, body.to_string()).await
}

async fn call_raw(router: &axum::Router, path: &str, body: String) -> (StatusCode, Value) {
    let response = router
        .clone()
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A review of an identity ksiam authenticated (it carries ksiam's `extra` marker).
fn sar(user: &str, groups: &[&str], attrs: Value) -> Value {
    let mut review = sar_native(user, groups, attrs);
    review["spec"]["extra"] = json!({AUTHENTICATED_BY_EXTRA: [AUTHENTICATED_BY_KSIAM]});
    review
}

/// A review of an identity Kubernetes authenticated itself (no ksiam marker).
fn sar_native(user: &str, groups: &[&str], attrs: Value) -> Value {
    let mut spec = json!({"user": user, "groups": groups});
    for (k, v) in attrs.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})
}

fn authenticator() -> (Arc<ksiam_token::Authenticator>, ksiam_token::Issuer) {
    let keys = ksiam_token::KeySet::legacy(b"test-secret");
    (
        Arc::new(ksiam_token::Authenticator::new(keys.clone())),
        ksiam_token::Issuer::new(keys, "kubesphere"),
    )
}

#[tokio::test]
async fn subject_access_review_webhook() {
    let svc = service(true);
    let metrics = svc.metrics().clone();
    let router = webhook_router(WebhookState {
        authz: svc,
        authenticator: None,
    })
    .unwrap();
    let pods = |ns: &str| json!({"resourceAttributes": {"verb": "get", "version": "v1", "resource": "pods", "namespace": ns}});

    let (code, body) = call(
        &router,
        "/authorize",
        sar(SA, &["system:authenticated"], pods("default")),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["status"]["allowed"], true, "{body}");
    assert_eq!(body["kind"], "SubjectAccessReview");
    assert!(
        body["status"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("RBAC: allowed by RoleBinding")
    );

    let (_, body) = call(&router, "/authorize", sar(SA, &[], pods("other"))).await;
    assert_eq!(body["status"]["allowed"], false);
    assert!(
        body["status"].get("denied").is_none(),
        "a denial is NoOpinion for kube-apiserver"
    );

    // kube-apiserver's system:authenticated is dropped for SAs only.
    let clusters = json!({"resourceAttributes": {"verb": "list", "group": "tenant.kubesphere.io", "resource": "clusters"}});
    let (_, body) = call(
        &router,
        "/authorize",
        sar(SA, &["system:authenticated"], clusters.clone()),
    )
    .await;
    assert_eq!(
        body["status"]["allowed"], false,
        "SAs have no groups in KubeSphere: {body}"
    );
    let (_, body) = call(
        &router,
        "/authorize",
        sar("alice", &["system:authenticated"], clusters),
    )
    .await;
    assert_eq!(body["status"]["allowed"], true, "{body}");

    // Non-resource: kube-apiserver's lowercase verb is KubeSphere's uppercase method.
    let nr = json!({"nonResourceAttributes": {"verb": "get", "path": "/api/v1"}});
    let (_, body) = call(
        &router,
        "/authorize",
        sar("alice", &["system:authenticated"], nr.clone()),
    )
    .await;
    assert_eq!(body["status"]["allowed"], true, "{body}");
    let post = json!({"nonResourceAttributes": {"verb": "post", "path": "/api/v1"}});
    let (_, body) = call(
        &router,
        "/authorize",
        sar("alice", &["system:authenticated"], post),
    )
    .await;
    assert_eq!(body["status"]["allowed"], false);

    // Malformed input: 400 with a Kubernetes Status.
    let (code, body) = call_raw(&router, "/authorize", "{not json".into()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        (body["kind"].as_str(), body["code"].as_u64()),
        (Some("Status"), Some(400))
    );
    let mut wrong = sar(SA, &[], pods("default"));
    wrong["apiVersion"] = json!("authorization.k8s.io/v1beta1");
    let (code, body) = call(&router, "/authorize", wrong).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("expected apiVersion"),
        "{body}"
    );
    let (code, body) = call(&router, "/authorize", sar(SA, &[], json!({}))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "spec.resourceAttributes or spec.nonResourceAttributes is required"
    );
    let (code, _) = call(
        &router,
        "/authorize",
        sar(SA, &[], json!({"resourceAttributes": {"verb": 3}})),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(metrics.decisions(DecisionResult::Error) >= 2);

    // No authenticator: no TokenReview route.
    let (code, _) = call(&router, "/authenticate", json!({})).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn not_ready_is_an_evaluation_error_and_unhealthy() {
    let router = webhook_router(WebhookState {
        authz: service(false),
        authenticator: None,
    })
    .unwrap();
    let (_, body) = call(
        &router,
        "/authorize",
        sar(
            SA,
            &[],
            json!({"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}}),
        ),
    )
    .await;
    assert_eq!(body["status"]["allowed"], false);
    assert!(
        body["status"]["evaluationError"]
            .as_str()
            .unwrap()
            .contains("not ready")
    );
    let response = router
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn token_review_webhook() {
    let (authn, issuer) = authenticator();
    let router = webhook_router(WebhookState {
        authz: service(true),
        authenticator: Some(authn),
    })
    .unwrap();
    let token = issuer
        .issue_sa_token("default", "sample", 1_700_000_000, None)
        .unwrap();
    let review = |token: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let (code, body) = call(&router, "/authenticate", review(&token)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["status"]["authenticated"], true, "{body}");
    assert_eq!(body["status"]["user"]["username"], SA);
    assert_eq!(body["status"]["user"]["groups"], json!([]));
    assert!(!body.to_string().contains(&token), "the token is not echoed");

    let forged = format!("{}x", &token[..token.len() - 1]);
    let (code, body) = call(&router, "/authenticate", review(&forged)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["status"]["authenticated"], false);
    let error = body["status"]["error"].as_str().unwrap();
    assert!(!error.is_empty());
    assert!(
        !body.to_string().contains(&forged),
        "the token is not echoed: {body}"
    );

    let (code, body) = call(
        &router,
        "/authenticate",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "spec.token is required");
}

#[test]
fn kubesphere_subject_access_review() {
    let svc = service(true);
    // Groups are used as given (no dropping), scope from workspace.
    let review = json!({"apiVersion": "iam.kubesphere.io/v1beta1", "kind": "SubjectAccessReview",
        "spec": {"user": SA, "resourceAttributes": {"verb": "delete", "resource": "members", "workspace": "w1"}}});
    let out = review_sar(&svc, review).unwrap();
    assert_eq!(out["status"]["allowed"], true, "{out}");
    assert_eq!(out["status"]["denied"], false);
    let list = json!({"kind": "SubjectAccessReviewList", "items": [
        {"spec": {"user": SA, "resourceAttributes": {"verb": "list", "group": "tenant.kubesphere.io", "resource": "clusters", "resourceScope": "Global"}}},
        {"spec": {"user": SA, "groups": ["system:authenticated"], "resourceAttributes": {"verb": "list", "group": "tenant.kubesphere.io", "resource": "clusters", "resourceScope": "Global"}}},
        {"spec": {"user": "alice", "groups": ["system:authenticated"], "nonResourceAttributes": {"verb": "get", "path": "/api/v1"}}}
    ]});
    let out = review_sar(&svc, list).unwrap();
    let allowed: Vec<&Value> = out["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["status"]["allowed"])
        .collect();
    assert_eq!(
        allowed,
        [&json!(false), &json!(true), &json!(false)],
        "KubeSphere verbs are used as given"
    );
    let err = review_sar(&svc, json!({"items": [{"spec": {}}]})).unwrap_err();
    assert_eq!(err.to_string(), "items[0].spec.user or spec.groups is required");
}

#[tokio::test]
async fn webhooks_over_a_real_listener() {
    let router = webhook_router(WebhookState {
        authz: service(true),
        authenticator: None,
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_webhooks(listener, router, None, shutdown.clone()));
    let body = sar(
        SA,
        &[],
        json!({"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}}),
    )
    .to_string();
    let request = format!(
        "POST /authorize HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""allowed":true"#), "{response}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Missing certificate files are a clear error.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = webhook_router(WebhookState {
        authz: service(true),
        authenticator: None,
    })
    .unwrap();
    let err = serve_webhooks(
        listener,
        router,
        Some(ksiam_authz::WebhookTls {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
            client_ca: None,
        }),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
}

/// The SubjectAccessReview webhook decides only for identities ksiam authenticated, with the gateway's
/// scopes (global resources at Global scope, a workspace-labelled watch at Workspace scope), and without the
/// gateway's path allow-list.
#[tokio::test]
async fn subject_access_review_webhook_boundary() {
    let policy: Policy = serde_json::from_value(json!({
        "roles": [
            {"kind": "ClusterRole", "name": "cluster-viewer",
             "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"]}]},
            {"kind": "GlobalRole", "name": "authenticated",
             "rules": [{"verbs": ["list"], "apiGroups": ["iam.kubesphere.io"], "resources": ["users"]}]},
            {"kind": "WorkspaceRole", "name": "w1-viewer",
             "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"]}]}
        ],
        "bindings": [
            {"kind": "ClusterRoleBinding", "name": "bob-viewer",
             "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "ClusterRole", "name": "cluster-viewer"},
             "subjects": [{"kind": "User", "apiGroup": "iam.kubesphere.io", "name": "bob"}]},
            {"kind": "GlobalRoleBinding", "name": "authenticated",
             "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "GlobalRole", "name": "authenticated"},
             "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}]},
            {"kind": "WorkspaceRoleBinding", "name": "carol-w1", "workspace": "w1",
             "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "WorkspaceRole", "name": "w1-viewer"},
             "subjects": [{"kind": "User", "apiGroup": "iam.kubesphere.io", "name": "carol"}]}
        ],
        "namespaces": [{"name": "w1-ns", "workspace": "w1"}]
    }))
    .unwrap();
    let store = Arc::new(PolicyStore::new(PolicyIndex::build(&policy)));
    store.set_ready(true);
    let svc = AuthzService::new(
        store,
        Authorizer::new(Mode::Rbac),
        Arc::new(Metrics::unregistered()),
    );
    let router = webhook_router(WebhookState {
        authz: svc,
        authenticator: None,
    })
    .unwrap();
    let allowed = |body: &Value| body["status"]["allowed"] == true;
    let users = json!({"resourceAttributes": {"verb": "list", "group": "iam.kubesphere.io", "version": "v1beta1", "resource": "users"}});

    // (a) A Kubernetes identity in system:authenticated (a Pod's own token) does not get KubeSphere's
    // `authenticated` role: ksiam has no opinion on it.
    let pod_sa = "system:serviceaccount:default:default";
    let (_, body) = call(
        &router,
        "/authorize",
        sar_native(
            pod_sa,
            &["system:serviceaccounts", "system:authenticated"],
            users.clone(),
        ),
    )
    .await;
    assert!(!allowed(&body), "{body}");
    assert!(
        body["status"].get("denied").is_none(),
        "no opinion, not a denial: {body}"
    );
    assert!(
        body["status"]["reason"].as_str().unwrap().contains("no opinion"),
        "{body}"
    );
    // The same group with ksiam's marker is KubeSphere's `authenticated`.
    let (_, body) = call(
        &router,
        "/authorize",
        sar("alice", &["system:authenticated"], users.clone()),
    )
    .await;
    assert!(allowed(&body), "{body}");
    // A marker with another value is not ksiam's.
    let mut forged = sar_native("alice", &["system:authenticated"], users.clone());
    forged["spec"]["extra"] = json!({AUTHENTICATED_BY_EXTRA: ["someone-else"]});
    let (_, body) = call(&router, "/authorize", forged).await;
    assert!(!allowed(&body), "{body}");

    // (b) Global resources are judged at Global scope: a cluster viewer cannot list Users.
    let (_, body) = call(&router, "/authorize", sar("bob", &[], users.clone())).await;
    assert!(!allowed(&body), "cluster-viewer must not list iam users: {body}");
    let pods = json!({"resourceAttributes": {"verb": "list", "version": "v1", "resource": "pods"}});
    let (_, body) = call(&router, "/authorize", sar("bob", &[], pods)).await;
    assert!(allowed(&body), "{body}");

    // (c) No path allow-list for kube-apiserver's own paths.
    for path in ["/metrics", "/openapi/v2", "/version", "/healthz"] {
        let nr = json!({"nonResourceAttributes": {"verb": "get", "path": path}});
        let (_, body) = call(
            &router,
            "/authorize",
            sar("system:anonymous", &["system:unauthenticated"], nr),
        )
        .await;
        assert!(!allowed(&body), "{path}: {body}");
    }

    // A watch whose label selector names one workspace is at that workspace's scope, as in the gateway.
    let watch = |selector: Value| json!({"resourceAttributes": {"verb": "watch", "version": "v1", "resource": "namespaces", "labelSelector": selector}});
    for selector in [
        json!({"requirements": [{"key": "kubesphere.io/workspace", "operator": "In", "values": ["w1"]}]}),
        json!({"rawSelector": "kubesphere.io/workspace=w1"}),
    ] {
        let (_, body) = call(&router, "/authorize", sar("carol", &[], watch(selector.clone()))).await;
        assert!(allowed(&body), "{selector}: {body}");
    }
    for selector in [
        json!({}),
        json!({"requirements": [{"key": "kubesphere.io/workspace", "operator": "NotIn", "values": ["w1"]}]}),
        json!({"requirements": [{"key": "kubesphere.io/workspace", "operator": "In", "values": ["w1", "w2"]}]}),
        json!({"requirements": [
            {"key": "kubesphere.io/workspace", "operator": "In", "values": ["w1"]},
            {"key": "x", "operator": "Exists"}]}),
        json!({"rawSelector": "kubesphere.io/workspace=w1,x"}),
    ] {
        let (_, body) = call(&router, "/authorize", sar("carol", &[], watch(selector.clone()))).await;
        assert!(!allowed(&body), "{selector}: {body}");
    }
}

/// (d) kube-apiserver's webhooks refuse to run in AlwaysAllow mode.
#[test]
fn webhooks_refuse_always_allow() {
    let store = Arc::new(PolicyStore::default());
    let svc = AuthzService::new(
        store,
        Authorizer::new(Mode::AlwaysAllow),
        Arc::new(Metrics::unregistered()),
    );
    let err = webhook_router(WebhookState {
        authz: svc,
        authenticator: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("AlwaysAllow"), "{err}");
}
