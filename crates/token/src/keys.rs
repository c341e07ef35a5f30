//! Signing keys: the legacy KubeSphere `jwtSecret` (tokens without `kid`) and a rotating set of keys with ids.

use std::fmt;

use aws_lc_rs::hmac;

/// An HMAC-SHA256 key. Its bytes are never printed.
#[derive(Clone)]
pub struct HmacKey {
    key: hmac::Key,
}

impl HmacKey {
    /// A key from the raw secret bytes (KubeSphere uses the UTF-8 bytes of `jwtSecret`).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
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

/// A key with an id.
#[derive(Clone, Debug)]
pub struct NamedKey {
    /// The `kid` header value.
    pub kid: String,
    /// The key.
    pub key: HmacKey,
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

    /// Adds (or replaces) a named key; it verifies but does not sign until activated.
    pub fn add(&mut self, kid: impl Into<String>, secret: &[u8]) {
        let kid = kid.into();
        self.keys.retain(|k| k.kid != kid);
        self.keys.push(NamedKey {
            kid,
            key: HmacKey::new(secret),
        });
    }

    /// Makes a named key the signing key. `None` signs with the legacy secret (no `kid`).
    pub fn activate(&mut self, kid: Option<&str>) -> Result<(), crate::Error> {
        match kid {
            Some(kid) if !self.keys.iter().any(|k| k.kid == kid) => {
                Err(crate::Error::UnknownKeyId(kid.to_owned()))
            }
            Some(kid) => {
                self.active = Some(kid.to_owned());
                Ok(())
            }
            None if self.legacy.is_none() => Err(crate::Error::NoSigningKey),
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

    /// The key that signs new tokens, with its id.
    pub(crate) fn signing(&self) -> Option<(Option<&str>, &HmacKey)> {
        match &self.active {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| &k.kid == kid)
                .map(|k| (Some(k.kid.as_str()), &k.key)),
            None => self.legacy.as_ref().map(|k| (None, k)),
        }
    }

    /// The key that verifies a token with this `kid` header.
    pub(crate) fn verifying(&self, kid: Option<&str>) -> Result<&HmacKey, crate::Error> {
        match kid {
            None => self.legacy.as_ref().ok_or(crate::Error::SignatureInvalid),
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid == kid)
                .map(|k| &k.key)
                .ok_or_else(|| crate::Error::UnknownKeyId(kid.to_owned())),
        }
    }
}
