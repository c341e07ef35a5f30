//! The pod mutation (spec §7.2): which pods are handled, which lookups decide, and the JSON patch.
//!
//! ```text
//! AdmissionRequest (CREATE v1 pods) ─┬─ no annotation ──────────────► allow, no patch
//!   + the raw pod JSON               ├─ SA missing ─────────────────► deny 404
//!                                    ├─ SA has no secrets ──────────► deny 500
//!                                    ├─ token Secret missing ───────► deny 404
//!                                    └─ inject(raw pod) ─ diff ─────► allow + JSONPatch (empty diff: no patch)
//! ```
//!
//! The mutation edits the raw JSON the API server sent, not a re-serialised typed Pod, so the patch holds only
//! the injected volume and mounts, never spurious changes to fields the typed model does not know.

use k8s_openapi::api::core::v1::Pod;
use ksiam_api::constants::{
    POD_SERVICE_ACCOUNT_ANNOTATION, ROOT_CA_CONFIG_MAP, ROOT_CA_KEY, SERVICE_ACCOUNT_MOUNT_PATH,
    SERVICE_ACCOUNT_TOKEN_KEY, SERVICE_ACCOUNT_VOLUME_NAME,
};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::lookup::Lookup;

/// `defaultMode` of the projected volume: 0644, what the API server would default it to, set explicitly so
/// that the admitted pod is byte-identical to KubeSphere's.
pub const DEFAULT_MODE: i32 = 0o644;

/// How the injector builds the volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectOptions {
    /// KubeSphere's TLS mode (`kubesphere.tls`, Helm `internalTLS`): also project the `ca.crt` of the
    /// `kubesphere-root-ca.crt` ConfigMap, creating that ConfigMap in the pod's namespace when missing.
    pub tls_mode: bool,
}

/// The pod injector: [`mutate`] bound to a lookup and options.
#[derive(Clone, Debug)]
pub struct Injector<L> {
    lookup: L,
    options: InjectOptions,
}

// === impl Injector ===

impl<L: Lookup> Injector<L> {
    /// An injector reading from `lookup`.
    pub fn new(lookup: L, options: InjectOptions) -> Self {
        Self { lookup, options }
    }

    /// The lookup it reads from.
    pub fn lookup(&self) -> &L {
        &self.lookup
    }

    /// The options it injects with.
    pub fn options(&self) -> InjectOptions {
        self.options
    }

    /// Answers one admission request; see [`mutate`].
    pub async fn mutate(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        pod: Option<&Value>,
    ) -> AdmissionResponse {
        mutate(request, pod, &self.lookup, self.options).await
    }
}

/// Answers one admission request for a pod, following spec §7.2.
///
/// `pod` is the raw `request.object` as the API server sent it (the caller keeps it out of `request`, see
/// [`crate::review::parse_review`]). Only CREATE of core v1 `pods` is handled; anything else is allowed
/// unchanged. Denials carry the HTTP code KubeSphere uses (404 for a missing ServiceAccount or token Secret,
/// 500 otherwise) in `status.code`.
pub async fn mutate<L: Lookup>(
    request: &AdmissionRequest<DynamicObject>,
    pod: Option<&Value>,
    lookup: &L,
    options: InjectOptions,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if !is_pod_create(request) {
        return response;
    }

    // 1. Decode the pod.
    let Some(raw) = pod.filter(|raw| !raw.is_null()) else {
        return deny(response, 500, "there is no content to decode");
    };
    let typed = match Pod::deserialize(raw) {
        Ok(pod) => pod,
        Err(error) => return deny(response, 500, error),
    };

    // 2. The annotation naming the ServiceAccount; none means "not ours".
    let Some(sa_name) = typed
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(POD_SERVICE_ACCOUNT_ANNOTATION))
        .filter(|name| !name.is_empty())
    else {
        return response;
    };

    // The ServiceAccount always lives in the pod's namespace.
    let Some(namespace) = request
        .namespace
        .as_deref()
        .or(typed.metadata.namespace.as_deref())
        .filter(|ns| !ns.is_empty())
    else {
        return deny(response, 500, "the pod has no namespace");
    };

    // 3. The ServiceAccount.
    let service_account = match lookup.get_service_account(namespace, sa_name).await {
        Ok(Some(sa)) => sa,
        Ok(None) => {
            return deny(
                response,
                404,
                format_args!("ServiceAccount.kubesphere.io \"{sa_name}\" not found"),
            );
        }
        Err(error) => return deny(response, 500, error),
    };

    // 4. Its first secret is the token.
    let Some(token_ref) = service_account.spec.secrets.first() else {
        return deny(
            response,
            500,
            format_args!("can not find any token in service account: {sa_name}"),
        );
    };
    let token_name = token_ref.name.as_deref().unwrap_or_default();
    if token_name.is_empty() {
        // What the API server answers to a GET with an empty name.
        return deny(response, 500, "resource name may not be empty");
    }

    // 5. The token Secret must exist (only existence is checked).
    let secret_namespace = service_account
        .metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(namespace);
    match lookup.secret_exists(secret_namespace, token_name).await {
        Ok(true) => {}
        Ok(false) => return deny(response, 404, format_args!("Secret \"{token_name}\" not found")),
        Err(error) => return deny(response, 500, error),
    }

    // 6. TLS mode: the CA ConfigMap the volume projects must exist in the pod's namespace.
    if options.tls_mode
        && let Err(error) = lookup.ensure_root_ca_config_map(namespace).await
    {
        return deny(response, 500, error);
    }

    // 7-9. Mutate a copy of the raw pod and answer with the difference.
    let mut mutated = raw.clone();
    inject(&mut mutated, token_name, options.tls_mode);
    let patch = json_patch::diff(raw, &mutated);
    if patch.0.is_empty() {
        return response;
    }
    match response.clone().with_patch(patch) {
        Ok(patched) => patched,
        Err(error) => deny(response, 500, error),
    }
}

/// Whether the request is a CREATE of a core v1 pod (not of a subresource).
fn is_pod_create(request: &AdmissionRequest<DynamicObject>) -> bool {
    request.operation == Operation::Create
        && request.resource.group.is_empty()
        && request.resource.version == "v1"
        && request.resource.resource == "pods"
        && request.sub_resource.as_deref().unwrap_or_default().is_empty()
}

/// Denies with `message`, carrying `code` in `status.code` as KubeSphere does.
fn deny(response: AdmissionResponse, code: u16, message: impl std::fmt::Display) -> AdmissionResponse {
    let mut denied = response.deny(message);
    denied.result.code = code;
    denied
}

/// Injects the token volume and its mounts into a raw pod, in place.
///
/// * The volume `kubesphere-service-account` is appended to `spec.volumes`; if a volume of that name exists and
///   differs (another secret, another mode), it is replaced, so there is never a duplicate.
/// * The read-only mount at `/var/run/secrets/kubesphere.io/serviceaccount` is appended to every container and
///   init container (ephemeral containers are left alone); a mount of that name that is already correct is
///   left as it is, an incorrect one is replaced.
///
/// Missing `spec`, `volumes` or `volumeMounts` keys (or `null` values) are created. Applying it twice gives
/// the same pod as applying it once.
pub fn inject(pod: &mut Value, token_secret: &str, tls_mode: bool) {
    let Some(pod) = pod.as_object_mut() else {
        return;
    };
    let Some(spec) = object_entry(pod, "spec") else {
        return;
    };

    if let Some(volumes) = array_entry(spec, "volumes") {
        let volume = service_account_volume(token_secret, tls_mode);
        match volumes
            .iter_mut()
            .find(|v| has_name(v, SERVICE_ACCOUNT_VOLUME_NAME))
        {
            Some(existing) => {
                if *existing != volume {
                    *existing = volume;
                }
            }
            None => volumes.push(volume),
        }
    }

    for key in ["containers", "initContainers"] {
        let Some(Value::Array(containers)) = spec.get_mut(key) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let Some(mounts) = array_entry(container, "volumeMounts") else {
                continue;
            };
            match mounts
                .iter_mut()
                .find(|m| has_name(m, SERVICE_ACCOUNT_VOLUME_NAME))
            {
                Some(existing) => {
                    if !is_correct_mount(existing) {
                        *existing = service_account_mount();
                    }
                }
                None => mounts.push(service_account_mount()),
            }
        }
    }
}

/// The projected volume KubeSphere injects (with `defaultMode` as the API server defaults it).
pub fn service_account_volume(token_secret: &str, tls_mode: bool) -> Value {
    let mut sources = vec![json!({
        "secret": {
            "name": token_secret,
            "items": [{"key": SERVICE_ACCOUNT_TOKEN_KEY, "path": SERVICE_ACCOUNT_TOKEN_KEY}],
        }
    })];
    if tls_mode {
        sources.push(json!({
            "configMap": {
                "name": ROOT_CA_CONFIG_MAP,
                "items": [{"key": ROOT_CA_KEY, "path": ROOT_CA_KEY}],
            }
        }));
    }
    json!({
        "name": SERVICE_ACCOUNT_VOLUME_NAME,
        "projected": {"defaultMode": DEFAULT_MODE, "sources": sources},
    })
}

/// The read-only mount of the injected volume.
pub fn service_account_mount() -> Value {
    json!({
        "name": SERVICE_ACCOUNT_VOLUME_NAME,
        "mountPath": SERVICE_ACCOUNT_MOUNT_PATH,
        "readOnly": true,
    })
}

/// A mount of the injected volume is correct when it mounts all of it, read-only, at the standard path.
/// Fields the API server may add (such as `mountPropagation`) do not matter.
fn is_correct_mount(mount: &Value) -> bool {
    let empty = |key: &str| {
        mount
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
    };
    mount.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_MOUNT_PATH)
        && mount.get("readOnly").and_then(Value::as_bool) == Some(true)
        && empty("subPath")
        && empty("subPathExpr")
}

fn has_name(item: &Value, name: &str) -> bool {
    item.get("name").and_then(Value::as_str) == Some(name)
}

/// The object under `key`, created (or replacing a `null`) when missing; `None` if it is something else.
fn object_entry<'a>(parent: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let entry = parent.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

/// The array under `key`, created (or replacing a `null`) when missing; `None` if it is something else.
fn array_entry<'a>(parent: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Vec<Value>> {
    let entry = parent.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if entry.is_null() {
        *entry = Value::Array(Vec::new());
    }
    entry.as_array_mut()
}
