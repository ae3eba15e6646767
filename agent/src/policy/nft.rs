//! The policy as an nftables script (`show --format nft`): the same stateless rules
//! with the same return paths, for operators who want to read it in the language they
//! know, diff it, or enforce it without BPF.
//!
//! Differences that nftables forces: ARP and other non-IP ethertypes are not seen by
//! the `inet` family (ARP gets its own `arp` table when the essential is off); a
//! non-first fragment carries no ports, so it passes only when the kernel reassembles
//! before the hook (when conntrack's defrag is loaded) or an `any` rule covers it.

use std::{collections::BTreeMap, fmt::Write as _};

use ipnet::IpNet;

use super::{Policy, Rule};
use crate::catalog::{Direction, Proto};

const TABLE: &str = "allowgate";

/// Which chain a half of a rule goes in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Chain {
    Input,
    Output,
}

/// nftables statements after the address match, for one half of a rule.
fn matches(rule: &Rule, v6: bool, forward: bool) -> Vec<String> {
    // The rule's ports are the service's: the opening packet goes to them, the
    // answers come from them, whichever side the service is on.
    let port_key = if forward { "dport" } else { "sport" };
    let ports = if rule.ports.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = rule.ports.iter().map(|p| p.to_string()).collect();
        format!(" {} {{ {} }}", port_key, list.join(", "))
    };
    let icmp = if v6 { "icmpv6" } else { "icmp" };
    // A return path answers; it never opens a connection.
    let not_syn = "tcp flags & (syn | ack) != syn";
    match (rule.proto, forward) {
        (Proto::Tcp, true) => vec![if ports.is_empty() {
            "meta l4proto tcp".to_string()
        } else {
            format!("tcp{ports}")
        }],
        (Proto::Tcp, false) => vec![if ports.is_empty() {
            not_syn.to_string()
        } else {
            format!("tcp{ports} {not_syn}")
        }],
        (Proto::Udp, _) => vec![if ports.is_empty() {
            "meta l4proto udp".to_string()
        } else {
            format!("udp{ports}")
        }],
        (Proto::Icmp, true) => vec![format!("meta l4proto {icmp}")],
        (Proto::Icmp, false) => vec![format!("{icmp} type echo-reply")],
        (Proto::Any, true) => vec![String::new()],
        (Proto::Any, false) => vec![
            format!("meta l4proto != {{ tcp, {icmp} }}"),
            not_syn.to_string(),
            format!("{icmp} type echo-reply"),
        ],
    }
}

/// Renders `policy` as a script for `nft -f`; `interfaces` limits it to those
/// interfaces (all but loopback when empty), as the agent attaches only there.
pub fn render(policy: &Policy, interfaces: &[String]) -> String {
    // (chain, family, statements) -> addresses, so each line matches a set.
    let mut grouped: BTreeMap<(Chain, bool, String), Vec<IpNet>> = BTreeMap::new();
    let mut names = Vec::new();
    for rule in &policy.rules {
        let Some(net) = rule.net() else {
            names.push(rule);
            continue;
        };
        let v6 = net.addr().is_ipv6();
        let (fwd_chain, ret_chain) = match rule.direction {
            Direction::Egress => (Chain::Output, Chain::Input),
            Direction::Ingress => (Chain::Input, Chain::Output),
        };
        for (chain, forward) in [(fwd_chain, true), (ret_chain, false)] {
            for stmt in matches(rule, v6, forward) {
                let nets = grouped.entry((chain, v6, stmt)).or_default();
                if !nets.contains(&net) {
                    nets.push(net);
                }
            }
        }
    }

    let e = &policy.essentials;
    let mut out = String::new();
    let sel = &policy.selection;
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let _ = writeln!(
        out,
        "# allowgate policy: regions [{}], features [{}], mode {}",
        sel.regions.join(", "),
        sel.features.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", "),
        policy.mode.as_str()
    );
    let _ = writeln!(
        out,
        "# stateless like the agent: each rule also lets its answers back (never a bare SYN)"
    );
    if policy.mode == super::Mode::Monitor {
        let _ = writeln!(
            out,
            "# monitor mode: nothing is dropped; rejected packets are logged with prefix \"allowgate: \""
        );
    }
    for name in &names {
        let _ = writeln!(out, "# not enforced here, the agent resolves names: {name}");
    }
    let _ = writeln!(out, "table inet {TABLE}");
    let _ = writeln!(out, "delete table inet {TABLE}");
    let _ = writeln!(out, "table inet {TABLE} {{");
    for (chain, hook, iface_key) in [(Chain::Input, "input", "iifname"), (Chain::Output, "output", "oifname")] {
        let policy_word = if policy.mode == super::Mode::Enforce {
            "drop"
        } else {
            "accept"
        };
        let _ = writeln!(out, "\tchain {hook} {{");
        let _ = writeln!(
            out,
            "\t\ttype filter hook {hook} priority filter; policy {policy_word};"
        );
        if interfaces.is_empty() {
            let _ = writeln!(out, "\t\t{iface_key} \"lo\" accept");
        } else {
            let list: Vec<String> = interfaces.iter().map(|i| format!("\"{i}\"")).collect();
            let _ = writeln!(out, "\t\t{iface_key} != {{ {} }} accept", list.join(", "));
        }
        if e.ipv6_nd {
            let _ = writeln!(
                out,
                "\t\ticmpv6 type {{ nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect }} ip6 hoplimit 255 accept"
            );
            let _ = writeln!(
                out,
                "\t\ticmpv6 type {{ mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report }} ip6 saddr {{ fe80::/10, :: }} accept"
            );
        }
        if e.icmp_errors {
            let _ = writeln!(
                out,
                "\t\ticmp type {{ destination-unreachable, time-exceeded, parameter-problem }} accept"
            );
            let _ = writeln!(
                out,
                "\t\ticmpv6 type {{ destination-unreachable, packet-too-big, time-exceeded, parameter-problem }} accept"
            );
        }
        if e.dhcp {
            let (v4, v6) = match chain {
                Chain::Output => (("68", "67"), ("546", "547")),
                Chain::Input => (("67", "68"), ("547", "546")),
            };
            let _ = writeln!(
                out,
                "\t\tmeta nfproto ipv4 udp sport {} udp dport {} accept",
                v4.0, v4.1
            );
            let _ = writeln!(
                out,
                "\t\tmeta nfproto ipv6 udp sport {} udp dport {} accept",
                v6.0, v6.1
            );
        }
        for ((c, v6, stmt), nets) in &grouped {
            if *c != chain {
                continue;
            }
            let (family, key) = match (v6, chain) {
                (false, Chain::Output) => ("ip", "daddr"),
                (false, Chain::Input) => ("ip", "saddr"),
                (true, Chain::Output) => ("ip6", "daddr"),
                (true, Chain::Input) => ("ip6", "saddr"),
            };
            let list: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
            let sep = if stmt.is_empty() { "" } else { " " };
            let _ = writeln!(out, "\t\t{family} {key} {{ {} }}{sep}{stmt} accept", list.join(", "));
        }
        if policy.mode == super::Mode::Monitor {
            let _ = writeln!(out, "\t\tlog prefix \"allowgate: \"");
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    if !e.arp {
        let _ = writeln!(out, "table arp {TABLE}");
        let _ = writeln!(out, "delete table arp {TABLE}");
        let _ = writeln!(out, "table arp {TABLE} {{");
        let _ = writeln!(
            out,
            "\tchain input {{ type filter hook input priority filter; policy drop; }}"
        );
        let _ = writeln!(
            out,
            "\tchain output {{ type filter hook output priority filter; policy drop; }}"
        );
        let _ = writeln!(out, "}}");
    }
    out
}
