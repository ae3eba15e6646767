//! `allowgate check`: would this connection be allowed, and by which rules?

use std::{net::IpAddr, process::ExitCode};

use anyhow::bail;

use super::SelectionArgs;
use crate::{
    catalog::{Direction, Proto},
    control::{
        client::{self, ClientError},
        protocol::{Request, Response},
    },
    policy::explain::{Explanation, explain},
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CheckProto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CheckDirection {
    /// ADDR connects in to this host.
    In,
    /// This host connects out to ADDR.
    Out,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The remote address (IPv4 or IPv6).
    addr: String,
    /// The service port: ADDR's port going out, this host's coming in. Without it, any
    /// port of the protocol.
    #[arg(long, short)]
    port: Option<u16>,
    #[arg(long, value_enum, default_value = "tcp")]
    proto: CheckProto,
    #[arg(long, short, value_enum, default_value = "out")]
    direction: CheckDirection,
    #[command(flatten)]
    selection: SelectionArgs,
}

impl Args {
    pub fn config(&self) -> Option<&std::path::Path> {
        self.selection.config.as_deref()
    }
}

pub fn execute(args: Args, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Ok(addr) = args.addr.parse::<IpAddr>() else {
        bail!(
            "`{}` is not an IP address: check takes addresses; the agent resolves names itself",
            args.addr
        );
    };
    let direction = match args.direction {
        CheckDirection::Out => Direction::Egress,
        CheckDirection::In => Direction::Ingress,
    };
    let proto = match args.proto {
        CheckProto::Tcp => Proto::Tcp,
        CheckProto::Udp => Proto::Udp,
        CheckProto::Icmp => Proto::Icmp,
    };
    // With no selection of its own, a running daemon's live selection is the one asked about.
    let s = &args.selection;
    if s.regions.is_empty() && s.features.is_empty() && s.config.is_none() {
        let request = Request::Check {
            addr,
            port: args.port,
            proto,
            direction,
        };
        match client::call(socket, &request) {
            Ok(Response::Check { explanation }) => {
                print!("{}", render(&explanation));
                return Ok(ExitCode::from(if explanation.allowed { 0 } else { 1 }));
            }
            Ok(Response::Error { message }) => bail!("{message}"),
            Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
            Err(ClientError::NotRunning { .. }) => {}
            // Answering from the default config instead would contradict the daemon.
            Err(e @ ClientError::PermissionDenied { .. }) => bail!(
                "{e}: the live selection cannot be asked; run as root or as a member of the daemon's `socket_group`, or check offline with --config or --region"
            ),
            Err(e) => return Err(e.into()),
        }
    }
    let (policy, _, _) = args.selection.policy()?;
    let explanation = explain(&policy, addr, args.port, proto, direction);
    print!("{}", render(&explanation));
    Ok(ExitCode::from(if explanation.allowed { 0 } else { 1 }))
}

/// `explain`'s answer as text for a person.
pub fn render(e: &Explanation) -> String {
    if let Some(reason) = &e.essential {
        return format!("allowed: {} (essential: {reason})\n", e.what);
    }
    if !e.allowed {
        return format!(
            "denied: {}: {}\n",
            e.what,
            e.why_not.as_deref().unwrap_or("nothing allows it")
        );
    }
    let mut text = format!("allowed: {}\n", e.what);
    for rule in &e.rules {
        text.push_str(&format!("  by {} ({})", rule.rule, rule.source));
        for by in &rule.listed_by {
            text.push_str(&format!("\n       {} {}: {}", by.region, by.feature, by.source));
        }
        if let Some(note) = &rule.note {
            text.push_str(&format!(" {note}"));
        }
        text.push('\n');
    }
    if let Some(answers) = &e.answers {
        text.push_str(&format!("  {answers}\n"));
    }
    text
}
