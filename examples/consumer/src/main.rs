//! ksiam's library crates used from outside the repository, each the way its README shows:
//!
//! 1. `ksiam-rbac`: load a KubeSphere policy from YAML, decide two requests, explain both decisions.
//! 2. `ksiam-token`: issue a KubeSphere ServiceAccount token, verify it, revoke it.
//! 3. `ksiam-webhook`: answer a pod's AdmissionReview with the pure mutation.
//! 4. `kubesphere-client`: call `/kapis` on a small gateway made of 1 and 2 (token authentication, then
//!    KubeSphere RBAC, then ks-apiserver's 403 `Status`), as an allowed and as a forbidden ServiceAccount.
//!
//! Every step checks what it gets and the program exits with 1 on the first surprise:
//! `cargo run --manifest-path examples/consumer/Cargo.toml`.

use std::error::Error;
use std::sync::Arc;

use base64::Engine as _;
use ksiam_rbac::{Authorizer, Mode, PolicyIndex, PolicyStore, Status, model::Policy, request::resolve};
use ksiam_token::{AuthError, Authenticator, Issuer, KeySet, LiveTokens, Verifier, now_unix};
use kubesphere_client::{Client, Config, ListQuery};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const POLICY: &str = include_str!("../policy.yaml");
const READER: &str = "kubesphere:serviceaccount:dev:reader";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let store = rbac()?;
    let keys = token()?;
    webhook().await?;
    sdk(store, keys).await?;
    println!("consumer: all four crates behaved as documented");
    Ok(())
}

/// 1. A policy from YAML, two decisions and their explanations.
fn rbac() -> Result<Arc<PolicyStore>> {
    let policy: Policy = serde_yaml::from_str(POLICY)?;
    let store = PolicyStore::new(PolicyIndex::build(&policy));
    store.set_ready(true);
    let authorizer = Authorizer::new(Mode::Rbac);

    let info = resolve("GET", "/api/v1/namespaces/dev/pods", "limit=10")?;
    let allowed = info.attributes(READER, &[]);
    let verdict = authorizer.decide(&store, &allowed);
    check(
        verdict.allowed(),
        "the reader may list pods in the workspace's namespace",
    )?;
    println!("rbac: GET pods in dev: {}", store.load().explain(&allowed));

    let info = resolve("DELETE", "/api/v1/namespaces/dev/pods/web", "")?;
    let denied = info.attributes(READER, &[]);
    let verdict = authorizer.decide(&store, &denied);
    check(!verdict.allowed(), "the reader may not delete pods")?;
    println!("rbac: DELETE pod dev/web: {}", store.load().explain(&denied));
    let status = Status::forbidden(&denied, &verdict.reason(&denied));
    println!(
        "rbac: what ks-apiserver answers: {}",
        status.to_json(false).trim_end()
    );
    Ok(Arc::new(store))
}

/// 2. Issue, verify, revoke.
fn token() -> Result<KeySet> {
    let keys = KeySet::legacy(b"consumer-example-secret-of-32-bytes!");
    let issuer = Issuer::new(keys.clone(), ksiam_token::DEFAULT_ISSUER);
    let token = issuer.issue_sa_token("dev", "reader", now_unix(), None)?;
    let user = Verifier::new(keys.clone()).verify(&token)?;
    check(user.username == READER, "the token names the ServiceAccount")?;
    println!("token: issued and verified a token for {}", user.username);

    let live = Arc::new(LiveTokens::default());
    let authn = Authenticator::new(keys.clone()).with_live_tokens(live.clone());
    live.hold("dev/reader-token-1", &token);
    check(authn.authenticate(&token).is_ok(), "a held token authenticates")?;
    live.release("dev/reader-token-1");
    let revoked = authn.authenticate(&token);
    check(
        revoked == Err(AuthError::Token(ksiam_token::Error::Revoked)),
        "a released token is revoked",
    )?;
    println!("token: after its Secret is gone: {}", revoked.unwrap_err());

    let forged = Issuer::new(KeySet::legacy(b"some-other-secret-of-32-bytes-long!!"), "x").issue_sa_token(
        "dev",
        "reader",
        now_unix(),
        None,
    )?;
    let error = Verifier::new(keys.clone()).verify(&forged).unwrap_err();
    check(
        error == ksiam_token::Error::SignatureInvalid,
        "a token of another key is refused",
    )?;
    println!("token: a token signed with another key: {error}");
    Ok(keys)
}

/// 3. The pod webhook's mutation on an AdmissionReview, no server.
async fn webhook() -> Result<()> {
    let lookup = ksiam_webhook::MemoryLookup::new()
        .with_service_account(serde_json::from_value(json!({
            "apiVersion": "kubesphere.io/v1alpha1", "kind": "ServiceAccount",
            "metadata": {"name": "reader", "namespace": "dev"},
            "secrets": [{"name": "reader-token-1"}]
        }))?)
        .with_secret("dev", "reader-token-1");
    let review = |annotations: serde_json::Value| {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "dev", "operation": "CREATE", "userInfo": {"username": "admin"},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "app", "namespace": "dev", "annotations": annotations},
                    "spec": {"containers": [{"name": "app", "image": "busybox"}]}
                }
            }
        })
        .to_string()
    };
    let answer = |body: String| {
        let lookup = lookup.clone();
        async move {
            let review = ksiam_webhook::parse_review(body.as_bytes())?;
            let options = ksiam_webhook::InjectOptions::default();
            let response =
                ksiam_webhook::mutate(&review.request, review.object.as_ref(), &lookup, options).await;
            let encoded: serde_json::Value =
                serde_json::from_slice(&ksiam_webhook::encode_review(response)?)?;
            Ok::<_, Box<dyn Error>>(encoded["response"].clone())
        }
    };

    let patched = answer(review(json!({"kubesphere.io/serviceaccount-name": "reader"}))).await?;
    check(
        patched["allowed"] == true && patched["patchType"] == "JSONPatch",
        "an annotated pod is patched",
    )?;
    let patch =
        base64::engine::general_purpose::STANDARD.decode(patched["patch"].as_str().unwrap_or_default())?;
    println!(
        "webhook: patch for an annotated pod: {}",
        String::from_utf8_lossy(&patch)
    );

    let missing = answer(review(json!({"kubesphere.io/serviceaccount-name": "ghost"}))).await?;
    check(
        missing["allowed"] == false && missing["status"]["code"] == 404,
        "a missing ServiceAccount denies",
    )?;
    println!(
        "webhook: a pod naming a missing ServiceAccount: {}",
        missing["status"]["message"]
    );

    // The pure function alone, for a controller that builds pods itself.
    let mut pod = json!({"spec": {"containers": [{"name": "app"}]}});
    ksiam_webhook::inject(&mut pod, "reader-token-1", false);
    check(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
            == "/var/run/secrets/kubesphere.io/serviceaccount",
        "inject mounts the token",
    )?;
    Ok(())
}

/// 4. kubesphere-client against a gateway made of ksiam-token and ksiam-rbac.
async fn sdk(store: Arc<PolicyStore>, keys: KeySet) -> Result<()> {
    let gateway = Arc::new(Gateway {
        authn: Authenticator::new(keys.clone()),
        authz: Authorizer::new(Mode::Rbac),
        store,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let host = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(listener, gateway));

    let issuer = Issuer::new(keys, ksiam_token::DEFAULT_ISSUER);
    let dir = std::env::temp_dir().join(format!("ksiam-consumer-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let client_of = |name: &str| -> Result<Client> {
        let file = dir.join(name);
        std::fs::write(&file, issuer.issue_sa_token("dev", name, now_unix(), None)?)?;
        Ok(Client::try_from(Config::from_parts(&host, file, None)?)?)
    };

    let clusters = client_of("reader")?.list_clusters(&ListQuery::new()).await?;
    check(clusters.names() == ["host"], "the reader lists the clusters")?;
    println!("sdk: dev/reader lists clusters: {:?}", clusters.names());

    let error = client_of("stranger")?
        .list_clusters(&ListQuery::new())
        .await
        .unwrap_err();
    check(
        error.code() == Some(403),
        "a ServiceAccount without a binding gets 403",
    )?;
    println!("sdk: dev/stranger gets {:?}: {error}", error.code());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Authentication, then authorization, then the answer: what a gateway in front of ks-apiserver does.
struct Gateway {
    authn: Authenticator,
    authz: Authorizer,
    store: Arc<PolicyStore>,
}

impl Gateway {
    /// `(HTTP status, JSON body)` for one request head.
    fn answer(&self, head: &str) -> (u16, String) {
        let mut lines = head.lines();
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let (method, target) = (
            request_line.next().unwrap_or_default(),
            request_line.next().unwrap_or_default(),
        );
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let token = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .and_then(|(_, value)| value.trim().strip_prefix("Bearer "))
            .unwrap_or_default();
        let user = match self.authn.authenticate(token) {
            Ok(user) => user,
            Err(error) => return (401, Status::unauthorized(error.to_string()).to_json(false)),
        };
        let info = match resolve(method, path, query) {
            Ok(info) => info,
            Err(error) => {
                return (
                    400,
                    Status::failure(400, "BadRequest", error.to_string()).to_json(false),
                );
            }
        };
        let attributes = info.attributes(&user.username, &user.groups);
        let verdict = self.authz.decide(&self.store, &attributes);
        if !verdict.allowed() {
            let status = Status::forbidden(&attributes, &verdict.reason(&attributes));
            return (403, status.to_json(false));
        }
        let clusters = json!({"items": [{"metadata": {"name": "host"}}], "totalItems": 1});
        (200, clusters.to_string())
    }
}

/// One request per connection, answered and closed.
async fn serve(listener: TcpListener, gateway: Arc<Gateway>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut chunk = [0; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 && head.len() < 64 * 1024 => head.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let (code, body) = gateway.answer(&String::from_utf8_lossy(&head));
            let reason = match code {
                200 => "OK",
                400 => "Bad Request",
                401 => "Unauthorized",
                _ => "Forbidden",
            };
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("not as documented: {what}").into())
    }
}
