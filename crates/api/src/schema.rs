//! Hand-written schema fragments for fields whose Rust type has no fitting schema of its own.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A complete Kubernetes object embedded in another one (apiVersion, kind, metadata, anything else).
pub(crate) fn embedded_resource(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A complete Kubernetes object with apiVersion, kind and metadata.",
        "type": "object",
        "x-kubernetes-embedded-resource": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// An object kept as is by the API server (no pruning), for nested `ObjectMeta`s.
pub(crate) fn preserved_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Bytes encoded as base64 in a string (Go's `[]byte`).
pub(crate) fn bytes(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "byte",
    })
}

/// A list of core `ObjectReference`s whose items are atomic maps, as Kubernetes declares them.
pub(crate) fn atomic_object_references(generator: &mut SchemaGenerator) -> Schema {
    let mut item = generator.subschema_for::<k8s_openapi::api::core::v1::ObjectReference>();
    item.insert("x-kubernetes-map-type".to_owned(), "atomic".into());
    json_schema!({
        "type": "array",
        "items": item,
    })
}

/// Marks `rules` as required even though deserialization tolerates its absence (`#[serde(default)]`
/// would otherwise make schemars treat it as optional and give it `default: []`, so the API server
/// would fill it in). KubeSphere requires it on GlobalRoles and RoleTemplates, where it may still be empty.
pub(crate) fn require_rules(schema: &mut Schema) {
    let object = schema.ensure_object();
    if let Some(rules) = object
        .get_mut("properties")
        .and_then(|p| p.get_mut("rules"))
        .and_then(|r| r.as_object_mut())
    {
        rules.remove("default");
    }
    let required = object.entry("required").or_insert_with(|| serde_json::json!([]));
    if let Some(list) = required.as_array_mut()
        && !list.iter().any(|v| v == "rules")
    {
        list.push("rules".into());
    }
}
