//! `cargo xtask named-tests` (a step of `cargo xtask test`): every test the documentation names as proof
//! exists, so a doc that cites a deleted or renamed test fails CI.
//!
//! What counts as naming a test:
//! - every backticked name in a table column whose header starts with "test" (ARCHITECTURE.md's deliberate
//!   differences, docs/security.md's classes, docs/benchmarks.md's e2e measurements);
//! - anywhere in those documents, a backticked name with a `tests::` module in it.
//!
//! A name resolves when it is, in a `.rs` file of the workspace (outside `target/`):
//! - `file.rs` or `dir/file.rs`: a file with that path suffix holding at least one `#[test]`;
//! - `file.rs::name`: such a file with a test function `name`;
//! - `a::b::name`: a test function `name` in a file where `a` and `b` are each a path component or an inline
//!   `mod`;
//! - `a::b::*`, `a::tests` or a bare `module`: a file or inline module of that name holding tests;
//! - a bare `name`: a test function of that name anywhere.
//!
//! Backticked texts that are not names (`/metrics`, commands with spaces) are not checked.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::progress::say;

/// The documents whose named tests must exist.
pub const DOCS: [&str; 4] = [
    "ARCHITECTURE.md",
    "README.md",
    "docs/security.md",
    "docs/benchmarks.md",
];

/// `cargo xtask named-tests`.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let index = Index::scan(root)?;
    let mut checked = 0;
    let mut missing = Vec::new();
    for doc in DOCS {
        let text = fs::read_to_string(root.join(doc)).with_context(|| format!("reading {doc}"))?;
        for (line, name) in named_tests(&text) {
            checked += 1;
            if !index.resolves(&name) {
                missing.push(format!("{doc}:{line}: `{name}` names no test"));
            }
        }
    }
    say(format!(
        "named tests: {checked} names in {} documents checked against {} test functions in {} files",
        DOCS.len(),
        index.tests(),
        index.files.len()
    ));
    if !missing.is_empty() {
        bail!(
            "{} test names in the documentation resolve to no test:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
    Ok(())
}

/// `(line number, name)` of every test the document names.
pub fn named_tests(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut test_columns: Vec<usize> = Vec::new();
    let mut in_code = false;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let is_row = trimmed.starts_with('|');
        if !is_row {
            test_columns.clear();
        } else if lines.get(i + 1).is_some_and(|next| is_separator(next.trim())) {
            // A header row: which columns hold tests.
            test_columns = cells(trimmed)
                .iter()
                .enumerate()
                .filter(|(_, c)| c.trim().to_ascii_lowercase().starts_with("test"))
                .map(|(n, _)| n)
                .collect();
        } else if !is_separator(trimmed) {
            for (n, cell) in cells(trimmed).iter().enumerate() {
                if test_columns.contains(&n) {
                    out.extend(spans(cell).filter(|s| is_name(s)).map(|s| (i + 1, s.to_owned())));
                }
            }
        }
        // Anywhere: a unit-test path.
        for s in spans(line) {
            if s.contains("tests::")
                && is_name(s)
                && !out.iter().any(|(l, n): &(usize, String)| *l == i + 1 && n == s)
            {
                out.push((i + 1, s.to_owned()));
            }
        }
    }
    out
}

fn is_separator(line: &str) -> bool {
    line.starts_with('|') && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// The cells of a table row (a `|` inside backticks does not split).
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = vec![String::new()];
    let mut code = false;
    for c in inner.chars() {
        match c {
            '`' => {
                code = !code;
                out.last_mut().unwrap_or(&mut String::new()).push(c);
            }
            '|' if !code => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// The backticked spans of `text`.
fn spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// A Rust path, a file name or a path to a file: no spaces, not a URL path.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.ends_with("::")
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_:./*-".contains(c))
        && (s.contains("::") || s.ends_with(".rs") || !s.contains(['.', '/', '-']))
}

/// The test functions of every `.rs` file of the workspace.
#[derive(Debug, Default)]
pub struct Index {
    files: Vec<SourceFile>,
}

#[derive(Debug)]
struct SourceFile {
    /// Relative to the workspace root, `/`-separated.
    path: String,
    /// Path components (directories and the file stem) and inline module names.
    modules: Vec<String>,
    tests: Vec<String>,
}

impl Index {
    /// Reads every `.rs` file under `root` (except `target/` and hidden directories).
    pub fn scan(root: &Path) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let path: PathBuf = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if path.is_dir() {
                    if name != "target" && !name.starts_with('.') {
                        dirs.push(path);
                    }
                } else if name.ends_with(".rs") {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .replace('\\', "/");
                    files.push((rel, fs::read_to_string(&path).unwrap_or_default()));
                }
            }
        }
        files.sort();
        Ok(Self::from_sources(files))
    }

    /// An index of `(path, source)` pairs.
    pub fn from_sources(sources: impl IntoIterator<Item = (String, String)>) -> Self {
        let files = sources
            .into_iter()
            .map(|(path, text)| {
                let mut modules: Vec<String> = path
                    .trim_end_matches(".rs")
                    .split('/')
                    .map(str::to_owned)
                    .collect();
                modules.extend(inline_modules(&text));
                SourceFile {
                    tests: test_functions(&text),
                    path,
                    modules,
                }
            })
            .collect();
        Self { files }
    }

    fn tests(&self) -> usize {
        self.files.iter().map(|f| f.tests.len()).sum()
    }

    /// Whether `name` names a test (see the module documentation).
    pub fn resolves(&self, name: &str) -> bool {
        let with_tests = self.files.iter().filter(|f| !f.tests.is_empty());
        // `file.rs` / `dir/file.rs`, possibly followed by `::test`.
        if let Some((file, rest)) = split_file(name) {
            return with_tests.clone().any(|f| {
                path_ends_with(&f.path, file) && (rest.is_empty() || f.tests.iter().any(|t| t == rest))
            });
        }
        let segments: Vec<&str> = name.split("::").collect();
        let (last, modules) = segments.split_last().unwrap_or((&"", &[]));
        let in_modules = |f: &&SourceFile| modules.iter().all(|m| f.modules.iter().any(|x| x == m));
        if *last == "*" {
            return with_tests.clone().any(|f| in_modules(&f));
        }
        // A test function…
        if with_tests
            .clone()
            .filter(in_modules)
            .any(|f| f.tests.iter().any(|t| t == last))
        {
            return true;
        }
        // …or a module holding tests.
        with_tests
            .filter(in_modules)
            .any(|f| f.modules.iter().any(|m| m == last))
    }
}

/// `("dir/file.rs", "test")` for `dir/file.rs::test`, `("file.rs", "")` for `file.rs`.
fn split_file(name: &str) -> Option<(&str, &str)> {
    let end = name.find(".rs")? + 3;
    let (file, rest) = name.split_at(end);
    match rest {
        "" => Some((file, "")),
        r => r.strip_prefix("::").map(|t| (file, t)),
    }
}

fn path_ends_with(path: &str, suffix: &str) -> bool {
    path == suffix || path.ends_with(&format!("/{suffix}"))
}

/// Names of `mod x {` blocks.
fn inline_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            let rest = l.strip_prefix("mod ")?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest[name.len()..].trim_start().starts_with('{').then_some(name)
        })
        .collect()
}

/// Functions carrying a test attribute (`#[test]`, `#[tokio::test…]`, also inside `proptest!`).
fn test_functions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = false;
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with("#[test]") || l.starts_with("#[tokio::test") {
            pending = true;
            continue;
        }
        if !pending {
            continue;
        }
        if l.starts_with("#[") || l.starts_with("//") || l.is_empty() {
            continue;
        }
        let l = l.strip_prefix("async ").unwrap_or(l);
        if let Some(rest) = l.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
        pending = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# Doc

| Upstream | ksiam | Test |
|---|---|---|
| a | b | `request::tests::parses_paths` |
| a | b | `missing_one`, and `lib.rs` comment |
| a | `not::a::test::column` | `service.rs::webhook_boundary`, `/metrics` |
| a | b | `attacks::boundary::*`, `grpc_auth` unit tests |

Prose: `load::tests::deleted_test`, `tests::` and `not_checked_in_prose`.

```text
| x | test |
|---|---|
| y | `in_a_code_block` |
```
";

    fn index() -> Index {
        Index::from_sources([
            (
                "crates/rbac/src/request.rs".to_owned(),
                "fn x() {}\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn parses_paths() {}\n}\n".to_owned(),
            ),
            (
                "crates/authz/tests/service.rs".to_owned(),
                "#[tokio::test(flavor = \"multi_thread\")]\nasync fn webhook_boundary() {}\n".to_owned(),
            ),
            (
                "tests/tests/attacks/boundary.rs".to_owned(),
                "#[tokio::test]\n// a comment\nasync fn hidden() {}\n".to_owned(),
            ),
            (
                "crates/token/src/grpc_auth.rs".to_owned(),
                "mod tests {\n#[test]\nfn allow_list() {}\n}\n".to_owned(),
            ),
            (
                "crates/rbac/src/lib.rs".to_owned(),
                "pub fn lib() {}\n".to_owned(),
            ),
        ])
    }

    #[test]
    fn names_come_from_test_columns_and_unit_test_paths() {
        let names: Vec<String> = named_tests(DOC).into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            names,
            [
                "request::tests::parses_paths",
                "missing_one",
                "lib.rs",
                "service.rs::webhook_boundary",
                "attacks::boundary::*",
                "grpc_auth",
                "load::tests::deleted_test",
            ]
        );
    }

    #[test]
    fn only_existing_tests_resolve() {
        let index = index();
        for ok in [
            "request::tests::parses_paths",
            "service.rs::webhook_boundary",
            "attacks::boundary::*",
            "attacks::boundary::hidden",
            "boundary.rs",
            "tests/attacks/boundary.rs",
            "grpc_auth",
            "parses_paths",
            "request::tests",
        ] {
            assert!(index.resolves(ok), "{ok}");
        }
        for missing in [
            "missing_one",
            "load::tests::deleted_test",
            "lib.rs",
            "service.rs::other",
            "attacks::other::*",
            "token::tests::parses_paths",
            "other/boundary.rs",
            "lib",
        ] {
            assert!(!index.resolves(missing), "{missing}");
        }
    }
}
