//! `check`'s answer: the verdict on the first packet of a connection and every rule
//! that allows it, or why none does. Pure: the daemon answers with it over the socket,
//! the CLI renders it, and both judge with the reference model.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{
    ListedBy, Policy, Rule, StateMode,
    model::{self, Hook, L4, Verdict},
};
use crate::catalog::{Direction, Proto};

/// One rule that allows the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowingRule {
    /// `egress 13.80.125.22/32 tcp/443`.
    pub rule: String,
    /// `catalog`, `management`, `allow`, ...
    pub source: String,
    /// The (region, feature) pairs of the catalog that list it, with their origin.
    pub listed_by: Vec<ListedByWire>,
    pub note: Option<String>,
}

/// `ListedBy` as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedByWire {
    pub region: String,
    pub feature: String,
    pub source: String,
}

impl From<&ListedBy> for ListedByWire {
    fn from(l: &ListedBy) -> Self {
        ListedByWire {
            region: l.region.clone(),
            feature: l.feature.to_string(),
            source: l.source.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub allowed: bool,
    /// `egress tcp 13.80.125.22 port 443`.
    pub what: String,
    /// Allowed as an essential of the host (its reason), not by a rule.
    pub essential: Option<String>,
    pub rules: Vec<AllowingRule>,
    /// Why nothing allows it, when nothing does.
    pub why_not: Option<String>,
    /// How the connection's answers come back, when rules allow it.
    #[serde(default)]
    pub answers: Option<String>,
}

/// The verdict on the first packet of a connection to (or from) `addr`.
pub fn explain(policy: &Policy, addr: IpAddr, port: Option<u16>, proto: Proto, direction: Direction) -> Explanation {
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
            let judgement = model::judge(policy, &first_packet(hook, addr, proto, port.unwrap_or(0)));
            if judgement.verdict == Verdict::Pass && judgement.rules.is_empty() {
                return Explanation {
                    allowed: true,
                    what,
                    essential: Some(judgement.reason.as_str().to_string()),
                    rules: Vec::new(),
                    why_not: None,
                    answers: None,
                };
            }
            judgement.rules.iter().map(|&i| &policy.rules[i]).collect()
        }
    };
    if allowing.is_empty() {
        return Explanation {
            allowed: false,
            what,
            essential: None,
            rules: Vec::new(),
            why_not: Some(why_not(policy, addr)),
            answers: None,
        };
    }
    Explanation {
        allowed: true,
        what,
        essential: None,
        rules: allowing
            .into_iter()
            .map(|r| AllowingRule {
                rule: format!("{} {} {}", r.peer, r.direction, r.ports_label()),
                source: r.source.as_str().to_string(),
                listed_by: r.listed_by.iter().map(ListedByWire::from).collect(),
                note: r.note.clone(),
            })
            .collect(),
        why_not: None,
        answers: Some(answers(policy, direction)),
    }
}

/// How the answers of an allowed connection come back (`check`'s last line).
fn answers(policy: &Policy, direction: Direction) -> String {
    let way = match direction {
        Direction::Egress => "in",
        Direction::Ingress => "out",
    };
    match policy.state.mode {
        StateMode::Stateful => format!(
            "its answers {way}: allowed as the return of a tracked flow (this connection's ports only, while it lasts)"
        ),
        StateMode::Stateless => {
            format!("its answers {way}: allowed on the rule's return path, statelessly (any connection of these ports)")
        }
    }
}

/// The first packet of the connection: a TCP SYN, a UDP datagram, an echo request.
fn first_packet(hook: Hook, addr: IpAddr, proto: Proto, port: u16) -> model::Packet {
    let local = match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let l4 = match proto {
        Proto::Udp => L4::Udp { sport: 0, dport: port },
        Proto::Icmp => L4::Icmp {
            ty: if addr.is_ipv6() { 128 } else { 8 },
            code: 0,
        },
        _ => L4::tcp(0, port, true, false),
    };
    model::Packet::between(hook, local, addr, l4)
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
