//! The workspace's dependency rules, read from the manifests through `cargo metadata`, so that a crate added
//! later is covered without editing this file.
//!
//! - `ksiam-rbac` depends on no other crate of ours and, through everything it pulls in, on no I/O crate.
//! - `ksiam-token` and `ksiam-authz` never reach `ksiam-gateway`.
//! - The SDK (`kubesphere-client`) depends on nothing of ours.
//! - Nothing depends on the binary crate `ksiam` (`crates/cli`).
//! - `ksiam-runtime` (generic process plumbing) depends on no crate of ours.
//! - A publishable crate of ours depends (normal and build dependencies) only on publishable crates of ours,
//!   else `cargo package` of it cannot work.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Crates that do I/O (sockets, files, processes, an async runtime) or exist only to serve it.
const IO_CRATES: &[&str] = &[
    "async-std",
    "axum",
    "h2",
    "hyper",
    "hyper-rustls",
    "hyper-util",
    "kube",
    "kube-client",
    "kube-runtime",
    "mio",
    "reqwest",
    "smol",
    "socket2",
    "tokio",
    "tokio-rustls",
    "tonic",
    "tower-http",
    "ureq",
];

/// What `cargo metadata` says about the workspace.
struct Workspace {
    /// Every package of the workspace: name → (publishable, direct dependencies as (name, kind)).
    members: BTreeMap<String, Member>,
    /// The resolved graph over every package, with every feature that the workspace turns on:
    /// name → names of its normal and build dependencies.
    graph: BTreeMap<String, BTreeSet<String>>,
}

struct Member {
    publishable: bool,
    /// Features turned on in its normal dependency on k8s-openapi, if it has one.
    k8s_openapi_features: Vec<String>,
    /// `(dependency name, kind)`, kind is `normal`, `dev` or `build`.
    deps: Vec<(String, String)>,
}

impl Workspace {
    fn load() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .current_dir(root)
            .args(["metadata", "--format-version", "1", "--locked"])
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");

        let member_ids: BTreeSet<&str> = meta["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap())
            .collect();
        let mut names_by_id = BTreeMap::new();
        let mut members = BTreeMap::new();
        for package in meta["packages"].as_array().unwrap() {
            let id = package["id"].as_str().unwrap();
            let name = package["name"].as_str().unwrap().to_owned();
            names_by_id.insert(id.to_owned(), name.clone());
            if !member_ids.contains(id) {
                continue;
            }
            // `publish = false` is `[]`; absent (`null`) means any registry.
            let publishable = package["publish"].as_array().is_none_or(|r| !r.is_empty());
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let name = d["name"].as_str().unwrap().to_owned();
                    let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                    (name, kind)
                })
                .collect();
            let k8s_openapi_features = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["name"] == "k8s-openapi" && d["kind"].is_null())
                .flat_map(|d| d["features"].as_array().unwrap().iter())
                .map(|f| f.as_str().unwrap().to_owned())
                .collect();
            members.insert(
                name,
                Member {
                    publishable,
                    deps,
                    k8s_openapi_features,
                },
            );
        }

        let mut graph = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().unwrap() {
            let name = names_by_id[node["id"].as_str().unwrap()].clone();
            let deps: BTreeSet<String> = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].as_str() != Some("dev"))
                })
                .map(|d| names_by_id[d["pkg"].as_str().unwrap()].clone())
                .collect();
            graph.entry(name).or_insert_with(BTreeSet::new).extend(deps);
        }
        Self { members, graph }
    }

    /// Whether `name` is a package of this workspace.
    fn is_ours(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// Direct dependencies of `member` on other crates of ours, with their kind (a crate's dev-dependency on
    /// itself, used to turn on its own features in tests, is left out).
    fn our_deps(&self, member: &str) -> Vec<(String, String)> {
        self.members[member]
            .deps
            .iter()
            .filter(|(name, _)| name != member && self.is_ours(name))
            .cloned()
            .collect()
    }

    /// Everything `name` reaches through normal and build dependencies (not itself).
    fn closure(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_owned()];
        while let Some(next) = todo.pop() {
            for dep in self.graph.get(&next).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen.remove(name);
        seen
    }

    /// The path from `from` to `to` through normal and build dependencies, for the failure message.
    fn path(&self, from: &str, to: &str) -> Vec<String> {
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        let mut todo = std::collections::VecDeque::from([from.to_owned()]);
        while let Some(next) = todo.pop_front() {
            if next == to {
                let mut path = vec![to.to_owned()];
                while let Some(p) = parent.get(path.last().unwrap()) {
                    path.push(p.clone());
                }
                path.reverse();
                return path;
            }
            for dep in self.graph.get(&next).into_iter().flatten() {
                if dep != from && !parent.contains_key(dep) {
                    parent.insert(dep.clone(), next.clone());
                    todo.push_back(dep.clone());
                }
            }
        }
        Vec::new()
    }
}

fn workspace() -> &'static Workspace {
    static WS: std::sync::OnceLock<Workspace> = std::sync::OnceLock::new();
    WS.get_or_init(Workspace::load)
}

#[test]
fn the_rules_name_crates_that_exist() {
    let ws = workspace();
    for name in [
        "ksiam-rbac",
        "ksiam-token",
        "ksiam-authz",
        "ksiam-gateway",
        "kubesphere-client",
        "ksiam",
    ] {
        assert!(
            ws.is_ours(name),
            "{name} is not a workspace member any more: update the rules"
        );
    }
}

#[test]
fn rbac_depends_on_no_crate_of_ours_and_on_no_io_crate() {
    let ws = workspace();
    assert_eq!(ws.our_deps("ksiam-rbac"), Vec::<(String, String)>::new());
    let reached = ws.closure("ksiam-rbac");
    let io: Vec<String> = IO_CRATES
        .iter()
        .filter(|c| reached.contains(**c))
        .map(|c| ws.path("ksiam-rbac", c).join(" -> "))
        .collect();
    assert!(io.is_empty(), "ksiam-rbac reaches I/O crates: {io:#?}");
}

#[test]
fn token_and_authz_never_reach_the_gateway() {
    let ws = workspace();
    for name in ["ksiam-token", "ksiam-authz"] {
        let reached = ws.closure(name);
        assert!(
            !reached.contains("ksiam-gateway"),
            "{}",
            ws.path(name, "ksiam-gateway").join(" -> ")
        );
        let dev: Vec<_> = ws
            .our_deps(name)
            .into_iter()
            .filter(|(d, _)| d == "ksiam-gateway")
            .collect();
        assert!(dev.is_empty(), "{name} depends on ksiam-gateway: {dev:?}");
    }
}

#[test]
fn the_sdk_depends_on_nothing_of_ours() {
    let ws = workspace();
    assert_eq!(ws.our_deps("kubesphere-client"), Vec::<(String, String)>::new());
    let ours: Vec<String> = ws
        .closure("kubesphere-client")
        .into_iter()
        .filter(|d| ws.is_ours(d))
        .collect();
    assert!(ours.is_empty(), "kubesphere-client reaches {ours:?}");
}

#[test]
fn nothing_depends_on_the_binary_crate() {
    let ws = workspace();
    let dependents: Vec<(String, String)> = ws
        .members
        .iter()
        .filter(|(name, m)| name.as_str() != "ksiam" && m.deps.iter().any(|(d, _)| d == "ksiam"))
        .map(|(name, m)| {
            let kinds: Vec<&str> = m
                .deps
                .iter()
                .filter(|(d, _)| d == "ksiam")
                .map(|(_, k)| k.as_str())
                .collect();
            (name.clone(), kinds.join(","))
        })
        .collect();
    assert!(
        dependents.is_empty(),
        "crates depending on `ksiam`: {dependents:?}"
    );
}

#[test]
fn the_runtime_depends_on_no_crate_of_ours() {
    let ws = workspace();
    // Written before the runtime exists: the rule holds from the day `crates/runtime` is added.
    let Some(_) = ws.members.get("ksiam-runtime") else {
        assert!(
            !Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../crates/runtime/Cargo.toml")
                .exists(),
            "crates/runtime exists but is not named ksiam-runtime: update the rule"
        );
        return;
    };
    let deps: Vec<(String, String)> = ws
        .our_deps("ksiam-runtime")
        .into_iter()
        .filter(|(_, kind)| kind != "dev")
        .collect();
    assert!(deps.is_empty(), "ksiam-runtime depends on {deps:?}");
}

#[test]
fn publishable_crates_depend_only_on_publishable_crates_of_ours() {
    let ws = workspace();
    let mut wrong = Vec::new();
    for name in ws
        .members
        .iter()
        .filter(|(_, m)| m.publishable)
        .map(|(name, _)| name)
    {
        for (dep, kind) in ws.our_deps(name) {
            if kind != "dev" && !ws.members[&dep].publishable {
                wrong.push(format!("{name} -> {dep} ({kind})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "publishable crates depending on `publish = false` ones: {wrong:?}"
    );
}

#[test]
fn publishable_crates_leave_the_kubernetes_version_to_the_application() {
    // k8s-openapi refuses two version features at once, so a library that picks one breaks every
    // application that picks another.
    let ws = workspace();
    let wrong: Vec<String> = ws
        .members
        .iter()
        .filter(|(_, m)| m.publishable)
        .flat_map(|(name, m)| {
            m.k8s_openapi_features
                .iter()
                .filter(|f| f.starts_with("v1_"))
                .map(move |f| format!("{name}: k8s-openapi/{f}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}");
}

#[test]
fn the_rules_can_fail() {
    // The checks above pass vacuously if the graph is empty; this one shows they see real edges.
    let ws = workspace();
    assert!(ws.closure("ksiam").contains("ksiam-gateway"));
    assert!(ws.closure("ksiam-gateway").contains("tokio"));
    assert!(!ws.path("ksiam", "ksiam-rbac").is_empty());
    assert!(
        ws.members["ksiam"]
            .k8s_openapi_features
            .iter()
            .any(|f| f.starts_with("v1_"))
    );
}
