//! The pod mutation of spec §7.2, branch by branch, through the public API (no cluster).

use json_patch::Patch;
use ksiam_api::serviceaccount::ServiceAccount;
use ksiam_webhook::{InjectOptions, Injector, MemoryLookup, parse_review};
use kube::core::admission::AdmissionResponse;
use serde_json::{Value, json};

const SEED_POD: &str = include_str!("../testdata/seed-pod.yaml");
const SEED_INJECTED: &str = include_str!("../testdata/seed-injected.yaml");

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("valid YAML test data")
}

fn seed_pod() -> Value {
    yaml(SEED_POD)
}

fn service_account(namespace: &str, name: &str, secrets: &[&str]) -> ServiceAccount {
    serde_json::from_value(json!({
        "apiVersion": "kubesphere.io/v1alpha1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace},
        "secrets": secrets.iter().map(|s| json!({"name": s, "namespace": namespace})).collect::<Vec<_>>(),
    }))
    .expect("ServiceAccount")
}

/// The seed's state: ServiceAccount `default/sample` with token Secret `sample-lqmbj`.
fn seed_lookup() -> MemoryLookup {
    MemoryLookup::new()
        .with_service_account(service_account("default", "sample", &["sample-lqmbj"]))
        .with_secret("default", "sample-lqmbj")
}

fn review_with(operation: &str, resource: &str, namespace: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f0b4e25-61a4-4b8e-9d39-1a5f0c7e2b11",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": resource},
            "name": object["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    })
}

fn create_review(object: &Value) -> Value {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default");
    review_with("CREATE", "pods", namespace, object)
}

async fn admit_with(lookup: &MemoryLookup, options: InjectOptions, review: &Value) -> AdmissionResponse {
    let review = parse_review(review.to_string().as_bytes()).expect("a valid review");
    Injector::new(lookup.clone(), options)
        .mutate(&review.request, review.object.as_ref())
        .await
}

async fn admit(lookup: &MemoryLookup, pod: &Value) -> AdmissionResponse {
    admit_with(lookup, InjectOptions::default(), &create_review(pod)).await
}

fn patch_of(response: &AdmissionResponse) -> Option<Patch> {
    response
        .patch
        .as_ref()
        .map(|bytes| serde_json::from_slice(bytes).expect("the patch is a JSON patch"))
}

/// The pod after the response's patch (the pod itself when there is none).
fn patched(pod: &Value, response: &AdmissionResponse) -> Value {
    let mut pod = pod.clone();
    if let Some(patch) = patch_of(response) {
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the original pod");
    }
    pod
}

fn assert_allowed_without_patch(response: &AdmissionResponse) {
    assert!(response.allowed, "{response:?}");
    assert_eq!(response.patch, None);
    let json = serde_json::to_value(response).expect("serialize");
    assert!(json.get("patchType").is_none(), "{json}");
}

fn assert_denied(response: &AdmissionResponse, code: u16, message: &str) {
    assert!(!response.allowed, "{response:?}");
    assert_eq!(response.result.code, code);
    assert_eq!(response.result.message, message);
    assert_eq!(response.patch, None);
    assert_eq!(response.uid, "3f0b4e25-61a4-4b8e-9d39-1a5f0c7e2b11");
}

fn mount_count(container: &Value) -> usize {
    container["volumeMounts"]
        .as_array()
        .map(|mounts| {
            mounts
                .iter()
                .filter(|m| m["name"] == "kubesphere-service-account")
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn seed_pod_gets_exactly_the_seed_volume_and_mount() {
    let pod = seed_pod();
    let response = admit(&seed_lookup(), &pod).await;
    assert!(response.allowed);
    assert_eq!(response.uid, "3f0b4e25-61a4-4b8e-9d39-1a5f0c7e2b11");
    assert_eq!(
        serde_json::to_value(&response).expect("serialize")["patchType"],
        "JSONPatch"
    );

    let expected = yaml(SEED_INJECTED);
    let admitted = patched(&pod, &response);
    assert_eq!(
        admitted["spec"]["containers"][0]["volumeMounts"],
        expected["volumeMounts"]
    );
    assert_eq!(admitted["spec"]["volumes"], expected["volumes"]);

    // Nothing else changed: the patch adds the two keys the seed pod does not have, and only those.
    let patch = serde_json::to_value(patch_of(&response).expect("a patch")).expect("serialize");
    let paths: Vec<(&str, &str)> = patch
        .as_array()
        .expect("ops")
        .iter()
        .map(|op| {
            (
                op["op"].as_str().unwrap_or_default(),
                op["path"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("add", "/spec/containers/0/volumeMounts"),
            ("add", "/spec/volumes")
        ]
    );
    let mut rest = admitted.clone();
    rest["spec"]["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("volumeMounts");
    rest["spec"].as_object_mut().expect("spec").remove("volumes");
    assert_eq!(rest, pod);
}

#[tokio::test]
async fn a_mutated_pod_is_left_unchanged() {
    let lookup = seed_lookup();
    let pod = seed_pod();
    let once = patched(&pod, &admit(&lookup, &pod).await);
    let again = admit(&lookup, &once).await;
    assert_allowed_without_patch(&again);
    assert_eq!(patched(&once, &again), once);
}

#[tokio::test]
async fn init_containers_get_the_mount_and_ephemeral_containers_do_not() {
    let mut pod = seed_pod();
    pod["spec"]["initContainers"] = json!([
        {"name": "init-a", "image": "busybox"},
        {"name": "init-b", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
    ]);
    pod["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "sidecar", "image": "envoy"}));
    pod["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}]);
    pod["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);

    let admitted = patched(&pod, &admit(&seed_lookup(), &pod).await);
    let mount = yaml(SEED_INJECTED)["volumeMounts"][0].clone();
    for key in ["containers", "initContainers"] {
        for container in admitted["spec"][key].as_array().expect("containers") {
            assert_eq!(mount_count(container), 1, "{container}");
            let mounts = container["volumeMounts"].as_array().expect("mounts");
            assert_eq!(mounts.last(), Some(&mount), "appended last: {container}");
        }
    }
    // The existing mount of init-b is kept, in front.
    assert_eq!(
        admitted["spec"]["initContainers"][1]["volumeMounts"][0]["name"],
        "data"
    );
    assert_eq!(mount_count(&admitted["spec"]["ephemeralContainers"][0]), 0);
    assert!(
        admitted["spec"]["ephemeralContainers"][0]
            .get("volumeMounts")
            .is_none()
    );
    // The volume is appended after the existing one.
    let volumes = admitted["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[0]["name"], "data");
    assert_eq!(volumes[1], yaml(SEED_INJECTED)["volumes"][0]);
}

#[tokio::test]
async fn pods_without_volumes_or_with_null_lists_are_patched() {
    let lookup = seed_lookup();
    for (volumes, mounts) in [
        (None, None),
        (Some(Value::Null), Some(Value::Null)),
        (Some(json!([])), Some(json!([]))),
    ] {
        let mut pod = seed_pod();
        if let Some(volumes) = volumes {
            pod["spec"]["volumes"] = volumes;
        }
        if let Some(mounts) = mounts {
            pod["spec"]["containers"][0]["volumeMounts"] = mounts;
        }
        let admitted = patched(&pod, &admit(&lookup, &pod).await);
        let expected = yaml(SEED_INJECTED);
        assert_eq!(admitted["spec"]["volumes"], expected["volumes"], "{pod}");
        assert_eq!(
            admitted["spec"]["containers"][0]["volumeMounts"], expected["volumeMounts"],
            "{pod}"
        );
    }
}

#[tokio::test]
async fn an_existing_volume_for_another_secret_is_replaced_not_duplicated() {
    let mut pod = seed_pod();
    pod["spec"]["volumes"] = json!([
        {"name": "data", "emptyDir": {}},
        {"name": "kubesphere-service-account", "projected": {"defaultMode": 420, "sources": [
            {"secret": {"name": "sample-old", "items": [{"key": "token", "path": "token"}]}}
        ]}},
    ]);
    // A correct mount with an extra field the API server may add: left as it is.
    let correct = json!({
        "name": "kubesphere-service-account",
        "mountPath": "/var/run/secrets/kubesphere.io/serviceaccount",
        "readOnly": true,
        "mountPropagation": "None",
    });
    pod["spec"]["containers"][0]["volumeMounts"] = json!([correct]);
    // A wrong one (writable, elsewhere): replaced.
    pod["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox", "volumeMounts": [
        {"name": "kubesphere-service-account", "mountPath": "/elsewhere"},
    ]}]);

    let admitted = patched(&pod, &admit(&seed_lookup(), &pod).await);
    let volumes = admitted["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[0]["name"], "data");
    assert_eq!(volumes[1], yaml(SEED_INJECTED)["volumes"][0]);
    assert_eq!(
        admitted["spec"]["containers"][0]["volumeMounts"],
        json!([correct])
    );
    assert_eq!(
        admitted["spec"]["initContainers"][0]["volumeMounts"],
        yaml(SEED_INJECTED)["volumeMounts"]
    );
}

#[tokio::test]
async fn no_annotation_or_an_empty_one_is_allowed_without_patch() {
    // A lookup that fails everywhere proves it is not even consulted.
    let lookup = MemoryLookup::new().failing_in("default", "must not be called");
    let mut pod = seed_pod();
    pod["metadata"]["annotations"]["kubesphere.io/serviceaccount-name"] = json!("");
    assert_allowed_without_patch(&admit(&lookup, &pod).await);

    pod["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove("kubesphere.io/serviceaccount-name");
    assert_allowed_without_patch(&admit(&lookup, &pod).await);

    pod["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    assert_allowed_without_patch(&admit(&lookup, &pod).await);
}

#[tokio::test]
async fn missing_service_account_is_denied_with_404() {
    let response = admit(&MemoryLookup::new(), &seed_pod()).await;
    assert_denied(
        &response,
        404,
        "ServiceAccount.kubesphere.io \"sample\" not found",
    );

    // What the API server receives.
    let review: Value =
        serde_json::from_slice(&ksiam_webhook::encode_review(response).expect("encode")).expect("json");
    assert_eq!(
        review,
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": "3f0b4e25-61a4-4b8e-9d39-1a5f0c7e2b11",
                "allowed": false,
                "status": {"code": 404, "message": "ServiceAccount.kubesphere.io \"sample\" not found"},
            },
        })
    );
}

#[tokio::test]
async fn the_service_account_is_looked_up_in_the_request_namespace() {
    // `sample` exists, but in another namespace than the pod's.
    let lookup = MemoryLookup::new()
        .with_service_account(service_account("other", "sample", &["sample-lqmbj"]))
        .with_secret("other", "sample-lqmbj");
    let mut pod = seed_pod();
    pod["metadata"]["namespace"] = json!("team-a");
    let response = admit(&lookup, &pod).await;
    assert_denied(
        &response,
        404,
        "ServiceAccount.kubesphere.io \"sample\" not found",
    );
}

#[tokio::test]
async fn service_account_lookup_errors_are_denied_with_500() {
    let lookup = MemoryLookup::new().failing_in("default", "etcdserver: request timed out");
    let response = admit(&lookup, &seed_pod()).await;
    assert_denied(&response, 500, "etcdserver: request timed out");
}

#[tokio::test]
async fn a_service_account_without_secrets_is_denied_with_500() {
    let lookup = MemoryLookup::new().with_service_account(service_account("default", "sample", &[]));
    let response = admit(&lookup, &seed_pod()).await;
    assert_denied(
        &response,
        500,
        "can not find any token in service account: sample",
    );
}

#[tokio::test]
async fn a_missing_token_secret_is_denied_with_404() {
    let lookup =
        MemoryLookup::new().with_service_account(service_account("default", "sample", &["sample-lqmbj"]));
    let response = admit(&lookup, &seed_pod()).await;
    assert_denied(&response, 404, "Secret \"sample-lqmbj\" not found");
}

#[tokio::test]
async fn only_the_first_secret_is_mounted() {
    let lookup = MemoryLookup::new()
        .with_service_account(service_account(
            "default",
            "sample",
            &["sample-first", "sample-second"],
        ))
        .with_secret("default", "sample-first")
        .with_secret("default", "sample-second");
    let pod = seed_pod();
    let admitted = patched(&pod, &admit(&lookup, &pod).await);
    assert_eq!(
        admitted["spec"]["volumes"][0]["projected"]["sources"][0]["secret"]["name"],
        "sample-first"
    );
    // The second Secret missing does not matter either.
    let lookup = MemoryLookup::new()
        .with_service_account(service_account(
            "default",
            "sample",
            &["sample-first", "sample-second"],
        ))
        .with_secret("default", "sample-first");
    assert!(admit(&lookup, &pod).await.allowed);
}

#[tokio::test]
async fn a_pod_that_does_not_decode_is_denied_with_500() {
    let mut pod = seed_pod();
    pod["spec"]["containers"] = json!("not a list");
    let response = admit(&seed_lookup(), &pod).await;
    assert!(!response.allowed);
    assert_eq!(response.result.code, 500);
    assert!(
        response
            .result
            .message
            .contains("invalid type: string \"not a list\""),
        "{}",
        response.result.message
    );

    let response = admit(&seed_lookup(), &Value::Null).await;
    assert_denied(&response, 500, "there is no content to decode");
}

#[tokio::test]
async fn only_pod_creation_is_handled() {
    let lookup = MemoryLookup::new().failing_in("default", "must not be called");
    let pod = seed_pod();
    for (operation, resource) in [
        ("UPDATE", "pods"),
        ("DELETE", "pods"),
        ("CONNECT", "pods"),
        ("CREATE", "deployments"),
    ] {
        let review = review_with(operation, resource, "default", &pod);
        let response = admit_with(&lookup, InjectOptions::default(), &review).await;
        assert_allowed_without_patch(&response);
    }
    let mut review = create_review(&pod);
    review["request"]["subResource"] = json!("binding");
    assert_allowed_without_patch(&admit_with(&lookup, InjectOptions::default(), &review).await);
}

#[tokio::test]
async fn tls_mode_projects_the_ca_and_ensures_the_config_map() {
    let lookup = seed_lookup();
    let pod = seed_pod();
    let options = InjectOptions { tls_mode: true };
    let response = admit_with(&lookup, options, &create_review(&pod)).await;
    let admitted = patched(&pod, &response);
    assert_eq!(
        admitted["spec"]["volumes"],
        json!([{
            "name": "kubesphere-service-account",
            "projected": {"defaultMode": 420, "sources": [
                {"secret": {"name": "sample-lqmbj", "items": [{"key": "token", "path": "token"}]}},
                {"configMap": {"name": "kubesphere-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ]},
        }])
    );
    assert_eq!(lookup.root_ca_namespaces(), ["default"]);

    // Switching TLS mode on for a pod injected without it replaces the volume.
    let plain = patched(&pod, &admit(&lookup, &pod).await);
    let upgraded = patched(
        &plain,
        &admit_with(&lookup, options, &create_review(&plain)).await,
    );
    assert_eq!(upgraded["spec"]["volumes"], admitted["spec"]["volumes"]);
}

#[tokio::test]
async fn tls_mode_without_the_ca_is_denied_with_500() {
    let lookup =
        seed_lookup().failing_root_ca("secret kubesphere-system/ks-apiserver-tls-certs has no ca.crt key");
    let response = admit_with(
        &lookup,
        InjectOptions { tls_mode: true },
        &create_review(&seed_pod()),
    )
    .await;
    assert_denied(
        &response,
        500,
        "secret kubesphere-system/ks-apiserver-tls-certs has no ca.crt key",
    );
    // Without TLS mode the CA is not needed.
    assert!(admit(&lookup, &seed_pod()).await.allowed);
}

#[tokio::test]
async fn the_injected_volume_is_a_valid_core_volume() {
    let volume = ksiam_webhook::inject::service_account_volume("sample-lqmbj", true);
    let typed: k8s_openapi::api::core::v1::Volume = serde_json::from_value(volume.clone()).expect("a Volume");
    assert_eq!(serde_json::to_value(&typed).expect("serialize"), volume);
    let mount = ksiam_webhook::inject::service_account_mount();
    let typed: k8s_openapi::api::core::v1::VolumeMount =
        serde_json::from_value(mount.clone()).expect("a VolumeMount");
    assert_eq!(serde_json::to_value(&typed).expect("serialize"), mount);
}
