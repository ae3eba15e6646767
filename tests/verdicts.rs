//! Test-run verdicts: a table of packets through the loaded XDP and TC programs
//! (BPF_PROG_TEST_RUN, nothing is sent), each checked three ways: the table's own
//! expectation, the reference model, and the kernel (its return value and the counter
//! it moved). Real catalog addresses are judged here only.

use std::net::IpAddr;
use testkit as common;

use allowgate::{
    catalog::{Catalog, Direction, Feature, PortRange, Proto},
    policy::{
        Config, Mode, Policy, Selection, StateMode,
        model::{Frame, Hook, IpPacket, L4, Packet, Reason, Verdict},
    },
};
use common::{
    Harness, Outcome, allow,
    packet::{Shape, between, broken, frame},
};

const ME4: &str = "198.51.100.7";
const ME6: &str = "2001:db8:f::7";

fn policy(mode: Mode) -> Policy {
    let mut config = Config {
        mode,
        ..Config::default()
    };
    // The table judges each packet alone: the stateless return path. Connection
    // tracking has its own tests below and in tests/differential.rs.
    config.state.mode = StateMode::Stateless;
    config.management.cidrs = vec!["192.0.2.0/24".parse().unwrap()];
    config.essentials.ethertypes = vec![0x88cc];
    config.allow = vec![
        allow(
            "2001:db8:b::/48",
            Direction::Egress,
            Proto::Udp,
            &[PortRange { lo: 5353, hi: 5360 }],
        ),
        allow(
            "2001:db8:b:1::/64",
            Direction::Egress,
            Proto::Tcp,
            &[PortRange::single(443)],
        ),
        allow("203.0.113.0/24", Direction::Ingress, Proto::Icmp, &[]),
        allow("203.0.113.128/25", Direction::Egress, Proto::Any, &[]),
    ];
    let selection = Selection {
        regions: vec!["eu1".into()],
        features: vec![
            Feature::Portal,
            Feature::Proxy,
            Feature::Siem,
            Feature::AppConnector,
            Feature::Dlp,
            Feature::Mail,
        ],
    };
    let dns: [IpAddr; 2] = ["192.0.2.53".parse().unwrap(), "2001:db8::53".parse().unwrap()];
    Policy::build(&Catalog::builtin(), &selection, &config, &dns)
}

fn ip(hook: Hook, remote: &str, l4: L4) -> Packet {
    let remote: IpAddr = remote.parse().unwrap();
    let me = if remote.is_ipv4() { ME4 } else { ME6 };
    between(hook, me.parse().unwrap(), remote, l4)
}

fn syn(sport: u16, dport: u16) -> L4 {
    L4::tcp(sport, dport, true, false)
}
fn synack(sport: u16, dport: u16) -> L4 {
    L4::tcp(sport, dport, true, true)
}
fn ack(sport: u16, dport: u16) -> L4 {
    L4::tcp(sport, dport, false, true)
}
fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

use Hook::{Egress as OUT, Ingress as IN};
use Verdict::{Drop as DROP, Pass as PASS};

/// (what, packet, expected verdict, expected reason)
fn table() -> Vec<(&'static str, Packet, Verdict, Reason)> {
    let nd = |ty: u8, hop: u8, src: &str| Packet {
        hook: IN,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src: src.parse().unwrap(),
            dst: "ff02::1".parse().unwrap(),
            hop_limit: hop,
            l4: L4::Icmp { ty, code: 0 },
        }),
    };
    let dhcp = |hook: Hook, sport, dport| Packet {
        hook,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src: if hook == OUT { "0.0.0.0" } else { "192.0.2.254" }.parse().unwrap(),
            dst: "255.255.255.255".parse().unwrap(),
            hop_limit: 64,
            l4: udp(sport, dport),
        }),
    };
    let mapped = Packet {
        hook: OUT,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src: ME6.parse().unwrap(),
            dst: "::ffff:13.80.125.22".parse().unwrap(),
            hop_limit: 64,
            l4: syn(40000, 443),
        }),
    };
    vec![
        // The catalog: EU1 portal and SIEM (13.80.125.22 serves five regions).
        (
            "eu1 portal address, tcp/443 out",
            ip(OUT, "13.80.125.22", syn(40000, 443)),
            PASS,
            Reason::Policy,
        ),
        (
            "its answer comes back",
            ip(IN, "13.80.125.22", synack(443, 40000)),
            PASS,
            Reason::Policy,
        ),
        (
            "its data comes back",
            ip(IN, "13.80.125.22", ack(443, 40000)),
            PASS,
            Reason::Policy,
        ),
        (
            "a return path opens nothing",
            ip(IN, "13.80.125.22", syn(443, 22)),
            DROP,
            Reason::Policy,
        ),
        (
            "eu1 portal address, tcp/80",
            ip(OUT, "13.80.125.22", syn(40000, 80)),
            DROP,
            Reason::Policy,
        ),
        (
            "eu1 portal address, udp/443",
            ip(OUT, "13.80.125.22", udp(40000, 443)),
            DROP,
            Reason::Policy,
        ),
        (
            "eu1 proxy address (third column)",
            ip(OUT, "52.249.25.160", syn(40000, 443)),
            PASS,
            Reason::Policy,
        ),
        (
            "us1-only portal address, us1 not enabled",
            ip(OUT, "13.64.26.88", syn(40000, 443)),
            DROP,
            Reason::Policy,
        ),
        (
            "next to a catalog address",
            ip(OUT, "13.80.125.23", syn(40000, 443)),
            DROP,
            Reason::Policy,
        ),
        (
            "eu1 app connector connects in to 443",
            ip(IN, "13.95.29.177", syn(50000, 443)),
            PASS,
            Reason::Policy,
        ),
        (
            "our answer to the app connector",
            ip(OUT, "13.95.29.177", synack(443, 50000)),
            PASS,
            Reason::Policy,
        ),
        (
            "the app connector on another port",
            ip(IN, "13.95.29.177", syn(50000, 8443)),
            DROP,
            Reason::Policy,
        ),
        (
            "we cannot open to the app connector",
            ip(OUT, "13.95.29.177", syn(50000, 443)),
            DROP,
            Reason::Policy,
        ),
        (
            "eu1 DLP to the stunnel port",
            ip(IN, "40.115.25.50", syn(50000, 11344)),
            PASS,
            Reason::Policy,
        ),
        (
            "mail from inside a page CIDR",
            ip(IN, "65.55.234.200", syn(50000, 25)),
            PASS,
            Reason::Policy,
        ),
        (
            "mail from next to a page CIDR",
            ip(IN, "65.55.234.128", syn(50000, 25)),
            DROP,
            Reason::Policy,
        ),
        (
            "MailChimp sends mail",
            ip(IN, "198.2.134.139", syn(50000, 25)),
            PASS,
            Reason::Policy,
        ),
        // Management, DNS, operator additions.
        (
            "ssh from management",
            ip(IN, "192.0.2.77", syn(50000, 22)),
            PASS,
            Reason::Policy,
        ),
        (
            "ssh answer to management",
            ip(OUT, "192.0.2.77", ack(22, 50000)),
            PASS,
            Reason::Policy,
        ),
        (
            "management on another port",
            ip(IN, "192.0.2.77", syn(50000, 23)),
            DROP,
            Reason::Policy,
        ),
        (
            "dns to the resolver, udp",
            ip(OUT, "192.0.2.53", udp(33000, 53)),
            PASS,
            Reason::Policy,
        ),
        (
            "dns answer from the resolver",
            ip(IN, "192.0.2.53", udp(53, 33000)),
            PASS,
            Reason::Policy,
        ),
        (
            "dns to the v6 resolver, tcp",
            ip(OUT, "2001:db8::53", syn(33000, 53)),
            PASS,
            Reason::Policy,
        ),
        (
            "a forged dns answer from elsewhere",
            ip(IN, "192.0.2.54", udp(53, 33000)),
            DROP,
            Reason::Policy,
        ),
        (
            "allow: udp range, low end",
            ip(OUT, "2001:db8:b:2::9", udp(40000, 5353)),
            PASS,
            Reason::Policy,
        ),
        (
            "allow: udp range, past the end",
            ip(OUT, "2001:db8:b:2::9", udp(40000, 5361)),
            DROP,
            Reason::Policy,
        ),
        (
            "allow: nested /64 adds tcp/443",
            ip(OUT, "2001:db8:b:1::9", syn(40000, 443)),
            PASS,
            Reason::Policy,
        ),
        (
            "allow: nested /64 keeps the /48's udp",
            ip(OUT, "2001:db8:b:1::9", udp(40000, 5360)),
            PASS,
            Reason::Policy,
        ),
        (
            "allow: /48 without the /64's tcp",
            ip(OUT, "2001:db8:b:2::9", syn(40000, 443)),
            DROP,
            Reason::Policy,
        ),
        (
            "allow: ping from 203.0.113.0/24",
            ip(IN, "203.0.113.9", L4::Icmp { ty: 8, code: 0 }),
            PASS,
            Reason::Policy,
        ),
        (
            "allow: our echo reply back",
            ip(OUT, "203.0.113.9", L4::Icmp { ty: 0, code: 0 }),
            PASS,
            Reason::Policy,
        ),
        (
            "allow: no echo request out on a return path",
            ip(OUT, "203.0.113.9", L4::Icmp { ty: 8, code: 0 }),
            DROP,
            Reason::Policy,
        ),
        (
            "allow: any protocol out to the /25",
            ip(OUT, "203.0.113.200", L4::Other { proto: 47 }),
            PASS,
            Reason::Policy,
        ),
        (
            "allow: any protocol back from the /25",
            ip(IN, "203.0.113.200", L4::Other { proto: 47 }),
            PASS,
            Reason::Policy,
        ),
        (
            "allow: no SYN back from the /25",
            ip(IN, "203.0.113.200", syn(443, 22)),
            DROP,
            Reason::Policy,
        ),
        (
            "allow: GRE elsewhere",
            ip(OUT, "203.0.113.10", L4::Other { proto: 47 }),
            DROP,
            Reason::Policy,
        ),
        // Fragments: non-first ones are judged on addresses and protocol.
        (
            "non-first fragment, tcp, to the portal",
            ip(OUT, "13.80.125.22", L4::Fragment { proto: 6 }),
            PASS,
            Reason::Policy,
        ),
        (
            "non-first fragment, udp, to the portal",
            ip(OUT, "13.80.125.22", L4::Fragment { proto: 17 }),
            DROP,
            Reason::Policy,
        ),
        (
            "non-first fragment from nowhere",
            ip(IN, "203.0.113.10", L4::Fragment { proto: 6 }),
            DROP,
            Reason::Policy,
        ),
        (
            "non-first v6 fragment, udp, to the /48",
            ip(OUT, "2001:db8:b:2::9", L4::Fragment { proto: 17 }),
            PASS,
            Reason::Policy,
        ),
        // Essentials.
        (
            "arp",
            Packet {
                hook: IN,
                vlan_tags: 0,
                frame: Frame::Arp,
            },
            PASS,
            Reason::Arp,
        ),
        (
            "lldp, listed",
            Packet {
                hook: OUT,
                vlan_tags: 0,
                frame: Frame::Ethertype(0x88cc),
            },
            PASS,
            Reason::Ethertype,
        ),
        (
            "another ethertype",
            Packet {
                hook: IN,
                vlan_tags: 0,
                frame: Frame::Ethertype(0x88b5),
            },
            DROP,
            Reason::Ethertype,
        ),
        ("neighbour solicitation", nd(135, 255, "fe80::1"), PASS, Reason::Nd),
        ("router advertisement", nd(134, 255, "fe80::1"), PASS, Reason::Nd),
        (
            "neighbour advert that crossed a router",
            nd(136, 64, "fe80::1"),
            DROP,
            Reason::Policy,
        ),
        ("mld report from link-local", nd(143, 1, "fe80::1"), PASS, Reason::Nd),
        (
            "mld report from a global address",
            nd(143, 1, "2001:db8:9::1"),
            DROP,
            Reason::Policy,
        ),
        (
            "packet too big from anywhere",
            ip(IN, "2001:db8:9::1", L4::Icmp { ty: 2, code: 0 }),
            PASS,
            Reason::IcmpError,
        ),
        (
            "fragmentation needed from anywhere",
            ip(IN, "203.0.113.10", L4::Icmp { ty: 3, code: 4 }),
            PASS,
            Reason::IcmpError,
        ),
        (
            "echo request from nowhere",
            ip(IN, "198.51.100.99", L4::Icmp { ty: 8, code: 0 }),
            DROP,
            Reason::Policy,
        ),
        ("dhcp discover", dhcp(OUT, 68, 67), PASS, Reason::Dhcp),
        ("dhcp offer", dhcp(IN, 67, 68), PASS, Reason::Dhcp),
        ("dhcp the wrong way", dhcp(IN, 68, 67), DROP, Reason::Policy),
        // Bypass shapes.
        ("ipv4-mapped destination on the wire", mapped, DROP, Reason::V4Mapped),
        (
            "three vlan tags",
            Packet {
                vlan_tags: 3,
                ..ip(OUT, "13.80.125.22", syn(40000, 443))
            },
            DROP,
            Reason::VlanDepth,
        ),
    ]
}

/// The layouts a well-formed packet of `p` can take: none may change the verdict.
fn shapes(p: &Packet) -> Vec<(Shape, u8)> {
    let Frame::Ip(ip) = &p.frame else {
        return vec![(Shape::Plain, p.vlan_tags)];
    };
    if p.vlan_tags > 0 {
        return vec![(Shape::Plain, p.vlan_tags)];
    }
    let mut s = vec![(Shape::Plain, 0), (Shape::Plain, 1), (Shape::Plain, 2)];
    let non_first = matches!(ip.l4, L4::Fragment { .. });
    if ip.src.is_ipv4() {
        s.push((Shape::V4Options(3), 0));
        s.push((Shape::V4Options(10), 2));
        if !non_first {
            s.push((Shape::V4FirstFragment, 0));
        }
    } else if !non_first {
        s.push((Shape::V6Ext(vec![0, 60, 43]), 0));
        s.push((Shape::V6Ext(vec![51]), 1));
        s.push((Shape::V6FirstFragment, 0));
    } else {
        s.push((Shape::V6Ext(vec![0, 60]), 0));
    }
    s
}

fn check_table(mode: Mode) {
    let mut h = Harness::new(policy(mode));
    let mut runs = 0;
    for (what, packet, verdict, reason) in table() {
        let model = h.expect(&packet);
        assert_eq!(
            (model.verdict, model.reason),
            (verdict, reason),
            "{what}: the model disagrees with the table"
        );
        for (shape, tags) in shapes(&packet) {
            let p = Packet {
                vlan_tags: tags,
                ..packet.clone()
            };
            let kernel = h.run(p.hook, &frame(&p, &shape));
            let want = h.expect(&p);
            assert_eq!(
                kernel, want,
                "{what} as {shape:?} with {tags} vlan tags: kernel {kernel:?}, model {want:?}"
            );
            runs += 1;
        }
    }
    assert!(runs > 200, "only {runs} frames ran");
}

#[test]
fn the_kernel_agrees_with_the_table_and_the_model_in_enforce_mode() {
    check_table(Mode::Enforce);
}

#[test]
fn monitor_mode_judges_the_same_and_drops_nothing() {
    check_table(Mode::Monitor);
}

#[test]
fn broken_frames_are_dropped_with_their_reason_on_both_hooks() {
    let mut h = Harness::new(policy(Mode::Enforce));
    // Addresses a rule allows in both directions: the drop is the shape's doing.
    let v4 = ("203.0.113.200".parse().unwrap(), "203.0.113.200".parse().unwrap());
    let v6 = ("2001:db8:b:1::9".parse().unwrap(), "2001:db8:b:1::9".parse().unwrap());
    let cases = broken(v4, v6, 443);
    assert!(cases.len() >= 15);
    for case in &cases {
        for hook in [Hook::Ingress, Hook::Egress] {
            let want = h.expect(&case.packet(hook));
            assert_eq!(
                want,
                Outcome {
                    delivered: false,
                    verdict: Verdict::Drop,
                    reason: case.reason
                }
            );
            if hook == Hook::Egress && !case.skb_testable() {
                let refused = h.try_run(hook, &case.bytes);
                assert!(
                    refused.is_err(),
                    "{}: the kernel now runs it; test it like the rest",
                    case.name
                );
                continue;
            }
            let got = h.run(hook, &case.bytes);
            assert_eq!(got, want, "{} on {hook:?}", case.name);
        }
    }
}

#[test]
fn no_policy_loaded_fails_closed() {
    let pins = common::PinDir::new();
    let mut dp = allowgate::dataplane::Dataplane::load(&pins.0, &Default::default()).unwrap();
    let p = ip(OUT, "13.80.125.22", syn(40000, 443));
    let r = dp.test_run(Hook::Egress, &frame(&p, &Shape::Plain), 1).unwrap();
    assert_eq!(r.return_value, 2, "TC_ACT_SHOT before any policy is installed");
    let c = dp.counters().unwrap();
    assert_eq!(
        c.get(
            allowgate_ebpf::DIR_EGRESS,
            allowgate_ebpf::VERDICT_DROP,
            Reason::NoPolicy
        )
        .packets,
        1
    );
    drop(dp);
}

#[test]
fn a_new_generation_replaces_the_old_whole() {
    let mut h = Harness::new(policy(Mode::Enforce));
    let to_portal = ip(OUT, "13.80.125.22", syn(40000, 443));
    let bytes = frame(&to_portal, &Shape::Plain);
    assert!(h.run(OUT, &bytes).delivered);
    // EU2 lists 13.80.125.22 too: moving from eu1 to eu2 keeps it allowed.
    let selection = Selection {
        regions: vec!["eu2".into()],
        features: vec![Feature::Portal],
    };
    h.set_policy(Policy::build(&Catalog::builtin(), &selection, &Config::default(), &[]));
    assert!(h.run(OUT, &bytes).delivered);
    // 52.157.238.58 is EU1's only: gone with EU1.
    let eu1_only = frame(&ip(OUT, "52.157.238.58", syn(40000, 443)), &Shape::Plain);
    assert_eq!(h.run(OUT, &eu1_only).reason, Reason::Policy);
    assert!(!h.run(OUT, &eu1_only).delivered);
    let (_, generation) = h.dataplane.active().unwrap();
    assert_eq!(generation, 2);
}

/// The filter skips tables it knows are empty: the generation's (flags set by install)
/// and the learned ones (a hint the agent clears before each insert). An address learned
/// after a denial must pass on the next packet, and be denied again once removed, for
/// both families, with every other table of the family empty.
#[test]
fn learned_addresses_pass_at_once_although_empty_tables_are_skipped() {
    let selection = Selection {
        regions: vec!["eu1".into()],
        features: vec![Feature::Portal],
    };
    let policy = Policy::build(&Catalog::builtin(), &selection, &Config::default(), &[]);
    let tables = allowgate::policy::compile_policy(&policy).unwrap();
    assert!(
        tables.v4_lpm.is_empty() && tables.v6_host.is_empty() && tables.v6_lpm.is_empty(),
        "the case needs empty tables"
    );
    // What the catalog allows for its portal address: egress tcp/443.
    let value = tables.v4_host[&"13.80.125.22".parse().unwrap()];
    let mut h = Harness::new(policy);
    let until = allowgate::dataplane::monotonic_ns() + 60_000_000_000;
    for remote in ["198.51.100.77", "2001:db8:77::1"] {
        let addr: IpAddr = remote.parse().unwrap();
        let bytes = frame(&ip(OUT, remote, syn(40000, 443)), &Shape::Plain);
        assert!(!h.run(OUT, &bytes).delivered, "{remote}: not learned yet");
        h.dataplane.put_learned(addr, value, until).unwrap();
        assert!(h.run(OUT, &bytes).delivered, "{remote}: learned");
        h.dataplane.remove_learned(addr).unwrap();
        let after = h.run(OUT, &bytes);
        assert!(!after.delivered, "{remote}: forgotten");
        assert_eq!(after.reason, Reason::Policy);
    }
}

// ---------------------------------------------------------------------------------------
// Upgrades over pinned maps

/// A build that appends a drop reason adopts this build's pins as they are (the
/// counters keep room for reasons), and reads every counter back under its own
/// reason: the egress counter of the last reason included, which the old layout
/// (indexed by the number of reasons) put out of the map's range.
#[test]
fn a_build_that_appends_a_reason_adopts_old_pins_without_misreading_a_counter() {
    use allowgate::dataplane::{Dataplane, LoadOptions};
    use allowgate_ebpf::{self as abi, Reason as R};

    let pins = common::PinDir::new();
    let p = policy(Mode::Enforce);
    let tables = allowgate::policy::compile_policy(&p).unwrap();
    let me: IpAddr = ME4.parse().unwrap();
    let unlisted: IpAddr = "203.0.113.99".parse().unwrap();
    let syn = L4::tcp(40000, 443, true, false);
    let out = frame(&between(Hook::Egress, me, unlisted, syn), &Shape::Plain);
    let mut malformed_out = out.clone();
    malformed_out[14] = (5 << 4) | (malformed_out[14] & 0x0f); // IP version 5 on an IPv4 ethertype
    let unlisted_in = frame(&between(Hook::Ingress, me, unlisted, syn), &Shape::Plain);

    let count = |dp: &Dataplane, dir: u8, reason: R| dp.counters().unwrap().get(dir, abi::VERDICT_DROP, reason).packets;
    {
        let mut old = Dataplane::load(&pins.0, &LoadOptions::default()).expect("load this build");
        old.install(&tables).unwrap();
        old.test_run(Hook::Egress, &malformed_out, 3).unwrap();
        old.test_run(Hook::Ingress, &unlisted_in, 2).unwrap();
        assert_eq!(count(&old, abi::DIR_EGRESS, R::Malformed), 3);
        assert_eq!(count(&old, abi::DIR_INGRESS, R::Policy), 2);
    }

    let mut next = Dataplane::load_object(&pins.0, &LoadOptions::default(), abi::FILTER_NEXT_OBJ)
        .expect("load the next build over this one's pins");
    assert!(
        next.replaced().is_empty(),
        "nothing needs replacing: {:?}",
        next.replaced()
    );
    assert_eq!(
        count(&next, abi::DIR_EGRESS, R::Malformed),
        3,
        "the last reason's egress drops read back"
    );
    assert_eq!(count(&next, abi::DIR_INGRESS, R::Policy), 2);
    next.install(&tables).unwrap();
    next.test_run(Hook::Egress, &malformed_out, 4).unwrap();
    assert_eq!(
        count(&next, abi::DIR_EGRESS, R::Malformed),
        7,
        "the next build counts where this one did"
    );
    let counters = next.counters().unwrap();
    let others: u64 = counters
        .by_key
        .iter()
        .filter(|&(&key, _)| {
            key != (abi::DIR_EGRESS, abi::VERDICT_DROP, R::Malformed)
                && key != (abi::DIR_INGRESS, abi::VERDICT_DROP, R::Policy)
        })
        .map(|(_, c)| c.packets)
        .sum();
    assert_eq!(others, 0, "no count landed under another reason: {:?}", counters.by_key);
}

/// Pins of the first ABI (the counters indexed by the number of reasons, 64 entries)
/// are replaced with a word for the log, never read the new way.
#[test]
fn counters_pinned_by_an_older_abi_are_replaced_not_misread() {
    use allowgate::dataplane::{Dataplane, LoadOptions};
    let pins = common::PinDir::new();
    let maps = pins.0.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    let made = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(maps.join("ag_stats"))
        .args([
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "16",
            "entries",
            "64",
            "name",
            "ag_stats",
        ])
        .output()
        .expect("run bpftool");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let dp = Dataplane::load(&pins.0, &LoadOptions::default()).expect("load over old pins");
    let replaced = dp.replaced().join("; ");
    assert!(
        replaced.starts_with("ag_stats: pinned as type 6 key 4 value 16 entries 64"),
        "{replaced}"
    );
    assert!(
        replaced.contains("this build has type 6 key 4 value 16 entries 256"),
        "{replaced}"
    );
    assert_eq!(
        dp.counters().unwrap().by_key.values().map(|c| c.packets).sum::<u64>(),
        0
    );
}

/// The host's UDP flow of the two tests below: a stateful policy that lets this host
/// send udp/9000 to 203.0.113.128/25, its datagram from port 40000 to 203.0.113.130
/// (`out`) and the answer (`answer`). Test runs only.
struct UdpFlow {
    tables: allowgate::policy::Tables,
    out: Vec<u8>,
    answer: Vec<u8>,
}

impl UdpFlow {
    fn new() -> UdpFlow {
        let mut config = Config::default();
        config.state.mode = StateMode::Stateful;
        config.allow = vec![allow(
            "203.0.113.128/25",
            Direction::Egress,
            Proto::Udp,
            &[PortRange::single(9000)],
        )];
        let selection = Selection {
            regions: vec!["eu1".into()],
            features: vec![Feature::Portal],
        };
        let policy = Policy::build(&Catalog::builtin(), &selection, &config, &[]);
        let (me, remote): (IpAddr, IpAddr) = (ME4.parse().unwrap(), "203.0.113.130".parse().unwrap());
        let udp = |hook, sport, dport| frame(&between(hook, me, remote, L4::Udp { sport, dport }), &Shape::Plain);
        UdpFlow {
            tables: allowgate::policy::compile_policy(&policy).unwrap(),
            out: udp(Hook::Egress, 40000, 9000),
            answer: udp(Hook::Ingress, 9000, 40000),
        }
    }

    /// Loads this build over `pins` and installs the policy.
    fn load(&self, pins: &common::PinDir) -> allowgate::dataplane::Dataplane {
        use allowgate::dataplane::{Dataplane, LoadOptions};
        let mut dp = Dataplane::load(&pins.0, &LoadOptions::default()).expect("load over the pins");
        dp.install(&self.tables).unwrap();
        dp
    }

    /// `load`, then the answer: what the load replaced, whether the answer passed, and
    /// how many packets dropped `no-flow`.
    fn answer_after_load(&self, pins: &common::PinDir) -> (String, bool, u64) {
        use allowgate_ebpf::{self as abi, Reason as R};
        let mut dp = self.load(pins);
        let passed = dp.test_run(Hook::Ingress, &self.answer, 1).unwrap().return_value == 2;
        let no_flow = dp
            .counters()
            .unwrap()
            .get(abi::DIR_INGRESS, abi::VERDICT_DROP, R::NoFlow)
            .packets;
        (dp.replaced().join("; "), passed, no_flow)
    }
}

/// Unassured flows pinned by ABI 4, whose buckets held their own checks, are carried
/// into this build's tables, where the checks have a table of their own: the answer
/// to a datagram the host sent before the upgrade still passes. Control: the same pin
/// with the way's check 0 (not in use) carries nothing, and the answer drops `no-flow`,
/// so the pass is the carried flow's.
#[test]
fn unassured_flows_pinned_with_their_checks_inline_are_carried_over() {
    use allowgate_ebpf as abi;

    let flow = UdpFlow::new();
    // An ABI 4 bucket (checks, stamps, then four ways of a 16-byte key and a 64-byte
    // value), its way 0 holding the host's datagram to 203.0.113.130:9000, sent just now.
    let old_bucket = |check: u32| {
        let seen = allowgate::dataplane::flows::coarse_ns();
        let mut b = vec![0u8; 32 + 4 * 80];
        b[0..4].copy_from_slice(&check.to_le_bytes());
        b[16..20].copy_from_slice(&((seen >> 20) as u32).to_le_bytes());
        let way = 32;
        b[way..way + 4].copy_from_slice(&[198, 51, 100, 7]);
        b[way + 4..way + 8].copy_from_slice(&[203, 0, 113, 130]);
        b[way + 8..way + 10].copy_from_slice(&40000u16.to_le_bytes());
        b[way + 10..way + 12].copy_from_slice(&9000u16.to_le_bytes());
        b[way + 12] = 17;
        let value = way + 16;
        b[value..value + 8].copy_from_slice(&seen.to_le_bytes());
        b[value + 8] = abi::FLOW_UDP;
        b[value + 9] = abi::DIR_EGRESS;
        b
    };
    let run = |check: u32| {
        let pins = common::PinDir::new();
        let maps = pins.0.join("maps");
        std::fs::create_dir_all(&maps).unwrap();
        let path = maps.join("ag_flows_new_v4").display().to_string();
        let bpftool = |args: Vec<String>| {
            let out = std::process::Command::new("bpftool")
                .args(&args)
                .output()
                .expect("run bpftool");
            assert!(
                out.status.success(),
                "bpftool {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        bpftool(
            [
                words("map create"),
                vec![path.clone()],
                words("type array key 4 value 352 entries 8192 name ag_flows_new_v4 flags 1024"),
            ]
            .concat(),
        );
        let value: Vec<String> = old_bucket(check).iter().map(|b| format!("{b:02x}")).collect();
        bpftool(
            [
                words("map update pinned"),
                vec![path],
                words("key hex 00 00 00 00 value hex"),
                value,
            ]
            .concat(),
        );
        flow.answer_after_load(&pins)
    };

    let (replaced, passed, no_flow) = run(0x1234_5679);
    assert!(
        replaced.contains("ag_flows_new_v4: pinned as type 2 key 4 value 352")
            && replaced.contains("its 1 flows carried over"),
        "{replaced}"
    );
    assert!(
        passed && no_flow == 0,
        "the carried flow's answer was dropped ({no_flow} no-flow): {replaced}"
    );

    let (replaced, passed, no_flow) = run(0);
    assert!(replaced.contains("its 0 flows carried over"), "{replaced}");
    assert!(
        !passed && no_flow == 1,
        "control: with no flow the answer must drop no-flow (passed: {passed})"
    );
}

/// An unassured table and its checks are kept or replaced as one: pins that still
/// hold both keep the host's flow (the control: its answer passes after a reload); a
/// table pinned without its checks can't tell which ways are in use, so both go and
/// the flow starts over (its answer drops `no-flow`), and checks pinned without their
/// table go too, never read against another table's buckets.
#[test]
fn an_unassured_table_and_its_checks_are_replaced_together() {
    use allowgate_ebpf::map;

    let flow = UdpFlow::new();
    // Pins holding the host's datagram's flow, with `remove` then taken away.
    let with_flow_without = |remove: &[&str]| {
        let pins = common::PinDir::new();
        // TC_ACT_SHOT (2) would be a drop.
        let ret = flow
            .load(&pins)
            .test_run(Hook::Egress, &flow.out, 1)
            .unwrap()
            .return_value;
        assert_ne!(ret, 2, "the host's datagram");
        for name in remove {
            std::fs::remove_file(pins.0.join("maps").join(name)).expect("remove a pin");
        }
        flow.answer_after_load(&pins)
    };

    let (replaced, passed, _) = with_flow_without(&[]);
    assert!(
        replaced.is_empty() && passed,
        "control: the flow kept over a reload: {replaced}"
    );

    let (replaced, passed, no_flow) = with_flow_without(&[map::FLOWS_CHK_V4]);
    assert!(
        replaced
            .contains("ag_flows_new_v4: pinned without ag_flows_chk_v4; its flows start over: cannot open its checks"),
        "{replaced}"
    );
    assert!(
        !passed && no_flow == 1,
        "a table without its checks kept its flow: {replaced}"
    );

    let (replaced, passed, _) = with_flow_without(&[map::FLOWS_NEW_V4]);
    assert_eq!(replaced, "ag_flows_chk_v4: pinned without ag_flows_new_v4");
    assert!(!passed);
}

// ---------------------------------------------------------------------------------------
// The host index

/// The host index (dataplane/hostindex.rs), which the filter reads a generation's IPv4
/// /32s from in place of the hash map, follows each generation: a /32 the next one
/// drops is denied at once, also when the slot it was indexed in comes round again; a
/// generation with more /32s than the index takes is judged through the hash map, and
/// the index comes back with the next one that fits. Every verdict against the model.
/// (Addresses from 10/8: test runs only, nothing is sent.)
#[test]
fn the_host_index_follows_each_generation_and_steps_aside_when_full() {
    use allowgate_ebpf as abi;
    use std::net::Ipv4Addr;

    let host = |i: u32| Ipv4Addr::from(0x0a00_0000 + i * 3).to_string();
    let with = |from: u32, to: u32| {
        let mut config = Config::default();
        config.state.mode = StateMode::Stateless;
        config.allow = (from..to)
            .map(|i| {
                allow(
                    &format!("{}/32", host(i)),
                    Direction::Egress,
                    Proto::Tcp,
                    &[PortRange::single(443)],
                )
            })
            .collect();
        let selection = Selection {
            regions: vec!["eu1".into()],
            features: vec![Feature::Portal],
        };
        Policy::build(&Catalog::builtin(), &selection, &config, &[])
    };
    let probes: Vec<String> = (0..5000)
        .step_by(7)
        .map(host)
        .chain(["13.80.125.22".to_string(), "10.0.0.1".to_string()])
        .collect();

    let mut h = Harness::new(with(0, 300));
    for (from, to, indexed) in [
        (0, 300, true),
        (150, 450, true),
        (300, 600, true),
        (0, 5000, false),
        (4000, 4300, true),
    ] {
        if (from, to) != (0, 300) {
            h.set_policy(with(from, to));
        }
        let flags = h.dataplane.active_config().unwrap().flags;
        assert_eq!(
            flags & abi::F_V4_HOST_INDEX != 0,
            indexed,
            "hosts {from}..{to}: indexed"
        );
        let mut passed = 0;
        for remote in &probes {
            let packet = ip(OUT, remote, syn(40000, 443));
            let kernel = h.run(OUT, &frame(&packet, &Shape::Plain));
            assert_eq!(kernel, h.expect(&packet), "hosts {from}..{to}: {remote}");
            passed += usize::from(kernel.delivered);
        }
        let listed = probes.iter().filter(|p| (from..to).any(|i| host(i) == **p)).count();
        assert_eq!(passed, listed + 1, "hosts {from}..{to}: its /32s and the portal pass");
    }
}
