//! `ksiam`: the one binary of the stack, and the user tools.
//!
//! Every service mode is a [`wiring::Plan`] (which parts run in the process) over flag groups shared by
//! all modes ([`args`]); `ksiam all` is the plan with every part.

mod args;
mod grpc;
mod modes;
mod remote;
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

#[cfg(test)]
mod tests;
