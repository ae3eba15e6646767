//! Project tasks that need more than `cargo`: every test (as root), the demo, the bench.

mod demo;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Every test: unit, property, test-run verdicts, netns end to end (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job: the agent on one end of a veth pair between two demo namespaces.
    Demo,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Test { args } => test(&args),
        Task::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the BPF and netns tests load programs and make namespaces: run `cargo xtask test` as root");
    }
    let status = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}
