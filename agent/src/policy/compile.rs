//! `compile_policy`: rules -> the tables the data plane looks packets up in.
//!
//! Two lookups per family: exact addresses (/32, /128) in a hash, shorter prefixes in
//! an LPM trie; the hash is tried first. An LPM trie answers with the longest match
//! only, so each entry's value is folded to the union of every rule whose prefix
//! covers it. Then whichever entry a lookup returns answers for all rules at once:
//! the rule prefixes that hold an address form a chain, and the longest of them is
//! covered by every other.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
};

use allowgate_ebpf as abi;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Mode, Policy, StateMode};
use crate::catalog::{Direction, PortRange, Proto};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "policy too complex for {prefix}: the rules that cover it (its own and those of every prefix around it, folded together) need {count} distinct port ranges, and the data plane holds at most {max} per address or prefix; give the [[allow]] entries on and around {prefix} fewer, wider port ranges"
    )]
    TooManyPortRules { prefix: IpNet, count: usize, max: usize },
}

/// What the data plane enforces: the four tables and the generation's settings
/// (`generation` is left 0 for the loader to number).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub v4_host: BTreeMap<Ipv4Addr, abi::PolicyValue>,
    pub v4_lpm: BTreeMap<Ipv4Net, abi::PolicyValue>,
    pub v6_host: BTreeMap<Ipv6Addr, abi::PolicyValue>,
    pub v6_lpm: BTreeMap<Ipv6Net, abi::PolicyValue>,
    pub config: abi::GenConfig,
}

impl Tables {
    pub fn v4_entries(&self) -> usize {
        self.v4_host.len() + self.v4_lpm.len()
    }

    pub fn v6_entries(&self) -> usize {
        self.v6_host.len() + self.v6_lpm.len()
    }
}

/// Slot bits of the two halves of a rule: the forward path and its reflexive return.
pub fn slots_of(direction: Direction) -> u8 {
    match direction {
        Direction::Egress => abi::SLOT_OUT_REMOTE | abi::SLOT_IN_REMOTE,
        Direction::Ingress => abi::SLOT_IN_LOCAL | abi::SLOT_OUT_LOCAL,
    }
}

pub fn proto_code(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => abi::PROTO_TCP,
        Proto::Udp => abi::PROTO_UDP,
        Proto::Icmp => abi::PROTO_ICMP,
        Proto::Any => abi::PROTO_ANY,
    }
}

/// The ports a set of rules allows at one prefix: per protocol code, per slot bit, a
/// list of ranges (not yet merged).
#[derive(Clone, Debug, Default)]
struct Allowance {
    by_proto: BTreeMap<u8, [Vec<PortRange>; 4]>,
}

impl Allowance {
    fn add(&mut self, proto: u8, slots: u8, ports: &[PortRange]) {
        let entry = self.by_proto.entry(proto).or_default();
        for (bit, ranges) in entry.iter_mut().enumerate() {
            if slots & (1 << bit) != 0 {
                if ports.is_empty() {
                    ranges.push(PortRange::ALL);
                } else {
                    ranges.extend_from_slice(ports);
                }
            }
        }
    }

    fn union(&mut self, other: &Allowance) {
        for (&proto, slots) in &other.by_proto {
            let entry = self.by_proto.entry(proto).or_default();
            for (mine, theirs) in entry.iter_mut().zip(slots) {
                mine.extend_from_slice(theirs);
            }
        }
    }

    /// Merges each slot's ranges: folding repeats the same ranges once per covering
    /// prefix, and segmenting unmerged lists turns quadratic on deep nests.
    fn normalize(&mut self) {
        for slots in self.by_proto.values_mut() {
            for ranges in slots.iter_mut() {
                *ranges = merge_ranges(std::mem::take(ranges));
            }
        }
    }

    /// The fewest port rules that allow exactly the same packets: ranges cut where any
    /// slot's coverage changes, runs with the same slots merged, and what `any`
    /// already allows left out of the specific protocols.
    fn to_port_rules(&self) -> Vec<abi::PortRule> {
        let mask_at = |slots: &[Vec<PortRange>; 4], port: u32| -> u8 {
            let mut mask = 0;
            for (bit, ranges) in slots.iter().enumerate() {
                if ranges
                    .iter()
                    .any(|r| u32::from(r.lo) <= port && port <= u32::from(r.hi))
                {
                    mask |= 1 << bit;
                }
            }
            mask
        };
        let any = self.by_proto.get(&abi::PROTO_ANY);
        let mut rules = Vec::new();
        for (&proto, slots) in &self.by_proto {
            let mut cuts: BTreeSet<u32> = BTreeSet::new();
            for r in slots.iter().flatten().chain(any.into_iter().flatten().flatten()) {
                cuts.insert(u32::from(r.lo));
                cuts.insert(u32::from(r.hi) + 1);
            }
            let cuts: Vec<u32> = cuts.into_iter().collect();
            let mut run: Option<(u8, u32, u32)> = None;
            for w in cuts.windows(2) {
                let (lo, hi) = (w[0], w[1] - 1);
                let mut mask = mask_at(slots, lo);
                if proto != abi::PROTO_ANY
                    && let Some(any) = any
                {
                    mask &= !mask_at(any, lo);
                }
                run = match run {
                    Some((m, rlo, rhi)) if m == mask && rhi + 1 == lo => Some((m, rlo, hi)),
                    Some((m, rlo, rhi)) => {
                        push_rule(&mut rules, proto, m, rlo, rhi);
                        Some((mask, lo, hi))
                    }
                    None => Some((mask, lo, hi)),
                };
            }
            if let Some((m, rlo, rhi)) = run {
                push_rule(&mut rules, proto, m, rlo, rhi);
            }
        }
        rules
    }
}

/// Sorted, with overlapping and adjacent ranges joined.
fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

fn push_rule(rules: &mut Vec<abi::PortRule>, proto: u8, slots: u8, lo: u32, hi: u32) {
    if slots != 0 {
        rules.push(abi::PortRule {
            proto,
            slots,
            _pad: 0,
            port_lo: lo as u16,
            port_hi: hi as u16,
        });
    }
}

fn policy_value(prefix: IpNet, allowance: &Allowance) -> Result<abi::PolicyValue, CompileError> {
    let rules = allowance.to_port_rules();
    if rules.len() > abi::MAX_PORT_RULES {
        return Err(CompileError::TooManyPortRules {
            prefix,
            count: rules.len(),
            max: abi::MAX_PORT_RULES,
        });
    }
    let mut value = abi::PolicyValue {
        n_rules: rules.len() as u32,
        ..Default::default()
    };
    value.rules[..rules.len()].copy_from_slice(&rules);
    Ok(value)
}

/// Compiles the address rules of `policy` (names are resolved elsewhere and come back
/// as address rules).
pub fn compile_policy(policy: &Policy) -> Result<Tables, CompileError> {
    let mut own: HashMap<IpNet, Allowance> = HashMap::new();
    for (net, rule) in policy.net_rules() {
        // Host bits would make two keys of one prefix; the config refuses them, and
        // this keeps any other source of rules honest too.
        own.entry(net.trunc())
            .or_default()
            .add(proto_code(rule.proto), slots_of(rule.direction), &rule.ports);
    }

    // Walk the prefixes in address order, shorter first, keeping the chain of prefixes
    // that hold the current one: its nearest holder's allowance is already folded, so
    // one union per prefix folds every covering rule.
    let mut nets: Vec<IpNet> = own.keys().copied().collect();
    nets.sort();
    let mut tables = Tables::default();
    let mut chain: Vec<(IpNet, Allowance)> = Vec::new();
    for net in nets {
        while chain.last().is_some_and(|(holder, _)| !holder.contains(&net)) {
            chain.pop();
        }
        let mut folded = own.remove(&net).expect("each prefix once");
        if let Some((_, holder)) = chain.last() {
            folded.union(holder);
        }
        folded.normalize();
        let value = policy_value(net, &folded)?;
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                tables.v4_host.insert(n.addr(), value);
            }
            IpNet::V4(n) => {
                tables.v4_lpm.insert(n, value);
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                tables.v6_host.insert(n.addr(), value);
            }
            IpNet::V6(n) => {
                tables.v6_lpm.insert(n, value);
            }
        }
        chain.push((net, folded));
    }

    expand_small_prefixes(&mut tables, EXPAND_BUDGET);

    let e = &policy.essentials;
    let mut flags = 0;
    for (on, flag) in [
        (policy.mode == Mode::Enforce, abi::F_ENFORCE),
        (e.arp, abi::F_ARP),
        (e.ipv6_nd, abi::F_ND),
        (e.icmp_errors, abi::F_ICMP_ERRORS),
        (e.dhcp, abi::F_DHCP),
        (policy.state.mode == StateMode::Stateful, abi::F_STATEFUL),
        (
            policy.state.mode == StateMode::Stateful && policy.state.liberal,
            abi::F_LIBERAL,
        ),
    ] {
        if on {
            flags |= flag;
        }
    }
    tables.config.flags = flags;
    tables.config.flow_timeout_s = policy.state.timeouts.by_state();
    tables.config.n_ethertypes = e.ethertypes.len().min(abi::MAX_ETHERTYPES) as u32;
    for (slot, &t) in tables.config.ethertypes.iter_mut().zip(&e.ethertypes) {
        *slot = t;
    }
    Ok(tables)
}

/// The value the data plane holds for `addr` when `rules` are what allows it (the
/// addresses learned for the catalog's names: no prefixes to fold, just their union).
pub fn value_of<'a>(
    addr: std::net::IpAddr,
    rules: impl IntoIterator<Item = &'a super::Rule>,
) -> Result<abi::PolicyValue, CompileError> {
    let mut allowance = Allowance::default();
    for rule in rules {
        allowance.add(proto_code(rule.proto), slots_of(rule.direction), &rule.ports);
    }
    allowance.normalize();
    policy_value(IpNet::from(addr), &allowance)
}

/// Prefixes this small (at most 256 addresses) move from the LPM trie into the host
/// hash, one entry per address, while the total stays within `EXPAND_BUDGET`: a hash
/// hit costs a fraction of a trie walk, and the catalog's own CIDRs (the mail /26 and
/// /27s) are this small.
const EXPAND_MIN_V4_LEN: u8 = 24;
const EXPAND_MIN_V6_LEN: u8 = 120;
const EXPAND_BUDGET: usize = 4096;

/// Moves the smallest LPM prefixes into the host tables, smallest first, until the next
/// one would pass `budget` added entries. Lookups answer as before: an address keeps
/// the value of the longest prefix that holds it (a host entry of its own stays; a
/// smaller expanded prefix was expanded first and keeps its addresses), and every
/// prefix left in the trie is larger than every expanded one, so none is inside one.
fn expand_small_prefixes(tables: &mut Tables, budget: usize) {
    let mut small: Vec<(u8, IpNet)> = tables
        .v4_lpm
        .keys()
        .filter(|n| n.prefix_len() >= EXPAND_MIN_V4_LEN)
        .map(|&n| (32 - n.prefix_len(), IpNet::V4(n)))
        .chain(
            tables
                .v6_lpm
                .keys()
                .filter(|n| n.prefix_len() >= EXPAND_MIN_V6_LEN)
                .map(|&n| (128 - n.prefix_len(), IpNet::V6(n))),
        )
        .collect();
    small.sort();
    let mut added = 0usize;
    for (host_bits, net) in small {
        let size = 1usize << host_bits;
        if added + size > budget {
            break;
        }
        match net {
            IpNet::V4(n) => {
                let value = tables.v4_lpm.remove(&n).expect("listed above");
                let base = u32::from(n.network());
                for i in 0..size as u32 {
                    tables.v4_host.entry(Ipv4Addr::from(base + i)).or_insert(value);
                }
            }
            IpNet::V6(n) => {
                let value = tables.v6_lpm.remove(&n).expect("listed above");
                let base = u128::from(n.network());
                for i in 0..size as u128 {
                    tables.v6_host.entry(Ipv6Addr::from(base + i)).or_insert(value);
                }
            }
        }
        added += size;
    }
}

/// The value a data-plane lookup of `addr` finds: the host entry, else the longest
/// LPM prefix. Used by tests and `show` to read the tables as the kernel does.
pub fn lookup(tables: &Tables, addr: std::net::IpAddr) -> Option<&abi::PolicyValue> {
    match addr {
        std::net::IpAddr::V4(a) => tables.v4_host.get(&a).or_else(|| {
            tables
                .v4_lpm
                .iter()
                .filter(|(n, _)| n.contains(&a))
                .max_by_key(|(n, _)| n.prefix_len())
                .map(|(_, v)| v)
        }),
        std::net::IpAddr::V6(a) => tables.v6_host.get(&a).or_else(|| {
            tables
                .v6_lpm
                .iter()
                .filter(|(n, _)| n.contains(&a))
                .max_by_key(|(n, _)| n.prefix_len())
                .map(|(_, v)| v)
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::{
        catalog::Peer,
        policy::{Essentials, Rule, Selection, Source},
    };

    fn rule(net: &str, direction: Direction, proto: Proto, ports: &[PortRange]) -> Rule {
        Rule {
            peer: Peer::Net(net.parse().unwrap()),
            direction,
            proto,
            ports: ports.to_vec(),
            source: Source::Allow,
            listed_by: vec![],
            note: None,
        }
    }

    fn policy(rules: Vec<Rule>) -> Policy {
        Policy {
            mode: Mode::Enforce,
            selection: Selection::default(),
            essentials: Essentials::default(),
            dns_servers: vec![],
            rules,
            state: Default::default(),
        }
    }

    /// The naive meaning of the rules: does any rule covering `addr` allow `port` of
    /// `proto` in `slot`? (No folding, no merging: the specification.)
    fn naive(rules: &[Rule], addr: IpAddr, proto: u8, slot: u8, port: u16) -> bool {
        rules.iter().any(|r| {
            r.net().unwrap().contains(&addr)
                && (proto_code(r.proto) == proto || r.proto == Proto::Any)
                && slots_of(r.direction) & slot != 0
                && (r.ports.is_empty() || r.ports.iter().any(|p| p.contains(port)))
        })
    }

    /// The compiled tables read as the kernel reads them.
    fn compiled(tables: &Tables, addr: IpAddr, proto: u8, slot: u8, port: u16) -> bool {
        lookup(tables, addr).is_some_and(|v| {
            v.rules().iter().any(|r| {
                (r.proto == proto || r.proto == abi::PROTO_ANY)
                    && r.slots & slot != 0
                    && r.port_lo <= port
                    && port <= r.port_hi
            })
        })
    }

    #[test]
    fn a_shorter_prefix_is_folded_into_a_longer_one() {
        let p = policy(vec![
            rule(
                "198.51.100.0/24",
                Direction::Egress,
                Proto::Tcp,
                &[PortRange::single(443)],
            ),
            rule(
                "198.51.100.7/32",
                Direction::Egress,
                Proto::Tcp,
                &[PortRange::single(80)],
            ),
            rule("198.51.100.0/25", Direction::Ingress, Proto::Udp, &[]),
        ]);
        let t = compile_policy(&p).unwrap();
        let host = t.v4_host[&"198.51.100.7".parse::<Ipv4Addr>().unwrap()];
        assert_eq!(host.n_rules, 3, "{host:?}");
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(compiled(&t, a, abi::PROTO_TCP, abi::SLOT_OUT_REMOTE, 443));
        assert!(compiled(&t, a, abi::PROTO_TCP, abi::SLOT_OUT_REMOTE, 80));
        assert!(compiled(&t, a, abi::PROTO_UDP, abi::SLOT_IN_LOCAL, 5353));
        assert!(!compiled(&t, a, abi::PROTO_UDP, abi::SLOT_OUT_REMOTE, 5353));
        let b: IpAddr = "198.51.100.200".parse().unwrap();
        assert!(compiled(&t, b, abi::PROTO_TCP, abi::SLOT_IN_REMOTE, 443));
        assert!(!compiled(&t, b, abi::PROTO_UDP, abi::SLOT_IN_LOCAL, 5353));
    }

    #[test]
    fn adjacent_and_overlapping_ranges_merge() {
        let p = policy(vec![
            rule(
                "192.0.2.0/24",
                Direction::Egress,
                Proto::Tcp,
                &[PortRange { lo: 80, hi: 90 }, PortRange { lo: 91, hi: 100 }],
            ),
            rule(
                "192.0.2.0/24",
                Direction::Egress,
                Proto::Tcp,
                &[PortRange { lo: 95, hi: 120 }],
            ),
        ]);
        let t = compile_policy(&p).unwrap();
        let v = t.v4_host[&"192.0.2.77".parse::<Ipv4Addr>().unwrap()];
        assert_eq!(
            v.rules(),
            [abi::PortRule {
                proto: abi::PROTO_TCP,
                slots: slots_of(Direction::Egress),
                _pad: 0,
                port_lo: 80,
                port_hi: 120
            }]
        );
    }

    #[test]
    fn any_protocol_swallows_the_specific_ones() {
        let p = policy(vec![
            rule("2001:db8::/32", Direction::Egress, Proto::Any, &[]),
            rule(
                "2001:db8::1/128",
                Direction::Egress,
                Proto::Tcp,
                &[PortRange::single(443)],
            ),
        ]);
        let t = compile_policy(&p).unwrap();
        let v = t.v6_host[&"2001:db8::1".parse::<Ipv6Addr>().unwrap()];
        assert_eq!(v.rules().len(), 1, "{v:?}");
        assert_eq!(v.rules()[0].proto, abi::PROTO_ANY);
    }

    #[test]
    fn small_prefixes_move_into_the_host_table() {
        let p = policy(vec![
            rule("192.0.2.0/26", Direction::Ingress, Proto::Tcp, &[PortRange::single(25)]),
            rule("192.0.2.8/29", Direction::Egress, Proto::Tcp, &[PortRange::single(443)]),
            rule("192.0.2.9/32", Direction::Egress, Proto::Udp, &[PortRange::single(53)]),
            rule(
                "198.51.0.0/16",
                Direction::Egress,
                Proto::Tcp,
                &[PortRange::single(443)],
            ),
        ]);
        let t = compile_policy(&p).unwrap();
        assert_eq!(t.v4_host.len(), 64, "the /26 and /29 are expanded, the /32 kept");
        assert_eq!(
            t.v4_lpm.keys().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["198.51.0.0/16"]
        );
        let rules = |a: &str| t.v4_host[&a.parse::<Ipv4Addr>().unwrap()].n_rules;
        assert_eq!((rules("192.0.2.1"), rules("192.0.2.8"), rules("192.0.2.9")), (1, 2, 3));
        // Over the budget, the larger prefixes stay in the trie.
        let mut t2 = compile_policy(&policy(vec![])).unwrap();
        t2.v4_lpm = t.v4_lpm.clone();
        t2.v4_lpm
            .insert("203.0.113.0/24".parse().unwrap(), abi::PolicyValue::default());
        t2.v4_lpm
            .insert("203.0.113.0/30".parse().unwrap(), abi::PolicyValue::default());
        expand_small_prefixes(&mut t2, 100);
        assert_eq!(t2.v4_host.len(), 4);
        assert!(t2.v4_lpm.contains_key(&"203.0.113.0/24".parse().unwrap()));
    }

    #[test]
    fn too_many_port_ranges_are_refused_whole() {
        let ports: Vec<PortRange> = (0..20).map(|i| PortRange::single(1000 + 2 * i)).collect();
        let p = policy(vec![rule("192.0.2.0/24", Direction::Egress, Proto::Tcp, &ports)]);
        let err = compile_policy(&p).unwrap_err().to_string();
        assert!(
            err.starts_with("policy too complex for 192.0.2.0/24: the rules that cover it")
                && err.contains("need 20 distinct port ranges")
                && err.contains("at most 16 per address or prefix"),
            "{err}"
        );
    }

    #[test]
    fn essentials_and_mode_set_the_generation_flags() {
        let mut p = policy(vec![]);
        p.essentials.dhcp = false;
        p.essentials.ethertypes = vec![0x88cc];
        p.mode = Mode::Monitor;
        let t = compile_policy(&p).unwrap();
        assert_eq!(
            t.config.flags,
            abi::F_ARP | abi::F_ND | abi::F_ICMP_ERRORS | abi::F_STATEFUL
        );
        assert_eq!((t.config.n_ethertypes, t.config.ethertypes[0]), (1, 0x88cc));
        assert_eq!(t.config.flow_timeout_s[abi::FLOW_TCP_ESTABLISHED as usize], 432_000);
        assert_eq!(t.config.flow_timeout_s[abi::FLOW_UDP as usize], 30);
        p.state.mode = crate::policy::StateMode::Stateless;
        p.state.timeouts.udp = 5;
        let t = compile_policy(&p).unwrap();
        assert_eq!(t.config.flags & abi::F_STATEFUL, 0);
        assert_eq!(t.config.flow_timeout_s[abi::FLOW_UDP as usize], 5);
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        // Few distinct prefixes in one /24 and its neighbours, so rules overlap a lot.
        let net = (0u8..=3, 22u8..=32, any::<u8>()).prop_map(|(third, len, fourth)| {
            IpNet::new(IpAddr::V4(Ipv4Addr::new(192, 0, third, fourth)), len)
                .unwrap()
                .trunc()
        });
        let ports = prop::collection::vec((0u16..200, 0u16..20), 0..3).prop_map(|v| {
            v.into_iter()
                .map(|(lo, w)| PortRange { lo, hi: lo + w })
                .collect::<Vec<_>>()
        });
        let proto = prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Icmp), Just(Proto::Any)];
        let direction = prop_oneof![Just(Direction::Egress), Just(Direction::Ingress)];
        (net, direction, proto, ports).prop_map(|(net, direction, proto, ports)| Rule {
            peer: Peer::Net(net),
            direction,
            ports: if proto.has_ports() { ports } else { vec![] },
            proto,
            source: Source::Allow,
            listed_by: vec![],
            note: None,
        })
    }

    proptest! {
        /// The compiled tables under longest-prefix match give exactly the naive union
        /// of every rule that covers the address.
        #[test]
        fn compiled_tables_give_the_union_of_covering_rules(
            rules in prop::collection::vec(arb_rule(), 1..12),
            probes in prop::collection::vec((0u8..=4, any::<u8>(), 0u16..230), 64),
        ) {
            let p = policy(rules.clone());
            let t = match compile_policy(&p) {
                Ok(t) => t,
                // Refused whole is a correct answer for an over-complex policy.
                Err(CompileError::TooManyPortRules { count, .. }) => {
                    prop_assert!(count > abi::MAX_PORT_RULES);
                    return Ok(());
                }
            };
            for (third, fourth, port) in probes {
                let addr = IpAddr::V4(Ipv4Addr::new(192, 0, third, fourth));
                for proto in [abi::PROTO_TCP, abi::PROTO_UDP, abi::PROTO_ICMP, 47] {
                    for slot in [abi::SLOT_OUT_REMOTE, abi::SLOT_IN_REMOTE, abi::SLOT_IN_LOCAL, abi::SLOT_OUT_LOCAL] {
                        prop_assert_eq!(
                            compiled(&t, addr, proto, slot, port),
                            naive(&rules, addr, proto, slot, port),
                            "addr {} proto {} slot {} port {}", addr, proto, slot, port
                        );
                    }
                }
            }
        }
    }
}
