//! Clients of `ksiam all`'s gRPC APIs, with the client identities `cargo xtask e2e` issues (mutual TLS).

use ksiam_token::grpc_auth::ClientTls;

/// A gRPC client identity of the e2e stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcIdentity {
    /// `ksiam-admin` (`KSIAM_GRPC_CLIENT_CERT`/`_KEY`): decisions, RulesFor, WhoCan.
    Admin,
    /// `ksiam-controller` (`KSIAM_GRPC_CONTROLLER_CERT`/`_KEY`): the only identity that may IssueToken.
    Controller,
    /// `ksiam-gateway` (`KSIAM_GRPC_GATEWAY_CERT`/`_KEY`): decisions, VerifyToken and the watch streams.
    Gateway,
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("{name} is not set: run via `cargo xtask e2e`"))
}

/// The server CA (`KSIAM_GRPC_CA`) as PEM.
pub fn grpc_ca_pem() -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(env("KSIAM_GRPC_CA")?)?)
}

/// TLS settings presenting `identity`'s certificate and trusting the stack's CA.
pub fn grpc_tls(identity: GrpcIdentity) -> anyhow::Result<ClientTls> {
    let prefix = match identity {
        GrpcIdentity::Admin => "KSIAM_GRPC_CLIENT",
        GrpcIdentity::Controller => "KSIAM_GRPC_CONTROLLER",
        GrpcIdentity::Gateway => "KSIAM_GRPC_GATEWAY",
    };
    let cert = std::fs::read(env(&format!("{prefix}_CERT"))?)?;
    let key = std::fs::read(env(&format!("{prefix}_KEY"))?)?;
    Ok(ClientTls::from_pem(grpc_ca_pem()?, Some((cert, key))))
}

/// TLS settings trusting the stack's CA but presenting no client certificate.
pub fn grpc_tls_anonymous() -> anyhow::Result<ClientTls> {
    Ok(ClientTls::from_pem(grpc_ca_pem()?, None))
}

/// A channel to the gRPC API at `$addr_var` (`KSIAM_AUTHZ_GRPC`, `KSIAM_TOKEN_GRPC`) with `tls`.
pub async fn grpc_channel(addr_var: &str, tls: &ClientTls) -> anyhow::Result<tonic::transport::Channel> {
    crate::e2e();
    Ok(ksiam_token::grpc_auth::connect(env(addr_var)?, Some(tls)).await?)
}
