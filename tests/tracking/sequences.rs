//! Random sequences of packets through the kernel and through the stateful reference
//! model (`model::Tracker`), which must agree on every verdict, reason and flow count:
//! conversations with TCP roles (handshakes, data in and out of window, FINs, exact and
//! blind RSTs, spoofed openers), floods, and fragments.

use super::*;
use common::Outcome;
use proptest::{
    prelude::*,
    test_runner::{Config as RunnerConfig, TestRunner},
};

// Random sequences: a few conversations per sequence, so that packets meet the flows
// earlier ones opened; most of them between endpoints some rule allows.

const LOCALS4: [&str; 2] = [ME4, "192.0.2.251"];
const LOCALS6: [&str; 2] = [ME6, "2001:db8:1::2"];
const REMOTES4: [&str; 9] = [
    PORTAL,
    RESOLVER4,
    "198.51.100.10",
    "198.51.100.200",
    "203.0.113.9",
    "192.0.2.10",
    "198.51.100.1",
    "8.8.8.8",
    "0.0.0.0",
];
const REMOTES6: [&str; 6] = [
    RESOLVER6,
    "2001:db8:b::10",
    "2001:db8:b:1::7",
    "2001:db8:c00::9",
    "2001:db8:ffff::1",
    "2001:db8:9::9",
];
const LOCAL_PORTS: [u16; 8] = [22, 1500, 5000, 40000, 40001, 68, 546, 5353];
const REMOTE_PORTS: [u16; 10] = [443, 53, 8050, 7777, 4000, 1500, 67, 547, 22, 50000];
/// (remote, local port, remote port) that a rule of `config()` names.
const ALLOWED: [(&str, u16, u16); 10] = [
    (PORTAL, 40000, 443),
    (RESOLVER4, 5353, 53),
    ("198.51.100.10", 40001, 8050),
    ("198.51.100.200", 5000, 7777),
    ("203.0.113.9", 40000, 4000),
    ("192.0.2.10", 22, 50000),
    (RESOLVER6, 5353, 53),
    ("2001:db8:b::10", 40000, 443),
    ("2001:db8:b:1::7", 1500, 4000),
    ("2001:db8:ffff::1", 22, 50000),
];

/// The two ends of a conversation: (local, remote, local port, remote port).
type Ends = (IpAddr, IpAddr, u16, u16);

fn conversation() -> impl Strategy<Value = Ends> {
    let allowed = (prop::sample::select(ALLOWED.to_vec()), any::<bool>()).prop_map(|((r, lp, rp), other_local)| {
        let remote = ip(r);
        let locals = if remote.is_ipv6() { LOCALS6 } else { LOCALS4 };
        (ip(locals[usize::from(other_local)]), remote, lp, rp)
    });
    let random = any::<bool>().prop_flat_map(|v6| {
        let (locals, remotes): (&[&str], &[&str]) = if v6 {
            (&LOCALS6, &REMOTES6)
        } else {
            (&LOCALS4, &REMOTES4)
        };
        (
            prop::sample::select(locals.to_vec()),
            prop::sample::select(remotes.to_vec()),
            prop::sample::select(LOCAL_PORTS.to_vec()),
            prop::sample::select(REMOTE_PORTS.to_vec()),
        )
            .prop_map(|(l, r, lp, rp)| (ip(l), ip(r), lp, rp))
    });
    prop_oneof![3 => allowed, 1 => random]
}

/// What a step sends in a conversation, before it is laid out.
#[derive(Clone, Debug)]
struct Send {
    conversation: usize,
    hook: Hook,
    /// 0 TCP, 1 UDP, 2 ICMP, 3 another protocol, 4 an ICMP error, 5 a non-first fragment.
    kind: u8,
    /// TCP: 0 SYN, 1 SYN-ACK, 2-3 a segment in sequence (data or an ACK), 4 a FIN in
    /// sequence, 5 a RST at the exact next sequence, 6 a blind RST, 7 a spoofed
    /// segment (any numbers).
    role: u8,
    /// Numbers for the blind and spoofed roles, and a data length.
    blind: (u32, u32),
    len: u16,
    wscale: Option<u8>,
    icmp_type: usize,
    other_proto: u8,
    /// The conversation an ICMP error quotes, and the protocol of the quoted packet.
    quoted: usize,
    quoted_kind: u8,
    /// A non-first fragment's protocol: TCP or UDP.
    fragment_udp: bool,
    shape: u8,
    vlan: u8,
}

#[derive(Clone, Debug)]
enum Step {
    Send(Send),
    /// Install the other policy (with or without the 198.51.100.0/25 rule).
    Toggle,
    /// A flood from spoofed sources: SYNs to the management port, or datagrams from the
    /// one address an ingress rule lets send to udp/5000, each to a port of its own.
    Flood {
        count: u16,
        kind: u8,
        seed: u32,
    },
}

fn send() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![10 => Just(0u8), 4 => Just(1), 2 => Just(2), 1 => Just(3), 2 => Just(4), 2 => Just(5)];
    (
        (
            0usize..8,
            prop_oneof![Just(OUT), Just(IN)],
            kind,
            0u8..8,
            (any::<u32>(), any::<u32>()),
            prop_oneof![Just(0u16), Just(1), Just(500), 1u16..3000],
            prop_oneof![3 => Just(None), 1 => (0u8..16).prop_map(Some)],
        ),
        (
            0usize..3,
            prop::sample::select(vec![47u8, 50, 132]),
            0usize..8,
            0u8..3,
            any::<bool>(),
            0u8..6,
            0u8..3,
        ),
    )
        .prop_map(
            |(
                (conversation, hook, kind, role, blind, len, wscale),
                (icmp_type, other_proto, quoted, quoted_kind, fragment_udp, shape, vlan),
            )| {
                Step::Send(Send {
                    conversation,
                    hook,
                    kind,
                    role,
                    blind,
                    len,
                    wscale,
                    icmp_type,
                    other_proto,
                    quoted,
                    quoted_kind,
                    fragment_udp,
                    shape,
                    vlan,
                })
            },
        )
}

/// Where a conversation's TCP stands: each side's initial and next sequence numbers
/// (this host's first), as the generator makes its segments; the kernel and the model
/// judge them whatever they are.
#[derive(Clone, Copy, Debug)]
struct Numbers {
    isn: (u32, u32),
    next: (u32, u32),
}

impl Numbers {
    fn new(seed: u32) -> Numbers {
        let isn = (
            seed.wrapping_mul(2_654_435_761),
            seed.wrapping_mul(40_503).rotate_left(13),
        );
        Numbers {
            isn,
            next: (isn.0.wrapping_add(1), isn.1.wrapping_add(1)),
        }
    }

    /// The segment of `role` from the side whose packets go `hook`.
    fn segment(&mut self, s: &Send) -> (bool, bool, Seg) {
        let host = s.hook == OUT;
        let (isn, other_isn) = if host {
            (self.isn.0, self.isn.1)
        } else {
            (self.isn.1, self.isn.0)
        };
        let (next, other_next) = if host { self.next } else { (self.next.1, self.next.0) };
        let base = Seg::default();
        let (syn, ack, seg) = match s.role {
            0 => (
                true,
                false,
                Seg {
                    seq: isn,
                    wscale: s.wscale,
                    ..base
                },
            ),
            1 => (
                true,
                true,
                Seg {
                    seq: isn,
                    ack: other_isn.wrapping_add(1),
                    wscale: s.wscale,
                    ..base
                },
            ),
            2 | 3 => (
                false,
                true,
                Seg {
                    seq: next,
                    ack: other_next,
                    len: s.len,
                    ..base
                },
            ),
            4 => (
                false,
                true,
                Seg {
                    seq: next,
                    ack: other_next,
                    fin: true,
                    ..base
                },
            ),
            5 => (
                false,
                false,
                Seg {
                    seq: next,
                    rst: true,
                    ..base
                },
            ),
            6 => (
                false,
                false,
                Seg {
                    seq: s.blind.0,
                    rst: true,
                    ..base
                },
            ),
            _ => (
                false,
                true,
                Seg {
                    seq: s.blind.0,
                    ack: s.blind.1,
                    len: s.len,
                    ..base
                },
            ),
        };
        if matches!(s.role, 2..=4) {
            let n = if host { &mut self.next.0 } else { &mut self.next.1 };
            *n = n.wrapping_add(u32::from(seg.len) + u32::from(seg.fin));
        }
        (syn, ack, seg)
    }
}

/// The packet and frame layout of a step in `conversations`.
fn lay_out(s: &Send, conversations: &[Ends], numbers: &mut [Numbers]) -> (Packet, Shape) {
    let c = s.conversation % conversations.len();
    let (local, remote, lport, rport) = conversations[c];
    let v6 = remote.is_ipv6();
    let icmp = if v6 { 58u8 } else { 1 };
    let (sport, dport) = match s.hook {
        OUT => (lport, rport),
        IN => (rport, lport),
    };
    let l4 = match s.kind {
        0 => {
            let (syn, ack, seg) = numbers[c].segment(s);
            L4::Tcp {
                sport,
                dport,
                syn,
                ack,
                seg,
            }
        }
        1 => L4::Udp { sport, dport },
        2 => {
            let types: [u8; 3] = if v6 { [128, 129, 135] } else { [8, 0, 13] };
            L4::Icmp {
                ty: types[s.icmp_type],
                code: 0,
            }
        }
        3 => L4::Other { proto: s.other_proto },
        4 => {
            // From `remote`, about a packet of the quoted conversation that went the
            // other way (a conversation of the other family quotes this one).
            let quoted = conversations[s.quoted % conversations.len()];
            let (ql, qr, qlp, qrp) = if quoted.1.is_ipv6() == v6 {
                quoted
            } else {
                (local, remote, lport, rport)
            };
            let qproto = [6u8, 17, icmp][usize::from(s.quoted_kind)];
            let (qlp, qrp) = if qproto == icmp { (ECHO_ID, ECHO_ID) } else { (qlp, qrp) };
            let (src, dst, qs, qd) = match s.hook {
                IN => (ql, qr, qlp, qrp),
                OUT => (qr, ql, qrp, qlp),
            };
            L4::IcmpError {
                ty: if v6 { 2 } else { 3 },
                code: 0,
                quote: Quote {
                    src,
                    dst,
                    proto: qproto,
                    sport: qs,
                    dport: qd,
                },
            }
        }
        _ => L4::Fragment {
            proto: if s.fragment_udp { 17 } else { 6 },
        },
    };
    // Ports in any layout the parser sees through; the rest plainly. A first fragment
    // holds its whole segment (and so vouches for the datagram's later fragments).
    let shape = match (l4, s.shape, v6) {
        (L4::Tcp { .. } | L4::Udp { .. }, 4, false) => Shape::V4Options(2),
        (L4::Tcp { .. } | L4::Udp { .. }, 5, false) => Shape::V4FirstFragment,
        (L4::Tcp { .. } | L4::Udp { .. }, 4, true) => Shape::V6Ext(vec![0, 60]),
        (L4::Tcp { .. } | L4::Udp { .. }, 5, true) => Shape::V6FirstFragment,
        _ => Shape::Plain,
    };
    let mut packet = Packet::between(s.hook, local, remote, l4);
    packet.vlan_tags = s.vlan;
    if let Frame::Ip(IpPacket { hop_limit, .. }) = &mut packet.frame {
        *hop_limit = 64;
    }
    (packet, shape)
}

/// The packets of a flood step: each from a spoofed source of its own (xorshift from
/// `seed`), each opening a flow of its own.
fn flood(count: u16, kind: u8, seed: u32) -> Vec<Packet> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    (0..count)
        .map(|_| {
            let r = next();
            let sport = 1024 + (r % 60_000) as u16;
            match kind % 3 {
                // Spoofed SYNs to the management port, from inside its CIDRs.
                0 | 1 => {
                    let src = if kind.is_multiple_of(3) {
                        format!("192.0.2.{}", r % 128)
                    } else {
                        format!("2001:db8:ffff::{:x}", r % 0xffff)
                    };
                    seg(
                        IN,
                        &src,
                        (22, sport),
                        (true, false),
                        Seg {
                            seq: next(),
                            ..Seg::default()
                        },
                    )
                }
                // Spoofed datagrams from the one sender udp/5000 takes.
                _ => udp(IN, "198.51.100.200", 5000, sport),
            }
        })
        .collect()
}

fn sequence() -> impl Strategy<Value = (Vec<Ends>, Vec<Step>, u32)> {
    let flood = (10u16..60, 0u8..3, any::<u32>()).prop_map(|(count, kind, seed)| Step::Flood { count, kind, seed });
    let step = prop_oneof![30 => send(), 1 => Just(Step::Toggle), 1 => flood];
    (
        prop::collection::vec(conversation(), 2..8),
        prop::collection::vec(step, 30..120),
        any::<u32>(),
    )
}

/// What the random sequences reached, so that agreeing shows something.
#[derive(Debug, Default)]
struct Seen {
    tracked_returns: usize,
    no_flow: usize,
    out_of_window: usize,
    other_drops: usize,
    forward: usize,
    fragments_passed: usize,
    orphans: usize,
    flood_packets: usize,
    assured: usize,
}

#[test]
fn kernel_and_model_agree_on_random_sequences() {
    common::require_root();
    // 60 cases: the floors below hold with room whatever the seed. At 40, out-of-window
    // drops ran 76-181 in eleven runs and fragments passed 14-35, so a floor of 100 (and
    // one of 10) could fail by chance; one CI run did, the kernel and the model agreeing on
    // every step.
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 60,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let (with, without) = (policy(), policy_without_tcp_peers());
    let seen = std::cell::RefCell::new(Seen::default());
    let result = runner.run(&sequence(), |(conversations, steps, seed)| {
        let mut h = Harness::new(with.clone());
        let mut toggled = false;
        let mut numbers: Vec<Numbers> = (0..conversations.len())
            .map(|i| Numbers::new(seed.wrapping_add(i as u32)))
            .collect();
        for (i, step) in steps.iter().enumerate() {
            let packets = match step {
                Step::Toggle => {
                    toggled = !toggled;
                    h.set_policy(if toggled { without.clone() } else { with.clone() });
                    continue;
                }
                Step::Flood { count, kind, seed } => {
                    seen.borrow_mut().flood_packets += usize::from(*count);
                    flood(*count, *kind, *seed)
                        .into_iter()
                        .map(|p| (p, Shape::Plain))
                        .collect()
                }
                Step::Send(s) => vec![lay_out(s, &conversations, &mut numbers)],
            };
            for (packet, shape) in packets {
                let alone = model::judge(&h.policy, &packet);
                let (kernel, model): (Outcome, Outcome) = h.step(&packet, &shape);
                let fragment = matches!(
                    &packet.frame,
                    Frame::Ip(IpPacket {
                        l4: L4::Fragment { .. },
                        ..
                    })
                );
                let mut s = seen.borrow_mut();
                match (model.verdict, model.reason) {
                    (Verdict::Drop, Reason::FragmentOrphan) => s.orphans += 1,
                    (Verdict::Pass, _) if fragment => s.fragments_passed += 1,
                    (Verdict::Drop, Reason::OutOfWindow) => s.out_of_window += 1,
                    (Verdict::Pass, _) if alone.return_only => s.tracked_returns += 1,
                    (Verdict::Drop, Reason::NoFlow) => s.no_flow += 1,
                    (Verdict::Drop, _) => s.other_drops += 1,
                    (Verdict::Pass, _) => s.forward += 1,
                }
                prop_assert_eq!(kernel, model, "step {}: {:?} as {:?}", i, packet, shape);
            }
        }
        // Which flows the kernel made assured, and how many it tracks, as the model.
        let (_, assured) = assert_flows(&h, "after the sequence");
        seen.borrow_mut().assured += assured;
        Ok(())
    });
    if let Err(e) = result {
        panic!("the kernel and the stateful model disagree: {e}");
    }
    let s = seen.into_inner();
    eprintln!("{s:?}");
    // The generator must reach every outcome often, or agreeing proves little.
    for (what, n, floor) in [
        ("tracked returns", s.tracked_returns, 100),
        ("no-flow drops", s.no_flow, 100),
        ("out-of-window drops", s.out_of_window, 100),
        ("other drops", s.other_drops, 100),
        ("forward passes", s.forward, 100),
        ("fragments passed", s.fragments_passed, 10),
        ("orphan fragments", s.orphans, 50),
        ("flood packets", s.flood_packets, 500),
        ("assured flows", s.assured, 20),
    ] {
        assert!(
            n >= floor,
            "{what}: {n} (at least {floor}); all: {s:?}: the generator is lopsided"
        );
    }
    assert_eq!(with.mode, Mode::Enforce);
}
