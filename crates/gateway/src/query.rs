//! KubeSphere's list query (spec §11): filters, label selectors, sorting and pagination over JSON objects.

use std::cmp::Ordering;

use serde_json::Value;

/// Keys that are not filters.
const RESERVED: [&str; 5] = ["limit", "page", "sortBy", "ascending", "labelSelector"];

/// A parsed list query.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    /// Page size; negative means everything.
    pub limit: i64,
    /// 1-based page.
    pub page: i64,
    /// `creationTimestamp` (default) or `name`.
    pub sort_by: String,
    /// Oldest (or A) first when true.
    pub ascending: bool,
    /// The `labelSelector` parameter.
    pub label_selector: Option<Selector>,
    /// Every other key, in order: `name`, `names`, `uid`, `namespace`, `ownerReference`, `ownerKind`,
    /// `label`, `annotation` (unknown keys are kept and ignored).
    pub filters: Vec<(String, String)>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            limit: -1,
            page: 1,
            sort_by: "creationTimestamp".into(),
            ascending: false,
            label_selector: None,
            filters: Vec::new(),
        }
    }
}

/// A list response: `{"items":[...],"totalItems":N}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResult {
    /// The requested page.
    pub items: Vec<Value>,
    /// How many objects matched, over all pages.
    pub total_items: usize,
}

impl ListQuery {
    /// Parses a raw query string. An unparsable `limit`/`page` keeps the default; an invalid selector is
    /// an error (the 400 message).
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut q = Self::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "limit" => q.limit = v.parse().unwrap_or(-1),
                "page" => q.page = v.parse().ok().filter(|p| *p >= 1).unwrap_or(1),
                "sortBy" if !v.is_empty() => q.sort_by = v.into_owned(),
                "ascending" => q.ascending = v.eq_ignore_ascii_case("true"),
                "labelSelector" if !v.is_empty() => q.label_selector = Some(Selector::parse(&v)?),
                k if RESERVED.contains(&k) => {}
                _ => {
                    if matches!(&*k, "label" | "annotation") {
                        Selector::parse(&v)?;
                    }
                    q.filters.push((k.into_owned(), v.into_owned()));
                }
            }
        }
        Ok(q)
    }

    /// A filter value.
    pub fn filter(&self, key: &str) -> Option<&str> {
        self.filters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Filters, sorts and paginates `items`.
    pub fn apply(&self, items: Vec<Value>) -> ListResult {
        let mut items: Vec<Value> = items.into_iter().filter(|o| self.matches(o)).collect();
        items.sort_by(|a, b| {
            let ord = self.compare(a, b);
            if self.ascending { ord } else { ord.reverse() }
        });
        let total_items = items.len();
        let items = if self.limit < 0 {
            items
        } else {
            let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
            let offset = usize::try_from(self.page - 1).unwrap_or(0).saturating_mul(limit);
            items.into_iter().skip(offset).take(limit).collect()
        };
        ListResult { items, total_items }
    }

    fn compare(&self, a: &Value, b: &Value) -> Ordering {
        let by_name = || name(a).cmp(name(b));
        if self.sort_by == "creationTimestamp" {
            str_at(a, "/metadata/creationTimestamp")
                .cmp(str_at(b, "/metadata/creationTimestamp"))
                .then_with(by_name)
        } else {
            by_name()
        }
    }

    fn matches(&self, o: &Value) -> bool {
        if let Some(s) = &self.label_selector
            && !s.matches(o.pointer("/metadata/labels"))
        {
            return false;
        }
        self.filters.iter().all(|(k, v)| filter_matches(o, k, v))
    }
}

fn filter_matches(o: &Value, key: &str, value: &str) -> bool {
    match key {
        "name" => {
            name(o).contains(value)
                || str_at(o, "/metadata/annotations/kubesphere.io~1alias-name").contains(value)
        }
        "names" => value.split(',').any(|n| n == name(o)),
        "uid" => str_at(o, "/metadata/uid") == value,
        "namespace" => str_at(o, "/metadata/namespace") == value,
        "ownerReference" => owners(o).any(|r| str_at(r, "/uid") == value),
        "ownerKind" => owners(o).any(|r| str_at(r, "/kind") == value),
        "label" => Selector::parse(value).is_ok_and(|s| s.matches(o.pointer("/metadata/labels"))),
        "annotation" => Selector::parse(value).is_ok_and(|s| s.matches(o.pointer("/metadata/annotations"))),
        _ => true,
    }
}

fn owners(o: &Value) -> impl Iterator<Item = &Value> {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn name(o: &Value) -> &str {
    str_at(o, "/metadata/name")
}

fn str_at<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A Kubernetes label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// Parses a selector string.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        let mut depth = 0usize;
        let mut start = 0;
        let bytes = s.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'(' => depth += 1,
                b')' => depth = depth.checked_sub(1).ok_or_else(|| bad(s))?,
                b',' if depth == 0 => {
                    reqs.push(Requirement::parse(&s[start..i]).ok_or_else(|| bad(s))?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if depth != 0 {
            return Err(bad(s));
        }
        let last = &s[start..];
        if !(last.trim().is_empty() && reqs.is_empty()) {
            reqs.push(Requirement::parse(last).ok_or_else(|| bad(s))?);
        }
        Ok(Self(reqs))
    }

    /// Whether an object with `labels` (a JSON map, or absent) matches.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

fn bad(s: &str) -> String {
    format!("invalid label selector: {s:?}")
}

impl Requirement {
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(k) = s.strip_prefix('!') {
            return key(k).map(|k| Self::DoesNotExist(k.into()));
        }
        if let Some((k, v)) = s.split_once("!=") {
            return Some(Self::NotEquals(key(k)?.into(), value(v)?.into()));
        }
        if let Some((k, v)) = s.split_once("==").or_else(|| s.split_once('=')) {
            return Some(Self::Equals(key(k)?.into(), value(v)?.into()));
        }
        for (op, notin) in [(" notin ", true), (" in ", false)] {
            if let Some((k, rest)) = s.split_once(op) {
                let list = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                let vs = list
                    .split(',')
                    .map(|v| value(v).map(str::to_owned))
                    .collect::<Option<Vec<_>>>()?;
                let k = key(k)?.to_owned();
                return Some(if notin {
                    Self::NotIn(k, vs)
                } else {
                    Self::In(k, vs)
                });
            }
        }
        key(s).map(|k| Self::Exists(k.into()))
    }
}

fn key(k: &str) -> Option<&str> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    ok.then_some(k)
}

fn value(v: &str) -> Option<&str> {
    let v = v.trim();
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then_some(v)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(name: &str, ts: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": ts, "labels": labels,
            "annotations": {"kubesphere.io/alias-name": format!("alias-{name}")}}})
    }

    fn names(r: &ListResult) -> Vec<&str> {
        r.items.iter().map(name).collect()
    }

    fn items() -> Vec<Value> {
        vec![
            obj("b", "2024-01-02T00:00:00Z", json!({"env": "prod", "tier": "web"})),
            obj("a", "2024-01-03T00:00:00Z", json!({"env": "dev"})),
            obj("c", "2024-01-01T00:00:00Z", json!({"env": "prod"})),
            obj("d", "2024-01-01T00:00:00Z", json!({})),
        ]
    }

    #[test]
    fn default_is_newest_first_everything() {
        let r = ListQuery::parse("").unwrap().apply(items());
        assert_eq!(names(&r), ["a", "b", "d", "c"]);
        assert_eq!(r.total_items, 4);
    }

    #[test]
    fn sort_pagination_and_out_of_range() {
        let q = ListQuery::parse("sortBy=name&ascending=true&limit=2&page=2").unwrap();
        let r = q.apply(items());
        assert_eq!((names(&r), r.total_items), (vec!["c", "d"], 4));
        let r = ListQuery::parse("sortBy=name&limit=3&page=1")
            .unwrap()
            .apply(items());
        assert_eq!(names(&r), ["d", "c", "b"]);
        let r = ListQuery::parse("limit=2&page=9").unwrap().apply(items());
        assert_eq!((r.items.len(), r.total_items), (0, 4));
        let r = ListQuery::parse("limit=x&page=-3&ascending=true")
            .unwrap()
            .apply(items());
        assert_eq!(
            names(&r),
            ["c", "d", "b", "a"],
            "ties on the timestamp sort by name"
        );
    }

    #[test]
    fn filters_and_selectors() {
        let r = ListQuery::parse("labelSelector=env%3Dprod")
            .unwrap()
            .apply(items());
        assert_eq!(names(&r), ["b", "c"]);
        let r = ListQuery::parse("labelSelector=env+in+(dev,prod),!tier")
            .unwrap()
            .apply(items());
        assert_eq!(names(&r), ["a", "c"]);
        let r = ListQuery::parse("labelSelector=env!%3Dprod")
            .unwrap()
            .apply(items());
        assert_eq!(names(&r), ["a", "d"]);
        let r = ListQuery::parse("name=alias-c").unwrap().apply(items());
        assert_eq!(names(&r), ["c"], "name matches the alias annotation");
        let r = ListQuery::parse("name=b&unknown=1").unwrap().apply(items());
        assert_eq!(names(&r), ["b"]);
        let r = ListQuery::parse("names=a,d").unwrap().apply(items());
        assert_eq!(names(&r), ["a", "d"]);
        let r = ListQuery::parse("label=tier").unwrap().apply(items());
        assert_eq!(names(&r), ["b"]);
        assert!(ListQuery::parse("labelSelector=a+in+(b").is_err());
        assert!(ListQuery::parse("labelSelector=%3D%3D").is_err());
    }
}
