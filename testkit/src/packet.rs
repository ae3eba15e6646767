//! Frames on the wire from the reference model's packet summaries, and the broken
//! shapes the filter must refuse. The bytes are built here, independently of the BPF
//! parser, from the RFC layouts.

#![allow(dead_code)]

use std::net::IpAddr;

use allowgate::policy::model::{Frame, Hook, IpPacket, L4, Packet, Reason};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
const VLAN_TPIDS: [u16; 3] = [0x88a8, 0x8100, 0x8100];

/// How a well-formed IP packet is laid out on the wire; the verdict must not depend
/// on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    Plain,
    /// IPv4 options: this many 32-bit words of NOPs (IHL = 5 + words).
    V4Options(u8),
    /// IPv4 first fragment (MF set, offset 0) holding the whole L4 header.
    V4FirstFragment,
    /// IPv6 extension headers in front of L4: 0 hop-by-hop, 60 destination options,
    /// 43 routing, 51 AH.
    V6Ext(Vec<u8>),
    /// IPv6 first fragment (fragment header, offset 0, M set) with the whole chain.
    V6FirstFragment,
}

fn eth(vlan_tags: u8, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlan_tags as usize + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // dst MAC
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // src MAC
    for i in 0..vlan_tags as usize {
        f.extend_from_slice(&VLAN_TPIDS[i.min(2)].to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI: VLAN id
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn l4_bytes(l4: &L4) -> Vec<u8> {
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            syn,
            ack,
            seg,
        } => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[4..8].copy_from_slice(&seg.seq.to_be_bytes());
            h[8..12].copy_from_slice(&seg.ack.to_be_bytes());
            h[12] = 5 << 4; // data offset
            h[13] = u8::from(seg.fin) | (u8::from(syn) << 1) | (u8::from(seg.rst) << 2) | (u8::from(ack) << 4);
            h[14..16].copy_from_slice(&seg.win.to_be_bytes());
            if let Some(scale) = seg.wscale {
                // NOP, then window scale (kind 3, length 3): one more word of header.
                h.extend_from_slice(&[1, 3, 3, scale]);
                h[12] = 6 << 4;
            }
            h.extend(std::iter::repeat_n(0xd7, usize::from(seg.len)));
            h
        }
        L4::Udp { sport, dport } => {
            // 8 bytes of zeros: a DNS id and a DHCP transaction id of 0 (model::DNS_ID,
            // model::DHCP_XID) where the ports make it one.
            let mut h = vec![0u8; 16];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[4..6].copy_from_slice(&16u16.to_be_bytes());
            h
        }
        L4::Icmp { ty, code } => {
            let [hi, lo] = allowgate::policy::model::ECHO_ID.to_be_bytes();
            vec![ty, code, 0, 0, hi, lo, 0, 1]
        }
        L4::IcmpError { ty, code, quote } => {
            let mut b = vec![ty, code, 0, 0, 0, 0, 0, 0];
            let inner = quoted_l4(&quote);
            if quote.src.is_ipv4() {
                b.extend(ipv4_header(
                    octets4(quote.src),
                    octets4(quote.dst),
                    quote.proto,
                    64,
                    0,
                    0,
                    20 + inner.len(),
                ));
            } else {
                b.extend(ipv6_header(
                    octets6(quote.src),
                    octets6(quote.dst),
                    quote.proto,
                    64,
                    inner.len(),
                ));
            }
            b.extend(inner);
            b
        }
        L4::Other { .. } => vec![0xab; 16],
        L4::Fragment { .. } => vec![0xcd; 24],
    }
}

/// The first 8 bytes of what a quoted header carried: ports, or an echo's identifier.
fn quoted_l4(q: &allowgate::policy::model::Quote) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    match q.proto {
        6 | 17 => {
            b[0..2].copy_from_slice(&q.sport.to_be_bytes());
            b[2..4].copy_from_slice(&q.dport.to_be_bytes());
        }
        1 | 58 => {
            b[0] = if q.proto == 58 { 128 } else { 8 };
            b[4..6].copy_from_slice(&q.sport.to_be_bytes());
        }
        _ => {}
    }
    b
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, ttl: u8, option_words: u8, frag: u16, total: usize) -> Vec<u8> {
    let ihl = 5 + option_words;
    let mut h = vec![0u8; 4 * ihl as usize];
    h[0] = 0x40 | ihl;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    for b in &mut h[20..] {
        *b = 1; // NOP options
    }
    h
}

/// IPv4 flags/fragment-offset field: MF and an offset in 8-byte units.
fn v4_frag(mf: bool, offset: u16) -> u16 {
    (u16::from(mf) << 13) | offset
}

fn ipv6_header(src: [u8; 16], dst: [u8; 16], next: u8, hop_limit: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = next;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&dst);
    h
}

/// An IPv6 extension header of `kind` carrying `next`, 8 bytes long (AH: 12).
fn ext_header(kind: u8, next: u8) -> Vec<u8> {
    match kind {
        51 => {
            // AH: payload length in 4-byte units minus 2; 12 bytes -> 1.
            let mut h = vec![0u8; 12];
            h[0] = next;
            h[1] = 1;
            h
        }
        43 => vec![next, 0, 4, 0, 0, 0, 0, 0], // routing type 4 (SRH-like), 0 segments left
        _ => vec![next, 0, 1, 4, 0, 0, 0, 0],  // HBH / dest opts: a PadN option
    }
}

fn fragment_header(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let mut h = vec![next, 0, 0, 0, 0, 0, 0x12, 0x34];
    h[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    h
}

fn octets4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("an IPv4 packet needs IPv4 addresses"),
    }
}

fn octets6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!("an IPv6 packet needs IPv6 addresses"),
    }
}

/// An IP packet between this host (`local`) and `remote`, as `hook` sees it: the
/// remote is the destination going out and the source coming in.
pub fn between(hook: Hook, local: IpAddr, remote: IpAddr, l4: L4) -> Packet {
    Packet::between(hook, local, remote, l4)
}

/// The frame for a well-formed model packet, laid out as `shape` says.
pub fn frame(p: &Packet, shape: &Shape) -> Vec<u8> {
    match &p.frame {
        Frame::Arp => {
            let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
            arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2]);
            arp.resize(46, 0);
            eth(p.vlan_tags, ETH_P_ARP, &arp)
        }
        Frame::Ethertype(t) => eth(p.vlan_tags, *t, &[0u8; 46]),
        Frame::Broken(_) => panic!("broken frames come from `broken()`"),
        Frame::Ip(ip) => eth(
            p.vlan_tags,
            if ip.src.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 },
            &ip_bytes(ip, shape),
        ),
    }
}

fn ip_bytes(ip: &IpPacket, shape: &Shape) -> Vec<u8> {
    let v6 = ip.src.is_ipv6();
    let proto = ip.l4.proto_number(v6);
    let l4 = l4_bytes(&ip.l4);
    let non_first = matches!(ip.l4, L4::Fragment { .. });
    if !v6 {
        let (words, frag) = match (shape, non_first) {
            (_, true) => (0, v4_frag(false, 185)), // offset 1480: a later fragment
            (Shape::V4Options(w), _) => (*w, 0),
            (Shape::V4FirstFragment, _) => (0, v4_frag(true, 0)),
            _ => (0, 0),
        };
        let total = 4 * (5 + words as usize) + l4.len();
        let mut b = ipv4_header(
            octets4(ip.src),
            octets4(ip.dst),
            proto,
            ip.hop_limit,
            words,
            frag,
            total,
        );
        b.extend_from_slice(&l4);
        return b;
    }
    // IPv6: the chain of extension headers, then L4.
    let mut chain: Vec<u8> = match shape {
        Shape::V6Ext(kinds) => kinds.clone(),
        _ => vec![],
    };
    let mut frag: Option<(u16, bool)> = match (shape, non_first) {
        (_, true) => Some((185, false)),
        (Shape::V6FirstFragment, _) => Some((0, true)),
        _ => None,
    };
    // The fragment header ends the unfragmentable part (RFC 8200 4.5): what follows
    // it in a non-first fragment is payload, and its next header names the protocol.
    if frag.is_some() {
        chain.push(44);
    }
    let mut body = Vec::new();
    for (i, &kind) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(proto);
        if kind == 44 {
            let (offset, more) = frag.take().expect("one fragment header");
            body.extend_from_slice(&fragment_header(next, offset, more));
        } else {
            body.extend_from_slice(&ext_header(kind, next));
        }
    }
    body.extend_from_slice(&l4);
    let first = chain.first().copied().unwrap_or(proto);
    let mut b = ipv6_header(octets6(ip.src), octets6(ip.dst), first, ip.hop_limit, body.len());
    b.extend_from_slice(&body);
    b
}

/// A frame built broken on purpose, with the reason the filter must give.
pub struct Broken {
    pub name: &'static str,
    pub reason: Reason,
    pub bytes: Vec<u8>,
}

impl Broken {
    /// BPF_PROG_TEST_RUN refuses (EINVAL) to build an skb around an IP header shorter
    /// than its fixed part, so these reach only the XDP program in a test run.
    pub fn skb_testable(&self) -> bool {
        !matches!(self.name, "ipv4 header cut short" | "ipv6 header cut short")
    }
}

impl Broken {
    pub fn packet(&self, hook: Hook) -> Packet {
        Packet {
            hook,
            vlan_tags: 0,
            frame: Frame::Broken(self.reason),
        }
    }
}

/// Every broken shape the README's semantics name, between `v4` addresses and `v6` addresses.
/// The addresses matter: the filter must refuse these even where a rule would allow
/// the packet, so tests pass addresses a rule covers.
pub fn broken(v4: (IpAddr, IpAddr), v6: (IpAddr, IpAddr), port: u16) -> Vec<Broken> {
    let (s4, d4) = (octets4(v4.0), octets4(v4.1));
    let (s6, d6) = (octets6(v6.0), octets6(v6.1));
    let tcp = l4_bytes(&L4::tcp(port, port, false, true));
    let v4_with = |header: Vec<u8>, payload: &[u8]| {
        let mut b = header;
        b.extend_from_slice(payload);
        eth(0, ETH_P_IP, &b)
    };
    let mut out = vec![
        Broken {
            name: "ipv4 header cut short",
            reason: Reason::Truncated,
            bytes: eth(0, ETH_P_IP, &ipv4_header(s4, d4, 6, 64, 0, 0, 40)[..12]),
        },
        Broken {
            name: "ipv4 ihl below 5",
            reason: Reason::BadIhl,
            bytes: {
                let mut h = ipv4_header(s4, d4, 6, 64, 0, 0, 40);
                h[0] = 0x44;
                v4_with(h, &tcp)
            },
        },
        Broken {
            name: "ipv4 options past the end",
            reason: Reason::Truncated,
            bytes: {
                let mut h = ipv4_header(s4, d4, 6, 64, 0, 0, 40);
                h[0] = 0x4f;
                eth(0, ETH_P_IP, &h)
            },
        },
        Broken {
            name: "ipv4 total length below the header",
            reason: Reason::BadIhl,
            bytes: v4_with(ipv4_header(s4, d4, 6, 64, 0, 0, 16), &tcp),
        },
        Broken {
            name: "ipv4 ethertype, version 6",
            reason: Reason::Malformed,
            bytes: {
                let mut h = ipv4_header(s4, d4, 6, 64, 0, 0, 40);
                h[0] = 0x65;
                v4_with(h, &tcp)
            },
        },
        Broken {
            name: "ipv4 tcp header cut short",
            reason: Reason::Truncated,
            bytes: v4_with(ipv4_header(s4, d4, 6, 64, 0, 0, 30), &tcp[..10]),
        },
        Broken {
            name: "ipv4 udp header cut short",
            reason: Reason::Truncated,
            bytes: v4_with(ipv4_header(s4, d4, 17, 64, 0, 0, 24), &tcp[..4]),
        },
        Broken {
            name: "ipv4 first fragment without the whole tcp header",
            reason: Reason::FragTooShort,
            bytes: v4_with(ipv4_header(s4, d4, 6, 64, 0, v4_frag(true, 0), 36), &tcp[..16]),
        },
        Broken {
            name: "ipv4 tcp fragment at offset 8 (RFC 1858)",
            reason: Reason::FragOverlap,
            bytes: v4_with(ipv4_header(s4, d4, 6, 64, 0, v4_frag(false, 1), 40), &tcp),
        },
        Broken {
            name: "ipv6 header cut short",
            reason: Reason::Truncated,
            bytes: eth(0, ETH_P_IPV6, &ipv6_header(s6, d6, 6, 64, 20)[..30]),
        },
        Broken {
            name: "ipv6 ethertype, version 4",
            reason: Reason::Malformed,
            bytes: {
                let mut h = ipv6_header(s6, d6, 6, 64, 20);
                h[0] = 0x45;
                h.extend_from_slice(&tcp);
                eth(0, ETH_P_IPV6, &h)
            },
        },
    ];
    // A chain one header longer than the parser walks.
    let mut body = Vec::new();
    let n = allowgate_ebpf::MAX_V6_EXT_HDRS + 1;
    for i in 0..n {
        body.extend_from_slice(&ext_header(60, if i + 1 == n { 6 } else { 60 }));
    }
    body.extend_from_slice(&tcp);
    let mut h = ipv6_header(s6, d6, 60, 64, body.len());
    h.extend_from_slice(&body);
    out.push(Broken {
        name: "ipv6 extension chain past the bound",
        reason: Reason::V6ChainTooLong,
        bytes: eth(0, ETH_P_IPV6, &h),
    });

    // First fragment whose TCP header is cut: the fragment does not hold the L4 header.
    let mut body = fragment_header(6, 0, true);
    body.extend_from_slice(&tcp[..10]);
    let mut h = ipv6_header(s6, d6, 44, 64, body.len());
    h.extend_from_slice(&body);
    out.push(Broken {
        name: "ipv6 first fragment without the tcp header",
        reason: Reason::V6FragChain,
        bytes: eth(0, ETH_P_IPV6, &h),
    });

    // First fragment whose chain continues past its end.
    let mut body = fragment_header(60, 0, true);
    body.extend_from_slice(&ext_header(60, 6)[..4]);
    let mut h = ipv6_header(s6, d6, 44, 64, body.len());
    h.extend_from_slice(&body);
    out.push(Broken {
        name: "ipv6 first fragment without the whole chain",
        reason: Reason::V6FragChain,
        bytes: eth(0, ETH_P_IPV6, &h),
    });

    // Unfragmented, a hop-by-hop header running past the end.
    let mut h = ipv6_header(s6, d6, 0, 64, 4);
    h.extend_from_slice(&ext_header(0, 6)[..4]);
    out.push(Broken {
        name: "ipv6 hop-by-hop past the end",
        reason: Reason::Truncated,
        bytes: eth(0, ETH_P_IPV6, &h),
    });

    // Unfragmented, the TCP header cut after a destination-options header.
    let mut body = ext_header(60, 6);
    body.extend_from_slice(&tcp[..12]);
    let mut h = ipv6_header(s6, d6, 60, 64, body.len());
    h.extend_from_slice(&body);
    out.push(Broken {
        name: "ipv6 tcp header cut short",
        reason: Reason::Truncated,
        bytes: eth(0, ETH_P_IPV6, &h),
    });
    out
}
