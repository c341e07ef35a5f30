//! `ksiam-bench`: writes the peer-comparison data and decides requests with ksiam-rbac, the Rust side of
//! `cargo xtask conformance` (the Go side is `benches/peers/k8s-rbac -mode decide`).
//!
//! ```text
//! ksiam-bench write --out DIR --sizes 10,1000 --requests 10000
//! ksiam-bench decide --policy DIR/policy-10.json --requests DIR/requests-10.json   # one allow/deny line each
//! ```

use std::{
    io::{BufWriter, Write as _},
    path::PathBuf,
};

use clap::{Parser, Subcommand};
use ksiam_rbac::generate::k8s::AccessRequest;

#[derive(Parser)]
#[command(name = "ksiam-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes policies, benchmark cases, random requests and the benchmark token.
    Write {
        #[arg(long)]
        out: PathBuf,
        /// Policy sizes (bindings), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,1000,100000")]
        sizes: Vec<usize>,
        /// Random requests per size (0: none).
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
    },
    /// Prints ksiam-rbac's `allow`/`deny` for every request of a request file.
    Decide {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        requests: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Write { out, sizes, requests } => ksiam_bench::write(&out, &sizes, requests),
        Command::Decide { policy, requests } => {
            let policy = ksiam_bench::read_policy(&policy)?;
            let requests: Vec<AccessRequest> = serde_json::from_slice(&std::fs::read(&requests)?)?;
            let mut out = BufWriter::new(std::io::stdout().lock());
            for allowed in ksiam_bench::decide(&policy, &requests) {
                writeln!(out, "{}", if allowed { "allow" } else { "deny" })?;
            }
            out.flush()?;
            Ok(())
        }
    }
}
