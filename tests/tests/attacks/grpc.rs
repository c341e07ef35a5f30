//! Class: unauthenticated gRPC (issue 12, hole 7). `ksiam all`'s token service minted a token for any
//! ServiceAccount, and its authorizer answered RulesFor/WhoCan (policy oracles), for whoever could connect.
//!
//! Closed by `ksiam_token::grpc_auth`: mutual TLS with client certificates from the cluster CA (identity =
//! the certificate's CN) and an allow-list per method (IssueToken: `ksiam-controller` only; RulesFor,
//! WhoCan: `ksiam-admin` only). Every test here talks to the real `ksiam all` that `cargo xtask e2e` starts.

use ksiam_e2e::{GrpcIdentity, e2e, grpc_ca_pem, grpc_channel, grpc_tls, grpc_tls_anonymous};
use ksiam_proto::{
    authz::v1::{self as authz_pb, authorizer_client::AuthorizerClient},
    token::v1::{self as token_pb, token_service_client::TokenServiceClient},
};
use ksiam_token::grpc_auth::ClientTls;
use tonic::{Code, transport::Channel};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn issue_request() -> token_pb::IssueTokenRequest {
    token_pb::IssueTokenRequest {
        namespace: "kube-system".into(),
        name: "attacker-minted".into(),
        expires_in_seconds: None,
    }
}

fn who_can_request() -> authz_pb::WhoCanRequest {
    authz_pb::WhoCanRequest {
        attributes: Some(authz_pb::Attributes {
            verb: "get".into(),
            resource: "secrets".into(),
            namespace: "kube-system".into(),
            resource_request: true,
            scope: authz_pb::Scope::Namespace as i32,
            ..Default::default()
        }),
    }
}

fn rules_for_request() -> authz_pb::RulesForRequest {
    authz_pb::RulesForRequest {
        user: "admin".into(),
        scope: authz_pb::Scope::Cluster as i32,
        ..Default::default()
    }
}

/// The code of an IssueToken call over `tls` (`Ok` when a token came back, which must then not be empty);
/// `None` when the connection itself was refused.
async fn issue_token_as(tls: &ClientTls) -> anyhow::Result<Option<Code>> {
    let Ok(channel) = grpc_channel("KSIAM_TOKEN_GRPC", tls).await else {
        return Ok(None);
    };
    Ok(Some(
        match TokenServiceClient::new(channel)
            .issue_token(issue_request())
            .await
        {
            Ok(response) => {
                anyhow::ensure!(!response.into_inner().token.is_empty(), "an empty token");
                Code::Ok
            }
            Err(status) => {
                anyhow::ensure!(
                    !status.message().contains("eyJ"),
                    "a refusal must not carry a token: {}",
                    status.message()
                );
                status.code()
            }
        },
    ))
}

async fn authorizer(tls: &ClientTls) -> anyhow::Result<AuthorizerClient<Channel>> {
    Ok(AuthorizerClient::new(
        grpc_channel("KSIAM_AUTHZ_GRPC", tls).await?,
    ))
}

/// A client certificate with common name `cn` from a CA the cluster never heard of (the server is still
/// trusted through the real CA).
fn foreign_identity(cn: &str) -> anyhow::Result<ClientTls> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::default();
    // Same name as the real CA: only the key tells them apart.
    ca.distinguished_name.push(DnType::CommonName, "ksiam-local-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut client = CertificateParams::default();
    client.distinguished_name.push(DnType::CommonName, cn);
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = client.signed_by(&key, &ca)?;
    Ok(ClientTls::from_pem(
        grpc_ca_pem()?,
        Some((cert.pem().into_bytes(), key.serialize_pem().into_bytes())),
    ))
}

#[test]
fn grpc_without_a_client_certificate_nothing_is_minted_or_revealed() -> anyhow::Result<()> {
    e2e();
    runtime()?.block_on(async {
        let anonymous = grpc_tls_anonymous()?;
        assert_eq!(
            issue_token_as(&anonymous).await?,
            Some(Code::Unauthenticated),
            "IssueToken over TLS without a client certificate"
        );
        let mut authz = authorizer(&anonymous).await?;
        let status = authz.who_can(who_can_request()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "WhoCan: {}",
            status.message()
        );
        let status = authz.rules_for(rules_for_request()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "RulesFor: {}",
            status.message()
        );

        // Plaintext to the gRPC ports (what every client did before) gets nothing either.
        for var in ["KSIAM_TOKEN_GRPC", "KSIAM_AUTHZ_GRPC"] {
            let addr = std::env::var(var)?.replacen("https://", "http://", 1);
            let minted = match ksiam_token::grpc_auth::connect(addr.clone(), None).await {
                Ok(channel) => TokenServiceClient::new(channel)
                    .issue_token(issue_request())
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            assert!(!minted, "plaintext IssueToken at {addr}");
        }
        anyhow::Ok(())
    })
}

#[test]
fn grpc_a_client_certificate_from_another_ca_is_refused() -> anyhow::Result<()> {
    e2e();
    runtime()?.block_on(async {
        let forged = issue_token_as(&foreign_identity("ksiam-controller")?).await?;
        assert!(
            forged.is_none() || forged.is_some_and(|code| code != Code::Ok),
            "a ksiam-controller certificate from a foreign CA minted a token"
        );
        let answered = match authorizer(&foreign_identity("ksiam-admin")?).await {
            Ok(mut client) => client.who_can(who_can_request()).await.is_ok(),
            Err(_) => false,
        };
        assert!(
            !answered,
            "a ksiam-admin certificate from a foreign CA got WhoCan"
        );
        anyhow::Ok(())
    })
}

#[test]
fn grpc_only_the_controller_identity_may_issue_tokens() -> anyhow::Result<()> {
    e2e();
    runtime()?.block_on(async {
        for (identity, cn) in [
            (GrpcIdentity::Admin, "ksiam-admin"),
            (GrpcIdentity::Gateway, "ksiam-gateway"),
        ] {
            let channel = grpc_channel("KSIAM_TOKEN_GRPC", &grpc_tls(identity)?).await?;
            let status = TokenServiceClient::new(channel)
                .issue_token(issue_request())
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{cn}: {}",
                status.message()
            );
            assert!(
                status
                    .message()
                    .contains("ksiam.token.v1.TokenService/IssueToken")
                    && status.message().contains(cn),
                "names the method and the identity: {}",
                status.message()
            );
        }

        // The controller identity is allowed.
        assert_eq!(
            issue_token_as(&grpc_tls(GrpcIdentity::Controller)?).await?,
            Some(Code::Ok),
            "the controller identity issues tokens"
        );
        anyhow::Ok(())
    })
}

#[test]
fn grpc_only_the_admin_identity_may_query_the_policy() -> anyhow::Result<()> {
    e2e();
    runtime()?.block_on(async {
        for identity in [GrpcIdentity::Gateway, GrpcIdentity::Controller] {
            let mut authz = authorizer(&grpc_tls(identity)?).await?;
            let status = authz.who_can(who_can_request()).await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{identity:?} WhoCan: {}",
                status.message()
            );
            assert!(
                status.message().contains("ksiam.authz.v1.Authorizer/WhoCan"),
                "{}",
                status.message()
            );
            let status = authz.rules_for(rules_for_request()).await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{identity:?} RulesFor: {}",
                status.message()
            );
        }
        // The gateway may still ask for decisions; the admin gets the oracles.
        let mut gateway = authorizer(&grpc_tls(GrpcIdentity::Gateway)?).await?;
        let decision = gateway
            .authorize(authz_pb::AuthorizeRequest {
                attributes: Some(authz_pb::Attributes {
                    user: "kubesphere:serviceaccount:default:nobody".into(),
                    ..who_can_request().attributes.unwrap_or_default()
                }),
            })
            .await?
            .into_inner();
        assert!(!decision.allowed);
        let mut admin = authorizer(&grpc_tls(GrpcIdentity::Admin)?).await?;
        let who = admin.who_can(who_can_request()).await?.into_inner();
        assert!(
            !who.subjects.is_empty(),
            "someone (platform-admin) may read kube-system Secrets"
        );
        admin.rules_for(rules_for_request()).await?;
        anyhow::Ok(())
    })
}
