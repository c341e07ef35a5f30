//! Signing keys: the legacy KubeSphere `jwtSecret` (HS256 tokens without `kid`) and a rotating set of keys
//! with ids, HMAC (HS256) or ECDSA P-256 (ES256). The algorithm is bound to the key: a token whose `alg`
//! does not match its key's type is rejected, so HS/ES confusion is impossible.

use std::{fmt, sync::Arc};

use aws_lc_rs::{
    hmac,
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair as _},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::Error;

/// An HMAC-SHA256 key. Its bytes are never printed.
#[derive(Clone)]
pub struct HmacKey {
    key: Arc<hmac::Key>,
}

impl HmacKey {
    /// A key from the raw secret bytes (KubeSphere uses the UTF-8 bytes of `jwtSecret`).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, secret)),
        }
    }

    pub(crate) fn sign(&self, data: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key, data).as_ref().to_vec()
    }

    /// Constant-time verification.
    pub(crate) fn verify(&self, data: &[u8], signature: &[u8]) -> bool {
        hmac::verify(&self.key, data, signature).is_ok()
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

/// An ECDSA P-256 key pair (ES256). The private half is never printed.
#[derive(Clone)]
pub struct EcKey {
    pair: Arc<EcdsaKeyPair>,
}

impl EcKey {
    /// Generates a new key pair.
    pub fn generate() -> Result<Self, Error> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| Error::KeyMaterial("cannot generate an ECDSA P-256 key"))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Loads a PKCS#8 (DER) private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| Error::KeyMaterial("not a PKCS#8 ECDSA P-256 private key"))?;
        Ok(Self { pair: Arc::new(pair) })
    }

    pub(crate) fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), data)
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default()
    }

    pub(crate) fn verify(&self, data: &[u8], sig: &[u8]) -> bool {
        let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.public());
        public.verify(data, sig).is_ok()
    }

    /// The uncompressed public point (`0x04 || X || Y`).
    fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key as a JWK.
    fn jwk(&self, kid: &str) -> serde_json::Value {
        let p = self.public();
        let (x, y) = p
            .get(1..)
            .unwrap_or_default()
            .split_at(p.len().saturating_sub(1) / 2);
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        })
    }
}

impl fmt::Debug for EcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EcKey(<redacted>)")
    }
}

/// Key material and the one algorithm it signs and verifies with.
#[derive(Clone, Debug)]
pub enum Key {
    /// HS256.
    Hmac(HmacKey),
    /// ES256.
    Ec(EcKey),
}

impl Key {
    /// The JWS `alg` of this key.
    pub fn alg(&self) -> &'static str {
        match self {
            Self::Hmac(_) => "HS256",
            Self::Ec(_) => "ES256",
        }
    }

    pub(crate) fn sign(&self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Hmac(k) => k.sign(data),
            Self::Ec(k) => k.sign(data),
        }
    }

    pub(crate) fn verify(&self, data: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Hmac(k) => k.verify(data, sig),
            Self::Ec(k) => k.verify(data, sig),
        }
    }
}

/// A key with an id.
#[derive(Clone, Debug)]
pub struct NamedKey {
    /// The `kid` header value.
    pub kid: String,
    /// The key.
    pub key: Key,
}

/// Every key that verifies, and the one that signs.
///
/// Rotation without downtime: add the new key (it verifies), make it active (it signs), and remove the old
/// key once no live token needs it. Tokens without `kid` verify against the legacy secret only.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    legacy: Option<HmacKey>,
    keys: Vec<NamedKey>,
    active: Option<String>,
}

impl KeySet {
    /// A key set with only KubeSphere's shared secret: tokens are issued without `kid`, byte-identical to
    /// KubeSphere's.
    pub fn legacy(secret: &[u8]) -> Self {
        Self {
            legacy: Some(HmacKey::new(secret)),
            keys: Vec::new(),
            active: None,
        }
    }

    /// Adds (or replaces) a named HS256 key; it verifies but does not sign until activated.
    pub fn add(&mut self, kid: impl Into<String>, secret: &[u8]) {
        self.add_key(kid, Key::Hmac(HmacKey::new(secret)));
    }

    /// Adds (or replaces) a named key of any type.
    pub fn add_key(&mut self, kid: impl Into<String>, key: Key) {
        let kid = kid.into();
        self.keys.retain(|k| k.kid != kid);
        self.keys.push(NamedKey { kid, key });
    }

    /// Makes a named key the signing key. `None` signs with the legacy secret (no `kid`).
    pub fn activate(&mut self, kid: Option<&str>) -> Result<(), Error> {
        match kid {
            Some(kid) if !self.keys.iter().any(|k| k.kid == kid) => Err(Error::UnknownKeyId(kid.to_owned())),
            Some(kid) => {
                self.active = Some(kid.to_owned());
                Ok(())
            }
            None if self.legacy.is_none() => Err(Error::NoSigningKey),
            None => {
                self.active = None;
                Ok(())
            }
        }
    }

    /// Removes a named key: tokens signed with it stop verifying.
    pub fn remove(&mut self, kid: &str) {
        self.keys.retain(|k| k.kid != kid);
        if self.active.as_deref() == Some(kid) {
            self.active = None;
        }
    }

    /// Removes the legacy secret: tokens without `kid` stop verifying.
    pub fn remove_legacy(&mut self) {
        self.legacy = None;
    }

    /// The ids of the named keys.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// The id of the signing key (`None`: the legacy secret).
    pub fn active_key_id(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// The JWKS document: the public keys of the asymmetric named keys (HMAC keys are secret and never
    /// published).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .filter_map(|k| match &k.key {
                Key::Ec(ec) => Some(ec.jwk(&k.kid)),
                Key::Hmac(_) => None,
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The key that signs new tokens, with its id.
    pub(crate) fn signing(&self) -> Option<(Option<&str>, Key)> {
        match &self.active {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| &k.kid == kid)
                .map(|k| (Some(k.kid.as_str()), k.key.clone())),
            None => self.legacy.as_ref().map(|k| (None, Key::Hmac(k.clone()))),
        }
    }

    /// The key that verifies a token with this `kid` and `alg`.
    pub(crate) fn verifying(&self, kid: Option<&str>, alg: &str) -> Result<Key, Error> {
        let key = match kid {
            None => Key::Hmac(self.legacy.clone().ok_or(Error::SignatureInvalid)?),
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid == kid)
                .map(|k| k.key.clone())
                .ok_or_else(|| Error::UnknownKeyId(kid.to_owned()))?,
        };
        if key.alg() != alg {
            return Err(Error::Algorithm(alg.to_owned()));
        }
        Ok(key)
    }
}

/// The OpenID Connect discovery document for `issuer`, pointing at `jwks_uri`.
pub fn openid_configuration(issuer: &str, jwks_uri: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["iss", "sub", "iat", "exp", "token_type", "username"],
    })
}
