//! The reference verdict model: the policy semantics (README: "Semantics") as plain
//! Rust over a packet summary.
//!
//! It reads the policy's rules directly, never the compiled tables, so comparing it
//! with the kernel checks the compiler and the BPF programs together. `check` answers
//! with it; the test-run and differential tests compare the kernel against it.

use std::{collections::HashSet, net::IpAddr};

pub use allowgate_ebpf::Reason;

use super::{Mode, Policy, Rule, StateMode};
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
        L4::Tcp { sport, dport, syn, ack } => (sport, dport, syn && !ack),
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

/// A flow from this host's side: the same key for its packets both ways. Ports as
/// the data plane keys them: TCP and UDP theirs, an ICMP echo its identifier as
/// `lport`, other protocols none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    local: IpAddr,
    remote: IpAddr,
    lport: u16,
    rport: u16,
    proto: u8,
}

impl FlowKey {
    /// The flow of a packet of `proto` from `src`:`sport` to `dst`:`dport` that went
    /// `hook`; `echo_id` is an ICMP echo's identifier.
    fn new(hook: Hook, src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16, echo_id: u16) -> FlowKey {
        let (local, remote, lport, rport) = match hook {
            Hook::Egress => (src, dst, sport, dport),
            Hook::Ingress => (dst, src, dport, sport),
        };
        let icmp = if local.is_ipv6() { 58 } else { 1 };
        let (lport, rport) = match proto {
            6 | 17 => (lport, rport),
            p if p == icmp => (echo_id, 0),
            _ => (0, 0),
        };
        FlowKey {
            local,
            remote,
            lport,
            rport,
            proto,
        }
    }

    /// The flow of `ip` as `hook` saw it; `None` for a non-first fragment (no ports).
    fn of(hook: Hook, ip: &IpPacket) -> Option<FlowKey> {
        let v6 = ip.src.is_ipv6();
        let proto = ip.l4.proto_number(v6);
        let (sport, dport, echo_id) = match ip.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport, 0),
            // The data plane reads the identifier of these types whatever the family.
            L4::Icmp {
                ty: 0 | 8 | 128 | 129, ..
            } => (0, 0, ECHO_ID),
            L4::Icmp { .. } | L4::IcmpError { .. } | L4::Other { .. } => (0, 0, 0),
            L4::Fragment { .. } => return None,
        };
        Some(FlowKey::new(hook, ip.src, ip.dst, proto, sport, dport, echo_id))
    }

    /// The flow an ICMP error that went `hook` quotes: the quoted packet went the other
    /// way. `None` when its local address is not the error's own.
    fn quoted(hook: Hook, ip: &IpPacket, quote: &Quote) -> Option<FlowKey> {
        let other = match hook {
            Hook::Egress => Hook::Ingress,
            Hook::Ingress => Hook::Egress,
        };
        let key = FlowKey::new(
            other,
            quote.src,
            quote.dst,
            quote.proto,
            quote.sport,
            quote.dport,
            quote.sport,
        );
        let outer_local = match hook {
            Hook::Egress => ip.src,
            Hook::Ingress => ip.dst,
        };
        (key.local == outer_local && quote.src.is_ipv6() == ip.src.is_ipv6()).then_some(key)
    }

    /// The DHCP client's exchange of a family: addresses unknown until the server answers.
    fn dhcp(v6: bool) -> FlowKey {
        let (any, lport, rport) = if v6 {
            (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 546, 547)
        } else {
            (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 68, 67)
        };
        FlowKey {
            local: any,
            remote: any,
            lport,
            rport,
            proto: 17,
        }
    }
}

/// The stateful model: `judge` over a sequence of packets, with the flows they opened.
/// Time does not pass in it: a flow, once open, stays (the data plane's timeouts are
/// minutes to days, and its tests run in seconds).
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    flows: HashSet<FlowKey>,
    /// (resolver, client port) of the DNS queries this host sent (all with `DNS_ID`).
    queries: HashSet<(IpAddr, u16)>,
}

impl Tracker {
    /// Judges `packet` under `policy` after the packets judged before it, and
    /// remembers what it opens. Stateless policies judge each packet alone.
    pub fn judge(&mut self, policy: &Policy, packet: &Packet) -> Judgement {
        self.judge_shaped(policy, packet, true)
    }

    /// `judge`, where `whole` says whether the frame is a whole datagram: a first
    /// fragment judges the same, but a DNS query in one is not noted (its id may
    /// not be in it).
    pub fn judge_shaped(&mut self, policy: &Policy, packet: &Packet, whole: bool) -> Judgement {
        let j = self.judge_alone(policy, packet);
        // TC egress notes a query to a configured resolver that goes out.
        if whole
            && let Frame::Ip(ip) = &packet.frame
            && let L4::Udp { sport, dport: 53 } = ip.l4
            && packet.hook == Hook::Egress
            && j.delivered(policy.mode)
            && policy.dns_servers.contains(&ip.dst)
        {
            self.queries.insert((ip.dst, sport));
        }
        j
    }

    fn judge_alone(&mut self, policy: &Policy, packet: &Packet) -> Judgement {
        let mut j = judge(policy, packet);
        let Frame::Ip(ip) = &packet.frame else { return j };
        if policy.state.mode == StateMode::Stateless || j.verdict == Verdict::Drop {
            return j;
        }
        let v6 = ip.src.is_ipv6();
        let needs = match (j.reason, &ip.l4) {
            (Reason::IcmpError, L4::IcmpError { quote, .. }) => FlowKey::quoted(packet.hook, ip, quote),
            (Reason::IcmpError, _) => None,
            (Reason::Dhcp, _) if packet.hook == Hook::Egress => {
                self.flows.insert(FlowKey::dhcp(v6));
                return j;
            }
            (Reason::Dhcp, _) => Some(FlowKey::dhcp(v6)),
            (Reason::Policy, _) if !j.return_only => {
                // A forward path opens its flow (the model's segments are never RSTs,
                // which open none).
                if let Some(key) = FlowKey::of(packet.hook, ip) {
                    self.flows.insert(key);
                }
                return j;
            }
            (Reason::Policy, _) => match FlowKey::of(packet.hook, ip) {
                // No ports to find a flow by: the policy alone decides.
                None => return j,
                Some(key) if self.answer_expected(policy, packet.hook, ip) => Some(key),
                Some(_) => None,
            },
            // ND: no flow to ask.
            _ => return j,
        };
        if needs.is_some_and(|key| self.flows.contains(&key)) {
            return j;
        }
        j.verdict = Verdict::Drop;
        j.reason = Reason::NoFlow;
        j.rules.clear();
        j.return_only = false;
        j
    }

    /// A resolver's answer coming in must answer a query this host sent.
    fn answer_expected(&self, policy: &Policy, hook: Hook, ip: &IpPacket) -> bool {
        match ip.l4 {
            L4::Udp { sport: 53, dport } if hook == Hook::Ingress && policy.dns_servers.contains(&ip.src) => {
                self.queries.contains(&(ip.src, dport))
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        catalog::{Catalog, Feature},
        policy::{Config, Selection},
    };

    fn eu1() -> Policy {
        let mut config = Config::default();
        config.management.cidrs = vec!["192.0.2.0/24".parse().unwrap()];
        let selection = Selection {
            regions: vec!["eu1".into()],
            features: vec![Feature::Portal, Feature::Mail, Feature::AppConnector],
        };
        Policy::build(
            &Catalog::builtin(),
            &selection,
            &config,
            &["198.51.100.53".parse().unwrap()],
        )
    }

    fn tcp(hook: Hook, src: &str, dst: &str, sport: u16, dport: u16, syn: bool, ack: bool) -> Packet {
        Packet {
            hook,
            vlan_tags: 0,
            frame: Frame::Ip(IpPacket {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                hop_limit: 64,
                l4: L4::Tcp { sport, dport, syn, ack },
            }),
        }
    }

    const ME: &str = "203.0.113.10";

    #[test]
    fn egress_rules_and_their_return_path() {
        let p = eu1();
        let out = tcp(Hook::Egress, ME, "13.80.125.22", 40000, 443, true, false);
        assert_eq!(judge(&p, &out).verdict, Verdict::Pass);
        assert!(!judge(&p, &out).rules.is_empty());
        let back = tcp(Hook::Ingress, "13.80.125.22", ME, 443, 40000, true, true);
        assert_eq!(judge(&p, &back).verdict, Verdict::Pass);
        // The return path opens nothing: a SYN from the peer's port 443 is not an answer.
        let sneak = tcp(Hook::Ingress, "13.80.125.22", ME, 443, 22, true, false);
        assert_eq!(judge(&p, &sneak), Judgement::drop(Reason::Policy));
        let wrong_port = tcp(Hook::Egress, ME, "13.80.125.22", 40000, 80, true, false);
        assert_eq!(judge(&p, &wrong_port).verdict, Verdict::Drop);
        let elsewhere = tcp(Hook::Egress, ME, "198.51.100.1", 40000, 443, true, false);
        assert_eq!(judge(&p, &elsewhere).verdict, Verdict::Drop);
    }

    #[test]
    fn ingress_rules_and_their_return_path() {
        let p = eu1();
        // Mail: the page's CIDR 65.55.234.192/26 sends to our port 25.
        let mail = tcp(Hook::Ingress, "65.55.234.200", ME, 51000, 25, true, false);
        assert_eq!(judge(&p, &mail).verdict, Verdict::Pass);
        let answer = tcp(Hook::Egress, ME, "65.55.234.200", 25, 51000, true, true);
        assert_eq!(judge(&p, &answer).verdict, Verdict::Pass);
        let open_out = tcp(Hook::Egress, ME, "65.55.234.200", 25, 51000, true, false);
        assert_eq!(judge(&p, &open_out).verdict, Verdict::Drop);
        let ssh = tcp(Hook::Ingress, "192.0.2.77", ME, 50000, 22, true, false);
        assert_eq!(judge(&p, &ssh).verdict, Verdict::Pass);
    }

    #[test]
    fn essentials_pass_without_rules() {
        let p = eu1();
        let ns = Packet {
            hook: Hook::Ingress,
            vlan_tags: 1,
            frame: Frame::Ip(IpPacket {
                src: "fe80::1".parse().unwrap(),
                dst: "ff02::1:ff00:1".parse().unwrap(),
                hop_limit: 255,
                l4: L4::Icmp { ty: 135, code: 0 },
            }),
        };
        assert_eq!(judge(&p, &ns), Judgement::pass(Reason::Nd));
        let mut forged = ns.clone();
        if let Frame::Ip(ip) = &mut forged.frame {
            ip.hop_limit = 64;
        }
        assert_eq!(judge(&p, &forged), Judgement::drop(Reason::Policy));
        let arp = Packet {
            hook: Hook::Egress,
            vlan_tags: 0,
            frame: Frame::Arp,
        };
        assert_eq!(judge(&p, &arp), Judgement::pass(Reason::Arp));
        let lldp = Packet {
            hook: Hook::Egress,
            vlan_tags: 0,
            frame: Frame::Ethertype(0x88cc),
        };
        assert_eq!(judge(&p, &lldp), Judgement::drop(Reason::Ethertype));
        let qinqinq = Packet { vlan_tags: 3, ..arp };
        assert_eq!(judge(&p, &qinqinq), Judgement::drop(Reason::VlanDepth));
    }

    #[test]
    fn dns_to_the_resolver_only() {
        let p = eu1();
        let query = Packet {
            hook: Hook::Egress,
            vlan_tags: 0,
            frame: Frame::Ip(IpPacket {
                src: ME.parse().unwrap(),
                dst: "198.51.100.53".parse().unwrap(),
                hop_limit: 64,
                l4: L4::Udp { sport: 5353, dport: 53 },
            }),
        };
        assert_eq!(judge(&p, &query).verdict, Verdict::Pass);
        let mut other = query.clone();
        if let Frame::Ip(ip) = &mut other.frame {
            ip.dst = "198.51.100.54".parse().unwrap();
        }
        assert_eq!(judge(&p, &other).verdict, Verdict::Drop);
    }

    #[test]
    fn fragments_and_mapped_addresses() {
        let p = eu1();
        let frag = Packet {
            hook: Hook::Egress,
            vlan_tags: 0,
            frame: Frame::Ip(IpPacket {
                src: ME.parse().unwrap(),
                dst: "13.80.125.22".parse().unwrap(),
                hop_limit: 64,
                l4: L4::Fragment { proto: 6 },
            }),
        };
        assert_eq!(judge(&p, &frag).verdict, Verdict::Pass);
        let mut udp_frag = frag.clone();
        if let Frame::Ip(ip) = &mut udp_frag.frame {
            ip.l4 = L4::Fragment { proto: 17 };
        }
        assert_eq!(judge(&p, &udp_frag).verdict, Verdict::Drop);
        let mapped = Packet {
            hook: Hook::Egress,
            vlan_tags: 0,
            frame: Frame::Ip(IpPacket {
                src: "2001:db8::1".parse().unwrap(),
                dst: IpAddr::V6("13.80.125.22".parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped()),
                hop_limit: 64,
                l4: L4::Tcp {
                    sport: 1,
                    dport: 443,
                    syn: true,
                    ack: false,
                },
            }),
        };
        assert_eq!(judge(&p, &mapped), Judgement::drop(Reason::V4Mapped));
    }

    #[test]
    fn monitor_mode_delivers_what_it_would_drop() {
        let p = eu1();
        let j = judge(&p, &tcp(Hook::Egress, ME, "198.51.100.1", 1, 2, true, false));
        assert!(!j.delivered(Mode::Enforce));
        assert!(j.delivered(Mode::Monitor));
    }
}
