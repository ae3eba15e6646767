//! The command line: one file per verb, each with `execute()`.

mod catalog;
mod change;
pub mod check;
mod daemon;
mod down;
mod events;
mod regions;
mod reload;
mod show;
pub mod status;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

use crate::{
    catalog::{Catalog, Feature},
    policy::{Config, Policy, Selection, config::DEFAULT_SOCKET},
};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "allowgate",
    version,
    about = "Enforce a cloud service's published network allow list at the NIC (XDP + TC)",
    long_about = "Enforce a cloud service's published network allow list at the NIC.\n\n\
        allowgate ships the catalog of Microsoft Defender for Cloud Apps' \"Network requirements\" \
        page: pick data centers (regions) and features, and an XDP program (ingress) and a TC \
        program (egress) pass exactly what the page lists, plus the host's essentials and your \
        own additions, and drop everything else."
)]
pub struct Cli {
    /// The daemon's control socket [default: the config's `socket`, else
    /// /run/allowgate/control.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the data centers, what each lists per feature, and which are enabled.
    Regions(regions::Args),
    /// Show the compiled allow list (works without a daemon).
    Show(show::Args),
    /// Would a connection to or from ADDR be allowed, and by which rules?
    ///
    /// Exit status: 0 allowed, 1 denied, 2 error (as grep).
    Check(check::Args),
    /// Run the service: attach, enforce, keep enforcing.
    Daemon(daemon::Args),
    /// What is enforced now: mode, interfaces, selection, entries, counters.
    Status(status::Args),
    /// Stop enforcing: detach the programs and remove every pin.
    Down(down::Args),
    /// Enable data centers (and features) at runtime; persisted across restarts.
    Enable(change::EnableArgs),
    /// Disable data centers (or features) at runtime; persisted across restarts.
    Disable(change::EnableArgs),
    /// Switch between enforce and monitor (judge and count, drop nothing).
    Mode(change::ModeArgs),
    /// Keep the change applied with --confirm; without this it rolls back.
    Confirm(change::ConfirmArgs),
    /// Have the daemon read its config file again, and say whether it took it.
    ///
    /// What SIGHUP does, with the verdict: exit 0 once the new policy is in force, 1
    /// with the reason in one line when the daemon refuses the file (the policy in
    /// force stays) or does not answer. The unit's ExecReload, so `systemctl reload
    /// allowgate` fails on a refused config too. Only who may change policy may reload.
    Reload(reload::Args),
    /// Follow drop (or would-drop) events as they happen.
    Events(events::Args),
    /// Work with catalogs made from the service's page.
    #[command(subcommand)]
    Catalog(catalog::Command),
}

impl Cli {
    /// The socket to ask: --socket, else the config's (`config`, or the default config
    /// when it exists), else the default.
    fn socket_for(&self, config: Option<&Path>) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        load_config(config)
            .map(|(c, _)| c.socket)
            .unwrap_or_else(|_| PathBuf::from(DEFAULT_SOCKET))
    }

    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let socket = match &self.command {
            Command::Status(a) => self.socket_for(a.config()),
            Command::Check(a) => self.socket_for(a.config()),
            Command::Down(a) => self.socket_for(a.config()),
            Command::Regions(a) => self.socket_for(a.config()),
            Command::Show(a) => self.socket_for(a.config()),
            Command::Enable(a) | Command::Disable(a) => self.socket_for(a.change.config()),
            Command::Mode(a) => self.socket_for(a.change.config()),
            Command::Confirm(a) => self.socket_for(a.config.as_deref()),
            Command::Reload(a) => self.socket_for(a.config.as_deref()),
            Command::Events(a) => self.socket_for(a.config.as_deref()),
            Command::Catalog(c) => self.socket_for(c.config()),
            _ => self.socket_for(None),
        };
        match self.command {
            Command::Regions(args) => regions::execute(args, &socket),
            Command::Show(args) => show::execute(args, &socket),
            Command::Check(args) => match check::execute(args, &socket) {
                Ok(code) => Ok(code),
                Err(err) => {
                    eprintln!("allowgate: {err:#}");
                    Ok(ExitCode::from(EXIT_USAGE))
                }
            },
            Command::Catalog(cmd) => catalog::execute(cmd, &socket),
            Command::Daemon(args) => daemon::execute(args),
            Command::Status(args) => status::execute(args, &socket),
            Command::Down(args) => down::execute(args, &socket),
            Command::Enable(args) => change::enable(args, &socket),
            Command::Disable(args) => change::disable(args, &socket),
            Command::Mode(args) => change::mode(args, &socket),
            Command::Confirm(_) => change::confirm(&socket),
            Command::Reload(args) => reload::execute(args, &socket),
            Command::Events(args) => events::execute(args, &socket),
        }
    }
}

/// Options every offline verb shares: where the config is and what to select.
#[derive(Debug, clap::Args)]
pub struct SelectionArgs {
    /// A data center to select (repeatable): us1, us2, us3, eu1, eu2, gov-us1.
    #[arg(long = "region", short = 'r', value_name = "REGION")]
    pub regions: Vec<String>,
    /// A feature to select (repeatable): portal, proxy, siem, app-connector, dlp, mail,
    /// log-collector. Default: the config's, else portal, proxy, siem.
    #[arg(long = "feature", short = 'f', value_name = "FEATURE")]
    pub features: Vec<String>,
    /// The config file [default: /etc/allowgate/config.toml when it exists].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

pub use crate::policy::config::load_config;

impl SelectionArgs {
    /// The selection from the flags, else from the config; with the policy it makes.
    pub fn policy(&self) -> anyhow::Result<(Policy, Config, Catalog)> {
        let (config, catalog) = load_config(self.config.as_deref())?;
        let selection = self.selection(&config, &catalog)?;
        let dns = config.dns_servers();
        let policy = Policy::build(&catalog, &selection, &config, &dns);
        Ok((policy, config, catalog))
    }

    fn selection(&self, config: &Config, catalog: &Catalog) -> anyhow::Result<Selection> {
        let regions = if self.regions.is_empty() {
            config.regions.clone()
        } else {
            let mut ids = Vec::new();
            for name in &self.regions {
                let id = catalog.region(name)?.id.clone();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        };
        let features = if self.features.is_empty() {
            config.features.clone()
        } else {
            let mut list = Vec::new();
            for name in &self.features {
                let f: Feature = name.parse()?;
                if !list.contains(&f) {
                    list.push(f);
                }
            }
            list
        };
        Ok(Selection { regions, features })
    }
}

/// Pads each column of `rows` to its widest cell, two spaces apart.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
