//! Log setup: plain text or JSON lines on stderr, filtered by `RUST_LOG`.

use clap::{Args, ValueEnum};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// The logging flags of every service.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format (the filter is `RUST_LOG`; default `ksiam=info,warn`).
    #[arg(long, env = "KSIAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// The filter used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "ksiam=info,ksiam_controller=info,ksiam_runtime=info,warn";

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Plain => builder.try_init(),
    };
}
