//! The differential test: thousands of random packets through the kernel programs
//! (BPF_PROG_TEST_RUN) and through the reference model, which reads the rules
//! directly rather than the compiled tables. Every verdict, reason and delivery must
//! agree. Addresses come from, inside, next to and outside the policy's prefixes;
//! ports from, next to and outside its ranges; shapes from every layout the parser
//! must see through.

use std::{
    cell::RefCell,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};
use testkit as common;

use allowgate::{
    catalog::{Direction, Feature, PortRange, Proto},
    policy::{
        Mode, Policy, StateMode,
        model::{Frame, Hook, IpPacket, L4, Packet},
    },
};
use common::{
    Harness, allow,
    packet::{Shape, broken, frame},
    policy as fixture,
};
use ipnet::IpNet;
use proptest::{
    prelude::*,
    test_runner::{Config as RunnerConfig, TestRunner},
};

/// The shared fixture (`testkit::policy`), stateless, with more of what the compiler
/// folds: another management port range, an ethertype, a log collector, and entries
/// overlapping the fixture's.
fn policy() -> Policy {
    let mut config = fixture::config();
    // Each packet alone: the stateless return path. The sequences below track flows.
    config.state.mode = StateMode::Stateless;
    config.management.ports = vec![PortRange::single(22), PortRange { lo: 2222, hi: 2230 }];
    config.essentials.ethertypes = vec![0x88cc];
    config.log_collector.sources = vec!["198.51.100.64/26".parse().unwrap()];
    config.log_collector.ftp_passive_ports = vec![PortRange { lo: 50000, hi: 50100 }];
    config.allow.extend([
        allow(
            "198.51.100.0/24",
            Direction::Egress,
            Proto::Tcp,
            &[PortRange::single(443), PortRange { lo: 8000, hi: 8100 }],
        ),
        allow(
            "198.51.100.128/25",
            Direction::Egress,
            Proto::Udp,
            &[PortRange { lo: 5000, hi: 5010 }],
        ),
        allow(
            "198.51.100.200/32",
            Direction::Ingress,
            Proto::Tcp,
            &[PortRange::single(8080)],
        ),
        allow("203.0.113.64/26", Direction::Ingress, Proto::Udp, &[]),
        allow(
            "13.80.125.0/24",
            Direction::Egress,
            Proto::Tcp,
            &[PortRange::single(8443)],
        ),
        allow(
            "2001:db8:b:1::5/128",
            Direction::Egress,
            Proto::Udp,
            &[PortRange::single(53)],
        ),
    ]);
    fixture::build(
        &config,
        &["eu1", "us3", "gov-us1"],
        &Feature::ALL,
        [fixture::RESOLVER4, fixture::RESOLVER6],
    )
}

/// Where a random address comes from, relative to the policy's prefixes.
fn address(nets: Vec<IpNet>, v6: bool) -> impl Strategy<Value = IpAddr> + Clone {
    let nets: Vec<IpNet> = nets.into_iter().filter(|n| n.addr().is_ipv6() == v6).collect();
    let pick = prop::sample::select(nets);
    let host_bits = any::<u128>();
    let inside = (pick.clone(), host_bits).prop_map(|(net, bits)| with_host_bits(net, bits));
    let exact = pick.clone().prop_map(|net| net.network());
    // Just past either end of a prefix: the classic off-by-one.
    let next_to =
        (pick, any::<bool>()).prop_map(|(net, after)| step(if after { net.broadcast() } else { net.network() }, after));
    let anywhere = host_bits.prop_map(move |bits| {
        if v6 {
            // Mostly the documentation range, where the rules are.
            IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (bits & ((1 << 80) - 1))))
        } else {
            IpAddr::V4(Ipv4Addr::from(bits as u32))
        }
    });
    prop_oneof![3 => inside, 2 => exact, 2 => next_to, 1 => anywhere]
}

fn with_host_bits(net: IpNet, bits: u128) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let mask = if n.prefix_len() == 32 {
                0
            } else {
                u32::MAX >> n.prefix_len()
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | (bits as u32 & mask)))
        }
        IpNet::V6(n) => {
            let mask = if n.prefix_len() == 128 {
                0
            } else {
                u128::MAX >> n.prefix_len()
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (bits & mask)))
        }
    }
}

fn step(a: IpAddr, up: bool) -> IpAddr {
    match a {
        IpAddr::V4(a) => {
            let v = u32::from(a);
            IpAddr::V4(Ipv4Addr::from(if up { v.wrapping_add(1) } else { v.wrapping_sub(1) }))
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            IpAddr::V6(Ipv6Addr::from(if up { v.wrapping_add(1) } else { v.wrapping_sub(1) }))
        }
    }
}

/// Ports on, next to and away from the policy's ranges.
fn port(ranges: Vec<PortRange>) -> impl Strategy<Value = u16> + Clone {
    let pick = prop::sample::select(ranges);
    prop_oneof![
        3 => pick.clone().prop_flat_map(|r| r.lo..=r.hi),
        2 => (pick, any::<bool>()).prop_map(|(r, hi)| if hi { r.hi.wrapping_add(1) } else { r.lo.wrapping_sub(1) }),
        1 => prop_oneof![Just(53u16), Just(67), Just(68), Just(546), Just(547), Just(22), Just(25), Just(443)],
        1 => any::<u16>(),
    ]
}

fn l4(ports: Vec<PortRange>) -> impl Strategy<Value = L4> {
    let p = port(ports);
    prop_oneof![
        4 => (p.clone(), p.clone(), any::<bool>(), any::<bool>()).prop_map(|(sport, dport, syn, ack)| L4::tcp(sport, dport, syn, ack)),
        3 => (p.clone(), p).prop_map(|(sport, dport)| L4::Udp { sport, dport }),
        2 => (prop_oneof![Just(0u8), Just(3), Just(8), Just(11), Just(12), Just(1), Just(2), Just(4), Just(128), Just(129), 130u8..=143, any::<u8>()], any::<u8>())
            .prop_map(|(ty, code)| L4::Icmp { ty, code }),
        1 => prop_oneof![Just(47u8), Just(50), Just(132), Just(89)].prop_map(|proto| L4::Other { proto }),
        1 => prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(47)].prop_map(|proto| L4::Fragment { proto }),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    packet: Packet,
    shape: Shape,
}

fn ip_case(v6: bool, nets: Vec<IpNet>, ports: Vec<PortRange>) -> impl Strategy<Value = Case> {
    let local = if v6 {
        prop_oneof![
            Just("2001:db8:f::7".parse::<IpAddr>().unwrap()),
            Just("fe80::7".parse().unwrap()),
            Just("::".parse().unwrap())
        ]
        .boxed()
    } else {
        prop_oneof![
            Just("198.51.100.7".parse::<IpAddr>().unwrap()),
            Just("0.0.0.0".parse().unwrap()),
            Just("255.255.255.255".parse().unwrap())
        ]
        .boxed()
    };
    let remote = prop_oneof![
        8 => address(nets, v6),
        1 => Just(if v6 { "fe80::1".parse::<IpAddr>().unwrap() } else { "192.0.2.254".parse().unwrap() }),
    ];
    let shape = if v6 {
        prop_oneof![
            4 => Just(Shape::Plain),
            1 => prop::collection::vec(prop_oneof![Just(0u8), Just(60), Just(43), Just(51)], 1..=4).prop_map(Shape::V6Ext),
            1 => Just(Shape::V6FirstFragment),
        ]
        .boxed()
    } else {
        prop_oneof![4 => Just(Shape::Plain), 1 => (1u8..=10).prop_map(Shape::V4Options), 1 => Just(Shape::V4FirstFragment)].boxed()
    };
    let hook = prop_oneof![Just(Hook::Ingress), Just(Hook::Egress)];
    let hop_limit = prop_oneof![Just(255u8), Just(64), Just(1)];
    (hook, local, remote, l4(ports), shape, hop_limit, 0u8..=3).prop_map(
        |(hook, local, remote, l4, shape, hop_limit, tags)| {
            let (src, dst) = if hook == Hook::Egress {
                (local, remote)
            } else {
                (remote, local)
            };
            // Fragments and first fragments have their own layout; no other shape applies.
            let shape = if matches!(l4, L4::Fragment { .. }) {
                Shape::Plain
            } else {
                shape
            };
            Case {
                packet: Packet {
                    hook,
                    vlan_tags: tags.saturating_sub(1),
                    frame: Frame::Ip(IpPacket {
                        src,
                        dst,
                        hop_limit,
                        l4,
                    }),
                },
                shape,
            }
        },
    )
}

/// A packet aimed at one rule: an address inside it, its protocol, a port of its ranges,
/// on its forward path or its return path. Without these, random packets rarely pass,
/// and agreeing on drops alone proves little.
fn aimed(policy: &Policy) -> impl Strategy<Value = Case> {
    let rules: Vec<_> = policy
        .net_rules()
        .map(|(n, r)| (n, r.direction, r.proto, r.ports.clone()))
        .collect();
    (
        prop::sample::select(rules),
        any::<u128>(),
        any::<bool>(),
        any::<u16>(),
        0usize..8,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |((net, direction, proto, ports), bits, forward, other_port, pick, syn, ack)| {
                let remote = with_host_bits(net, bits);
                let local: IpAddr = if remote.is_ipv4() {
                    "198.51.100.7".parse().unwrap()
                } else {
                    "2001:db8:f::7".parse().unwrap()
                };
                let port = match ports.get(pick % ports.len().max(1)) {
                    Some(r) => r.lo + ((u32::from(other_port) % (u32::from(r.hi - r.lo) + 1)) as u16),
                    None => other_port,
                };
                // The service's port is the remote's on egress rules and ours on ingress
                // rules; the return path swaps the hook.
                let hook = match (direction, forward) {
                    (Direction::Egress, true) | (Direction::Ingress, false) => Hook::Egress,
                    _ => Hook::Ingress,
                };
                let service_is_remote = direction == Direction::Egress;
                let (sport, dport) = match (hook, service_is_remote) {
                    (Hook::Egress, true) | (Hook::Ingress, false) => (other_port, port),
                    _ => (port, other_port),
                };
                let l4 = match proto {
                    Proto::Tcp => L4::tcp(sport, dport, syn, ack),
                    Proto::Udp => L4::Udp { sport, dport },
                    Proto::Icmp => L4::Icmp {
                        ty: if forward {
                            8
                        } else if remote.is_ipv4() {
                            0
                        } else {
                            129
                        },
                        code: 0,
                    },
                    Proto::Any => L4::Other { proto: 47 },
                };
                Case {
                    packet: Packet::between(hook, local, remote, l4),
                    shape: Shape::Plain,
                }
            },
        )
}

fn case(policy: &Policy) -> impl Strategy<Value = Case> {
    let nets: Vec<IpNet> = policy.net_rules().map(|(n, _)| n).collect();
    let mut ports: Vec<PortRange> = policy.rules.iter().flat_map(|r| r.ports.clone()).collect();
    ports.sort();
    ports.dedup();
    let hook = prop_oneof![Just(Hook::Ingress), Just(Hook::Egress)];
    let other = (
        hook,
        prop_oneof![
            Just(Frame::Arp),
            Just(Frame::Ethertype(0x88cc)),
            Just(Frame::Ethertype(0x88b5))
        ],
        0u8..=3,
    )
        .prop_map(|(hook, frame, vlan_tags)| Case {
            packet: Packet { hook, vlan_tags, frame },
            shape: Shape::Plain,
        });
    prop_oneof![
        5 => ip_case(false, nets.clone(), ports.clone()),
        3 => ip_case(true, nets, ports),
        4 => aimed(policy),
        1 => other,
    ]
}

#[test]
fn kernel_and_model_agree_on_random_packets() {
    let policy = policy();
    let harness = RefCell::new(Harness::new(policy.clone()));
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 4000,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let seen = RefCell::new([0usize; 4]);
    let result = runner.run(&case(&policy), |c| {
        let mut h = harness.borrow_mut();
        let bytes = frame(&c.packet, &c.shape);
        let kernel = h.run(c.packet.hook, &bytes);
        let model = h.expect(&c.packet);
        let mut s = seen.borrow_mut();
        s[usize::from(kernel.delivered) * 2 + usize::from(matches!(c.packet.frame, Frame::Ip(_)))] += 1;
        prop_assert_eq!(kernel, model, "{:?} as {:?}", c.packet, c.shape);
        Ok(())
    });
    if let Err(e) = result {
        panic!("the kernel and the model disagree: {e}");
    }
    // The generator must reach both verdicts often, or agreeing proves little.
    let s = seen.into_inner();
    eprintln!(
        "ip packets: {} passed, {} dropped; other frames: {} passed, {} dropped",
        s[3], s[1], s[2], s[0]
    );
    assert!(
        s[3] > 400 && s[1] > 400,
        "IP packets passed {} and dropped {} times: the generator is lopsided",
        s[3],
        s[1]
    );

    // Broken shapes between random policy addresses: always dropped, with the model's reason.
    let mut h = harness.borrow_mut();
    for (a4, a6) in [
        ("198.51.100.200", "2001:db8:b:1::5"),
        ("13.80.125.22", "2001:db8:c00::9"),
        ("8.8.8.8", "2001:db8:9::9"),
    ] {
        let (v4, v6): (IpAddr, IpAddr) = (a4.parse().unwrap(), a6.parse().unwrap());
        for b in broken((v4, v4), (v6, v6), 443) {
            for hook in [Hook::Ingress, Hook::Egress] {
                if hook == Hook::Egress && !b.skb_testable() {
                    continue;
                }
                assert_eq!(
                    h.run(hook, &b.bytes),
                    h.expect(&b.packet(hook)),
                    "{} on {hook:?}",
                    b.name
                );
            }
        }
    }
    assert_eq!(h.mode(), Mode::Enforce);
}
