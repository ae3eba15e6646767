//! The one reader of the frames that carry DNS answers, on etherparse: Ethernet, up to
//! `MAX_VLAN_TAGS` VLAN tags (802.1Q, and 802.1ad QinQ outside it), IPv4 (options
//! skipped) or IPv6 (extension headers walked, as the XDP program walks them before it
//! holds an answer), then UDP. The learner reads held answers with it, mends their UDP
//! checksum with it and releases them with it; the tests build their frames with the
//! same crate.

use std::net::IpAddr;

use etherparse::{
    EtherType, Ethernet2Slice, IpNumber, Ipv4Slice, Ipv6Slice, LaxNetSlice, LaxSlicedPacket, LenSource,
    SingleVlanSlice, TransportSlice, UdpSlice,
    err::{self, Layer, LenError},
};

/// VLAN tags parsed before the IP header (802.1Q, and 802.1ad QinQ outside it).
pub const MAX_VLAN_TAGS: usize = 2;

/// Why a frame is not a UDP datagram this reader takes.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame ends inside its {layer} header: {need} bytes needed, {have} present")]
    Truncated {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    #[error("frame carries more than {max} vlan tags")]
    TooManyVlanTags { max: usize },
    #[error("ethertype {ethertype:#06x} is neither ipv4 nor ipv6")]
    NotIp { ethertype: u16 },
    #[error("ip header says version {found} under the ipv{expected} ethertype")]
    IpVersion { expected: u8, found: u8 },
    #[error("ipv4 header length {ihl} is below the minimum of 5 words")]
    BadIhl { ihl: u8 },
    #[error("{layer} length {claimed} does not fit the {have} bytes the frame carries")]
    BadLength {
        layer: &'static str,
        claimed: usize,
        have: usize,
    },
    #[error("{ip} fragment: datagrams split over fragments are not read")]
    Fragment { ip: &'static str },
    #[error("ip protocol {protocol} is not udp")]
    NotUdp { protocol: u8 },
    #[error("an ipv6 extension header is malformed")]
    Ipv6Extension {
        #[source]
        source: err::ipv6_exts::HeaderError,
    },
    #[error("an ip authentication header is malformed")]
    IpAuth {
        #[source]
        source: err::ip_auth::HeaderError,
    },
}

/// A UDP datagram found in a frame.
#[derive(Clone, Copy, Debug)]
pub struct UdpFrame<'a> {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub source_port: u16,
    pub destination_port: u16,
    /// The UDP payload, cut at the length the UDP header gives.
    pub payload: &'a [u8],
    /// Where the UDP header starts in the frame.
    pub udp_offset: usize,
    /// The UDP header's length field and checksum field.
    pub udp_len: u16,
    pub checksum: u16,
}

/// The ethertype and what follows it, past the Ethernet header and up to
/// `MAX_VLAN_TAGS` VLAN tags.
fn behind_vlans(frame: &[u8]) -> Result<(EtherType, &[u8]), FrameError> {
    let ethernet = Ethernet2Slice::from_slice_without_fcs(frame).map_err(from_len)?;
    let mut ethertype = ethernet.ether_type();
    let mut rest = ethernet.payload_slice();
    let mut tags = 0;
    while ethertype == EtherType::VLAN_TAGGED_FRAME || ethertype == EtherType::PROVIDER_BRIDGING {
        if tags == MAX_VLAN_TAGS {
            return Err(FrameError::TooManyVlanTags { max: MAX_VLAN_TAGS });
        }
        let vlan = SingleVlanSlice::from_slice(rest).map_err(from_len)?;
        ethertype = vlan.ether_type();
        rest = vlan.payload_slice();
        tags += 1;
    }
    Ok((ethertype, rest))
}

/// An IPv4 header error as this reader names it.
fn ipv4_header_error(e: err::ipv4::HeaderError) -> FrameError {
    match e {
        err::ipv4::HeaderError::UnexpectedVersion { version_number } => FrameError::IpVersion {
            expected: 4,
            found: version_number,
        },
        err::ipv4::HeaderError::HeaderLengthSmallerThanHeader { ihl } => FrameError::BadIhl { ihl },
    }
}

/// An IPv6 header error as this reader names it.
fn ipv6_header_error(e: err::ipv6::HeaderError) -> FrameError {
    match e {
        err::ipv6::HeaderError::UnexpectedVersion { version_number } => FrameError::IpVersion {
            expected: 6,
            found: version_number,
        },
    }
}

/// Reads the UDP datagram out of an Ethernet frame. Bytes after the IP packet (Ethernet
/// padding) are ignored; the UDP checksum is not checked (see `check_udp_checksum`).
/// Never panics.
pub fn parse_udp(frame: &[u8]) -> Result<UdpFrame<'_>, FrameError> {
    let (ethertype, rest) = behind_vlans(frame)?;
    let (source, destination, payload) = match ethertype {
        EtherType::IPV4 => {
            let ip = Ipv4Slice::from_slice(rest).map_err(|e| match e {
                err::ipv4::SliceError::Len(e) => from_len(e),
                err::ipv4::SliceError::Header(e) => ipv4_header_error(e),
                err::ipv4::SliceError::Exts(source) => FrameError::IpAuth { source },
            })?;
            let header = ip.header();
            (
                IpAddr::from(header.source_addr()),
                IpAddr::from(header.destination_addr()),
                ip.payload().clone(),
            )
        }
        EtherType::IPV6 => {
            let ip = Ipv6Slice::from_slice(rest).map_err(|e| match e {
                err::ipv6::SliceError::Len(e) => from_len(e),
                err::ipv6::SliceError::Header(e) => ipv6_header_error(e),
                err::ipv6::SliceError::Exts(source) => FrameError::Ipv6Extension { source },
            })?;
            let header = ip.header();
            (
                IpAddr::from(header.source_addr()),
                IpAddr::from(header.destination_addr()),
                ip.payload().clone(),
            )
        }
        other => return Err(FrameError::NotIp { ethertype: other.0 }),
    };
    let ip = if source.is_ipv4() { "ipv4" } else { "ipv6" };
    if payload.fragmented {
        return Err(FrameError::Fragment { ip });
    }
    if payload.ip_number != IpNumber::UDP {
        return Err(FrameError::NotUdp {
            protocol: payload.ip_number.0,
        });
    }
    let udp = UdpSlice::from_slice(payload.payload).map_err(from_len)?;
    // etherparse reads a length of 0 as "up to the end" (jumbograms); it is no UDP
    // length this reader accepts.
    if udp.length() < 8 {
        return Err(FrameError::BadLength {
            layer: "udp",
            claimed: usize::from(udp.length()),
            have: payload.payload.len(),
        });
    }
    Ok(UdpFrame {
        source,
        destination,
        source_port: udp.source_port(),
        destination_port: udp.destination_port(),
        payload: udp.payload(),
        udp_offset: udp.slice().as_ptr().addr() - frame.as_ptr().addr(),
        udp_len: udp.length(),
        checksum: udp.checksum(),
    })
}

/// The IP packet a frame carries, from its IP header to the length that header gives
/// (Ethernet padding and VLAN tags left out): what goes back to the stack through a
/// raw IP socket.
#[derive(Clone, Copy, Debug)]
pub struct IpInFrame<'a> {
    pub packet: &'a [u8],
    pub destination: IpAddr,
}

/// Finds the IP packet in `frame` as `parse_udp` does, without looking past the IP
/// header. Never panics.
pub fn ip_packet(frame: &[u8]) -> Result<IpInFrame<'_>, FrameError> {
    let (ethertype, rest) = behind_vlans(frame)?;
    let (len, destination) = match ethertype {
        EtherType::IPV4 => {
            let header = etherparse::Ipv4HeaderSlice::from_slice(rest).map_err(|e| match e {
                err::ipv4::HeaderSliceError::Len(e) => from_len(e),
                err::ipv4::HeaderSliceError::Content(err::ipv4::HeaderError::UnexpectedVersion { version_number }) => {
                    FrameError::IpVersion {
                        expected: 4,
                        found: version_number,
                    }
                }
                err::ipv4::HeaderSliceError::Content(err::ipv4::HeaderError::HeaderLengthSmallerThanHeader { ihl }) => {
                    FrameError::BadIhl { ihl }
                }
            })?;
            (usize::from(header.total_len()), IpAddr::from(header.destination_addr()))
        }
        EtherType::IPV6 => {
            let header = etherparse::Ipv6HeaderSlice::from_slice(rest).map_err(|e| match e {
                err::ipv6::HeaderSliceError::Len(e) => from_len(e),
                err::ipv6::HeaderSliceError::Content(err::ipv6::HeaderError::UnexpectedVersion { version_number }) => {
                    FrameError::IpVersion {
                        expected: 6,
                        found: version_number,
                    }
                }
            })?;
            (
                etherparse::Ipv6Header::LEN + usize::from(header.payload_length()),
                IpAddr::from(header.destination_addr()),
            )
        }
        other => return Err(FrameError::NotIp { ethertype: other.0 }),
    };
    match rest.get(..len) {
        Some(packet) => Ok(IpInFrame { packet, destination }),
        None => Err(FrameError::BadLength {
            layer: if destination.is_ipv4() { "ipv4" } else { "ipv6" },
            claimed: len,
            have: rest.len(),
        }),
    }
}

/// A length error as the layer it is about: a header cut short, or a length field that
/// does not fit what the frame carries.
fn from_len(e: LenError) -> FrameError {
    let layer = match e.layer {
        Layer::Ethernet2Header => "ethernet",
        Layer::VlanHeader => "vlan",
        Layer::Ipv4Header | Layer::Ipv4Packet => "ipv4",
        Layer::Ipv6Header => "ipv6",
        Layer::Ipv6Packet => "ipv6 payload",
        Layer::UdpHeader | Layer::UdpPayload => "udp",
        Layer::IpAuthHeader => "ip authentication",
        Layer::Ipv6ExtHeader
        | Layer::Ipv6HopByHopHeader
        | Layer::Ipv6DestOptionsHeader
        | Layer::Ipv6RouteHeader
        | Layer::Ipv6FragHeader => "ipv6 extension",
        _ => "frame",
    };
    let header_cut = e.len_source == LenSource::Slice
        && !matches!(e.layer, Layer::Ipv4Packet | Layer::Ipv6Packet | Layer::UdpPayload);
    if header_cut {
        FrameError::Truncated {
            layer,
            need: e.required_len,
            have: e.len,
        }
    } else {
        FrameError::BadLength {
            layer,
            claimed: e.required_len,
            have: e.len,
        }
    }
}

/// (server, DNS id, client port) of a held frame that may not parse as a whole: read
/// leniently (lengths taken from what the frame carries), as the data plane read it
/// when it held the frame, so that even a malformed answer is released.
pub fn release_key(frame: &[u8]) -> Option<(IpAddr, u16, u16)> {
    let packet = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let server = match packet.net? {
        LaxNetSlice::Ipv4(ip) => IpAddr::from(ip.header().source_addr()),
        LaxNetSlice::Ipv6(ip) => IpAddr::from(ip.header().source_addr()),
        LaxNetSlice::Arp(_) => return None,
    };
    let Some(TransportSlice::Udp(udp)) = packet.transport else {
        return None;
    };
    let id = udp.payload().get(0..2)?;
    Some((server, u16::from_be_bytes([id[0], id[1]]), udp.destination_port()))
}

/// What a held frame's UDP checksum says.
#[derive(Debug, PartialEq, Eq)]
pub enum Checksum {
    /// It verifies (or IPv4's "no checksum").
    Good,
    /// A sender that offloads checksums (a veth peer, a local VM) left only the
    /// pseudo-header's sum in the field: the stack trusted it on the way in, but a
    /// re-injected frame is checked like any other, so it needs the real one.
    Offloaded,
    /// Neither: the frame is corrupt. It teaches nothing and goes back as it came, for
    /// the stack to drop as it would have.
    Bad,
}

/// Judges the UDP checksum of `frame` and, when it was left to an offload, writes the
/// real one. `None`: not a UDP frame `parse_udp` reads.
pub fn check_udp_checksum(frame: &mut [u8]) -> Option<Checksum> {
    let udp = parse_udp(frame).ok()?;
    if udp.checksum == 0 && udp.source.is_ipv4() {
        return Some(Checksum::Good);
    }
    let header = etherparse::UdpHeader {
        source_port: udp.source_port,
        destination_port: udp.destination_port,
        length: udp.udp_len,
        checksum: 0,
    };
    let mut pseudo = etherparse::checksum::Sum16BitWords::new();
    let right = match (udp.source, udp.destination) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            pseudo = pseudo.add_4bytes(source.octets()).add_4bytes(destination.octets());
            header.calc_checksum_ipv4_raw(source.octets(), destination.octets(), udp.payload)
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            pseudo = pseudo.add_16bytes(source.octets()).add_16bytes(destination.octets());
            header.calc_checksum_ipv6_raw(source.octets(), destination.octets(), udp.payload)
        }
        _ => return None,
    }
    .ok()?;
    if udp.checksum == right {
        return Some(Checksum::Good);
    }
    // The partial form: the pseudo-header's sum, folded and not inverted. etherparse
    // sums in native byte order; `to_be` gives the value as the field is read.
    let partial = (!pseudo
        .add_2bytes([0, u8::from(IpNumber::UDP)])
        .add_2bytes(udp.udp_len.to_be_bytes())
        .ones_complement())
    .to_be();
    if udp.checksum != partial {
        return Some(Checksum::Bad);
    }
    let at = udp.udp_offset + 6;
    frame[at..at + 2].copy_from_slice(&right.to_be_bytes());
    Some(Checksum::Offloaded)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::{IpHeaders, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, PacketBuilder};

    use super::*;

    pub const RESOLVER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
    pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    pub const RESOLVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53);
    pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    pub const CLIENT_PORT: u16 = 40_000;

    /// Ethernet with `tags` (outer first: the TPID of each), then `ethertype`, then
    /// `rest` as it is (for frames no builder would make).
    pub fn raw_ethernet(tags: &[u16], ethertype: u16, rest: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for &tpid in tags {
            frame.extend(tpid.to_be_bytes());
            frame.extend(7u16.to_be_bytes());
        }
        frame.extend(ethertype.to_be_bytes());
        frame.extend(rest);
        frame
    }

    /// An IPv4 frame from the resolver to the client: `tags` as above, IPv4 `options`
    /// (whole words), UDP from `source_port` carrying `payload`, checksums right.
    pub fn ipv4_frame(tags: &[u16], options: &[u8], source_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut ip = Ipv4Header::new(0, 64, IpNumber::UDP, RESOLVER4.octets(), CLIENT4.octets()).expect("header");
        ip.options = Ipv4Options::try_from(options).expect("ipv4 options come in words");
        let mut packet = Vec::new();
        PacketBuilder::ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(source_port, CLIENT_PORT)
            .write(&mut packet, payload)
            .expect("test frame");
        raw_ethernet(tags, 0x0800, &packet)
    }

    /// An IPv6 frame from the resolver to the client, UDP from `source_port`, with a
    /// hop-by-hop header (PadN only) before it when `hop_by_hop`.
    pub fn ipv6_frame(tags: &[u16], hop_by_hop: bool, source_port: u16, payload: &[u8]) -> Vec<u8> {
        let ip = Ipv6Header {
            hop_limit: 64,
            source: RESOLVER6.octets(),
            destination: CLIENT6.octets(),
            ..Default::default()
        };
        let mut extensions = Ipv6Extensions::default();
        if hop_by_hop {
            // PadN over the header's six option bytes.
            let options = Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[1, 4, 0, 0, 0, 0]).expect("option");
            extensions.hop_by_hop_options = Some(options);
        }
        let mut packet = Vec::new();
        PacketBuilder::ip(IpHeaders::Ipv6(ip, extensions))
            .udp(source_port, CLIENT_PORT)
            .write(&mut packet, payload)
            .expect("test frame");
        raw_ethernet(tags, 0x86dd, &packet)
    }

    #[test]
    fn a_datagram_behind_a_hop_by_hop_header_is_read() {
        let frame = ipv6_frame(&[0x8100], true, 53, b"answer");
        let udp = parse_udp(&frame).expect("parses");
        assert_eq!(udp.source, IpAddr::V6(RESOLVER6));
        assert_eq!(udp.destination, IpAddr::V6(CLIENT6));
        assert_eq!((udp.source_port, udp.destination_port), (53, CLIENT_PORT));
        assert_eq!(udp.payload, b"answer");
        assert_eq!(
            udp.udp_offset,
            14 + 4 + 40 + 8,
            "after the tag, the header and hop-by-hop"
        );
        assert_eq!(check_udp_checksum(&mut frame.clone()), Some(Checksum::Good));
        assert_eq!(
            release_key(&frame),
            Some((IpAddr::V6(RESOLVER6), u16::from_be_bytes(*b"an"), CLIENT_PORT))
        );
    }

    #[test]
    fn the_ip_packet_is_cut_from_tags_and_padding() {
        // Two tags, IPv4 options, then Ethernet padding after the packet.
        let mut frame = ipv4_frame(&[0x88a8, 0x8100], &[1, 1, 1, 1], 53, b"answer");
        let ip_start = 14 + 8;
        let ip_len = frame.len() - ip_start;
        frame.extend([0xee; 12]);
        let ip = ip_packet(&frame).expect("an ipv4 packet");
        assert_eq!(ip.packet, &frame[ip_start..ip_start + ip_len]);
        assert_eq!(ip.destination, IpAddr::V4(CLIENT4));
        let mut frame = ipv6_frame(&[], true, 53, b"answer");
        let ip_len = frame.len() - 14;
        frame.extend([0xee; 4]);
        let ip = ip_packet(&frame).expect("an ipv6 packet");
        assert_eq!(ip.packet, &frame[14..14 + ip_len], "extension headers are inside");
        assert_eq!(ip.destination, IpAddr::V6(CLIENT6));
        // A length the frame does not carry, and what is not IP, are refused.
        let mut short = ipv4_frame(&[], &[], 53, b"answer");
        short.truncate(short.len() - 2);
        assert!(matches!(
            ip_packet(&short),
            Err(FrameError::BadLength { layer: "ipv4", .. })
        ));
        assert!(matches!(
            ip_packet(&raw_ethernet(&[], 0x0806, &[0; 28])),
            Err(FrameError::NotIp { ethertype: 0x0806 })
        ));
        assert!(matches!(
            ip_packet(&[0u8; 10]),
            Err(FrameError::Truncated { layer: "ethernet", .. })
        ));
    }

    #[test]
    fn fragments_and_other_protocols_are_refused() {
        let mut ip = Ipv4Header::new(8, 64, IpNumber::UDP, RESOLVER4.octets(), CLIENT4.octets()).expect("header");
        ip.more_fragments = true;
        let mut packet = ip.to_bytes().to_vec();
        packet.extend([0u8; 8]);
        let frame = raw_ethernet(&[], 0x0800, &packet);
        assert!(matches!(parse_udp(&frame), Err(FrameError::Fragment { ip: "ipv4" })));
        let tcp = Ipv4Header::new(0, 64, IpNumber::TCP, RESOLVER4.octets(), CLIENT4.octets()).expect("header");
        let frame = raw_ethernet(&[], 0x0800, &tcp.to_bytes());
        assert!(matches!(parse_udp(&frame), Err(FrameError::NotUdp { protocol: 6 })));
        let three = raw_ethernet(&[0x88a8, 0x8100, 0x8100], 0x0800, &[0; 40]);
        assert!(matches!(parse_udp(&three), Err(FrameError::TooManyVlanTags { max: 2 })));
    }

    #[test]
    fn an_unreadable_answer_can_still_be_released() {
        // One VLAN tag, IPv4 with one option word, UDP 53 -> 40000, DNS id 0xbeef, then
        // a frame cut short of what its IPv4 header claims.
        let mut frame = ipv4_frame(&[0x8100], &[1, 1, 1, 1], 53, &[0xbe, 0xef, 0xff, 0xff]);
        let ip_len = frame.len() - 18;
        frame[18 + 2..18 + 4].copy_from_slice(&u16::try_from(ip_len + 4).unwrap().to_be_bytes());
        assert!(parse_udp(&frame).is_err(), "the strict reader refuses it");
        assert_eq!(release_key(&frame), Some((IpAddr::V4(RESOLVER4), 0xbeef, CLIENT_PORT)));
        assert_eq!(release_key(&frame[..30]), None);
    }

    #[test]
    fn checksums_are_judged_and_offloaded_ones_mended() {
        for mut frame in [
            ipv4_frame(&[], &[], 53, b"answer!"),
            ipv6_frame(&[], true, 53, b"answer!"),
        ] {
            let right = parse_udp(&frame).unwrap().checksum;
            let at = parse_udp(&frame).unwrap().udp_offset + 6;
            // What an offloading sender leaves: the pseudo-header's sum alone, summed
            // here word by word, independently of the code under test.
            let udp = parse_udp(&frame).unwrap();
            let octets = |ip: IpAddr| match ip {
                IpAddr::V4(ip) => ip.octets().to_vec(),
                IpAddr::V6(ip) => ip.octets().to_vec(),
            };
            let pseudo = [
                octets(udp.source),
                octets(udp.destination),
                vec![0, 17],
                udp.udp_len.to_be_bytes().to_vec(),
            ];
            let mut sum: u32 = pseudo
                .concat()
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let partial = u16::try_from(sum).unwrap();
            frame[at..at + 2].copy_from_slice(&partial.to_be_bytes());
            assert_eq!(check_udp_checksum(&mut frame), Some(Checksum::Offloaded));
            assert_eq!(parse_udp(&frame).unwrap().checksum, right, "mended");
            assert_eq!(check_udp_checksum(&mut frame), Some(Checksum::Good));
            // A corrupt one is left as it is.
            let last = frame.len() - 1;
            frame[last] ^= 0x40;
            let before = frame.clone();
            assert_eq!(check_udp_checksum(&mut frame), Some(Checksum::Bad));
            assert_eq!(frame, before);
        }
        // IPv4's "no checksum".
        let mut frame = ipv4_frame(&[], &[], 53, b"x");
        let at = parse_udp(&frame).unwrap().udp_offset + 6;
        frame[at..at + 2].copy_from_slice(&[0, 0]);
        assert_eq!(check_udp_checksum(&mut frame), Some(Checksum::Good));
    }
}
