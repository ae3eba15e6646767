//! `allowgate reload`: the daemon reads its config file again and answers with its
//! verdict, so a refused config fails the command (and `systemctl reload`, whose
//! ExecReload it is) instead of only saying so in the journal.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::bail;

use crate::control::{
    client::{self, ClientError},
    protocol::{Request, Response},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config whose `socket` names the daemon to ask. The daemon reads the file it
    /// was started with (`allowgate daemon --config`), whatever this names.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

pub fn execute(args: Args, socket: &Path) -> anyhow::Result<ExitCode> {
    let response = match client::call(socket, &Request::Reload) {
        Ok(r) => r,
        // The socket came from the config when it loads, else it is the default: a
        // config that does not load is then the likelier reason nothing answers.
        Err(e @ ClientError::NotRunning { .. }) => match super::load_config(args.config.as_deref()) {
            Ok(_) => return Err(e.into()),
            Err(config) => bail!("{e}; and the config does not load, so its `socket` is unknown: {config:#}"),
        },
        Err(e) => return Err(e.into()),
    };
    match response {
        Response::Changed(c) => {
            println!(
                "reloaded: generation {}: regions [{}], features [{}], mode {} (applied in {:.1} ms)",
                c.generation,
                c.regions.join(", "),
                c.features.join(", "),
                c.mode.as_str(),
                c.apply_micros as f64 / 1000.0
            );
            if let Some(secs) = c.rollback_in_secs {
                println!("an earlier change still rolls back in {secs} s unless `allowgate confirm` follows");
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}
