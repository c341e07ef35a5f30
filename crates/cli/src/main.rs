//! `ksiam`: the one binary of the stack, and the user tools.

mod authz;
mod gateway;
mod grpc;
mod serve;
mod token;
mod webhook;

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
    /// Issue and inspect KubeSphere ServiceAccount tokens.
    #[command(subcommand)]
    Token(token::Command),
    /// Run every service in one process (controllers, webhook, gateway).
    All(serve::AllArgs),
    /// Run the controllers (ServiceAccount tokens, token filler, built-in roles).
    Controller(serve::ControllerArgs),
    /// Run the Pod-injection admission webhook.
    Webhook(webhook::WebhookArgs),
    /// Run the gateway (ks-apiserver replacement) with the authorizer in process.
    Gateway(gateway::GatewayArgs),
    /// Run the authorizer (policy watches, gRPC Authorizer, SubjectAccessReview/TokenReview webhooks).
    Authz(authz::AuthzArgs),
    /// Ask whether a user or ServiceAccount may make a request (exit 0 yes, 1 no, 2 error, 64 usage).
    CanI(authz::CanIArgs),
    /// List the subjects that may make a request, with the bindings that allow it.
    WhoCan(authz::WhoCanArgs),
}

/// `EX_USAGE` from sysexits.h.
const EXIT_USAGE: u8 = 64;

/// Runs a long-running service on a multi-threaded runtime.
fn service(
    log_format: &str,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // One TLS crypto provider everywhere: aws-lc-rs.
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        anyhow::bail!("cannot install the aws-lc-rs TLS crypto provider");
    }
    serve::init_logging(log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Rego-override evaluations (bounded, but user-written) tell tokio that the worker is about to block, so
/// the other tasks of that worker move on; rule-only decisions never take this path.
fn rego_off_the_async_workers(eval: &mut dyn FnMut() -> bool) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(eval)
        }
        _ => eval(),
    }
}

fn main() -> ExitCode {
    ksiam_rbac::rego::set_evaluation_wrapper(rego_off_the_async_workers);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::CanI(args) => return authz::can_i(args, &mut std::io::stdout()),
        Command::WhoCan(args) => return authz::who_can(args, &mut std::io::stdout()),
        Command::Authz(args) => service(&args.log_format.clone(), authz::run(args)),
        Command::Token(cmd) => token::run(cmd, &mut std::io::stdout()),
        Command::All(args) => service(&args.common.log_format.clone(), serve::all(args)),
        Command::Controller(args) => service(&args.common.log_format.clone(), serve::controller(args)),
        Command::Webhook(args) => service(&args.log_format.clone(), webhook::run(args)),
        Command::Gateway(args) => service(&args.common.log_format.clone(), gateway::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
