//! Kubernetes watches → the [`PolicyStore`], one object at a time.
//!
//! ```text
//!   GlobalRole, WorkspaceRole, ClusterRole, Role,                 watcher (DynamicObject)
//!   GlobalRoleBinding, WorkspaceRoleBinding, ClusterRoleBinding,  ──► parse + convert ──► store.update(upsert/remove)
//!   RoleBinding (iam.kubesphere.io/v1beta1), core Namespace
//! ```
//!
//! Each kind is watched as a `DynamicObject` and parsed per object, so one object that does not parse
//! is logged (kind, namespace/name and the parse error; never its content) and skipped: its previous
//! version is removed from the policy (fail closed), and every other object keeps flowing.
//!
//! A (re-)list (`Init`, `InitApply`…, `InitDone`) is buffered and applied in one update at `InitDone`,
//! which also removes the objects of that kind that were known before and are not in the new list
//! (deleted while the watch was down). The store becomes ready ([`PolicyStore::set_ready`]) only once
//! every kind has completed its first list; until then decisions deny with a "not ready" reason.

use std::{
    collections::HashSet,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace as KubeNamespace;
use ksiam_api::iam::{
    ClusterRole, ClusterRoleBinding, GlobalRole, GlobalRoleBinding, Role, RoleBinding, WorkspaceRole,
    WorkspaceRoleBinding,
};
use ksiam_rbac::{
    PolicyIndex, PolicyStore,
    model::{self, Binding, BindingKey, BindingKind, Namespace, Policy, RoleKey, RoleKind},
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams},
    core::ApiResource,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio_util::sync::CancellationToken;

use crate::{convert, metrics::Metrics};

/// A converted object.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A role of any kind.
    Role(model::Role),
    /// A binding of any kind.
    Binding(Binding),
    /// A namespace.
    Namespace(Namespace),
}

/// The identity of a converted object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// A role.
    Role(RoleKey),
    /// A binding.
    Binding(BindingKey),
    /// A namespace, by name.
    Namespace(String),
}

impl Object {
    /// The object's identity.
    pub fn key(&self) -> ObjectKey {
        match self {
            Self::Role(r) => ObjectKey::Role(r.key()),
            Self::Binding(b) => ObjectKey::Binding(b.key()),
            Self::Namespace(n) => ObjectKey::Namespace(n.name.clone()),
        }
    }

    fn upsert(&self, idx: &mut PolicyIndex) {
        match self {
            Self::Role(r) => idx.upsert_role(r),
            Self::Binding(b) => idx.upsert_binding(b),
            Self::Namespace(n) => idx.upsert_namespace(n),
        }
    }
}

impl ObjectKey {
    fn remove(&self, idx: &mut PolicyIndex) {
        match self {
            Self::Role(k) => idx.remove_role(k),
            Self::Binding(k) => idx.remove_binding(k),
            Self::Namespace(n) => idx.remove_namespace(n),
        }
    }
}

/// One watched kind: how to reach it, parse it and key it.
#[derive(Clone)]
pub struct Kind {
    /// The kind name (also the metrics label).
    pub name: &'static str,
    resource: ApiResource,
    convert: fn(DynamicObject) -> Result<Object, String>,
    key: fn(&str, &str) -> ObjectKey,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kind").field("name", &self.name).finish()
    }
}

fn parse<K>(obj: DynamicObject) -> Result<K, String>
where
    K: kube::Resource + serde::de::DeserializeOwned,
{
    obj.try_parse::<K>().map_err(|e| e.to_string())
}

macro_rules! role_kind {
    ($name:literal, $ty:ty, $kind:expr, $conv:path) => {
        Kind {
            name: $name,
            resource: ApiResource::erase::<$ty>(&()),
            convert: |o| {
                parse::<$ty>(o)
                    .and_then(|x| $conv(&x).map_err(|e| e.to_string()))
                    .map(Object::Role)
            },
            key: |ns, name| {
                ObjectKey::Role(RoleKey {
                    kind: $kind,
                    namespace: if $kind == RoleKind::Role {
                        ns.to_owned()
                    } else {
                        String::new()
                    },
                    name: name.to_owned(),
                })
            },
        }
    };
}

macro_rules! binding_kind {
    ($name:literal, $ty:ty, $kind:expr, $conv:path) => {
        Kind {
            name: $name,
            resource: ApiResource::erase::<$ty>(&()),
            convert: |o| {
                parse::<$ty>(o)
                    .and_then(|x| $conv(&x).map_err(|e| e.to_string()))
                    .map(Object::Binding)
            },
            key: |ns, name| {
                ObjectKey::Binding(BindingKey {
                    kind: $kind,
                    namespace: if $kind == BindingKind::RoleBinding {
                        ns.to_owned()
                    } else {
                        String::new()
                    },
                    name: name.to_owned(),
                })
            },
        }
    };
}

/// The nine watched kinds: the four iam roles, the four iam bindings, and core Namespaces.
pub fn kinds() -> Vec<Kind> {
    vec![
        role_kind!(
            "GlobalRole",
            GlobalRole,
            RoleKind::GlobalRole,
            convert::global_role
        ),
        role_kind!(
            "WorkspaceRole",
            WorkspaceRole,
            RoleKind::WorkspaceRole,
            convert::workspace_role
        ),
        role_kind!(
            "ClusterRole",
            ClusterRole,
            RoleKind::ClusterRole,
            convert::cluster_role
        ),
        role_kind!("Role", Role, RoleKind::Role, convert::namespaced_role),
        binding_kind!(
            "GlobalRoleBinding",
            GlobalRoleBinding,
            BindingKind::GlobalRoleBinding,
            convert::global_role_binding
        ),
        binding_kind!(
            "WorkspaceRoleBinding",
            WorkspaceRoleBinding,
            BindingKind::WorkspaceRoleBinding,
            convert::workspace_role_binding
        ),
        binding_kind!(
            "ClusterRoleBinding",
            ClusterRoleBinding,
            BindingKind::ClusterRoleBinding,
            convert::cluster_role_binding
        ),
        binding_kind!(
            "RoleBinding",
            RoleBinding,
            BindingKind::RoleBinding,
            convert::role_binding
        ),
        Kind {
            name: "Namespace",
            resource: ApiResource::erase::<KubeNamespace>(&()),
            convert: |o| {
                parse::<KubeNamespace>(o)
                    .and_then(|x| convert::namespace(&x).map_err(|e| e.to_string()))
                    .map(Object::Namespace)
            },
            key: |_, name| ObjectKey::Namespace(name.to_owned()),
        },
    ]
}

impl Kind {
    fn key_of(&self, obj: &DynamicObject) -> ObjectKey {
        (self.key)(
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// Converts `obj`, logging and counting a failure.
    fn convert_logged(&self, obj: DynamicObject, metrics: &Metrics) -> Result<Object, ObjectKey> {
        let key = self.key_of(&obj);
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        (self.convert)(obj).map_err(|error| {
            metrics.watch_error(self.name);
            tracing::warn!(kind = self.name, namespace = %ns, name = %name, %error, "skipping policy object that does not parse");
            key
        })
    }
}

/// The state of one kind's watch: the keys it has put in the store, and the list being received.
#[derive(Debug)]
pub struct KindWatch {
    kind: Kind,
    known: HashSet<ObjectKey>,
    relist: Option<Vec<Result<Object, ObjectKey>>>,
    synced: bool,
}

impl KindWatch {
    /// A watch of `kind` that has seen nothing yet.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            known: HashSet::new(),
            relist: None,
            synced: false,
        }
    }

    /// Whether the first list has completed.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Applies one watcher event to `store`. Returns `true` when this event completed the first list.
    pub fn handle(
        &mut self,
        event: watcher::Event<DynamicObject>,
        store: &PolicyStore,
        metrics: &Metrics,
    ) -> bool {
        let mut first = false;
        match event {
            watcher::Event::Init => {
                self.relist = Some(Vec::new());
                return false;
            }
            watcher::Event::InitApply(obj) => {
                let converted = self.kind.convert_logged(obj, metrics);
                self.relist.get_or_insert_with(Vec::new).push(converted);
                return false;
            }
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let mut seen: HashSet<ObjectKey> = HashSet::with_capacity(listed.len());
                let known = &mut self.known;
                store.update(|idx| {
                    for item in &listed {
                        match item {
                            Ok(obj) => {
                                obj.upsert(idx);
                                seen.insert(obj.key());
                            }
                            // A bad object is not kept, whatever version of it we had before.
                            Err(key) => key.remove(idx),
                        }
                    }
                    for gone in known.iter().filter(|k| !seen.contains(*k)) {
                        gone.remove(idx);
                    }
                });
                *known = seen;
                first = !self.synced;
                self.synced = true;
            }
            watcher::Event::Apply(obj) => match self.kind.convert_logged(obj, metrics) {
                Ok(obj) => {
                    store.update(|idx| obj.upsert(idx));
                    self.known.insert(obj.key());
                }
                Err(key) => {
                    store.update(|idx| key.remove(idx));
                    self.known.remove(&key);
                }
            },
            watcher::Event::Delete(obj) => {
                let key = self.kind.key_of(&obj);
                store.update(|idx| key.remove(idx));
                self.known.remove(&key);
            }
        }
        metrics.set_generation(store.load().generation());
        metrics.set_objects(self.kind.name, self.known.len());
        first
    }
}

/// Watches the nine policy kinds and applies every change to `store` until `shutdown` is cancelled.
///
/// The store is marked ready once every kind has completed its first list. Watch errors (the API server
/// is unreachable, a CRD is not installed) are logged and retried with backoff; they never end the watch.
pub async fn watch(
    client: Client,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let kinds = kinds();
    let total = kinds.len();
    let synced = Arc::new(AtomicUsize::new(0));
    let watches = kinds.into_iter().map(|kind| {
        let client = client.clone();
        let store = store.clone();
        let metrics = metrics.clone();
        let synced = synced.clone();
        let shutdown = shutdown.clone();
        async move {
            let api: Api<DynamicObject> = Api::all_with(client, &kind.resource);
            let name = kind.name;
            let mut state = KindWatch::new(kind);
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => break,
                    event = stream.next() => event,
                };
                match event {
                    None => break,
                    Some(Err(error)) => {
                        metrics.watch_error(name);
                        tracing::warn!(kind = name, %error, "policy watch failed; retrying");
                    }
                    Some(Ok(event)) => {
                        if state.handle(event, &store, &metrics) {
                            tracing::info!(kind = name, "policy kind synced");
                            if synced.fetch_add(1, Ordering::AcqRel) + 1 == total {
                                store.set_ready(true);
                                tracing::info!(generation = store.load().generation(), "policy store ready");
                            }
                        }
                    }
                }
            }
        }
    });
    futures::future::join_all(watches).await;
}

/// Lists the nine policy kinds once (for tools that decide locally). Objects that do not parse are
/// skipped and described in the returned warnings.
pub async fn list_policy(client: &Client) -> Result<(Policy, Vec<String>), kube::Error> {
    let mut policy = Policy::default();
    let mut warnings = Vec::new();
    for kind in kinds() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource);
        let list = api.list(&ListParams::default()).await?;
        for obj in list.items {
            let what = format!(
                "{} {}/{}",
                kind.name,
                obj.metadata.namespace.as_deref().unwrap_or_default(),
                obj.metadata.name.as_deref().unwrap_or_default()
            );
            match (kind.convert)(obj) {
                Ok(Object::Role(r)) => policy.roles.push(r),
                Ok(Object::Binding(b)) => policy.bindings.push(b),
                Ok(Object::Namespace(n)) => policy.namespaces.push(n),
                Err(e) => warnings.push(format!("skipped {what}: {e}")),
            }
        }
    }
    Ok((policy, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksiam_rbac::resolve;
    use serde_json::json;

    fn kind(name: &str) -> Kind {
        kinds().into_iter().find(|k| k.name == name).unwrap()
    }

    fn obj(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    fn role(name: &str, verb: &str) -> DynamicObject {
        obj(json!({
            "apiVersion": "iam.kubesphere.io/v1beta1", "kind": "GlobalRole", "metadata": {"name": name},
            "rules": [{"verbs": [verb], "apiGroups": ["*"], "resources": ["*"]}]
        }))
    }

    fn binding(name: &str, role: &str) -> DynamicObject {
        obj(json!({
            "apiVersion": "iam.kubesphere.io/v1beta1", "kind": "GlobalRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "GlobalRole", "name": role},
            "subjects": [{"kind": "User", "name": "alice"}]
        }))
    }

    fn allowed(store: &PolicyStore, method: &str) -> bool {
        let info = resolve(method, "/kapis/iam.kubesphere.io/v1beta1/users", "").unwrap();
        store.decide(&info.attributes("alice", &[])).0.allowed()
    }

    #[test]
    fn lists_apply_incrementally_and_relists_remove_vanished_objects() {
        let store = PolicyStore::default();
        store.set_ready(true);
        let metrics = Metrics::unregistered();
        let mut roles = KindWatch::new(kind("GlobalRole"));
        let mut bindings = KindWatch::new(kind("GlobalRoleBinding"));

        assert!(!bindings.handle(watcher::Event::Init, &store, &metrics));
        assert!(!bindings.handle(
            watcher::Event::InitApply(binding("b", "viewer")),
            &store,
            &metrics
        ));
        assert_eq!(store.load().counts().bindings, 0, "a list is applied at InitDone");
        assert!(
            bindings.handle(watcher::Event::InitDone, &store, &metrics),
            "first list done"
        );
        assert_eq!(store.load().counts().bindings, 1);
        assert_eq!(metrics.objects("GlobalRoleBinding"), 1);

        roles.handle(watcher::Event::Init, &store, &metrics);
        roles.handle(
            watcher::Event::InitApply(role("viewer", "list")),
            &store,
            &metrics,
        );
        roles.handle(watcher::Event::InitApply(role("old", "list")), &store, &metrics);
        assert!(roles.handle(watcher::Event::InitDone, &store, &metrics));
        assert!(allowed(&store, "GET"));
        assert!(!allowed(&store, "POST"));

        // A change and a deletion apply at once.
        roles.handle(watcher::Event::Apply(role("viewer", "create")), &store, &metrics);
        assert!(allowed(&store, "POST"));
        assert!(!allowed(&store, "GET"));
        roles.handle(watcher::Event::Delete(role("viewer", "create")), &store, &metrics);
        assert!(!allowed(&store, "POST"));
        assert_eq!(store.load().counts().roles, 1);

        // A re-list that no longer contains "old" and brings "viewer" back.
        roles.handle(watcher::Event::Init, &store, &metrics);
        roles.handle(
            watcher::Event::InitApply(role("viewer", "list")),
            &store,
            &metrics,
        );
        assert!(
            !roles.handle(watcher::Event::InitDone, &store, &metrics),
            "only the first list counts for readiness"
        );
        let snap = store.load();
        assert_eq!(snap.counts().roles, 1, "the vanished role is removed");
        assert!(snap.role(RoleKind::GlobalRole, "", "old").is_none());
        assert!(allowed(&store, "GET"));
        assert_eq!(metrics.generation(), i64::try_from(snap.generation()).unwrap());
    }

    #[test]
    fn a_bad_object_is_skipped_and_its_old_version_dropped() {
        let store = PolicyStore::default();
        store.set_ready(true);
        let metrics = Metrics::unregistered();
        let mut roles = KindWatch::new(kind("GlobalRole"));
        let mut bindings = KindWatch::new(kind("GlobalRoleBinding"));
        roles.handle(watcher::Event::InitDone, &store, &metrics);
        roles.handle(watcher::Event::Apply(role("viewer", "list")), &store, &metrics);
        let bad = obj(json!({
            "apiVersion": "iam.kubesphere.io/v1beta1", "kind": "GlobalRoleBinding", "metadata": {"name": "b"},
            "roleRef": "not an object", "subjects": 7
        }));
        bindings.handle(watcher::Event::Init, &store, &metrics);
        bindings.handle(watcher::Event::InitApply(bad.clone()), &store, &metrics);
        bindings.handle(
            watcher::Event::InitApply(binding("good", "viewer")),
            &store,
            &metrics,
        );
        assert!(bindings.handle(watcher::Event::InitDone, &store, &metrics));
        assert_eq!(store.load().counts().bindings, 1, "the good binding is kept");
        assert!(allowed(&store, "GET"));
        assert_eq!(metrics.objects("GlobalRoleBinding"), 1);

        // The good binding turns bad: fail closed by dropping it.
        let mut broken = bad;
        broken.metadata.name = Some("good".into());
        bindings.handle(watcher::Event::Apply(broken), &store, &metrics);
        assert_eq!(store.load().counts().bindings, 0);
        assert!(!allowed(&store, "GET"));
    }

    #[test]
    fn namespaces_and_role_bindings_are_keyed_by_namespace() {
        let store = PolicyStore::default();
        let metrics = Metrics::unregistered();
        let mut ns = KindWatch::new(kind("Namespace"));
        ns.handle(
            watcher::Event::Apply(obj(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "n1", "labels": {"kubesphere.io/workspace": "w"}}}))),
            &store,
            &metrics,
        );
        assert_eq!(store.load().namespace_workspace("n1"), Some("w"));
        ns.handle(
            watcher::Event::Delete(obj(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n1"}}),
            )),
            &store,
            &metrics,
        );
        assert_eq!(store.load().counts().namespaces, 0);

        let mut rbs = KindWatch::new(kind("RoleBinding"));
        let rb = |ns: &str| {
            obj(
                json!({"apiVersion": "iam.kubesphere.io/v1beta1", "kind": "RoleBinding",
                "metadata": {"name": "b", "namespace": ns},
                "roleRef": {"apiGroup": "iam.kubesphere.io", "kind": "Role", "name": "admin"}, "subjects": []}),
            )
        };
        rbs.handle(watcher::Event::Apply(rb("a")), &store, &metrics);
        rbs.handle(watcher::Event::Apply(rb("b")), &store, &metrics);
        rbs.handle(watcher::Event::Delete(rb("a")), &store, &metrics);
        assert_eq!(store.load().counts().bindings, 1);
        assert_eq!(metrics.objects("RoleBinding"), 1);
    }
}
