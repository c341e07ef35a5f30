//! The informer caches the gateway reads: kube-runtime reflector stores, and [`KubeDirectory`] over them.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use ksiam_api::{
    Cluster, RoleBinding, ServiceAccount, User, Workspace, WorkspaceRoleBinding, WorkspaceTemplate,
};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// One watched kind: its store and whether the first list has arrived.
#[derive(Clone)]
pub struct Cache<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    synced: Arc<AtomicBool>,
}

impl<K> std::fmt::Debug for Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("kind", &K::kind(&()))
            .field("len", &self.store.len())
            .field("synced", &self.synced())
            .finish()
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    /// Starts a reflector for every `K` in the cluster; it stops when `shutdown` is cancelled.
    fn watch(client: &kube::Client, shutdown: &CancellationToken) -> Self {
        let writer = Writer::default();
        let store = writer.as_reader();
        let synced = Arc::new(AtomicBool::new(false));
        let api: Api<K> = Api::all(client.clone());
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        let shutdown = shutdown.clone();
        {
            let (store, synced) = (store.clone(), synced.clone());
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    ready = store.wait_until_ready() => if ready.is_ok() {
                        synced.store(true, Ordering::Release);
                    },
                }
            });
        }
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = stream.next() => match next {
                        Some(Ok(_)) => {}
                        Some(Err(error)) => tracing::warn!(kind = %K::kind(&()), %error, "watch error"),
                        None => return,
                    },
                }
            }
        });
        Self { store, synced }
    }

    /// A synced cache holding `objects` (tests and tools).
    pub fn from_objects(objects: impl IntoIterator<Item = K>) -> Self {
        let mut writer = Writer::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(o));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let store = writer.as_reader();
        // The store keeps its data when the writer goes away.
        drop(writer);
        Self {
            store,
            synced: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Cache<K> {
    /// Whether the first list has arrived.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Every object.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// The cluster-scoped object `name`.
    pub fn get(&self, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name))
    }

    /// The namespaced object `namespace/name`.
    pub fn get_namespaced(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }
}

/// Every cache the gateway and [`KubeDirectory`] read.
#[derive(Clone, Debug)]
pub struct Caches {
    /// `cluster.kubesphere.io` Clusters.
    pub clusters: Cache<Cluster>,
    /// `tenant.kubesphere.io` Workspaces.
    pub workspaces: Cache<Workspace>,
    /// `tenant.kubesphere.io` WorkspaceTemplates.
    pub workspace_templates: Cache<WorkspaceTemplate>,
    /// Namespaces.
    pub namespaces: Cache<Namespace>,
    /// `iam.kubesphere.io` WorkspaceRoleBindings.
    pub workspace_role_bindings: Cache<WorkspaceRoleBinding>,
    /// `iam.kubesphere.io` RoleBindings.
    pub role_bindings: Cache<RoleBinding>,
    /// `iam.kubesphere.io` Users.
    pub users: Cache<User>,
    /// `kubesphere.io` ServiceAccounts.
    pub service_accounts: Cache<ServiceAccount>,
}

/// The objects of a [`Caches::from_objects`] (tests and tools).
#[derive(Clone, Debug, Default)]
#[allow(missing_docs)]
pub struct Objects {
    pub clusters: Vec<Cluster>,
    pub workspaces: Vec<Workspace>,
    pub workspace_templates: Vec<WorkspaceTemplate>,
    pub namespaces: Vec<Namespace>,
    pub workspace_role_bindings: Vec<WorkspaceRoleBinding>,
    pub role_bindings: Vec<RoleBinding>,
    pub users: Vec<User>,
    pub service_accounts: Vec<ServiceAccount>,
}

impl Caches {
    /// Starts a watch per kind (reflectors run until `shutdown`). Must run inside a tokio runtime.
    pub fn start(client: &kube::Client, shutdown: &CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            clusters: Cache::watch(client, shutdown),
            workspaces: Cache::watch(client, shutdown),
            workspace_templates: Cache::watch(client, shutdown),
            namespaces: Cache::watch(client, shutdown),
            workspace_role_bindings: Cache::watch(client, shutdown),
            role_bindings: Cache::watch(client, shutdown),
            users: Cache::watch(client, shutdown),
            service_accounts: Cache::watch(client, shutdown),
        })
    }

    /// Synced caches holding fixed objects.
    pub fn from_objects(o: Objects) -> Arc<Self> {
        Arc::new(Self {
            clusters: Cache::from_objects(o.clusters),
            workspaces: Cache::from_objects(o.workspaces),
            workspace_templates: Cache::from_objects(o.workspace_templates),
            namespaces: Cache::from_objects(o.namespaces),
            workspace_role_bindings: Cache::from_objects(o.workspace_role_bindings),
            role_bindings: Cache::from_objects(o.role_bindings),
            users: Cache::from_objects(o.users),
            service_accounts: Cache::from_objects(o.service_accounts),
        })
    }

    /// Whether every cache has synced.
    pub fn synced(&self) -> bool {
        self.clusters.synced()
            && self.workspaces.synced()
            && self.workspace_templates.synced()
            && self.namespaces.synced()
            && self.workspace_role_bindings.synced()
            && self.role_bindings.synced()
            && self.users.synced()
            && self.service_accounts.synced()
    }
}

/// [`ksiam_token::Directory`] over the informer caches: the host-cluster existence checks of spec §6.2.
#[derive(Clone, Debug)]
pub struct KubeDirectory {
    caches: Arc<Caches>,
}

impl KubeDirectory {
    /// A directory over `caches`.
    pub fn new(caches: Arc<Caches>) -> Self {
        Self { caches }
    }

    /// Starts the caches (until `shutdown`) and returns a directory over them, and the caches for
    /// [`crate::Gateway`].
    pub fn start(client: &kube::Client, shutdown: &CancellationToken) -> (Arc<Self>, Arc<Caches>) {
        let caches = Caches::start(client, shutdown);
        (Arc::new(Self::new(caches.clone())), caches)
    }
}

impl ksiam_token::Directory for KubeDirectory {
    fn service_account_exists(&self, namespace: &str, name: &str) -> bool {
        self.caches
            .service_accounts
            .get_namespaced(namespace, name)
            .is_some()
    }

    fn check_user(&self, name: &str) -> Result<(), String> {
        match self.caches.users.get(name) {
            None => Err(format!("User.iam.kubesphere.io {} not found", go_quote(name))),
            Some(user)
                if user
                    .status
                    .as_ref()
                    .and_then(|s| s.state.as_deref())
                    .is_some_and(|s| s == "Disabled") =>
            {
                // ks-apiserver's `AccountIsNotActiveError`, word for word.
                Err("account is not active".to_owned())
            }
            Some(_) => Ok(()),
        }
    }
}

fn go_quote(s: &str) -> String {
    ksiam_rbac::status::go_quote(s)
}
