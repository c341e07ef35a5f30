//! The public API of the library crates that others use, compared with the listing committed beside each
//! crate (`crates/<dir>/public-api.txt`), so that a change to it, breaking or not, is seen in review.
//!
//! The listing comes from rustdoc's JSON output (unstable, so `RUSTC_BOOTSTRAP=1` on the pinned toolchain):
//! every public item under every public path, with function signatures, public fields, enum variants, and the
//! traits each type implements (auto traits and blanket implementations left out).
//! After an intended change: `KSIAM_BLESS=1 cargo test -p xtask --test public_api`, and commit the listings.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `(package, directory under crates/, features listed)`: the features whose API is meant to be stable.
const CRATES: &[(&str, &str, &str)] = &[
    ("ksiam-rbac", "rbac", "rego"),
    ("ksiam-token", "token", "grpc"),
    ("ksiam-webhook", "webhook", "server"),
    ("kubesphere-client", "sdk", ""),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A target directory of its own: `RUSTC_BOOTSTRAP` is part of cargo's fingerprints, so sharing the build's
/// directory would rebuild the proc-macro crates back and forth between this test and everything else.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("public-api")
}

fn rustdoc_json(package: &str, features: &str) -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root())
        .args(["rustdoc", "--lib", "-p", package, "--target-dir"])
        .arg(target_dir())
        .env("RUSTC_BOOTSTRAP", "1")
        .env("K8S_OPENAPI_ENABLED_VERSION", "1.34");
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    cmd.args(["--", "-Z", "unstable-options", "--output-format", "json"]);
    let out = cmd.output().expect("cargo rustdoc runs");
    assert!(
        out.status.success(),
        "cargo rustdoc -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = target_dir()
        .join("doc")
        .join(format!("{}.json", package.replace('-', "_")));
    serde_json::from_slice(&std::fs::read(&file).expect("rustdoc wrote its JSON")).expect("rustdoc JSON")
}

/// Walks the crate's public paths and writes one line per item.
struct Lister<'a> {
    index: &'a serde_json::Map<String, Value>,
    lines: BTreeSet<String>,
    visiting: HashSet<String>,
}

impl<'a> Lister<'a> {
    fn item(&self, id: &Value) -> Option<&'a Value> {
        self.index.get(&id.to_string())
    }

    fn walk(&mut self, id: &Value, path: &str) {
        let Some(item) = self.item(id) else {
            return;
        };
        if item["crate_id"] != 0 {
            return;
        }
        let key = format!("{path}#{id}");
        if !self.visiting.insert(key) {
            return;
        }
        let (kind, inner) = kind(item);
        match kind {
            "module" => {
                self.lines.insert(format!("mod {path}"));
                for child in inner["items"].as_array().into_iter().flatten() {
                    let Some(child_item) = self.item(child) else {
                        continue;
                    };
                    match kind_name(child_item) {
                        "use" => self.reexport(&child_item["inner"]["use"], path),
                        "impl" => {}
                        _ => {
                            let name = child_item["name"].as_str().unwrap_or("_");
                            self.walk(child, &format!("{path}::{name}"));
                        }
                    }
                }
            }
            "struct" => {
                let generics = generics(&inner["generics"]);
                self.lines.insert(format!("struct {path}{generics}"));
                match &inner["kind"] {
                    Value::Object(k) if k.contains_key("plain") => {
                        for field in k["plain"]["fields"].as_array().into_iter().flatten() {
                            self.field(field, path);
                        }
                        if k["plain"]["has_stripped_fields"] == true {
                            self.lines.insert(format!("struct {path}: has private fields"));
                        }
                    }
                    Value::Object(k) if k.contains_key("tuple") => {
                        for (i, field) in k["tuple"].as_array().into_iter().flatten().enumerate() {
                            if field.is_null() {
                                self.lines.insert(format!("struct {path}.{i}: private"));
                            } else {
                                self.field(field, path);
                            }
                        }
                    }
                    _ => {}
                }
                self.impls(inner, path);
            }
            "enum" => {
                let generics = generics(&inner["generics"]);
                self.lines.insert(format!("enum {path}{generics}"));
                for variant in inner["variants"].as_array().into_iter().flatten() {
                    self.variant(variant, path);
                }
                self.impls(inner, path);
            }
            "union" => {
                self.lines.insert(format!("union {path}"));
                self.impls(inner, path);
            }
            "trait" => {
                let generics = generics(&inner["generics"]);
                let bounds = bounds(&inner["bounds"]);
                let bounds = if bounds.is_empty() {
                    String::new()
                } else {
                    format!(": {bounds}")
                };
                self.lines.insert(format!("trait {path}{generics}{bounds}"));
                for member in inner["items"].as_array().into_iter().flatten() {
                    if let Some(m) = self.item(member) {
                        let line = self.member(m, path);
                        self.lines.insert(line);
                    }
                }
            }
            "function" => {
                self.lines.insert(function(item, path));
            }
            "constant" => {
                self.lines.insert(format!("const {path}: {}", ty(&inner["type"])));
            }
            "static" => {
                self.lines
                    .insert(format!("static {path}: {}", ty(&inner["type"])));
            }
            "type_alias" => {
                self.lines.insert(format!(
                    "type {path}{} = {}",
                    generics(&inner["generics"]),
                    ty(&inner["type"])
                ));
            }
            "macro" | "proc_macro" => {
                self.lines.insert(format!("macro {path}!"));
            }
            other => {
                self.lines.insert(format!("{other} {path}"));
            }
        }
        self.visiting.remove(&format!("{path}#{id}"));
    }

    fn reexport(&mut self, use_: &Value, module: &str) {
        let name = use_["name"].as_str().unwrap_or("_");
        if use_["is_glob"] == true {
            // `pub use x::*`: the items of x under this module.
            if let Some(target) = self.item(&use_["id"]) {
                for child in target["inner"]["module"]["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(child_item) = self.item(child)
                        && !matches!(kind_name(child_item), "use" | "impl")
                    {
                        let child_name = child_item["name"].as_str().unwrap_or("_").to_owned();
                        self.walk(child, &format!("{module}::{child_name}"));
                    }
                }
            }
            return;
        }
        let path = format!("{module}::{name}");
        match self.item(&use_["id"]) {
            Some(target) if target["crate_id"] == 0 => self.walk(&use_["id"], &path),
            _ => {
                self.lines.insert(format!(
                    "pub use {path} = {}",
                    use_["source"].as_str().unwrap_or("?")
                ));
            }
        }
    }

    fn field(&mut self, id: &Value, owner: &str) {
        if let Some(f) = self.item(id) {
            let name = f["name"].as_str().unwrap_or("_");
            self.lines.insert(format!(
                "field {owner}::{name}: {}",
                ty(&f["inner"]["struct_field"])
            ));
        }
    }

    fn variant(&mut self, id: &Value, owner: &str) {
        let Some(v) = self.item(id) else { return };
        let name = v["name"].as_str().unwrap_or("_");
        let kind = &v["inner"]["variant"]["kind"];
        let shape = if let Some(fields) = kind.get("tuple").and_then(Value::as_array) {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| match self.item(f) {
                    Some(f) => ty(&f["inner"]["struct_field"]),
                    None => "_".to_owned(),
                })
                .collect();
            format!("({})", fields.join(", "))
        } else if let Some(s) = kind.get("struct") {
            let fields: Vec<String> = s["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| self.item(f))
                .map(|f| {
                    format!(
                        "{}: {}",
                        f["name"].as_str().unwrap_or("_"),
                        ty(&f["inner"]["struct_field"])
                    )
                })
                .collect();
            format!(" {{ {} }}", fields.join(", "))
        } else {
            String::new()
        };
        self.lines.insert(format!("variant {owner}::{name}{shape}"));
    }

    /// Inherent methods and the traits implemented (no auto traits, no blanket implementations).
    fn impls(&mut self, inner: &Value, owner: &str) {
        for id in inner["impls"].as_array().into_iter().flatten() {
            let Some(imp) = self.item(id) else { continue };
            let imp = &imp["inner"]["impl"];
            if imp["is_synthetic"] == true || !imp["blanket_impl"].is_null() {
                continue;
            }
            if imp["trait"].is_null() {
                for member in imp["items"].as_array().into_iter().flatten() {
                    if let Some(m) = self.item(member)
                        && m["visibility"] == "public"
                    {
                        let line = self.member(m, owner);
                        self.lines.insert(line);
                    }
                }
            } else {
                let negative = if imp["is_negative"] == true { "!" } else { "" };
                self.lines.insert(format!(
                    "impl{} {negative}{} for {}",
                    generics(&imp["generics"]),
                    path_ty(&imp["trait"]),
                    ty(&imp["for"])
                ));
            }
        }
    }

    fn member(&self, m: &Value, owner: &str) -> String {
        let name = m["name"].as_str().unwrap_or("_");
        let (kind, inner) = kind(m);
        match kind {
            "function" => function(m, &format!("{owner}::{name}")),
            "assoc_const" => format!("const {owner}::{name}: {}", ty(&inner["type"])),
            "assoc_type" => format!("type {owner}::{name}"),
            other => format!("{other} {owner}::{name}"),
        }
    }
}

fn kind_name(item: &Value) -> &str {
    kind(item).0
}

fn kind(item: &Value) -> (&str, &Value) {
    match &item["inner"] {
        Value::Object(map) => map
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v))
            .unwrap_or(("?", &Value::Null)),
        Value::String(s) => (s.as_str(), &Value::Null),
        _ => ("?", &Value::Null),
    }
}

fn function(item: &Value, path: &str) -> String {
    let f = &item["inner"]["function"];
    let header = &f["header"];
    let mut prefix = String::new();
    for (flag, word) in [
        ("is_const", "const "),
        ("is_async", "async "),
        ("is_unsafe", "unsafe "),
    ] {
        if header[flag] == true {
            prefix.push_str(word);
        }
    }
    let inputs: Vec<String> = f["sig"]["inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pair| {
            let name = pair[0].as_str().unwrap_or("_");
            let t = ty(&pair[1]);
            match (name, t.as_str()) {
                ("self", "Self") => "self".to_owned(),
                ("self", "&Self") => "&self".to_owned(),
                ("self", "&mut Self") => "&mut self".to_owned(),
                _ => format!("{name}: {t}"),
            }
        })
        .collect();
    let output = match &f["sig"]["output"] {
        Value::Null => String::new(),
        t => format!(" -> {}", ty(t)),
    };
    format!(
        "{prefix}fn {path}{}({}){output}{}",
        generics(&f["generics"]),
        inputs.join(", "),
        where_clause(&f["generics"])
    )
}

fn generics(g: &Value) -> String {
    let params: Vec<String> = g["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str().unwrap_or("_");
            let kind = &p["kind"];
            if let Some(t) = kind.get("type") {
                if t["is_synthetic"] == true {
                    return None;
                }
                let b = bounds(&t["bounds"]);
                Some(if b.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}: {b}")
                })
            } else if let Some(c) = kind.get("const") {
                Some(format!("const {name}: {}", ty(&c["type"])))
            } else {
                Some(name.to_owned())
            }
        })
        .collect();
    if params.is_empty() {
        String::new()
    } else {
        format!("<{}>", params.join(", "))
    }
}

fn where_clause(g: &Value) -> String {
    let preds: Vec<String> = g["where_predicates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p.get("bound_predicate") {
            Some(b) => format!("{}: {}", ty(&b["type"]), bounds(&b["bounds"])),
            None => compact(p),
        })
        .collect();
    if preds.is_empty() {
        String::new()
    } else {
        format!(" where {}", preds.join(", "))
    }
}

fn bounds(b: &Value) -> String {
    let parts: Vec<String> = b
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            if let Some(t) = b.get("trait_bound") {
                let maybe = if t["modifier"] == "maybe" { "?" } else { "" };
                format!("{maybe}{}", path_ty(&t["trait"]))
            } else if let Some(l) = b.get("outlives") {
                l.as_str().unwrap_or("'_").to_owned()
            } else {
                compact(b)
            }
        })
        .collect();
    parts.join(" + ")
}

fn path_ty(p: &Value) -> String {
    format!("{}{}", p["path"].as_str().unwrap_or("?"), args(&p["args"]))
}

fn args(a: &Value) -> String {
    if let Some(ab) = a.get("angle_bracketed") {
        let mut parts: Vec<String> = ab["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|arg| {
                if let Some(t) = arg.get("type") {
                    ty(t)
                } else if let Some(l) = arg.get("lifetime") {
                    l.as_str().unwrap_or("'_").to_owned()
                } else if let Some(c) = arg.get("const") {
                    c["expr"].as_str().unwrap_or("_").to_owned()
                } else {
                    "_".to_owned()
                }
            })
            .collect();
        for c in ab["constraints"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("_");
            let binding = &c["binding"];
            if let Some(eq) = binding.get("equality") {
                let value = eq.get("type").map(ty).unwrap_or_else(|| compact(eq));
                parts.push(format!("{name} = {value}"));
            } else if let Some(b) = binding.get("constraint") {
                parts.push(format!("{name}: {}", bounds(b)));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("<{}>", parts.join(", "))
        }
    } else if let Some(p) = a.get("parenthesized") {
        let inputs: Vec<String> = p["inputs"].as_array().into_iter().flatten().map(ty).collect();
        let output = if p["output"].is_null() {
            String::new()
        } else {
            format!(" -> {}", ty(&p["output"]))
        };
        format!("({}){output}", inputs.join(", "))
    } else {
        String::new()
    }
}

fn ty(t: &Value) -> String {
    let Some((kind, v)) = t.as_object().and_then(|m| m.iter().next()) else {
        return match t.as_str() {
            Some("infer") => "_".to_owned(),
            _ => compact(t),
        };
    };
    match kind.as_str() {
        "resolved_path" => path_ty(v),
        "generic" | "primitive" => v.as_str().unwrap_or("?").to_owned(),
        "borrowed_ref" => {
            let lifetime = v["lifetime"]
                .as_str()
                .map(|l| format!("{l} "))
                .unwrap_or_default();
            let mutability = if v["is_mutable"] == true { "mut " } else { "" };
            format!("&{lifetime}{mutability}{}", ty(&v["type"]))
        }
        "raw_pointer" => {
            let m = if v["is_mutable"] == true { "mut" } else { "const" };
            format!("*{m} {}", ty(&v["type"]))
        }
        "tuple" => {
            let parts: Vec<String> = v.as_array().into_iter().flatten().map(ty).collect();
            format!("({})", parts.join(", "))
        }
        "slice" => format!("[{}]", ty(v)),
        "array" => format!("[{}; {}]", ty(&v["type"]), v["len"].as_str().unwrap_or("_")),
        "impl_trait" => format!("impl {}", bounds(v)),
        "dyn_trait" => {
            let mut parts: Vec<String> = v["traits"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| path_ty(&p["trait"]))
                .collect();
            if let Some(l) = v["lifetime"].as_str() {
                parts.push(l.to_owned());
            }
            format!("dyn {}", parts.join(" + "))
        }
        "qualified_path" => {
            let trait_ = if v["trait"].is_null() {
                String::new()
            } else {
                format!(" as {}", path_ty(&v["trait"]))
            };
            format!(
                "<{}{trait_}>::{}{}",
                ty(&v["self_type"]),
                v["name"].as_str().unwrap_or("?"),
                args(&v["args"])
            )
        }
        "function_pointer" => {
            let inputs: Vec<String> = v["sig"]["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| ty(&p[1]))
                .collect();
            let output = if v["sig"]["output"].is_null() {
                String::new()
            } else {
                format!(" -> {}", ty(&v["sig"]["output"]))
            };
            format!("fn({}){output}", inputs.join(", "))
        }
        _ => compact(t),
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn listing(doc: &Value) -> String {
    let index = doc["index"].as_object().expect("rustdoc JSON has an index");
    let mut lister = Lister {
        index,
        lines: BTreeSet::new(),
        visiting: HashSet::new(),
    };
    let root = &doc["root"];
    let name = lister
        .item(root)
        .and_then(|r| r["name"].as_str())
        .unwrap_or("crate")
        .to_owned();
    lister.walk(root, &name);
    let mut out = String::new();
    for line in lister.lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn the_public_api_matches_the_committed_listing() {
    let bless = std::env::var_os("KSIAM_BLESS").is_some();
    let mut changed = Vec::new();
    for (package, dir, features) in CRATES {
        let listing = listing(&rustdoc_json(package, features));
        assert!(
            listing.lines().count() > 20,
            "{package}: the listing is implausibly short:\n{listing}"
        );
        let file = root().join("crates").join(dir).join("public-api.txt");
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        if committed == listing {
            continue;
        }
        if bless {
            std::fs::write(&file, &listing).unwrap();
            continue;
        }
        let old: BTreeSet<&str> = committed.lines().collect();
        let new: BTreeSet<&str> = listing.lines().collect();
        let mut diff = String::new();
        for line in old.difference(&new) {
            diff.push_str(&format!("  - {line}\n"));
        }
        for line in new.difference(&old) {
            diff.push_str(&format!("  + {line}\n"));
        }
        changed.push(format!("{package} ({}):\n{diff}", file.display()));
    }
    assert!(
        changed.is_empty(),
        "the public API changed; if that is intended, run `KSIAM_BLESS=1 cargo test -p xtask --test public_api` \
         and commit the listings (a removed or changed line breaks users: that needs a new major version):\n{}",
        changed.join("\n")
    );
}
