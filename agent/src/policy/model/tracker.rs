//! The stateful reference model (docs/state.md: connection tracking): `judge` over a
//! sequence of packets, with the flows they opened, each flow's class (assured or
//! not), each TCP flow's sequence window (window.rs), the first fragments that passed,
//! and the DNS queries and DHCP exchanges the host started.
//!
//! Time does not pass in it: a flow, once open, stays (the data plane's timeouts are
//! seconds to days, and its tests run in seconds). Nor does it run out of room: the
//! data plane's tables hold tens of thousands, the sequences it is compared on hold
//! hundreds at most, so nothing is pushed out there either.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use allowgate_ebpf::FragKey;

use super::{
    DHCP_XID, ECHO_ID, FRAG_ID, Frame, Hook, IpPacket, Judgement, L4, Packet, Quote, Reason, Verdict, judge,
    window::{Outcome, Segment, TcpFlow},
};
use crate::policy::{Policy, StateMode};

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

    /// The DHCP client's exchange of a family and transaction id: its local address
    /// unknown (0), the id standing in the remote's first 4 bytes (the server is not
    /// known before it answers).
    fn dhcp(v6: bool, xid: u32) -> FlowKey {
        let id = xid.to_be_bytes();
        let (local, remote, lport, rport) = if v6 {
            let mut r = [0u8; 16];
            r[..4].copy_from_slice(&id);
            (
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::from(r)),
                546,
                547,
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::from(id)),
                68,
                67,
            )
        };
        FlowKey {
            local,
            remote,
            lport,
            rport,
            proto: 17,
        }
    }
}

/// What the model knows of a tracked flow.
#[derive(Clone, Copy, Debug)]
struct Flow {
    /// The packets of which direction opened it.
    opener: Hook,
    /// A TCP flow's state and windows; `None` for other protocols.
    tcp: Option<TcpFlow>,
    /// Not TCP: a packet came back the other way.
    answered: bool,
    /// Earned its place among the assured: a TCP handshake completed (or both sides
    /// checked, picked up mid-stream), or answered and used once more.
    assured: bool,
}

/// The stateful model: `judge` over a sequence of packets, with what they left behind.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    flows: HashMap<FlowKey, Flow>,
    /// (resolver, client port) of the DNS queries this host sent (all with `DNS_ID`).
    queries: HashSet<(IpAddr, u16)>,
    /// The first fragments that passed, by the slot of the data plane's table their
    /// datagram takes (a later datagram in the same slot takes its place there too),
    /// and the reason that passed them.
    fragments: HashMap<u32, (FragKey, Reason)>,
    /// The data plane's flow hash key: where a datagram's slot is.
    hash_key: u64,
}

impl Tracker {
    /// A tracker whose fragment slots are those of a data plane with this flow hash key.
    pub fn with_hash_key(hash_key: u64) -> Tracker {
        Tracker {
            hash_key,
            ..Tracker::default()
        }
    }

    /// Judges `packet` under `policy` after the packets judged before it, and
    /// remembers what it opens. Stateless policies judge each packet alone.
    pub fn judge(&mut self, policy: &Policy, packet: &Packet) -> Judgement {
        self.judge_shaped(policy, packet, true)
    }

    /// `judge`, where `whole` says whether the frame is a whole datagram: a first
    /// fragment judges the same, but a DNS query in one is not noted (its id may not
    /// be in it), its TCP bytes may be short of the segment's, and it vouches for its
    /// datagram's other fragments once it passed.
    pub fn judge_shaped(&mut self, policy: &Policy, packet: &Packet, whole: bool) -> Judgement {
        let j = self.judge_alone(policy, packet, !whole);
        let Frame::Ip(ip) = &packet.frame else { return j };
        // TC egress notes a query to a configured resolver that goes out.
        if whole
            && let L4::Udp { sport, dport: 53 } = ip.l4
            && packet.hook == Hook::Egress
            && j.delivered(policy.mode)
            && policy.dns_servers.contains(&ip.dst)
        {
            self.queries.insert((ip.dst, sport));
        }
        if !whole && policy.state.mode == StateMode::Stateful && j.verdict == Verdict::Pass {
            let key = frag_key(ip);
            self.fragments.insert(key.slot(self.hash_key), (key, j.reason));
        }
        j
    }

    /// Flows tracked now, and how many of them are assured.
    pub fn flows(&self) -> (usize, usize) {
        (self.flows.len(), self.flows.values().filter(|f| f.assured).count())
    }

    fn judge_alone(&mut self, policy: &Policy, packet: &Packet, first_fragment: bool) -> Judgement {
        let mut j = judge(policy, packet);
        let Frame::Ip(ip) = &packet.frame else { return j };
        if policy.state.mode == StateMode::Stateless {
            return j;
        }
        // A non-first fragment passes as its datagram's first fragment did (the
        // addresses being readable at all is all the judge has said).
        if let L4::Fragment { .. } = ip.l4
            && !matches!(j.reason, Reason::V4Mapped | Reason::VlanDepth)
        {
            let key = frag_key(ip);
            return match self.fragments.get(&key.slot(self.hash_key)) {
                Some((k, reason)) if *k == key => Judgement {
                    verdict: Verdict::Pass,
                    reason: *reason,
                    rules: vec![],
                    return_only: false,
                },
                _ => refuse(Reason::FragmentOrphan),
            };
        }
        if j.verdict == Verdict::Drop {
            return j;
        }
        let v6 = ip.src.is_ipv6();
        let hook = packet.hook;
        let liberal = policy.state.liberal;
        match (j.reason, &ip.l4) {
            (Reason::IcmpError, L4::IcmpError { quote, .. }) => {
                if FlowKey::quoted(hook, ip, quote).is_some_and(|k| self.flows.contains_key(&k)) {
                    return j;
                }
                refuse(Reason::NoFlow)
            }
            (Reason::IcmpError, _) => refuse(Reason::NoFlow),
            (Reason::Dhcp, _) if hook == Hook::Egress => {
                // The request opens (or refreshes) its exchange, by its transaction id.
                self.flows.entry(FlowKey::dhcp(v6, DHCP_XID)).or_insert(Flow {
                    opener: hook,
                    tcp: None,
                    answered: false,
                    assured: false,
                });
                j
            }
            // A reply only shows its exchange is there: it answers nothing.
            (Reason::Dhcp, _) if self.flows.contains_key(&FlowKey::dhcp(v6, DHCP_XID)) => j,
            (Reason::Dhcp, _) => refuse(Reason::NoFlow),
            (Reason::Policy, _) => {
                let Some(key) = FlowKey::of(hook, ip) else { return j };
                let opens = !j.return_only;
                if !opens && !self.answer_expected(policy, hook, ip) {
                    return refuse(Reason::NoFlow);
                }
                let segment = tcp_segment(&ip.l4, first_fragment);
                match self.flows.get_mut(&key) {
                    Some(flow) => match flow.advance(hook, segment.as_ref(), opens) {
                        Outcome::OutOfWindow => {
                            j.reason = Reason::OutOfWindow;
                            j.rules.clear();
                            j.return_only = false;
                            if !liberal {
                                j.verdict = Verdict::Drop;
                            }
                            j
                        }
                        Outcome::Accept | Outcome::Ignore => j,
                    },
                    None if !opens => refuse(Reason::NoFlow),
                    // A RST opens no flow.
                    None if segment.is_some_and(|s| s.seg.rst) => j,
                    None => {
                        self.flows.insert(
                            key,
                            Flow {
                                opener: hook,
                                tcp: segment.map(|s| TcpFlow::new(hook, &s)),
                                answered: false,
                                assured: false,
                            },
                        );
                        j
                    }
                }
            }
            // ND: no flow to ask.
            _ => j,
        }
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

impl Flow {
    /// Moves the flow on by a packet that went `hook` (a TCP `segment` if it is one).
    fn advance(&mut self, hook: Hook, segment: Option<&Segment>, opens: bool) -> Outcome {
        match (&mut self.tcp, segment) {
            (Some(tcp), Some(s)) => {
                let outcome = tcp.track(hook, s, opens);
                if outcome == Outcome::Accept && tcp.assured() {
                    self.assured = true;
                }
                outcome
            }
            _ => {
                // Answered, then used once more: assured.
                if self.answered {
                    self.assured = true;
                } else if hook != self.opener {
                    self.answered = true;
                }
                Outcome::Accept
            }
        }
    }
}

/// A drop for `reason`, no rule named.
fn refuse(reason: Reason) -> Judgement {
    Judgement {
        verdict: Verdict::Drop,
        reason,
        rules: vec![],
        return_only: false,
    }
}

/// The segment a TCP packet carries, for its flow's window.
fn tcp_segment(l4: &L4, first_fragment: bool) -> Option<Segment> {
    match *l4 {
        L4::Tcp { syn, ack, seg, .. } => Some(Segment {
            syn,
            ack,
            seg,
            first_fragment,
        }),
        _ => None,
    }
}

/// The datagram a fragment belongs to, as the data plane keys it.
fn frag_key(ip: &IpPacket) -> FragKey {
    let bytes = |a: IpAddr| match a {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    };
    let v6 = ip.src.is_ipv6();
    FragKey {
        src: bytes(ip.src),
        dst: bytes(ip.dst),
        id: FRAG_ID,
        proto: ip.l4.proto_number(v6),
        family: if v6 { 6 } else { 4 },
        _pad: 0,
    }
}
