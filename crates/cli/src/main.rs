//! `ksiam`: the one binary of the stack, and the user tools.
//!
//! Every service mode is a [`wiring::Plan`] (which parts run in the process) over flag groups shared by
//! all modes ([`args`]); `ksiam all` is the plan with every part.

mod args;
mod grpc;
mod modes;
mod token;
mod tools;
mod wiring;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the request paths allocate many small, short-lived buffers (HTTP/2
/// frames, headers, protobuf strings), where glibc's allocator was about an eighth of a gRPC server's CPU
/// in a profile (`docs/benchmarks.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ksiam",
    version,
    about = "KubeSphere-compatible ServiceAccounts and IAM authorization"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process (the union of the modes below).
    All(Box<modes::AllCommand>),
    /// Run the controllers (ServiceAccount tokens, token filler, built-in roles) while holding the Lease.
    Controller(Box<modes::ControllerCommand>),
    /// Run the admission webhooks (Pod injection, validating checks) with the policy in process.
    Webhook(Box<modes::WebhookCommand>),
    /// Run the gateway (ks-apiserver replacement), with the policy in process or a remote authorizer.
    Gateway(Box<modes::GatewayCommand>),
    /// Run the authorizer (policy watches, gRPC Authorizer, SubjectAccessReview/TokenReview webhooks).
    Authz(Box<modes::AuthzCommand>),
    /// Issue and inspect KubeSphere ServiceAccount tokens; `ksiam token serve` runs the token service.
    #[command(subcommand)]
    Token(token::Command),
    /// Ask whether a user or ServiceAccount may make a request (exit 0 yes, 1 no, 2 error, 64 usage).
    CanI(tools::CanIArgs),
    /// List the subjects that may make a request, with the bindings that allow it.
    WhoCan(tools::WhoCanArgs),
}

/// `EX_USAGE` from sysexits.h.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { EXIT_USAGE } else { 0 });
        }
    };
    let result = match cli.command {
        Command::CanI(args) => return tools::can_i(args, &mut std::io::stdout()),
        Command::WhoCan(args) => return tools::who_can(args, &mut std::io::stdout()),
        Command::Token(token::Command::Serve(args)) => modes::serve(args.plan()),
        Command::Token(cmd) => token::run(cmd, &mut std::io::stdout()),
        Command::All(args) => modes::serve(args.plan()),
        Command::Controller(args) => modes::serve(args.plan()),
        Command::Webhook(args) => modes::serve(args.plan()),
        Command::Gateway(args) => modes::serve(args.plan()),
        Command::Authz(args) => args.plan().and_then(modes::serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The README's table of every service flag: its environment variable, default, and the modes that take it.
#[cfg(test)]
fn flag_table() -> String {
    use clap::CommandFactory as _;
    use std::collections::BTreeMap;
    let root = Cli::command();
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

#[cfg(test)]
mod tests {
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
        let table = super::flag_table();
        let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
            panic!("README.md has no {BEGIN:?} … {END:?} section");
        };
        let current = &readme[start + BEGIN.len()..end];
        if current != table {
            if std::env::var_os("KSIAM_BLESS").is_some() {
                let updated = format!("{}{BEGIN}{table}{}", &readme[..start], &readme[end..]);
                std::fs::write(&path, updated).unwrap();
            } else {
                panic!(
                    "README.md's flag table is stale; run KSIAM_BLESS=1 cargo test -p ksiam flags\n{table}"
                );
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
}
