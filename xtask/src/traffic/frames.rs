//! The frames each kind of traffic sends, built here with valid checksums (the receiving
//! stack must take what a filter passes), and the addresses they come from: documentation
//! ranges only, spoofed sources included.
//!
//! A flood changes every frame (source, ports, sequence numbers), so a filter that
//! tracks flows meets a new one at each frame, as under a real flood; the steady kinds
//! (denied, allowed) send one frame again and again.

use std::net::Ipv4Addr;

use crate::benchkit::XorShift;

use super::cases::Traffic;

/// The receiver's address and its gateway (the generator's veth end, by a permanent
/// neighbour entry): its answers to spoofed sources leave at once, as a host behind a
/// router's would, rather than wait on ARP for addresses nobody has.
pub(crate) const RECEIVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub(crate) const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// A source every filter here lets in (an `[[allow]]` ingress entry for udp/9).
pub(crate) const ALLOWED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// A source no filter lists.
pub(crate) const DENIED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// A documentation address added to the catalog as one of its tcp/443 peers (the real
/// catalog's addresses are judged with test runs only, never sent): the source of the
/// spoofed ACKs. allowgate lets its answers in only on a tracked flow.
pub(crate) const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 44);
pub(crate) const PEER_PORT: u16 = 443;
/// Learned addresses of the `CatalogLearned` receiver: 198.51.100.100 and up.
pub(crate) const LEARNED_FIRST: u8 = 100;
pub(crate) const LEARNED: u8 = 64;
/// The discard port: nothing listens, so allowed frames and junk end in the UDP layer.
pub(crate) const DST_PORT: u16 = 9;
pub(crate) const SRC_PORT: u16 = 40000;
/// The open port of the flood receivers: a web server listens there.
pub(crate) const WEB_PORT: u16 = 80;
pub(crate) const SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
pub(crate) const RECEIVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
/// 60 bytes, 64 on the wire with the FCS: the smallest frame, the dearest per byte.
pub(crate) const FRAME_LEN: usize = 60;

const ETH: usize = 14;
const IP: usize = ETH;
const L4: usize = ETH + 20;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ACK: u8 = 0x10;
const SYN: u8 = 0x02;

/// Where a spoofed frame may come from: the two documentation /24s beyond the
/// receiver's own, less every address some filter here lists. 442 addresses; a flood
/// from all of IPv4 would have more, and a filter keyed by address meets the same ones
/// again here (its caches are kinder than under a real flood; the README says so).
pub(crate) fn spoofable_sources() -> Vec<Ipv4Addr> {
    let learned = LEARNED_FIRST..LEARNED_FIRST + LEARNED;
    let mut out = Vec::new();
    for net in [[198, 51, 100], [203, 0, 113]] {
        for host in 1..=254u8 {
            let addr = Ipv4Addr::new(net[0], net[1], net[2], host);
            let listed = addr == ALLOWED || addr == PEER || (net[0] == 198 && learned.contains(&host));
            if !listed {
                out.push(addr);
            }
        }
    }
    out
}

pub(crate) fn mac(b: &[u8; 6]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// The frames of one kind of traffic, one after the other.
pub(crate) struct FrameSource {
    traffic: Traffic,
    frame: [u8; FRAME_LEN],
    rng: XorShift,
    sources: Vec<Ipv4Addr>,
}

impl FrameSource {
    pub(crate) fn new(traffic: Traffic, seed: u64) -> FrameSource {
        let mut source = FrameSource {
            traffic,
            frame: [0; FRAME_LEN],
            rng: XorShift::new(seed | 1),
            sources: spoofable_sources(),
        };
        match traffic {
            Traffic::Denied => udp(&mut source.frame, DENIED, SRC_PORT, DST_PORT),
            Traffic::Allowed => udp(&mut source.frame, ALLOWED, SRC_PORT, DST_PORT),
            Traffic::SpoofedAck | Traffic::SpoofedSyn | Traffic::Junk => {
                source.advance();
            }
        }
        source
    }

    /// The next frame. Steady traffic gives the same bytes each time.
    pub(crate) fn next_frame(&mut self) -> &[u8; FRAME_LEN] {
        if self.traffic.varies() {
            self.advance();
        }
        &self.frame
    }

    fn advance(&mut self) {
        let r = self.rng.next();
        let seq = (r >> 32) as u32;
        match self.traffic {
            Traffic::Denied | Traffic::Allowed => {}
            // An ACK scan of the ephemeral range (32768-60999), from the peer's port.
            Traffic::SpoofedAck => {
                let port = 32768 + (r % 28232) as u16;
                tcp(&mut self.frame, PEER, PEER_PORT, port, ACK, seq, seq.rotate_left(7));
            }
            Traffic::SpoofedSyn => {
                let src = self.sources[(r % self.sources.len() as u64) as usize];
                let port = 1024 + ((r >> 16) % 64512) as u16;
                tcp(&mut self.frame, src, port, WEB_PORT, SYN, seq, 0);
            }
            Traffic::Junk => {
                let src = self.sources[(r % self.sources.len() as u64) as usize];
                let port = 1024 + ((r >> 16) % 64512) as u16;
                udp(&mut self.frame, src, port, DST_PORT);
            }
        }
    }
}

fn ether_ipv4(f: &mut [u8; FRAME_LEN], src: Ipv4Addr, proto: u8, l4_len: usize) {
    f.fill(0);
    f[..6].copy_from_slice(&RECEIVER_MAC);
    f[6..12].copy_from_slice(&SENDER_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[IP..L4];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&RECEIVER.octets());
    let sum = fold(sum16(ip));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// A UDP datagram with an 18-byte payload of zeros and checksum 0 (none, allowed on
/// IPv4).
fn udp(f: &mut [u8; FRAME_LEN], src: Ipv4Addr, sport: u16, dport: u16) {
    let len = 8 + 18;
    ether_ipv4(f, src, UDP, len);
    f[L4..L4 + 2].copy_from_slice(&sport.to_be_bytes());
    f[L4 + 2..L4 + 4].copy_from_slice(&dport.to_be_bytes());
    f[L4 + 4..L4 + 6].copy_from_slice(&(len as u16).to_be_bytes());
}

/// A TCP segment without options or payload, its checksum over the pseudo-header
/// (RFC 793); the frame's last 6 bytes are Ethernet padding.
fn tcp(f: &mut [u8; FRAME_LEN], src: Ipv4Addr, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) {
    ether_ipv4(f, src, TCP, 20);
    let t = &mut f[L4..L4 + 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let pseudo = sum16(&src.octets()) + sum16(&RECEIVER.octets()) + u32::from(TCP) + 20;
    let sum = fold(pseudo + sum16(t));
    t[16..18].copy_from_slice(&sum.to_be_bytes());
}

/// The one's-complement sum (RFC 1071) of 16-bit words, not yet folded.
fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header whose checksum is right sums to 0xffff with it (RFC 1071).
    fn verifies(parts: &[&[u8]]) -> bool {
        fold(parts.iter().map(|p| sum16(p)).sum()) == 0
    }

    #[test]
    fn every_kind_has_valid_checksums_and_the_addresses_meant() {
        for traffic in Traffic::ALL {
            let mut source = FrameSource::new(traffic, 7);
            for _ in 0..1000 {
                let f = *source.next_frame();
                assert!(verifies(&[&f[IP..L4]]), "{traffic:?}: IPv4 header checksum");
                let src = Ipv4Addr::new(f[IP + 12], f[IP + 13], f[IP + 14], f[IP + 15]);
                assert_eq!(&f[IP + 16..IP + 20], &RECEIVER.octets());
                assert!(
                    src.octets()[..3] == [198, 51, 100] || src.octets()[..3] == [203, 0, 113],
                    "{traffic:?}: {src} is outside the documentation ranges"
                );
                let dport = u16::from_be_bytes([f[L4 + 2], f[L4 + 3]]);
                if f[IP + 9] == TCP {
                    let pseudo = [&src.octets()[..], &RECEIVER.octets(), &[0, TCP, 0, 20]].concat();
                    assert!(verifies(&[&pseudo, &f[L4..L4 + 20]]), "{traffic:?}: TCP checksum");
                }
                match traffic {
                    Traffic::Denied => assert_eq!(src, DENIED),
                    Traffic::Allowed => assert_eq!(src, ALLOWED),
                    Traffic::SpoofedAck => {
                        assert_eq!((src, f[L4 + 13], dport >= 32768), (PEER, ACK, true));
                    }
                    Traffic::SpoofedSyn => {
                        assert_eq!((f[L4 + 13], dport), (SYN, WEB_PORT));
                        assert!(spoofable_sources().contains(&src));
                    }
                    Traffic::Junk => {
                        assert_eq!((f[IP + 9], dport), (UDP, DST_PORT));
                        assert!(spoofable_sources().contains(&src));
                    }
                }
            }
        }
    }

    #[test]
    fn floods_change_every_frame_and_steady_traffic_none() {
        for traffic in Traffic::ALL {
            let mut source = FrameSource::new(traffic, 11);
            let frames: std::collections::HashSet<[u8; FRAME_LEN]> = (0..500).map(|_| *source.next_frame()).collect();
            let want = if traffic.varies() { 500 } else { 1 };
            assert_eq!(frames.len(), want, "{traffic:?}");
        }
    }

    #[test]
    fn spoofed_sources_avoid_every_listed_address() {
        let sources = spoofable_sources();
        assert!(!sources.contains(&ALLOWED) && !sources.contains(&PEER) && !sources.contains(&RECEIVER));
        assert!(!sources.contains(&Ipv4Addr::new(198, 51, 100, LEARNED_FIRST + 3)));
        assert!(sources.contains(&DENIED));
        assert_eq!(sources.len(), 2 * 254 - 2 - usize::from(LEARNED));
    }
}
