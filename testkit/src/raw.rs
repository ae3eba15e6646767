//! Packets the kernel's own sockets never send, sent for real from raw sockets in a
//! test's namespace, and an ear for every TCP segment a namespace receives: a bare ACK
//! from port 443 with no connection behind it (an ACK scan), and the RSTs it draws.
//! Checksums are computed here (RFC 1071, with the RFC 793 / RFC 8200 pseudo-headers),
//! so the receiving kernel takes the segments as genuine.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

pub use crate::frames::{ACK, ICMP, ICMPV6, SYN, SYN_ACK, TCP, UDP};

pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;

/// The Internet checksum (RFC 1071) of the bytes of `parts` taken as one run.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for &byte in parts.iter().flat_map(|p| p.iter()) {
        match odd.take() {
            Some(high) => sum += u32::from(u16::from_be_bytes([high, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(high) = odd {
        sum += u32::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header a TCP or UDP checksum covers: RFC 793 for IPv4, RFC 8200 8.1 for
/// IPv6.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Vec::with_capacity(12);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(&[0, proto]);
            h.extend_from_slice(&u16::try_from(l4_len).expect("an IPv4 datagram").to_be_bytes());
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = Vec::with_capacity(40);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(&u32::try_from(l4_len).expect("an IPv6 payload").to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, proto]);
            h
        }
        _ => panic!("{src} and {dst} are of different families"),
    }
}

/// A TCP segment to build: ports, numbers, flags and data; no options.
#[derive(Clone, Debug)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload: Vec<u8>,
}

impl Tcp {
    /// A bare ACK (what an ACK scan sends): no data, an arbitrary acknowledgement.
    pub fn ack(sport: u16, dport: u16) -> Tcp {
        Tcp {
            sport,
            dport,
            seq: 0x1000_0000 ^ u32::from(dport),
            ack: 0x2000_0000 ^ u32::from(dport),
            flags: ACK,
            window: 1024,
            payload: Vec::new(),
        }
    }

    /// The header (checksum filled in for `src` -> `dst`) and the data.
    pub fn segment(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut s = vec![0u8; 20];
        s[0..2].copy_from_slice(&self.sport.to_be_bytes());
        s[2..4].copy_from_slice(&self.dport.to_be_bytes());
        s[4..8].copy_from_slice(&self.seq.to_be_bytes());
        s[8..12].copy_from_slice(&self.ack.to_be_bytes());
        s[12] = 5 << 4;
        s[13] = self.flags;
        s[14..16].copy_from_slice(&self.window.to_be_bytes());
        s.extend_from_slice(&self.payload);
        let sum = internet_checksum(&[&pseudo_header(src, dst, TCP, s.len()), &s]);
        s[16..18].copy_from_slice(&sum.to_be_bytes());
        s
    }
}

/// A UDP datagram, checksum filled in for `src` -> `dst`.
pub fn udp_datagram(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut d = vec![0u8; 8];
    d[0..2].copy_from_slice(&sport.to_be_bytes());
    d[2..4].copy_from_slice(&dport.to_be_bytes());
    d[4..6].copy_from_slice(&u16::try_from(len).expect("a UDP datagram").to_be_bytes());
    d.extend_from_slice(payload);
    let sum = match internet_checksum(&[&pseudo_header(src, dst, UDP, len), &d]) {
        0 => 0xffff, // 0 means "no checksum" (RFC 768), and is forbidden over IPv6
        s => s,
    };
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    d
}

/// An IPv4 header (no options, DF set, TTL 64, checksum filled in) and `payload`.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_fragment(src, dst, proto, 0x5a17, 0x4000, payload)
}

/// An IPv4 header with identification `id` and flags-and-offset `frag` (MF is 0x2000,
/// the offset in 8-byte units), and `payload`.
pub fn ipv4_fragment(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("an IPv4 packet");
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 header (hop limit 64) and `payload`, which starts with `next_header`'s.
pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 6 << 4;
    h[4..6].copy_from_slice(&u16::try_from(payload.len()).expect("an IPv6 payload").to_be_bytes());
    h[6] = next_header;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 non-first fragment: the header, a fragment header (next header `proto`,
/// offset in 8-byte units, M clear, identification `id`) and `payload`.
pub fn ipv6_later_fragment(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, id: u32, offset: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![proto, 0, 0, 0, 0, 0, 0, 0];
    body[2..4].copy_from_slice(&(offset << 3).to_be_bytes());
    body[4..8].copy_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    ipv6_packet(src, dst, 44, &body)
}

/// A UDP datagram from `src`:`sport` to `dst`:`dport` as it left, IP header and all:
/// what an ICMP error about it quotes.
pub fn udp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp = udp_datagram(src, dst, sport, dport, payload);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_packet(s, d, UDP, &udp),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_packet(s, d, UDP, &udp),
        _ => panic!("{src} and {dst} are of different families"),
    }
}

/// A port-unreachable error from `src` to `dst` (ICMP type 3 code 3, or ICMPv6 type 1
/// code 4) quoting `quoted`, the packet it answers (at least its IP header and 8 bytes
/// of what followed), checksum filled in: ICMP's over the message, ICMPv6's with the
/// pseudo-header.
pub fn port_unreachable(src: IpAddr, dst: IpAddr, quoted: &[u8]) -> Vec<u8> {
    let (kind, code) = if src.is_ipv4() { (3, 3) } else { (1, 4) };
    let mut m = vec![kind, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(quoted);
    let sum = match src {
        IpAddr::V4(_) => internet_checksum(&[&m]),
        IpAddr::V6(_) => internet_checksum(&[&pseudo_header(src, dst, ICMPV6, m.len()), &m]),
    };
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn raw_socket(family: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) has no memory preconditions.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends hand-made segments from `src`, an address of the namespace the sender was
/// made in. IPv4 goes out whole (`IPPROTO_RAW` implies `IP_HDRINCL`: the header is
/// ours); IPv6 has no such switch, so the kernel writes the IPv6 header, from the
/// address the socket is bound to, and leaves the TCP/UDP checksum as built here.
pub struct RawSender {
    fd: OwnedFd,
    src: IpAddr,
    proto: u8,
}

impl RawSender {
    /// Must run on a thread inside the namespace that holds `src`.
    pub fn new(src: IpAddr, proto: u8) -> io::Result<RawSender> {
        let fd = match src {
            IpAddr::V4(_) => raw_socket(libc::AF_INET, libc::IPPROTO_RAW)?,
            IpAddr::V6(_) => {
                let fd = raw_socket(libc::AF_INET6, libc::c_int::from(proto))?;
                let (addr, len) = sockaddr(src);
                // SAFETY: addr is a valid sockaddr_in6 of `len` bytes.
                let rc = unsafe { libc::bind(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                fd
            }
        };
        Ok(RawSender { fd, src, proto })
    }

    /// Sends `l4` (a whole TCP segment, UDP datagram or ICMP message, checksum
    /// included) to `dst`.
    pub fn send_l4(&self, dst: IpAddr, l4: &[u8]) -> io::Result<()> {
        let packet = match (self.src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_packet(s, d, self.proto, l4),
            (IpAddr::V6(_), IpAddr::V6(_)) => l4.to_vec(),
            _ => panic!("{} and {dst} are of different families", self.src),
        };
        send_to(&self.fd, dst, &packet)
    }

    /// Sends a whole IP packet of our own making (IPv4 header and all) to `dst`: its
    /// source need not be the sender's. IPv4 senders only.
    pub fn send_ip(&self, dst: IpAddr, packet: &[u8]) -> io::Result<()> {
        assert!(
            self.src.is_ipv4(),
            "send_ip takes whole IPv4 packets; use Raw6Sender for IPv6"
        );
        send_to(&self.fd, dst, packet)
    }

    pub fn send_tcp(&self, dst: IpAddr, tcp: &Tcp) -> io::Result<()> {
        assert_eq!(
            self.proto, TCP,
            "a TCP segment from a sender made for protocol {}",
            self.proto
        );
        self.send_l4(dst, &tcp.segment(self.src, dst))
    }
}

fn send_to(fd: &OwnedFd, dst: IpAddr, packet: &[u8]) -> io::Result<()> {
    let (addr, len) = sockaddr(dst);
    // SAFETY: the buffer and the address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    assert_eq!(sent as usize, packet.len(), "a raw send went out short");
    Ok(())
}

/// Sends whole IPv6 packets of our own making (`IPPROTO_RAW` implies IPV6_HDRINCL on
/// Linux): the source is whatever the packet says. Made on a thread inside the
/// namespace it sends from.
pub struct Raw6Sender {
    fd: OwnedFd,
}

impl Raw6Sender {
    pub fn new() -> io::Result<Raw6Sender> {
        Ok(Raw6Sender {
            fd: raw_socket(libc::AF_INET6, libc::IPPROTO_RAW)?,
        })
    }

    pub fn send_ip(&self, dst: Ipv6Addr, packet: &[u8]) -> io::Result<()> {
        send_to(&self.fd, IpAddr::V6(dst), packet)
    }
}

/// A TCP segment a namespace received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenTcp {
    pub src: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Payload bytes (IPv4: from the total length; IPv6: what the socket read).
    pub len: usize,
}

impl SeenTcp {
    /// The sequence number after it: what its sender sends next.
    pub fn next(&self) -> u32 {
        let syn_fin = u32::from(self.flags & SYN != 0) + u32::from(self.flags & FIN != 0);
        self.seq.wrapping_add(self.len as u32).wrapping_add(syn_fin)
    }
}

impl SeenTcp {
    pub fn is_rst(&self) -> bool {
        self.flags & RST != 0
    }
}

impl std::fmt::Display for SeenTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [(SYN, "S"), (ACK, "A"), (RST, "R"), (FIN, "F"), (PSH, "P")];
        let flags: String = names
            .iter()
            .filter(|(b, _)| self.flags & b != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{} port {} -> port {} [{flags}]", self.src, self.sport, self.dport)
    }
}

/// Hears every TCP segment that arrives in the namespace it was made in, for one
/// family (a raw `IPPROTO_TCP` socket gets a copy of each; the kernel's own handling
/// goes on as before). Made before the probes go out, so nothing is missed.
pub struct TcpEar {
    fd: OwnedFd,
    v6: bool,
}

impl TcpEar {
    /// Must run on a thread inside the namespace.
    pub fn new(v6: bool) -> io::Result<TcpEar> {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        let fd = raw_socket(family, libc::IPPROTO_TCP)?;
        Ok(TcpEar { fd, v6 })
    }

    /// Every segment heard until `wait` has passed.
    pub fn listen(&self, wait: Duration) -> Vec<SeenTcp> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return seen;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
            if n <= 0 {
                continue;
            }
            // SAFETY: zeroed sockaddr_storage is valid; its length is passed in.
            let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: buf and from are valid for the lengths given.
            let got = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if got <= 0 {
                continue;
            }
            if let Some(s) = self.parse(&buf[..got as usize], &from) {
                seen.push(s);
            }
        }
    }

    /// An IPv4 raw socket reads the IP header too; an IPv6 one reads from the TCP
    /// header on and names the source in the address.
    fn parse(&self, bytes: &[u8], from: &libc::sockaddr_storage) -> Option<SeenTcp> {
        let (src, tcp) = if self.v6 {
            // SAFETY: an AF_INET6 socket fills a sockaddr_in6.
            let sin6 = unsafe { &*(from as *const _ as *const libc::sockaddr_in6) };
            (IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)), bytes)
        } else {
            let ihl = usize::from(bytes.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*bytes.get(2)?, bytes[3]]));
            let src = Ipv4Addr::new(*bytes.get(12)?, bytes[13], bytes[14], bytes[15]);
            (IpAddr::V4(src), bytes.get(ihl..total.max(ihl).min(bytes.len()))?)
        };
        if tcp.len() < 20 {
            return None;
        }
        let word = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
        let header = usize::from(tcp[12] >> 4) * 4;
        Some(SeenTcp {
            src,
            sport: u16::from_be_bytes([tcp[0], tcp[1]]),
            dport: u16::from_be_bytes([tcp[2], tcp[3]]),
            flags: tcp[13],
            seq: word(4),
            ack: word(8),
            len: tcp.len().saturating_sub(header),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // RFC 1071 section 3's example: the sum is ddf2, the checksum its complement.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&[&bytes]), !0xddf2);
        // Split anywhere, odd pieces included, it is the same run of bytes.
        assert_eq!(internet_checksum(&[&bytes[..3], &bytes[3..]]), !0xddf2);
        // An odd length pads with a zero byte.
        assert_eq!(internet_checksum(&[&[0xab]]), !0xab00);
    }

    #[test]
    fn segments_check_out_with_another_implementation() {
        let pairs: [(IpAddr, IpAddr); 2] = [
            ("198.51.100.10".parse().unwrap(), "192.0.2.1".parse().unwrap()),
            ("2001:db8:1::2".parse().unwrap(), "2001:db8:1::1".parse().unwrap()),
        ];
        for (src, dst) in pairs {
            for payload in [&b""[..], b"odd", b"even"] {
                let mut tcp = Tcp::ack(443, 8080);
                tcp.payload = payload.to_vec();
                let seg = tcp.segment(src, dst);
                let (h, rest) = etherparse::TcpHeader::from_slice(&seg).unwrap();
                assert_eq!(rest, payload);
                assert!(h.ack && !h.syn && !h.rst);
                let want = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), rest),
                    (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), rest),
                    _ => unreachable!(),
                }
                .unwrap();
                assert_eq!(h.checksum, want, "{src} -> {dst}, {payload:?}");

                let d = udp_datagram(src, dst, 53, 5555, payload);
                let (u, rest) = etherparse::UdpHeader::from_slice(&d).unwrap();
                let want = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => u.calc_checksum_ipv4_raw(s.octets(), d.octets(), rest),
                    (IpAddr::V6(s), IpAddr::V6(d)) => u.calc_checksum_ipv6_raw(s.octets(), d.octets(), rest),
                    _ => unreachable!(),
                }
                .unwrap();
                assert_eq!(u.checksum, want, "udp {src} -> {dst}, {payload:?}");
            }
        }
    }

    #[test]
    fn icmp_errors_check_out() {
        // A correct checksum makes the sum over what it covers zero.
        let (h4, p4): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.10".parse().unwrap());
        let quoted = udp_packet(h4, p4, 40000, 7000, b"x");
        let m = port_unreachable(p4, h4, &quoted);
        assert_eq!(&m[..2], &[3, 3]);
        assert_eq!(internet_checksum(&[&m]), 0);
        let (q, rest) = etherparse::Ipv4Header::from_slice(&m[8..]).unwrap();
        assert_eq!(
            (q.source, q.destination, q.protocol.0),
            ([192, 0, 2, 1], [198, 51, 100, 10], UDP)
        );
        assert_eq!(&rest[..4], &[0x9c, 0x40, 0x1b, 0x58]);

        let (h6, p6): (IpAddr, IpAddr) = ("2001:db8:1::1".parse().unwrap(), "2001:db8:1::2".parse().unwrap());
        let quoted = udp_packet(h6, p6, 40000, 7000, b"x");
        let m = port_unreachable(p6, h6, &quoted);
        assert_eq!(&m[..2], &[1, 4]);
        assert_eq!(internet_checksum(&[&pseudo_header(p6, h6, ICMPV6, m.len()), &m]), 0);
        let (q, rest) = etherparse::Ipv6Header::from_slice(&m[8..]).unwrap();
        assert_eq!(q.next_header.0, UDP);
        assert_eq!(usize::from(q.payload_length), rest.len());
        let (u, _) = etherparse::UdpHeader::from_slice(rest).unwrap();
        assert_eq!(
            u.checksum,
            u.calc_checksum_ipv6_raw(q.source, q.destination, &rest[8..]).unwrap()
        );
    }

    #[test]
    fn the_ipv4_header_checks_out() {
        let seg = Tcp::ack(443, 22).segment("198.51.100.10".parse().unwrap(), "192.0.2.1".parse().unwrap());
        let p = ipv4_packet(
            "198.51.100.10".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            TCP,
            &seg,
        );
        let (h, rest) = etherparse::Ipv4Header::from_slice(&p).unwrap();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.total_len as usize, p.len());
        assert_eq!(rest, &seg[..]);
        // The sum over a header with its checksum in place is zero.
        assert_eq!(internet_checksum(&[&p[..20]]), 0);
    }
}
