//! Connection tracking through BPF_PROG_TEST_RUN: each hole of the stateless return
//! path, closed without a flow and open with one; and random sequences of packets
//! through the kernel and through the stateful reference model (`model::Tracker`),
//! which must agree on every verdict and reason. Nothing is sent anywhere.

use std::net::IpAddr;
use testkit as common;

use Hook::{Egress as OUT, Ingress as IN};
use allowgate::{
    catalog::{Catalog, Direction, Feature, PortRange, Proto},
    policy::{
        Config, Mode, Policy, Selection,
        model::{self, ECHO_ID, Frame, Hook, IpPacket, L4, Packet, Quote, Reason, Verdict},
    },
};
use common::{Harness, Outcome, allow, packet::Shape};
use proptest::{
    prelude::*,
    test_runner::{Config as RunnerConfig, TestRunner},
};

/// This host's addresses (any would do: the policy names remote peers only).
const ME4: &str = "192.0.2.250";
const ME6: &str = "2001:db8:1::1";
/// The real page's EU1 portal address: egress tcp/443.
const PORTAL: &str = "13.80.125.22";
const RESOLVER4: &str = "198.51.100.53";
const RESOLVER6: &str = "2001:db8::53";

fn config() -> Config {
    let mut config = Config::default();
    config.management.cidrs = vec!["192.0.2.0/25".parse().unwrap(), "2001:db8:ffff::/48".parse().unwrap()];
    config.allow = vec![
        // `proto` left out of an [[allow]] means any protocol.
        allow("203.0.113.0/24", Direction::Egress, Proto::Any, &[]),
        allow(
            "198.51.100.200/32",
            Direction::Ingress,
            Proto::Udp,
            &[PortRange::single(5000)],
        ),
        allow(
            "198.51.100.0/25",
            Direction::Egress,
            Proto::Tcp,
            &[PortRange::single(443), PortRange { lo: 8000, hi: 8100 }],
        ),
        allow("198.51.100.192/26", Direction::Ingress, Proto::Icmp, &[]),
        allow(
            "2001:db8:b::/48",
            Direction::Egress,
            Proto::Tcp,
            &[PortRange::single(443)],
        ),
        allow(
            "2001:db8:b:1::/64",
            Direction::Ingress,
            Proto::Tcp,
            &[PortRange { lo: 1000, hi: 2000 }],
        ),
        allow("2001:db8:c00::/40", Direction::Egress, Proto::Icmp, &[]),
    ];
    config
}

fn build(config: &Config) -> Policy {
    let selection = Selection {
        regions: vec!["eu1".into()],
        features: vec![Feature::Portal, Feature::Siem],
    };
    let dns: [IpAddr; 2] = [RESOLVER4.parse().unwrap(), RESOLVER6.parse().unwrap()];
    Policy::build(&Catalog::builtin(), &selection, config, &dns)
}

fn policy() -> Policy {
    build(&config())
}

/// The same policy without the 198.51.100.0/25 egress rule: what turning a region
/// off does to the flows only it allowed.
fn policy_without_tcp_peers() -> Policy {
    let mut config = config();
    config.allow.retain(|a| a.cidr != "198.51.100.0/25".parse().unwrap());
    build(&config)
}

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

fn me(remote: IpAddr) -> IpAddr {
    if remote.is_ipv6() { ip(ME6) } else { ip(ME4) }
}

/// A packet between this host and `remote` going `hook`; ports from this host's side.
fn pkt(hook: Hook, remote: &str, l4: L4) -> Packet {
    let remote = ip(remote);
    Packet::between(hook, me(remote), remote, l4)
}

fn tcp(hook: Hook, remote: &str, local_port: u16, remote_port: u16, syn: bool, ack: bool) -> Packet {
    let (sport, dport) = match hook {
        OUT => (local_port, remote_port),
        IN => (remote_port, local_port),
    };
    pkt(hook, remote, L4::Tcp { sport, dport, syn, ack })
}

fn udp(hook: Hook, remote: &str, local_port: u16, remote_port: u16) -> Packet {
    let (sport, dport) = match hook {
        OUT => (local_port, remote_port),
        IN => (remote_port, local_port),
    };
    pkt(hook, remote, L4::Udp { sport, dport })
}

/// An ICMP error from (or to) `remote` quoting a packet between `local` and `peer`
/// that went the other way.
fn icmp_error(hook: Hook, remote: &str, ty: u8, quoted: (&str, &str, u8, u16, u16)) -> Packet {
    let (local, peer, proto, lport, rport) = quoted;
    let quote = match hook {
        // Coming in, it quotes what this host sent.
        IN => Quote {
            src: ip(local),
            dst: ip(peer),
            proto,
            sport: lport,
            dport: rport,
        },
        OUT => Quote {
            src: ip(peer),
            dst: ip(local),
            proto,
            sport: rport,
            dport: lport,
        },
    };
    pkt(hook, remote, L4::IcmpError { ty, code: 0, quote })
}

/// Runs `packet` through the kernel and the stateful model; both must give `want`.
fn expect(h: &mut Harness, what: &str, packet: &Packet, want: (Verdict, Reason)) {
    let (kernel, model) = h.step(packet, &Shape::Plain);
    assert_eq!(
        (model.verdict, model.reason),
        want,
        "{what}: the model disagrees with the expectation"
    );
    assert_eq!(kernel, model, "{what}: kernel {kernel:?}, model {model:?}");
}

const PASS: (Verdict, Reason) = (Verdict::Pass, Reason::Policy);
const NO_FLOW: (Verdict, Reason) = (Verdict::Drop, Reason::NoFlow);

#[test]
fn an_ack_scan_from_an_allowed_peer_reaches_no_port_until_the_host_connects() {
    common::require_root();
    let mut h = Harness::new(policy());
    for port in [22, 25, 8080, 40000, 65535] {
        let scan = tcp(IN, PORTAL, port, 443, false, true);
        expect(
            &mut h,
            &format!("ACK from the portal's 443 to port {port}"),
            &scan,
            NO_FLOW,
        );
        let synack = tcp(IN, PORTAL, port, 443, true, true);
        expect(&mut h, &format!("SYN-ACK to port {port}"), &synack, NO_FLOW);
    }
    expect(
        &mut h,
        "the host's SYN",
        &tcp(OUT, PORTAL, 40000, 443, true, false),
        PASS,
    );
    expect(&mut h, "its SYN-ACK", &tcp(IN, PORTAL, 40000, 443, true, true), PASS);
    expect(&mut h, "its ACK", &tcp(OUT, PORTAL, 40000, 443, false, true), PASS);
    expect(&mut h, "data back", &tcp(IN, PORTAL, 40000, 443, false, true), PASS);
    // The flow is that connection, not the peer: other ports stay closed.
    expect(
        &mut h,
        "ACK to port 40001",
        &tcp(IN, PORTAL, 40001, 443, false, true),
        NO_FLOW,
    );
    expect(
        &mut h,
        "ACK to port 22",
        &tcp(IN, PORTAL, 22, 443, false, true),
        NO_FLOW,
    );
    // A flow never widens the policy: a SYN from the peer is still no answer.
    let syn = tcp(IN, PORTAL, 40000, 443, true, false);
    expect(
        &mut h,
        "a SYN on the flow's ports",
        &syn,
        (Verdict::Drop, Reason::Policy),
    );
}

#[test]
fn resolver_answers_go_only_to_the_port_and_id_of_a_query() {
    common::require_root();
    let mut h = Harness::new(policy());
    for resolver in [RESOLVER4, RESOLVER6] {
        for port in [161, 9999, 5353] {
            let answer = udp(IN, resolver, port, 53);
            expect(
                &mut h,
                &format!("{resolver}: an answer to port {port}"),
                &answer,
                NO_FLOW,
            );
        }
        expect(&mut h, "the host's query", &udp(OUT, resolver, 5353, 53), PASS);
        expect(&mut h, "its answer", &udp(IN, resolver, 5353, 53), PASS);
        expect(
            &mut h,
            "an answer to another port",
            &udp(IN, resolver, 161, 53),
            NO_FLOW,
        );
    }
    // The id too: the data plane noted the query's id (0 in these frames); an
    // answer with another id to the same port is not this query's.
    let mut other_id = common::packet::frame(&udp(IN, RESOLVER4, 5353, 53), &Shape::Plain);
    let id_at = other_id.len() - 4;
    other_id[id_at..id_at + 2].copy_from_slice(&0x4242u16.to_be_bytes());
    let got = h.run(IN, &other_id);
    assert_eq!((got.verdict, got.reason), NO_FLOW, "an answer with another DNS id");
}

#[test]
fn dhcp_replies_only_after_the_hosts_request() {
    common::require_root();
    let mut h = Harness::new(policy());
    let offer = Packet::between(IN, ip("0.0.0.0"), ip("198.51.100.1"), L4::Udp { sport: 67, dport: 68 });
    expect(&mut h, "an offer nobody asked for", &offer, NO_FLOW);
    let offer6 = Packet::between(IN, ip("fe80::1"), ip("fe80::2"), L4::Udp { sport: 547, dport: 546 });
    expect(&mut h, "a DHCPv6 reply nobody asked for", &offer6, NO_FLOW);
    let discover = Packet::between(
        OUT,
        ip("0.0.0.0"),
        ip("255.255.255.255"),
        L4::Udp { sport: 68, dport: 67 },
    );
    expect(&mut h, "the host's discover", &discover, (Verdict::Pass, Reason::Dhcp));
    expect(&mut h, "the offer", &offer, (Verdict::Pass, Reason::Dhcp));
    expect(&mut h, "still no DHCPv6", &offer6, NO_FLOW);
}

#[test]
fn icmp_errors_pass_only_when_they_quote_a_tracked_flow() {
    common::require_root();
    let mut h = Harness::new(policy());
    let router = "198.51.100.1";
    let flow = (ME4, PORTAL, 6u8, 40000u16, 443u16);
    let frag_needed = icmp_error(IN, router, 3, flow);
    expect(&mut h, "frag-needed for no connection", &frag_needed, NO_FLOW);
    let bare = pkt(IN, router, L4::Icmp { ty: 3, code: 4 });
    expect(&mut h, "an error quoting nothing", &bare, NO_FLOW);
    let bare_out = pkt(OUT, "8.8.8.8", L4::Icmp { ty: 3, code: 3 });
    expect(&mut h, "an error going out quoting nothing", &bare_out, NO_FLOW);

    expect(
        &mut h,
        "the host's SYN",
        &tcp(OUT, PORTAL, 40000, 443, true, false),
        PASS,
    );
    expect(
        &mut h,
        "PMTUD for the open connection",
        &frag_needed,
        (Verdict::Pass, Reason::IcmpError),
    );
    let other = icmp_error(IN, router, 3, (ME4, PORTAL, 6, 40001, 443));
    expect(&mut h, "an error for another port", &other, NO_FLOW);
    let not_mine = icmp_error(IN, router, 3, ("192.0.2.251", PORTAL, 6, 40000, 443));
    expect(&mut h, "an error quoting another host's packet", &not_mine, NO_FLOW);

    // IPv6: packet too big for an open connection.
    let flow6 = (ME6, "2001:db8:b::10", 6u8, 40000u16, 443u16);
    let too_big = icmp_error(IN, "2001:db8:9::1", 2, flow6);
    expect(&mut h, "packet too big for no connection", &too_big, NO_FLOW);
    expect(
        &mut h,
        "the host's v6 SYN",
        &tcp(OUT, "2001:db8:b::10", 40000, 443, true, false),
        PASS,
    );
    expect(
        &mut h,
        "packet too big for it",
        &too_big,
        (Verdict::Pass, Reason::IcmpError),
    );

    // Going out: the host's port unreachable for a datagram an ingress rule let in.
    let unreachable = icmp_error(OUT, "198.51.100.200", 3, (ME4, "198.51.100.200", 17, 5000, 7777));
    expect(&mut h, "port unreachable for nothing let in", &unreachable, NO_FLOW);
    expect(&mut h, "a datagram in", &udp(IN, "198.51.100.200", 5000, 7777), PASS);
    expect(
        &mut h,
        "its port unreachable",
        &unreachable,
        (Verdict::Pass, Reason::IcmpError),
    );

    // An echo the host sent: its error quotes the echo by its identifier.
    let echo_error = icmp_error(IN, "2001:db8:9::1", 3, (ME6, "2001:db8:c00::9", 58, ECHO_ID, ECHO_ID));
    expect(&mut h, "time exceeded for no echo", &echo_error, NO_FLOW);
    let ping = pkt(OUT, "2001:db8:c00::9", L4::Icmp { ty: 128, code: 0 });
    expect(&mut h, "the host's echo request", &ping, PASS);
    expect(
        &mut h,
        "time exceeded for it",
        &echo_error,
        (Verdict::Pass, Reason::IcmpError),
    );
    let pong = pkt(IN, "2001:db8:c00::9", L4::Icmp { ty: 129, code: 0 });
    expect(&mut h, "the echo reply", &pong, PASS);
}

#[test]
fn any_protocol_egress_peers_send_nothing_in_unasked() {
    common::require_root();
    let mut h = Harness::new(policy());
    let peer = "203.0.113.9";
    for (what, proto) in [("SCTP INIT", 132u8), ("GRE", 47), ("IPIP", 4), ("ESP", 50)] {
        let inbound = pkt(IN, peer, L4::Other { proto });
        expect(&mut h, &format!("{what} in"), &inbound, NO_FLOW);
    }
    for port in [161, 9999] {
        expect(&mut h, &format!("udp to {port}"), &udp(IN, peer, port, 4000), NO_FLOW);
    }
    expect(&mut h, "GRE out", &pkt(OUT, peer, L4::Other { proto: 47 }), PASS);
    expect(&mut h, "GRE back", &pkt(IN, peer, L4::Other { proto: 47 }), PASS);
    expect(&mut h, "still no ESP", &pkt(IN, peer, L4::Other { proto: 50 }), NO_FLOW);
    expect(&mut h, "udp out", &udp(OUT, peer, 9999, 4000), PASS);
    expect(&mut h, "its answer", &udp(IN, peer, 9999, 4000), PASS);
    expect(&mut h, "udp to 161 still", &udp(IN, peer, 161, 4000), NO_FLOW);
}

#[test]
fn ingress_rules_answer_only_what_they_let_in() {
    common::require_root();
    let mut h = Harness::new(policy());
    let admin = "192.0.2.10";
    expect(
        &mut h,
        "an answer from port 22 first",
        &tcp(OUT, admin, 22, 50000, true, true),
        NO_FLOW,
    );
    expect(&mut h, "the admin's SYN", &tcp(IN, admin, 22, 50000, true, false), PASS);
    expect(&mut h, "the SYN-ACK", &tcp(OUT, admin, 22, 50000, true, true), PASS);
    expect(
        &mut h,
        "to another client port",
        &tcp(OUT, admin, 22, 50001, false, true),
        NO_FLOW,
    );
}

#[test]
fn state_never_overrides_policy_and_flows_outlive_generations() {
    common::require_root();
    let mut h = Harness::new(policy());
    let peer = "198.51.100.10";
    expect(
        &mut h,
        "the host's SYN",
        &tcp(OUT, peer, 40000, 8080, true, false),
        PASS,
    );
    expect(&mut h, "the SYN-ACK", &tcp(IN, peer, 40000, 8080, true, true), PASS);
    h.set_policy(policy_without_tcp_peers());
    let cut = (Verdict::Drop, Reason::Policy);
    expect(
        &mut h,
        "data out once the rule is gone",
        &tcp(OUT, peer, 40000, 8080, false, true),
        cut,
    );
    expect(
        &mut h,
        "data in once the rule is gone",
        &tcp(IN, peer, 40000, 8080, false, true),
        cut,
    );
    h.set_policy(policy());
    // Put back, the flow is still tracked: the next generation did not forget it.
    expect(&mut h, "data in again", &tcp(IN, peer, 40000, 8080, false, true), PASS);
}

#[test]
fn stateless_mode_keeps_the_old_return_path() {
    common::require_root();
    let mut config = config();
    config.state.mode = allowgate::policy::StateMode::Stateless;
    let mut h = Harness::new(build(&config));
    expect(
        &mut h,
        "an ACK from the portal",
        &tcp(IN, PORTAL, 22, 443, false, true),
        PASS,
    );
    expect(
        &mut h,
        "an answer from the resolver",
        &udp(IN, RESOLVER4, 161, 53),
        PASS,
    );
    let frag_needed = icmp_error(IN, "198.51.100.1", 3, (ME4, PORTAL, 6, 1, 443));
    expect(&mut h, "any error", &frag_needed, (Verdict::Pass, Reason::IcmpError));
}

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
    syn: bool,
    ack: bool,
    icmp_type: usize,
    other_proto: u8,
    /// The conversation an ICMP error quotes, and the protocol of the quoted packet.
    quoted: usize,
    quoted_kind: u8,
    shape: u8,
    vlan: u8,
}

#[derive(Clone, Debug)]
enum Step {
    Send(Send),
    /// Install the other policy (with or without the 198.51.100.0/25 rule).
    Toggle,
}

fn send() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![6 => Just(0u8), 4 => Just(1), 2 => Just(2), 1 => Just(3), 2 => Just(4), 1 => Just(5)];
    (
        (
            0usize..8,
            prop_oneof![Just(OUT), Just(IN)],
            kind,
            any::<bool>(),
            any::<bool>(),
        ),
        (
            0usize..3,
            prop::sample::select(vec![47u8, 50, 132]),
            0usize..8,
            0u8..3,
            0u8..6,
            0u8..3,
        ),
    )
        .prop_map(
            |((conversation, hook, kind, syn, ack), (icmp_type, other_proto, quoted, quoted_kind, shape, vlan))| {
                Step::Send(Send {
                    conversation,
                    hook,
                    kind,
                    syn,
                    ack,
                    icmp_type,
                    other_proto,
                    quoted,
                    quoted_kind,
                    shape,
                    vlan,
                })
            },
        )
}

/// The packet and frame layout of a step in `conversations`.
fn lay_out(s: &Send, conversations: &[Ends]) -> (Packet, Shape) {
    let (local, remote, lport, rport) = conversations[s.conversation % conversations.len()];
    let v6 = remote.is_ipv6();
    let icmp = if v6 { 58u8 } else { 1 };
    let (sport, dport) = match s.hook {
        OUT => (lport, rport),
        IN => (rport, lport),
    };
    let l4 = match s.kind {
        0 => L4::Tcp {
            sport,
            dport,
            syn: s.syn,
            ack: s.ack,
        },
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
        _ => L4::Fragment { proto: 6 },
    };
    // Ports in any layout the parser sees through; the rest plainly.
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

fn sequence() -> impl Strategy<Value = (Vec<Ends>, Vec<Step>)> {
    let step = prop_oneof![30 => send(), 1 => Just(Step::Toggle)];
    (
        prop::collection::vec(conversation(), 2..8),
        prop::collection::vec(step, 30..120),
    )
}

#[test]
fn kernel_and_model_agree_on_random_sequences() {
    common::require_root();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 40,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let (with, without) = (policy(), policy_without_tcp_peers());
    // [tracked returns passed, no-flow drops, other drops, forward passes]
    let seen = std::cell::RefCell::new([0usize; 4]);
    let result = runner.run(&sequence(), |(conversations, steps)| {
        let mut h = Harness::new(with.clone());
        let mut toggled = false;
        for (i, step) in steps.iter().enumerate() {
            let (packet, shape) = match step {
                Step::Toggle => {
                    toggled = !toggled;
                    h.set_policy(if toggled { without.clone() } else { with.clone() });
                    continue;
                }
                Step::Send(s) => lay_out(s, &conversations),
            };
            let alone = model::judge(&h.policy, &packet);
            let (kernel, model): (Outcome, Outcome) = h.step(&packet, &shape);
            let mut s = seen.borrow_mut();
            match (model.verdict, model.reason) {
                (Verdict::Pass, _) if alone.return_only => s[0] += 1,
                (Verdict::Drop, Reason::NoFlow) => s[1] += 1,
                (Verdict::Drop, _) => s[2] += 1,
                (Verdict::Pass, _) => s[3] += 1,
            }
            prop_assert_eq!(kernel, model, "step {}: {:?} as {:?}", i, packet, shape);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("the kernel and the stateful model disagree: {e}");
    }
    let s = seen.into_inner();
    eprintln!(
        "tracked returns passed {}, no-flow drops {}, other drops {}, forward passes {}",
        s[0], s[1], s[2], s[3]
    );
    // The generator must reach every outcome often, or agreeing proves little.
    assert!(s.iter().all(|&n| n > 100), "outcomes {s:?}: the generator is lopsided");
    assert_eq!(with.mode, Mode::Enforce);
}
