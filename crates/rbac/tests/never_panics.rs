//! "ksiam-rbac never panics on any input" (ARCHITECTURE.md), for the request-info resolver, the target
//! check and the Status formatters: arbitrary methods, paths, queries, headers, user names and reasons.
//! Every Status body is valid JSON that reads back as the status it was made from.

use ksiam_rbac::{Status, Target, resolve, status::wants_pretty};
use proptest::prelude::*;
use serde_json::Value;

/// Mostly path-like text (segments of KubeSphere's and Kubernetes' vocabulary, escapes, dots), sometimes
/// anything at all.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        proptest::sample::select(
            &[
                "api",
                "apis",
                "kapis",
                "v1",
                "v1beta1",
                "clusters",
                "c1",
                "namespaces",
                "ns1",
                "workspaces",
                "ws1",
                "pods",
                "log",
                "exec",
                "watch",
                "proxy",
                "tenant.kubesphere.io",
                "iam.kubesphere.io",
                "apps",
                "deployments",
                "status",
                "finalize",
                "",
                ".",
                "..",
                "%2e",
                "%2F",
                "%",
                "%zz",
                ";",
                "\\",
                "#",
                "?",
                "*",
                "é",
                "\u{0}",
            ][..]
        )
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
        any::<String>(),
    ];
    prop_oneof![
        4 => proptest::collection::vec(segment, 0..9).prop_map(|s| format!("/{}", s.join("/"))),
        1 => any::<String>(),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        proptest::sample::select(
            &[
                "watch=true",
                "watch=1",
                "watch=FALSE",
                "labelSelector=kubesphere.io/workspace=ws1",
                "labelSelector=a%3Db",
                "fieldSelector=metadata.name==x",
                "fieldSelector=metadata.name%3Dx,a!=b",
                "dryRun=All",
                "dryrun=All",
                "pretty",
                "pretty=false",
                "%",
                "%zz",
                "#x",
                ";",
                "=",
                "&&",
            ][..]
        )
        .prop_map(str::to_owned),
        "[ -~]{0,16}",
        any::<String>(),
    ];
    proptest::collection::vec(pair, 0..5).prop_map(|p| p.join("&"))
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "get", ""
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

/// The body parses as JSON and says what `status` says.
fn reads_back(status: &Status, pretty: bool) -> Result<(), TestCaseError> {
    let body = status.to_json(pretty);
    let v: Value = serde_json::from_str(&body).map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
    prop_assert_eq!(v["kind"].as_str(), Some("Status"));
    prop_assert_eq!(v["message"].as_str(), Some(status.message.as_str()), "{}", body);
    prop_assert_eq!(v["reason"].as_str(), Some(status.reason));
    prop_assert_eq!(v["code"].as_u64(), Some(u64::from(status.code)));
    if let Some(d) = &status.details {
        for (key, value) in [("group", &d.group), ("kind", &d.kind), ("name", &d.name)] {
            let expected = (!value.is_empty()).then_some(value.as_str());
            prop_assert_eq!(v["details"][key].as_str(), expected, "{}", body);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn resolving_and_formatting_never_panic(
        method in method(),
        path in path(),
        url_query in query(),
        header in proptest::option::of(query()),
        user in any::<String>(),
        reason in any::<String>(),
        user_agent in any::<String>(),
    ) {
        let _ = resolve(&method, &path, &url_query);
        let _ = wants_pretty(&url_query, &user_agent);
        if let Ok(target) = Target::parse(&method, &path, Some(&url_query), header.as_deref()) {
            let _ = target.forwarded();
            let groups = vec![user.clone()];
            let a = target.info.attributes(&user, &groups);
            for reason in ["", reason.as_str()] {
                let status = Status::forbidden(&a, reason);
                reads_back(&status, false)?;
                reads_back(&status, true)?;
            }
        }
        for status in [
            Status::unauthorized(reason.clone()),
            Status::failure(400, "BadRequest", reason.clone()),
        ] {
            reads_back(&status, false)?;
            reads_back(&status, true)?;
        }
    }
}
