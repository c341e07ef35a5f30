//! Kubernetes `Status` bodies, byte-compatible with what ks-apiserver writes.
//!
//! kube-apiserver's JSON encoder escapes `<`, `>` and `&` and formats `%q` with Go quoting, and pretty-prints
//! for `curl`/`Wget`/browser user agents. Clients (and our e2e tests) compare these bodies byte for byte,
//! so we write them by hand instead of through serde.

use std::fmt::Write as _;

use crate::request::Attributes;

/// A failure `Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The HTTP status code.
    pub code: u16,
    /// `Forbidden`, `Unauthorized`, ...
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details`, present (possibly empty) for Forbidden and absent otherwise.
    pub details: Option<StatusDetails>,
}

/// `Status.details`; empty fields are omitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusDetails {
    /// The API group.
    pub group: String,
    /// The resource (upstream calls it kind).
    pub kind: String,
    /// The object name.
    pub name: String,
}

impl Status {
    /// A 401 with `message`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if message.is_empty() {
            "not authorized".to_owned()
        } else {
            message
        };
        Self {
            code: 401,
            reason: "Unauthorized",
            message,
            details: None,
        }
    }

    /// A 403 for the request, with the RBAC `reason` appended when non-empty (spec §9.2).
    pub fn forbidden(a: &Attributes<'_>, reason: &str) -> Self {
        let inner = sanitize_for_html(&forbidden_inner(a));
        let err = if reason.is_empty() {
            inner
        } else {
            format!("{inner}: {reason}")
        };
        let (group, resource, name) = (a.api_group, a.resource, a.name);
        let message = if group.is_empty() && resource.is_empty() {
            format!("forbidden: {err}")
        } else {
            let qualified = if group.is_empty() {
                resource.to_owned()
            } else {
                format!("{resource}.{group}")
            };
            if name.is_empty() {
                format!("{qualified} is forbidden: {err}")
            } else {
                format!("{qualified} {} is forbidden: {err}", go_quote(name))
            }
        };
        Self {
            code: 403,
            reason: "Forbidden",
            message,
            details: Some(StatusDetails {
                group: group.into(),
                kind: resource.into(),
                name: name.into(),
            }),
        }
    }

    /// Another failure status (`NotFound`, `BadRequest`, `InternalError`, ...).
    pub fn failure(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// The JSON body. Compact bodies end with a newline (Go's `Encoder.Encode`); pretty ones do not
    /// (`MarshalIndent`).
    pub fn to_json(&self, pretty: bool) -> String {
        let mut o = String::with_capacity(256 + self.message.len());
        let (nl, ind, sep) = if pretty { ("\n", "  ", ": ") } else { ("", "", ":") };
        let field = |o: &mut String, key: &str| {
            o.push_str(nl);
            o.push_str(ind);
            o.push('"');
            o.push_str(key);
            o.push('"');
            o.push_str(sep);
        };
        o.push('{');
        field(&mut o, "kind");
        o.push_str("\"Status\",");
        field(&mut o, "apiVersion");
        o.push_str("\"v1\",");
        field(&mut o, "metadata");
        o.push_str("{},");
        field(&mut o, "status");
        o.push_str("\"Failure\",");
        field(&mut o, "message");
        go_json_string(&mut o, &self.message);
        o.push(',');
        field(&mut o, "reason");
        go_json_string(&mut o, self.reason);
        o.push(',');
        if let Some(d) = &self.details {
            field(&mut o, "details");
            // Go's `StatusDetails` field order: name, group, kind.
            let entries: Vec<(&str, &str)> = [("name", &d.name), ("group", &d.group), ("kind", &d.kind)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k, v.as_str()))
                .collect();
            if entries.is_empty() {
                o.push_str("{}");
            } else {
                o.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    if pretty {
                        o.push_str("\n    ");
                    }
                    o.push('"');
                    o.push_str(k);
                    o.push('"');
                    o.push_str(sep);
                    go_json_string(&mut o, v);
                }
                if pretty {
                    o.push_str("\n  ");
                }
                o.push('}');
            }
            o.push(',');
        }
        field(&mut o, "code");
        let _ = write!(o, "{}", self.code);
        o.push_str(nl);
        o.push('}');
        if !pretty {
            o.push('\n');
        }
        o
    }
}

impl Status {
    /// The body ks-apiserver's multicluster filter writes (`responsewriters.WriteRawJSON` of a Go
    /// `*StatusError`): the Status under `ErrStatus`, without `kind` and `apiVersion`, indented by two spaces
    /// whatever the client, no final newline. `details` is not written (the filter's errors have none).
    pub fn to_status_error_json(&self) -> String {
        let mut o = String::with_capacity(160 + self.message.len());
        o.push_str(
            "{\n  \"ErrStatus\": {\n    \"metadata\": {},\n    \"status\": \"Failure\",\n    \"message\": ",
        );
        go_json_string(&mut o, &self.message);
        o.push_str(",\n    \"reason\": ");
        go_json_string(&mut o, self.reason);
        let _ = write!(o, ",\n    \"code\": {}\n  }}\n}}", self.code);
        o
    }
}

/// Whether kube-apiserver would pretty-print for this request (`?pretty=` or a curl/Wget/browser agent).
pub fn wants_pretty(query: &str, user_agent: &str) -> bool {
    if !query.contains("pretty") {
        // The common case: nothing to parse (this runs once per proxied request).
        return wants_pretty_param(None, user_agent);
    }
    let pretty = crate::Query::parse(query).ok();
    wants_pretty_param(pretty.as_ref().and_then(|q| q.first("pretty")), user_agent)
}

/// [`wants_pretty`] with the `pretty` parameter already read from the query.
pub fn wants_pretty_param(pretty: Option<&str>, user_agent: &str) -> bool {
    if let Some(v) = pretty.filter(|v| !v.is_empty()) {
        return matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True");
    }
    user_agent.starts_with("curl") || user_agent.starts_with("Wget") || user_agent.starts_with("Mozilla/5.0")
}

fn forbidden_inner(a: &Attributes<'_>) -> String {
    let user = go_quote(a.user);
    if !a.resource_request {
        return format!("User {user} cannot {} path {}", a.verb, go_quote(a.path));
    }
    let resource = if a.subresource.is_empty() {
        go_quote(a.resource)
    } else {
        go_quote(&format!("{}/{}", a.resource, a.subresource))
    };
    let group = go_quote(a.api_group);
    if a.namespace.is_empty() {
        format!(
            "User {user} cannot {} resource {resource} in API group {group} at the cluster scope",
            a.verb
        )
    } else {
        format!(
            "User {user} cannot {} resource {resource} in API group {group} in the namespace {}",
            a.verb,
            go_quote(a.namespace)
        )
    }
}

fn sanitize_for_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Go's `strconv.Quote` (`%q`): a double-quoted literal with Go escapes.
pub fn go_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    push_go_quoted(&mut o, &[s]);
    o
}

/// Appends the concatenation of `parts` quoted as [`go_quote`] would, without building it first.
pub fn push_go_quoted(o: &mut String, parts: &[&str]) {
    o.push('"');
    for c in parts.iter().flat_map(|p| p.chars()) {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\u{7}' => o.push_str("\\a"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{b}' => o.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                if (c as u32) < 0x10000 {
                    let _ = write!(o, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(o, "\\U{:08x}", c as u32);
                }
            }
            c => o.push(c),
        }
    }
    o.push('"');
}

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it (HTML-safe).
pub fn go_json_string(o: &mut String, s: &str) {
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::resolve;

    const SEED_403: &str = r#"{
  "kind": "Status",
  "apiVersion": "v1",
  "metadata": {},
  "status": "Failure",
  "message": "clusters.tenant.kubesphere.io is forbidden: User \"kubesphere:serviceaccount:default:sample\" cannot list resource \"clusters\" in API group \"tenant.kubesphere.io\" at the cluster scope",
  "reason": "Forbidden",
  "details": {
    "group": "tenant.kubesphere.io",
    "kind": "clusters"
  },
  "code": 403
}"#;

    #[test]
    fn seed_403_is_byte_identical() {
        let info = resolve("GET", "/kapis/tenant.kubesphere.io/v1beta1/clusters", "").unwrap();
        let a = info.attributes("kubesphere:serviceaccount:default:sample", &[]);
        let status = Status::forbidden(&a, "");
        assert_eq!(status.to_json(true), SEED_403);
        let compact: serde_json::Value = serde_json::from_str(&status.to_json(false)).unwrap();
        let pretty: serde_json::Value = serde_json::from_str(SEED_403).unwrap();
        assert_eq!(compact, pretty);
        assert!(status.to_json(false).ends_with("}\n"));
    }

    #[test]
    fn status_error_body_is_ks_apiservers_raw_json() {
        // ks-apiserver's answer to `/clusters/member-x/...` when no such Cluster exists.
        let s = Status::failure(400, "BadRequest", "cluster member-x not exists");
        assert_eq!(
            s.to_status_error_json(),
            "{\n  \"ErrStatus\": {\n    \"metadata\": {},\n    \"status\": \"Failure\",\n    \"message\": \
             \"cluster member-x not exists\",\n    \"reason\": \"BadRequest\",\n    \"code\": 400\n  }\n}"
        );
        let escaped = Status::failure(400, "BadRequest", "cluster <a> not exists").to_status_error_json();
        assert!(
            escaped.contains(r#""cluster \u003ca\u003e not exists""#),
            "{escaped}"
        );
    }

    #[test]
    fn forbidden_forms() {
        let info = resolve("GET", "/api/v1/namespaces/ns1/pods/p1/log", "").unwrap();
        let s = Status::forbidden(&info.attributes("u", &[]), "RBAC: boom");
        assert_eq!(
            s.message,
            r#"pods "p1" is forbidden: User "u" cannot get resource "pods/log" in API group "" in the namespace "ns1": RBAC: boom"#
        );
        assert_eq!(
            s.to_json(false)
                .matches(r#""details":{"name":"p1","kind":"pods"}"#)
                .count(),
            1
        );
        let info = resolve("POST", "/kapis/foo/bar", "").unwrap();
        let s = Status::forbidden(&info.attributes("u<&>", &[]), "");
        assert_eq!(
            s.message,
            r#"forbidden: User "u&lt;&amp;&gt;" cannot POST path "/kapis/foo/bar""#
        );
        let json = s.to_json(false);
        assert!(json.contains(r#""details":{}"#), "{json}");
        assert!(
            json.contains(r#"User \"u\u0026lt;\u0026amp;\u0026gt;\""#),
            "{json}"
        );
    }

    #[test]
    fn unauthorized_body() {
        assert_eq!(
            Status::unauthorized("ServiceAccount.kubesphere.io \"sample\" not found").to_json(false),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"ServiceAccount.kubesphere.io \\\"sample\\\" not found\",\"reason\":\"Unauthorized\",\"code\":401}\n"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
        let mut o = String::new();
        go_json_string(&mut o, "<a&b>\u{1}\u{2028}");
        assert_eq!(o, "\"\\u003ca\\u0026b\\u003e\\u0001\\u2028\"");
    }

    #[test]
    fn pretty_detection() {
        assert!(wants_pretty("", "curl/8.5.0"));
        assert!(!wants_pretty("", "kubectl/v1.34"));
        assert!(wants_pretty("pretty=true", "kubectl"));
        assert!(!wants_pretty("pretty=false", "curl/8"));
    }
}
