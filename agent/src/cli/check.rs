//! `allowgate check`: would this connection be allowed, and by which rules?

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::ExitCode,
};

use anyhow::bail;

use super::SelectionArgs;
use crate::{
    catalog::{Direction, Proto},
    control::{
        client::{self, ClientError},
        protocol::{Request, Response},
    },
    policy::{
        Policy, Rule,
        model::{self, Frame, Hook, IpPacket, L4, Verdict},
    },
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
            Ok(Response::Check { allowed, text }) => {
                print!("{text}");
                return Ok(ExitCode::from(if allowed { 0 } else { 1 }));
            }
            Ok(Response::Error { message }) => bail!("{message}"),
            Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
            Err(ClientError::NotRunning { .. } | ClientError::PermissionDenied { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (policy, _, _) = args.selection.policy()?;
    let (allowed, text) = check(&policy, addr, args.port, proto, direction);
    print!("{text}");
    Ok(ExitCode::from(if allowed { 0 } else { 1 }))
}

/// The verdict on the first packet of a connection, and the rules that allow it (or
/// why none does), as text for a person.
pub fn check(policy: &Policy, addr: IpAddr, port: Option<u16>, proto: Proto, direction: Direction) -> (bool, String) {
    let hook = match direction {
        Direction::Egress => Hook::Egress,
        Direction::Ingress => Hook::Ingress,
    };
    let what = match (port, proto) {
        (_, Proto::Icmp) => format!("{direction} icmp echo {addr}"),
        (Some(p), _) => format!("{direction} {proto} {addr} port {p}"),
        (None, _) => format!("{direction} {proto} {addr} any port"),
    };
    let allowing: Vec<&Rule> = match port {
        // Any port: every rule that covers the address for this protocol and direction.
        None if proto != Proto::Icmp => policy
            .rules
            .iter()
            .filter(|r| {
                r.net().is_some_and(|n| n.contains(&addr))
                    && r.direction == direction
                    && (r.proto == proto || r.proto == Proto::Any)
            })
            .collect(),
        port => {
            let judgement = model::judge(policy, &packet(hook, addr, proto, port.unwrap_or(0)));
            if judgement.verdict == Verdict::Pass && judgement.rules.is_empty() {
                return (
                    true,
                    format!("allowed: {what} (essential: {})\n", judgement.reason.as_str()),
                );
            }
            judgement.rules.iter().map(|&i| &policy.rules[i]).collect()
        }
    };
    if allowing.is_empty() {
        return (false, format!("denied: {what}: {}\n", why_not(policy, addr)));
    }
    let mut text = format!("allowed: {what}\n");
    for rule in allowing {
        text.push_str(&format!("  by {}\n", describe(rule)));
    }
    (true, text)
}

/// The first packet of the connection: a TCP SYN, a UDP datagram, an echo request.
fn packet(hook: Hook, addr: IpAddr, proto: Proto, port: u16) -> model::Packet {
    let local = match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let (src, dst) = match hook {
        Hook::Egress => (local, addr),
        Hook::Ingress => (addr, local),
    };
    let l4 = match proto {
        Proto::Udp => L4::Udp { sport: 0, dport: port },
        Proto::Icmp => L4::Icmp {
            ty: if addr.is_ipv6() { 128 } else { 8 },
            code: 0,
        },
        _ => L4::Tcp {
            sport: 0,
            dport: port,
            syn: true,
            ack: false,
        },
    };
    model::Packet {
        hook,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src,
            dst,
            hop_limit: 64,
            l4,
        }),
    }
}

fn describe(rule: &Rule) -> String {
    let mut s = format!(
        "{} {} {} ({})",
        rule.peer,
        rule.direction,
        rule.ports_label(),
        rule.source.as_str()
    );
    for by in &rule.listed_by {
        s.push_str(&format!("\n       {} {}: {}", by.region, by.feature, by.source));
    }
    if let Some(note) = &rule.note {
        s.push_str(&format!(" {note}"));
    }
    s
}

fn why_not(policy: &Policy, addr: IpAddr) -> String {
    let covering: Vec<&Rule> = policy
        .rules
        .iter()
        .filter(|r| r.net().is_some_and(|n| n.contains(&addr)))
        .collect();
    if covering.is_empty() {
        return format!("no rule covers {addr} (default deny)");
    }
    let list: Vec<String> = covering.iter().map(|r| r.to_string()).collect();
    format!("rules cover {addr} but none allows this: {}", list.join("; "))
}
