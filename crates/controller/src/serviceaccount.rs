//! `ServiceAccount.kubesphere.io` → token Secret (spec §3), with the upstream bugs fixed:
//!
//! - creation is idempotent: Secrets we create carry the ServiceAccount's UID in a label, so a retry after a
//!   failed update adopts the Secret it already created, and strays from races are deleted;
//! - a deleted token Secret is recreated with a new token (the old one dies with its Secret);
//! - workloads are restarted only when their pods mount a Secret that is no longer `secrets[0]`.
//!
//! The decisions are in [`crate::plan`] (no I/O, unit-tested); this module reads, calls them and writes.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        core::v1::{ObjectReference, Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use ksiam_api::{constants as c, serviceaccount::ServiceAccount};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        Controller,
        controller::{Action, Config},
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{info, warn};

pub use crate::plan::{
    Choice, OWNER_UID_LABEL, choose_token_secret, is_owned_token_secret, set_first_secret, strays, token_ttl,
};
use crate::{
    Error, TokenIssuer,
    plan::{self, Rotation, is_token_secret_of},
};
/// The controller name used for events (KubeSphere's).
pub const CONTROLLER_NAME: &str = "ks-serviceaccount";
const FIELD_MANAGER: &str = "ksiam-controller";

/// Merge patches name the controller as their field manager too.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// What the reconciler needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Issues tokens.
    pub issuer: Arc<dyn TokenIssuer>,
    /// Publishes events.
    pub recorder: Recorder,
    /// Reports when the watches have synced.
    pub readiness: crate::Readiness,
}

impl Context {
    /// A context publishing events as `ks-serviceaccount`.
    pub fn new(client: Client, issuer: Arc<dyn TokenIssuer>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: None,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            issuer,
            readiness: crate::Readiness::default(),
        }
    }

    /// Reports watch sync to `readiness`.
    pub fn with_readiness(mut self, readiness: crate::Readiness) -> Self {
        self.readiness = readiness;
        self
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let sas: Api<ServiceAccount> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::all(client);
    let token_secrets =
        watcher::Config::default().fields(&format!("type={}", c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE));
    let ready = ctx.readiness.register("serviceaccount-controller");
    // Only the leader Lease holder gets here (the two-replica e2e test reads this line).
    info!("ServiceAccount controller running");
    let controller = Controller::new(sas, watcher::Config::default());
    tokio::spawn(ready.when_synced(controller.store()));
    controller
        .watches(secrets, token_secrets, |secret: Secret| {
            let name = secret
                .annotations()
                .get(c::SERVICE_ACCOUNT_NAME_ANNOTATION)?
                .clone();
            Some(ObjectRef::<ServiceAccount>::new(&name).within(&secret.namespace()?))
        })
        // Reconciles of different ServiceAccounts are independent (kube-runtime never runs one object twice at once);
        // most of their time is spent waiting on the API server.
        .with_config(Config::default().concurrency(16))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "serviceaccount reconcile failed");
            }
        })
        .await;
}

fn error_policy(_sa: Arc<ServiceAccount>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(%error, "requeueing ServiceAccount");
    Action::requeue(Duration::from_secs(2))
}

/// Reconciles one ServiceAccount.
pub async fn reconcile(sa: Arc<ServiceAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = sa.namespace().ok_or(Error::MissingNamespace)?;
    let name = sa.name_any();
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let has_finalizer = sa.finalizers().iter().any(|f| f == c::SERVICE_ACCOUNT_FINALIZER);

    if sa.meta().deletion_timestamp.is_some() {
        if has_finalizer {
            let ours = match sa.uid() {
                Some(uid) => secrets_of_uid(&secrets, &uid).await?,
                None => Vec::new(),
            };
            for n in plan::cleanup_candidates(&sa, &ours) {
                if let Some(s) = secrets.get_opt(&n).await?
                    && is_token_secret_of(&s, &name)
                {
                    delete_ignoring_missing(&secrets, &n).await?;
                }
            }
            remove_finalizer(&sa, &sas).await?;
            info!(namespace = %ns, name = %name, "ServiceAccount token secrets deleted, finalizer removed");
        }
        return Ok(Action::await_change());
    }

    let uid = sa.uid().ok_or(Error::MissingUid)?;
    // Listed once: used to find `secrets[0]`, to adopt a Secret, to skip re-reading valid ones, to delete strays.
    let ours = secrets_of_uid(&secrets, &uid).await?;
    // Token Secrets we own for this ServiceAccount (and the one created below): neither `secrets[0]` nor the
    // check of `secrets` reads them again.
    let mut valid = plan::valid_owned(&ours, &name, &uid);
    let first_name = sa.spec.secrets.first().and_then(|r| r.name.clone());
    let first = match &first_name {
        Some(n) if valid.contains(n) => ours.iter().find(|s| s.name_any() == *n).cloned(),
        Some(n) => secrets.get_opt(n).await?,
        None => None,
    };
    let mut created = false;
    let token_secret = match plan::choose_token_secret(&name, &uid, first.as_ref(), &ours) {
        Choice::Keep(n) | Choice::Adopt(n) => n,
        Choice::Create => {
            created = true;
            let n = create_token_secret(&ctx, &secrets, &ns, &name, &uid, token_ttl(&sa)).await?;
            valid.push(n.clone());
            n
        }
    };

    let writes = plan::writes(&sa, &uid, first.as_ref(), &ours, &token_secret);
    let mut desired = (*sa).clone();
    if let Some(list) = &writes.apply {
        desired.spec.secrets = list.clone();
        if !has_finalizer {
            desired
                .finalizers_mut()
                .push(c::SERVICE_ACCOUNT_FINALIZER.to_owned());
        }
        // Server-side apply of the two fields we own. The resourceVersion we read is a precondition: a change
        // since then is a conflict that requeues, and the retry adopts the Secret created above instead of
        // creating another. `secrets` is an atomic list; forcing takes it over from whoever wrote it last,
        // with its first entry kept when that Secret exists (see `plan::set_first_secret`).
        let apply = serde_json::json!({
            "apiVersion": ServiceAccount::api_version(&()),
            "kind": ServiceAccount::kind(&()),
            "metadata": {
                "name": name,
                "namespace": ns,
                "resourceVersion": sa.resource_version(),
                "finalizers": [c::SERVICE_ACCOUNT_FINALIZER],
            },
            "secrets": list,
        });
        sas.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&apply),
        )
        .await?;
        if created {
            publish(
                &ctx,
                &sa,
                EventType::Normal,
                c::EVENT_REASON_SYNCED,
                c::EVENT_MESSAGE_TOKEN_SECRET_CREATED,
                secret_ref(&ns, &token_secret),
            )
            .await;
        }
    }

    // Strays we created (races between replicas, or an old recreated secret) are deleted; nothing else is.
    for stray in &writes.strays {
        delete_ignoring_missing(&secrets, stray).await?;
    }

    check_secrets(&ctx, &desired, &secrets, &valid).await?;
    restart_stale_workloads(&ctx, &ns, &name, &token_secret).await;
    rotate_if_due(&ctx, &sa, &uid, &secrets, &token_secret).await
}

/// When the ServiceAccount's tokens expire, rewrites `data.token` of its token Secret once 80% of the
/// token's lifetime has passed (see [`plan::rotation`]), and requeues for the next rotation.
async fn rotate_if_due(
    ctx: &Context,
    sa: &ServiceAccount,
    uid: &str,
    secrets: &Api<Secret>,
    secret: &str,
) -> Result<Action, Error> {
    let Some(ttl) = token_ttl(sa) else {
        return Ok(Action::await_change());
    };
    let current = secrets.get_opt(secret).await?;
    let now = ksiam_token::now_unix();
    match plan::rotation(ttl, current.as_ref(), &sa.name_any(), uid, now) {
        Rotation::Missing => Ok(Action::requeue(Duration::from_secs(1))),
        Rotation::NotOurs => Ok(Action::await_change()),
        Rotation::At(due) => Ok(Action::requeue(Duration::from_secs((due - now) as u64))),
        Rotation::Now { ttl } => {
            let ns = sa.namespace().ok_or(Error::MissingNamespace)?;
            let fresh = ctx.issuer.issue(&ns, &sa.name_any(), Some(ttl)).await?;
            let data = BTreeMap::from([(
                c::SERVICE_ACCOUNT_TOKEN_KEY.to_owned(),
                ByteString(fresh.into_bytes()),
            )]);
            // The resourceVersion read makes the write fail if the Secret changed since it was checked.
            let rv = current.as_ref().and_then(|s| s.resource_version());
            let patch = serde_json::json!({ "metadata": { "resourceVersion": rv }, "data": data });
            secrets
                .patch(secret, &patch_params(), &Patch::Merge(&patch))
                .await?;
            info!(namespace = %ns, secret = %secret, "rotated expiring token");
            Ok(Action::requeue(Duration::from_secs((ttl * 4 / 5).max(1) as u64)))
        }
    }
}

async fn secrets_of_uid(secrets: &Api<Secret>, uid: &str) -> Result<Vec<Secret>, Error> {
    Ok(secrets
        .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await?
        .items)
}

async fn create_token_secret(
    ctx: &Context,
    secrets: &Api<Secret>,
    ns: &str,
    sa: &str,
    uid: &str,
    ttl: Option<i64>,
) -> Result<String, Error> {
    let token = ctx.issuer.issue(ns, sa, ttl).await?;
    let secret = Secret {
        metadata: ObjectMeta {
            generate_name: Some(format!("{sa}-")),
            namespace: Some(ns.to_owned()),
            annotations: Some(BTreeMap::from([(
                c::SERVICE_ACCOUNT_NAME_ANNOTATION.to_owned(),
                sa.to_owned(),
            )])),
            labels: Some(BTreeMap::from([(OWNER_UID_LABEL.to_owned(), uid.to_owned())])),
            ..Default::default()
        },
        type_: Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([(
            c::SERVICE_ACCOUNT_TOKEN_KEY.to_owned(),
            ByteString(token.into_bytes()),
        )])),
        ..Default::default()
    };
    let created = secrets
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &secret,
        )
        .await?;
    info!(namespace = %ns, serviceaccount = %sa, secret = %created.name_any(), "created token secret");
    Ok(created.name_any())
}

async fn delete_ignoring_missing(secrets: &Api<Secret>, name: &str) -> Result<(), Error> {
    match secrets.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn remove_finalizer(sa: &ServiceAccount, sas: &Api<ServiceAccount>) -> Result<(), Error> {
    let finalizers: Vec<&String> = sa
        .finalizers()
        .iter()
        .filter(|f| *f != c::SERVICE_ACCOUNT_FINALIZER)
        .collect();
    // The resourceVersion makes this fail with a conflict (and requeue) if the object changed since we read it.
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": sa.resource_version() },
    });
    match sas
        .patch(&sa.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Warns about `secrets` entries that are missing, of the wrong type or of another ServiceAccount; `valid`
/// names token Secrets of this ServiceAccount already known to exist.
async fn check_secrets(
    ctx: &Context,
    sa: &ServiceAccount,
    secrets: &Api<Secret>,
    valid: &[String],
) -> Result<(), Error> {
    for r in &sa.spec.secrets {
        let Some(n) = &r.name else { continue };
        if valid.contains(n) {
            continue;
        }
        let note = match secrets.get_opt(n).await? {
            // Kubernetes' NotFound text, which upstream passes on.
            None => format!("secrets \"{n}\" not found"),
            Some(s) if s.type_.as_deref() != Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE) => {
                format!("unsupported secret {n} type: {}", s.type_.unwrap_or_default())
            }
            Some(s) if !is_token_secret_of(&s, &sa.name_any()) => format!(
                "incorrect subject name {}",
                s.annotations()
                    .get(c::SERVICE_ACCOUNT_NAME_ANNOTATION)
                    .cloned()
                    .unwrap_or_default()
            ),
            Some(_) => continue,
        };
        let ns = sa.namespace().unwrap_or_default();
        publish(
            ctx,
            sa,
            EventType::Warning,
            c::EVENT_REASON_INVALID_SECRET,
            &note,
            secret_ref(&ns, n),
        )
        .await;
    }
    Ok(())
}

/// The Secret an event is about, besides the ServiceAccount. Events are grouped into series by regarding,
/// related, reason and type (not by note), so without it the second invalid entry would only bump the count
/// of the first one's event.
fn secret_ref(ns: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

async fn publish(
    ctx: &Context,
    sa: &ServiceAccount,
    type_: EventType,
    reason: &str,
    note: &str,
    related: ObjectReference,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: Some(related),
    };
    if let Err(e) = ctx.recorder.publish(&event, &sa.object_ref(&())).await {
        warn!(error = %e, "cannot publish event");
    }
}

/// Restarts the workloads of pods that use this ServiceAccount but mount a Secret other than `token_secret`
/// ([`plan::stale_owners`]; upstream restarts every workload on every reconcile). Errors are logged.
async fn restart_stale_workloads(ctx: &Context, ns: &str, sa: &str, token_secret: &str) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = match pods.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            warn!(error = %e, "cannot list pods");
            return;
        }
    };
    for stale in plan::stale_owners(&list, sa, token_secret) {
        if let Err(e) = restart_owner(ctx, ns, &stale).await {
            warn!(error = %e, kind = %stale.owner.kind, name = %stale.owner.name, "cannot restart workload");
        }
    }
}

/// Restarts the workload behind `stale` (a ReplicaSet's Deployment, a StatefulSet, a DaemonSet) by writing
/// `restartedAt` into its Pod template, unless a restart newer than its stale Pods is already under way
/// ([`plan::restart_pending`]: the old Pods are still terminating).
async fn restart_owner(ctx: &Context, ns: &str, stale: &plan::StaleOwner) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (kind, name) = (stale.owner.kind.as_str(), stale.owner.name.as_str());
    let restarted_at = |template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>| {
        template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(c::RESTARTED_AT_ANNOTATION))
            .cloned()
    };
    let (kind, name, current) = match kind {
        "ReplicaSet" => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get(name)
                .await?;
            let Some(o) = rs.owner_references().first().filter(|o| o.kind == "Deployment") else {
                return Ok(());
            };
            let d = Api::<Deployment>::namespaced(client.clone(), ns)
                .get(&o.name)
                .await?;
            (
                "Deployment",
                o.name.clone(),
                restarted_at(d.spec.as_ref().map(|s| &s.template)),
            )
        }
        "StatefulSet" => {
            let s = Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get(name)
                .await?;
            (
                "StatefulSet",
                name.to_owned(),
                restarted_at(s.spec.as_ref().map(|s| &s.template)),
            )
        }
        "DaemonSet" => {
            let d = Api::<DaemonSet>::namespaced(client.clone(), ns).get(name).await?;
            (
                "DaemonSet",
                name.to_owned(),
                restarted_at(d.spec.as_ref().map(|s| &s.template)),
            )
        }
        other => {
            warn!(kind = %other, "cannot restart a workload of this kind");
            return Ok(());
        }
    };
    if plan::restart_pending(current.as_deref(), stale.newest_pod.as_ref()) {
        return Ok(());
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {c::RESTARTED_AT_ANNOTATION: now}}}}});
    let params = patch_params();
    match kind {
        "Deployment" => drop(
            Api::<Deployment>::namespaced(client, ns)
                .patch(&name, &params, &Patch::Merge(&patch))
                .await?,
        ),
        "StatefulSet" => drop(
            Api::<StatefulSet>::namespaced(client, ns)
                .patch(&name, &params, &Patch::Merge(&patch))
                .await?,
        ),
        _ => drop(
            Api::<DaemonSet>::namespaced(client, ns)
                .patch(&name, &params, &Patch::Merge(&patch))
                .await?,
        ),
    }
    info!(namespace = %ns, kind = %kind, name = %name, "restarted: pods mount a stale token secret");
    Ok(())
}
