//! The reference verdict model: the policy semantics (README: "Semantics") as plain
//! Rust over a packet summary.
//!
//! It reads the policy's rules directly, never the compiled tables, so comparing it
//! with the kernel checks the compiler and the BPF programs together. `check` answers
//! with it; the test-run and differential tests compare the kernel against it. `judge`
//! is one packet alone; `Tracker` (tracker.rs) a sequence, with connection tracking,
//! whose TCP window rules live in window.rs.

mod tracker;
mod window;

use std::net::IpAddr;

pub use tracker::Tracker;

pub use allowgate_ebpf::Reason;

use super::{Mode, Policy, Rule};
use crate::catalog::{Direction, Proto};

/// Which hook sees the packet: XDP on ingress, TC on egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Ingress,
    Egress,
}

/// What the filter sees of a frame, as the test generator or `check` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub hook: Hook,
    /// 802.1Q / 802.1ad tags in front of the ethertype.
    pub vlan_tags: u8,
    pub frame: Frame,
}

impl Packet {
    /// An IP packet between this host (`local`) and `remote`, as `hook` sees it: the
    /// remote is the destination going out and the source coming in.
    pub fn between(hook: Hook, local: IpAddr, remote: IpAddr, l4: L4) -> Packet {
        let (src, dst) = match hook {
            Hook::Egress => (local, remote),
            Hook::Ingress => (remote, local),
        };
        Packet {
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Arp,
    /// A non-IP ethertype other than ARP.
    Ethertype(u16),
    /// A frame built broken on purpose; the filter must drop it for this reason.
    Broken(Reason),
    Ip(IpPacket),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub hop_limit: u8,
    pub l4: L4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        syn: bool,
        ack: bool,
        /// Its numbers and the rest of its flags, which connection tracking checks.
        seg: Seg,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP on IPv4, ICMPv6 on IPv6. An echo carries `ECHO_ID`; an error of this
    /// variant quotes nothing a flow can be found by.
    Icmp {
        ty: u8,
        code: u8,
    },
    /// An ICMP (ICMPv6) error quoting the header of the packet that caused it.
    IcmpError {
        ty: u8,
        code: u8,
        quote: Quote,
    },
    /// A protocol without ports the filter reads (ESP, GRE, ...).
    Other {
        proto: u8,
    },
    /// A non-first fragment: protocol known, no L4 header.
    Fragment {
        proto: u8,
    },
}

/// What a TCP segment carries besides its ports and its SYN and ACK flags: what
/// connection tracking checks it by (window.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub seq: u32,
    /// The acknowledgement number (meaningful with ACK).
    pub ack: u32,
    /// The window as on the wire, unscaled.
    pub win: u16,
    /// Payload bytes.
    pub len: u16,
    pub rst: bool,
    pub fin: bool,
    /// A SYN's window scale option (RFC 7323).
    pub wscale: Option<u8>,
}

impl Default for Seg {
    /// What the frames of segments that say nothing else carry: numbers 0, no data.
    fn default() -> Self {
        Seg {
            seq: 0,
            ack: 0,
            win: 64240,
            len: 0,
            rst: false,
            fin: false,
            wscale: None,
        }
    }
}

impl L4 {
    /// A TCP segment with the default numbers (`Seg::default()`).
    pub fn tcp(sport: u16, dport: u16, syn: bool, ack: bool) -> L4 {
        L4::Tcp {
            sport,
            dport,
            syn,
            ack,
            seg: Seg::default(),
        }
    }
}

/// The header an ICMP error quotes, as the packet that caused it was sent: its
/// addresses, protocol, and ports (for a quoted echo, both its identifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// The identifier of every ICMP echo the model describes (the frames carry it).
pub const ECHO_ID: u16 = 1;
/// The DNS id of every UDP datagram the model describes (its first payload bytes).
pub const DNS_ID: u16 = 0;
/// The DHCP transaction id of every DHCP message the model describes (its payload is
/// zeros: DHCPv4's xid at 4..8, DHCPv6's id at 1..4).
pub const DHCP_XID: u32 = 0;
/// The IP identification of every fragment the model describes (IPv4's, and the IPv6
/// fragment header's).
pub const FRAG_ID: u32 = 0x1234;

impl L4 {
    /// The IP protocol number (ICMPv6 for ICMP on IPv6).
    pub fn proto_number(&self, v6: bool) -> u8 {
        match *self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } | L4::IcmpError { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            L4::Other { proto } | L4::Fragment { proto } => proto,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

/// The model's answer: the verdict before the mode is applied, why, and the rules that
/// allow the packet (indexes into `Policy::rules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: Reason,
    pub rules: Vec<usize>,
    /// The rules allow it only as the return of a connection (their reflexive path):
    /// with connection tracking, only for a tracked flow.
    pub return_only: bool,
}

impl Judgement {
    fn pass(reason: Reason) -> Self {
        Judgement {
            verdict: Verdict::Pass,
            reason,
            rules: vec![],
            return_only: false,
        }
    }
    fn drop(reason: Reason) -> Self {
        Judgement {
            verdict: Verdict::Drop,
            reason,
            rules: vec![],
            return_only: false,
        }
    }

    /// Whether the packet goes on: always in monitor mode.
    pub fn delivered(&self, mode: Mode) -> bool {
        self.verdict == Verdict::Pass || mode == Mode::Monitor
    }
}

const MAX_VLAN_TAGS: u8 = 2;

fn is_v4_mapped(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.segments()[..6] == [0, 0, 0, 0, 0, 0xffff])
}

fn is_link_local_or_unspecified(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(a) => a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

/// Judges `packet` under `policy`, as the README's semantics say.
pub fn judge(policy: &Policy, packet: &Packet) -> Judgement {
    if packet.vlan_tags > MAX_VLAN_TAGS {
        return Judgement::drop(Reason::VlanDepth);
    }
    let ip = match &packet.frame {
        Frame::Arp if policy.essentials.arp => return Judgement::pass(Reason::Arp),
        Frame::Arp => return Judgement::drop(Reason::Arp),
        Frame::Ethertype(t) if policy.essentials.ethertypes.contains(t) => {
            return Judgement::pass(Reason::Ethertype);
        }
        Frame::Ethertype(_) => return Judgement::drop(Reason::Ethertype),
        Frame::Broken(reason) => return Judgement::drop(*reason),
        Frame::Ip(ip) => ip,
    };
    if is_v4_mapped(&ip.src) || is_v4_mapped(&ip.dst) {
        return Judgement::drop(Reason::V4Mapped);
    }
    if let Some(reason) = essential(policy, packet.hook, ip) {
        return Judgement::pass(reason);
    }
    let (forward, back) = allowing_rules(policy, packet.hook, ip);
    let return_only = forward.is_empty() && !back.is_empty();
    let rules = if return_only { back } else { forward };
    if rules.is_empty() {
        Judgement::drop(Reason::Policy)
    } else {
        Judgement {
            verdict: Verdict::Pass,
            reason: Reason::Policy,
            rules,
            return_only,
        }
    }
}

/// The essential (ND, ICMP errors, DHCP) that lets `ip` through, if one does.
fn essential(policy: &Policy, hook: Hook, ip: &IpPacket) -> Option<Reason> {
    let e = &policy.essentials;
    let v6 = ip.src.is_ipv6();
    match ip.l4 {
        L4::Icmp { ty, .. } | L4::IcmpError { ty, .. } if v6 => {
            if e.ipv6_nd && (133..=137).contains(&ty) && ip.hop_limit == 255 {
                return Some(Reason::Nd);
            }
            if e.ipv6_nd && matches!(ty, 130 | 131 | 132 | 143) && is_link_local_or_unspecified(&ip.src) {
                return Some(Reason::Nd);
            }
            if e.icmp_errors && (1..=4).contains(&ty) {
                return Some(Reason::IcmpError);
            }
            None
        }
        L4::Icmp { ty, .. } | L4::IcmpError { ty, .. } => {
            (e.icmp_errors && matches!(ty, 3 | 11 | 12)).then_some(Reason::IcmpError)
        }
        L4::Udp { sport, dport } if e.dhcp => {
            let (client, server) = if v6 { (546, 547) } else { (68, 67) };
            let ok = match hook {
                Hook::Egress => sport == client && dport == server,
                Hook::Ingress => sport == server && dport == client,
            };
            ok.then_some(Reason::Dhcp)
        }
        _ => None,
    }
}

/// Indexes of the rules that allow `ip` at `hook`: on their forward path, and on
/// their return path only.
fn allowing_rules(policy: &Policy, hook: Hook, ip: &IpPacket) -> (Vec<usize>, Vec<usize>) {
    let remote = match hook {
        Hook::Egress => ip.dst,
        Hook::Ingress => ip.src,
    };
    let v6 = remote.is_ipv6();
    let (mut forward, mut back) = (Vec::new(), Vec::new());
    for (i, rule) in policy.rules.iter().enumerate() {
        if !rule.net().is_some_and(|n| n.contains(&remote)) {
            continue;
        }
        match rule_allows(rule, hook, ip, v6) {
            Some(Path::Forward) => forward.push(i),
            Some(Path::Return) => back.push(i),
            None => {}
        }
    }
    (forward, back)
}

/// Which way a rule allows a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// The way the rule opens connections.
    Forward,
    /// Its reflexive return path.
    Return,
}

fn proto_matches(rule: Proto, packet: u8, v6: bool) -> bool {
    match rule {
        Proto::Any => true,
        Proto::Tcp => packet == 6,
        Proto::Udp => packet == 17,
        Proto::Icmp => packet == if v6 { 58 } else { 1 },
    }
}

fn rule_allows(rule: &Rule, hook: Hook, ip: &IpPacket, v6: bool) -> Option<Path> {
    if !proto_matches(rule.proto, ip.l4.proto_number(v6), v6) {
        return None;
    }
    let forward = matches!(
        (rule.direction, hook),
        (Direction::Egress, Hook::Egress) | (Direction::Ingress, Hook::Ingress)
    );
    let (sport, dport, opens) = match ip.l4 {
        // A non-first fragment has no ports: address and protocol decide, either way.
        L4::Fragment { .. } => return Some(if forward { Path::Forward } else { Path::Return }),
        L4::Tcp {
            sport, dport, syn, ack, ..
        } => (sport, dport, syn && !ack),
        L4::Udp { sport, dport } => (sport, dport, false),
        // Only an echo reply may come back on a return path.
        L4::Icmp { ty, .. } | L4::IcmpError { ty, .. } => (0, 0, ty != if v6 { 129 } else { 0 }),
        L4::Other { .. } => (0, 0, false),
    };
    let port_ok = |port: u16| rule.ports.is_empty() || rule.ports.iter().any(|p| p.contains(port));
    // The forward path opens the connection; the reflexive return path answers it.
    if forward {
        port_ok(dport).then_some(Path::Forward)
    } else {
        (port_ok(sport) && !opens).then_some(Path::Return)
    }
}

#[cfg(test)]
mod tests;
