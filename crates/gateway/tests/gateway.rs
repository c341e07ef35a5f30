//! The gateway in process: filter chain bodies, path confusion, tenant lists, and the proxy in front of
//! a fake kube-apiserver.

mod support;

use std::time::Duration;

use axum::body::{Body, Bytes};
use http::{Method, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::Value;
use support::{Harness, start, start_with};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const GO_UA: &str = "list_clusters/v0.0.0 (linux/amd64) kubesphere/unknown";
const CLUSTERS: &str = "/kapis/tenant.kubesphere.io/v1beta1/clusters";

// === 401 / 403 bodies ===

#[tokio::test]
async fn seed_403_for_the_sample_clusters_list_is_byte_identical() {
    let h = start().await;
    let token = h.token("sample");
    let (status, body) = h.get(CLUSTERS, Some(&token), "curl/8.5.0").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let seed = r#"{
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
    assert_eq!(body, seed);

    let (status, body) = h.get(CLUSTERS, Some(&token), GO_UA).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"clusters.tenant.kubesphere.io is forbidden: User \"kubesphere:serviceaccount:default:sample\" cannot list resource \"clusters\" in API group \"tenant.kubesphere.io\" at the cluster scope","reason":"Forbidden","details":{"group":"tenant.kubesphere.io","kind":"clusters"},"code":403}
"#
    );
}

#[tokio::test]
async fn forbidden_response_headers_and_non_resource_details() {
    let h = start().await;
    let req = http::Request::get(h.url("/kapis/foo/bar"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = h.send(req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(
        body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"system:anonymous\\\" cannot GET path \\\"/kapis/foo/bar\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n"
    );
}

fn unauthorized(message: &str) -> String {
    format!(
        "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":{},\"reason\":\"Unauthorized\",\"code\":401}}\n",
        serde_json::to_string(message).unwrap()
    )
}

#[tokio::test]
async fn unauthorized_bodies_match_spec_6_3() {
    let h = start().await;
    let gone = h
        .issuer
        .issue_sa_token("default", "gone", ksiam_token::now_unix(), None)
        .unwrap();
    for (authorization, message) in [
        ("Token xyz".to_owned(), "The request cannot be authenticated."),
        (
            "Bearer a.b".to_owned(),
            "token contains an invalid number of segments",
        ),
        (
            "Basic YWRtaW46cA==".to_owned(),
            "The request cannot be authenticated.",
        ),
        (
            format!("Bearer {gone}"),
            "ServiceAccount.kubesphere.io \"gone\" not found",
        ),
        (format!("Bearer {}x", h.token("sample")), "signature is invalid"),
    ] {
        let req = http::Request::get(h.url(CLUSTERS))
            .header(header::AUTHORIZATION, &authorization)
            .header(header::USER_AGENT, GO_UA)
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = h.send(req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{message}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, unauthorized(message));
        assert!(
            !body.contains(authorization.split(' ').nth(1).unwrap()),
            "no token in the body"
        );
    }
    // Pretty for curl.
    let req = http::Request::get(h.url(CLUSTERS))
        .header(header::AUTHORIZATION, "Token xyz")
        .header(header::USER_AGENT, "curl/8")
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = h.send(req).await;
    assert_eq!(
        body,
        "{\n  \"kind\": \"Status\",\n  \"apiVersion\": \"v1\",\n  \"metadata\": {},\n  \"status\": \"Failure\",\n  \"message\": \"The request cannot be authenticated.\",\n  \"reason\": \"Unauthorized\",\n  \"code\": 401\n}"
    );
}

#[tokio::test]
async fn x_kubesphere_authorization_is_used_when_authorization_is_empty() {
    let h = start().await;
    let req = http::Request::get(h.url(CLUSTERS))
        .header(
            "X-KubeSphere-Authorization",
            format!("Bearer {}", h.token("admin")),
        )
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = h.send(req).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn resolver_error_is_the_spec_500_text() {
    let h = start().await;
    let (status, body) = h.get("/api/v1/watch", Some(&h.token("admin")), GO_UA).await;
    // `/api/v1/watch` leaves nothing after `watch`.
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        "Internal Server Error: \"/api/v1/watch\": failed to crate RequestInfo: unable to determine kind and namespace from url: /api/v1/watch\n"
    );
}

// === path confusion ===

enum Expect {
    /// Allowed; kube-apiserver sees exactly this path.
    Upstream(&'static str),
    /// Refused (400 or 403) and never forwarded.
    Refused,
}

#[tokio::test]
async fn path_confusion_never_reaches_a_forbidden_resource() {
    use Expect::*;
    let h = start().await;
    let token = h.token("sample");
    let table: &[(&str, Expect)] = &[
        (
            "/api/v1/namespaces/default/pods",
            Upstream("/api/v1/namespaces/default/pods"),
        ),
        (
            "/api/v1/namespaces/default/pods/",
            Upstream("/api/v1/namespaces/default/pods/"),
        ),
        (
            "/%61pi/v1/namespaces/default/pods",
            Upstream("/api/v1/namespaces/default/pods"),
        ),
        (
            "/clusters/host/api/v1/namespaces/default/pods",
            Upstream("/api/v1/namespaces/default/pods"),
        ),
        (
            "/api/v1/namespaces/default/pods?x=/../../kube-system",
            // Forwarded as the authorizer read it, re-encoded.
            Upstream("/api/v1/namespaces/default/pods?x=%2F..%2F..%2Fkube-system"),
        ),
        ("/api/v1/namespaces/kube-system/pods", Refused),
        ("/api/v1/namespaces/default/../kube-system/pods", Refused),
        ("/api/v1/namespaces/default/%2e%2e/kube-system/pods", Refused),
        ("/api/v1/namespaces/default/%2E%2E/kube-system/pods", Refused),
        ("/api/v1/namespaces/default/.%2e/kube-system/pods", Refused),
        ("/api/v1/namespaces/default/%2e./kube-system/pods", Refused),
        ("/api/v1/namespaces/default/./../kube-system/pods", Refused),
        ("//api/v1/namespaces/kube-system/pods", Refused),
        ("/api/v1/namespaces/default//../kube-system/pods", Refused),
        ("/api/v1/namespaces/default%2f..%2fkube-system/pods", Refused),
        ("/api/v1/namespaces/default%2F..%2Fkube-system/pods", Refused),
        ("/api/v1/namespaces/default;/../kube-system/pods", Refused),
        ("/api/v1/namespaces/default;x=y/pods", Refused),
        ("/api/v1/namespaces/kube-system;ns=default/pods", Refused),
        ("/api/v1/namespaces/default\\..\\kube-system/pods", Refused),
        ("/api/v1/namespaces/default%5c..%5ckube-system/pods", Refused),
        ("/api/v1/namespaces/default/pods/../../kube-system/pods", Refused),
        ("/api/v1/namespaces/default/%252e%252e/kube-system/pods", Refused),
        (
            "/clusters/host/api/v1/namespaces/default/../kube-system/pods",
            Refused,
        ),
        ("/clusters/host/../api/v1/namespaces/kube-system/pods", Refused),
        ("/clusters/host/api/v1/namespaces/kube-system/pods", Refused),
        ("/clusters/nowhere/api/v1/namespaces/default/pods", Refused),
        (
            "/api/v1/namespaces/default/pods/..%2f..%2fkube-system%2fpods",
            Refused,
        ),
        ("/api/v1/namespaces/%6b%75%62%65-system/pods", Refused),
        ("/%61pi/v1/namespaces/kube-system/pods", Refused),
        ("/api/v1/namespaces/default/./pods", Refused),
        ("/api/v1/watch/namespaces/default/../kube-system/pods", Refused),
        ("/apis/../api/v1/namespaces/kube-system/pods", Refused),
        ("/api/v1/namespaces/default/pods/%2e%2e", Refused),
        ("/api/v1/namespaces/default/pods/..", Refused),
        ("/api/v1/namespaces/default%00/pods", Refused),
        ("/api/v1/namespaces/default%20/../kube-system/pods", Refused),
        ("http://evil/api/v1/namespaces/kube-system/pods", Refused),
        (
            "/api/v1/namespaces/default/pods%3f/../../kube-system/pods",
            Refused,
        ),
    ];
    assert!(table.len() >= 25);
    for (target, expect) in table {
        let before = h.upstream.paths().len();
        let status = h.raw_get(target, &token).await;
        let after = h.upstream.paths();
        match expect {
            Upstream(path) => {
                assert_eq!(status, 200, "{target}");
                assert_eq!(after.len(), before + 1, "{target}");
                assert_eq!(after.last().map(String::as_str), Some(*path), "{target}");
            }
            Refused => {
                assert!(
                    matches!(status, 400 | 403 | 404),
                    "{target}: expected a refusal, got {status}"
                );
                assert_eq!(
                    after.len(),
                    before,
                    "{target} reached the upstream as {:?}",
                    after.last()
                );
            }
        }
    }
    for p in h.upstream.paths() {
        assert!(p.starts_with("/api/v1/namespaces/default/pods"), "{p}");
    }
}

#[tokio::test]
async fn unknown_clusters_are_400_as_in_ks_apiserver_after_authentication_only() {
    let h = start().await;
    let (status, body) = h
        .get(
            "/clusters/nowhere/api/v1/namespaces/default/pods",
            Some(&h.token("admin")),
            GO_UA,
        )
        .await;
    // ks-apiserver's body byte for byte (`cargo xtask conformance --kubesphere` compares it live).
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body,
        "{\n  \"ErrStatus\": {\n    \"metadata\": {},\n    \"status\": \"Failure\",\n    \"message\": \
         \"cluster nowhere not exists\",\n    \"reason\": \"BadRequest\",\n    \"code\": 400\n  }\n}"
    );
    // Anonymous callers learn nothing about which clusters exist.
    let (status, _) = h
        .get("/clusters/nowhere/api/v1/namespaces/default/pods", None, GO_UA)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

// === tenant API ===

async fn list(h: &Harness, path: &str, who: &str) -> (StatusCode, Value) {
    let (status, body) = h.get(path, Some(&h.token(who)), GO_UA).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn names(v: &Value) -> Vec<&str> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn service_account_without_cluster_list_permission_gets_an_empty_list_instead_of_upstream_500() {
    let h = start().await;
    let (status, body) = h.get(CLUSTERS, Some(&h.token("lister")), GO_UA).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"items":[],"totalItems":0}"#);
}

#[tokio::test]
async fn clusters_list_strips_kubeconfig_and_filters() {
    let h = start().await;
    let (status, v) = list(&h, CLUSTERS, "admin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["totalItems"], 2);
    for item in v["items"].as_array().unwrap() {
        assert_eq!(item["kind"], "Cluster");
        assert!(item["spec"]["connection"].get("kubeconfig").is_none(), "{item}");
        assert_eq!(item["spec"]["connection"]["type"], "direct");
    }
    let (_, v) = list(&h, &format!("{CLUSTERS}?labelSelector=env%3Dprod"), "admin").await;
    assert_eq!(names(&v), ["host"]);
}

#[tokio::test]
async fn workspaces_query_parameters() {
    let h = start().await;
    let base = "/kapis/tenant.kubesphere.io/v1beta1/workspaces";
    let (status, v) = list(&h, base, "admin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        names(&v),
        ["delta", "beta", "gamma", "alpha"],
        "newest first by default"
    );
    assert_eq!(v["totalItems"], 4);

    let (_, v) = list(
        &h,
        &format!("{base}?sortBy=name&ascending=true&limit=2&page=2"),
        "admin",
    )
    .await;
    assert_eq!(
        (names(&v), v["totalItems"].as_u64()),
        (vec!["delta", "gamma"], Some(4))
    );
    let (_, v) = list(&h, &format!("{base}?limit=3&page=5"), "admin").await;
    assert_eq!((names(&v).len(), v["totalItems"].as_u64()), (0, Some(4)));
    let (_, v) = list(
        &h,
        &format!("{base}?labelSelector=env%3Dprod&sortBy=name"),
        "admin",
    )
    .await;
    assert_eq!(names(&v), ["gamma", "delta", "alpha"]);
    let (_, v) = list(&h, &format!("{base}?name=Alias%20bet"), "admin").await;
    assert_eq!(names(&v), ["beta"], "name matches the alias annotation");
    let (_, v) = list(&h, &format!("{base}?name=ta"), "admin").await;
    assert_eq!(names(&v), ["delta", "beta"]);
    let (status, _) = list(&h, &format!("{base}?labelSelector=env+in+(prod"), "admin").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Allowed at the filter, but no global list and no WorkspaceRoleBinding: nothing.
    let (status, v) = list(&h, base, "lister").await;
    assert_eq!((status, v["totalItems"].as_u64()), (StatusCode::OK, Some(0)));

    let (status, body) = h
        .get(&format!("{base}/beta"), Some(&h.token("admin")), GO_UA)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["metadata"]["name"],
        "beta"
    );
    let (status, body) = h
        .get(&format!("{base}/nope"), Some(&h.token("admin")), GO_UA)
        .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::NOT_FOUND,
            "Workspace.tenant.kubesphere.io \"nope\" not found\n"
        )
    );
}

#[tokio::test]
async fn subject_access_review_reports_the_decision() {
    let h = start().await;
    let review = |user: &str, verb: &str| {
        serde_json::json!({"apiVersion": "iam.kubesphere.io/v1beta1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "resourceAttributes": {"verb": verb, "group": "", "version": "v1",
                      "resource": "pods", "namespace": "default"}}})
    };
    for (verb, allowed) in [("get", true), ("delete", true)] {
        let req = http::Request::post(h.url("/kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews"))
            .header(header::AUTHORIZATION, format!("Bearer {}", h.token("admin")))
            .body(Body::from(
                review("kubesphere:serviceaccount:default:sample", verb).to_string(),
            ))
            .unwrap();
        let (status, _, body) = h.send(req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"]["allowed"], allowed, "{body}");
        assert_eq!(v["kind"], "SubjectAccessReview");
    }
    let req = http::Request::post(h.url("/kapis/iam.kubesphere.io/v1beta1/subjectaccessreviews"))
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token("admin")))
        .body(Body::from(
            review("kubesphere:serviceaccount:default:lister", "get").to_string(),
        ))
        .unwrap();
    let (_, _, body) = h.send(req).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"]["allowed"], false);
    assert!(
        v["status"].get("denied").is_none(),
        "RBAC has no opinion, it does not deny"
    );
}

// === proxy ===

#[tokio::test]
async fn caller_credentials_never_reach_kube_apiserver() {
    let h = start().await;
    let req = http::Request::get(h.url("/api/v1/namespaces/default/pods"))
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token("sample")))
        .header("Impersonate-User", "admin")
        .header("Impersonate-Group", "system:masters")
        .header("Impersonate-Uid", "1")
        .header("Impersonate-Extra-Scopes", "all")
        .header("X-Remote-User", "admin")
        .header("X-KubeSphere-Authorization", "Bearer other")
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "1")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Accept", "application/json")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = h.send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-upstream"], "yes");
    let seen = h.upstream.seen.lock().last().cloned().unwrap();
    for name in seen.headers.keys() {
        let n = name.as_str();
        assert!(
            !(n == "authorization"
                || n.starts_with("x-remote-")
                || n.starts_with("x-kubesphere-")
                || n == "x-hop"),
            "{n} was forwarded"
        );
    }
    assert_eq!(seen.headers["accept"], "application/json");
    // The caller's own impersonation is dropped; the gateway impersonates the caller it authenticated.
    let all = |name: &str| -> Vec<&str> {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(
        all("impersonate-user"),
        ["kubesphere:serviceaccount:default:sample"]
    );
    assert!(
        all("impersonate-group").is_empty(),
        "ServiceAccounts have no groups"
    );
    assert!(all("impersonate-uid").is_empty());
    assert!(all("impersonate-extra-scopes").is_empty());
    assert_eq!(
        all("impersonate-extra-ksiam.kubesphere.io%2fauthenticated-by"),
        ["ksiam"]
    );
    // X-Forwarded-For is the gateway's own, from the connection.
    assert_eq!(all("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn without_impersonation_the_gateway_sends_no_impersonation_headers() {
    let h = start_with(|c| c.impersonate = false).await;
    let req = http::Request::get(h.url("/api/v1/namespaces/default/pods"))
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token("sample")))
        .header("Impersonate-User", "admin")
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = h.send(req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = h.upstream.seen.lock().last().cloned().unwrap();
    assert!(
        seen.headers
            .keys()
            .all(|n| !n.as_str().starts_with("impersonate-")),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn watch_streams_flow_without_buffering_and_ignore_the_timeout() {
    let h = start_with(|c| c.request_timeout = Duration::from_millis(300)).await;
    let req = http::Request::get(h.url("/api/v1/namespaces/default/pods?watch=true"))
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token("sample")))
        .body(Body::empty())
        .unwrap();
    let resp = h.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first event arrives while the upstream is still streaming")
        .unwrap()
        .unwrap();
    assert_eq!(
        first.into_data().unwrap(),
        Bytes::from_static(b"{\"type\":\"ADDED\"}\n")
    );
    tokio::time::sleep(Duration::from_millis(600)).await; // past the request timeout
    h.upstream.release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"{\"type\":\"MODIFIED\"}\n"));
}

#[tokio::test]
async fn slow_requests_time_out_with_a_status() {
    let h = start_with(|c| c.request_timeout = Duration::from_millis(200)).await;
    let (status, body) = h
        .get(
            "/api/v1/namespaces/default/pods/slow",
            Some(&h.token("sample")),
            GO_UA,
        )
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["reason"].as_str(), v["code"].as_u64()),
        (Some("Status"), Some("Timeout"), Some(504))
    );
}

#[tokio::test]
async fn request_bodies_stream_to_the_upstream() {
    let h = start().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let req = http::Request::post(h.url("/api/v1/namespaces/default/pods"))
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token("sample")))
        .body(Body::from_stream(stream))
        .unwrap();
    let client = h.client.clone();
    let call = tokio::spawn(async move { client.request(req).await });
    tx.send(Ok(Bytes::from(vec![b'a'; 1000]))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), h.upstream.first_chunk.notified())
        .await
        .expect("the first chunk reaches the upstream before the client finished sending");
    for _ in 0..9 {
        tx.send(Ok(Bytes::from(vec![b'b'; 1000]))).await.unwrap();
    }
    drop(tx);
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"10000");
}

#[tokio::test]
async fn oversized_bodies_get_413_status() {
    let h = start_with(|c| c.body_limit = 1024).await;
    let token = h.token("sample");
    let req = http::Request::post(h.url("/api/v1/namespaces/default/pods"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_LENGTH, "2048")
        .body(Body::from(vec![0u8; 2048]))
        .unwrap();
    let before = h.upstream.paths().len();
    let (status, _, body) = h.send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Request entity too large: limit is 1024\",\"reason\":\"RequestEntityTooLarge\",\"code\":413}\n"
    );
    assert_eq!(h.upstream.paths().len(), before, "never forwarded");

    // Chunked, no length: cut off while streaming.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 512]))));
    let req = http::Request::post(h.url("/api/v1/namespaces/default/pods"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from_stream(chunks))
        .unwrap();
    let (status, _, body) = h.send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_ne!(body, "4096", "the whole body never arrives upstream");
}

#[tokio::test]
async fn upgrades_are_spliced() {
    let h = start().await;
    let mut tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n",
        h.token("sample")
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: spdy/3.1"), "{head}");
    tcp.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
    let seen = h.upstream.seen.lock().last().cloned().unwrap();
    assert!(seen.headers.get(header::AUTHORIZATION).is_none());
}

// === probes, metrics, OIDC ===

#[tokio::test]
async fn readiness_follows_the_policy_store() {
    let h = start().await;
    let (status, _) = h.get("/readyz", None, GO_UA).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.gateway.readiness().is_ready());
    h.store.set_ready(false);
    let (status, _) = h.get("/readyz", None, GO_UA).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // And the store fails closed.
    let (status, _) = h
        .get("/api/v1/namespaces/default/pods", Some(&h.token("sample")), GO_UA)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = h.get("/healthz", None, GO_UA).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn metrics_version_and_oidc_are_public() {
    let h = start().await;
    let _ = h.get(CLUSTERS, None, GO_UA).await;
    let (status, body) = h.get("/metrics", None, GO_UA).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("ksiam_gateway_requests_total{method=\"GET\",code=\"403\"}"),
        "{body}"
    );
    assert!(
        body.contains("ksiam_gateway_request_duration_seconds_bucket"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"));

    let (status, body) = h.get("/version", None, GO_UA).await;
    assert_eq!(status, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["gitVersion"].is_string());

    let (status, body) = h.get("/.well-known/openid-configuration", None, GO_UA).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["jwks_uri"], "http://ks-apiserver/oauth/keys");
    let (status, body) = h.get("/oauth/keys", None, GO_UA).await;
    assert_eq!(status, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["keys"].is_array());
}

#[tokio::test]
async fn dryrun_is_renamed_and_rawquery_restored() {
    let h = start().await;
    let req = http::Request::builder()
        .method(Method::GET)
        .uri(h.url("/api/v1/namespaces/default/pods"))
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token("sample")))
        .header("X-KubeSphere-Rawquery", "dryrun=All&limit=1")
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = h.send(req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = h.upstream.seen.lock().last().cloned().unwrap();
    assert_eq!(seen.uri, "/api/v1/namespaces/default/pods?dryRun=All&limit=1");
    assert!(seen.headers.get("x-kubesphere-rawquery").is_none());
}
