//! The authorization boundary: `Target::parse` of any method, path, URL query and `X-KubeSphere-Rawquery`
//! returns a result and never panics, and what it forwards reads back as what was authorized.
//!
//! Input: the first byte picks which of the URL query and the header are present; the rest is split at
//! `\n` into method, path, URL query and header.
//!
//! Properties of every accepted target:
//! - `forwarded()` is an origin-form request target of printable ASCII without `#`, with one `?` at most;
//! - the forwarded query parses again to the same pairs;
//! - for Kubernetes requests (the ones proxied), `Target::parse` of the forwarded target gives the same
//!   authorization attributes (but the cluster, whose prefix is removed) and the same query: what
//!   kube-apiserver receives is what was authorized, read by the same code (idempotence).
//!
//! Two classes of input broke the last property (found by this target and by `cargo xtask differential`): a
//! literal `#` or `?` in the raw path, and a path whose forwarded form names a cluster again. The gateway
//! now refuses both (`PathError::BadCharacter`, `PathError::ClusterTwice`).
#![no_main]

use ksiam_rbac::{Query, RequestInfo, Target};
use libfuzzer_sys::fuzz_target;

fn decided(info: &RequestInfo) -> String {
    let mut a = info.attributes("", &[]);
    a.cluster = "";
    format!("{a:?}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let url_query = parts.next().filter(|_| mode & 1 == 1);
    let header = parts.next().filter(|_| mode & 2 == 2);
    let Ok(target) = Target::parse(method, path, url_query, header) else {
        return;
    };

    let forwarded = target.forwarded();
    assert!(forwarded.starts_with('/'), "{forwarded:?}");
    assert!(
        forwarded.bytes().all(|b| b.is_ascii_graphic() && b != b'#'),
        "{forwarded:?}"
    );
    let (fpath, fquery) = match forwarded.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (forwarded.as_str(), None),
    };
    assert!(!fquery.unwrap_or_default().contains('?'), "{forwarded:?}");
    assert_eq!(
        Query::parse(fquery.unwrap_or_default()).as_ref(),
        Ok(&target.query),
        "{forwarded:?}"
    );

    if target.info.is_kubernetes_request {
        let again = Target::parse(method, fpath, fquery, None).unwrap_or_else(|e| {
            panic!("{method} {path} {url_query:?} {header:?}: forwarded {forwarded:?} is refused: {e}")
        });
        assert!(again.info.cluster.is_empty(), "{forwarded:?} names a cluster again");
        assert_eq!(
            decided(&again.info),
            decided(&target.info),
            "{method} {path} {url_query:?} {header:?}: forwarded {forwarded:?}"
        );
        assert_eq!(again.query, target.query, "{forwarded:?}");
        assert_eq!(again.forwarded(), forwarded);
    }
});
