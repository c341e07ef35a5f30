//! JWT claims in the order KubeSphere's Go structs serialize them.

use serde::{Deserialize, Serialize};

/// `token_type` of ServiceAccount tokens.
pub const STATIC_TOKEN: &str = "static_token";
/// The default `iss`.
pub const DEFAULT_ISSUER: &str = "http://ks-console.kubesphere-system.svc:30880";
/// Prefix of KubeSphere ServiceAccount user names.
pub const SA_USERNAME_PREFIX: &str = "kubesphere:serviceaccount:";

/// The claims. Field order is the serialization order of KubeSphere's `Claims` (registered claims first,
/// then its own), so tokens we issue are byte-identical to KubeSphere's for the same inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject (the user name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience (a string or a list upstream; ksiam never issues it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Not before (accepted, not enforced, as upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `static_token`, `access_token`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// The user name the token authenticates as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Extra user attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// Parses a KubeSphere ServiceAccount user name into `(namespace, name)`: the prefix
/// `kubesphere:serviceaccount:` and exactly four `:`-separated parts.
pub fn parse_sa_username(username: &str) -> Option<(&str, &str)> {
    if !username.starts_with(SA_USERNAME_PREFIX) {
        return None;
    }
    let mut parts = username.split(':');
    let (_, _, ns, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((ns, name))
}

/// The user name of the KubeSphere ServiceAccount `namespace/name`.
pub fn sa_username(namespace: &str, name: &str) -> String {
    format!("{SA_USERNAME_PREFIX}{namespace}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sa_usernames() {
        assert_eq!(
            parse_sa_username("kubesphere:serviceaccount:default:sample"),
            Some(("default", "sample"))
        );
        assert_eq!(parse_sa_username("kubesphere:serviceaccount:default"), None);
        assert_eq!(parse_sa_username("kubesphere:serviceaccount:a:b:c"), None);
        assert_eq!(parse_sa_username("system:serviceaccount:default:sample"), None);
        assert_eq!(
            sa_username("default", "sample"),
            "kubesphere:serviceaccount:default:sample"
        );
    }
}
