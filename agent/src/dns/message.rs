//! A DNS answer taken out of a held frame: the frame read by `frame`, the message by
//! hickory, the answer section written down as the learning rules (`learn`) want it.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use hickory_proto::{
    op::Message,
    rr::{DNSClass, Name, RData},
    serialize::binary::DecodeError,
};

use super::frame::{FrameError, parse_udp};

const DNS_PORT: u16 = 53;
const DNS_HEADER_LEN: usize = 12;

/// Why a held frame teaches nothing. Every case means the same for the daemon: give the
/// frame back to the stack untouched and count the reason.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("udp source port {port} is not 53")]
    NotFromDnsPort { port: u16 },
    #[error("frame ends inside its {layer} header: {need} bytes needed, {have} present")]
    Truncated {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    #[error("dns message is a query, not a response")]
    NotResponse,
    #[error("dns response has {count} questions; learning needs exactly one")]
    QuestionCount { count: u16 },
    #[error("dns message does not parse: {source}")]
    Dns {
        #[source]
        source: DecodeError,
    },
}

/// What a DNS answer held for the daemon says, already taken out of its frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The resolver (the packet's source).
    pub server: IpAddr,
    pub client: IpAddr,
    pub client_port: u16,
    pub id: u16,
    /// Lowercase, without the trailing dot (see `AnswerRecord::name`).
    pub question: String,
    /// The TC bit: the answer section may be cut short; what it holds still counts.
    pub truncated: bool,
    /// The answer section, in wire order. Authority and additional records never teach.
    pub records: Vec<AnswerRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerRecord {
    /// Lowercase labels joined by dots, without the trailing dot; a byte that is not a
    /// letter, digit, `-`, `_` or `*` is written `\DDD` (RFC 1035), so a label holding a
    /// dot cannot pass for two labels.
    pub name: String,
    pub ttl: u32,
    pub data: AnswerData,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// The target, written like `AnswerRecord::name`.
    Cname(String),
    /// Any other type, or an A/AAAA/CNAME of a class other than IN.
    Other {
        rtype: u16,
    },
}

/// Takes a DNS answer out of an Ethernet frame (read by `frame::parse_udp`: VLAN tags,
/// IPv4 options and IPv6 extension headers are walked, fragments refused) sent from UDP
/// port 53. The UDP checksum is not checked here: the learner judges it first. Never
/// panics.
pub fn parse_answer(frame: &[u8]) -> Result<DnsAnswer, LearnError> {
    let udp = parse_udp(frame)?;
    if udp.source_port != DNS_PORT {
        return Err(LearnError::NotFromDnsPort { port: udp.source_port });
    }
    let (server, client, client_port, payload) = (udp.source, udp.destination, udp.destination_port, udp.payload);

    // Checked before hickory parses: a header claiming thousands of questions would have
    // it reserve room for all of them.
    if payload.len() < DNS_HEADER_LEN {
        return Err(truncated("dns", DNS_HEADER_LEN, payload.len()));
    }
    if payload[2] & 0x80 == 0 {
        return Err(LearnError::NotResponse);
    }
    let questions = be16(payload, 4, "dns")?;
    if questions != 1 {
        return Err(LearnError::QuestionCount { count: questions });
    }
    let message = Message::from_vec(payload).map_err(|source| LearnError::Dns { source })?;
    let Some(query) = message.queries.first() else {
        return Err(LearnError::QuestionCount { count: 0 });
    };

    let records = message
        .answers
        .iter()
        .map(|record| {
            let rtype = u16::from(record.record_type());
            let data = match &record.data {
                _ if record.dns_class != DNSClass::IN => AnswerData::Other { rtype },
                RData::A(a) => AnswerData::A(a.0),
                RData::AAAA(aaaa) => AnswerData::Aaaa(aaaa.0),
                RData::CNAME(cname) => AnswerData::Cname(canonical(&cname.0)),
                _ => AnswerData::Other { rtype },
            };
            AnswerRecord {
                name: canonical(&record.name),
                ttl: record.ttl,
                data,
            }
        })
        .collect();

    Ok(DnsAnswer {
        server,
        client,
        client_port,
        id: message.metadata.id,
        question: canonical(&query.name),
        truncated: message.metadata.truncation,
        records,
    })
}

fn be16(bytes: &[u8], at: usize, layer: &'static str) -> Result<u16, LearnError> {
    match bytes.get(at..at.saturating_add(2)) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(truncated(layer, at.saturating_add(2), bytes.len())),
    }
}

fn truncated(layer: &'static str, need: usize, have: usize) -> LearnError {
    LearnError::Truncated { layer, need, have }
}

/// See `AnswerRecord::name`.
fn canonical(name: &Name) -> String {
    let mut text = String::new();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        for &byte in label {
            let byte = byte.to_ascii_lowercase();
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'*') {
                text.push(char::from(byte));
            } else {
                // Writing to a String cannot fail.
                let _ = write!(text, "\\{byte:03}");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::dns::{
        frame::{
            FrameError,
            tests::{CLIENT_PORT, CLIENT6, RESOLVER6, ipv4_frame, ipv6_frame, raw_ethernet},
        },
        learn::{
            TtlPolicy, learn,
            tests::{NOW, a, aaaa, addrs, cname, ip, learned_from, names, response},
        },
    };

    const VLAN: u16 = 0x8100;
    const QINQ: u16 = 0x88a8;
    const ETH_HLEN: usize = 14;
    const IPV4_HLEN: usize = 20;
    const UDP_HLEN: usize = 8;

    #[test]
    fn vlan_tagged_frames_parse_up_to_two_tags() {
        let dns = response("tenant.eu1.cas.ms.", vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")]);
        for tags in [&[VLAN][..], &[QINQ, VLAN], &[VLAN, VLAN]] {
            let learned = learned_from(&ipv4_frame(tags, &[], DNS_PORT, &dns));
            assert_eq!(addrs(&learned), [ip("203.0.113.7")], "tags {tags:x?}");
            let learned = learned_from(&ipv6_frame(tags, false, DNS_PORT, &dns));
            assert_eq!(addrs(&learned), [ip("203.0.113.7")], "tags {tags:x?} over ipv6");
        }
        let three = ipv4_frame(&[QINQ, VLAN, VLAN], &[], DNS_PORT, &dns);
        assert!(matches!(
            parse_answer(&three),
            Err(LearnError::Frame(FrameError::TooManyVlanTags { max: 2 }))
        ));
    }

    /// The XDP program walks IPv6 extension headers before it holds an answer, so the
    /// learner must read past them too, or a held answer would teach nothing.
    #[test]
    fn an_answer_behind_a_hop_by_hop_header_teaches() {
        let dns = response("tenant.eu1.cas.ms.", vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")]);
        let frame = ipv6_frame(&[], true, DNS_PORT, &dns);
        let answer = parse_answer(&frame).expect("parses");
        assert_eq!(answer.server, IpAddr::V6(RESOLVER6));
        assert_eq!(answer.client, IpAddr::V6(CLIENT6));
        assert_eq!(answer.client_port, CLIENT_PORT);
        assert_eq!(addrs(&learned_from(&frame)), [ip("203.0.113.7")]);
    }

    #[test]
    fn ipv4_options_are_skipped_and_padding_ignored() {
        let dns = response("tenant.eu1.cas.ms.", vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")]);
        // Router alert, then NOPs to the word.
        let mut frame = ipv4_frame(&[], &[0x94, 0x04, 0, 0, 1, 1, 1, 0], DNS_PORT, &dns);
        frame.extend([0u8; 16]);
        assert_eq!(addrs(&learned_from(&frame)), [ip("203.0.113.7")]);
    }

    #[test]
    fn malformed_frames_give_errors() {
        let dns = response("tenant.eu1.cas.ms.", vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")]);
        let good = ipv4_frame(&[], &[], DNS_PORT, &dns);
        let ip_at = ETH_HLEN;
        let udp_at = ETH_HLEN + IPV4_HLEN;
        let dns_at = udp_at + UDP_HLEN;
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut frame = good.clone();
            f(&mut frame);
            frame
        };
        let mut query = dns.clone();
        query[2] &= 0x7f;
        let mut two_questions = dns.clone();
        two_questions[5] = 2;
        let mut cut_dns = dns.clone();
        cut_dns.truncate(dns.len() - 3);

        type Check = fn(&LearnError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("empty", Vec::new(), |e| {
                matches!(e, LearnError::Frame(FrameError::Truncated { layer: "ethernet", .. }))
            }),
            ("ethernet cut", good[..13].to_vec(), |e| {
                matches!(e, LearnError::Frame(FrameError::Truncated { layer: "ethernet", .. }))
            }),
            ("vlan cut", raw_ethernet(&[VLAN], 0x0800, &[])[..16].to_vec(), |e| {
                matches!(e, LearnError::Frame(FrameError::Truncated { layer: "vlan", .. }))
            }),
            ("arp", raw_ethernet(&[], 0x0806, &[0; 28]), |e| {
                matches!(e, LearnError::Frame(FrameError::NotIp { ethertype: 0x0806 }))
            }),
            ("ipv4 cut", good[..ip_at + 19].to_vec(), |e| {
                matches!(e, LearnError::Frame(FrameError::Truncated { layer: "ipv4", .. }))
            }),
            ("ipv4 says 6", edit(&|f| f[ip_at] = 0x65), |e| {
                matches!(e, LearnError::Frame(FrameError::IpVersion { expected: 4, found: 6 }))
            }),
            ("ihl 4", edit(&|f| f[ip_at] = 0x44), |e| {
                matches!(e, LearnError::Frame(FrameError::BadIhl { ihl: 4 }))
            }),
            (
                "ihl past the total length",
                edit(&|f| {
                    f[ip_at] = 0x4f;
                    f[ip_at + 2..ip_at + 4].copy_from_slice(&[0, 40]);
                }),
                |e| matches!(e, LearnError::Frame(FrameError::BadLength { layer: "ipv4", .. })),
            ),
            ("total length long", edit(&|f| f[ip_at + 2] = 0xff), |e| {
                matches!(e, LearnError::Frame(FrameError::BadLength { layer: "ipv4", .. }))
            }),
            ("more fragments", edit(&|f| f[ip_at + 6] = 0x20), |e| {
                matches!(e, LearnError::Frame(FrameError::Fragment { ip: "ipv4" }))
            }),
            ("fragment offset", edit(&|f| f[ip_at + 7] = 0x08), |e| {
                matches!(e, LearnError::Frame(FrameError::Fragment { ip: "ipv4" }))
            }),
            ("tcp", edit(&|f| f[ip_at + 9] = 6), |e| {
                matches!(e, LearnError::Frame(FrameError::NotUdp { protocol: 6 }))
            }),
            ("udp length long", edit(&|f| f[udp_at + 4] = 0xff), |e| {
                matches!(e, LearnError::Frame(FrameError::BadLength { layer: "udp", .. }))
            }),
            (
                "udp length short",
                edit(&|f| f[udp_at + 4..udp_at + 6].copy_from_slice(&[0, 7])),
                |e| matches!(e, LearnError::Frame(FrameError::BadLength { layer: "udp", .. })),
            ),
            ("not from 53", ipv4_frame(&[], &[], 5353, &dns), |e| {
                matches!(e, LearnError::NotFromDnsPort { port: 5353 })
            }),
            ("dns header cut", ipv4_frame(&[], &[], DNS_PORT, &dns[..11]), |e| {
                matches!(e, LearnError::Truncated { layer: "dns", .. })
            }),
            ("a query", ipv4_frame(&[], &[], DNS_PORT, &query), |e| {
                matches!(e, LearnError::NotResponse)
            }),
            ("two questions", ipv4_frame(&[], &[], DNS_PORT, &two_questions), |e| {
                matches!(e, LearnError::QuestionCount { count: 2 })
            }),
            ("dns cut", ipv4_frame(&[], &[], DNS_PORT, &cut_dns), |e| {
                matches!(e, LearnError::Dns { .. })
            }),
            (
                "dns garbage",
                ipv4_frame(
                    &[],
                    &[],
                    DNS_PORT,
                    &[0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xff],
                ),
                |e| matches!(e, LearnError::Dns { .. }),
            ),
            (
                "ipv6 cut",
                ipv6_frame(&[], false, DNS_PORT, &[])[..ETH_HLEN + 39].to_vec(),
                |e| matches!(e, LearnError::Frame(FrameError::Truncated { layer: "ipv6", .. })),
            ),
            (
                "ipv6 says 4",
                {
                    let mut f = ipv6_frame(&[], false, DNS_PORT, &dns);
                    f[ETH_HLEN] = 0x40;
                    f
                },
                |e| matches!(e, LearnError::Frame(FrameError::IpVersion { expected: 6, found: 4 })),
            ),
            (
                "ipv6 payload long",
                {
                    let mut f = ipv6_frame(&[], false, DNS_PORT, &dns);
                    f[ETH_HLEN + 4] = 0xff;
                    f
                },
                |e| {
                    matches!(
                        e,
                        LearnError::Frame(FrameError::BadLength {
                            layer: "ipv6 payload",
                            ..
                        })
                    )
                },
            ),
            (
                "ipv6 fragment",
                {
                    // A fragment header in place of the UDP header: UDP next, offset 1, more.
                    let mut f = ipv6_frame(&[], false, DNS_PORT, &dns);
                    f[ETH_HLEN + 6] = 44;
                    f[ETH_HLEN + 40..ETH_HLEN + 48].copy_from_slice(&[17, 0, 0, 0x09, 0, 0, 0, 1]);
                    f
                },
                |e| matches!(e, LearnError::Frame(FrameError::Fragment { ip: "ipv6" })),
            ),
            (
                "ipv6 hop-by-hop twice",
                {
                    // A hop-by-hop header (PadN) in place of the UDP header, whose next
                    // header is hop-by-hop again: only the first may be one.
                    let mut f = ipv6_frame(&[], false, DNS_PORT, &dns);
                    f[ETH_HLEN + 6] = 0;
                    f[ETH_HLEN + 40..ETH_HLEN + 48].copy_from_slice(&[0, 0, 1, 4, 0, 0, 0, 0]);
                    f
                },
                |e| matches!(e, LearnError::Frame(FrameError::Ipv6Extension { .. })),
            ),
            (
                "ipv6 udp cut",
                {
                    let mut f = ipv6_frame(&[], false, DNS_PORT, &[]);
                    f.truncate(ETH_HLEN + 40 + 3);
                    f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&[0, 3]);
                    f
                },
                |e| matches!(e, LearnError::Frame(FrameError::Truncated { layer: "udp", .. })),
            ),
        ];
        assert!(dns_at < good.len());
        for (what, frame, check) in cases {
            match parse_answer(&frame) {
                Ok(answer) => panic!("{what}: parsed as {answer:?}"),
                Err(e) => {
                    assert!(check(&e), "{what}: wrong error {e:?}");
                    let message = e.to_string();
                    assert!(!message.ends_with('.') && !message.contains('\n'), "{what}: {message}");
                    assert_eq!(
                        message.chars().next().map(|c| c.is_lowercase()),
                        Some(true),
                        "{what}: {message}"
                    );
                }
            }
        }
    }

    fn valid_frames() -> Vec<Vec<u8>> {
        let dns = response(
            "tenant.eu1.cas.ms.",
            vec![
                cname("tenant.eu1.cas.ms.", 60, "lb.example.org."),
                a("lb.example.org.", 300, "203.0.113.7"),
                aaaa("lb.example.org.", 300, "2001:db8::7"),
            ],
        );
        vec![
            ipv4_frame(&[], &[], DNS_PORT, &dns),
            ipv4_frame(&[QINQ, VLAN], &[1, 1, 1, 1], DNS_PORT, &dns),
            ipv6_frame(&[VLAN], true, DNS_PORT, &dns),
        ]
    }

    #[test]
    fn the_fuzz_seeds_are_valid() {
        for frame in valid_frames() {
            assert_eq!(learned_from(&frame).len(), 2);
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(frame in prop::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(answer) = parse_answer(&frame) {
                let _ = learn(&answer, &names(), NOW, &TtlPolicy::default());
            }
        }

        #[test]
        fn mutated_answers_never_panic(
            seed in 0usize..3,
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            cut_it in any::<bool>(),
        ) {
            let mut frame = valid_frames().swap_remove(seed);
            for (at, byte) in flips {
                let at = at.index(frame.len());
                frame[at] = byte;
            }
            if cut_it {
                frame.truncate(cut.index(frame.len() + 1));
            }
            if let Ok(answer) = parse_answer(&frame) {
                let learned = learn(&answer, &names(), NOW, &TtlPolicy::default());
                prop_assert!(learned.iter().all(|l| l.expires >= NOW + 30));
            }
        }

    }
}
