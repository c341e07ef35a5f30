//! The token-secret filler (spec §4): a Secret of type `kubesphere.io/service-account-token` that names an
//! existing ServiceAccount of its own namespace and has no `token` gets one. A Secret that has a token (any
//! token, whoever's it is) is never written, and the write is conditional on the resourceVersion read, so a
//! token stored meanwhile is never overwritten.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use ksiam_api::{constants as c, serviceaccount::ServiceAccount};
use kube::{
    Api, Resource, ResourceExt,
    api::Patch,
    runtime::{Controller, controller::Action, watcher},
};
use tracing::{info, warn};

use crate::{Error, serviceaccount::Context};

/// Runs the filler until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let secrets: Api<Secret> = Api::all(ctx.client.clone());
    let wc = watcher::Config::default().fields(&format!("type={}", c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE));
    let ready = ctx.readiness.register("token-secret-filler");
    let controller = Controller::new(secrets, wc);
    tokio::spawn(ready.when_synced(controller.store()));
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |_, e, _| {
                warn!(error = %e, "requeueing token secret");
                Action::requeue(Duration::from_secs(2))
            },
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "token secret reconcile failed");
            }
        })
        .await;
}

/// The ServiceAccount name a Secret asks to be filled for: a token Secret, not being deleted, without a
/// `token` key (an empty one included), annotated with a non-empty ServiceAccount name.
pub fn wants_token(secret: &Secret) -> Option<&str> {
    if secret.type_.as_deref() != Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE)
        || secret.metadata.deletion_timestamp.is_some()
        || secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(c::SERVICE_ACCOUNT_TOKEN_KEY))
    {
        return None;
    }
    secret
        .annotations()
        .get(c::SERVICE_ACCOUNT_NAME_ANNOTATION)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// Whether `sa` (as read from the Secret's namespace) is the live ServiceAccount `secret` is annotated for.
pub fn fills_for(secret: &Secret, sa: &ServiceAccount) -> bool {
    wants_token(secret) == Some(sa.name_any().as_str())
        && sa.namespace().is_some()
        && sa.namespace() == secret.namespace()
        && sa.meta().deletion_timestamp.is_none()
}

/// Fills one Secret.
pub async fn reconcile(secret: Arc<Secret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(sa_name) = wants_token(&secret).map(str::to_owned) else {
        return Ok(Action::await_change());
    };
    let ns = secret.namespace().ok_or(Error::MissingNamespace)?;
    let Some(sa) = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&sa_name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    if !fills_for(&secret, &sa) {
        return Ok(Action::await_change());
    }
    let token = ctx
        .issuer
        .issue(&ns, &sa_name, crate::serviceaccount::token_ttl(&sa))
        .await?;
    let data = BTreeMap::from([(
        c::SERVICE_ACCOUNT_TOKEN_KEY.to_owned(),
        ByteString(token.into_bytes()),
    )]);
    // resourceVersion: never overwrite a token someone else wrote meanwhile.
    let patch =
        serde_json::json!({ "metadata": { "resourceVersion": secret.resource_version() }, "data": data });
    Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .patch(
            &secret.name_any(),
            &crate::serviceaccount::patch_params(),
            &Patch::Merge(&patch),
        )
        .await?;
    info!(namespace = %ns, secret = %secret.name_any(), serviceaccount = %sa_name, "filled token secret");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn secret(ns: &str, sa: Option<&str>, token: Option<&str>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("s".into());
        s.metadata.namespace = Some(ns.into());
        s.metadata.annotations =
            sa.map(|n| BTreeMap::from([(c::SERVICE_ACCOUNT_NAME_ANNOTATION.to_owned(), n.to_owned())]));
        s.type_ = Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE.into());
        s.data = token.map(|t| {
            BTreeMap::from([(
                c::SERVICE_ACCOUNT_TOKEN_KEY.to_owned(),
                ByteString(t.as_bytes().to_vec()),
            )])
        });
        s
    }

    fn sa(ns: &str, name: &str) -> ServiceAccount {
        let mut sa = ServiceAccount::new(name, Default::default());
        sa.metadata.namespace = Some(ns.into());
        sa
    }

    #[test]
    fn only_empty_token_secrets_annotated_for_a_service_account_are_filled() {
        assert_eq!(wants_token(&secret("ns", Some("app"), None)), Some("app"));
        assert_eq!(
            wants_token(&secret("ns", Some("app"), Some("someone's token"))),
            None,
            "a token is never overwritten"
        );
        assert_eq!(
            wants_token(&secret("ns", Some("app"), Some(""))),
            None,
            "an empty token key is not filled"
        );
        assert_eq!(wants_token(&secret("ns", None, None)), None);
        assert_eq!(wants_token(&secret("ns", Some(""), None)), None);
        let mut opaque = secret("ns", Some("app"), None);
        opaque.type_ = Some("Opaque".into());
        assert_eq!(wants_token(&opaque), None, "another type");
        let mut deleting = secret("ns", Some("app"), None);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(wants_token(&deleting), None);
    }

    #[test]
    fn the_service_account_must_be_the_annotated_one_of_the_same_namespace() {
        let s = secret("ns", Some("app"), None);
        assert!(fills_for(&s, &sa("ns", "app")));
        assert!(!fills_for(&s, &sa("other", "app")), "another namespace");
        assert!(!fills_for(&s, &sa("ns", "other")), "another ServiceAccount");
        let mut gone = sa("ns", "app");
        gone.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!fills_for(&s, &gone), "a ServiceAccount being deleted");
        assert!(!fills_for(
            &secret("ns", Some("app"), Some("t")),
            &sa("ns", "app")
        ));
    }
}
