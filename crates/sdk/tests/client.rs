//! The SDK against local HTTP and HTTPS servers: configuration, token reload, errors, typed calls.

mod support;

use std::{collections::HashMap, path::Path, time::Duration};

use kubesphere_client::{
    Client, Config, Error, HTTP_HOST, HTTPS_HOST, InClusterOptions, ListQuery, ResourceAttributes,
    SubjectAccessReview, default_user_agent, set_kubesphere_defaults,
};
use support::{Server, TempDir, TestPki, reply};

const SEED_FORBIDDEN: &str = r#"{
  "kind": "Status",
  "apiVersion": "v1",
  "metadata": {},
  "status": "Failure",
  "message": "clusters.tenant.kubesphere.io is forbidden: User \"kubesphere:serviceaccount:default:sample\" cannot list resource \"clusters\" in API group \"tenant.kubesphere.io\" at the cluster scope",
  "reason": "Forbidden",
  "details": {
    "group": "tenant.kubesphere.io",
    "kind": "clusters"
  },
  "code": 403
}"#;
const SEED_FORBIDDEN_MESSAGE: &str = "clusters.tenant.kubesphere.io is forbidden: User \"kubesphere:serviceaccount:default:sample\" cannot list resource \"clusters\" in API group \"tenant.kubesphere.io\" at the cluster scope";

const TWO_CLUSTERS: &str = r#"{"items":[{"kind":"Cluster","metadata":{"name":"host"}},{"kind":"Cluster","metadata":{"name":"member"}}],"totalItems":2}"#;

fn client_for(config: Config) -> Client {
    Client::try_from(config).expect("client")
}

/// Replaces the file the way kubelet's atomic writer does: a new file renamed over the old path.
fn rotate(path: &Path, token: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, token).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

async fn authorization_after_get(client: &Client, server: &Server) -> String {
    client
        .get_raw("/kapis/tenant.kubesphere.io/v1beta1/clusters")
        .await
        .expect("request");
    server.last().authorization.expect("an Authorization header")
}

// --- in-cluster configuration ---

#[test]
fn in_cluster_without_ca_is_http_on_port_80() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok-1");
    let config = InClusterOptions::new().token_file(&token).load().unwrap();
    assert_eq!(config.host().to_string(), format!("{HTTP_HOST}/"));
    assert_eq!(config.host().scheme_str(), Some("http"));
    assert_eq!(config.host().port_u16(), Some(80));
    assert_eq!(config.host().host(), Some("ks-apiserver.kubesphere-system"));
    assert_eq!(config.ca_file(), None);
    assert_eq!(config.token_file(), token);
}

#[test]
fn in_cluster_with_ca_is_https_on_port_443_trusting_that_ca() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok-1");
    let ca = dir.write("ca.crt", &TestPki::new().ca_pem);
    let config = InClusterOptions::new().token_file(&token).load().unwrap();
    assert_eq!(config.host().to_string(), format!("{HTTPS_HOST}/"));
    assert_eq!(config.host().scheme_str(), Some("https"));
    assert_eq!(config.host().port_u16(), Some(443));
    assert_eq!(config.ca_file(), Some(ca.as_path()));
}

#[test]
fn environment_overrides_and_explicit_settings_win_over_them() {
    let dir = TempDir::new();
    let env_token = dir.write("env-token", "tok-env");
    let env = HashMap::from([
        ("KUBESPHERE_HOST", "https://10.1.2.3:8443".to_owned()),
        ("KUBESPHERE_TOKEN_FILE", env_token.display().to_string()),
    ]);
    let lookup = |name: &str| env.get(name).cloned();

    let config = InClusterOptions::from_lookup(lookup).load().unwrap();
    assert_eq!(config.host().to_string(), "https://10.1.2.3:8443/");
    assert_eq!(config.token_file(), env_token);

    let other = dir.write("other-token", "tok-other");
    let config = InClusterOptions::from_lookup(lookup)
        .token_file(&other)
        .host("http://127.0.0.1:9090")
        .load()
        .unwrap();
    assert_eq!(config.host().to_string(), "http://127.0.0.1:9090/");
    assert_eq!(config.token_file(), other);

    // Empty variables count as unset: the default token path, whose absence is then the error.
    let empty = |_: &str| Some(String::new());
    let err = InClusterOptions::from_lookup(empty).load().unwrap_err();
    assert!(
        matches!(err, Error::ReadToken { ref path, .. } if path == Path::new(kubesphere_client::TOKEN_FILE))
    );
}

#[test]
fn missing_token_file_is_a_typed_error_naming_the_path() {
    let dir = TempDir::new();
    let missing = dir.path().join("token");
    let err = InClusterOptions::new().token_file(&missing).load().unwrap_err();
    match &err {
        Error::ReadToken { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected ReadToken, got {other:?}"),
    }
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

    let err = Config::from_parts("http://127.0.0.1:1", &missing, None).unwrap_err();
    assert!(matches!(err, Error::ReadToken { ref path, .. } if path == &missing));
}

#[test]
fn bad_token_or_ca_files_are_typed_errors_without_the_content() {
    let dir = TempDir::new();
    let empty = dir.write("empty", " \n");
    let err = Config::from_parts("http://127.0.0.1:1", &empty, None).unwrap_err();
    assert!(
        matches!(err, Error::InvalidToken { ref path, .. } if path == &empty),
        "{err:?}"
    );

    let bad = dir.write("bad", "secret-part\u{1}more-secret");
    let err = Config::from_parts("http://127.0.0.1:1", &bad, None).unwrap_err();
    assert!(matches!(err, Error::InvalidToken { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("secret"), "{err:?}");

    let token = dir.write("token", "tok");
    let not_pem = dir.write("ca.crt", "not a certificate");
    let err = Config::from_parts("https://127.0.0.1:1", &token, Some(not_pem.clone())).unwrap_err();
    assert!(
        matches!(err, Error::InvalidCa { ref path, .. } if path == &not_pem),
        "{err:?}"
    );

    let err = Config::from_parts("ks-apiserver:80", &token, None).unwrap_err();
    assert!(matches!(err, Error::InvalidHost { .. }), "{err:?}");
}

#[tokio::test]
async fn token_never_appears_in_debug_output() {
    let dir = TempDir::new();
    let token = dir.write("token", "super-secret-token-value");
    let server = Server::http(reply(200, "{}")).await;
    let config = Config::from_parts(&server.http_url(), &token, None).unwrap();
    let client = client_for(config.clone());
    assert!(format!("{config:?}").contains("token"), "{config:?}");
    assert!(
        !format!("{config:?} {client:?}").contains("super-secret"),
        "{config:?} {client:?}"
    );
    // The header is still sent, trimmed.
    assert_eq!(
        authorization_after_get(&client, &server).await,
        "Bearer super-secret-token-value"
    );
}

// --- token reload ---

#[tokio::test]
async fn token_file_is_read_again_after_rotation() {
    let dir = TempDir::new();
    let token = dir.write("token", "token-one\n");
    let server = Server::http(reply(200, TWO_CLUSTERS)).await;
    let config = InClusterOptions::new()
        .token_file(&token)
        .host(server.http_url())
        .load()
        .unwrap();
    let client = client_for(config);

    assert_eq!(
        authorization_after_get(&client, &server).await,
        "Bearer token-one"
    );

    // kubelet style: a new file renamed over the path.
    rotate(&token, "token-two");
    assert_eq!(
        authorization_after_get(&client, &server).await,
        "Bearer token-two"
    );

    // Rewritten in place with another length.
    std::fs::write(&token, "token-three-longer").unwrap();
    assert_eq!(
        authorization_after_get(&client, &server).await,
        "Bearer token-three-longer"
    );

    // Gone: the last good token is kept (as client-go does), then a new file is picked up again.
    std::fs::remove_file(&token).unwrap();
    assert_eq!(
        authorization_after_get(&client, &server).await,
        "Bearer token-three-longer"
    );
    std::fs::write(&token, "token-four").unwrap();
    assert_eq!(
        authorization_after_get(&client, &server).await,
        "Bearer token-four"
    );

    // Emptied: the last good token is kept.
    std::fs::write(&token, "").unwrap();
    assert_eq!(
        authorization_after_get(&client, &server).await,
        "Bearer token-four"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn token_behind_a_swapped_data_symlink_is_read_again() {
    use std::os::unix::fs::symlink;

    // The layout of a projected volume: token -> ..data/token, ..data -> ..<timestamp>/.
    let dir = TempDir::new();
    std::fs::create_dir(dir.path().join("..v1")).unwrap();
    std::fs::write(dir.path().join("..v1/token"), "token-v1").unwrap();
    symlink("..v1", dir.path().join("..data")).unwrap();
    symlink("..data/token", dir.path().join("token")).unwrap();

    let server = Server::http(reply(200, TWO_CLUSTERS)).await;
    let config = Config::from_parts(&server.http_url(), dir.path().join("token"), None).unwrap();
    let client = client_for(config);
    assert_eq!(authorization_after_get(&client, &server).await, "Bearer token-v1");

    std::fs::create_dir(dir.path().join("..v2")).unwrap();
    std::fs::write(dir.path().join("..v2/token"), "token-v2").unwrap();
    symlink("..v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    std::fs::remove_dir_all(dir.path().join("..v1")).unwrap();
    assert_eq!(authorization_after_get(&client, &server).await, "Bearer token-v2");
}

#[tokio::test]
async fn an_unchanged_looking_file_is_read_again_after_the_reload_interval() {
    // Same inode, same size, same mtime: only the interval can notice the new content.
    fn rewrite_keeping_stamp(path: &Path, token: &str) {
        let modified = std::fs::metadata(path).unwrap().modified().unwrap();
        std::fs::write(path, token).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }

    let dir = TempDir::new();
    let server = Server::http(reply(200, TWO_CLUSTERS)).await;

    let token = dir.write("token-cached", "aaaa");
    let config = Config::from_parts(&server.http_url(), &token, None).unwrap();
    assert_eq!(
        config.token_reload_interval(),
        kubesphere_client::DEFAULT_TOKEN_RELOAD_INTERVAL
    );
    let cached = client_for(config);
    assert_eq!(authorization_after_get(&cached, &server).await, "Bearer aaaa");
    rewrite_keeping_stamp(&token, "bbbb");
    // Within the interval, an unchanged-looking file is not read again.
    assert_eq!(authorization_after_get(&cached, &server).await, "Bearer aaaa");

    let token = dir.write("token-reread", "cccc");
    let config = Config::from_parts(&server.http_url(), &token, None)
        .unwrap()
        .with_token_reload_interval(Duration::ZERO);
    let rereading = client_for(config);
    assert_eq!(authorization_after_get(&rereading, &server).await, "Bearer cccc");
    rewrite_keeping_stamp(&token, "dddd");
    assert_eq!(authorization_after_get(&rereading, &server).await, "Bearer dddd");
}

// --- errors ---

#[tokio::test]
async fn forbidden_exposes_the_status_exactly() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok");
    let server = Server::http(reply(403, SEED_FORBIDDEN)).await;
    let client = client_for(Config::from_parts(&server.http_url(), &token, None).unwrap());

    let err = client.list_clusters(&ListQuery::new()).await.unwrap_err();
    assert_eq!(err.code(), Some(403));
    let status = err.status().expect("a Status");
    assert_eq!(status.message, SEED_FORBIDDEN_MESSAGE);
    assert_eq!(status.reason, "Forbidden");
    assert!(status.is_failure());
    let details = status.details.as_ref().expect("details");
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("tenant.kubesphere.io", "clusters")
    );
    assert_eq!(err.to_string(), SEED_FORBIDDEN_MESSAGE);
    assert!(matches!(err, Error::Api(_)));

    let err = client
        .get_raw("/kapis/tenant.kubesphere.io/v1beta1/clusters")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), SEED_FORBIDDEN_MESSAGE);

    // The same through the kube::Client, once lifted into this crate's Error.
    let request = http::Request::get("/kapis/tenant.kubesphere.io/v1beta1/clusters")
        .body(vec![])
        .unwrap();
    let err = Error::from(client.kube().request_text(request).await.unwrap_err());
    assert_eq!(err.code(), Some(403));
    assert_eq!(err.status().unwrap().message, SEED_FORBIDDEN_MESSAGE);
}

#[tokio::test]
async fn plain_text_handler_errors_keep_their_code_and_text() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok");
    let body = "failed to describe user: users.iam.kubesphere.io \"kubesphere:serviceaccount:default:sample\" not found\n";
    let server = Server::http(reply(500, body)).await;
    let client = client_for(Config::from_parts(&server.http_url(), &token, None).unwrap());

    let err = client.list_clusters(&ListQuery::new()).await.unwrap_err();
    assert_eq!(err.code(), Some(500));
    let status = err.status().unwrap();
    assert_eq!(status.reason, "InternalError");
    assert_eq!(status.message, body.trim_end());
}

#[tokio::test]
async fn unexpected_success_bodies_are_decode_errors() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok");
    let server = Server::http(reply(200, "<html>not json</html>")).await;
    let client = client_for(Config::from_parts(&server.http_url(), &token, None).unwrap());
    let err = client.list_namespaces(&ListQuery::new()).await.unwrap_err();
    assert!(
        matches!(err, Error::Decode { ref path, .. } if path == "/kapis/tenant.kubesphere.io/v1beta1/namespaces"),
        "{err:?}"
    );
    assert_eq!(err.code(), None);
}

// --- typed calls ---

#[tokio::test]
async fn list_clusters_parses_the_list_and_sends_the_query() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok");
    let server = Server::http(reply(200, TWO_CLUSTERS)).await;
    let client = client_for(Config::from_parts(&server.http_url(), &token, None).unwrap());

    let clusters = client
        .list_clusters(
            &ListQuery::new()
                .limit(10)
                .page(1)
                .sort_by("name")
                .ascending(true)
                .label_selector("a=b"),
        )
        .await
        .unwrap();
    assert_eq!(clusters.total_items, 2);
    assert_eq!(clusters.names(), ["host", "member"]);
    assert_eq!(clusters.items[0]["kind"], "Cluster");

    let seen = server.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.uri,
        "/kapis/tenant.kubesphere.io/v1beta1/clusters?limit=10&page=1&sortBy=name&ascending=true&labelSelector=a%3Db"
    );
    assert_eq!(seen.accept.as_deref(), Some("application/json"));
    assert_eq!(seen.authorization.as_deref(), Some("Bearer tok"));
}

#[tokio::test]
async fn workspaces_and_namespaces_use_their_paths() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok");
    let server = Server::http(reply(200, r#"{"items":[],"totalItems":0}"#)).await;
    let client = client_for(Config::from_parts(&server.http_url(), &token, None).unwrap());

    let list = client
        .list_workspaces(&ListQuery::new().name("dev"))
        .await
        .unwrap();
    assert_eq!((list.items.len(), list.total_items), (0, 0));
    assert_eq!(
        server.last().uri,
        "/kapis/tenant.kubesphere.io/v1beta1/workspaces?name=dev"
    );
    client.list_workspace_templates(&ListQuery::new()).await.unwrap();
    assert_eq!(
        server.last().uri,
        "/kapis/tenant.kubesphere.io/v1beta1/workspacetemplates"
    );
    client.list_namespaces(&ListQuery::new()).await.unwrap();
    assert_eq!(
        server.last().uri,
        "/kapis/tenant.kubesphere.io/v1beta1/namespaces"
    );
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn subject_access_review_posts_the_review_and_reads_the_answer() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok");
    // Echo the review with an answer, as ks-apiserver does.
    let echo: support::Reply = std::sync::Arc::new(|seen: &support::Seen| {
        let mut review: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        review["status"] = serde_json::json!({"allowed": true, "reason": "bound by GlobalRoleBinding sample-platform-admin"});
        (200, review.to_string())
    });
    let server = Server::http(echo).await;
    let client = client_for(Config::from_parts(&server.http_url(), &token, None).unwrap());

    let review = SubjectAccessReview::resource(
        "kubesphere:serviceaccount:default:sample",
        ResourceAttributes {
            verb: "list".into(),
            group: "tenant.kubesphere.io".into(),
            resource: "clusters".into(),
            resource_scope: "Global".into(),
            ..Default::default()
        },
    );
    let answer = client.subject_access_review(&review).await.unwrap();
    assert!(answer.status.allowed);
    assert_eq!(
        answer.status.reason,
        "bound by GlobalRoleBinding sample-platform-admin"
    );
    assert_eq!(answer.spec, review.spec);

    let seen = server.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews");
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["apiVersion"], "iam.kubesphere.io/v1beta1");
    assert_eq!(sent["kind"], "SubjectAccessReview");
    assert_eq!(sent["spec"]["user"], "kubesphere:serviceaccount:default:sample");
    assert_eq!(sent["spec"]["resourceAttributes"]["resourceScope"], "Global");
    assert!(sent.get("status").is_none(), "{sent}");
}

#[tokio::test]
async fn user_agent_is_set_only_when_none_is() {
    let dir = TempDir::new();
    let token = dir.write("token", "tok");
    let server = Server::http(reply(200, TWO_CLUSTERS)).await;

    let mut config = Config::from_parts(&server.http_url(), &token, None).unwrap();
    assert_eq!(config.user_agent(), None);
    set_kubesphere_defaults(&mut config);
    assert_eq!(config.user_agent(), Some(default_user_agent().as_str()));
    client_for(config).list_clusters(&ListQuery::new()).await.unwrap();
    assert_eq!(server.last().user_agent, Some(default_user_agent()));

    let mut config = Config::from_parts(&server.http_url(), &token, None)
        .unwrap()
        .with_user_agent("mine/1.0");
    set_kubesphere_defaults(&mut config);
    assert_eq!(config.user_agent(), Some("mine/1.0"));
    client_for(config).list_clusters(&ListQuery::new()).await.unwrap();
    assert_eq!(server.last().user_agent.as_deref(), Some("mine/1.0"));

    let config = Config::from_parts(&server.http_url(), &token, None)
        .unwrap()
        .with_user_agent("bad\nagent");
    assert!(matches!(
        Client::try_from(config),
        Err(Error::InvalidUserAgent(_))
    ));
}

#[tokio::test]
async fn kube_api_requests_carry_the_token_too() {
    use k8s_openapi::api::core::v1::ConfigMap;

    let dir = TempDir::new();
    let token = dir.write("token", "tok-kube");
    let server = Server::http(reply(
        200,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","namespace":"team"}}"#,
    ))
    .await;
    let config = Config::from_parts(&server.http_url(), &token, None)
        .unwrap()
        .with_default_namespace("team");
    let kube_client = kube::Client::try_from(config).unwrap();
    let cms: kube::Api<ConfigMap> = kube::Api::default_namespaced(kube_client);
    let cm = cms.get("cm").await.unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some("cm"));
    let seen = server.last();
    assert_eq!(seen.uri, "/api/v1/namespaces/team/configmaps/cm");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer tok-kube"));
}

// --- https ---

#[tokio::test]
async fn https_trusts_the_ca_beside_the_token_and_reloads_the_token() {
    let pki = TestPki::new();
    let server = Server::https(reply(200, TWO_CLUSTERS), pki.acceptor.clone()).await;
    let dir = TempDir::new();
    let token = dir.write("token", "tls-one");
    let ca = dir.write("ca.crt", &pki.ca_pem);

    let config = InClusterOptions::new()
        .token_file(&token)
        .host(server.https_url())
        .load()
        .unwrap();
    assert_eq!(config.ca_file(), Some(ca.as_path()));
    let client = client_for(config);
    let clusters = client.list_clusters(&ListQuery::new()).await.unwrap();
    assert_eq!(clusters.names(), ["host", "member"]);
    assert_eq!(server.last().authorization.as_deref(), Some("Bearer tls-one"));

    rotate(&token, "tls-two");
    assert_eq!(authorization_after_get(&client, &server).await, "Bearer tls-two");

    // The name checked in the certificate can differ from the URL's host.
    let with_name = |name: &str| {
        let config = InClusterOptions::new()
            .token_file(&token)
            .host(server.https_url())
            .load()
            .unwrap();
        client_for(config.with_tls_server_name(name))
    };
    with_name("ks-apiserver.kubesphere-system")
        .list_clusters(&ListQuery::new())
        .await
        .unwrap();
    let err = with_name("other.example")
        .list_clusters(&ListQuery::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Kube(_)), "{err:?}");
}

#[tokio::test]
async fn https_without_that_ca_fails_the_handshake() {
    let pki = TestPki::new();
    let server = Server::https(reply(200, TWO_CLUSTERS), pki.acceptor.clone()).await;
    let dir = TempDir::new();
    let token = dir.write("token", "tok");

    // No ca.crt: the platform's trust store does not know our test CA.
    let client = client_for(Config::from_parts(&server.https_url(), &token, None).unwrap());
    let err = client.list_clusters(&ListQuery::new()).await.unwrap_err();
    assert!(matches!(err, Error::Kube(_)), "{err:?}");
    assert_eq!(err.code(), None);

    // Another CA: rejected as well.
    let other_ca = dir.write("other-ca.crt", &TestPki::new().ca_pem);
    let client = client_for(Config::from_parts(&server.https_url(), &token, Some(other_ca)).unwrap());
    let err = client.list_clusters(&ListQuery::new()).await.unwrap_err();
    assert!(matches!(err, Error::Kube(_)), "{err:?}");

    assert!(
        server.seen().is_empty(),
        "no request may pass an untrusted handshake"
    );
}
