//! The policies the bench measures (the catalog, and it plus seeded random prefixes)
//! and the probes it sends through each, with the lookup path each one takes.

use std::net::{IpAddr, Ipv4Addr};

use allowgate::policy::{
    Tables,
    model::{Frame, Hook, L4, Packet, Reason, Seg, Verdict},
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::*;
use crate::common::packet;

pub(crate) struct PolicySpec {
    pub(crate) label: String,
    pub(crate) extra: Option<ExtraSet>,
}

pub(crate) fn policy_specs() -> Vec<PolicySpec> {
    let spec = |label: &str, extra| PolicySpec {
        label: label.to_string(),
        extra,
    };
    let set = |count, mix, seed| Some(ExtraSet { count, mix, seed });
    vec![
        spec("(a) catalog", None),
        spec("(b) +10k /32-heavy", set(10_000, Mix::HostHeavy, 0x5eed_000b)),
        spec("(c) +10k CIDR-heavy", set(10_000, Mix::CidrHeavy, 0x5eed_000c)),
        spec("(d) +100k /32-heavy", set(LARGE, Mix::HostHeavy, 0x5eed_000d)),
        spec("(e) +100k CIDR-heavy", set(LARGE, Mix::CidrHeavy, 0x5eed_000e)),
    ]
}

/// `tables` with every host entry moved into the LPM trie at full length: the host
/// hash always misses and the trie answers, as in a design without the hash.
pub(crate) fn plain_lpm(tables: &Tables) -> Tables {
    let mut t = tables.clone();
    for (addr, value) in std::mem::take(&mut t.v4_host) {
        t.v4_lpm.insert(Ipv4Net::new(addr, 32).expect("/32"), value);
    }
    for (addr, value) in std::mem::take(&mut t.v6_host) {
        t.v6_lpm.insert(Ipv6Net::new(addr, 128).expect("/128"), value);
    }
    t
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// ARP, passed as an essential: the program's cost without any table lookup.
    Arp,
    CatalogHost,
    CatalogCidr,
    ExtraHost,
    ExtraCidr,
    Denied,
    V6Host,
    V6Cidr,
    V6Denied,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Arp => "ARP (no lookup)",
            Kind::CatalogHost => "allowed: catalog /32",
            Kind::CatalogCidr => "allowed: catalog CIDR",
            Kind::ExtraHost => "allowed: extra /32",
            Kind::ExtraCidr => "allowed: extra CIDR",
            Kind::Denied => "denied",
            Kind::V6Host => "allowed: v6 /128",
            Kind::V6Cidr => "allowed: v6 CIDR",
            Kind::V6Denied => "denied v6",
        }
    }

    /// An address the built-in catalog lists: the ≤ 4× target is about these (the
    /// IPv6 probes are `[[allow]]` entries the bench adds; the catalog has no IPv6).
    pub(crate) fn catalog(self) -> bool {
        matches!(self, Kind::CatalogHost | Kind::CatalogCidr)
    }

    /// The verdict the probe is meant to get, and why.
    pub(crate) fn expect(self) -> (Verdict, Reason) {
        match self {
            Kind::Arp => (Verdict::Pass, Reason::Arp),
            Kind::Denied | Kind::V6Denied => (Verdict::Drop, Reason::Policy),
            _ => (Verdict::Pass, Reason::Policy),
        }
    }
}

/// One remote peer, and the packet each hook sees of a connection with it.
pub(crate) struct Probe {
    pub(crate) kind: Kind,
    pub(crate) remote: Option<IpAddr>,
    pub(crate) ingress: Packet,
    pub(crate) egress: Packet,
    /// The hook whose packet opens the connection (its SYN), timed first; then the
    /// `handshake` goes through once, untimed, and the other hook's packet is timed as
    /// a segment of an established, assured flow.
    pub(crate) opener: Hook,
    pub(crate) handshake: Vec<Packet>,
}

/// The initial sequence numbers of the probes' connections: the host's and the peer's.
const HOST_ISN: u32 = 1_000;
const PEER_ISN: u32 = 9_000;

impl Probe {
    /// A connection we open to `remote:port` (an egress rule): our SYN out, and once
    /// the handshake is done the peer's ACK back.
    pub(crate) fn outbound(kind: Kind, remote: IpAddr, port: u16) -> Probe {
        let (h, p) = (HOST_ISN, PEER_ISN);
        Probe {
            kind,
            remote: Some(remote),
            egress: tcp(Hook::Egress, remote, EPHEMERAL_PORT, port, (true, false), (h, 0)),
            ingress: tcp(
                Hook::Ingress,
                remote,
                port,
                EPHEMERAL_PORT,
                (false, true),
                (p + 1, h + 1),
            ),
            opener: Hook::Egress,
            handshake: vec![
                tcp(Hook::Ingress, remote, port, EPHEMERAL_PORT, (true, true), (p, h + 1)),
                tcp(
                    Hook::Egress,
                    remote,
                    EPHEMERAL_PORT,
                    port,
                    (false, true),
                    (h + 1, p + 1),
                ),
            ],
        }
    }

    pub(crate) fn arp() -> Probe {
        let arp = |hook| Packet {
            hook,
            vlan_tags: 0,
            frame: Frame::Arp,
        };
        Probe {
            kind: Kind::Arp,
            remote: None,
            ingress: arp(Hook::Ingress),
            egress: arp(Hook::Egress),
            opener: Hook::Egress,
            handshake: vec![],
        }
    }

    /// A connection `remote` opens to our `port` (an ingress rule): its SYN in, and once
    /// the handshake is done our ACK out.
    pub(crate) fn inbound(kind: Kind, remote: IpAddr, port: u16) -> Probe {
        let (h, p) = (HOST_ISN, PEER_ISN);
        Probe {
            kind,
            remote: Some(remote),
            ingress: tcp(Hook::Ingress, remote, EPHEMERAL_PORT, port, (true, false), (p, 0)),
            egress: tcp(
                Hook::Egress,
                remote,
                port,
                EPHEMERAL_PORT,
                (false, true),
                (h + 1, p + 1),
            ),
            opener: Hook::Ingress,
            handshake: vec![
                tcp(Hook::Egress, remote, port, EPHEMERAL_PORT, (true, true), (h, p + 1)),
                tcp(
                    Hook::Ingress,
                    remote,
                    EPHEMERAL_PORT,
                    port,
                    (false, true),
                    (p + 1, h + 1),
                ),
            ],
        }
    }
}

/// A TCP segment between us and `remote`, as `hook` sees it: (SYN, ACK) flags and
/// (sequence, acknowledgement) numbers.
pub(crate) fn tcp(
    hook: Hook,
    remote: IpAddr,
    sport: u16,
    dport: u16,
    flags: (bool, bool),
    numbers: (u32, u32),
) -> Packet {
    let me = if remote.is_ipv4() {
        IpAddr::V4(ME4)
    } else {
        IpAddr::V6(ME6)
    };
    packet::between(
        hook,
        me,
        remote,
        L4::Tcp {
            sport,
            dport,
            syn: flags.0,
            ack: flags.1,
            seg: Seg {
                seq: numbers.0,
                ack: numbers.1,
                ..Seg::default()
            },
        },
    )
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("a valid address")
}

/// The probes of a policy: the catalog's, the extra set's (a /32 of it, and an address
/// inside one of its CIDRs that no /32 of it covers), and addresses next to them that
/// nothing allows. The catalog alone also gets ARP, the program's fixed cost, once.
pub(crate) fn probes(tables: &Tables, extra: &[Ipv4Net]) -> Vec<Probe> {
    let mut probes = Vec::new();
    if extra.is_empty() {
        probes.push(Probe::arp());
    }
    probes.extend([
        // EU1's portal address (it serves five regions), on a connection we open.
        Probe::outbound(Kind::CatalogHost, ip("13.80.125.22"), 443),
        // The mail servers' 65.55.234.192/26 connecting in to port 25.
        Probe::inbound(Kind::CatalogCidr, ip("65.55.234.200"), 25),
    ]);
    if let Some(host) = extra.iter().find(|n| n.prefix_len() == 32) {
        probes.push(Probe::outbound(Kind::ExtraHost, IpAddr::V4(host.addr()), 443));
    }
    // A CIDR at least /24 deep: a lookup that walks far down the trie.
    let inside = extra
        .iter()
        .filter(|n| (24..32).contains(&n.prefix_len()))
        .map(|n| Ipv4Addr::from(u32::from(n.network()) + 1))
        .find(|a| !tables.v4_host.contains_key(a));
    if let Some(addr) = inside {
        probes.push(Probe::outbound(Kind::ExtraCidr, IpAddr::V4(addr), 443));
    }
    probes.extend([
        Probe::outbound(Kind::Denied, ip("13.80.125.23"), 443),
        Probe::outbound(Kind::V6Host, ip(V6_HOST.split('/').next().expect("an address")), 443),
        Probe::outbound(Kind::V6Cidr, ip("2001:db8:2::99"), 443),
        Probe::outbound(Kind::V6Denied, ip("2001:db8:1::11"), 443),
    ]);
    probes
}

/// Which table answers a lookup of `addr`, read from the compiled tables.
pub(crate) fn lookup_path(tables: &Tables, addr: Option<IpAddr>) -> String {
    let Some(addr) = addr else { return "none".into() };
    let (host, longest) = match addr {
        IpAddr::V4(a) => (
            tables.v4_host.contains_key(&a),
            tables
                .v4_lpm
                .keys()
                .filter(|n| n.contains(&a))
                .map(|n| n.prefix_len())
                .max(),
        ),
        IpAddr::V6(a) => (
            tables.v6_host.contains_key(&a),
            tables
                .v6_lpm
                .keys()
                .filter(|n| n.contains(&a))
                .map(|n| n.prefix_len())
                .max(),
        ),
    };
    match (host, longest) {
        (true, _) => "hash hit".into(),
        (false, Some(len)) => format!("trie hit /{len}"),
        (false, None) => "both miss".into(),
    }
}
