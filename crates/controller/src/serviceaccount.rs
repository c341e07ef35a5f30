//! `ServiceAccount.kubesphere.io` → token Secret (spec §3), with the upstream bugs fixed:
//!
//! - creation is idempotent: Secrets we create carry the ServiceAccount's UID in a label, so a retry after a
//!   failed update adopts the Secret it already created, and strays from races are deleted;
//! - a deleted token Secret is recreated with a new token (the old one dies with its Secret);
//! - workloads are restarted only when their pods mount a Secret that is no longer `secrets[0]`.

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

use crate::{Error, TokenIssuer};

/// Label on the Secrets we create: the UID of the ServiceAccount they belong to.
pub const OWNER_UID_LABEL: &str = "ksiam.kubesphere.io/service-account-uid";
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

/// Whether `secret` is a token Secret of the ServiceAccount `sa_name`.
fn is_token_secret_of(secret: &Secret, sa_name: &str) -> bool {
    secret.type_.as_deref() == Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE)
        && secret
            .annotations()
            .get(c::SERVICE_ACCOUNT_NAME_ANNOTATION)
            .map(String::as_str)
            == Some(sa_name)
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
            delete_token_secrets(&sa, &secrets).await?;
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
    let mut valid: Vec<String> = ours
        .iter()
        .filter(|s| is_owned_token_secret(s, &name, &uid) && s.meta().deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect();
    let first_name = sa.spec.secrets.first().and_then(|r| r.name.clone());
    let first = match &first_name {
        Some(n) if valid.contains(n) => ours.iter().find(|s| s.name_any() == *n).cloned(),
        Some(n) => secrets.get_opt(n).await?,
        None => None,
    };
    let choice = choose_token_secret(&name, &uid, first.as_ref(), &ours);
    let mut created = false;
    let token_secret = match &choice {
        Choice::Keep(n) | Choice::Adopt(n) => n.clone(),
        Choice::Create => {
            created = true;
            let n = create_token_secret(&ctx, &secrets, &ns, &name, &uid, token_ttl(&sa)).await?;
            valid.push(n.clone());
            n
        }
    };

    let mut desired = (*sa).clone();
    if !has_finalizer {
        desired
            .finalizers_mut()
            .push(c::SERVICE_ACCOUNT_FINALIZER.to_owned());
    }
    let reference = ObjectReference {
        name: Some(token_secret.clone()),
        namespace: Some(ns.clone()),
        ..Default::default()
    };
    set_first_secret(&mut desired.spec.secrets, reference, first.as_ref());
    if desired.finalizers() != sa.finalizers() || desired.spec.secrets != sa.spec.secrets {
        // Server-side apply of the two fields we own. The resourceVersion we read is a precondition: a change
        // since then is a conflict that requeues, and the retry adopts the Secret created above instead of
        // creating another. `secrets` is an atomic list; forcing takes it over from whoever wrote it last,
        // with its first entry kept when that Secret exists (see above).
        let apply = serde_json::json!({
            "apiVersion": ServiceAccount::api_version(&()),
            "kind": ServiceAccount::kind(&()),
            "metadata": {
                "name": name,
                "namespace": ns,
                "resourceVersion": sa.resource_version(),
                "finalizers": [c::SERVICE_ACCOUNT_FINALIZER],
            },
            "secrets": desired.spec.secrets,
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
    for stray in strays(&ours, &name, &uid, &token_secret) {
        delete_ignoring_missing(&secrets, &stray).await?;
    }

    check_secrets(&ctx, &desired, &secrets, &valid).await?;
    restart_stale_workloads(&ctx, &ns, &name, &token_secret).await;
    rotate_if_due(&ctx, &sa, &uid, &secrets, &token_secret).await
}

/// Whether `secret` is a token Secret this controller created for the ServiceAccount `sa_name` with UID
/// `uid` (the only Secrets it ever writes into or deletes while the ServiceAccount lives).
pub fn is_owned_token_secret(secret: &Secret, sa_name: &str, uid: &str) -> bool {
    is_token_secret_of(secret, sa_name)
        && secret.labels().get(OWNER_UID_LABEL).map(String::as_str) == Some(uid)
}

/// Which Secret serves as the ServiceAccount's token Secret (`secrets[0]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// `secrets[0]` as it is: a token Secret of this ServiceAccount (ours, or made by hand or by KubeSphere).
    Keep(String),
    /// A token Secret we created before (a retry after a failed update, or a restart between create and update).
    Adopt(String),
    /// A new one.
    Create,
}

/// Chooses the token Secret: `secrets[0]` (`first`, as read) while it is a token Secret annotated for this
/// ServiceAccount and not being deleted; otherwise the oldest token Secret we own (`ours`, the Secrets with
/// our UID label), otherwise a new one. A `secrets[0]` naming anything else (another ServiceAccount's token
/// Secret, another type) is never used: the ServiceAccount gets its own.
pub fn choose_token_secret(sa_name: &str, uid: &str, first: Option<&Secret>, ours: &[Secret]) -> Choice {
    if let Some(s) = first
        && is_token_secret_of(s, sa_name)
        && s.meta().deletion_timestamp.is_none()
    {
        return Choice::Keep(s.name_any());
    }
    ours.iter()
        .filter(|s| is_owned_token_secret(s, sa_name, uid) && s.meta().deletion_timestamp.is_none())
        .min_by_key(|s| (s.creation_timestamp(), s.name_any()))
        .map_or(Choice::Create, |s| Choice::Adopt(s.name_any()))
}

/// Puts `reference` first in `secrets`. A first entry naming a Secret that exists (`first`) but is not this
/// ServiceAccount's stays in the list, after it, untouched (the check of `secrets` reports it); one naming a
/// missing Secret or a token Secret being deleted is replaced.
pub fn set_first_secret(
    secrets: &mut Vec<ObjectReference>,
    reference: ObjectReference,
    first: Option<&Secret>,
) {
    match secrets.first_mut() {
        Some(r) if r.name == reference.name => {}
        Some(_) if first.is_some_and(|s| s.meta().deletion_timestamp.is_none()) => {
            secrets.insert(0, reference);
        }
        Some(r) => *r = reference,
        None => secrets.push(reference),
    }
}

/// The Secrets among `ours` (listed by our UID label) to delete: token Secrets we own for this ServiceAccount,
/// other than `token_secret`. A Secret of another type or for another ServiceAccount that carries the label
/// is left alone.
pub fn strays(ours: &[Secret], sa_name: &str, uid: &str, token_secret: &str) -> Vec<String> {
    ours.iter()
        .filter(|s| {
            is_owned_token_secret(s, sa_name, uid)
                && s.name_any() != token_secret
                && s.meta().deletion_timestamp.is_none()
        })
        .map(ResourceExt::name_any)
        .collect()
}

/// The token lifetime the ServiceAccount asks for (see [`crate::TOKEN_TTL_ANNOTATION`]); invalid values are
/// ignored with a warning.
pub fn token_ttl(sa: &ServiceAccount) -> Option<i64> {
    let raw = sa.annotations().get(crate::TOKEN_TTL_ANNOTATION)?;
    match raw.trim().parse::<i64>() {
        Ok(t) if t >= crate::MIN_TOKEN_TTL_SECONDS => Some(t),
        _ => {
            warn!(serviceaccount = %sa.name_any(), value = %raw, "ignoring invalid {}", crate::TOKEN_TTL_ANNOTATION);
            None
        }
    }
}

/// When the ServiceAccount's tokens expire, rewrites `data.token` of its token Secret once 80% of the
/// token's lifetime has passed, and requeues for the next rotation.
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
    let Some(current) = secrets.get_opt(secret).await? else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    // Only a token Secret we created for this ServiceAccount is ever written (checked on the Secret as read
    // now; the resourceVersion below makes the write fail if it changed since).
    if !is_owned_token_secret(&current, &sa.name_any(), uid) {
        return Ok(Action::await_change());
    }
    let token = current
        .data
        .as_ref()
        .and_then(|d| d.get(c::SERVICE_ACCOUNT_TOKEN_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    let claims = token
        .as_deref()
        .and_then(|t| ksiam_token::decode_unverified(t).ok())
        .and_then(|(_, c)| serde_json::from_str::<ksiam_token::Claims>(&c).ok());
    let now = ksiam_token::now_unix();
    // Rotate at 80% of the lifetime; a token without exp (issued before the annotation) rotates now.
    let due = claims
        .as_ref()
        .and_then(|c| Some(c.iat? + (c.exp? - c.iat?) * 4 / 5))
        .unwrap_or(now);
    if due > now {
        return Ok(Action::requeue(Duration::from_secs((due - now) as u64)));
    }
    let ns = sa.namespace().ok_or(Error::MissingNamespace)?;
    let fresh = ctx.issuer.issue(&ns, &sa.name_any(), Some(ttl))?;
    let data = BTreeMap::from([(
        c::SERVICE_ACCOUNT_TOKEN_KEY.to_owned(),
        ByteString(fresh.into_bytes()),
    )]);
    let patch =
        serde_json::json!({ "metadata": { "resourceVersion": current.resource_version() }, "data": data });
    secrets
        .patch(secret, &patch_params(), &Patch::Merge(&patch))
        .await?;
    info!(namespace = %ns, secret = %secret, "rotated expiring token");
    Ok(Action::requeue(Duration::from_secs((ttl * 4 / 5).max(1) as u64)))
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
    let token = ctx.issuer.issue(ns, sa, ttl)?;
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

async fn delete_token_secrets(sa: &ServiceAccount, secrets: &Api<Secret>) -> Result<(), Error> {
    let name = sa.name_any();
    let mut names: Vec<String> = sa.spec.secrets.iter().filter_map(|r| r.name.clone()).collect();
    if let Some(uid) = sa.uid() {
        names.extend(
            secrets_of_uid(secrets, &uid)
                .await?
                .iter()
                .map(ResourceExt::name_any),
        );
    }
    names.sort();
    names.dedup();
    for n in names {
        if let Some(s) = secrets.get_opt(&n).await?
            && is_token_secret_of(&s, &name)
        {
            delete_ignoring_missing(secrets, &n).await?;
        }
    }
    Ok(())
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

/// The Secret a pod's injected volume projects, if any.
fn mounted_secret(pod: &Pod) -> Option<&str> {
    let volume = pod
        .spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == c::SERVICE_ACCOUNT_VOLUME_NAME)?;
    volume
        .projected
        .as_ref()?
        .sources
        .as_ref()?
        .iter()
        .find_map(|s| s.secret.as_ref().map(|s| s.name.as_str()))
}

/// Restarts the workloads of pods that use this ServiceAccount but mount a Secret other than `token_secret`
/// (the intended behaviour; upstream restarts every workload on every reconcile). Errors are logged.
async fn restart_stale_workloads(ctx: &Context, ns: &str, sa: &str, token_secret: &str) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = match pods.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            warn!(error = %e, "cannot list pods");
            return;
        }
    };
    let mut restarted = std::collections::BTreeSet::new();
    for pod in list {
        if pod
            .annotations()
            .get(c::POD_SERVICE_ACCOUNT_ANNOTATION)
            .map(String::as_str)
            != Some(sa)
        {
            continue;
        }
        if mounted_secret(&pod).is_none_or(|m| m == token_secret) {
            continue;
        }
        let Some(owner) = pod.owner_references().first().cloned() else {
            continue;
        };
        if !restarted.insert((owner.kind.clone(), owner.name.clone())) {
            continue;
        }
        if let Err(e) = restart_owner(ctx, ns, &owner.kind, &owner.name).await {
            warn!(error = %e, pod = %pod.name_any(), "cannot restart workload");
        }
    }
}

async fn restart_owner(ctx: &Context, ns: &str, kind: &str, name: &str) -> Result<(), Error> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {c::RESTARTED_AT_ANNOTATION: now}}}}});
    let params = patch_params();
    let client = ctx.client.clone();
    match kind {
        "ReplicaSet" => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get(name)
                .await?;
            if let Some(o) = rs.owner_references().first().filter(|o| o.kind == "Deployment") {
                Api::<Deployment>::namespaced(client, ns)
                    .patch(&o.name, &params, &Patch::Merge(&patch))
                    .await?;
                info!(namespace = %ns, deployment = %o.name, "restarted: pods mount a stale token secret");
            }
        }
        "StatefulSet" => drop(
            Api::<StatefulSet>::namespaced(client, ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?,
        ),
        "DaemonSet" => drop(
            Api::<DaemonSet>::namespaced(client, ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?,
        ),
        other => warn!(kind = %other, "cannot restart a workload of this kind"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    const UID: &str = "uid-thief";

    /// A Secret `name` of `type_`, annotated for `sa` (if any), labelled with `uid` (if any).
    fn secret(name: &str, type_: &str, sa: Option<&str>, uid: Option<&str>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.annotations =
            sa.map(|n| BTreeMap::from([(c::SERVICE_ACCOUNT_NAME_ANNOTATION.to_owned(), n.to_owned())]));
        s.metadata.labels = uid.map(|u| BTreeMap::from([(OWNER_UID_LABEL.to_owned(), u.to_owned())]));
        s.type_ = Some(type_.into());
        s
    }

    fn token_secret(name: &str, sa: &str, uid: Option<&str>) -> Secret {
        secret(name, c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE, Some(sa), uid)
    }

    fn deleting(mut s: Secret) -> Secret {
        s.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        s
    }

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn names(refs: &[ObjectReference]) -> Vec<&str> {
        refs.iter().filter_map(|r| r.name.as_deref()).collect()
    }

    #[test]
    fn another_service_accounts_token_secret_is_never_chosen() {
        let victim = token_secret("victim-abcde", "victim", Some("uid-victim"));
        assert_eq!(
            choose_token_secret("thief", UID, Some(&victim), &[]),
            Choice::Create
        );
        // Even when it carries the thief's UID label (labels are easy to add).
        let labelled = token_secret("victim-abcde", "victim", Some(UID));
        assert_eq!(
            choose_token_secret("thief", UID, Some(&labelled), std::slice::from_ref(&labelled)),
            Choice::Create
        );
        let opaque = secret("opaque", "Opaque", Some("thief"), Some(UID));
        assert_eq!(
            choose_token_secret("thief", UID, Some(&opaque), std::slice::from_ref(&opaque)),
            Choice::Create,
            "another type"
        );
    }

    #[test]
    fn a_token_secret_of_this_service_account_is_kept_or_adopted() {
        let own = token_secret("thief-aaaaa", "thief", Some(UID));
        assert_eq!(
            choose_token_secret("thief", UID, Some(&own), std::slice::from_ref(&own)),
            Choice::Keep("thief-aaaaa".into())
        );
        // Made by hand (or by KubeSphere) for this ServiceAccount: kept as the user's choice, never written.
        let hand_made = token_secret("by-hand", "thief", None);
        assert_eq!(
            choose_token_secret("thief", UID, Some(&hand_made), &[]),
            Choice::Keep("by-hand".into())
        );
        assert!(!is_owned_token_secret(&hand_made, "thief", UID));
        assert!(is_owned_token_secret(&own, "thief", UID));
        assert!(!is_owned_token_secret(&own, "thief", "another-uid"));
        // secrets[0] missing or being deleted: the one we own is adopted.
        assert_eq!(
            choose_token_secret("thief", UID, None, std::slice::from_ref(&own)),
            Choice::Adopt("thief-aaaaa".into())
        );
        let going = deleting(token_secret("thief-bbbbb", "thief", Some(UID)));
        assert_eq!(
            choose_token_secret("thief", UID, Some(&going), &[going.clone(), own.clone()]),
            Choice::Adopt("thief-aaaaa".into())
        );
        assert_eq!(
            choose_token_secret("thief", UID, Some(&going), std::slice::from_ref(&going)),
            Choice::Create
        );
    }

    #[test]
    fn a_foreign_first_entry_stays_in_the_list_after_our_own() {
        let victim = token_secret("victim-abcde", "victim", Some("uid-victim"));
        let mut refs = vec![reference("victim-abcde"), reference("other")];
        set_first_secret(&mut refs, reference("thief-aaaaa"), Some(&victim));
        assert_eq!(names(&refs), ["thief-aaaaa", "victim-abcde", "other"]);
        // Stable: the next reconcile keeps secrets[0].
        set_first_secret(&mut refs, reference("thief-aaaaa"), None);
        assert_eq!(names(&refs), ["thief-aaaaa", "victim-abcde", "other"]);
        // A missing first entry is replaced; an empty list gets one.
        let mut refs = vec![reference("gone"), reference("other")];
        set_first_secret(&mut refs, reference("thief-bbbbb"), None);
        assert_eq!(names(&refs), ["thief-bbbbb", "other"]);
        let mut refs = Vec::new();
        set_first_secret(&mut refs, reference("thief-ccccc"), None);
        assert_eq!(names(&refs), ["thief-ccccc"]);
    }

    #[test]
    fn only_our_token_secrets_are_strays() {
        let ours = [
            token_secret("thief-aaaaa", "thief", Some(UID)),
            token_secret("thief-bbbbb", "thief", Some(UID)),
            // The UID label on other Secrets means nothing.
            secret("config", "Opaque", None, Some(UID)),
            secret("config-annotated", "Opaque", Some("thief"), Some(UID)),
            token_secret("victim-abcde", "victim", Some(UID)),
            deleting(token_secret("thief-ccccc", "thief", Some(UID))),
        ];
        assert_eq!(strays(&ours, "thief", UID, "thief-aaaaa"), ["thief-bbbbb"]);
    }
}
