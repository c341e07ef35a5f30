//! The list shape and query parameters of KubeSphere's `/kapis` list endpoints.

use serde::{Deserialize, Deserializer, Serialize};

/// A KubeSphere list response: `{"items":[...],"totalItems":N}`.
///
/// `total_items` counts every match of the filters, while `items` holds only the requested page. Items
/// are raw JSON by default; name another type to decode them into it. The bare `[]` that
/// `GET /clusters` answers when it sees no user decodes as an empty list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantList<T = serde_json::Value> {
    /// The objects of the requested page.
    pub items: Vec<T>,
    /// How many objects match the filters, over all pages.
    pub total_items: u64,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TenantList<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape<T> {
            List {
                // Required, but Go encodes a nil slice as `null`.
                #[serde(deserialize_with = "null_as_empty")]
                items: Vec<T>,
                #[serde(rename = "totalItems", default)]
                total_items: Option<u64>,
            },
            Bare(Vec<T>),
        }
        fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
            Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
        }
        Ok(match Shape::deserialize(deserializer)? {
            Shape::List { items, total_items } => {
                let total_items = total_items.unwrap_or(items.len() as u64);
                Self { items, total_items }
            }
            Shape::Bare(items) => Self {
                total_items: items.len() as u64,
                items,
            },
        })
    }
}

impl TenantList<serde_json::Value> {
    /// The `metadata.name` of every item that has one, in order.
    pub fn names(&self) -> Vec<&str> {
        self.items
            .iter()
            .filter_map(|item| item.pointer("/metadata/name")?.as_str())
            .collect()
    }
}

/// Query parameters of a KubeSphere list endpoint.
///
/// Unset parameters are not sent, so the server's defaults apply: every item (`limit` −1), newest
/// first (`sortBy=creationTimestamp`, `ascending=false`).
///
/// ```
/// use kubesphere_client::ListQuery;
///
/// let query = ListQuery::new().limit(10).page(2).sort_by("name").ascending(true).label_selector("env=prod");
/// assert_eq!(query.to_query_string(), "limit=10&page=2&sortBy=name&ascending=true&labelSelector=env%3Dprod");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    limit: Option<u32>,
    page: Option<u32>,
    sort_by: Option<String>,
    ascending: Option<bool>,
    label_selector: Option<String>,
    name: Option<String>,
    filters: Vec<(String, String)>,
}

// === impl ListQuery ===

impl ListQuery {
    /// No parameters: the server's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many items per page (`limit`).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page to return, starting at 1 (`page`). Needs [`limit`](Self::limit).
    pub fn page(mut self, page: u32) -> Self {
        self.page = Some(page);
        self
    }

    /// The sort field (`sortBy`): `creationTimestamp` (the server's default) or `name`.
    pub fn sort_by(mut self, field: impl Into<String>) -> Self {
        self.sort_by = Some(field.into());
        self
    }

    /// Oldest or A first when `true` (`ascending`); the server's default is `false`.
    pub fn ascending(mut self, ascending: bool) -> Self {
        self.ascending = Some(ascending);
        self
    }

    /// A Kubernetes label selector (`labelSelector`), for example `env=prod,tier!=db`.
    pub fn label_selector(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Keeps the items whose name, or `kubesphere.io/alias-name` annotation, contains this text (`name`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Any other filter the server knows, for example `names` (comma separated, exact), `uid`,
    /// `ownerKind`, `label` or `annotation`. Unknown keys are ignored by the server.
    pub fn filter(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.filters.push((key.into(), value.into()));
        self
    }

    /// The URL-encoded query string, without a leading `?`; empty when nothing is set.
    pub fn to_query_string(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(limit) = self.limit {
            query.append_pair("limit", &limit.to_string());
        }
        if let Some(page) = self.page {
            query.append_pair("page", &page.to_string());
        }
        if let Some(sort_by) = &self.sort_by {
            query.append_pair("sortBy", sort_by);
        }
        if let Some(ascending) = self.ascending {
            query.append_pair("ascending", if ascending { "true" } else { "false" });
        }
        if let Some(selector) = &self.label_selector {
            query.append_pair("labelSelector", selector);
        }
        if let Some(name) = &self.name {
            query.append_pair("name", name);
        }
        for (key, value) in &self.filters {
            query.append_pair(key, value);
        }
        query.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_query_sends_nothing() {
        assert_eq!(ListQuery::new().to_query_string(), "");
    }

    #[test]
    fn name_and_filters_are_encoded() {
        let query = ListQuery::new().name("a b&c").filter("names", "x,y");
        assert_eq!(query.to_query_string(), "name=a+b%26c&names=x%2Cy");
    }

    #[test]
    fn list_shapes_decode() {
        let list: TenantList = serde_json::from_str(
            r#"{"items":[{"metadata":{"name":"host"}},{"metadata":{"name":"member"}}],"totalItems":7}"#,
        )
        .unwrap();
        assert_eq!(list.names(), ["host", "member"]);
        assert_eq!(list.total_items, 7);

        let null: TenantList = serde_json::from_str(r#"{"items":null,"totalItems":0}"#).unwrap();
        assert!(null.items.is_empty());

        let bare: TenantList = serde_json::from_str("[]").unwrap();
        assert_eq!(
            bare,
            TenantList {
                items: vec![],
                total_items: 0
            }
        );

        assert!(serde_json::from_str::<TenantList>(r#"{"kind":"Status"}"#).is_err());
    }
}
