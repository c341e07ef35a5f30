//! The gRPC token service over real TCP sockets on 127.0.0.1 with mutual TLS: issue, verify, the two watch
//! streams, health and reflection; and who may call what (client certificates, the allow-list, plaintext
//! on loopback).

#![cfg(feature = "grpc")]

use std::{future::Future, net::SocketAddr, time::Duration};

use ksiam_proto::token::v1 as pb;
use ksiam_token::{
    EcKey, Error, HmacKey, Issuer, Key, KeySet, Verifier,
    grpc::{ClientError, ServeError, TokenClient, TokenService, serve, serve_with_grace},
    grpc_auth::{AllowList, ClientTls, GrpcSecurity, identities},
    token_id,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};

/// The test PKI of the library (feature `test-pki`), compiled into this test; it names `crate::grpc_auth`.
#[path = "../src/test_pki.rs"]
mod test_pki;
mod grpc_auth {
    pub use ksiam_token::grpc_auth::*;
}
use test_pki::TestPki;

/// The identity the service tests call with; the allow-list of [`Running::start`] gives it every method.
const TESTER: &str = "tester";

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const ISSUER: &str = "http://ks-console.kubesphere-system.svc:30880";
/// Upper bound for anything that should happen at once; only reached when a test is failing.
const PATIENCE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    pki: TestPki,
}

impl Running {
    async fn start(service: &TokenService) -> Self {
        Self::start_with(service, None).await
    }

    /// Starts `serve`, or `serve_with_grace` when `grace` is set.
    async fn start_with(service: &TokenService, grace: Option<Duration>) -> Self {
        let pki = TestPki::new();
        let allow = AllowList::default()
            .with_entries(&[
                format!("ksiam.token.v1.TokenService/IssueToken={TESTER}"),
                format!("ksiam.token.v1.TokenService/VerifyToken={TESTER}"),
                format!("ksiam.token.v1.TokenService/WatchKeys={TESTER}"),
                format!("ksiam.token.v1.TokenService/WatchRevocations={TESTER}"),
                format!("grpc.reflection.v1.ServerReflection/*={TESTER}"),
            ])
            .unwrap();
        Self::start_secured(
            service,
            grace,
            GrpcSecurity::mutual_tls(pki.server.clone(), allow),
            pki,
        )
        .await
    }

    async fn start_secured(
        service: &TokenService,
        grace: Option<Duration>,
        security: GrpcSecurity,
        pki: TestPki,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let service = service.clone();
        let task =
            match grace {
                None => tokio::spawn(async move { serve(listener, service, &security, shutdown).await }),
                Some(grace) => tokio::spawn(async move {
                    serve_with_grace(listener, service, &security, shutdown, grace).await
                }),
            };
        Self {
            addr,
            stop: Some(stop),
            task,
            pki,
        }
    }

    fn uri(&self) -> String {
        format!("https://{}", self.addr)
    }

    async fn channel(&self) -> Channel {
        ksiam_token::grpc_auth::connect(self.uri(), Some(&self.pki.client(TESTER)))
            .await
            .unwrap()
    }

    async fn client(&self) -> TokenClient {
        self.client_as(&self.pki.client(TESTER)).await.unwrap()
    }

    async fn client_as(&self, tls: &ClientTls) -> Result<TokenClient, ClientError> {
        TokenClient::connect_with(self.uri(), Some(tls)).await
    }

    /// Signals shutdown and waits for `serve` to return.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = within(&mut self.task).await.unwrap();
        result.unwrap();
    }
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .expect("timed out waiting for the token service")
}

fn legacy_service() -> TokenService {
    TokenService::new(KeySet::legacy(SECRET), ISSUER)
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    within(stream.message())
        .await
        .expect("stream failed")
        .expect("stream ended")
}

#[tokio::test]
async fn a_token_issued_over_grpc_verifies_over_grpc_and_locally_and_is_kubesphere_identical() {
    let service = legacy_service();
    let server = Running::start(&service).await;
    let client = server.client().await;

    let issued = client.issue("default", "sample", None).await.unwrap();
    assert_eq!(issued.key_id, None);
    assert_eq!(issued.expires_at, None);
    assert_eq!(issued.token_id, token_id(&issued.token));
    let expected = Issuer::new(KeySet::legacy(SECRET), ISSUER)
        .issue_sa_token("default", "sample", issued.issued_at, None)
        .unwrap();
    assert_eq!(
        issued.token, expected,
        "byte-identical to a locally issued KubeSphere token"
    );

    let remote = client.verify(&issued.token).await.unwrap();
    let local = Verifier::new(KeySet::legacy(SECRET))
        .verify(&issued.token)
        .unwrap();
    assert_eq!(remote, local);
    assert_eq!(remote.username, "kubesphere:serviceaccount:default:sample");
    assert_eq!(remote.token_type, "static_token");

    let raw = within(client.grpc().verify_token(pb::VerifyTokenRequest {
        token: issued.token.clone(),
    }))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        raw.service_account,
        Some(pb::ServiceAccountRef {
            namespace: "default".to_owned(),
            name: "sample".to_owned()
        })
    );
    assert_eq!(raw.token_id, issued.token_id);
    assert!(
        !format!("{issued:?}").contains(&issued.token),
        "Debug redacts the token"
    );
    server.stop().await;
}

#[tokio::test]
async fn tokens_issued_for_one_service_account_never_repeat() {
    // Without a unique iat, two tokens issued within one second are byte-identical: a token Secret
    // recreated right after its deletion would hold the very token the deletion revoked.
    let service = legacy_service();
    let server = Running::start(&service).await;
    let client = server.client().await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(client.issue("default", "sample", None).await.unwrap());
    }
    let ids: std::collections::BTreeSet<&str> = tokens.iter().map(|t| t.token_id.as_str()).collect();
    assert_eq!(ids.len(), tokens.len(), "every token differs");
    assert!(
        tokens.windows(2).all(|w| w[1].issued_at > w[0].issued_at),
        "iat strictly increases"
    );
    let other = client.issue("default", "other", None).await.unwrap();
    assert!(
        tokens[3].issued_at - other.issued_at <= 4,
        "other ServiceAccounts are not pushed ahead"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_named_key_signs_with_its_kid_and_expiry_is_enforced_in_the_token() {
    let service = legacy_service();
    service
        .rotate("k2", Key::Hmac(HmacKey::new(b"another secret")))
        .unwrap();
    let server = Running::start(&service).await;
    let client = server.client().await;

    let issued = client.issue("ns1", "robot", Some(3600)).await.unwrap();
    assert_eq!(issued.key_id.as_deref(), Some("k2"));
    assert_eq!(issued.expires_at, Some(issued.issued_at + 3600));
    let user = client.verify(&issued.token).await.unwrap();
    assert_eq!(user.expires_at, Some(issued.issued_at + 3600));
    let local = Verifier::new(service.keys()).verify(&issued.token).unwrap();
    assert_eq!(local, user);
    // The old legacy-key tokens still verify after the rotation.
    let legacy = Issuer::new(KeySet::legacy(SECRET), ISSUER)
        .issue_sa_token("default", "sample", ksiam_token::now_unix(), None)
        .unwrap();
    client.verify(&legacy).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_forged_token_is_unauthenticated_with_the_error_text_and_without_the_token() {
    let service = legacy_service();
    let server = Running::start(&service).await;
    let client = server.client().await;

    let forged = Issuer::new(KeySet::legacy(b"not the secret"), ISSUER)
        .issue_sa_token("default", "sample", ksiam_token::now_unix(), None)
        .unwrap();
    let status = within(client.grpc().verify_token(pb::VerifyTokenRequest {
        token: forged.clone(),
    }))
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), Error::SignatureInvalid.to_string());
    assert!(!status.message().contains(&forged));
    for segment in forged.split('.') {
        assert!(!status.message().contains(segment));
    }

    match client.verify(&forged).await {
        Err(ClientError::Unauthenticated(reason)) => assert_eq!(reason, "signature is invalid"),
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    match client.verify("not-a-token").await {
        Err(ClientError::Unauthenticated(reason)) => {
            assert_eq!(reason, Error::Segments.to_string());
            assert!(!reason.contains("not-a-token"));
        }
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_issue_requests_are_invalid_arguments() {
    let service = legacy_service();
    let server = Running::start(&service).await;
    let client = server.client().await;
    for (namespace, name, expiry) in [
        ("", "sample", None),
        ("default", "", None),
        ("default", "a:b", None),
        ("default", "sample", Some(0)),
        ("default", "sample", Some(-5)),
        ("default", "sample", Some(i64::MAX)),
    ] {
        match client.issue(namespace, name, expiry).await {
            Err(ClientError::Status(status)) => assert_eq!(status.code(), Code::InvalidArgument),
            other => panic!("{namespace:?}/{name:?}/{expiry:?}: expected InvalidArgument, got {other:?}"),
        }
    }

    let mut keys = KeySet::default();
    keys.add("only-verifies", b"k");
    service.set_keys(keys);
    match client.issue("default", "sample", None).await {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code(), Code::FailedPrecondition);
            assert_eq!(status.message(), Error::NoSigningKey.to_string());
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn watch_keys_sends_the_key_set_on_connect_and_after_each_rotation() {
    let service = legacy_service();
    let server = Running::start(&service).await;
    let client = server.client().await;
    let mut keys = within(client.grpc().watch_keys(pb::WatchKeysRequest {}))
        .await
        .unwrap()
        .into_inner();

    let first = next(&mut keys).await;
    assert_eq!(first.generation, 1);
    assert!(first.key_ids.is_empty());
    assert_eq!(first.active_key_id, "");
    assert_eq!(first.jwks_json, "", "no asymmetric keys, no JWKS");

    service
        .rotate("k1", Key::Hmac(HmacKey::new(b"k1 secret")))
        .unwrap();
    let second = next(&mut keys).await;
    assert_eq!(second.generation, 2);
    assert_eq!(second.key_ids, ["k1"]);
    assert_eq!(second.active_key_id, "k1");
    assert_eq!(second.jwks_json, "", "HMAC keys are never published");

    service
        .rotate("ec1", Key::Ec(EcKey::generate().unwrap()))
        .unwrap();
    let third = next(&mut keys).await;
    assert_eq!(third.generation, 3);
    assert_eq!(third.key_ids, ["k1", "ec1"]);
    assert_eq!(third.active_key_id, "ec1");
    let jwks: serde_json::Value = serde_json::from_str(&third.jwks_json).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "ec1");
    assert!(!third.jwks_json.contains("\"d\""), "no private key material");

    // A failed edit changes nothing and sends nothing; a later removal is the next event.
    assert!(service.update_keys(|k| k.activate(Some("missing"))).is_err());
    service
        .update_keys(|k| {
            k.remove("k1");
            Ok(())
        })
        .unwrap();
    let fourth = next(&mut keys).await;
    assert_eq!(fourth.generation, 4);
    assert_eq!(fourth.key_ids, ["ec1"]);

    // A second subscriber starts from the current state.
    let mut late = within(client.grpc().watch_keys(pb::WatchKeysRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut late).await, fourth);
    server.stop().await;
}

#[tokio::test]
async fn watch_revocations_sends_a_full_snapshot_then_increments() {
    let service = legacy_service();
    let issuer = Issuer::new(KeySet::legacy(SECRET), ISSUER);
    let token_a = issuer.issue_sa_token("ns", "a", 1, None).unwrap();
    let token_b = issuer.issue_sa_token("ns", "b", 1, None).unwrap();
    service.hold("ns/a-token", &token_a);

    let server = Running::start(&service).await;
    let mut events = within(
        server
            .client()
            .await
            .grpc()
            .watch_revocations(pb::WatchRevocationsRequest {}),
    )
    .await
    .unwrap()
    .into_inner();

    let snapshot = next(&mut events).await;
    assert!(snapshot.full);
    assert_eq!(snapshot.live_token_ids_added, [token_id(&token_a)]);
    assert!(snapshot.live_token_ids_removed.is_empty());
    assert_eq!(snapshot.generation, service.live_tokens().generation());

    service.hold("ns/b-token", &token_b);
    let added = next(&mut events).await;
    assert!(!added.full);
    assert_eq!(added.live_token_ids_added, [token_id(&token_b)]);
    assert!(added.live_token_ids_removed.is_empty());
    assert!(added.generation > snapshot.generation);

    // Holding what is already held changes nothing; a second Secret holding the same token keeps it live
    // when the first lets go.
    service.hold("ns/b-token", &token_b);
    service.hold("ns/b-copy", &token_b);
    service.release("ns/b-token");
    service.release("ns/a-token");
    let mut removed = Vec::new();
    let mut generation = added.generation;
    while removed.is_empty() {
        let event = next(&mut events).await;
        assert!(!event.full);
        assert!(event.live_token_ids_added.is_empty(), "{event:?}");
        assert!(event.generation > generation);
        generation = event.generation;
        removed.extend(event.live_token_ids_removed);
    }
    assert_eq!(removed, [token_id(&token_a)]);
    assert!(service.live_tokens().is_live(&token_id(&token_b)));
    assert!(!service.live_tokens().is_live(&token_id(&token_a)));

    // A new subscriber gets the current set as its snapshot.
    let mut late = within(
        server
            .client()
            .await
            .grpc()
            .watch_revocations(pb::WatchRevocationsRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    let snapshot = next(&mut late).await;
    assert!(snapshot.full);
    assert_eq!(snapshot.live_token_ids_added, [token_id(&token_b)]);
    server.stop().await;
}

#[tokio::test]
async fn when_enforced_only_tokens_held_by_a_secret_verify() {
    let service = legacy_service();
    service.enforce_live_tokens(true);
    let server = Running::start(&service).await;
    let client = server.client().await;
    let issued = client.issue("default", "sample", None).await.unwrap();

    match client.verify(&issued.token).await {
        Err(ClientError::Unauthenticated(reason)) => assert_eq!(reason, Error::Revoked.to_string()),
        other => panic!("expected revoked, got {other:?}"),
    }
    service.hold("default/sample-token-x", &issued.token);
    client.verify(&issued.token).await.unwrap();
    service.release("default/sample-token-x");
    match client.verify(&issued.token).await {
        Err(ClientError::Unauthenticated(reason)) => assert_eq!(reason, "token has been revoked"),
        other => panic!("expected revoked, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_token_service() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let service = legacy_service();
    let server = Running::start(&service).await;
    let mut health = HealthClient::new(server.channel().await);
    for name in ["", "ksiam.token.v1.TokenService"] {
        let response = within(health.check(HealthCheckRequest {
            service: name.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{name:?}");
    }
    let unknown = within(health.check(HealthCheckRequest {
        service: "no.such.Service".to_owned(),
    }))
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_and_describes_the_token_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let service = legacy_service();
    let server = Running::start(&service).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("ksiam.token.v1.TokenService".to_owned()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut responses = within(reflection.server_reflection_info(tokio_stream::iter(requests)))
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) = next(&mut responses).await.message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "ksiam.token.v1.TokenService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }

    let Some(MessageResponse::FileDescriptorResponse(files)) = next(&mut responses).await.message_response
    else {
        panic!("expected a file descriptor");
    };
    assert_eq!(files.file_descriptor_proto.len(), 1);
    let file = String::from_utf8_lossy(&files.file_descriptor_proto[0]).into_owned();
    assert!(file.contains("ksiam/token/v1/token.proto"));
    assert!(file.contains("WatchRevocations"));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watch_streams_and_returns() {
    let service = legacy_service();
    let server = Running::start(&service).await;
    let client = server.client().await;
    let mut keys = within(client.grpc().watch_keys(pb::WatchKeysRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut revocations = within(client.grpc().watch_revocations(pb::WatchRevocationsRequest {}))
        .await
        .unwrap()
        .into_inner();
    next(&mut keys).await;
    next(&mut revocations).await;

    server.stop().await;
    assert_eq!(within(keys.message()).await.ok().flatten(), None);
    assert_eq!(within(revocations.message()).await.ok().flatten(), None);
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_cuts_off_calls_still_open_after_the_grace_period() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let service = legacy_service();
    let server = Running::start_with(&service, Some(Duration::from_millis(200))).await;
    let mut health = HealthClient::new(server.channel().await);
    // Health/Watch never ends by itself, so only the grace period lets `serve` return.
    let mut watch = within(health.watch(HealthCheckRequest {
        service: "ksiam.token.v1.TokenService".to_owned(),
    }))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(next(&mut watch).await.status(), ServingStatus::Serving);

    server.stop().await;
    assert_eq!(next(&mut watch).await.status(), ServingStatus::NotServing);
}

// === who may call what ===

/// A server with the default allow-list (only `ksiam-controller` may IssueToken).
async fn start_default(service: &TokenService) -> Running {
    let pki = TestPki::new();
    let security = GrpcSecurity::mutual_tls(pki.server.clone(), AllowList::default());
    Running::start_secured(service, None, security, pki).await
}

/// The outcome of one IssueToken call with `tls`: the status code (`Ok` when a token came back), or
/// `None` when the connection itself was refused.
async fn issue_as(server: &Running, tls: &ClientTls) -> Option<Code> {
    let client = match within(server.client_as(tls)).await {
        Ok(client) => client,
        Err(_) => return None,
    };
    match within(client.issue("default", "sample", None)).await {
        Ok(issued) => {
            assert!(!issued.token.is_empty());
            Some(Code::Ok)
        }
        Err(ClientError::Unauthenticated(_)) => Some(Code::Unauthenticated),
        Err(ClientError::Status(status)) => Some(status.code()),
        Err(ClientError::Connect(_)) => None,
    }
}

#[tokio::test]
async fn grpc_auth_only_the_controller_identity_may_issue_tokens() {
    let service = legacy_service();
    let server = start_default(&service).await;

    assert_eq!(
        issue_as(&server, &server.pki.client(identities::CONTROLLER)).await,
        Some(Code::Ok)
    );
    for id in [
        identities::GATEWAY,
        identities::ADMIN,
        identities::AUTHZ,
        "ksiam-controller-2",
    ] {
        let client = server.client_as(&server.pki.client(id)).await.unwrap();
        let err = client.issue("default", "sample", None).await.unwrap_err();
        let ClientError::Status(status) = err else {
            panic!("{id}: {err:?}")
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{id}");
        assert!(
            status
                .message()
                .contains("ksiam.token.v1.TokenService/IssueToken")
                && status.message().contains(id),
            "names the method and the identity: {}",
            status.message()
        );
    }
    // A verifier identity may verify, but not issue.
    let gateway = server
        .client_as(&server.pki.client(identities::GATEWAY))
        .await
        .unwrap();
    let token = Issuer::new(KeySet::legacy(SECRET), ISSUER)
        .issue_sa_token("default", "sample", ksiam_token::now_unix(), None)
        .unwrap();
    assert!(gateway.verify(&token).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn grpc_auth_no_client_certificate_is_unauthenticated_and_a_foreign_ca_is_refused() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let service = legacy_service();
    let server = start_default(&service).await;
    assert_eq!(
        issue_as(&server, &server.pki.anonymous()).await,
        Some(Code::Unauthenticated),
        "TLS without a client certificate"
    );
    let refused = issue_as(&server, &server.pki.foreign_client(identities::CONTROLLER)).await;
    assert!(
        refused.is_none() || refused.is_some_and(|code| code != Code::Ok && code != Code::PermissionDenied),
        "a controller certificate from another CA is refused at the TLS layer: {refused:?}"
    );
    // Health answers without a certificate (probes).
    let channel = ksiam_token::grpc_auth::connect(server.uri(), Some(&server.pki.anonymous()))
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(status.into_inner().status, 1, "SERVING");
    // Plaintext to a TLS server gets nowhere.
    let plaintext = match TokenClient::connect(format!("http://{}", server.addr)).await {
        Ok(client) => within(client.issue("default", "sample", None)).await.is_ok(),
        Err(_) => false,
    };
    assert!(!plaintext, "plaintext to the TLS port issued a token");
    server.stop().await;
}

#[tokio::test]
async fn grpc_auth_plaintext_on_loopback_verifies_but_never_issues() {
    let service = legacy_service();
    let pki = TestPki::new();
    let server = Running::start_secured(
        &service,
        None,
        GrpcSecurity::insecure_loopback(AllowList::default()),
        pki,
    )
    .await;
    let client = TokenClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let err = client.issue("default", "sample", None).await.unwrap_err();
    let ClientError::Status(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("requires an authenticated client"),
        "{}",
        status.message()
    );
    let token = Issuer::new(KeySet::legacy(SECRET), ISSUER)
        .issue_sa_token("default", "sample", ksiam_token::now_unix(), None)
        .unwrap();
    assert!(client.verify(&token).await.is_ok());
    server.stop().await;

    // Plaintext is refused outright on an address that is not loopback.
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let result = serve(
        listener,
        legacy_service(),
        &GrpcSecurity::insecure_loopback(AllowList::default()),
        std::future::pending(),
    )
    .await;
    assert!(matches!(result, Err(ServeError::Security(_))), "{result:?}");
}
