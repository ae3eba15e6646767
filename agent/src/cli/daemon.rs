//! `allowgate daemon`: the service.

use std::{path::PathBuf, process::ExitCode};

use crate::policy::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    // Logs go to stderr, which journald keeps; RUST_LOG picks the level.
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // journald stamps each line and has no use for colours.
        builder.with_env_filter(filter()).with_ansi(false).without_time().init();
    } else {
        use std::io::IsTerminal as _;
        builder
            .with_env_filter(filter())
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    crate::daemon::run(&args.config)?;
    Ok(ExitCode::SUCCESS)
}
