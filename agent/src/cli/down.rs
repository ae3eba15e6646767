//! `allowgate down`: stop enforcing: detach every program and remove every pin.

use std::process::ExitCode;

use anyhow::bail;

use crate::dataplane::detach_all;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (for `bpffs_dir` and `interfaces`).
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
}

impl Args {
    pub fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

pub fn execute(args: Args, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (config, _) = super::load_config(args.config.as_deref())?;
    // A running daemon would go on believing it enforces: it goes first.
    if crate::control::client::call(socket, &crate::control::protocol::Request::Status).is_ok() {
        bail!(
            "a daemon answers on {}: stop it first (systemctl stop allowgate), then run down",
            socket.display()
        );
    }
    if !config.bpffs_dir.exists() {
        println!("nothing to do: no pins under {}", config.bpffs_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let problems = detach_all(&config.bpffs_dir, &config.interfaces);
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    println!(
        "detached and unpinned {}: the interfaces pass everything again",
        config.bpffs_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
