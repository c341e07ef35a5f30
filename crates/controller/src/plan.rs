//! The ServiceAccount controller's decisions, without I/O: from what a reconcile read (the ServiceAccount,
//! the Secret its `secrets[0]` names, the Secrets carrying its UID label, its Pods, the token Secret's
//! current token and the clock) to what it writes. `serviceaccount::reconcile` does the reads and the
//! writes around these functions; everything here is unit-tested case by case.
//!
//! The order of a reconcile of a live ServiceAccount:
//! 1. [`choose_token_secret`]: keep `secrets[0]`, adopt a Secret we created before, or create one;
//! 2. [`writes`]: the server-side apply of the finalizer and `secrets` (if either changes) and the strays to
//!    delete, once the token Secret's name is known;
//! 3. [`stale_owners`]: the workloads to restart, whose Pods mount a Secret other than the token Secret;
//! 4. [`rotation`]: whether the token is rewritten now, later, or never.
//!
//! A ServiceAccount being deleted: [`cleanup_candidates`] are re-read and deleted when
//! [`is_token_secret_of`] it, then the finalizer is removed.

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use ksiam_api::{constants as c, serviceaccount::ServiceAccount};
use kube::{Resource, ResourceExt};
use tracing::warn;

/// Label on the Secrets we create: the UID of the ServiceAccount they belong to.
pub const OWNER_UID_LABEL: &str = "ksiam.kubesphere.io/service-account-uid";

/// Whether `secret` is a token Secret of the ServiceAccount `sa_name` (type and annotation; ours or not).
pub fn is_token_secret_of(secret: &Secret, sa_name: &str) -> bool {
    secret.type_.as_deref() == Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE)
        && secret
            .annotations()
            .get(c::SERVICE_ACCOUNT_NAME_ANNOTATION)
            .map(String::as_str)
            == Some(sa_name)
}

/// Whether `secret` is a token Secret this controller created for the ServiceAccount `sa_name` with UID
/// `uid` (the only Secrets it ever writes into or deletes while the ServiceAccount lives).
pub fn is_owned_token_secret(secret: &Secret, sa_name: &str, uid: &str) -> bool {
    is_token_secret_of(secret, sa_name)
        && secret.labels().get(OWNER_UID_LABEL).map(String::as_str) == Some(uid)
}

fn is_live_owned(secret: &Secret, sa_name: &str, uid: &str) -> bool {
    is_owned_token_secret(secret, sa_name, uid) && secret.meta().deletion_timestamp.is_none()
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
        .filter(|s| is_live_owned(s, sa_name, uid))
        .min_by_key(|s| (s.creation_timestamp(), s.name_any()))
        .map_or(Choice::Create, |s| Choice::Adopt(s.name_any()))
}

/// The token Secrets among `ours` that exist and are this ServiceAccount's (the check of `secrets` need not
/// read them again).
pub fn valid_owned(ours: &[Secret], sa_name: &str, uid: &str) -> Vec<String> {
    ours.iter()
        .filter(|s| is_live_owned(s, sa_name, uid))
        .map(ResourceExt::name_any)
        .collect()
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
        .filter(|s| is_live_owned(s, sa_name, uid) && s.name_any() != token_secret)
        .map(ResourceExt::name_any)
        .collect()
}

/// What a reconcile writes once the token Secret (`token_secret`: kept, adopted or just created) is known.
#[derive(Clone, Debug, PartialEq)]
pub struct Writes {
    /// The ServiceAccount's `secrets` after the write, with our finalizer; `None` when neither the finalizer
    /// nor `secrets` changes (nothing is applied).
    pub apply: Option<Vec<ObjectReference>>,
    /// Our own token Secrets to delete.
    pub strays: Vec<String>,
}

/// The writes of a reconcile of the live ServiceAccount `sa` (as read, with its UID `uid`), given `first` and
/// `ours` as read and the token Secret chosen (or created).
pub fn writes(
    sa: &ServiceAccount,
    uid: &str,
    first: Option<&Secret>,
    ours: &[Secret],
    token_secret: &str,
) -> Writes {
    let name = sa.name_any();
    let has_finalizer = sa.finalizers().iter().any(|f| f == c::SERVICE_ACCOUNT_FINALIZER);
    let mut secrets = sa.spec.secrets.clone();
    let reference = ObjectReference {
        name: Some(token_secret.to_owned()),
        namespace: sa.namespace(),
        ..Default::default()
    };
    set_first_secret(&mut secrets, reference, first);
    let apply = (!has_finalizer || secrets != sa.spec.secrets).then_some(secrets);
    Writes {
        apply,
        strays: strays(ours, &name, uid, token_secret),
    }
}

/// The Secrets a ServiceAccount being deleted may own: those `secrets` names and those with its UID label
/// (`ours`). Each is read again and deleted only if it [`is_token_secret_of`] the ServiceAccount.
pub fn cleanup_candidates(sa: &ServiceAccount, ours: &[Secret]) -> Vec<String> {
    let mut names: Vec<String> = sa.spec.secrets.iter().filter_map(|r| r.name.clone()).collect();
    names.extend(ours.iter().map(ResourceExt::name_any));
    names.sort();
    names.dedup();
    names
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

/// What happens to the token of an expiring ServiceAccount's token Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token Secret is gone (a watch event brings the ServiceAccount back): look again soon.
    Missing,
    /// Not a token Secret we created for this ServiceAccount: never written.
    NotOurs,
    /// Rewrite `data.token` now with a token of `ttl` seconds, then look again after 80% of it.
    Now { ttl: i64 },
    /// Rewrite at this Unix time (80% of the current token's lifetime).
    At(i64),
}

/// Whether the token in `current` (the token Secret as read now; `None` if missing) of the ServiceAccount
/// `sa_name`/`uid`, whose tokens live `ttl` seconds, is rotated at `now`. Due at 80% of the lifetime; a token
/// without `exp` (issued before the annotation) or unreadable is due at once.
pub fn rotation(ttl: i64, current: Option<&Secret>, sa_name: &str, uid: &str, now: i64) -> Rotation {
    let Some(current) = current else {
        return Rotation::Missing;
    };
    if !is_owned_token_secret(current, sa_name, uid) {
        return Rotation::NotOurs;
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
    let due = claims
        .as_ref()
        .and_then(|c| Some(c.iat? + (c.exp? - c.iat?) * 4 / 5))
        .unwrap_or(now);
    if due > now {
        Rotation::At(due)
    } else {
        Rotation::Now { ttl }
    }
}

/// The Secret a Pod's injected volume projects, if any.
pub fn mounted_secret(pod: &Pod) -> Option<&str> {
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

/// A workload to restart: a Pod's first owner, and the newest creation time among its Pods that mount a
/// stale Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct StaleOwner {
    /// The owner (a ReplicaSet stands for its Deployment).
    pub owner: OwnerReference,
    /// When the newest of its stale Pods was created.
    pub newest_pod: Option<Time>,
}

/// The owners (first owner reference, once each) of the Pods that use the ServiceAccount `sa_name`
/// (annotation) but mount a Secret other than `token_secret`: the workloads to restart. Pods mounting the
/// token Secret, Pods without the injected volume and Pods of other ServiceAccounts are left alone.
pub fn stale_owners(pods: &[Pod], sa_name: &str, token_secret: &str) -> Vec<StaleOwner> {
    let mut owners: Vec<StaleOwner> = Vec::new();
    for pod in pods {
        if pod
            .annotations()
            .get(c::POD_SERVICE_ACCOUNT_ANNOTATION)
            .map(String::as_str)
            != Some(sa_name)
        {
            continue;
        }
        if mounted_secret(pod).is_none_or(|m| m == token_secret) {
            continue;
        }
        let Some(owner) = pod.owner_references().first() else {
            continue;
        };
        let created = pod.metadata.creation_timestamp.clone();
        match owners
            .iter_mut()
            .find(|o| o.owner.kind == owner.kind && o.owner.name == owner.name)
        {
            Some(o) => o.newest_pod = o.newest_pod.clone().max(created),
            None => owners.push(StaleOwner {
                owner: owner.clone(),
                newest_pod: created,
            }),
        }
    }
    owners
}

/// Whether the workload's restart annotation (`restarted_at`, written by us) is newer than its newest stale
/// Pod (`newest_pod`): the restart is under way and those Pods are on their way out, so it is not restarted
/// again. Compared in whole seconds (creation times have no more), strictly: a Pod created in the second of
/// the restart restarts it again rather than keep a stale token.
pub fn restart_pending(restarted_at: Option<&str>, newest_pod: Option<&Time>) -> bool {
    let (Some(restarted_at), Some(newest_pod)) = (restarted_at, newest_pod) else {
        return false;
    };
    restarted_at
        .parse::<k8s_openapi::jiff::Timestamp>()
        .is_ok_and(|r| r.as_second() > newest_pod.0.as_second())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        ByteString,
        api::core::v1::{PodSpec, ProjectedVolumeSource, SecretProjection, Volume, VolumeProjection},
    };
    use ksiam_api::serviceaccount::ServiceAccountSpec;

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

    fn created_at(mut s: Secret, secs: i64) -> Secret {
        s.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
        s
    }

    fn deleting(mut s: Secret) -> Secret {
        s.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        s
    }

    fn with_token(mut s: Secret, token: &str) -> Secret {
        s.data = Some(BTreeMap::from([(
            c::SERVICE_ACCOUNT_TOKEN_KEY.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )]));
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

    /// The ServiceAccount `thief` in `ns` with `secrets` and, if `finalized`, our finalizer.
    fn sa(secrets: &[&str], finalized: bool) -> ServiceAccount {
        let mut sa = ServiceAccount::new(
            "thief",
            ServiceAccountSpec {
                secrets: secrets.iter().map(|n| reference(n)).collect(),
            },
        );
        sa.metadata.namespace = Some("ns".into());
        sa.metadata.uid = Some(UID.into());
        if finalized {
            sa.metadata.finalizers = Some(vec![c::SERVICE_ACCOUNT_FINALIZER.into()]);
        }
        sa
    }

    // === choosing the token Secret ===

    #[test]
    fn a_new_service_account_gets_a_new_secret_listed_first_with_the_finalizer() {
        let sa = sa(&[], false);
        assert_eq!(choose_token_secret("thief", UID, None, &[]), Choice::Create);
        let w = writes(&sa, UID, None, &[], "thief-new01");
        assert_eq!(w.apply.as_deref().map(names), Some(vec!["thief-new01"]));
        assert!(w.strays.is_empty());
    }

    #[test]
    fn after_a_restart_between_create_and_update_the_created_secret_is_adopted() {
        // The Secret was created, then the process died before `secrets` was written.
        let sa = sa(&[], true);
        let ours = [token_secret("thief-aaaaa", "thief", Some(UID))];
        let choice = choose_token_secret("thief", UID, None, &ours);
        assert_eq!(choice, Choice::Adopt("thief-aaaaa".into()));
        let w = writes(&sa, UID, None, &ours, "thief-aaaaa");
        assert_eq!(w.apply.as_deref().map(names), Some(vec!["thief-aaaaa"]));
        assert!(w.strays.is_empty(), "nothing else is created or deleted");
    }

    #[test]
    fn of_two_secrets_from_a_race_the_oldest_is_adopted_and_the_other_deleted() {
        let sa = sa(&[], true);
        let ours = [
            created_at(token_secret("thief-young", "thief", Some(UID)), 200),
            created_at(token_secret("thief-old00", "thief", Some(UID)), 100),
        ];
        assert_eq!(
            choose_token_secret("thief", UID, None, &ours),
            Choice::Adopt("thief-old00".into())
        );
        let w = writes(&sa, UID, None, &ours, "thief-old00");
        assert_eq!(w.strays, ["thief-young"]);
    }

    #[test]
    fn a_converged_service_account_needs_no_write() {
        let own = token_secret("thief-aaaaa", "thief", Some(UID));
        let sa = sa(&["thief-aaaaa"], true);
        let ours = [own.clone()];
        assert_eq!(
            choose_token_secret("thief", UID, Some(&own), &ours),
            Choice::Keep("thief-aaaaa".into())
        );
        assert_eq!(
            writes(&sa, UID, Some(&own), &ours, "thief-aaaaa"),
            Writes {
                apply: None,
                strays: vec![]
            }
        );
        assert_eq!(valid_owned(&ours, "thief", UID), ["thief-aaaaa"]);
        // Only the finalizer missing: applied, same list.
        let bare = self::sa(&["thief-aaaaa"], false);
        let w = writes(&bare, UID, Some(&own), &ours, "thief-aaaaa");
        assert_eq!(w.apply.as_deref().map(names), Some(vec!["thief-aaaaa"]));
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
    fn a_foreign_first_entry_stays_after_our_own_and_is_never_deleted() {
        let victim = token_secret("victim-abcde", "victim", Some("uid-victim"));
        let sa = sa(&["victim-abcde", "other"], true);
        let w = writes(&sa, UID, Some(&victim), &[], "thief-aaaaa");
        assert_eq!(
            w.apply.as_deref().map(names),
            Some(vec!["thief-aaaaa", "victim-abcde", "other"])
        );
        assert!(w.strays.is_empty());
        // The next reconcile keeps it that way and writes nothing.
        let own = token_secret("thief-aaaaa", "thief", Some(UID));
        let sa = self::sa(&["thief-aaaaa", "victim-abcde", "other"], true);
        assert_eq!(
            writes(&sa, UID, Some(&own), std::slice::from_ref(&own), "thief-aaaaa").apply,
            None
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
    fn a_missing_or_deleted_first_entry_is_replaced() {
        let mut refs = vec![reference("gone"), reference("other")];
        set_first_secret(&mut refs, reference("thief-bbbbb"), None);
        assert_eq!(names(&refs), ["thief-bbbbb", "other"]);
        let going = deleting(token_secret("gone", "thief", Some(UID)));
        let mut refs = vec![reference("gone")];
        set_first_secret(&mut refs, reference("thief-ccccc"), Some(&going));
        assert_eq!(names(&refs), ["thief-ccccc"]);
        let mut refs = Vec::new();
        set_first_secret(&mut refs, reference("thief-ddddd"), None);
        assert_eq!(names(&refs), ["thief-ddddd"]);
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
        assert_eq!(valid_owned(&ours, "thief", UID), ["thief-aaaaa", "thief-bbbbb"]);
    }

    #[test]
    fn deletion_considers_listed_and_labelled_secrets_but_deletes_only_token_secrets_of_this_account() {
        let sa = sa(&["thief-aaaaa", "victim-abcde"], true);
        let ours = [
            token_secret("thief-aaaaa", "thief", Some(UID)),
            token_secret("thief-bbbbb", "thief", Some(UID)),
        ];
        assert_eq!(
            cleanup_candidates(&sa, &ours),
            ["thief-aaaaa", "thief-bbbbb", "victim-abcde"]
        );
        assert!(!is_token_secret_of(
            &token_secret("victim-abcde", "victim", None),
            "thief"
        ));
        assert!(is_token_secret_of(
            &token_secret("by-hand", "thief", None),
            "thief"
        ));
    }

    // === TTL rotation ===

    fn ttl_sa(value: Option<&str>) -> ServiceAccount {
        let mut sa = sa(&[], true);
        sa.metadata.annotations =
            value.map(|v| BTreeMap::from([(crate::TOKEN_TTL_ANNOTATION.to_owned(), v.to_owned())]));
        sa
    }

    fn issued(iat: i64, exp: Option<i64>) -> String {
        ksiam_token::Issuer::new(ksiam_token::KeySet::legacy(b"k"), ksiam_token::DEFAULT_ISSUER)
            .issue_sa_token("ns", "thief", iat, exp)
            .unwrap()
    }

    #[test]
    fn only_a_valid_ttl_annotation_makes_tokens_expire() {
        assert_eq!(token_ttl(&ttl_sa(None)), None);
        assert_eq!(token_ttl(&ttl_sa(Some("3600"))), Some(3600));
        assert_eq!(token_ttl(&ttl_sa(Some(" 60 "))), Some(60));
        assert_eq!(token_ttl(&ttl_sa(Some("59"))), None, "below the minimum");
        assert_eq!(token_ttl(&ttl_sa(Some("-1"))), None);
        assert_eq!(token_ttl(&ttl_sa(Some("1h"))), None);
    }

    #[test]
    fn a_token_is_rotated_at_80_percent_of_its_lifetime() {
        let own = |t: &str| with_token(token_secret("thief-aaaaa", "thief", Some(UID)), t);
        let s = own(&issued(1000, Some(1100)));
        assert_eq!(rotation(100, Some(&s), "thief", UID, 1000), Rotation::At(1080));
        assert_eq!(rotation(100, Some(&s), "thief", UID, 1079), Rotation::At(1080));
        assert_eq!(
            rotation(100, Some(&s), "thief", UID, 1080),
            Rotation::Now { ttl: 100 }
        );
        // Issued before the annotation (no exp), or unreadable: now.
        let s = own(&issued(1000, None));
        assert_eq!(
            rotation(100, Some(&s), "thief", UID, 1000),
            Rotation::Now { ttl: 100 }
        );
        let s = own("not a token");
        assert_eq!(
            rotation(100, Some(&s), "thief", UID, 1000),
            Rotation::Now { ttl: 100 }
        );
    }

    #[test]
    fn rotation_never_writes_a_secret_it_does_not_own() {
        let hand_made = with_token(token_secret("by-hand", "thief", None), &issued(1000, None));
        assert_eq!(
            rotation(100, Some(&hand_made), "thief", UID, 5000),
            Rotation::NotOurs
        );
        let other_uid = with_token(
            token_secret("old", "thief", Some("uid-before")),
            &issued(1000, None),
        );
        assert_eq!(
            rotation(100, Some(&other_uid), "thief", UID, 5000),
            Rotation::NotOurs
        );
        assert_eq!(rotation(100, None, "thief", UID, 5000), Rotation::Missing);
    }

    // === restarting workloads ===

    fn pod(name: &str, sa: Option<&str>, mounted: Option<&str>, owner: Option<(&str, &str)>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.annotations =
            sa.map(|s| BTreeMap::from([(c::POD_SERVICE_ACCOUNT_ANNOTATION.to_owned(), s.to_owned())]));
        p.metadata.owner_references = owner.map(|(kind, name)| {
            vec![OwnerReference {
                kind: kind.into(),
                name: name.into(),
                ..Default::default()
            }]
        });
        p.spec = Some(PodSpec {
            volumes: mounted.map(|secret| {
                vec![Volume {
                    name: c::SERVICE_ACCOUNT_VOLUME_NAME.into(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            secret: Some(SecretProjection {
                                name: secret.into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn only_workloads_whose_pods_mount_a_stale_secret_restart_once_each() {
        let rs = Some(("ReplicaSet", "app-7d9f"));
        let pods = [
            pod("current", Some("thief"), Some("thief-new00"), rs),
            created(pod("stale-1", Some("thief"), Some("thief-old00"), rs), 100),
            created(pod("stale-2", Some("thief"), Some("thief-old00"), rs), 300),
            pod(
                "stale-sts",
                Some("thief"),
                Some("thief-old00"),
                Some(("StatefulSet", "db")),
            ),
            pod(
                "other-sa",
                Some("victim"),
                Some("victim-old00"),
                Some(("DaemonSet", "agent")),
            ),
            pod("no-volume", Some("thief"), None, Some(("DaemonSet", "plain"))),
            pod("bare", Some("thief"), Some("thief-old00"), None),
        ];
        let owners: Vec<(String, String, Option<i64>)> = stale_owners(&pods, "thief", "thief-new00")
            .into_iter()
            .map(|o| (o.owner.kind, o.owner.name, o.newest_pod.map(|t| t.0.as_second())))
            .collect();
        assert_eq!(
            owners,
            [
                ("ReplicaSet".to_owned(), "app-7d9f".to_owned(), Some(300)),
                ("StatefulSet".to_owned(), "db".to_owned(), None)
            ]
        );
        // After a restart of the controller with nothing replaced: nothing restarts.
        assert!(stale_owners(&pods[..1], "thief", "thief-new00").is_empty());
    }

    fn created(mut p: Pod, secs: i64) -> Pod {
        p.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
        p
    }

    #[test]
    fn a_restart_under_way_is_not_repeated() {
        let at = |secs: i64| Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
        let stamp = k8s_openapi::jiff::Timestamp::from_second(1000)
            .unwrap()
            .to_string();
        // Stale Pods older than the restart: it is under way.
        assert!(restart_pending(Some(&stamp), at(999).as_ref()));
        // A stale Pod created in the second of the restart, or after: restart again.
        assert!(!restart_pending(Some(&stamp), at(1000).as_ref()));
        assert!(!restart_pending(Some(&stamp), at(1001).as_ref()));
        // Never restarted, unreadable annotation, unknown creation time: restart.
        assert!(!restart_pending(None, at(1).as_ref()));
        assert!(!restart_pending(Some("yesterday"), at(1).as_ref()));
        assert!(!restart_pending(Some(&stamp), None));
    }
}
