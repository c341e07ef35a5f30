//! The token service's gRPC API (`KSIAM_TOKEN_GRPC`) on the real API server: its live-token set follows the
//! token Secrets, `VerifyToken` refuses a token once its Secret is deleted, and `WatchRevocations` streams
//! the revocation.

use std::time::{Duration, Instant};

use ksiam_e2e::{
    GrpcIdentity, TestNamespace, e2e, grpc_tls, kubectl, kubectl_with_stdin, secret_token, token_secret_name,
};
use ksiam_proto::token::v1 as pb;
use ksiam_token::grpc::TokenClient;

#[test]
fn deleting_the_token_secret_revokes_the_token_in_the_token_service() -> anyhow::Result<()> {
    e2e();
    let addr = std::env::var("KSIAM_TOKEN_GRPC")
        .map_err(|_| anyhow::anyhow!("KSIAM_TOKEN_GRPC is not set: run via `cargo xtask e2e`"))?;
    let ns = TestNamespace::create("tokensvc")?;
    let ns = ns.name();
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: {ns}\n"
        ),
    )?;
    let secret = token_secret_name(ns, "app")?;
    let token = secret_token(ns, &secret)?;
    let id = ksiam_token::token_id(&token);

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // As the gateway: a verifier, allowed VerifyToken and WatchRevocations (not IssueToken).
            let client = TokenClient::connect_with(addr, Some(&grpc_tls(GrpcIdentity::Gateway)?)).await?;
            // The Secret's watch event may still be on its way: wait until the token is live.
            let start = Instant::now();
            loop {
                match client.verify(&token).await {
                    Ok(user) => {
                        assert_eq!(user.username, format!("kubesphere:serviceaccount:{ns}:app"));
                        break;
                    }
                    Err(e) => anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "never live: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            let mut revocations = client
                .grpc()
                .watch_revocations(pb::WatchRevocationsRequest {})
                .await?
                .into_inner();
            let first = revocations.message().await?.expect("a snapshot on connect");
            assert!(first.full && first.live_token_ids_added.contains(&id), "the snapshot lists the live token");

            kubectl(&["delete", "secret", &secret, "-n", ns, "--wait=false"])?;
            let deleted = Instant::now();
            let revoked_after = loop {
                let event = tokio::time::timeout(Duration::from_secs(10), revocations.message())
                    .await??
                    .expect("the stream stays open");
                if event.live_token_ids_removed.contains(&id) {
                    break deleted.elapsed();
                }
            };
            let err = client.verify(&token).await.expect_err("a revoked token does not verify");
            assert!(err.to_string().contains("token has been revoked"), "{err}");
            eprintln!("WatchRevocations reported the revocation {revoked_after:?} after `kubectl delete secret` returned");
            anyhow::Ok(())
        })
}
