//! The `allowgate` binary: parse the arguments, run the verb, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = allowgate::cli::Cli::parse();
    match cli.execute() {
        Ok(code) => code,
        Err(err) => {
            // One line: what failed and why, the whole chain of causes.
            eprintln!("allowgate: {err:#}");
            ExitCode::from(allowgate::cli::EXIT_FAILURE)
        }
    }
}
