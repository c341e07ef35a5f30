//! The one parser of URL queries: what the resolver authorizes and what the gateway forwards both come from
//! a [`Query`], so kube-apiserver never executes a parameter the authorizer did not read the same way.
//!
//! kube-apiserver reads queries with Go's `net/url.ParseQuery`. Where that parser and a lenient one disagree
//! (a `;` in a pair, an invalid `%` escape, bytes that are not UTF-8, a `#`), or where a parameter the
//! resolver reads is given twice, [`Query::parse`] refuses the whole query instead of guessing. What it
//! accepts, [`Query::encode`] writes back in a canonical form that `ParseQuery` reads as exactly the same
//! pairs, in the same order.

use std::fmt;

/// Parameters the resolver reads (or the gateway rewrites): each may appear at most once.
pub const SINGLE_VALUED: [&str; 5] = ["watch", "labelSelector", "fieldSelector", "dryRun", "dryrun"];

/// More pairs than this are refused (Go's `net/url` has a limit of its own; staying well below it keeps the
/// two parsers on the same side of it).
pub const MAX_PAIRS: usize = 1000;

/// Why a query was refused. `Display` is the message of the 400 `Status`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A `#`: clients never send a fragment, and parsers disagree on where one ends.
    #[error("the request query contains '#'")]
    Fragment,
    /// A `;`: Go's `net/url` drops the pair that holds it, other parsers keep it.
    #[error("the request query contains ';'")]
    Semicolon,
    /// A `%` not followed by two hex digits: Go's `net/url` drops the pair.
    #[error("the request query contains an invalid percent-encoding")]
    BadEscape,
    /// A key or value that does not decode to UTF-8.
    #[error("the request query does not decode to UTF-8")]
    NotUtf8,
    /// A character that is never sent unescaped (space, control characters, non-ASCII bytes).
    #[error("the request query contains a character that must be percent-encoded")]
    BadCharacter,
    /// A parameter the authorizer reads, given more than once.
    #[error("the request query parameter {0:?} is given more than once")]
    Repeated(String),
    /// Too many pairs.
    #[error("the request query has more than {MAX_PAIRS} parameters")]
    TooManyPairs,
}

/// A parsed query: its pairs, decoded, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string (without the `?`) the way Go's `net/url.ParseQuery` does, refusing every
    /// input on which the two could disagree. `&` separates pairs, empty pairs are skipped, the first `=`
    /// separates key and value, `+` is a space and `%XX` an escaped byte.
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        let mut pairs = Vec::new();
        for b in raw.bytes() {
            match b {
                b'#' => return Err(QueryError::Fragment),
                b';' => return Err(QueryError::Semicolon),
                _ if !b.is_ascii() || b.is_ascii_control() || b == b' ' => {
                    return Err(QueryError::BadCharacter);
                }
                _ => {}
            }
        }
        for pair in raw.split('&') {
            if pair.is_empty() {
                continue;
            }
            if pairs.len() == MAX_PAIRS {
                return Err(QueryError::TooManyPairs);
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((unescape(key)?, unescape(value)?));
        }
        let query = Self { pairs };
        for key in SINGLE_VALUED {
            if query.all(key).nth(1).is_some() {
                return Err(QueryError::Repeated(key.to_owned()));
            }
        }
        if query.first("dryRun").is_some() && query.first("dryrun").is_some() {
            return Err(QueryError::Repeated("dryRun".to_owned()));
        }
        Ok(query)
    }

    /// A query of these pairs.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// The pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The first value of `key` (what Go's `Values.Get` and Kubernetes' parameter decoding read).
    pub fn first(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Renames every `from` key to `to` (the gateway's `dryrun` → `dryRun`).
    pub fn rename(&mut self, from: &str, to: &str) {
        for (k, _) in &mut self.pairs {
            if k == from {
                to.clone_into(k);
            }
        }
    }

    /// The canonical encoding: every byte but `A-Z a-z 0-9 - . _ ~` escaped (a space as `%20`), pairs
    /// joined with `&`. Parsing it again, here or with Go's `net/url`, gives the same pairs.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            escape_into(&mut out, k);
            out.push('=');
            escape_into(&mut out, v);
        }
        out
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

fn unescape(s: &str) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(crate::path::hex),
                    bytes.get(i + 2).copied().and_then(crate::path::hex),
                ) else {
                    return Err(QueryError::BadEscape);
                };
                out.push(h << 4 | l);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::NotUtf8)
}

fn escape_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        Query::parse(raw).unwrap().pairs().to_vec()
    }

    #[test]
    fn reads_like_go_parse_query() {
        assert_eq!(
            pairs("a=1&&b=x+y&c&d=%41%2f&=v&e=1=2"),
            [
                ("a", "1"),
                ("b", "x y"),
                ("c", ""),
                ("d", "A/"),
                ("", "v"),
                ("e", "1=2")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(Query::parse("").unwrap().is_empty());
        assert_eq!(pairs("&&&"), []);
    }

    #[test]
    fn refuses_what_go_reads_differently() {
        for (raw, want) in [
            ("labelSelector=a%3Db#&watch=1", QueryError::Fragment),
            ("fieldSelector=metadata.name=x;&a=b", QueryError::Semicolon),
            ("a=1;b=2", QueryError::Semicolon),
            ("fieldSelector=metadata.name%3Dx%zz", QueryError::BadEscape),
            ("a=%", QueryError::BadEscape),
            ("a=%4", QueryError::BadEscape),
            ("%zz=1", QueryError::BadEscape),
            ("a=%ff", QueryError::NotUtf8),
            ("a=b c", QueryError::BadCharacter),
            ("a=\u{e9}", QueryError::BadCharacter),
            ("a=\n", QueryError::BadCharacter),
            ("watch=0&watch=1", QueryError::Repeated("watch".into())),
            (
                "labelSelector=a&labelSelector=b",
                QueryError::Repeated("labelSelector".into()),
            ),
            (
                "fieldSelector=&fieldSelector=x",
                QueryError::Repeated("fieldSelector".into()),
            ),
            ("dryrun=All&dryRun=All", QueryError::Repeated("dryRun".into())),
        ] {
            assert_eq!(Query::parse(raw), Err(want), "{raw}");
        }
        let many = "a=1&".repeat(MAX_PAIRS + 1);
        assert_eq!(Query::parse(&many), Err(QueryError::TooManyPairs));
        assert!(Query::parse(&"a=1&".repeat(MAX_PAIRS)).is_ok());
    }

    #[test]
    fn repeated_ordinary_parameters_are_kept_in_order() {
        // exec's `command` is repeated by design.
        let q = Query::parse("command=sh&command=-c&command=echo+hi&container=c").unwrap();
        assert_eq!(q.all("command").collect::<Vec<_>>(), ["sh", "-c", "echo hi"]);
        assert_eq!(q.encode(), "command=sh&command=-c&command=echo%20hi&container=c");
    }

    #[test]
    fn encoding_round_trips() {
        for raw in [
            "labelSelector=kubesphere.io%2Fworkspace%3Dws&watch=1",
            "a=%23%26%3D%3B%25%2B&b=+",
            "fieldSelector=metadata.name%3Dx%2Cspec.nodeName%21%3D%5C%2C",
            "x=%E2%9C%93",
        ] {
            let q = Query::parse(raw).unwrap();
            assert_eq!(Query::parse(&q.encode()).unwrap(), q, "{raw}");
        }
        let q = Query::from_pairs(vec![("k y".into(), "#&=;%+/?".into())]);
        assert_eq!(q.encode(), "k%20y=%23%26%3D%3B%25%2B%2F%3F");
        assert_eq!(Query::parse(&q.encode()).unwrap(), q);
    }

    #[test]
    fn rename_keeps_order() {
        let mut q = Query::parse("b=1&dryrun=All&a=2").unwrap();
        q.rename("dryrun", "dryRun");
        assert_eq!(q.encode(), "b=1&dryRun=All&a=2");
    }
}
