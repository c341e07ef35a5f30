//! The command line's own tests: clap's consistency checks, and README's flag table generated from it.

use clap::CommandFactory as _;

#[test]
fn the_command_line_is_consistent() {
    super::Cli::command().debug_assert();
}

const BEGIN: &str = "<!-- flags:begin (generated: KSIAM_BLESS=1 cargo test -p ksiam flags) -->\n";
const END: &str = "<!-- flags:end -->";

/// README's flag table is the command line's (rewritten with `KSIAM_BLESS=1`).
#[test]
fn readme_flags_table_matches_the_command_line() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let table = flag_table();
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no {BEGIN:?} … {END:?} section");
    };
    let current = &readme[start + BEGIN.len()..end];
    if current != table {
        if std::env::var_os("KSIAM_BLESS").is_some() {
            let updated = format!("{}{BEGIN}{table}{}", &readme[..start], &readme[end..]);
            std::fs::write(&path, updated).unwrap();
        } else {
            panic!("README.md's flag table is stale; run KSIAM_BLESS=1 cargo test -p ksiam flags\n{table}");
        }
    }
    // Every environment variable maps to one flag, the same in every mode.
    let mut seen = std::collections::BTreeMap::new();
    for line in table.lines().skip(2) {
        let cols: Vec<&str> = line.split(" | ").collect();
        if !cols[1].is_empty() {
            assert_eq!(
                seen.insert(cols[1].to_owned(), cols[0].to_owned()),
                None,
                "{line}"
            );
        }
    }
}

/// The README's table of every service flag: its environment variable, default, and the modes that take it.
fn flag_table() -> String {
    use clap::CommandFactory as _;
    use std::collections::BTreeMap;
    let root = super::Cli::command();
    let modes: Vec<(String, clap::Command)> = root
        .get_subcommands()
        .flat_map(|c| {
            if c.get_name() == "token" {
                c.get_subcommands()
                    .filter(|s| s.get_name() == "serve")
                    .map(|s| ("token serve".to_owned(), s.clone()))
                    .collect::<Vec<_>>()
            } else if ["all", "controller", "webhook", "gateway", "authz"].contains(&c.get_name()) {
                vec![(c.get_name().to_owned(), c.clone())]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut rows: BTreeMap<String, (String, String, String, Vec<String>)> = BTreeMap::new();
    for (mode, cmd) in &modes {
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let env = arg
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let default = arg
                .get_default_values()
                .iter()
                .map(|v| format!("`{}`", v.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(", ");
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            // The first sentence: up to a ". " that starts a capitalised one.
            let first = help
                .match_indices(". ")
                .find(|(i, _)| help[i + 2..].starts_with(|c: char| c.is_uppercase()))
                .map_or(help.as_str(), |(i, _)| &help[..i]);
            let help = first.trim_end_matches('.').replace('|', "\\|");
            let row = rows
                .entry(long.to_owned())
                .or_insert_with(|| (env, default, help, Vec::new()));
            row.3.push(mode.clone());
        }
    }
    let mut out = String::from("| flag | environment | default | modes | what |\n|---|---|---|---|---|\n");
    for (long, (env, default, help, modes)) in rows {
        out += &format!(
            "| `--{long}` | {env} | {default} | {} | {help} |\n",
            modes.join(", ")
        );
    }
    out
}
