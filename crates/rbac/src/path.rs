//! Path safety: the path the authorizer sees must be exactly the path kube-apiserver serves.
//!
//! kube-apiserver (Go `net/http`) routes on the percent-decoded path. A proxy that authorizes one
//! spelling and forwards another (`/default/../kube-system`, `%2F`, `;param`, `\`) lets a caller reach
//! objects it was never authorized for. Instead of trying to reproduce every server's normalisation, we
//! accept only paths with exactly one reading and answer everything else with 400:
//!
//! - the raw path starts with `/` and holds no `\`, `;`, control characters or non-ASCII bytes;
//! - no segment is empty (`//`), `.` or `..` (a single trailing `/` is allowed);
//! - percent escapes are well formed, and none of them encodes `/`, `\`, `.`, `;`, `%`, `?`, `#`, a control
//!   character or a non-ASCII byte (those are exactly the escapes that change the path's meaning, or hide
//!   a double encoding).
//!
//! What is left decodes to one path, which is what both the resolver and kube-apiserver see; the raw
//! form is forwarded unchanged.

/// Why a path was rejected. `Display` is the 400 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// An empty segment (`//`).
    #[error("the request path contains an empty segment")]
    EmptySegment,
    /// A `.` or `..` segment, literal or encoded.
    #[error("the request path contains a '.' or '..' segment")]
    DotSegment,
    /// A character that proxies and servers disagree on (`\`, `;`, `#`, `?`, control or non-ASCII characters).
    #[error("the request path contains a character that is not allowed")]
    BadCharacter,
    /// A cluster prefix, and another one after it (the path would name a cluster again once the gateway
    /// removes the first).
    #[error("the request path names a cluster twice")]
    ClusterTwice,
    /// A malformed escape, or one that encodes a character that is not allowed.
    #[error("the request path contains a percent-encoding that is not allowed")]
    BadEscape,
}

/// Checks the raw (still percent-encoded) request path and returns the decoded path the resolver and
/// kube-apiserver both see.
pub fn canonical(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err(PathError::BadEscape);
                };
                let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                    return Err(PathError::BadEscape);
                };
                let c = h << 4 | l;
                if !c.is_ascii()
                    || c.is_ascii_control()
                    || matches!(c, b'/' | b'\\' | b'.' | b';' | b'%' | b'?' | b'#')
                {
                    return Err(PathError::BadEscape);
                }
                decoded.push(char::from(c));
                i += 3;
            }
            b'\\' | b';' | b'#' | b'?' => return Err(PathError::BadCharacter),
            _ if !b.is_ascii() || b.is_ascii_control() || b == b' ' => {
                return Err(PathError::BadCharacter);
            }
            _ => {
                decoded.push(char::from(b));
                i += 1;
            }
        }
    }
    // Segment checks on the decoded path (encoded dots were rejected above, so literal ones are all).
    let body = &decoded[1..];
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() {
        return if decoded.len() > 1 {
            Err(PathError::EmptySegment)
        } else {
            Ok(decoded)
        };
    }
    for segment in body.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(decoded)
}

/// Percent-encodes a decoded path so that it parses as a URI path with the same meaning: everything but
/// RFC 3986 `pchar`s and `/` is escaped.
pub fn encode(decoded: &str) -> String {
    let mut out = String::with_capacity(decoded.len());
    for b in decoded.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass_unchanged() {
        for p in [
            "/",
            "/version",
            "/api",
            "/api/v1/namespaces/default/pods",
            "/api/v1/namespaces/default/pods/",
            "/apis/apps/v1/namespaces/a.b-c/deployments/x.y",
            "/kapis/tenant.kubesphere.io/v1beta1/clusters",
        ] {
            assert_eq!(canonical(p).as_deref(), Ok(p), "{p}");
        }
    }

    #[test]
    fn harmless_escapes_decode() {
        assert_eq!(
            canonical("/%61pi/v1/namespaces/default/pods").as_deref(),
            Ok("/api/v1/namespaces/default/pods")
        );
        assert_eq!(
            canonical("/api/v1/namespaces/a%2Db").as_deref(),
            Ok("/api/v1/namespaces/a-b")
        );
    }

    #[test]
    fn confusing_paths_are_rejected() {
        for p in [
            "api/v1",
            "//api/v1/pods",
            "/api//v1/pods",
            "/api/v1/./pods",
            "/api/v1/namespaces/default/../kube-system/pods",
            "/api/v1/namespaces/default/..",
            "/api/v1/%2e%2e/pods",
            "/api/v1/namespaces/default/%2E%2e/kube-system/pods",
            "/api/v1/namespaces/default%2fkube-system/pods",
            "/api/v1/namespaces/default%2Fkube-system/pods",
            "/api/v1/namespaces/default;x=y/pods",
            "/api/v1/namespaces/default%3bx/pods",
            "/api\\v1\\pods",
            "/api/v1/namespaces/default%5ckube-system/pods",
            "/api/v1/namespaces/default%252e%252e/pods",
            "/api/v1/%",
            "/api/v1/%zz",
            "/api/v1/%0a",
            "/api/v1/%c3%a9",
            "/api/v1/é",
            "/api/v1/a b",
            "/api/v1/%3f",
            "/api/v1/%23",
            "/api/v1/us#ers",
            "/api/v1/a?b",
            "//",
        ] {
            assert!(canonical(p).is_err(), "{p} must be rejected");
        }
    }
}
