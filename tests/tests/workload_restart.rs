//! "Workloads are restarted only when their Pods mount a Secret that is no longer the ServiceAccount's token
//! Secret" (README): a Deployment whose Pods mount a replaced token Secret is restarted exactly once; one whose
//! Pods mount the current token Secret is not restarted, neither by later reconciles nor after `ksiam all`
//! is killed and restarted (a fresh controller reconciles every ServiceAccount).
//!
//! Its own test binary: it kills `ksiam all` (`cargo xtask e2e` restarts it, as the fault test relies on).

use std::time::Duration;

use ksiam_e2e::{
    TestNamespace, apply, get_json, kubectl, kubectl_with_stdin, poll, secret_names, token_secret_name,
};
use serde_json::{Value, json};

const RESTARTED_AT: &str = "kubesphere.io/restartedAt";

/// A one-replica Deployment whose Pods use the KubeSphere ServiceAccount `sa` (the webhook mounts its token
/// Secret). `Recreate`: without a kubelet new Pods never become ready, so a rolling update would keep the old
/// Pod forever.
fn deployment(ns: &str, name: &str, sa: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {"kubesphere.io/serviceaccount-name": sa},
                },
                "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    })
}

/// The Secrets the Pods of Deployment `name` mount through the injected volume (one entry per Pod).
fn mounted(ns: &str, name: &str) -> anyhow::Result<Vec<String>> {
    let pods = get_json(&["pods", "-n", ns, "-l", &format!("app={name}")])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            p["spec"]["volumes"]
                .as_array()?
                .iter()
                .find_map(|v| v["projected"]["sources"][0]["secret"]["name"].as_str())
                .map(str::to_owned)
        })
        .collect())
}

/// The Deployment's `restartedAt` annotation, if any.
fn restarted_at(ns: &str, name: &str) -> anyhow::Result<Option<String>> {
    let d = get_json(&["deployment", name, "-n", ns])?;
    Ok(d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        .as_str()
        .map(str::to_owned))
}

/// Waits until every Pod of Deployment `name` mounts `secret` (and there is one).
fn wait_mounting(ns: &str, name: &str, secret: &str) -> anyhow::Result<()> {
    poll(
        &format!("the Pods of {name} to mount {secret}"),
        Duration::from_secs(60),
        || {
            let m = mounted(ns, name)?;
            Ok((!m.is_empty() && m.iter().all(|s| s == secret)).then_some(()))
        },
    )
}

/// A sync point: appends the missing Secret `marker` to `app`'s `secrets` and waits for the Warning event
/// the controller's check of `secrets` publishes about it. Reconciles of one object never overlap, so once
/// the event of a second marker is seen, the reconcile that saw the first one has finished, its restarts
/// included.
fn reconciled_after(ns: &str, current: &[String], marker: &str) -> anyhow::Result<Vec<String>> {
    let mut list: Vec<Value> = current.iter().map(|n| json!({"name": n})).collect();
    list.push(json!({"name": marker}));
    kubectl(&[
        "patch",
        "serviceaccounts.kubesphere.io",
        "app",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        &json!({ "secrets": list }).to_string(),
    ])?;
    let note = format!("secrets \"{marker}\" not found");
    poll(
        &format!("the controller's event about {marker}"),
        Duration::from_secs(30),
        || {
            let events = get_json(&["events.events.k8s.io", "-n", ns])?;
            let seen = events["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["note"].as_str() == Some(&note));
            Ok(seen.then_some(()))
        },
    )?;
    let mut names: Vec<String> = current.to_vec();
    names.push(marker.to_owned());
    Ok(names)
}

fn pid() -> anyhow::Result<u32> {
    let file = std::env::var_os("KSIAM_PID_FILE")
        .ok_or_else(|| anyhow::anyhow!("KSIAM_PID_FILE is not set: run via `cargo xtask e2e`"))?;
    Ok(std::fs::read_to_string(file)?.trim().parse()?)
}

#[test]
fn only_workloads_mounting_a_replaced_token_secret_are_restarted_once() -> anyhow::Result<()> {
    let test_ns = TestNamespace::create("restart")?;
    let ns = test_ns.name().to_owned();
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: {ns}\n"
        ),
    )?;
    let first = token_secret_name(&ns, "app")?;

    // `stale` mounts the first token Secret, which is then deleted and replaced.
    apply(&deployment(&ns, "stale", "app"))?;
    wait_mounting(&ns, "stale", &first)?;
    assert_eq!(restarted_at(&ns, "stale")?, None);
    kubectl(&["delete", "secret", &first, "-n", &ns])?;
    let second = poll("a new token Secret", Duration::from_secs(30), || {
        let n = token_secret_name(&ns, "app")?;
        Ok((n != first).then_some(n))
    })?;
    let stamp = poll("stale to be restarted", Duration::from_secs(30), || {
        restarted_at(&ns, "stale")
    })?;
    wait_mounting(&ns, "stale", &second)?;

    // `current` mounts the current token Secret from the start.
    apply(&deployment(&ns, "current", "app"))?;
    wait_mounting(&ns, "current", &second)?;

    // Later reconciles restart nothing.
    let listed = reconciled_after(&ns, std::slice::from_ref(&second), "marker-1")?;
    let listed = reconciled_after(&ns, &listed, "marker-2")?;
    assert_eq!(
        restarted_at(&ns, "stale")?.as_deref(),
        Some(stamp.as_str()),
        "restarted once"
    );
    assert_eq!(restarted_at(&ns, "current")?, None);

    // Nor does a fresh controller after SIGKILL.
    let old = pid()?;
    let status = std::process::Command::new("kill")
        .args(["-9", &old.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -9 {old} failed");
    poll("ksiam all to be restarted", Duration::from_secs(60), || {
        Ok((pid()? != old && ksiam_e2e::gateway_ready()).then_some(()))
    })?;
    let listed = reconciled_after(&ns, &listed, "marker-3")?;
    reconciled_after(&ns, &listed, "marker-4")?;
    assert_eq!(
        restarted_at(&ns, "stale")?.as_deref(),
        Some(stamp.as_str()),
        "restarted once"
    );
    assert_eq!(restarted_at(&ns, "current")?, None);
    // Both still mount the token Secret the ServiceAccount lists first.
    let sa = get_json(&["serviceaccounts.kubesphere.io", "app", "-n", &ns])?;
    assert_eq!(secret_names(&sa).first().copied(), Some(second.as_str()));
    assert_eq!(mounted(&ns, "stale")?, std::slice::from_ref(&second));
    assert_eq!(mounted(&ns, "current")?, [second]);
    Ok(())
}
