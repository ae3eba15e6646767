//! `allowgate enable`, `disable`, `mode` and `confirm`: runtime changes through the
//! daemon, each compiled and swapped in whole, persisted across restarts.

use std::{net::IpAddr, path::Path, process::ExitCode};

use anyhow::bail;

use crate::{
    control::{
        client,
        protocol::{ChangeOptions, Changed, Request, Response, SshSession},
    },
    policy::Mode,
};

/// What every change takes.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// Roll the change back unless `allowgate confirm` follows within SECONDS (like
    /// `netplan try` or `commit confirmed`).
    #[arg(long, value_name = "SECONDS")]
    confirm: Option<u64>,
    /// Apply even though it would cut off the SSH session this command runs in.
    #[arg(long)]
    force: bool,
    /// The config whose `socket` names the daemon to ask.
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
}

impl ChangeArgs {
    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn options(&self) -> ChangeOptions {
        ChangeOptions {
            confirm_secs: self.confirm,
            force: self.force,
            ssh: ssh_session(),
        }
    }
}

/// The SSH session this command runs in, from `SSH_CONNECTION` ("client port server port").
pub(super) fn ssh_session() -> Option<SshSession> {
    let conn = std::env::var("SSH_CONNECTION").ok()?;
    let words: Vec<&str> = conn.split_whitespace().collect();
    let client: IpAddr = words.first()?.parse().ok()?;
    let server_port: u16 = words.get(3)?.parse().ok()?;
    Some(SshSession { client, server_port })
}

/// `allowgate confirm`.
#[derive(Debug, clap::Args)]
pub struct ConfirmArgs {
    /// The config whose `socket` names the daemon to ask.
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct EnableArgs {
    /// Data centers to enable (or disable).
    #[arg(value_name = "REGION")]
    regions: Vec<String>,
    /// Features to enable (or disable) too (repeatable).
    #[arg(long = "feature", short = 'f', value_name = "FEATURE")]
    features: Vec<String>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

#[derive(Debug, clap::Args)]
pub struct ModeArgs {
    #[arg(value_enum)]
    mode: ModeArg,
    #[command(flatten)]
    pub change: ChangeArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Enforce,
    Monitor,
}

pub fn enable(args: EnableArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    toggle(args, socket, true)
}

pub fn disable(args: EnableArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    toggle(args, socket, false)
}

fn toggle(args: EnableArgs, socket: &Path, on: bool) -> anyhow::Result<ExitCode> {
    if args.regions.is_empty() && args.features.is_empty() {
        if on {
            bail!("name a region to enable (allowgate regions lists them), or --feature");
        }
        bail!("name a region to disable, or --feature");
    }
    let (regions, features, options) = (args.regions, args.features, args.change.options());
    let request = if on {
        Request::Enable {
            regions,
            features,
            options,
        }
    } else {
        Request::Disable {
            regions,
            features,
            options,
        }
    };
    send(socket, request)
}

pub fn mode(args: ModeArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    let mode = match args.mode {
        ModeArg::Enforce => Mode::Enforce,
        ModeArg::Monitor => Mode::Monitor,
    };
    send(
        socket,
        Request::Mode {
            mode,
            options: args.change.options(),
        },
    )
}

pub fn confirm(socket: &Path) -> anyhow::Result<ExitCode> {
    send(socket, Request::Confirm)
}

/// A change in force: its warnings on stderr, then one line with what is enforced now
/// (`prefix` says what made it, as `reload` does).
pub(super) fn print_changed(c: &Changed, prefix: &str) {
    for w in &c.warnings {
        eprintln!("allowgate: warning: {w}");
    }
    println!(
        "{prefix}generation {}: regions [{}], features [{}], mode {} (applied in {:.1} ms)",
        c.generation,
        c.regions.join(", "),
        c.features.join(", "),
        c.mode.as_str(),
        c.apply_micros as f64 / 1000.0
    );
}

fn send(socket: &Path, request: Request) -> anyhow::Result<ExitCode> {
    match client::call(socket, &request)? {
        Response::Changed(c) => {
            print_changed(&c, "");
            if let Some(secs) = c.rollback_in_secs {
                println!("rolls back in {secs} s unless `allowgate confirm` follows");
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::Confirmed { generation } => {
            println!("confirmed: generation {generation} stays");
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}
