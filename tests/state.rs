//! Connection tracking end to end (issue 9): the real daemon on a veth pair between two
//! namespaces made here, real TCP and UDP, and segments made by hand from raw sockets.
//! A return path opens only for a flow the host's side started, and related traffic
//! (ICMP errors, DHCP replies, a resolver's answers) only for the flow it belongs to;
//! state never overrides policy; a connection lives through restarts, kills and swaps,
//! and one opened before the daemon started keeps working. Each probe also runs where it must show the hole
//! (`[state] mode = "stateless"`, the old behaviour) or a cut, so that none of these
//! tests can pass by seeing nothing at all. Only documentation-range addresses
//! assigned in these namespaces carry traffic.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{
    config::Allow,
    dns::{Zone, query},
    exposition::{self, labels},
    netns::{HOST_V4, HOST_V6, Netns, PEER_V4, PEER_V6, Servers, http_get, sa, tcp_connects},
    raw::{ICMP, ICMPV6, RawSender, SeenTcp, TCP, Tcp, TcpEar, port_unreachable, udp_packet},
    talk::{Chat, Conversation, Side},
    world::*,
};

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");

/// How long the scanner listens for answers to its segments: a RST comes back within a
/// millisecond or two when one comes at all.
const SCAN_WAIT: Duration = Duration::from_secs(1);
/// How long a message that was held back may take to arrive once the way is open again:
/// TCP's retransmission timer has backed off to a second or more by then.
const RETRANSMIT_WAIT: Duration = Duration::from_secs(10);
/// A round of a conversation this slow waited for one of TCP's timers (200 ms at least).
const LATE_ROUND: Duration = Duration::from_millis(150);
/// The pace of a conversation that runs through restarts and swaps.
const CHAT_EVERY: Duration = Duration::from_millis(100);

/// Host ports the ACK scan knocks on: one with a listener, closed ones. Not 22: the
/// world's management rule lets anything from 192.0.2.0/24 in to it.
const LISTENING: u16 = 8080;
const SCANNED: [u16; 4] = [LISTENING, 9, 1000, 33333];
/// The management port of the world's config (`[management]` has the default ports).
const MANAGEMENT: u16 = 22;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Stateful,
    Stateless,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Stateful => "stateful",
            State::Stateless => "stateless",
        }
    }
}

/// The world of these tests: eu1's portal (tcp/443 to SHARED and EU1_ONLY), and the
/// operator's own rules for IPv6 and UDP: tcp/443 and udp/53,7000 to the peer's
/// link address, udp/53,7000 to SHARED; `metrics` where the daemon serves them.
fn world(state: State, metrics: Option<&str>) -> World {
    World::edited(BIN, Setup::default(), |c| {
        let c = c.key("drop_log_interval", 1u64);
        metrics
            .into_iter()
            .fold(c, |c, m| c.key("metrics", m))
            .set("state", "mode", state.name())
            .allow(Allow::egress(&format!("{PEER_V6}/128"), "tcp").ports(&["443"]))
            .allow(Allow::egress(&format!("{PEER_V6}/128"), "udp").ports(&["53", "7000"]))
            .allow(Allow::egress(&format!("{SHARED}/32"), "udp").ports(&["53", "7000"]))
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Packets counted under `counters.DIRECTION.drop` (all reasons) of `status --json`.
fn drops(status: &Value, direction: &str) -> u64 {
    status["counters"][direction]["drop"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counters.{direction}.drop in {status}"))
}

/// Drops of `direction` counted under `reason` (0 when the reason is not listed).
fn drops_for(status: &Value, direction: &str, reason: &str) -> u64 {
    let by = &status["counters"][direction]["drop_by_reason"];
    assert!(by.is_object(), "no counters.{direction}.drop_by_reason in {status}");
    by[reason].as_u64().unwrap_or(0)
}

fn reasons(status: &Value, direction: &str) -> String {
    status["counters"][direction]["drop_by_reason"].to_string()
}

/// Where the daemon of these worlds serves metrics: the host namespace is the test's
/// own, so the port is free.
const METRICS: &str = "127.0.0.1:9464";

/// `allowgate_packets_total` of (direction, drop, reason), 0 when absent.
fn metric_drops(world: &World, direction: &str, reason: &str) -> f64 {
    let response =
        http_get(world.host(), METRICS.parse().unwrap(), "/metrics", PASS_WAIT).expect("scrape the metrics endpoint");
    let (_, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head: {response:?}"));
    let series = (
        "allowgate_packets_total".to_string(),
        labels(&[("direction", direction), ("verdict", "drop"), ("reason", reason)]),
    );
    exposition::parse(body).get(&series).copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// 1. An ACK scan from an allowed peer gets nothing back

/// From the peer, bare ACKs from `from`:443 to every port of SCANNED on `to`, with the
/// host listening on LISTENING; every TCP segment the peer then receives from `to`
/// in answer to them.
fn ack_scan(world: &World, from: &str, to: &str) -> Vec<SeenTcp> {
    let (from, to) = (ip(from), ip(to));
    let listen_on = SocketAddr::new(to, LISTENING);
    let _listener: TcpListener = world
        .host()
        .enter(move || TcpListener::bind(listen_on))
        .unwrap_or_else(|e| panic!("listen on {listen_on}: {e}"));
    world.pair.peer.enter(move || {
        let ear = TcpEar::new(to.is_ipv6()).expect("a raw TCP socket to listen with");
        let sender = RawSender::new(from, TCP).expect("a raw socket to send from");
        for port in SCANNED {
            sender
                .send_tcp(to, &Tcp::ack(443, port))
                .unwrap_or_else(|e| panic!("send an ACK {from}:443 -> {to}:{port}: {e}"));
        }
        ear.listen(SCAN_WAIT)
            .into_iter()
            .filter(|s| s.src == to && s.dport == 443 && SCANNED.contains(&s.sport))
            .collect()
    })
}

fn list(seen: &[SeenTcp]) -> String {
    seen.iter().map(|s| format!("\n  {s}")).collect()
}

#[test]
fn an_ack_scan_from_an_allowed_peer_gets_nothing_back() {
    // SHARED is allowed by the catalog (eu1's portal, tcp/443 out), PEER_V6 by an
    // [[allow]] entry: each may answer from port 443, neither has a connection here.
    let scans = [(SHARED, HOST_V4), (PEER_V6, HOST_V6)];

    // Control: stateless, every port answers the scan with a RST, the listening one
    // too. This is the hole, and it shows the scanner hears what comes back.
    let control = world(State::Stateless, None);
    let daemon = control.start_daemon();
    for (from, to) in scans {
        let seen = ack_scan(&control, from, to);
        for port in SCANNED {
            assert!(
                seen.iter().any(|s| s.sport == port && s.is_rst()),
                "stateless: the ACK from {from}:443 to {to}:{port} drew no RST, so this test could \
                 not tell a hole from a closed one; heard:{}",
                list(&seen)
            );
        }
    }
    drop(daemon);
    drop(control);

    let world = world(State::Stateful, Some(METRICS));
    let _servers = world.servers();
    let _v6_server = Servers::start(&world.pair.peer, &[sa(PEER_V6, 443)], &[]);
    let _daemon = world.start_daemon();
    let events = Events::follow(&world);
    let mut named = Vec::new();
    for (from, to) in scans {
        let before = world.status();
        let seen = ack_scan(&world, from, to);
        assert!(
            seen.is_empty(),
            "stateful: the host answered an ACK scan from {from}:443 (no flow behind it):{}",
            list(&seen)
        );
        let after = world.status();
        let dropped = drops_for(&after, "ingress", "no-flow") - drops_for(&before, "ingress", "no-flow");
        assert!(
            dropped >= SCANNED.len() as u64,
            "the {} ACKs from {from} were to be dropped as no-flow, {dropped} were: {}",
            SCANNED.len(),
            reasons(&after, "ingress")
        );
        named.extend(events.drain(Duration::from_millis(300)));
    }
    // The new reason reaches users by its name wherever drops are told.
    assert!(
        metric_drops(&world, "ingress", "no-flow") >= (2 * SCANNED.len()) as f64,
        "the metrics count the scan's drops under reason=\"no-flow\""
    );
    let scanned =
        |e: &Value| e["reason"] == "no-flow" && e["direction"] == "ingress" && e["sport"] == 443 && e["proto"] == 6;
    // The subscription starts when the daemon reads the request: scan again until one
    // of the drops is told (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !named.iter().any(scanned) {
        assert!(
            Instant::now() < deadline,
            "no event told of a no-flow drop of the scan; saw {named:#?}"
        );
        assert!(ack_scan(&world, SHARED, HOST_V4).is_empty());
        named.extend(events.drain(Duration::from_millis(300)));
    }
    let event = named.iter().find(|e| scanned(e)).unwrap();
    assert_eq!(event["enforced"], true, "{event}");
    assert!(
        [SHARED, PEER_V6].contains(&event["src"].as_str().unwrap_or_default()),
        "{event}"
    );
    // State takes nothing from what the rules allow: real connections out still work.
    assert!(world.passes(SHARED), "host -> {SHARED}:443 under stateful");
    assert!(
        tcp_connects(world.host(), sa(PEER_V6, 443), PASS_WAIT),
        "host -> [{PEER_V6}]:443 under stateful"
    );
    // And the scan still gets nothing once real connections to the peer exist: a flow
    // opens the return path of its own ports only.
    for (from, to) in scans {
        let seen = ack_scan(&world, from, to);
        assert!(seen.is_empty(), "stateful, after real connections:{}", list(&seen));
    }
}

/// The reflexive hole the other way: the management rule (ingress tcp/22 from
/// 192.0.2.0/24) lets answers out from port 22. A segment from the host's port 22 to
/// the peer, with no connection behind it, must not leave.
#[test]
fn an_answer_from_the_management_port_with_no_connection_does_not_leave() {
    /// A bare ACK from the host's port 22 to PEER_V4:9999; whether the peer heard it.
    fn knock(world: &World) -> Vec<SeenTcp> {
        let (host, peer) = (ip(HOST_V4), ip(PEER_V4));
        let ear = world.pair.peer.spawn(move || {
            let ear = TcpEar::new(false).expect("a raw TCP socket to listen with");
            ear.listen(SCAN_WAIT)
                .into_iter()
                .filter(|s| s.src == host && s.sport == MANAGEMENT && s.dport == 9999)
                .collect::<Vec<_>>()
        });
        // The ear is open well before the knock.
        std::thread::sleep(Duration::from_millis(100));
        world.host().enter(move || {
            RawSender::new(host, TCP)
                .expect("a raw socket to send from")
                .send_tcp(peer, &Tcp::ack(MANAGEMENT, 9999))
                .expect("send the knock");
        });
        ear.join().expect("the ear")
    }

    let control = world(State::Stateless, None);
    let daemon = control.start_daemon();
    let heard = knock(&control);
    assert!(
        !heard.is_empty(),
        "stateless: the host's ACK from port 22 did not reach the peer, so this test could not \
         tell a hole from a closed one"
    );
    drop(daemon);
    drop(control);

    let world = world(State::Stateful, None);
    let _daemon = world.start_daemon();
    let before = world.status();
    let heard = knock(&world);
    assert!(
        heard.is_empty(),
        "stateful: an ACK from the management port with no connection left the host:{}",
        list(&heard)
    );
    let after = world.status();
    assert!(
        drops_for(&after, "egress", "no-flow") > drops_for(&before, "egress", "no-flow"),
        "counted as no-flow: {}",
        reasons(&after, "egress")
    );
    // The management port itself still works, both ways.
    let mut ssh = Conversation::peer_opens(world.host(), &world.pair.peer, sa(HOST_V4, MANAGEMENT));
    ssh.exchange(Side::Peer, PASS_WAIT)
        .expect("a real management connection");
}

// ---------------------------------------------------------------------------------------
// 2. A UDP answer to a port that sent no query is dropped

/// What reached which host socket, for one family.
struct UdpProbe {
    /// A datagram from peer:53 reached a host socket that never sent anything.
    unasked_reached_silent: bool,
    /// The answer from peer:53 reached the socket that asked.
    answer_reached_asker: bool,
    /// After that, a datagram from peer:53 reached the silent socket.
    unasked_reached_silent_after: bool,
    /// A datagram from peer:7000 (another allowed port) reached the asker, which had
    /// only asked peer:53.
    other_port_reached_asker: bool,
}

fn udp_probe(world: &World, peer_addr: &str, host_addr: &str) -> UdpProbe {
    let (peer_addr, host_addr) = (ip(peer_addr), ip(host_addr));
    let bind = |ns: &Netns, at: SocketAddr| -> UdpSocket {
        ns.enter(move || UdpSocket::bind(at))
            .unwrap_or_else(|e| panic!("bind {at} in {}: {e}", ns.name))
    };
    let dns = bind(&world.pair.peer, SocketAddr::new(peer_addr, 53));
    let other = bind(&world.pair.peer, SocketAddr::new(peer_addr, 7000));
    let silent = bind(world.host(), SocketAddr::new(host_addr, 0));
    let asker = bind(world.host(), SocketAddr::new(host_addr, 0));
    let silent_at = silent.local_addr().unwrap();
    let asker_at = asker.local_addr().unwrap();

    dns.send_to(b"unasked", silent_at).unwrap();
    let unasked_reached_silent = receives(&silent, b"unasked", BLOCK_WAIT);

    asker.send_to(b"query", SocketAddr::new(peer_addr, 53)).unwrap();
    assert!(
        receives(&dns, b"query", PASS_WAIT),
        "the query from {asker_at} to {peer_addr}:53 did not arrive: the egress rule does not hold"
    );
    dns.send_to(b"answer", asker_at).unwrap();
    let answer_reached_asker = receives(&asker, b"answer", PASS_WAIT);

    dns.send_to(b"unasked-2", silent_at).unwrap();
    let unasked_reached_silent_after = receives(&silent, b"unasked-2", BLOCK_WAIT);
    other.send_to(b"other", asker_at).unwrap();
    let other_port_reached_asker = receives(&asker, b"other", BLOCK_WAIT);
    UdpProbe {
        unasked_reached_silent,
        answer_reached_asker,
        unasked_reached_silent_after,
        other_port_reached_asker,
    }
}

#[test]
fn a_udp_answer_to_a_port_that_sent_no_query_is_dropped() {
    let probes = [(SHARED, HOST_V4), (PEER_V6, HOST_V6)];

    // Control: stateless, anything from an allowed peer's port 53 or 7000 reaches any
    // host port. The hole, and proof the probe sees a datagram arrive.
    let control = world(State::Stateless, None);
    let daemon = control.start_daemon();
    for (peer, host) in probes {
        let p = udp_probe(&control, peer, host);
        assert!(p.answer_reached_asker, "stateless: the answer from {peer}:53 was lost");
        assert!(
            p.unasked_reached_silent && p.unasked_reached_silent_after,
            "stateless: a datagram from {peer}:53 to a host port that sent nothing was dropped, \
             so this test could not tell a hole from a closed one"
        );
        assert!(
            p.other_port_reached_asker,
            "stateless: a datagram from {peer}:7000 was dropped"
        );
    }
    drop(daemon);
    drop(control);

    let world = world(State::Stateful, None);
    let _daemon = world.start_daemon();
    for (peer, host) in probes {
        let before = world.status();
        let p = udp_probe(&world, peer, host);
        assert!(
            !p.unasked_reached_silent,
            "stateful: a datagram from {peer}:53 reached a host port that never sent anything"
        );
        assert!(
            p.answer_reached_asker,
            "stateful: the answer from {peer}:53 to the socket that asked was dropped"
        );
        assert!(
            !p.unasked_reached_silent_after,
            "stateful: once another socket had asked {peer}:53, its datagram reached the silent one"
        );
        assert!(
            !p.other_port_reached_asker,
            "stateful: a datagram from {peer}:7000 reached a socket that had asked only {peer}:53"
        );
        let after = world.status();
        let dropped = drops_for(&after, "ingress", "no-flow") - drops_for(&before, "ingress", "no-flow");
        assert!(
            dropped >= 3,
            "3 datagrams dropped as no-flow, {dropped} counted: {}",
            reasons(&after, "ingress")
        );
    }
}

/// What reached the host from the configured resolver (the world's `dns_servers`,
/// PEER_V4): an answer to a socket that asked nothing, an answer with another id to the
/// socket that asked, and the true answer.
struct ResolverProbe {
    unasked_reached_silent: bool,
    wrong_id_reached_asker: bool,
    answer_reached_asker: bool,
}

fn resolver_probe(world: &World) -> ResolverProbe {
    const NAME: &str = "portal.example.com";
    const ID: u16 = 0x5eed;
    let zone = Zone::new().a(NAME, 60, EU1_ONLY);
    let resolver = sa(PEER_V4, 53);
    let peer = world
        .pair
        .peer
        .enter(move || UdpSocket::bind(resolver))
        .expect("bind the resolver's port");
    let bind = || world.host().enter(|| UdpSocket::bind(sa(HOST_V4, 0))).unwrap();
    let (silent, asker) = (bind(), bind());

    let unasked = zone.response(ID, NAME, hickory_proto::rr::RecordType::A);
    peer.send_to(&unasked, silent.local_addr().unwrap()).unwrap();
    let unasked_reached_silent = receives(&silent, &unasked, BLOCK_WAIT);

    let q = query(ID, NAME);
    asker.send_to(&q, resolver).unwrap();
    assert!(
        receives(&peer, &q, PASS_WAIT),
        "the query to the resolver {resolver} did not arrive"
    );
    let wrong = zone.response(ID ^ 0xffff, NAME, hickory_proto::rr::RecordType::A);
    peer.send_to(&wrong, asker.local_addr().unwrap()).unwrap();
    let wrong_id_reached_asker = receives(&asker, &wrong, BLOCK_WAIT);
    let right = zone.response(ID, NAME, hickory_proto::rr::RecordType::A);
    peer.send_to(&right, asker.local_addr().unwrap()).unwrap();
    let answer_reached_asker = receives(&asker, &right, PASS_WAIT);
    ResolverProbe {
        unasked_reached_silent,
        wrong_id_reached_asker,
        answer_reached_asker,
    }
}

#[test]
fn a_resolvers_answer_passes_only_to_the_port_and_id_of_a_query() {
    let control = world(State::Stateless, None);
    let daemon = control.start_daemon();
    let p = resolver_probe(&control);
    assert!(p.answer_reached_asker, "stateless: the resolver's answer was lost");
    assert!(
        p.unasked_reached_silent,
        "stateless: an answer from the resolver to a port that asked nothing was dropped, so \
         this test could not tell a hole from a closed one"
    );
    drop(daemon);
    drop(control);

    let world = world(State::Stateful, None);
    let _daemon = world.start_daemon();
    let p = resolver_probe(&world);
    assert!(
        !p.unasked_reached_silent,
        "stateful: an answer from the resolver reached a port that asked nothing"
    );
    assert!(
        !p.wrong_id_reached_asker,
        "stateful: an answer with an id nobody asked reached the port that asked"
    );
    assert!(p.answer_reached_asker, "stateful: the answer to the query was dropped");
}

// ---------------------------------------------------------------------------------------
// Related traffic: an ICMP error passes only when it quotes a tracked flow

/// A UDP socket of the host connected to `peer`:7000 (an allowed port where nothing
/// listens): a port-unreachable error about it shows as ECONNREFUSED on its next recv.
fn connected_udp(world: &World, host_addr: IpAddr, peer: SocketAddr) -> UdpSocket {
    world.host().enter(move || {
        let s = UdpSocket::bind(SocketAddr::new(host_addr, 0)).expect("bind");
        s.connect(peer).expect("connect");
        s
    })
}

/// Whether an error reached `s` within `wait` (its recv fails with ECONNREFUSED).
fn refused(s: &UdpSocket, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16];
    match s.recv(&mut buf) {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(n) => panic!("a datagram of {n} bytes reached a socket nobody answers"),
    }
}

/// From the peer: a forged port-unreachable error quoting a datagram `s` never sent.
fn forge_unreachable(world: &World, s: &UdpSocket) {
    let (local, remote) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
    let quoted = udp_packet(local.ip(), remote.ip(), local.port(), remote.port(), b"x");
    let error = port_unreachable(remote.ip(), local.ip(), &quoted);
    world.pair.peer.enter(move || {
        let proto = if remote.is_ipv4() { ICMP } else { ICMPV6 };
        RawSender::new(remote.ip(), proto)
            .expect("a raw socket to send from")
            .send_l4(local.ip(), &error)
            .expect("send the forged error");
    });
}

#[test]
fn an_icmp_error_passes_only_when_it_quotes_a_tracked_flow() {
    let pairs = [(SHARED, HOST_V4), (PEER_V6, HOST_V6)];

    // Control: stateless, an error about a datagram never sent reaches the socket it
    // names (the essentials let every ICMP error in): the probe sees one arrive.
    let control = world(State::Stateless, None);
    let daemon = control.start_daemon();
    for (peer, host) in pairs {
        let quiet = connected_udp(&control, ip(host), sa(peer, 7000));
        forge_unreachable(&control, &quiet);
        assert!(
            refused(&quiet, PASS_WAIT),
            "stateless: the forged error from {peer} did not reach the socket it names, so this \
             test could not tell a hole from a closed one"
        );
    }
    drop(daemon);
    drop(control);

    let world = world(State::Stateful, None);
    let _daemon = world.start_daemon();
    for (peer, host) in pairs {
        let quiet = connected_udp(&world, ip(host), sa(peer, 7000));
        let before = world.status();
        forge_unreachable(&world, &quiet);
        assert!(
            !refused(&quiet, BLOCK_WAIT),
            "stateful: an error from {peer} about a datagram this host never sent got in"
        );
        let after = world.status();
        assert!(
            drops_for(&after, "ingress", "no-flow") > drops_for(&before, "ingress", "no-flow"),
            "counted as no-flow: {}",
            reasons(&after, "ingress")
        );

        // A datagram that did go out: the peer's own error about it comes in, and so
        // does a second one, forged the same way as the one refused above.
        let talker = connected_udp(&world, ip(host), sa(peer, 7000));
        talker.send(b"x").unwrap();
        assert!(
            refused(&talker, PASS_WAIT),
            "stateful: the peer's port-unreachable about a datagram the host sent to {peer}:7000 was dropped"
        );
        forge_unreachable(&world, &talker);
        assert!(
            refused(&talker, PASS_WAIT),
            "stateful: an error quoting a tracked flow to {peer}:7000 was dropped"
        );
        // And the quiet socket stays unreachable for errors: a flow is its own ports.
        forge_unreachable(&world, &quiet);
        assert!(
            !refused(&quiet, BLOCK_WAIT),
            "stateful: once another socket talked to {peer}:7000, an error naming the quiet one got in"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Related traffic: a DHCP reply only after the host's own request

/// A DHCP message of the family with transaction id `xid` (DHCPv4's at bytes 4..8,
/// DHCPv6's at 1..4) and `tag` after it, so that the receiver tells them apart.
fn dhcp_message(v6: bool, xid: u32, tag: &[u8]) -> Vec<u8> {
    let mut m = if v6 {
        let id = xid.to_be_bytes();
        vec![1, id[1], id[2], id[3]]
    } else {
        let mut m = vec![1, 1, 6, 0];
        m.extend_from_slice(&xid.to_be_bytes());
        m
    };
    m.extend_from_slice(tag);
    m
}

/// What the host's DHCP client port heard from the peer's server port: a reply before
/// any request, then (after the host asked with one transaction id) a reply with
/// another id, and the reply with the request's id.
struct DhcpProbe {
    before_request: bool,
    other_xid: bool,
    after_request: bool,
}

fn dhcp_probe(world: &World, v6: bool) -> DhcpProbe {
    const XID: u32 = 0x00c0_ffee;
    let (client, server) = if v6 {
        (sa("::", 546), sa(PEER_V6, 547))
    } else {
        (sa("0.0.0.0", 68), sa(PEER_V4, 67))
    };
    let to_client = if v6 { sa(HOST_V6, 546) } else { sa(HOST_V4, 68) };
    let host = world
        .host()
        .enter(move || UdpSocket::bind(client))
        .unwrap_or_else(|e| panic!("bind {client}: {e}"));
    let peer = world
        .pair
        .peer
        .enter(move || UdpSocket::bind(server))
        .unwrap_or_else(|e| panic!("bind {server}: {e}"));

    let unasked = dhcp_message(v6, XID, b"unasked offer");
    peer.send_to(&unasked, to_client).unwrap();
    let before_request = receives(&host, &unasked, BLOCK_WAIT);
    let discover = dhcp_message(v6, XID, b"discover");
    host.send_to(&discover, server).unwrap();
    assert!(
        receives(&peer, &discover, PASS_WAIT),
        "the host's request to {server} did not arrive"
    );
    let forged = dhcp_message(v6, XID ^ 0x0055_5555, b"forged offer");
    peer.send_to(&forged, to_client).unwrap();
    let other_xid = receives(&host, &forged, BLOCK_WAIT);
    let offer = dhcp_message(v6, XID, b"offer");
    peer.send_to(&offer, to_client).unwrap();
    let after_request = receives(&host, &offer, PASS_WAIT);
    DhcpProbe {
        before_request,
        other_xid,
        after_request,
    }
}

/// A DHCP reply passes only after the host's own request, and only with its
/// transaction id: the reply to another exchange (one a spoofer made up) drops.
#[test]
fn a_dhcp_reply_passes_only_after_the_hosts_own_request_with_its_id() {
    let control = world(State::Stateless, None);
    let daemon = control.start_daemon();
    for v6 in [false, true] {
        let p = dhcp_probe(&control, v6);
        assert!(
            p.before_request && p.other_xid && p.after_request,
            "stateless (v6: {v6}): a server's reply was dropped (before a request: {}, another id: {}, \
             after: {}), so this test could not tell a hole from a closed one",
            p.before_request,
            p.other_xid,
            p.after_request
        );
    }
    drop(daemon);
    drop(control);

    let world = world(State::Stateful, None);
    let _daemon = world.start_daemon();
    for v6 in [false, true] {
        let p = dhcp_probe(&world, v6);
        assert!(
            !p.before_request,
            "stateful (v6: {v6}): a DHCP reply got in before the host asked"
        );
        assert!(
            !p.other_xid,
            "stateful (v6: {v6}): a reply with another transaction id got in"
        );
        assert!(
            p.after_request,
            "stateful (v6: {v6}): the reply to the host's own request was dropped"
        );
    }
    let status = world.status();
    assert!(
        drops_for(&status, "ingress", "no-flow") >= 4,
        "{}",
        reasons(&status, "ingress")
    );
}

// ---------------------------------------------------------------------------------------
// 3. A long-lived connection lives through restarts, kills and swaps

fn assert_unbroken(what: &str, chat: &Chat, at_least: u32) {
    assert!(
        chat.failure.is_none(),
        "{what}: {}",
        chat.failure.as_deref().unwrap_or("")
    );
    assert!(
        chat.rounds >= at_least,
        "{what}: only {} rounds in the time {at_least} take",
        chat.rounds
    );
    assert_eq!(
        chat.retransmissions,
        (0, 0),
        "{what}: segments were lost and sent again (host, peer), slowest round {:?}",
        chat.slowest
    );
    // A segment the host's own egress program drops never left, so TCP does not count
    // it as retransmitted: it waits for a timer of at least TCP_RTO_MIN (200 ms) and
    // tries again. Rounds here take a fraction of a millisecond.
    assert!(
        chat.slowest < LATE_ROUND,
        "{what}: a round took {:?}, as long as TCP waits to send a dropped segment again",
        chat.slowest
    );
}

#[test]
fn a_long_lived_connection_lives_through_restarts_kills_and_swaps() {
    let world = world(State::Stateful, None);
    let mut daemon = world.start_daemon();
    // Opened by the host (eu1's portal rule, out) and by the peer (management, in).
    let mut out = Conversation::host_opens(world.host(), &world.pair.peer, sa(EU1_ONLY, 443));
    let mut inb = Conversation::peer_opens(world.host(), &world.pair.peer, sa(HOST_V4, MANAGEMENT));

    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (out_chat, in_chat) = std::thread::scope(|s| {
        let out_chat = s.spawn(|| out.chat_until(Side::Host, CHAT_EVERY, PASS_WAIT, &stop));
        let in_chat = s.spawn(|| inb.chat_until(Side::Peer, CHAT_EVERY, PASS_WAIT, &stop));
        let pause = || std::thread::sleep(Duration::from_millis(500));

        pause();
        daemon.signal(libc::SIGTERM);
        assert!(daemon.wait_log("exiting", Duration::from_secs(10)), "{}", daemon.log());
        pause(); // no daemon at all for a while
        daemon = world.start_daemon();
        pause();
        daemon.kill9();
        pause();
        daemon = world.start_daemon();
        pause();
        // us1 lists none of the peer's addresses in use: ten swaps of the policy.
        for i in 0..10 {
            let verb = if i % 2 == 0 { "enable" } else { "disable" };
            world.cli(&[verb, "us1"]).ok();
        }
        pause();
        stop.store(true, Ordering::Relaxed);
        (out_chat.join().unwrap(), in_chat.join().unwrap())
    });
    let took = started.elapsed();
    eprintln!("{took:?}: host-opened {out_chat:?}, peer-opened {in_chat:?}");
    let at_least = (took.as_millis() / 400) as u32; // a round every 100 ms and some
    assert_unbroken("host-opened connection to eu1's portal", &out_chat, at_least);
    assert_unbroken("peer-opened management connection", &in_chat, at_least);
    assert_eq!(
        regions(&world.status()),
        strings(&["eu1"]),
        "the toggles ended where they began"
    );

    let status = world.status();
    for direction in ["ingress", "egress"] {
        assert_eq!(
            drops_for(&status, direction, "no-flow"),
            0,
            "{direction} packets were dropped for want of a flow: {}",
            reasons(&status, direction)
        );
    }

    // The same watch sees a cut (so it could have seen one above): eu1 off takes the
    // only rule that allows the host-opened connection.
    world.cli(&["disable", "eu1"]).ok();
    let stop = AtomicBool::new(false);
    let cut = std::thread::scope(|s| {
        let chat = s.spawn(|| out.chat_until(Side::Host, CHAT_EVERY, BLOCK_WAIT, &stop));
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        chat.join().unwrap()
    });
    assert!(
        cut.failure.is_some(),
        "the watch saw {} rounds go through with eu1 disabled",
        cut.rounds
    );
}

// ---------------------------------------------------------------------------------------
// 4. A connection opened before the daemon starts keeps working

/// The peer speaks first (the host has sent nothing since the programs were attached),
/// the host hears it and answers.
fn peer_speaks_first(c: &mut Conversation, within: Duration) -> Result<(), String> {
    let n = c.fresh();
    c.say(Side::Peer, n)
        .map_err(|e| format!("the peer could not send: {e}"))?;
    c.heard(Side::Host, n, within)?;
    c.say(Side::Host, n)
        .map_err(|e| format!("the host could not answer: {e}"))?;
    c.heard(Side::Peer, n, within)
}

#[test]
fn a_connection_opened_before_the_daemon_starts_keeps_working() {
    let world = world(State::Stateful, None);
    let (host, peer) = (world.host(), &world.pair.peer);
    let mut out = Conversation::host_opens(host, peer, sa(EU1_ONLY, 443));
    let mut out6 = Conversation::host_opens(host, peer, sa(PEER_V6, 443));
    let mut inb = Conversation::peer_opens(host, peer, sa(HOST_V4, MANAGEMENT));
    // To an address no rule lists: seeded like the others, and cut all the same.
    let mut unlisted = Conversation::host_opens(host, peer, sa(UNLISTED, 443));
    // A connected UDP socket of the host and the peer's socket it talks to.
    let udp_peer_at = sa(SHARED, 7000);
    let udp_peer = peer.enter(move || UdpSocket::bind(udp_peer_at)).unwrap();
    let udp_host = host.enter(move || {
        let s = UdpSocket::bind(sa(HOST_V4, 0))?;
        s.connect(udp_peer_at)?;
        Ok::<_, std::io::Error>(s)
    });
    let udp_host = udp_host.unwrap();
    let udp_host_at = udp_host.local_addr().unwrap();
    for s in [&udp_host, &udp_peer] {
        s.set_read_timeout(Some(PASS_WAIT)).unwrap();
    }
    let mut buf = [0u8; 16];
    out.exchange(Side::Host, PASS_WAIT).expect("with no daemon");
    out6.exchange(Side::Host, PASS_WAIT).expect("with no daemon");
    inb.exchange(Side::Peer, PASS_WAIT).expect("with no daemon");
    unlisted.exchange(Side::Host, PASS_WAIT).expect("with no daemon");
    udp_host.send(b"hello").unwrap();
    assert_eq!(
        udp_peer.recv_from(&mut buf).expect("udp with no daemon"),
        (5, udp_host_at)
    );

    let _daemon = world.start_daemon();
    assert_eq!(world.status()["enforcing"], true);

    // Each is tried before any is judged, so a failure tells of all.
    let host_opened = peer_speaks_first(&mut out, PASS_WAIT);
    let host_opened_v6 = peer_speaks_first(&mut out6, PASS_WAIT);
    let peer_opened = peer_speaks_first(&mut inb, PASS_WAIT);
    let udp = (|| {
        udp_peer.send_to(b"first", udp_host_at).unwrap();
        match udp_host.recv(&mut buf) {
            Ok(5) if &buf[..5] == b"first" => {}
            other => return Err(format!("the host's socket did not hear the peer first: {other:?}")),
        }
        udp_host.send(b"back").unwrap();
        match udp_peer.recv_from(&mut buf) {
            Ok((4, from)) if from == udp_host_at => Ok(()),
            other => Err(format!("the peer did not hear the host's answer: {other:?}")),
        }
    })();
    let status = world.status();
    let told = format!(
        "host-opened (to {EU1_ONLY}:443): {host_opened:?}; host-opened (to [{PEER_V6}]:443): \
         {host_opened_v6:?}; peer-opened (to :{MANAGEMENT}): {peer_opened:?}; connected UDP (to \
         {udp_peer_at}): {udp:?}; drops in: {}, out: {}",
        reasons(&status, "ingress"),
        reasons(&status, "egress")
    );
    assert!(
        host_opened.is_ok() && host_opened_v6.is_ok() && peer_opened.is_ok() && udp.is_ok(),
        "{told}"
    );
    for (what, c) in [("host-opened", &out), ("host-opened v6", &out6), ("peer-opened", &inb)] {
        assert_eq!(c.retransmissions(), (0, 0), "{what}: segments were dropped; {told}");
    }
    // Nothing of any was dropped for want of a flow.
    for direction in ["ingress", "egress"] {
        assert_eq!(drops_for(&status, direction, "no-flow"), 0, "{told}");
    }
    let tracking = &status["tracking"];
    assert_eq!(tracking["mode"], "stateful", "{status}");
    assert!(
        tracking["seeded"].as_u64().unwrap_or(0) >= 5,
        "the five connections from before the start were seeded: {tracking}"
    );

    // State never overrides policy, seeded state neither: the connection to an
    // address no rule lists is cut (and the same probe fails, as it must).
    let before = world.status();
    assert!(
        peer_speaks_first(&mut unlisted, BLOCK_WAIT).is_err(),
        "a connection from before the start to {UNLISTED}, which no rule lists, still works"
    );
    let after = world.status();
    assert!(
        drops_for(&after, "ingress", "policy") > drops_for(&before, "ingress", "policy"),
        "dropped by the policy: {}",
        reasons(&after, "ingress")
    );
}

/// A reload that turns tracking on seeds it as a start does: connections opened while
/// the daemon ran stateless (which tracks nothing) keep working when the peer speaks
/// first.
#[test]
fn a_reload_that_turns_tracking_on_keeps_the_connections_of_before() {
    let world = world(State::Stateless, None);
    let daemon = world.start_daemon();
    let (host, peer) = (world.host(), &world.pair.peer);
    let mut out = Conversation::host_opens(host, peer, sa(EU1_ONLY, 443));
    let mut out6 = Conversation::host_opens(host, peer, sa(PEER_V6, 443));
    out.exchange(Side::Host, PASS_WAIT).expect("stateless");
    out6.exchange(Side::Host, PASS_WAIT).expect("stateless");
    assert_eq!(world.status()["tracking"]["mode"], "stateless");

    let text = std::fs::read_to_string(&world.config).unwrap();
    let stateful = text.replace("mode = \"stateless\"", "mode = \"stateful\"");
    assert_ne!(text, stateful);
    std::fs::write(&world.config, stateful).unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(daemon.wait_log("reloaded", Duration::from_secs(10)), "{}", daemon.log());
    let status = world.status();
    assert_eq!(status["tracking"]["mode"], "stateful", "{status}");

    let v4 = peer_speaks_first(&mut out, PASS_WAIT);
    let v6 = peer_speaks_first(&mut out6, PASS_WAIT);
    let status = world.status();
    assert!(
        v4.is_ok() && v6.is_ok(),
        "after the reload to stateful: to {EU1_ONLY}: {v4:?}; to {PEER_V6}: {v6:?}; drops in: {}; tracking: {}",
        reasons(&status, "ingress"),
        status["tracking"]
    );
    // And the reload did turn tracking on: a scan finds the return path shut.
    assert!(
        ack_scan(&world, SHARED, HOST_V4).is_empty(),
        "the ACK scan drew answers after the reload"
    );
}

/// Control of the test above: the same probe does fail when the flow is missing. An
/// idle connection outlives `tcp_established` (here 2 s), so the peer's first word
/// after the pause meets no flow and is dropped; a word from the host (its forward
/// path) makes the flow again, and the held-back word gets through.
#[test]
fn a_connection_whose_flow_expired_is_held_until_the_host_speaks() {
    let world = world(State::Stateful, None);
    // Appended after the tables the world writes: a table of its own.
    let text = std::fs::read_to_string(&world.config).unwrap();
    std::fs::write(
        &world.config,
        format!("{text}\n[state.timeouts]\ntcp_established = 2\n"),
    )
    .unwrap();
    let _daemon = world.start_daemon();
    let mut out = Conversation::host_opens(world.host(), &world.pair.peer, sa(EU1_ONLY, 443));
    out.exchange(Side::Host, PASS_WAIT).expect("a fresh connection");
    std::thread::sleep(Duration::from_secs(4));

    let before = world.status();
    let n = out.fresh();
    out.say(Side::Peer, n).unwrap();
    assert!(
        out.hear(Side::Host, BLOCK_WAIT).is_err(),
        "the peer's word reached the host with the flow expired: this probe cannot tell"
    );
    let after = world.status();
    assert!(
        drops_for(&after, "ingress", "no-flow") > drops_for(&before, "ingress", "no-flow"),
        "{}",
        reasons(&after, "ingress")
    );
    let m = out.fresh();
    out.say(Side::Host, m).unwrap();
    out.heard(Side::Peer, m, PASS_WAIT)
        .expect("the host's word makes the flow again");
    out.heard(Side::Host, n, RETRANSMIT_WAIT)
        .expect("the peer's held-back word, sent again, gets through");
}

// ---------------------------------------------------------------------------------------
// 5. Disabling the only region that lists a peer cuts its connection at the next packet

fn region_cut(state: State) {
    let world = world(state, None);
    let _daemon = world.start_daemon();
    let mut c = Conversation::host_opens(world.host(), &world.pair.peer, sa(EU1_ONLY, 443));
    c.exchange(Side::Host, PASS_WAIT).expect("eu1 enabled");

    // Control: a swap alone (us1, which does not list the peer) cuts nothing.
    world.cli(&["enable", "us1"]).ok();
    c.exchange(Side::Host, PASS_WAIT)
        .unwrap_or_else(|e| panic!("{state:?}: a swap that keeps eu1 cut the connection: {e}"));
    c.exchange(Side::Peer, PASS_WAIT)
        .unwrap_or_else(|e| panic!("{state:?}: a swap that keeps eu1 cut the connection: {e}"));

    world.cli(&["disable", "eu1"]).ok();
    let before = world.status();
    let from_host = c.fresh();
    c.say(Side::Host, from_host).unwrap();
    assert!(
        c.hear(Side::Peer, BLOCK_WAIT).is_err(),
        "{state:?}: the host's next message to {EU1_ONLY} arrived with eu1, the only region \
         listing it, disabled"
    );
    let from_peer = c.fresh();
    c.say(Side::Peer, from_peer).unwrap();
    assert!(
        c.hear(Side::Host, BLOCK_WAIT).is_err(),
        "{state:?}: the peer's next message from {EU1_ONLY} arrived with eu1 disabled"
    );
    let after = world.status();
    for direction in ["egress", "ingress"] {
        assert!(
            drops(&after, direction) > drops(&before, direction),
            "{state:?}: no {direction} drop counted: {}",
            reasons(&after, direction)
        );
    }

    // Enabled again: the held-back messages arrive (sent again by TCP), new ones pass.
    world.cli(&["enable", "eu1"]).ok();
    c.heard(Side::Peer, from_host, RETRANSMIT_WAIT)
        .unwrap_or_else(|e| panic!("{state:?}: eu1 enabled again: {e}"));
    c.heard(Side::Host, from_peer, RETRANSMIT_WAIT)
        .unwrap_or_else(|e| panic!("{state:?}: eu1 enabled again: {e}"));
    c.exchange(Side::Host, PASS_WAIT)
        .unwrap_or_else(|e| panic!("{state:?}: eu1 enabled again: {e}"));
    let mut fresh = Conversation::host_opens(world.host(), &world.pair.peer, sa(EU1_ONLY, 443));
    fresh
        .exchange(Side::Host, PASS_WAIT)
        .unwrap_or_else(|e| panic!("{state:?}: a new connection with eu1 enabled again: {e}"));
}

#[test]
fn disabling_the_only_region_listing_a_peer_cuts_its_connection_at_the_next_packet() {
    region_cut(State::Stateful);
}

/// The old behaviour cuts too (policy, not state, does it): the same test holds there.
#[test]
fn disabling_the_only_region_listing_a_peer_cuts_its_connection_when_stateless_too() {
    region_cut(State::Stateless);
}

/// Whether `s` receives the datagram `want` within `wait`. Other datagrams are passed
/// over: the resolver's port also gets the daemon's own queries for the catalog's names.
fn receives(s: &UdpSocket, want: &[u8], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == want => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}
