//! Connection tracking through BPF_PROG_TEST_RUN: each hole of the stateless return
//! path, closed without a flow and open with one, each vector checked against the
//! stateful reference model (`model::Tracker`) too; the random sequences, where kernel
//! and model must agree on every verdict and reason, are in `tracking/sequences.rs`.
//! Nothing is sent anywhere.

#[path = "tracking/sequences.rs"]
mod sequences;

use std::net::IpAddr;
use testkit as common;

use Hook::{Egress as OUT, Ingress as IN};
use allowgate::{
    catalog::{Direction, Feature, PortRange, Proto},
    policy::{
        Config, Mode, Policy,
        model::{self, ECHO_ID, Frame, Hook, IpPacket, L4, Packet, Quote, Reason, Seg, Verdict},
    },
};
use common::{Harness, allow, packet::Shape, policy as fixture};

/// This host's addresses (any would do: the policy names remote peers only).
const ME4: &str = "192.0.2.250";
const ME6: &str = "2001:db8:1::1";
/// The real page's EU1 portal address: egress tcp/443.
const PORTAL: &str = "13.80.125.22";
const RESOLVER4: &str = "198.51.100.53";
const RESOLVER6: &str = fixture::RESOLVER6;

/// The shared fixture (`testkit::policy`) and the entries this file's vectors need.
fn config() -> Config {
    let mut config = fixture::config();
    config.allow.extend([
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
    ]);
    config
}

fn build(config: &Config) -> Policy {
    fixture::build(
        config,
        &["eu1"],
        &[Feature::Portal, Feature::Siem],
        [RESOLVER4, RESOLVER6],
    )
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

/// A TCP segment between this host and `remote` going `hook`, ports from this host's
/// side, numbers 0 (a scanner's, or a segment of no connection).
fn tcp(hook: Hook, remote: &str, local_port: u16, remote_port: u16, syn: bool, ack: bool) -> Packet {
    seg(hook, remote, (local_port, remote_port), (syn, ack), Seg::default())
}

fn seg(hook: Hook, remote: &str, ports: (u16, u16), flags: (bool, bool), seg: Seg) -> Packet {
    let (sport, dport) = match hook {
        OUT => ports,
        IN => (ports.1, ports.0),
    };
    pkt(
        hook,
        remote,
        L4::Tcp {
            sport,
            dport,
            syn: flags.0,
            ack: flags.1,
            seg,
        },
    )
}

/// A TCP connection between this host and `remote`, with each side's next sequence
/// number, so that its segments carry the numbers a real one would.
struct Conn {
    remote: &'static str,
    ports: (u16, u16),
    /// Initial sequence numbers: the host's, the peer's.
    isn: (u32, u32),
    /// Next sequence numbers: the host's, the peer's.
    next: (u32, u32),
}

impl Conn {
    fn new(remote: &'static str, local_port: u16, remote_port: u16) -> Conn {
        let isn = (0x1000_0000, 0x7000_0000);
        Conn {
            remote,
            ports: (local_port, remote_port),
            isn,
            next: (isn.0.wrapping_add(1), isn.1.wrapping_add(1)),
        }
    }

    /// (this side's next, the other's next) for a segment going `hook`.
    fn numbers(&self, hook: Hook) -> (u32, u32) {
        match hook {
            OUT => self.next,
            IN => (self.next.1, self.next.0),
        }
    }

    fn send(&self, hook: Hook, flags: (bool, bool), seg_: Seg) -> Packet {
        seg(hook, self.remote, self.ports, flags, seg_)
    }

    fn syn(&self, hook: Hook) -> Packet {
        let isn = if hook == OUT { self.isn.0 } else { self.isn.1 };
        self.send(
            hook,
            (true, false),
            Seg {
                seq: isn,
                ..Seg::default()
            },
        )
    }

    fn synack(&self, hook: Hook) -> Packet {
        let (isn, other) = if hook == OUT {
            (self.isn.0, self.next.1)
        } else {
            (self.isn.1, self.next.0)
        };
        self.send(
            hook,
            (true, true),
            Seg {
                seq: isn,
                ack: other,
                ..Seg::default()
            },
        )
    }

    /// A segment acking all the other side sent, with `len` bytes (which it then counts).
    fn data(&mut self, hook: Hook, len: u16) -> Packet {
        let (seq, ack) = self.numbers(hook);
        let p = self.send(
            hook,
            (false, true),
            Seg {
                seq,
                ack,
                len,
                ..Seg::default()
            },
        );
        let n = if hook == OUT {
            &mut self.next.0
        } else {
            &mut self.next.1
        };
        *n = n.wrapping_add(u32::from(len));
        p
    }

    /// A RST at `seq` from `hook`'s side.
    fn rst(&self, hook: Hook, seq: u32) -> Packet {
        self.send(
            hook,
            (false, false),
            Seg {
                seq,
                rst: true,
                ..Seg::default()
            },
        )
    }
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
    let mut c = Conn::new(PORTAL, 40000, 443);
    expect(&mut h, "the host's SYN", &c.syn(OUT), PASS);
    expect(&mut h, "its SYN-ACK", &c.synack(IN), PASS);
    expect(&mut h, "its ACK", &c.data(OUT, 0), PASS);
    expect(&mut h, "data back", &c.data(IN, 100), PASS);
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
    let id_at = other_id.len() - 8;
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
    // Another transaction id (DHCPv4's xid is the message's bytes 4..8): not the host's.
    let mut forged = common::packet::frame(&offer, &Shape::Plain);
    let xid_at = forged.len() - 8 + 4;
    forged[xid_at..xid_at + 4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    let got = h.run(IN, &forged);
    assert_eq!(
        (got.verdict, got.reason),
        NO_FLOW,
        "an offer with another transaction id"
    );
    expect(&mut h, "the offer", &offer, (Verdict::Pass, Reason::Dhcp));
    // A reply answers nothing: the next one passes as long as the request is fresh.
    expect(&mut h, "another offer", &offer, (Verdict::Pass, Reason::Dhcp));
    expect(&mut h, "still no DHCPv6", &offer6, NO_FLOW);
    let solicit = Packet::between(OUT, ip("fe80::2"), ip("ff02::1:2"), L4::Udp { sport: 546, dport: 547 });
    expect(&mut h, "the host's solicit", &solicit, (Verdict::Pass, Reason::Dhcp));
    // DHCPv6's transaction id is the message's bytes 1..4.
    let mut forged6 = common::packet::frame(&offer6, &Shape::Plain);
    let tid_at = forged6.len() - 8 + 1;
    forged6[tid_at..tid_at + 3].copy_from_slice(&[0xab, 0xcd, 0xef]);
    let got = h.run(IN, &forged6);
    assert_eq!(
        (got.verdict, got.reason),
        NO_FLOW,
        "a DHCPv6 reply with another transaction id"
    );
    expect(&mut h, "the DHCPv6 reply", &offer6, (Verdict::Pass, Reason::Dhcp));
}

const OUT_OF_WINDOW: (Verdict, Reason) = (Verdict::Drop, Reason::OutOfWindow);

/// An established connection to the portal: a blind RST (any sequence but the exact
/// next), a stray segment and a FIN out of window change nothing; a RST in the window
/// but not exact passes for the host's stack to challenge, and changes nothing either;
/// the exact one closes. Liberal passes what is out of window, still changing nothing;
/// stateless passes the blind RST as any return.
#[test]
fn a_blind_rst_or_a_segment_out_of_window_changes_nothing() {
    common::require_root();
    for (label, liberal) in [("strict", false), ("liberal", true)] {
        let mut config = config();
        config.state.liberal = liberal;
        let mut h = Harness::new(build(&config));
        let mut c = Conn::new(PORTAL, 40000, 443);
        expect(&mut h, "SYN", &c.syn(OUT), PASS);
        expect(&mut h, "SYN-ACK", &c.synack(IN), PASS);
        expect(&mut h, "ACK", &c.data(OUT, 0), PASS);
        expect(&mut h, "data in", &c.data(IN, 1000), PASS);
        let oow = if liberal {
            (Verdict::Pass, Reason::OutOfWindow)
        } else {
            OUT_OF_WINDOW
        };
        let peer_next = c.next.1;
        for seq in [
            0,
            1,
            0x1234_5678,
            peer_next.wrapping_add(0x4000_0000),
            peer_next.wrapping_sub(0x0100_0000),
        ] {
            expect(
                &mut h,
                &format!("{label}: a blind RST at {seq:#x}"),
                &c.rst(IN, seq),
                oow,
            );
        }
        let mut stray = c.data(IN, 0);
        if let Frame::Ip(IpPacket {
            l4: L4::Tcp { seg, .. },
            ..
        }) = &mut stray.frame
        {
            seg.seq = seg.seq.wrapping_add(0x2000_0000);
        }
        expect(&mut h, &format!("{label}: data far out of window"), &stray, oow);
        let mut fin = c.data(IN, 0);
        if let Frame::Ip(IpPacket {
            l4: L4::Tcp { seg, .. },
            ..
        }) = &mut fin.frame
        {
            seg.seq = seg.seq.wrapping_sub(0x3000_0000);
            seg.fin = true;
        }
        expect(&mut h, &format!("{label}: a FIN out of window"), &fin, oow);
        // In the window, not exact: the host's stack answers it with a challenge ACK.
        expect(
            &mut h,
            "a RST in the window",
            &c.rst(IN, peer_next.wrapping_add(500)),
            PASS,
        );
        expect(&mut h, "the connection goes on both ways", &c.data(IN, 10), PASS);
        expect(&mut h, "and out", &c.data(OUT, 10), PASS);
        let (exact, _) = c.numbers(IN);
        expect(&mut h, "the exact RST", &c.rst(IN, exact), PASS);
    }

    // Control: stateless, the blind RST is just an answer from port 443.
    let mut config = config();
    config.state.mode = allowgate::policy::StateMode::Stateless;
    let mut h = Harness::new(build(&config));
    let c = Conn::new(PORTAL, 40000, 443);
    expect(&mut h, "stateless: a blind RST", &c.rst(IN, 0x1234_5678), PASS);
}

/// The kernel's and the model's flow counts, assured and all, agree.
fn assert_flows(h: &Harness, what: &str) -> (usize, usize) {
    let k = h.dataplane.flow_stats().expect("read the flow tables");
    let kernel = ((k.v4 + k.v6) as usize, (k.assured_v4 + k.assured_v6) as usize);
    assert_eq!(
        kernel,
        h.tracker.flows(),
        "{what}: (flows, assured) kernel vs model; {k:?}"
    );
    kernel
}

/// A SYN spoofed to an open port (the management port, from an address its CIDR
/// covers): the host answers, the spoofer's ACK can't ack the host's number, and the
/// flow is never established nor assured. The real client's ACK is.
#[test]
fn a_spoofed_syn_never_becomes_established_nor_assured() {
    common::require_root();
    let mut h = Harness::new(policy());
    for (client, server) in [("192.0.2.77", 22u16), ("2001:db8:ffff::77", 22)] {
        let c = Conn::new(client, server, 50000);
        expect(&mut h, "the SYN", &c.syn(IN), PASS);
        expect(&mut h, "the host's SYN-ACK", &c.synack(OUT), PASS);
        for guess in [0u32, 1, c.isn.0, c.isn.0.wrapping_add(2), 0xffff_ffff] {
            let blind = c.send(
                IN,
                (false, true),
                Seg {
                    seq: c.next.1,
                    ack: guess,
                    ..Seg::default()
                },
            );
            expect(&mut h, &format!("a blind ACK of {guess:#x}"), &blind, OUT_OF_WINDOW);
        }
        let (_, assured) = assert_flows(&h, "after the blind ACKs");
        assert_eq!(assured, if client.contains(':') { 1 } else { 0 }, "nothing new assured");
        let mut real = Conn::new(client, server, 50000);
        expect(&mut h, "the real client's ACK", &real.data(IN, 0), PASS);
        expect(&mut h, "its data", &real.data(IN, 200), PASS);
    }
    let (_, assured) = assert_flows(&h, "after the real ACKs");
    assert_eq!(assured, 2, "both real connections are assured");
}

/// A datagram's non-first fragments pass only after its first fragment passed, as it
/// did; any other non-first fragment is an orphan. Stateless keeps the old rule (the
/// addresses and protocol decide).
#[test]
fn non_first_fragments_pass_only_after_their_first_fragment() {
    common::require_root();
    let mut h = Harness::new(policy());
    for remote in [PORTAL, "2001:db8:b::10"] {
        let later = pkt(IN, remote, L4::Fragment { proto: 6 });
        let orphan = (Verdict::Drop, Reason::FragmentOrphan);
        expect(&mut h, &format!("{remote}: a later fragment first"), &later, orphan);
        let mut c = Conn::new(remote, 40000, 443);
        expect(&mut h, "SYN", &c.syn(OUT), PASS);
        expect(&mut h, "SYN-ACK", &c.synack(IN), PASS);
        expect(&mut h, "ACK", &c.data(OUT, 0), PASS);
        let first = c.data(IN, 600);
        let shape = if remote.contains(':') {
            Shape::V6FirstFragment
        } else {
            Shape::V4FirstFragment
        };
        let (kernel, model) = h.step(&first, &shape);
        assert_eq!((model.verdict, model.reason), PASS, "the first fragment");
        assert_eq!(kernel, model, "the first fragment");
        expect(&mut h, "its later fragment", &later, PASS);
        expect(&mut h, "another of its fragments", &later, PASS);
        // Another datagram (another identification) between the same hosts: an orphan.
        let mut other = common::packet::frame(&later, &Shape::Plain);
        if remote.contains(':') {
            // The fragment header's identification: the frame's bytes 14+40+4 ..
            other[14 + 40 + 4..14 + 40 + 8].copy_from_slice(&0x9999u32.to_be_bytes());
        } else {
            other[14 + 4..14 + 6].copy_from_slice(&0x9999u16.to_be_bytes());
        }
        let got = h.run(IN, &other);
        assert_eq!(
            (got.verdict, got.reason),
            orphan,
            "{remote}: a fragment of another datagram"
        );
        // Another protocol's datagram of the same id: not this one either.
        expect(
            &mut h,
            "a UDP fragment",
            &pkt(IN, remote, L4::Fragment { proto: 17 }),
            orphan,
        );
    }

    let mut config = config();
    config.state.mode = allowgate::policy::StateMode::Stateless;
    let mut h = Harness::new(build(&config));
    expect(
        &mut h,
        "stateless: a later fragment from an allowed peer",
        &pkt(IN, PORTAL, L4::Fragment { proto: 6 }),
        PASS,
    );
}

/// Window scaling from the handshake: with scale 7 both ways, a segment far into the
/// window a scaled window opens passes; without the option in the answer, windows are
/// unscaled and the same segment is out of the window.
#[test]
fn window_scales_come_from_the_handshake() {
    common::require_root();
    for (answer_scales, want) in [(true, PASS), (false, OUT_OF_WINDOW)] {
        let mut h = Harness::new(policy());
        let mut c = Conn::new(PORTAL, 40000, 443);
        let mut syn = c.syn(OUT);
        let mut synack = c.synack(IN);
        for (p, on) in [(&mut syn, true), (&mut synack, answer_scales)] {
            if let Frame::Ip(IpPacket {
                l4: L4::Tcp { seg, .. },
                ..
            }) = &mut p.frame
            {
                seg.wscale = on.then_some(7);
                seg.win = 1000;
            }
        }
        expect(&mut h, "SYN", &syn, PASS);
        expect(&mut h, "SYN-ACK", &synack, PASS);
        // The host offers 1000 << 7 = 128,000 bytes (or 1000 unscaled).
        let mut ack = c.data(OUT, 0);
        if let Frame::Ip(IpPacket {
            l4: L4::Tcp { seg, .. },
            ..
        }) = &mut ack.frame
        {
            seg.win = 1000;
        }
        expect(&mut h, "ACK", &ack, PASS);
        let far = c.send(
            IN,
            (false, true),
            Seg {
                seq: c.next.1.wrapping_add(100_000),
                ack: c.next.0,
                ..Seg::default()
            },
        );
        expect(
            &mut h,
            &format!("100,000 bytes in (answer scales: {answer_scales})"),
            &far,
            want,
        );
    }
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
    let c = Conn::new(admin, 22, 50000);
    expect(&mut h, "the admin's SYN", &c.syn(IN), PASS);
    expect(&mut h, "the SYN-ACK", &c.synack(OUT), PASS);
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
    let mut c = Conn::new(peer, 40000, 8080);
    expect(&mut h, "the host's SYN", &c.syn(OUT), PASS);
    expect(&mut h, "the SYN-ACK", &c.synack(IN), PASS);
    expect(&mut h, "the ACK", &c.data(OUT, 0), PASS);
    h.set_policy(policy_without_tcp_peers());
    let cut = (Verdict::Drop, Reason::Policy);
    // Bare ACKs: what the cut drops is not counted in (TCP would send it again).
    expect(&mut h, "data out once the rule is gone", &c.data(OUT, 0), cut);
    expect(&mut h, "data in once the rule is gone", &c.data(IN, 0), cut);
    h.set_policy(policy());
    // Put back, the flow is still tracked: the next generation did not forget it.
    expect(&mut h, "data in again", &c.data(IN, 10), PASS);
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

/// The peer filter rebuilt from the assured tables (as the daemon does every minute,
/// twice: both generations) keeps every assured flow's bit: no answer of one drops.
#[test]
fn a_rebuilt_peer_filter_keeps_every_assured_flows_answers() {
    common::require_root();
    let mut h = Harness::new(policy());
    // The any-protocol egress rule to 203.0.113.0/24: a connection to each address.
    let mut conns: Vec<Conn> = (1..=200)
        .map(|i| Conn::new(Box::leak(format!("203.0.113.{i}").into_boxed_str()), 40000, 4000))
        .collect();
    for c in &mut conns {
        expect(&mut h, "SYN", &c.syn(OUT), PASS);
        expect(&mut h, "SYN-ACK", &c.synack(IN), PASS);
        expect(&mut h, "ACK", &c.data(OUT, 0), PASS);
    }
    let (_, assured) = assert_flows(&h, "after the handshakes");
    assert_eq!(assured, 200);
    for round in 0..2 {
        let bits = h.dataplane.rebuild_peer_filter().expect("rebuild the peer filter");
        assert!(
            (1..=200).contains(&bits),
            "round {round}: {bits} bits for 200 assured peers"
        );
        for c in &mut conns {
            expect(
                &mut h,
                &format!("round {round}: data back from {}", c.remote),
                &c.data(IN, 10),
                PASS,
            );
        }
    }
}
