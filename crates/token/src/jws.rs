//! Compact JWS (HS256) encoding and parsing, written out so the header bytes match KubeSphere's exactly.

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig, general_purpose::URL_SAFE_NO_PAD},
};
use serde::Deserialize;

use crate::{Claims, Error, keys::Key};

/// Tokens larger than this are rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

pub(crate) fn encode(kid: Option<&str>, key: &Key, claims: &Claims) -> String {
    let header = match kid {
        // Exactly KubeSphere's header bytes (the legacy key is always HS256).
        None => r#"{"alg":"HS256","typ":"JWT"}"#.to_owned(),
        Some(kid) => {
            format!(
                r#"{{"alg":"{}","kid":{},"typ":"JWT"}}"#,
                key.alg(),
                serde_json::Value::from(kid)
            )
        }
    };
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = URL_SAFE_NO_PAD.encode(header.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

pub(crate) struct Parsed<'t> {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    pub(crate) signing_input: &'t str,
    pub(crate) signature: Vec<u8>,
    pub(crate) claims: Claims,
}

pub(crate) fn decode(token: &str) -> Result<Parsed<'_>, Error> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::TooLarge(MAX_TOKEN_BYTES));
    }
    let mut segments = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(Error::Segments);
    };
    let header: Header = json("header", &b64("header", h)?)?;
    if header.alg != "HS256" && header.alg != "ES256" {
        return Err(Error::Algorithm(header.alg));
    }
    let signature = b64("signature", s)?;
    let claims: Claims = json("claims", &b64("claims", c)?)?;
    Ok(Parsed {
        alg: header.alg,
        kid: header.kid,
        signing_input: &token[..h.len() + 1 + c.len()],
        signature,
        claims,
    })
}

/// Decodes like Go's `base64.RawURLEncoding` (which golang-jwt uses): unpadded or padded, and lenient about
/// non-zero trailing bits, so a damaged signature reads as "signature is invalid" there and here.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn b64(what: &'static str, segment: &str) -> Result<Vec<u8>, Error> {
    LENIENT.decode(segment).map_err(|_| Error::Base64(what))
}

fn json<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Json(what, e.to_string()))
}

/// The header and claims JSON text of a token, as written, without verifying it (for `ksiam token decode`).
pub fn decode_unverified(token: &str) -> Result<(String, String), Error> {
    let mut segments = token.split('.');
    let (Some(h), Some(c)) = (segments.next(), segments.next()) else {
        return Err(Error::Segments);
    };
    let text = |what, seg| -> Result<String, Error> {
        let bytes = b64(what, seg)?;
        json::<serde_json::Value>(what, &bytes)?;
        String::from_utf8(bytes).map_err(|e| Error::Json(what, e.to_string()))
    };
    Ok((text("header", h)?, text("claims", c)?))
}

/// A stable, non-reversible id for a token: base64url of its SHA-256 (used as revocation and cache key).
pub fn token_id(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}
