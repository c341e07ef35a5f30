//! `ksiam token issue|decode`.

use std::{io::Write, path::PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use ksiam_token::{DEFAULT_ISSUER, Issuer, KeySet, decode_unverified, now_unix};

#[derive(Subcommand)]
pub enum Command {
    /// Print a ServiceAccount token, byte-identical to KubeSphere's for the same inputs.
    Issue {
        /// File holding KubeSphere's `authentication.issuer.jwtSecret` (one trailing newline is ignored).
        #[arg(long, env = "KSIAM_JWT_SECRET_FILE")]
        jwt_secret_file: PathBuf,
        /// The ServiceAccount's namespace.
        #[arg(long)]
        namespace: String,
        /// The ServiceAccount's name.
        #[arg(long)]
        name: String,
        /// `iat`, seconds since the epoch (default: now).
        #[arg(long)]
        iat: Option<i64>,
        /// `iss`.
        #[arg(long, default_value = DEFAULT_ISSUER)]
        issuer: String,
        /// Lifetime in seconds; sets `exp` (KubeSphere's tokens have none).
        #[arg(long)]
        expires_in: Option<i64>,
    },
    /// Run the token service: it owns the signing key and serves IssueToken, VerifyToken, WatchKeys and
    /// WatchRevocations over gRPC.
    Serve(Box<crate::modes::TokenServeCommand>),
    /// Print a token's header and claims (without verifying it).
    Decode {
        /// The token.
        token: String,
    },
}

pub fn run(cmd: Command, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        Command::Issue {
            jwt_secret_file,
            namespace,
            name,
            iat,
            issuer,
            expires_in,
        } => {
            let secret = read_secret(&jwt_secret_file)?;
            let iat = iat.unwrap_or_else(now_unix);
            let token = Issuer::new(KeySet::legacy(&secret), issuer).issue_sa_token(
                &namespace,
                &name,
                iat,
                expires_in.map(|s| iat + s),
            )?;
            writeln!(out, "{token}")?;
        }
        Command::Decode { token } => {
            let (header, claims) = decode_unverified(token.trim()).context("cannot decode token")?;
            writeln!(out, "{header}")?;
            writeln!(out, "{claims}")?;
        }
        Command::Serve(_) => anyhow::bail!("`ksiam token serve` is a service; main runs it"),
    }
    Ok(())
}

/// Reads the secret, dropping one trailing newline (files written by `echo` or mounted from Secrets).
pub fn read_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut secret =
        std::fs::read(path).with_context(|| format!("cannot read JWT secret file {}", path.display()))?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    anyhow::ensure!(
        !secret.is_empty(),
        "JWT secret MUST not be empty ({})",
        path.display()
    );
    Ok(secret)
}
