//! Smoke tests of the BPF programs: the verifier accepts both, and hand-built
//! packets run through them with BPF_PROG_TEST_RUN (nothing is attached, nothing
//! is sent) get the verdict, reason, counters and events they should.
//!
//! Needs root (CAP_BPF and CAP_NET_ADMIN) and a bpffs: the maps are pinned by name,
//! so each test loads the object with its own pin directory under /sys/fs/bpf and
//! removes it when done, even if the test fails. The full verdict and differential
//! suites live elsewhere; these only prove the data plane works end to end.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use allowgate_ebpf::{
    self as abi, Counter, DIR_EGRESS, DIR_INGRESS, DnsCtl, DnsReleaseKey, DnsServerKey, DynValue, Event, GenConfig,
    PolicyValue, PortRule, Reason, V4HostKey, V6HostKey, VERDICT_DROP, VERDICT_PASS, map,
};
use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use testkit::require_root;

/// LPM tries need it, and the inner-map templates in the object declare it.
const BPF_F_NO_PREALLOC: u32 = 1;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_UNSPEC: u32 = -1i32 as u32;

const ALL_ESSENTIALS: u32 = abi::F_ARP | abi::F_ND | abi::F_ICMP_ERRORS | abi::F_DHCP;
/// An ethertype the test config lists (IEEE 802 local experimental).
const LISTED_ETHERTYPE: u16 = 0x88b5;

// ---------------------------------------------------------------------------
// Privileges, bpffs and pins
// ---------------------------------------------------------------------------

fn bpffs_mounted() -> bool {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"/sys/fs/bpf") && fields.get(2) == Some(&"bpf")
    })
}

/// Mounts bpffs on /sys/fs/bpf only when none is there: mounting a second one
/// would hide every pin of the first.
fn ensure_bpffs() {
    static MOUNT: Mutex<()> = Mutex::new(());
    let _guard = MOUNT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if bpffs_mounted() {
        return;
    }
    let status = Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .expect("run mount -t bpf");
    assert!(status.success(), "mount -t bpf bpf /sys/fs/bpf failed: {status}");
}

/// A pin directory of its own for one test, removed on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/allowgate-smoke-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        PinDir(path)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

// ---------------------------------------------------------------------------
// The loaded object and its maps
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn dir(self) -> u8 {
        match self {
            Hook::Ingress => DIR_INGRESS,
            Hook::Egress => DIR_EGRESS,
        }
    }
}

/// The tables of one generation.
#[derive(Default)]
struct Tables {
    v4_host: Vec<(Ipv4Addr, Vec<PortRule>)>,
    v4_lpm: Vec<(Ipv4Addr, u32, Vec<PortRule>)>,
    v6_host: Vec<(Ipv6Addr, Vec<PortRule>)>,
    v6_lpm: Vec<(Ipv6Addr, u32, Vec<PortRule>)>,
}

fn rule(proto: u8, slots: u8, port_lo: u16, port_hi: u16) -> PortRule {
    PortRule {
        proto,
        slots,
        _pad: 0,
        port_lo,
        port_hi,
    }
}

fn value(rules: &[PortRule]) -> PolicyValue {
    assert!(rules.len() <= abi::MAX_PORT_RULES);
    let mut value = PolicyValue {
        n_rules: rules.len() as u32,
        ..PolicyValue::default()
    };
    value.rules[..rules.len()].copy_from_slice(rules);
    value
}

// Field order matters: the object (and its map fds) goes before its pins.
struct Fixture {
    bpf: Ebpf,
    _pins: PinDir,
    /// The XDP test runs' `ingress_ifindex` (0: the kernel's default context).
    ingress_ifindex: u32,
}

impl Fixture {
    fn load() -> Self {
        Self::load_with_globals(&[])
    }

    /// Loads the object with its own pins and these `volatile const` globals, and
    /// both programs (through the verifier).
    fn load_with_globals(globals: &[(&str, u64)]) -> Self {
        require_root();
        ensure_bpffs();
        let pins = PinDir::new();
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&pins.0);
        for (name, value) in globals {
            loader.override_global(name, value, true);
        }
        let mut bpf = loader
            .load(abi::FILTER_OBJ)
            .unwrap_or_else(|e| panic!("load the filter object: {e:?}"));
        let ingress: &mut Xdp = bpf
            .program_mut(abi::PROG_INGRESS)
            .expect("the object has the ingress program")
            .try_into()
            .expect("ingress is XDP");
        ingress
            .load()
            .unwrap_or_else(|e| panic!("verifier rejected {}: {e:?}", abi::PROG_INGRESS));
        let egress: &mut SchedClassifier = bpf
            .program_mut(abi::PROG_EGRESS)
            .expect("the object has the egress program")
            .try_into()
            .expect("egress is a TC classifier");
        egress
            .load()
            .unwrap_or_else(|e| panic!("verifier rejected {}: {e:?}", abi::PROG_EGRESS));
        Fixture {
            bpf,
            _pins: pins,
            ingress_ifindex: 0,
        }
    }

    fn map_mut(&mut self, name: &str) -> &mut Map {
        self.bpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("the object has no map {name}"))
    }

    /// Fills `slot` with new inner maps holding `tables`, then writes its config.
    fn install(&mut self, slot: u32, cfg: GenConfig, tables: &Tables) {
        let mut v4_host =
            HashMap::<MapData, V4HostKey, PolicyValue>::create(64, BPF_F_NO_PREALLOC).expect("create v4 hash");
        for (addr, rules) in &tables.v4_host {
            v4_host
                .insert(V4HostKey { addr: addr.octets() }, value(rules), 0)
                .expect("insert v4 host");
        }
        let mut v4_lpm =
            LpmTrie::<MapData, [u8; 4], PolicyValue>::create(64, BPF_F_NO_PREALLOC).expect("create v4 trie");
        for (addr, len, rules) in &tables.v4_lpm {
            v4_lpm
                .insert(&LpmKey::new(*len, addr.octets()), value(rules), 0)
                .expect("insert v4 prefix");
        }
        let mut v6_host =
            HashMap::<MapData, V6HostKey, PolicyValue>::create(64, BPF_F_NO_PREALLOC).expect("create v6 hash");
        for (addr, rules) in &tables.v6_host {
            v6_host
                .insert(V6HostKey { addr: addr.octets() }, value(rules), 0)
                .expect("insert v6 host");
        }
        let mut v6_lpm =
            LpmTrie::<MapData, [u8; 16], PolicyValue>::create(64, BPF_F_NO_PREALLOC).expect("create v6 trie");
        for (addr, len, rules) in &tables.v6_lpm {
            v6_lpm
                .insert(&LpmKey::new(*len, addr.octets()), value(rules), 0)
                .expect("insert v6 prefix");
        }

        ArrayOfMaps::<_, HashMap<MapData, V4HostKey, PolicyValue>>::try_from(self.map_mut(map::V4_HOST))
            .expect("ag_v4_host is an array of maps")
            .set(slot, &v4_host, 0)
            .expect("the kernel accepts the v4 hash as an inner map");
        ArrayOfMaps::<_, LpmTrie<MapData, [u8; 4], PolicyValue>>::try_from(self.map_mut(map::V4_LPM))
            .expect("ag_v4_lpm is an array of maps")
            .set(slot, &v4_lpm, 0)
            .expect("the kernel accepts the v4 trie as an inner map");
        ArrayOfMaps::<_, HashMap<MapData, V6HostKey, PolicyValue>>::try_from(self.map_mut(map::V6_HOST))
            .expect("ag_v6_host is an array of maps")
            .set(slot, &v6_host, 0)
            .expect("the kernel accepts the v6 hash as an inner map");
        ArrayOfMaps::<_, LpmTrie<MapData, [u8; 16], PolicyValue>>::try_from(self.map_mut(map::V6_LPM))
            .expect("ag_v6_lpm is an array of maps")
            .set(slot, &v6_lpm, 0)
            .expect("the kernel accepts the v6 trie as an inner map");

        Array::<_, GenConfig>::try_from(self.map_mut(map::GEN_CONFIG))
            .expect("ag_gen_cfg is an array of GenConfig")
            .set(slot, cfg, 0)
            .expect("write ag_gen_cfg");
    }

    fn activate(&mut self, slot: u32) {
        Array::<_, u32>::try_from(self.map_mut(map::ACTIVE))
            .expect("ag_active is an array of u32")
            .set(0, slot, 0)
            .expect("write ag_active");
    }

    /// Runs `pkt` through the hook's program; true when it passes.
    fn run(&mut self, name: &str, hook: Hook, pkt: &[u8]) -> bool {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex; the kernel wants data_end = the frame's length.
        let xdp_md: Vec<u8> = [0, pkt.len() as u32, 0, self.ingress_ifindex, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let opts = TestRunOptions {
            data_in: Some(pkt),
            ctx_in: (hook == Hook::Ingress && self.ingress_ifindex != 0).then_some(&xdp_md[..]),
            ..TestRunOptions::default()
        };
        match hook {
            Hook::Ingress => {
                let prog: &mut Xdp = self.bpf.program_mut(abi::PROG_INGRESS).unwrap().try_into().unwrap();
                let ret = prog
                    .test_run(opts)
                    .unwrap_or_else(|e| panic!("{name}: test-run the XDP program: {e:?}"))
                    .return_value;
                match ret {
                    XDP_PASS => true,
                    XDP_DROP => false,
                    other => {
                        panic!("{name}: XDP program returned {other}, want XDP_PASS or XDP_DROP")
                    }
                }
            }
            Hook::Egress => {
                let prog: &mut SchedClassifier = self.bpf.program_mut(abi::PROG_EGRESS).unwrap().try_into().unwrap();
                let ret = prog
                    .test_run(opts)
                    .unwrap_or_else(|e| panic!("{name}: test-run the TC program: {e:?}"))
                    .return_value;
                match ret {
                    TC_ACT_UNSPEC => true,
                    TC_ACT_SHOT => false,
                    other => panic!("{name}: TC program returned {other}, want TC_ACT_UNSPEC or TC_ACT_SHOT"),
                }
            }
        }
    }

    /// A counter summed over the CPUs.
    fn counter(&self, hook: Hook, verdict: u8, reason: Reason) -> Counter {
        let stats = PerCpuArray::<_, Counter>::try_from(self.bpf.map(map::STATS).expect("ag_stats"))
            .expect("ag_stats is a per-CPU array of Counter");
        let per_cpu = stats
            .get(&abi::stats_index(hook.dir(), verdict, reason as u8), 0)
            .expect("read ag_stats");
        per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
            packets: sum.packets + c.packets,
            bytes: sum.bytes + c.bytes,
        })
    }

    fn total_packets(&self) -> u64 {
        let stats = PerCpuArray::<_, Counter>::try_from(self.bpf.map(map::STATS).expect("ag_stats")).unwrap();
        (0..abi::STATS_ENTRIES as u32)
            .map(|i| stats.get(&i, 0).unwrap().iter().map(|c| c.packets).sum::<u64>())
            .sum()
    }

    fn misc(&self, index: u32) -> u64 {
        let misc = PerCpuArray::<_, u64>::try_from(self.bpf.map(map::MISC).expect("ag_misc"))
            .expect("ag_misc is a per-CPU array of u64");
        misc.get(&index, 0).expect("read ag_misc").iter().sum()
    }

    fn drain_events(&mut self) -> Vec<Event> {
        let mut ring = RingBuf::try_from(self.map_mut(map::EVENTS)).expect("ag_events is a ring buffer");
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), size_of::<Event>(), "event size");
            // SAFETY: Event is a plain #[repr(C)] struct of integers and the
            // length was checked; read_unaligned copes with any alignment.
            events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
        events
    }

    /// Runs `pkt` and checks the verdict and that exactly its counter moved.
    #[track_caller]
    fn expect(&mut self, name: &str, hook: Hook, pkt: &[u8], pass: bool, verdict: u8, reason: Reason) {
        let before = self.counter(hook, verdict, reason);
        let total_before = self.total_packets();
        let passed = self.run(name, hook, pkt);
        let after = self.counter(hook, verdict, reason);
        assert_eq!(
            passed,
            pass,
            "{name}: {hook:?} {} the packet, want it {}",
            if passed { "passed" } else { "dropped" },
            if pass { "passed" } else { "dropped" },
        );
        assert_eq!(
            (after.packets - before.packets, after.bytes - before.bytes),
            (1, pkt.len() as u64),
            "{name}: counter ({hook:?}, {}, {}) should count this packet",
            if verdict == VERDICT_PASS { "pass" } else { "drop" },
            reason.as_str(),
        );
        assert_eq!(
            self.total_packets(),
            total_before + 1,
            "{name}: exactly one counter moves"
        );
    }
}

fn config(generation: u64, flags: u32) -> GenConfig {
    let mut cfg = GenConfig {
        generation,
        flags,
        n_ethertypes: 1,
        ..GenConfig::default()
    };
    cfg.ethertypes[0] = LISTED_ETHERTYPE;
    cfg
}

// ---------------------------------------------------------------------------
// Packets: raw frames, broken ones included, from testkit::frames
// ---------------------------------------------------------------------------

use testkit::frames::*;

// ---------------------------------------------------------------------------
// The policy the tests judge by
// ---------------------------------------------------------------------------

const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SERVICE4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10); // egress tcp/443 (host hash)
const OTHER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11); // no rule
const NET4_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7); // in 198.51.100.0/24 (trie)
const ADMIN4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5); // ingress tcp/22

const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const SERVICE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10); // egress tcp/443, icmp
const NET6_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 5); // in 2001:db8:1::/48, any
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 5);
const LINK_LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn test_tables() -> Tables {
    let egress = abi::SLOT_OUT_REMOTE | abi::SLOT_IN_REMOTE;
    let ingress = abi::SLOT_IN_LOCAL | abi::SLOT_OUT_LOCAL;
    Tables {
        v4_host: vec![
            (SERVICE4, vec![rule(abi::PROTO_TCP, egress, 443, 443)]),
            (ADMIN4, vec![rule(abi::PROTO_TCP, ingress, 22, 22)]),
        ],
        v4_lpm: vec![(
            Ipv4Addr::new(198, 51, 100, 0),
            24,
            vec![
                rule(abi::PROTO_UDP, egress, 53, 53),
                rule(abi::PROTO_ICMP, egress, 0, 65535),
            ],
        )],
        v6_host: vec![(
            SERVICE6,
            vec![
                rule(abi::PROTO_TCP, egress, 443, 443),
                rule(abi::PROTO_ICMP, egress, 0, 65535),
            ],
        )],
        v6_lpm: vec![(
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0),
            48,
            vec![rule(abi::PROTO_ANY, egress, 0, 65535)],
        )],
    }
}

fn enforcing_fixture() -> Fixture {
    let mut fx = Fixture::load();
    fx.install(0, config(1, abi::F_ENFORCE | ALL_ESSENTIALS), &test_tables());
    fx.activate(0);
    fx
}

struct Case {
    name: &'static str,
    hook: Hook,
    pkt: Vec<u8>,
    pass: bool,
    reason: Reason,
}

fn case(name: &'static str, hook: Hook, pkt: Vec<u8>, pass: bool, reason: Reason) -> Case {
    Case {
        name,
        hook,
        pkt,
        pass,
        reason,
    }
}

fn run_cases(fx: &mut Fixture, cases: &[Case]) {
    for c in cases {
        let verdict = if c.pass { VERDICT_PASS } else { VERDICT_DROP };
        fx.expect(c.name, c.hook, &c.pkt, c.pass, verdict, c.reason);
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
#[rustfmt::skip] // tables of cases read best one case a line
fn policy_verdicts_ipv4() {
    use Hook::{Egress, Ingress};
    use Reason::Policy;
    let mut fx = enforcing_fixture();
    let cases = [
        case("egress SYN to a host rule's port", Egress, ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 443, SYN)), true, Policy),
        case("egress SYN to another port", Egress, ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 444, SYN)), false, Policy),
        case("egress SYN to an address without rules", Egress, ipv4(LOCAL4, OTHER4, TCP, &tcp(40000, 443, SYN)), false, Policy),
        case("egress UDP to the host rule (tcp only)", Egress, ipv4(LOCAL4, SERVICE4, UDP, &udp(40000, 443)), false, Policy),
        case("ingress SYN-ACK on the return path", Ingress, ipv4(SERVICE4, LOCAL4, TCP, &tcp(443, 40000, SYN_ACK)), true, Policy),
        case("ingress ACK on the return path", Ingress, ipv4(SERVICE4, LOCAL4, TCP, &tcp(443, 40000, ACK)), true, Policy),
        case("ingress SYN on the return path opens nothing", Ingress, ipv4(SERVICE4, LOCAL4, TCP, &tcp(443, 40000, SYN)), false, Policy),
        case("ingress to the remote's port is not the return path", Ingress, ipv4(SERVICE4, LOCAL4, TCP, &tcp(40000, 443, ACK)), false, Policy),
        case("egress UDP into a /24", Egress, ipv4(LOCAL4, NET4_HOST, UDP, &udp(40000, 53)), true, Policy),
        case("ingress UDP reply from the /24", Ingress, ipv4(NET4_HOST, LOCAL4, UDP, &udp(53, 40000)), true, Policy),
        case("egress UDP next to the /24", Egress, ipv4(LOCAL4, Ipv4Addr::new(198, 51, 101, 7), UDP, &udp(40000, 53)), false, Policy),
        case("egress ping into the /24", Egress, ipv4(LOCAL4, NET4_HOST, ICMP, &icmp(8)), true, Policy),
        case("ICMPv6's number in IPv4 is no ICMP", Egress, ipv4(LOCAL4, NET4_HOST, ICMPV6, &icmp(128)), false, Policy),
        case("ingress echo reply from the /24", Ingress, ipv4(NET4_HOST, LOCAL4, ICMP, &icmp(0)), true, Policy),
        case("ingress echo request from the /24", Ingress, ipv4(NET4_HOST, LOCAL4, ICMP, &icmp(8)), false, Policy),
        case("ingress SYN to the management port", Ingress, ipv4(ADMIN4, LOCAL4, TCP, &tcp(50000, 22, SYN)), true, Policy),
        case("egress SYN-ACK from the management port", Egress, ipv4(LOCAL4, ADMIN4, TCP, &tcp(22, 50000, SYN_ACK)), true, Policy),
        case("egress SYN from the management port", Egress, ipv4(LOCAL4, ADMIN4, TCP, &tcp(22, 50000, SYN)), false, Policy),
        case("ingress SYN to another local port", Ingress, ipv4(ADMIN4, LOCAL4, TCP, &tcp(50000, 23, SYN)), false, Policy),
        case("IP options are skipped", Egress, V4 { options: vec![1, 1, 1, 0], ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&tcp(40000, 443, SYN)), true, Policy),
        case("one VLAN tag", Egress, vlan_ether(&[ETH_P_8021Q], ETH_P_IP, &ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 443, SYN))[14..]), true, Policy),
        case("QinQ", Egress, vlan_ether(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IP, &ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 443, SYN))[14..]), true, Policy),
        case("non-first fragment to a tcp rule", Egress, V4 { frag: 100, ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&[0; 16]), true, Policy),
        case("non-first udp fragment to a tcp-only host", Egress, V4 { frag: 100, ..V4::new(LOCAL4, SERVICE4, UDP) }.build(&[0; 16]), false, Policy),
        case("non-first fragment to no rule", Egress, V4 { frag: 100, ..V4::new(LOCAL4, OTHER4, TCP) }.build(&[0; 16]), false, Policy),
        case("first fragment with the whole TCP header", Egress, V4 { frag: IPV4_MF, ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&tcp(40000, 443, SYN)), true, Policy),
    ];
    run_cases(&mut fx, &cases);
}

#[test]
#[rustfmt::skip] // tables of cases read best one case a line
fn policy_verdicts_ipv6() {
    use Hook::{Egress, Ingress};
    use Reason::Policy;
    let mut fx = enforcing_fixture();
    let syn443 = tcp(40000, 443, SYN);
    let cases = [
        case("egress SYN to a v6 host rule", Egress, ipv6(LOCAL6, SERVICE6, TCP, &syn443), true, Policy),
        case("egress SYN to another port", Egress, ipv6(LOCAL6, SERVICE6, TCP, &tcp(40000, 444, SYN)), false, Policy),
        case("ingress SYN-ACK on the return path", Ingress, ipv6(SERVICE6, LOCAL6, TCP, &tcp(443, 40000, SYN_ACK)), true, Policy),
        case("ingress SYN on the return path", Ingress, ipv6(SERVICE6, LOCAL6, TCP, &tcp(443, 40000, SYN)), false, Policy),
        case("egress UDP into an any-proto /48", Egress, ipv6(LOCAL6, NET6_HOST, UDP, &udp(40000, 9999)), true, Policy),
        case("egress ping into the /48", Egress, ipv6(LOCAL6, NET6_HOST, ICMPV6, &icmp(128)), true, Policy),
        case("ingress echo reply from the /48", Ingress, ipv6(NET6_HOST, LOCAL6, ICMPV6, &icmp(129)), true, Policy),
        case("egress ping to the host's icmp rule", Egress, ipv6(LOCAL6, SERVICE6, ICMPV6, &icmp(128)), true, Policy),
        case("ICMPv4's number in IPv6 is no ICMP", Egress, ipv6(LOCAL6, SERVICE6, ICMP, &icmp(8)), false, Policy),
        case("non-first ICMPv4-number fragment", Ingress, ipv6(SERVICE6, LOCAL6, 44, &cat(&[&v6_frag(ICMP, 10, false), &[0; 16]])), false, Policy),
        case("egress UDP outside the /48", Egress, ipv6(LOCAL6, OTHER6, UDP, &udp(40000, 9999)), false, Policy),
        case("hop-by-hop and destination options", Egress, ipv6(LOCAL6, SERVICE6, 0, &cat(&[&v6_opt(60), &v6_opt(TCP), &syn443])), true, Policy),
        case("first fragment with the whole chain", Egress, ipv6(LOCAL6, SERVICE6, 44, &cat(&[&v6_frag(TCP, 0, true), &syn443])), true, Policy),
        case("non-first fragment to a tcp rule", Egress, ipv6(LOCAL6, SERVICE6, 44, &cat(&[&v6_frag(TCP, 10, false), &[0; 16]])), true, Policy),
        case("non-first udp fragment to a tcp-only host", Egress, ipv6(LOCAL6, SERVICE6, 44, &cat(&[&v6_frag(UDP, 10, false), &[0; 16]])), false, Policy),
    ];
    run_cases(&mut fx, &cases);
}

#[test]
#[rustfmt::skip] // tables of cases read best one case a line
fn unsafe_packets_are_dropped_by_reason() {
    use Hook::{Egress, Ingress};
    let mut fx = enforcing_fixture();
    let syn443 = tcp(40000, 443, SYN);
    let whole = ipv4(LOCAL4, SERVICE4, TCP, &syn443);
    let nine_opts: Vec<u8> = (0..9).flat_map(|i| v6_opt(if i == 8 { TCP } else { 60 })).collect();
    let eight_opts: Vec<u8> = (0..8).flat_map(|i| v6_opt(if i == 7 { TCP } else { 60 })).collect();
    // The kernel's skb test run refuses (EINVAL) IP frames shorter than their
    // IP header, so the frames cut inside it run through XDP only.
    let cases = [
        case("IPv4 cut inside its header", Ingress, whole[..14 + 10].to_vec(), false, Reason::Truncated),
        case("IPv4 version 5", Egress, V4 { version: 5, ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&syn443), false, Reason::Malformed),
        case("IHL 4", Egress, V4 { ihl: Some(4), ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&syn443), false, Reason::BadIhl),
        case("IHL past the packet", Egress, V4 { ihl: Some(15), ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&[0; 8]), false, Reason::Truncated),
        case("total length below IHL x 4", Egress, V4 { tot_len: Some(16), ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&syn443), false, Reason::BadIhl),
        case("TCP header cut", Egress, whole[..whole.len() - 4].to_vec(), false, Reason::Truncated),
        case("first fragment too short for TCP", Egress, V4 { frag: IPV4_MF, ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&syn443[..12]), false, Reason::FragTooShort),
        case("TCP fragment at offset 8", Egress, V4 { frag: 1, ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&[0; 16]), false, Reason::FragOverlap),
        // tot_len 28: a "TCP header" that lies only in the frame's padding is not there.
        case("first fragment whose TCP header is padding past tot_len", Egress, V4 { frag: IPV4_MF, tot_len: Some(28), ..V4::new(LOCAL4, SERVICE4, TCP) }.build(&syn443), false, Reason::FragTooShort),
        case("UDP header past tot_len", Egress, V4 { tot_len: Some(24), ..V4::new(LOCAL4, SERVICE4, UDP) }.build(&udp(40000, 53)), false, Reason::Truncated),
        case("IPv6 TCP header past payload_len", Egress, { let mut p = ipv6(LOCAL6, SERVICE6, TCP, &syn443); p[18..20].copy_from_slice(&8u16.to_be_bytes()); p }, false, Reason::Truncated),
        case("IPv6 TCP fragment at offset 8", Egress, ipv6(LOCAL6, SERVICE6, 44, &cat(&[&v6_frag(TCP, 1, false), &[0; 16]])), false, Reason::FragOverlap),
        case("IPv6 TCP fragment at offset 16 is judged", Egress, ipv6(LOCAL6, SERVICE6, 44, &cat(&[&v6_frag(TCP, 2, false), &[0; 16]])), true, Reason::Policy),
        case("three VLAN tags", Egress, vlan_ether(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q], ETH_P_IP, &whole[14..]), false, Reason::VlanDepth),
        case("VLAN tag cut", Ingress, vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00], false, Reason::Truncated),
        case("unlisted ethertype (LLDP)", Ingress, ether(0x88cc, &[0; 46]), false, Reason::Ethertype),
        case("IPv6 cut inside its header", Ingress, ipv6(LOCAL6, SERVICE6, TCP, &syn443)[..14 + 30].to_vec(), false, Reason::Truncated),
        case("IPv6 version 4", Egress, { let mut p = ipv6(LOCAL6, SERVICE6, TCP, &syn443); p[14] = 4 << 4; p }, false, Reason::Malformed),
        case("v4-mapped destination", Egress, ipv6(LOCAL6, "::ffff:192.0.2.10".parse().unwrap(), TCP, &syn443), false, Reason::V4Mapped),
        case("v4-mapped source", Ingress, ipv6("::ffff:192.0.2.10".parse().unwrap(), LOCAL6, TCP, &syn443), false, Reason::V4Mapped),
        case("nine extension headers", Egress, ipv6(LOCAL6, SERVICE6, 60, &cat(&[&nine_opts, &syn443])), false, Reason::V6ChainTooLong),
        case("eight extension headers are fine", Egress, ipv6(LOCAL6, SERVICE6, 60, &cat(&[&eight_opts, &syn443])), true, Reason::Policy),
        case("extension header cut", Egress, ipv6(LOCAL6, SERVICE6, 60, &[TCP, 1, 0, 0, 0, 0, 0, 0, 0, 0]), false, Reason::Truncated),
        case("IPv6 TCP header cut", Egress, ipv6(LOCAL6, SERVICE6, TCP, &syn443[..10]), false, Reason::Truncated),
        case("first fragment without the TCP header", Egress, ipv6(LOCAL6, SERVICE6, 44, &cat(&[&v6_frag(TCP, 0, true), &syn443[..10]])), false, Reason::V6FragChain),
        case("first fragment with the chain cut", Egress, ipv6(LOCAL6, SERVICE6, 44, &cat(&[&v6_frag(60, 0, true), &[TCP, 2, 0, 0]])), false, Reason::V6FragChain),
    ];
    run_cases(&mut fx, &cases);
}

#[test]
#[rustfmt::skip] // tables of cases read best one case a line
fn essentials_pass_without_rules() {
    use Hook::{Egress, Ingress};
    let mut fx = enforcing_fixture();
    let any4 = Ipv4Addr::new(203, 0, 113, 99);
    let mut arp = vec![0u8; 28];
    arp[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    let ns_target = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
    let cases = [
        case("ARP in", Ingress, ether(ETH_P_ARP, &arp), true, Reason::Arp),
        case("ARP out", Egress, ether(ETH_P_ARP, &arp), true, Reason::Arp),
        case("listed ethertype", Ingress, ether(LISTED_ETHERTYPE, &[0; 46]), true, Reason::Ethertype),
        case("neighbour solicitation", Ingress, ipv6_raw(LINK_LOCAL6, ns_target, ICMPV6, 255, &[135, 0, 0, 0, 0, 0, 0, 0]), true, Reason::Nd),
        case("neighbour advertisement out", Egress, ipv6_raw(LOCAL6, LINK_LOCAL6, ICMPV6, 255, &[136, 0, 0, 0, 0, 0, 0, 0]), true, Reason::Nd),
        case("neighbour solicitation with hop limit 64", Ingress, ipv6_raw(LINK_LOCAL6, ns_target, ICMPV6, 64, &[135, 0, 0, 0, 0, 0, 0, 0]), false, Reason::Policy),
        case("MLDv2 report from link-local", Egress, ipv6_raw(LINK_LOCAL6, "ff02::16".parse().unwrap(), 0, 1, &cat(&[&v6_opt(ICMPV6), &icmp(143)])), true, Reason::Nd),
        case("MLD query from a global address", Ingress, ipv6_raw(OTHER6, ALL_NODES6, ICMPV6, 1, &icmp(130)), false, Reason::Policy),
        case("ICMP fragmentation needed", Ingress, ipv4(any4, LOCAL4, ICMP, &icmp(3)), true, Reason::IcmpError),
        case("ICMP time exceeded out", Egress, ipv4(LOCAL4, any4, ICMP, &icmp(11)), true, Reason::IcmpError),
        case("ICMPv6 packet too big", Ingress, ipv6(OTHER6, LOCAL6, ICMPV6, &icmp(2)), true, Reason::IcmpError),
        case("ICMP echo request is no error", Ingress, ipv4(any4, LOCAL4, ICMP, &icmp(8)), false, Reason::Policy),
        case("DHCP discover", Egress, ipv4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, UDP, &udp(68, 67)), true, Reason::Dhcp),
        case("DHCP offer", Ingress, ipv4(any4, Ipv4Addr::BROADCAST, UDP, &udp(67, 68)), true, Reason::Dhcp),
        case("DHCP server reply going out", Egress, ipv4(LOCAL4, any4, UDP, &udp(67, 68)), false, Reason::Policy),
        case("DHCPv6 solicit", Egress, ipv6(LINK_LOCAL6, "ff02::1:2".parse().unwrap(), UDP, &udp(546, 547)), true, Reason::Dhcp),
        case("DHCPv6 advertise", Ingress, ipv6(LINK_LOCAL6, LINK_LOCAL6, UDP, &udp(547, 546)), true, Reason::Dhcp),
    ];
    run_cases(&mut fx, &cases);
}

#[test]
#[rustfmt::skip] // tables of cases read best one case a line
fn essentials_follow_their_flags() {
    let mut fx = Fixture::load();
    fx.install(0, GenConfig { generation: 3, flags: abi::F_ENFORCE, ..GenConfig::default() }, &test_tables());
    fx.activate(0);
    let mut arp = vec![0u8; 28];
    arp[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    let cases = [
        case("ARP switched off", Hook::Ingress, ether(ETH_P_ARP, &arp), false, Reason::Arp),
        case("ICMP errors switched off", Hook::Ingress, ipv4(OTHER4, LOCAL4, ICMP, &icmp(3)), false, Reason::Policy),
        case("DHCP switched off", Hook::Egress, ipv4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, UDP, &udp(68, 67)), false, Reason::Policy),
        case("ND switched off", Hook::Ingress, ipv6_raw(LINK_LOCAL6, ALL_NODES6, ICMPV6, 255, &icmp(134)), false, Reason::Policy),
        case("no ethertype listed", Hook::Ingress, ether(LISTED_ETHERTYPE, &[0; 46]), false, Reason::Ethertype),
    ];
    run_cases(&mut fx, &cases);
}

#[test]
fn no_generation_fails_closed() {
    let mut fx = Fixture::load();
    let syn = ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 443, SYN));
    let mut arp = vec![0u8; 28];
    arp[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    // Fresh maps: ag_active = 0 and ag_gen_cfg[0].generation = 0.
    fx.expect("fresh maps", Hook::Egress, &syn, false, VERDICT_DROP, Reason::NoPolicy);
    fx.expect(
        "fresh maps, ARP",
        Hook::Ingress,
        &arp,
        false,
        VERDICT_DROP,
        Reason::NoPolicy,
    );

    // Tables in place but the generation still 0: a half-loaded slot.
    fx.install(0, config(0, abi::F_ENFORCE | ALL_ESSENTIALS), &test_tables());
    fx.expect(
        "generation 0",
        Hook::Egress,
        &syn,
        false,
        VERDICT_DROP,
        Reason::NoPolicy,
    );

    // A slot number out of range.
    fx.install(0, config(1, abi::F_ENFORCE | ALL_ESSENTIALS), &test_tables());
    fx.activate(7);
    fx.expect(
        "active slot out of range",
        Hook::Ingress,
        &syn,
        false,
        VERDICT_DROP,
        Reason::NoPolicy,
    );
    fx.activate(0);
    fx.expect(
        "slot 0 complete",
        Hook::Egress,
        &syn,
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
}

#[test]
fn slot_flip_switches_the_whole_policy() {
    let mut fx = enforcing_fixture();
    let to_service = ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 443, SYN));
    let to_other = ipv4(LOCAL4, OTHER4, TCP, &tcp(40000, 443, SYN));
    let mut next = Tables::default();
    next.v4_host
        .push((OTHER4, vec![rule(abi::PROTO_TCP, abi::SLOT_OUT_REMOTE, 443, 443)]));
    fx.install(1, config(2, abi::F_ENFORCE | ALL_ESSENTIALS), &next);

    fx.expect(
        "slot 0 allows the service",
        Hook::Egress,
        &to_service,
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
    fx.expect(
        "slot 0 denies the other",
        Hook::Egress,
        &to_other,
        false,
        VERDICT_DROP,
        Reason::Policy,
    );
    fx.activate(1);
    fx.expect(
        "slot 1 denies the service",
        Hook::Egress,
        &to_service,
        false,
        VERDICT_DROP,
        Reason::Policy,
    );
    fx.expect(
        "slot 1 allows the other",
        Hook::Egress,
        &to_other,
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
    let events = fx.drain_events();
    assert_eq!(
        events.last().map(|e| e.generation),
        Some(2),
        "the drop event names generation 2"
    );
}

#[test]
fn monitor_mode_counts_but_passes() {
    let mut fx = Fixture::load();
    fx.install(0, config(5, ALL_ESSENTIALS), &test_tables());
    fx.activate(0);
    let denied = ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 444, SYN));
    let truncated = ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 443, SYN))[..30].to_vec();
    fx.expect(
        "monitor: denied by policy",
        Hook::Egress,
        &denied,
        true,
        VERDICT_DROP,
        Reason::Policy,
    );
    fx.expect(
        "monitor: truncated",
        Hook::Ingress,
        &truncated,
        true,
        VERDICT_DROP,
        Reason::Truncated,
    );

    let events = fx.drain_events();
    assert_eq!(events.len(), 2, "one event per would-drop: {events:?}");
    let e = &events[0];
    assert_eq!(
        (e.enforced, e.direction, e.reason),
        (0, DIR_EGRESS, Reason::Policy as u8)
    );
    assert_eq!(events[1].enforced, 0);
    assert_eq!(events[1].reason, Reason::Truncated as u8);
}

#[test]
fn drop_events_carry_the_packet() {
    let mut fx = enforcing_fixture();
    fx.expect(
        "allowed",
        Hook::Egress,
        &ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 443, SYN)),
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
    assert!(fx.drain_events().is_empty(), "a pass makes no event");

    let pkt = vlan_ether(
        &[ETH_P_8021Q],
        ETH_P_IP,
        &ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 444, SYN))[14..],
    );
    fx.expect("denied", Hook::Egress, &pkt, false, VERDICT_DROP, Reason::Policy);
    let v6 = ipv6(SERVICE6, LOCAL6, UDP, &udp(53, 40000));
    fx.expect("denied v6", Hook::Ingress, &v6, false, VERDICT_DROP, Reason::Policy);

    let events = fx.drain_events();
    assert_eq!(events.len(), 2, "{events:?}");
    let e = events[0];
    assert_eq!(e.generation, 1);
    assert_eq!(
        (e.direction, e.reason, e.enforced, e.family),
        (DIR_EGRESS, Reason::Policy as u8, 1, 4)
    );
    assert_eq!((e.ethertype, e.l4proto, e.sport, e.dport), (ETH_P_IP, TCP, 40000, 444));
    assert_eq!(&e.saddr[..4], &LOCAL4.octets());
    assert_eq!(&e.daddr[..4], &SERVICE4.octets());
    assert_eq!(&e.saddr[4..], &[0; 12], "IPv4 leaves the rest of the address zero");
    assert_eq!(&e.daddr[4..], &[0; 12]);
    assert_ne!(e.ts_ns, 0);

    let e = events[1];
    assert_eq!(
        (e.direction, e.family, e.ethertype, e.l4proto),
        (DIR_INGRESS, 6, ETH_P_IPV6, UDP)
    );
    assert_eq!((e.sport, e.dport), (53, 40000));
    assert_eq!(e.saddr, SERVICE6.octets());
    assert_eq!(e.daddr, LOCAL6.octets());
}

#[test]
fn drop_events_are_rate_limited() {
    let burst = 3u64;
    let rate = 1u64; // per second: nothing refills during the test
    let mut fx = Fixture::load_with_globals(&[(abi::global::EVENT_BURST, burst), (abi::global::EVENT_RATE, rate)]);
    fx.install(0, config(1, abi::F_ENFORCE | ALL_ESSENTIALS), &test_tables());
    fx.activate(0);
    let denied = ipv4(LOCAL4, OTHER4, TCP, &tcp(40000, 443, SYN));
    for _ in 0..10 {
        fx.expect("denied", Hook::Egress, &denied, false, VERDICT_DROP, Reason::Policy);
    }
    let events = fx.drain_events();
    // Test runs may hop between CPUs, each with its own bucket.
    let cpus = aya::util::nr_cpus().expect("count CPUs") as u64;
    let suppressed = fx.misc(abi::MISC_EVENTS_SUPPRESSED);
    assert_eq!(
        events.len() as u64 + suppressed,
        10,
        "every drop is an event or counted as suppressed"
    );
    assert!(
        events.len() as u64 >= burst && events.len() as u64 <= burst * cpus,
        "{} events",
        events.len()
    );
    assert_eq!(fx.misc(abi::MISC_EVENTS_LOST), 0);
}

#[test]
fn bytes_count_the_whole_frame() {
    let mut fx = enforcing_fixture();
    let mut big = ipv4(LOCAL4, SERVICE4, TCP, &cat(&[&tcp(40000, 443, ACK), &[0xab; 1200]]));
    fx.expect(
        "egress with payload",
        Hook::Egress,
        &big,
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
    big = ipv4(SERVICE4, LOCAL4, TCP, &cat(&[&tcp(443, 40000, ACK), &[0xab; 1200]]));
    fx.expect(
        "ingress with payload",
        Hook::Ingress,
        &big,
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
}

/// The v4 and v6 lookups must stay separate calls with constant map pointers, so
/// that the verifier turns each into a direct call of the hash or trie lookup.
/// Needs bpftool; skipped (with a note) without it.
#[test]
fn map_lookups_are_direct_calls() {
    let fx = enforcing_fixture();
    for name in [abi::PROG_INGRESS, abi::PROG_EGRESS] {
        let id = fx.bpf.program(name).unwrap().info().expect("program info").id();
        let Some(xlated) = bpftool_xlated(id) else {
            eprintln!("note: bpftool not found, not checking the translated code of {name}");
            return;
        };
        let lines: Vec<&str> = xlated.lines().collect();
        let generic: Vec<String> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("call bpf_map_lookup_elem"))
            .map(|(i, _)| lines[i.saturating_sub(12)..=i].join("\n"))
            .collect();
        assert!(
            generic.is_empty(),
            "{name}: generic map lookups left after verification:\n{}",
            generic.join("\n")
        );
        assert!(
            xlated.contains("trie_lookup_elem"),
            "{name}: no direct LPM trie lookup in\n{xlated}"
        );
        assert!(
            xlated.contains("htab_map_lookup_elem"),
            "{name}: no direct hash lookup in\n{xlated}"
        );
    }
}

/// The verifier walks each program in well under its 1M-instruction budget
/// (about 205k and 217k on kernel 6.18, with connection tracking's window checks). A change that multiplies the paths it
/// has to walk shows up here long before an older kernel refuses to load it.
#[test]
fn verifier_cost_stays_far_below_the_limit() {
    const BUDGET: u32 = 250_000;
    let fx = Fixture::load();
    for name in [abi::PROG_INGRESS, abi::PROG_EGRESS] {
        let info = fx.bpf.program(name).unwrap().info().expect("program info");
        let Some(verified) = info.verified_instruction_count() else {
            eprintln!("note: this kernel does not report verified instructions");
            return;
        };
        eprintln!("{name}: the verifier walked {verified} instructions");
        assert!(
            verified < BUDGET,
            "{name}: the verifier walked {verified} instructions, budget {BUDGET}"
        );
    }
}

fn bpftool_xlated(id: u32) -> Option<String> {
    let out = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string()])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "bpftool prog dump xlated id {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("bpftool prints UTF-8"))
}

// ---------------------------------------------------------------------------
// Learned addresses and held DNS answers
// ---------------------------------------------------------------------------

/// `expires_ns` / heartbeats on the bpf_ktime_get_ns() clock: no run of the test
/// is at nanosecond 1 of the boot, nor past u64::MAX.
const FOREVER: u64 = u64::MAX;
const LONG_AGO: u64 = 1;

const DYN4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50); // in no table
const DYN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x50);
/// A resolver the tables let answer (the /24's udp/53 return path).
const RESOLVER4: Ipv4Addr = NET4_HOST;
/// Next to it: the tables let it answer too, but it is no configured resolver.
const NOT_RESOLVER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 8);
const RESOLVER6: Ipv6Addr = NET6_HOST;
const LO_IFINDEX: u32 = 1;

fn mapped(addr: Ipv4Addr) -> [u8; 16] {
    addr.to_ipv6_mapped().octets()
}

fn dyn_value(rules: &[PortRule], expires_ns: u64) -> DynValue {
    DynValue {
        policy: value(rules),
        expires_ns,
    }
}

/// A UDP DNS answer from `src`:53 to `dst`:`client_port` with DNS id `id`.
fn answer4(src: Ipv4Addr, dst: Ipv4Addr, id: u16, client_port: u16, body: usize) -> Vec<u8> {
    let payload = cat(&[&udp(53, client_port), &id.to_be_bytes(), &vec![0xab; body]]);
    ipv4(src, dst, UDP, &payload)
}

fn answer6(src: Ipv6Addr, dst: Ipv6Addr, id: u16, client_port: u16) -> Vec<u8> {
    let payload = cat(&[&udp(53, client_port), &id.to_be_bytes(), &[0xcd; 30]]);
    ipv6(src, dst, UDP, &payload)
}

/// A UDP DNS query from LOCAL4:`client_port` to `dst`:53 with DNS id `id`.
fn query4(dst: Ipv4Addr, id: u16, client_port: u16) -> Vec<u8> {
    let payload = cat(&[&udp(client_port, 53), &id.to_be_bytes(), &[0x01; 20]]);
    ipv4(LOCAL4, dst, UDP, &payload)
}

fn query6(dst: Ipv6Addr, id: u16, client_port: u16) -> Vec<u8> {
    let payload = cat(&[&udp(client_port, 53), &id.to_be_bytes(), &[0x01; 20]]);
    ipv6(LOCAL6, dst, UDP, &payload)
}

fn query_key(server: [u8; 16], dns_id: u16, client_port: u16) -> DnsReleaseKey {
    DnsReleaseKey {
        server,
        dns_id,
        client_port,
    }
}

/// A frame as the agent reads it off ag_dns_frames.
#[derive(Debug)]
struct HeldFrame {
    ifindex: u32,
    /// Dropped for the agent to give back (else it passed and this is a copy).
    held: bool,
    data: Vec<u8>,
}

impl Fixture {
    fn set_dyn4(&mut self, addr: Ipv4Addr, value: DynValue) {
        HashMap::<_, V4HostKey, DynValue>::try_from(self.map_mut(map::V4_DYN))
            .expect("ag_v4_dyn is a hash of V4HostKey -> DynValue")
            .insert(V4HostKey { addr: addr.octets() }, value, 0)
            .expect("insert into ag_v4_dyn");
    }

    fn set_dyn6(&mut self, addr: Ipv6Addr, value: DynValue) {
        HashMap::<_, V6HostKey, DynValue>::try_from(self.map_mut(map::V6_DYN))
            .expect("ag_v6_dyn is a hash of V6HostKey -> DynValue")
            .insert(V6HostKey { addr: addr.octets() }, value, 0)
            .expect("insert into ag_v6_dyn");
    }

    fn add_dns_server(&mut self, addr: [u8; 16]) {
        HashMap::<_, DnsServerKey, u8>::try_from(self.map_mut(map::DNS_SERVERS))
            .expect("ag_dns_servers is a hash of DnsServerKey -> u8")
            .insert(DnsServerKey { addr }, 1, 0)
            .expect("insert into ag_dns_servers");
    }

    /// A learner whose give-back path is in force (any but NONE holds).
    fn set_heartbeat(&mut self, heartbeat_ns: u64, stale_after_ns: u64) {
        self.set_dns_ctl(heartbeat_ns, stale_after_ns, abi::GIVE_BACK_LOOPBACK);
    }

    fn set_dns_ctl(&mut self, heartbeat_ns: u64, stale_after_ns: u64, give_back: u32) {
        Array::<_, DnsCtl>::try_from(self.map_mut(map::DNS_CTL))
            .expect("ag_dns_ctl is an array of DnsCtl")
            .set(
                0,
                DnsCtl {
                    heartbeat_ns,
                    stale_after_ns,
                    give_back,
                    ..DnsCtl::default()
                },
                0,
            )
            .expect("write ag_dns_ctl");
    }

    fn release_map(&mut self) -> HashMap<&mut MapData, DnsReleaseKey, u8> {
        HashMap::try_from(self.map_mut(map::DNS_RELEASE)).expect("ag_dns_release is a hash of DnsReleaseKey -> u8")
    }

    fn queries_map(&mut self) -> HashMap<&mut MapData, DnsReleaseKey, u64> {
        HashMap::try_from(self.map_mut(map::DNS_QUERIES)).expect("ag_dns_queries is a hash of DnsReleaseKey -> u64")
    }

    /// The time ag_dns_queries holds for this query, if it holds it.
    fn query_sent(&mut self, key: DnsReleaseKey) -> Option<u64> {
        self.queries_map().get(&key, 0).ok()
    }

    fn n_queries(&mut self) -> usize {
        self.queries_map()
            .keys()
            .inspect(|k| assert!(k.is_ok(), "read ag_dns_queries"))
            .count()
    }

    /// Runs a query through TC egress, which the tables let pass.
    #[track_caller]
    fn send_query(&mut self, name: &str, pkt: &[u8]) {
        self.expect(name, Hook::Egress, pkt, true, VERDICT_PASS, Reason::Policy);
    }

    fn drain_frames(&mut self) -> Vec<HeldFrame> {
        let mut ring = RingBuf::try_from(self.map_mut(map::DNS_FRAMES)).expect("ag_dns_frames is a ring buffer");
        let mut frames = Vec::new();
        while let Some(item) = ring.next() {
            let header = std::mem::size_of::<abi::DnsFrameHeader>();
            assert_eq!(
                item.len(),
                header + abi::DNS_FRAME_MAX,
                "record size: struct ag_dns_frame"
            );
            let ifindex = u32::from_ne_bytes(item[0..4].try_into().unwrap());
            let len = u32::from_ne_bytes(item[4..8].try_into().unwrap()) as usize;
            let held = u32::from_ne_bytes(item[8..12].try_into().unwrap());
            assert!(len <= abi::DNS_FRAME_MAX, "len {len}");
            assert!(held <= 1, "held is a flag: {held}");
            frames.push(HeldFrame {
                ifindex,
                held: held == 1,
                data: item[header..header + len].to_vec(),
            });
        }
        frames
    }

    /// Runs a DNS answer through XDP: the core counts it as a pass either way;
    /// `held` says whether it went to the ring (XDP_DROP) instead of the stack.
    #[track_caller]
    fn expect_dns(&mut self, name: &str, pkt: &[u8], held: bool) {
        let held_before = self.misc(abi::MISC_DNS_HELD);
        self.expect(name, Hook::Ingress, pkt, !held, VERDICT_PASS, Reason::Policy);
        assert_eq!(
            self.misc(abi::MISC_DNS_HELD) - held_before,
            u64::from(held),
            "{name}: DNS_HELD counts each held answer"
        );
        let frames = self.drain_frames();
        if held {
            assert_eq!(frames.len(), 1, "{name}: one frame on the ring");
            assert!(frames[0].held, "{name}: marked held");
            assert_eq!(frames[0].ifindex, self.ingress_ifindex, "{name}: ifindex");
            assert_eq!(frames[0].data, pkt, "{name}: the whole frame, from its Ethernet header");
        } else {
            assert!(frames.is_empty(), "{name}: nothing on the ring: {frames:?}");
        }
    }
}

#[test]
#[rustfmt::skip] // tables of cases read best one case a line
fn learned_addresses_allow_what_the_tables_do_not() {
    use Hook::{Egress, Ingress};
    use Reason::Policy;
    let mut fx = enforcing_fixture();
    let egress = abi::SLOT_OUT_REMOTE | abi::SLOT_IN_REMOTE;
    let syn443_4 = ipv4(LOCAL4, DYN4, TCP, &tcp(40000, 443, SYN));
    let syn443_6 = ipv6(LOCAL6, DYN6, TCP, &tcp(40000, 443, SYN));

    run_cases(&mut fx, &[
        case("v4: nothing learned yet", Egress, syn443_4.clone(), false, Policy),
        case("v6: nothing learned yet", Egress, syn443_6.clone(), false, Policy),
    ]);

    fx.set_dyn4(DYN4, dyn_value(&[rule(abi::PROTO_TCP, egress, 443, 443)], FOREVER));
    fx.set_dyn6(DYN6, dyn_value(&[rule(abi::PROTO_TCP, egress, 443, 443)], FOREVER));
    // The tables allow SERVICE4 tcp/443 only; a learned entry adds 8443.
    fx.set_dyn4(SERVICE4, dyn_value(&[rule(abi::PROTO_TCP, egress, 8443, 8443)], FOREVER));
    run_cases(&mut fx, &[
        case("v4: learned address, its port", Egress, syn443_4.clone(), true, Policy),
        case("v4: learned address, another port", Egress, ipv4(LOCAL4, DYN4, TCP, &tcp(40000, 444, SYN)), false, Policy),
        case("v4: learned address, tcp-only rule", Egress, ipv4(LOCAL4, DYN4, UDP, &udp(40000, 443)), false, Policy),
        case("v4: return path of a learned address", Ingress, ipv4(DYN4, LOCAL4, TCP, &tcp(443, 40000, SYN_ACK)), true, Policy),
        case("v4: the return path opens nothing", Ingress, ipv4(DYN4, LOCAL4, TCP, &tcp(443, 40000, SYN)), false, Policy),
        case("v4: non-first fragment to a learned address", Egress, V4 { frag: 100, ..V4::new(LOCAL4, DYN4, TCP) }.build(&[0; 16]), true, Policy),
        case("v4: a table entry whose ports do not allow it", Egress, ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 8443, SYN)), true, Policy),
        case("v4: the table entry's own port still passes", Egress, ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 443, SYN)), true, Policy),
        case("v4: neither allows it", Egress, ipv4(LOCAL4, SERVICE4, TCP, &tcp(40000, 8444, SYN)), false, Policy),
        case("v6: learned address, its port", Egress, syn443_6.clone(), true, Policy),
        case("v6: learned address, another port", Egress, ipv6(LOCAL6, DYN6, TCP, &tcp(40000, 444, SYN)), false, Policy),
        case("v6: return path of a learned address", Ingress, ipv6(DYN6, LOCAL6, TCP, &tcp(443, 40000, ACK)), true, Policy),
        case("v6: non-first fragment to a learned address", Egress, ipv6(LOCAL6, DYN6, 44, &cat(&[&v6_frag(TCP, 10, false), &[0; 16]])), true, Policy),
    ]);

    fx.set_dyn4(DYN4, dyn_value(&[rule(abi::PROTO_TCP, egress, 443, 443)], LONG_AGO));
    fx.set_dyn6(DYN6, dyn_value(&[rule(abi::PROTO_TCP, egress, 443, 443)], LONG_AGO));
    run_cases(&mut fx, &[
        case("v4: expired", Egress, syn443_4, false, Policy),
        case("v6: expired", Egress, syn443_6, false, Policy),
    ]);

    // An incomplete generation fails closed, learned addresses or not.
    fx.set_dyn4(DYN4, dyn_value(&[rule(abi::PROTO_TCP, egress, 443, 443)], FOREVER));
    fx.activate(1);
    fx.expect("no generation", Egress, &ipv4(LOCAL4, DYN4, TCP, &tcp(40000, 443, SYN)), false, VERDICT_DROP, Reason::NoPolicy);
}

#[test]
fn dns_answers_are_held_while_the_learner_lives() {
    let mut fx = enforcing_fixture();
    fx.ingress_ifindex = LO_IFINDEX;
    fx.add_dns_server(mapped(RESOLVER4));
    fx.add_dns_server(RESOLVER6.octets());
    let answer = answer4(RESOLVER4, LOCAL4, 0x1234, 40000, 40);
    let answer_v6 = answer6(RESOLVER6, LOCAL6, 0xbeef, 40001);

    fx.expect_dns("heartbeat 0 (never set)", &answer, false);
    fx.set_heartbeat(0, FOREVER);
    fx.expect_dns("heartbeat 0", &answer, false);
    fx.set_heartbeat(LONG_AGO, 1);
    fx.expect_dns("stale heartbeat", &answer, false);

    fx.set_heartbeat(LONG_AGO, FOREVER);
    let query = query4(RESOLVER4, 0x1234, 40000);
    let query_v6 = query6(RESOLVER6, 0xbeef, 40001);
    fx.send_query("v4 query", &query);
    fx.expect_dns("v4 answer, fresh heartbeat", &answer, true);
    fx.send_query("v6 query", &query_v6);
    fx.expect_dns("v6 answer, fresh heartbeat", &answer_v6, true);
    fx.expect_dns(
        "not a configured resolver",
        &answer4(NOT_RESOLVER4, LOCAL4, 0x1234, 40000, 40),
        false,
    );
    fx.expect_dns(
        "a v6 address ending in the v4 resolver's bytes is no resolver",
        &answer6(
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0xc633, 0x6407),
            LOCAL6,
            1,
            40000,
        ),
        false,
    );
    fx.expect_dns(
        "payload shorter than a DNS id",
        &ipv4(RESOLVER4, LOCAL4, UDP, &cat(&[&udp(53, 40000), &[0x12]])),
        false,
    );
    fx.expect_dns("empty payload", &ipv4(RESOLVER4, LOCAL4, UDP, &udp(53, 40000)), false);
    fx.expect_dns(
        "first fragment",
        &V4 {
            frag: IPV4_MF,
            ..V4::new(RESOLVER4, LOCAL4, UDP)
        }
        .build(&cat(&[&udp(53, 40000), &[0x12, 0x34]])),
        false,
    );
    fx.send_query("query for the VLAN answer", &query);
    fx.expect_dns(
        "answer with IP options and a VLAN tag",
        &vlan_ether(
            &[ETH_P_8021Q],
            ETH_P_IP,
            &V4 {
                options: vec![1, 1, 1, 0],
                ..V4::new(RESOLVER4, LOCAL4, UDP)
            }
            .build(&cat(&[&udp(53, 40000), &[0x12, 0x34, 0, 0]]))[14..],
        ),
        true,
    );
    fx.send_query(
        "query for the extension-header answer",
        &query6(RESOLVER6, 0x1234, 40000),
    );
    fx.expect_dns(
        "v6 answer after extension headers",
        &ipv6(
            RESOLVER6,
            LOCAL6,
            0,
            &cat(&[&v6_opt(60), &v6_opt(UDP), &udp(53, 40000), &[0x12, 0x34]]),
        ),
        true,
    );

    // A frame the agent gives back passes once, and its key goes.
    let key = DnsReleaseKey {
        server: mapped(RESOLVER4),
        dns_id: 0x1234,
        client_port: 40000,
    };
    let other_port = DnsReleaseKey {
        client_port: 40002,
        ..key
    };
    let mut release = fx.release_map();
    release.insert(key, 1, 0).expect("insert a release key");
    release.insert(other_port, 1, 0).expect("insert a release key");
    fx.expect_dns("released", &answer, false);
    let release = fx.release_map();
    assert!(release.get(&key, 0).is_err(), "the release key is gone after one use");
    assert!(release.get(&other_port, 0).is_ok(), "other keys stay");
    fx.send_query("query again", &query);
    fx.expect_dns("released only once", &answer, true);

    // Too long to hold whole: passed and counted unheld.
    let unheld = fx.misc(abi::MISC_DNS_UNHELD);
    let big = answer4(RESOLVER4, LOCAL4, 0x1234, 40000, abi::DNS_FRAME_MAX);
    fx.send_query("query for the long answer", &query);
    fx.expect_dns("longer than AG_DNS_FRAME_MAX", &big, false);
    assert_eq!(fx.misc(abi::MISC_DNS_UNHELD), unheld + 1, "DNS_UNHELD counts it");
    let longest = answer4(RESOLVER4, LOCAL4, 0x1234, 40000, abi::DNS_FRAME_MAX - 14 - 20 - 8 - 2);
    assert_eq!(longest.len(), abi::DNS_FRAME_MAX);
    fx.send_query("query for the longest answer", &query);
    fx.expect_dns("exactly AG_DNS_FRAME_MAX", &longest, true);

    // Not an answer, or not ingress.
    fx.expect(
        "from another port",
        Hook::Ingress,
        &ipv4(RESOLVER4, LOCAL4, UDP, &cat(&[&udp(54, 53), &[0x12, 0x34]])),
        false, // the tables allow udp/53 only: nothing here allows it
        VERDICT_DROP,
        Reason::Policy,
    );
    fx.add_dns_server(mapped(LOCAL4));
    fx.expect(
        "egress never holds",
        Hook::Egress,
        &ipv4(LOCAL4, RESOLVER4, UDP, &cat(&[&udp(53, 53), &[0x12, 0x34]])),
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
    assert!(fx.drain_frames().is_empty());
    assert_eq!(fx.misc(abi::MISC_DNS_UNHELD), unheld + 1);
}

#[test]
fn without_a_give_back_path_answers_pass_at_once_and_the_learner_gets_a_copy() {
    let mut fx = enforcing_fixture();
    fx.ingress_ifindex = LO_IFINDEX;
    fx.add_dns_server(mapped(RESOLVER4));
    let answer = answer4(RESOLVER4, LOCAL4, 0x1234, 40000, 40);
    // Control: with a give-back path in force the same answer is held.
    fx.set_heartbeat(LONG_AGO, FOREVER);
    fx.send_query("query", &query4(RESOLVER4, 0x1234, 40000));
    fx.expect_dns("held while a give-back path is in force", &answer, true);

    fx.set_dns_ctl(LONG_AGO, FOREVER, abi::GIVE_BACK_NONE);
    let (held, passed) = (fx.misc(abi::MISC_DNS_HELD), fx.misc(abi::MISC_DNS_PASSED));
    fx.send_query("query again", &query4(RESOLVER4, 0x1234, 40000));
    fx.expect(
        "no give-back path",
        Hook::Ingress,
        &answer,
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
    let frames = fx.drain_frames();
    assert_eq!(frames.len(), 1, "a copy for the learner");
    assert!(!frames[0].held, "marked as a copy: the agent must not give it back");
    assert_eq!(frames[0].data, answer, "the whole frame");
    assert_eq!(fx.misc(abi::MISC_DNS_HELD), held, "not held");
    assert_eq!(fx.misc(abi::MISC_DNS_PASSED), passed + 1, "DNS_PASSED counts it");
    // One copy per query, as one hold per query: a second answer teaches nothing.
    fx.expect(
        "second answer",
        Hook::Ingress,
        &answer,
        true,
        VERDICT_PASS,
        Reason::Policy,
    );
    assert!(fx.drain_frames().is_empty(), "no copy of an answer to no query");
    // No learner at all: neither held nor copied.
    fx.set_dns_ctl(0, FOREVER, abi::GIVE_BACK_LOOPBACK);
    fx.send_query("query once more", &query4(RESOLVER4, 0x1234, 40000));
    fx.expect("no learner", Hook::Ingress, &answer, true, VERDICT_PASS, Reason::Policy);
    assert!(fx.drain_frames().is_empty(), "nothing copied without a learner");
}

#[test]
fn dns_answers_are_held_in_monitor_mode_and_never_lost_to_a_full_ring() {
    let mut fx = Fixture::load();
    fx.install(0, config(1, ALL_ESSENTIALS), &test_tables());
    fx.activate(0);
    fx.add_dns_server(mapped(OTHER4));
    fx.set_heartbeat(LONG_AGO, FOREVER);
    // The tables don't allow OTHER4: monitor mode passes it, counted as a would-drop.
    let answer = answer4(OTHER4, LOCAL4, 7, 40000, 100);
    let query = query4(OTHER4, 7, 40000);
    assert!(
        fx.run("monitor-mode query", Hook::Egress, &query),
        "monitor mode passes the query"
    );
    assert!(
        fx.query_sent(query_key(mapped(OTHER4), 7, 40000)).is_some(),
        "and notes it"
    );
    let held_before = fx.misc(abi::MISC_DNS_HELD);
    fx.expect(
        "monitor mode",
        Hook::Ingress,
        &answer,
        false,
        VERDICT_DROP,
        Reason::Policy,
    );
    assert_eq!(fx.misc(abi::MISC_DNS_HELD), held_before + 1, "held in monitor mode");
    assert_eq!(fx.drain_frames().len(), 1);
    fx.drain_events();

    // Fill the 1 MiB ring (about 675 frames) without reading it.
    let mut held = 0;
    loop {
        assert!(fx.run("a query per answer", Hook::Egress, &query));
        if fx.run("filling the ring", Hook::Ingress, &answer) {
            break;
        }
        held += 1;
        assert!(held < 2000, "the ring never filled");
    }
    assert!(held > 600, "the ring held only {held} frames");
    assert_eq!(fx.misc(abi::MISC_DNS_UNHELD), 1, "the answer the full ring refused");
    assert_eq!(fx.drain_frames().len(), held);
    assert_eq!(fx.misc(abi::MISC_DNS_UNSOLICITED), 0, "every answer had its query");
    assert!(fx.run("query once drained", Hook::Egress, &query));
    assert!(
        !fx.run("ring drained", Hook::Ingress, &answer),
        "held again once drained"
    );
}

#[test]
fn dns_answers_are_held_only_for_queries_this_host_sent() {
    let mut fx = enforcing_fixture();
    fx.ingress_ifindex = LO_IFINDEX;
    fx.add_dns_server(mapped(RESOLVER4));
    fx.add_dns_server(RESOLVER6.octets());
    fx.add_dns_server(mapped(OTHER4)); // a resolver the tables don't let us reach
    fx.set_heartbeat(LONG_AGO, FOREVER);
    let answer = answer4(RESOLVER4, LOCAL4, 0x1234, 40000, 40);
    let key = query_key(mapped(RESOLVER4), 0x1234, 40000);
    let unsolicited = |fx: &Fixture| fx.misc(abi::MISC_DNS_UNSOLICITED);

    // Forged or late: no query asked for it.
    fx.expect_dns("answer without a query", &answer, false);
    assert_eq!(unsolicited(&fx), 1, "DNS_UNSOLICITED counts it");

    // TC egress notes the query; its answer is held, once.
    fx.send_query("v4 query", &query4(RESOLVER4, 0x1234, 40000));
    let sent = fx.query_sent(key).expect("TC egress noted the query");
    assert!(sent > LONG_AGO, "noted with the time it left: {sent}");
    fx.expect_dns(
        "answer to other id",
        &answer4(RESOLVER4, LOCAL4, 0x1235, 40000, 40),
        false,
    );
    fx.expect_dns(
        "answer to other port",
        &answer4(RESOLVER4, LOCAL4, 0x1234, 40001, 40),
        false,
    );
    assert_eq!(unsolicited(&fx), 3);
    assert!(fx.query_sent(key).is_some(), "answers to other queries leave it");
    fx.expect_dns("answer to the query", &answer, true);
    assert!(fx.query_sent(key).is_none(), "the answer takes its query away");
    assert_eq!(unsolicited(&fx), 3);
    fx.expect_dns("second answer to the same query", &answer, false);
    assert_eq!(unsolicited(&fx), 4);

    // A retry with the same id and port is a query again.
    fx.send_query("retry", &query4(RESOLVER4, 0x1234, 40000));
    fx.expect_dns("answer to the retry", &answer, true);

    // IPv6.
    let key6 = query_key(RESOLVER6.octets(), 0xbeef, 40001);
    fx.send_query("v6 query", &query6(RESOLVER6, 0xbeef, 40001));
    assert!(fx.query_sent(key6).is_some(), "v6 query noted");
    fx.expect_dns(
        "v6 answer to the query",
        &answer6(RESOLVER6, LOCAL6, 0xbeef, 40001),
        true,
    );
    assert!(fx.query_sent(key6).is_none());
    fx.expect_dns("v6 second answer", &answer6(RESOLVER6, LOCAL6, 0xbeef, 40001), false);

    // Older than the TTL (or from the future): passes, teaches nothing, and goes.
    let unsolicited_before = unsolicited(&fx);
    fx.queries_map().insert(key, LONG_AGO, 0).expect("insert an old query");
    fx.expect_dns("answer to a query older than the TTL", &answer, false);
    assert!(fx.query_sent(key).is_none(), "the expired query goes");
    fx.queries_map()
        .insert(key, u64::MAX, 0)
        .expect("insert a query from the future");
    fx.expect_dns("answer to a query from the future", &answer, false);
    assert_eq!(unsolicited(&fx), unsolicited_before + 2);
    // A fresh time put there directly holds.
    let now = fx_now(&mut fx);
    fx.queries_map().insert(key, now, 0).expect("insert a fresh query");
    fx.expect_dns("answer to a query inserted directly", &answer, true);

    // What TC egress does not note.
    assert_eq!(fx.n_queries(), 0);
    fx.send_query("query to a non-resolver", &query4(NOT_RESOLVER4, 0x1234, 40000));
    // (The tables let the v6 resolver's /48 take any port.)
    fx.send_query(
        "not to port 53",
        &ipv6(LOCAL6, RESOLVER6, UDP, &cat(&[&udp(40000, 54), &[0x12, 0x34]])),
    );
    fx.send_query(
        "payload shorter than a DNS id",
        &ipv4(LOCAL4, RESOLVER4, UDP, &cat(&[&udp(40000, 53), &[0x12]])),
    );
    fx.send_query("empty payload", &ipv4(LOCAL4, RESOLVER4, UDP, &udp(40000, 53)));
    fx.send_query(
        "first fragment",
        &V4 {
            frag: IPV4_MF,
            ..V4::new(LOCAL4, RESOLVER4, UDP)
        }
        .build(&cat(&[&udp(40000, 53), &[0x12, 0x34]])),
    );
    fx.expect(
        "a query the core drops",
        Hook::Egress,
        &query4(OTHER4, 0x1234, 40000),
        false,
        VERDICT_DROP,
        Reason::Policy,
    );
    assert_eq!(fx.n_queries(), 0, "none of those were noted");
    // A query is noted whether or not the learner lives (connection tracking matches
    // answers by it too); an answer is held only while the learner lives.
    fx.set_heartbeat(LONG_AGO, 1);
    fx.send_query("stale heartbeat", &query4(RESOLVER4, 0x1234, 40000));
    assert_eq!(fx.n_queries(), 1, "a query sent while the learner was stale is noted");
    fx.expect_dns("answer while the learner is stale", &answer, false);
    fx.set_heartbeat(LONG_AGO, FOREVER);
    fx.expect_dns(
        "answer from a non-resolver",
        &answer4(NOT_RESOLVER4, LOCAL4, 0x1234, 40000, 40),
        false,
    );
}

/// bpf_ktime_get_ns() now, as TC egress reads it: the time it notes for a query.
fn fx_now(fx: &mut Fixture) -> u64 {
    let key = query_key(mapped(RESOLVER4), 0xffff, 1);
    fx.send_query("a query to read the clock", &query4(RESOLVER4, 0xffff, 1));
    let now = fx.query_sent(key).expect("TC egress noted the clock query");
    fx.queries_map().remove(&key).expect("remove the clock query");
    now
}

#[test]
fn dns_query_ttl_is_a_load_time_setting() {
    let mut fx = Fixture::load_with_globals(&[(abi::global::DNS_QUERY_TTL, 0)]);
    fx.install(0, config(1, abi::F_ENFORCE | ALL_ESSENTIALS), &test_tables());
    fx.activate(0);
    fx.add_dns_server(mapped(RESOLVER4));
    fx.set_heartbeat(LONG_AGO, FOREVER);
    fx.send_query("query", &query4(RESOLVER4, 9, 40000));
    fx.expect_dns(
        "a TTL of 0 holds nothing",
        &answer4(RESOLVER4, LOCAL4, 9, 40000, 10),
        false,
    );
    assert_eq!(fx.misc(abi::MISC_DNS_UNSOLICITED), 1);
}
