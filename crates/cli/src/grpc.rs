//! The gRPC flags shared by every mode: how a server authenticates its clients ([`GrpcServerArgs`]) and
//! which identity a client presents ([`GrpcClientArgs`]). The rules live in `ksiam_token::grpc_auth`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgAction, Args};
use ksiam_token::grpc_auth::{AllowList, ClientTls, GrpcSecurity, TlsFiles};

/// How the gRPC servers (token service, authorizer) authenticate their clients.
#[derive(Args, Clone, Debug, Default)]
pub struct GrpcServerArgs {
    /// Serving certificate (PEM chain) of the gRPC APIs; re-read when it changes.
    #[arg(long, env = "KSIAM_GRPC_TLS_CERT_FILE")]
    pub grpc_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the gRPC serving certificate.
    #[arg(long, env = "KSIAM_GRPC_TLS_KEY_FILE")]
    pub grpc_tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates must chain to (the cluster CA, or a CA for ksiam's
    /// components). A client's identity is its certificate's common name (CN).
    #[arg(long, env = "KSIAM_GRPC_CLIENT_CA_FILE")]
    pub grpc_client_ca_file: Option<PathBuf>,
    /// Who may call a method, `package.Service/Method=ID[,ID…]` or `package.Service/*=ID[,ID…]`
    /// (repeatable; `;`-separated in the environment). Each entry replaces the default identities of its
    /// method: IssueToken → ksiam-controller; VerifyToken, WatchKeys, WatchRevocations → ksiam-gateway,
    /// ksiam-authz, ksiam-verifier; Authorize, AuthorizeBatch → ksiam-gateway, ksiam-webhook, ksiam-admin;
    /// RulesFor, WhoCan, reflection → ksiam-admin. Health is open to everyone.
    #[arg(
        long = "grpc-allow",
        env = "KSIAM_GRPC_ALLOW",
        value_name = "METHOD=IDS",
        value_delimiter = ';'
    )]
    pub grpc_allow: Vec<String>,
    /// Serve gRPC in plaintext, without client identities; refused unless the listen address is loopback.
    /// IssueToken, RulesFor, WhoCan and reflection then answer PERMISSION_DENIED to everyone.
    #[arg(
        long,
        env = "KSIAM_GRPC_INSECURE_LOOPBACK",
        action = ArgAction::SetTrue,
        conflicts_with_all = ["grpc_tls_cert_file", "grpc_tls_key_file", "grpc_client_ca_file"]
    )]
    pub grpc_insecure_loopback: bool,
}

impl GrpcServerArgs {
    /// The security of the gRPC servers; an error unless mutual TLS is fully configured or plaintext on
    /// loopback was asked for explicitly.
    pub fn security(&self) -> anyhow::Result<GrpcSecurity> {
        let allow = AllowList::default().with_entries(&self.grpc_allow)?;
        if self.grpc_insecure_loopback {
            return Ok(GrpcSecurity::insecure_loopback(allow));
        }
        match (
            &self.grpc_tls_cert_file,
            &self.grpc_tls_key_file,
            &self.grpc_client_ca_file,
        ) {
            (Some(cert), Some(key), Some(client_ca)) => Ok(GrpcSecurity::mutual_tls(
                TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: client_ca.clone(),
                },
                allow,
            )),
            (None, None, None) => anyhow::bail!(
                "gRPC is served only with mutual TLS: set --grpc-tls-cert-file, --grpc-tls-key-file and \
                 --grpc-client-ca-file (or, on a loopback address only, --grpc-insecure-loopback)"
            ),
            _ => anyhow::bail!(
                "--grpc-tls-cert-file, --grpc-tls-key-file and --grpc-client-ca-file go together"
            ),
        }
    }
}

/// The identity a gRPC client (`ksiam can-i`, `ksiam who-can`) presents, and the CA it trusts.
#[derive(Args, Clone, Debug, Default)]
pub struct GrpcClientArgs {
    /// CA bundle (PEM) the gRPC server's certificate must chain to.
    #[arg(long, env = "KSIAM_GRPC_CA")]
    pub grpc_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to the gRPC server; its CN is the identity (e.g. ksiam-admin).
    #[arg(long, env = "KSIAM_GRPC_CLIENT_CERT")]
    pub grpc_client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "KSIAM_GRPC_CLIENT_KEY")]
    pub grpc_client_key_file: Option<PathBuf>,
}

impl GrpcClientArgs {
    /// The TLS settings for `server`: required for an `https://` address, refused for a plaintext one.
    pub fn tls_for(&self, server: &str) -> anyhow::Result<Option<ClientTls>> {
        let https = server.starts_with("https://");
        match (
            &self.grpc_ca_file,
            &self.grpc_client_cert_file,
            &self.grpc_client_key_file,
        ) {
            (Some(ca), Some(cert), Some(key)) if https => Ok(Some(
                ClientTls::from_files(ca, cert, key).context("loading the gRPC client identity")?,
            )),
            (None, None, None) if !https => Ok(None),
            (_, _, _) if !https => anyhow::bail!(
                "{server} is plaintext: use an https:// address with --grpc-ca-file and a client certificate"
            ),
            _ => anyhow::bail!(
                "{server} needs --grpc-ca-file, --grpc-client-cert-file and --grpc-client-key-file \
                 (KSIAM_GRPC_CA, KSIAM_GRPC_CLIENT_CERT, KSIAM_GRPC_CLIENT_KEY)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        grpc: GrpcServerArgs,
    }

    fn parse(args: &[&str]) -> Result<GrpcServerArgs, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.grpc)
    }

    #[test]
    fn the_server_needs_mutual_tls_or_an_explicit_insecure_loopback() {
        assert!(
            parse(&[]).unwrap().security().is_err(),
            "nothing configured: no gRPC"
        );
        assert!(
            parse(&["--grpc-tls-cert-file", "c", "--grpc-tls-key-file", "k"])
                .unwrap()
                .security()
                .is_err(),
            "no client CA: no client authentication, refused"
        );
        let tls = parse(&[
            "--grpc-tls-cert-file",
            "c",
            "--grpc-tls-key-file",
            "k",
            "--grpc-client-ca-file",
            "ca",
        ])
        .unwrap()
        .security()
        .unwrap();
        assert!(!tls.is_plaintext());
        let plain = parse(&["--grpc-insecure-loopback"]).unwrap().security().unwrap();
        assert!(plain.is_plaintext());
        assert!(parse(&["--grpc-insecure-loopback", "--grpc-client-ca-file", "ca"]).is_err());
    }

    #[test]
    fn allow_entries_replace_defaults_and_bad_ones_are_errors() {
        let args = parse(&[
            "--grpc-insecure-loopback",
            "--grpc-allow",
            "ksiam.token.v1.TokenService/IssueToken=minter",
        ])
        .unwrap();
        let security = args.security().unwrap();
        assert_eq!(
            security
                .allow_list()
                .identities("ksiam.token.v1.TokenService/IssueToken"),
            Some(&["minter".to_owned()][..])
        );
        let bad = parse(&["--grpc-insecure-loopback", "--grpc-allow", "IssueToken"]).unwrap();
        assert!(bad.security().is_err());
    }

    #[test]
    fn a_client_uses_tls_exactly_for_https() {
        let none = GrpcClientArgs::default();
        assert!(none.tls_for("http://127.0.0.1:1").unwrap().is_none());
        assert!(
            none.tls_for("https://127.0.0.1:1").is_err(),
            "https without an identity"
        );
        let partial = GrpcClientArgs {
            grpc_ca_file: Some("ca".into()),
            ..Default::default()
        };
        assert!(partial.tls_for("https://127.0.0.1:1").is_err());
        assert!(
            partial.tls_for("http://127.0.0.1:1").is_err(),
            "an identity over plaintext"
        );
    }
}
