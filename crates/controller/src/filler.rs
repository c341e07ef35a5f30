//! The token-secret filler (spec §4): a Secret of type `kubesphere.io/service-account-token` that names an
//! existing ServiceAccount and has no `token` gets one. A Secret that has a token is never reissued.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use ksiam_api::{constants as c, serviceaccount::ServiceAccount};
use kube::{
    Api, ResourceExt,
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

/// Fills one Secret.
pub async fn reconcile(secret: Arc<Secret>, ctx: Arc<Context>) -> Result<Action, Error> {
    if secret.type_.as_deref() != Some(c::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE) {
        return Ok(Action::await_change());
    }
    let has_token = secret
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(c::SERVICE_ACCOUNT_TOKEN_KEY));
    let sa_name = secret
        .annotations()
        .get(c::SERVICE_ACCOUNT_NAME_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    if has_token || sa_name.is_empty() || secret.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = secret.namespace().ok_or(Error::MissingNamespace)?;
    let Some(sa) = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&sa_name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    let token = ctx
        .issuer
        .issue(&ns, &sa_name, crate::serviceaccount::token_ttl(&sa))?;
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
