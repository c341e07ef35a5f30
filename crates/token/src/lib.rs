//! KubeSphere-compatible ServiceAccount tokens.
//!
//! - [`Issuer::issue_sa_token`] writes tokens byte-identical to KubeSphere's: HS256, header exactly
//!   `{"alg":"HS256","typ":"JWT"}`, claims `iss, sub, iat, token_type, username` in that order.
//! - [`Verifier::verify`] checks them per spec §5.3, with upstream's error texts, plus what KubeSphere lacks:
//!   key ids and rotation ([`KeySet`]), optional ES256 keys with a JWKS document, enforced `exp`, and revocation through the set of live tokens
//!   ([`LiveTokens`]): a token counts only while a Secret holds it.
//! - [`VerifyCache`]: verified tokens, keyed by a hash of the token, for at most 10 s (or until `exp`).
//!
//! - [`Authenticator`]: bearer authentication as ks-apiserver does it (spec §6.2): verify through the cache,
//!   then a live token and an existing ServiceAccount for ServiceAccounts, an existing enabled user otherwise.
//!
//! Tokens never appear in `Debug` output or error messages of this crate.
//!
//! # Features
//!
//! - `grpc` (off by default): the `grpc` module (the `TokenService` gRPC server and `TokenClient`, on tonic)
//!   and `grpc_auth` (mutual TLS and a per-method allow-list by client certificate).
//! - `test-pki` (off by default): `test_pki`, a throw-away CA for tests of the mutual-TLS servers.
//!
//! ```
//! use ksiam_token::{Issuer, KeySet, Verifier};
//!
//! let keys = KeySet::legacy(b"0123456789abcdef0123456789abcdef");
//! let issuer = Issuer::new(keys.clone(), ksiam_token::DEFAULT_ISSUER);
//! let token = issuer.issue_sa_token("default", "sample", 1721324166, None).unwrap();
//! let user = Verifier::new(keys).verify_at(&token, 1721324200).unwrap();
//! assert_eq!(user.username, "kubesphere:serviceaccount:default:sample");
//! assert_eq!(user.service_account(), Some(("default", "sample")));
//! ```

#![deny(missing_docs)]

pub mod authn;
mod cache;
mod claims;
mod jws;
mod keys;
mod live;

#[cfg(feature = "grpc")]
pub mod follow;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "grpc")]
pub mod grpc_auth;
#[cfg(feature = "test-pki")]
pub mod test_pki;

use std::time::{SystemTime, UNIX_EPOCH};

pub use self::{
    authn::{AuthError, Authenticated, Authenticator, Directory},
    cache::{Verified, VerifyCache},
    claims::{Claims, DEFAULT_ISSUER, SA_USERNAME_PREFIX, STATIC_TOKEN, parse_sa_username, sa_username},
    jws::{decode_unverified, token_id},
    keys::{EcKey, HmacKey, Key, KeySet, openid_configuration},
    live::{HoldTokens, LiveTokens},
};

/// Why a token was rejected. The texts follow KubeSphere's where it has one; none contains the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not three dot-separated segments.
    #[error("token contains an invalid number of segments")]
    Segments,
    /// A segment is not base64url.
    #[error("illegal base64 data in token {0}")]
    Base64(&'static str),
    /// The header or claims are not a JSON object of the expected shape.
    #[error("invalid token {0}: {1}")]
    Json(&'static str, String),
    /// An algorithm other than the configured ones (including `none`).
    #[error("unexpect signature algorithm {0}")]
    Algorithm(String),
    /// The signature does not match.
    #[error("signature is invalid")]
    SignatureInvalid,
    /// A `kid` that no key has.
    #[error("unknown signing key id {0:?}")]
    UnknownKeyId(String),
    /// `exp` is in the past.
    #[error("jwt: token is expired by {0}")]
    Expired(String),
    /// `iat` is further in the future than the allowed clock skew.
    #[error("jwt: token used before issued, iat:{iat}, now:{now}")]
    UsedBeforeIssued {
        /// The token's `iat`.
        iat: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// No `username` claim.
    #[error("token has no username")]
    NoUsername,
    /// `sub` says ServiceAccount but is not `kubesphere:serviceaccount:<ns>:<name>`.
    #[error("invalid service account username {0:?}")]
    ServiceAccountName(String),
    /// The token is not held by any token Secret any more.
    #[error("token has been revoked")]
    Revoked,
    /// There is no key to sign with.
    #[error("no signing key configured")]
    NoSigningKey,
    /// Oversized input.
    #[error("token is larger than {0} bytes")]
    TooLarge(usize),
    /// Unusable key material.
    #[error("invalid key: {0}")]
    KeyMaterial(&'static str),
}

/// An authenticated user: name and extra, never groups (KubeSphere gives SA tokens none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedUser {
    /// The `username` claim.
    pub username: String,
    /// The `token_type` claim.
    pub token_type: String,
    /// The `exp` claim.
    pub expires_at: Option<i64>,
    /// The `extra` claim.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl VerifiedUser {
    /// `(namespace, name)` when the user is a KubeSphere ServiceAccount.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        parse_sa_username(&self.username)
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Strictly increasing `iat`s per subject.
///
/// KubeSphere's tokens have no `jti`, so two tokens for one ServiceAccount issued in the same second are
/// byte-identical: a token Secret recreated within a second of its deletion would hold the very token the
/// deletion meant to revoke. Whoever issues ServiceAccount tokens (the controller in `ksiam all`, the token
/// service in the split topology) takes each `iat` from here: at most a few seconds ahead of the clock,
/// well inside KubeSphere's 10 s `maximumClockSkew`, and the claim set stays exactly KubeSphere's.
#[derive(Debug, Default)]
pub struct UniqueIat {
    last: parking_lot::Mutex<std::collections::HashMap<String, i64>>,
}

impl UniqueIat {
    /// The `iat` for the next token of `subject`: now, or one more than its previous one.
    pub fn next(&self, subject: &str) -> i64 {
        let now = now_unix();
        let mut last = self.last.lock();
        // Forget subjects whose last token is older than the clock: they cannot collide any more.
        if last.len() > 10_000 {
            last.retain(|_, iat| *iat >= now);
        }
        let iat = last.get(subject).map_or(now, |prev| now.max(prev + 1));
        last.insert(subject.to_owned(), iat);
        iat
    }
}

/// Issues tokens.
#[derive(Clone, Debug)]
pub struct Issuer {
    keys: KeySet,
    issuer: String,
}

impl Issuer {
    /// An issuer signing with `keys`' active key and setting `iss` to `issuer`.
    pub fn new(keys: KeySet, issuer: impl Into<String>) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
        }
    }

    /// A ServiceAccount token for `namespace/name` issued at `iat`, expiring at `exp` if given.
    pub fn issue_sa_token(
        &self,
        namespace: &str,
        name: &str,
        iat: i64,
        exp: Option<i64>,
    ) -> Result<String, Error> {
        let username = sa_username(namespace, name);
        let claims = Claims {
            iss: Some(self.issuer.clone()),
            sub: Some(username.clone()),
            exp,
            iat: Some(iat),
            token_type: Some(STATIC_TOKEN.to_owned()),
            username: Some(username),
            ..Default::default()
        };
        self.issue(&claims)
    }

    /// Signs arbitrary claims with the active key.
    pub fn issue(&self, claims: &Claims) -> Result<String, Error> {
        let (kid, key) = self.keys.signing().ok_or(Error::NoSigningKey)?;
        Ok(jws::encode(kid, &key, claims))
    }
}

/// Verifies tokens.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: KeySet,
    max_clock_skew: i64,
}

impl Verifier {
    /// A verifier accepting `keys`, with KubeSphere's default clock skew of 10 s.
    pub fn new(keys: KeySet) -> Self {
        Self {
            keys,
            max_clock_skew: 10,
        }
    }

    /// Sets `maximumClockSkew` in seconds.
    pub fn with_max_clock_skew(mut self, seconds: i64) -> Self {
        self.max_clock_skew = seconds;
        self
    }

    /// Verifies against the current time.
    pub fn verify(&self, token: &str) -> Result<VerifiedUser, Error> {
        self.verify_at(token, now_unix())
    }

    /// Verifies as if the time were `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<VerifiedUser, Error> {
        let parsed = jws::decode(token)?;
        let key = self.keys.verifying(parsed.kid.as_deref(), &parsed.alg)?;
        if !key.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
            return Err(Error::SignatureInvalid);
        }
        let claims = parsed.claims;
        if let Some(exp) = claims.exp
            && now >= exp
        {
            return Err(Error::Expired(go_duration(now - exp)));
        }
        if let Some(iat) = claims.iat
            && iat > now + self.max_clock_skew
        {
            return Err(Error::UsedBeforeIssued { iat, now });
        }
        let username = claims
            .username
            .filter(|u| !u.is_empty())
            .ok_or(Error::NoUsername)?;
        if let Some(sub) = &claims.sub
            && sub.starts_with(SA_USERNAME_PREFIX)
            && parse_sa_username(sub).is_none()
        {
            return Err(Error::ServiceAccountName(sub.clone()));
        }
        if username.starts_with(SA_USERNAME_PREFIX) && parse_sa_username(&username).is_none() {
            return Err(Error::ServiceAccountName(username));
        }
        Ok(VerifiedUser {
            username,
            token_type: claims.token_type.unwrap_or_default(),
            expires_at: claims.exp,
            extra: claims.extra.unwrap_or_default(),
        })
    }
}

/// Go's `time.Duration` text for whole seconds (`1h2m3s`, `45s`, `0s`).
fn go_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
