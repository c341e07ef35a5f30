//! Reading an `AdmissionReview` body, keeping the object as the raw JSON the API server sent.
//!
//! `request.object` and `request.oldObject` are taken out before the review is decoded, so that a pod that
//! does not decode is the injector's business (deny with 500, as KubeSphere does) rather than a malformed
//! review (HTTP 400).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::Value;

/// The `apiVersion`s of `AdmissionReview` the webhook understands (both have the same shape).
const SUPPORTED_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// An admission request, with its object kept raw.
#[derive(Clone, Debug)]
pub struct PodReview {
    /// The request, with `object` and `oldObject` removed (both `None`).
    pub request: AdmissionRequest<DynamicObject>,
    /// The raw `request.object`, if any.
    pub object: Option<Value>,
    /// The raw `request.oldObject` (UPDATE and DELETE), if any.
    pub old_object: Option<Value>,
}

/// Why a body is not an `AdmissionReview` the webhook can answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON.
    #[error("the request body is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The body is JSON but not an `AdmissionReview` object.
    #[error("expected an AdmissionReview object, got {0}")]
    NotAReview(String),
    /// The review has an `apiVersion` other than `admission.k8s.io/v1` or `v1beta1`.
    #[error("unsupported AdmissionReview apiVersion {0:?}, expected \"admission.k8s.io/v1\"")]
    UnsupportedVersion(String),
    /// The review has no `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// The `request` does not have the fields of an admission request.
    #[error("invalid AdmissionReview request: {0}")]
    InvalidRequest(#[source] serde_json::Error),
}

/// Parses an `AdmissionReview` body.
pub fn parse_review(body: &[u8]) -> Result<PodReview, ReviewError> {
    let mut review: Value = serde_json::from_slice(body).map_err(ReviewError::Json)?;
    let Some(fields) = review.as_object_mut() else {
        return Err(ReviewError::NotAReview(json_kind(&review).to_owned()));
    };
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(ReviewError::NotAReview(format!("kind {kind:?}")));
    }
    let version = fields
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(ReviewError::UnsupportedVersion(version.to_owned()));
    }
    let (object, old_object) = match fields.get_mut("request") {
        Some(Value::Object(request)) => {
            let object = request.insert("object".to_owned(), Value::Null);
            let old_object = request.insert("oldObject".to_owned(), Value::Null);
            (
                object.filter(|object| !object.is_null()),
                old_object.filter(|object| !object.is_null()),
            )
        }
        Some(Value::Null) | None => return Err(ReviewError::NoRequest),
        Some(other) => {
            return Err(ReviewError::InvalidRequest(serde::de::Error::custom(format!(
                "expected an object, got {}",
                json_kind(other)
            ))));
        }
    };
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(review).map_err(ReviewError::InvalidRequest)?;
    let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| ReviewError::NoRequest)?;
    Ok(PodReview {
        request,
        object,
        old_object,
    })
}

/// Encodes the `AdmissionReview` answering with `response`.
///
/// `response.patch` is written as a base64 string, the JSON form of Kubernetes' `[]byte` (kube's own
/// serialisation writes an array of numbers, which the API server tolerates but no other client expects).
pub fn encode_review(mut response: AdmissionResponse) -> Result<Vec<u8>, serde_json::Error> {
    let patch = response.patch.take();
    let mut review = serde_json::to_value(response.into_review())?;
    if let (Some(patch), Some(Value::Object(fields))) = (patch, review.get_mut("response")) {
        fields.insert("patch".to_owned(), Value::String(STANDARD.encode(patch)));
    }
    serde_json::to_vec(&review)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::Operation;
    use serde_json::json;

    fn review(version: &str, object: Value) -> Vec<u8> {
        json!({
            "apiVersion": version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "uid-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": null,
            },
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_object_is_kept_raw() {
        // `metadata` of the wrong type would fail a typed decode; here it is the injector's to judge.
        let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": "odd", "unknownField": [1, 2]});
        let parsed = parse_review(&review("admission.k8s.io/v1", object.clone())).expect("parse");
        assert_eq!(parsed.object, Some(object));
        assert_eq!(parsed.request.uid, "uid-1");
        assert_eq!(parsed.request.operation, Operation::Create);
        assert_eq!(parsed.request.namespace.as_deref(), Some("default"));
        assert!(parsed.request.object.is_none());
    }

    #[test]
    fn v1beta1_is_accepted_and_answered_in_kind() {
        let parsed = parse_review(&review("admission.k8s.io/v1beta1", json!(null))).expect("parse");
        assert_eq!(parsed.object, None);
        let response = AdmissionResponse::from(&parsed.request);
        let encoded: Value = serde_json::from_slice(&encode_review(response).expect("encode")).expect("json");
        assert_eq!(encoded["apiVersion"], "admission.k8s.io/v1beta1");
    }

    #[test]
    fn malformed_reviews_are_explained() {
        let cases: [(&[u8], &str); 6] = [
            (b"{", "the request body is not JSON: "),
            (b"[]", "expected an AdmissionReview object, got an array"),
            (
                br#"{"kind":"Pod","apiVersion":"v1"}"#,
                "expected an AdmissionReview object, got kind \"Pod\"",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v2"}"#,
                "unsupported AdmissionReview apiVersion \"admission.k8s.io/v2\"",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
                "the AdmissionReview has no request",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"x"}}"#,
                "invalid AdmissionReview request: missing field",
            ),
        ];
        for (body, expected) in cases {
            let error = parse_review(body).expect_err("malformed");
            assert!(error.to_string().starts_with(expected), "{error} / {expected}");
        }
    }

    #[test]
    fn the_patch_is_base64() {
        let parsed = parse_review(&review("admission.k8s.io/v1", json!({}))).expect("parse");
        let response = AdmissionResponse::from(&parsed.request)
            .with_patch(json_patch::Patch(Vec::new()))
            .expect("patch");
        let encoded: Value = serde_json::from_slice(&encode_review(response).expect("encode")).expect("json");
        assert_eq!(encoded["response"]["patch"], "W10="); // base64 of "[]"
        assert_eq!(encoded["response"]["patchType"], "JSONPatch");
        assert_eq!(encoded["response"]["uid"], "uid-1");
    }
}
