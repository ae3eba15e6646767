//! Raw frames for the tests of the BPF programs: Ethernet, VLAN tags, IPv4 (with
//! options, fragments, and fields set wrong on purpose), IPv6 with extension headers
//! and fragments, TCP, UDP and ICMP headers. `packet` builds well-formed frames from
//! the reference model's packets; these build anything, broken frames included.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const SYN_ACK: u8 = SYN | ACK;

pub const IPV4_MF: u16 = 0x2000;

pub fn ether(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    vlan_ether(&[], ethertype, payload)
}

/// Ethernet with a VLAN tag (TPID, TCI) per TPID in `tags`, outermost first.
pub fn vlan_ether(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut pkt = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (i, tpid) in tags.iter().enumerate() {
        pkt.extend_from_slice(&tpid.to_be_bytes());
        pkt.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    pkt.extend_from_slice(&ethertype.to_be_bytes());
    pkt.extend_from_slice(payload);
    pkt
}

pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

pub fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&8u16.to_be_bytes());
    h
}

pub fn icmp(kind: u8) -> Vec<u8> {
    vec![kind, 0, 0, 0, 0, 0, 0, 0]
}

/// An IPv4 header (with `options`, a multiple of 4 bytes) and its payload.
/// `frag` is the flags-and-offset field; version and IHL can be overridden.
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub frag: u16,
    pub options: Vec<u8>,
    pub version: u8,
    pub ihl: Option<u8>,
    pub tot_len: Option<u16>,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        V4 {
            src,
            dst,
            proto,
            frag: 0,
            options: Vec::new(),
            version: 4,
            ihl: None,
            tot_len: None,
        }
    }

    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        assert!(
            self.options.len().is_multiple_of(4),
            "IPv4 options come in 4-byte words"
        );
        let hdr_len = 20 + self.options.len();
        let ihl = self.ihl.unwrap_or((hdr_len / 4) as u8);
        let tot_len = self.tot_len.unwrap_or((hdr_len + payload.len()) as u16);
        let mut h = vec![0u8; 20];
        h[0] = (self.version << 4) | ihl;
        h[2..4].copy_from_slice(&tot_len.to_be_bytes());
        h[6..8].copy_from_slice(&self.frag.to_be_bytes());
        h[8] = 64;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        h.extend_from_slice(payload);
        ether(ETH_P_IP, &h)
    }
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    V4::new(src, dst, proto).build(payload)
}

/// The IPv6 header and what follows it (extension headers already in `payload`).
pub fn ipv6_raw(src: Ipv6Addr, dst: Ipv6Addr, nexthdr: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 6 << 4;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = nexthdr;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    ether(ETH_P_IPV6, &h)
}

pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, nexthdr: u8, payload: &[u8]) -> Vec<u8> {
    ipv6_raw(src, dst, nexthdr, 64, payload)
}

/// An 8-byte hop-by-hop / destination-options / routing header.
pub fn v6_opt(nexthdr: u8) -> Vec<u8> {
    vec![nexthdr, 0, 1, 4, 0, 0, 0, 0] // PadN over the 6 option bytes
}

pub fn v6_frag(nexthdr: u8, offset_units: u16, more: bool) -> Vec<u8> {
    let field = (offset_units << 3) | u16::from(more);
    let mut h = vec![nexthdr, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    h
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
