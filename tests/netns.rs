//! End to end: the real daemon on one end of a veth pair between two namespaces made
//! here, real TCP and UDP over IPv4 and IPv6 (neighbour discovery included), monitor
//! mode, SIGKILL, a restart under a prober, and `down`. Only documentation-range
//! addresses assigned in these namespaces carry traffic.

use std::{
    collections::HashSet,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use testkit as common;

use common::{
    config::Allow,
    netns::{Servers, sa, tcp_connects, udp_echoes},
};

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");
const ALLOWED_V4: &str = "198.51.100.10";
const BLOCKED_V4: &str = "203.0.113.10";
const ALLOWED_V6: &str = "2001:db8:b::10";
const BLOCKED_V6: &str = "2001:db8:c::10";
/// How long a probe that must fail waits.
const WAIT: Duration = Duration::from_millis(700);
/// How long a probe that must succeed may take on a loaded machine.
const PASS_WAIT: Duration = Duration::from_secs(5);

/// One test's world: `testkit::world` with this file's addresses and policy (the
/// built-in catalog's EU1 portal and SIEM, and `[[allow]]` entries for the allowed
/// addresses).
struct World(common::world::World);

impl std::ops::Deref for World {
    type Target = common::world::World;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl World {
    fn new(mode: &str) -> World {
        World(common::world::World::with(
            BIN,
            &[ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6],
            |_, config| {
                config
                    .mode(mode)
                    .regions(&["eu1"])
                    .features(&["portal", "siem"])
                    .key("drop_log_interval", 1u64)
                    .allow(Allow::egress(&format!("{ALLOWED_V4}/32"), "tcp").ports(&["443"]))
                    .allow(Allow::egress(&format!("{ALLOWED_V6}/128"), "tcp").ports(&["443"]))
                    .allow(Allow::egress(&format!("{ALLOWED_V4}/32"), "udp").ports(&["7000"]))
                    .allow(Allow::egress("2001:db8:b::/48", "udp").ports(&["7000-7001"]))
            },
        ))
    }

    fn servers(&self) -> Servers {
        let tcp: Vec<SocketAddr> = [ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6]
            .iter()
            .flat_map(|a| [sa(a, 443), sa(a, 8443)])
            .collect();
        let udp: Vec<SocketAddr> = [ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6]
            .iter()
            .map(|a| sa(a, 7000))
            .collect();
        Servers::start(&self.pair.peer, &tcp, &udp)
    }

    fn allowgate(&self, args: &[&str]) -> std::process::Output {
        self.pair
            .host
            .command(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = self.allowgate(&["status", "--json"]);
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The probes of this file's policy: allowed addresses and ports pass over both
    /// families (IPv6 needs neighbour discovery), everything else is blocked, and
    /// management comes in on its port only.
    fn assert_enforced(&self) {
        let h = self.host();
        assert!(
            tcp_connects(h, sa(ALLOWED_V4, 443), PASS_WAIT),
            "allowed tcp/443 over IPv4"
        );
        assert!(
            tcp_connects(h, sa(ALLOWED_V6, 443), PASS_WAIT),
            "allowed tcp/443 over IPv6 (needs neighbour discovery)"
        );
        assert!(
            udp_echoes(h, sa(ALLOWED_V4, 7000), PASS_WAIT),
            "allowed udp/7000 over IPv4"
        );
        assert!(
            udp_echoes(h, sa(ALLOWED_V6, 7000), PASS_WAIT),
            "allowed udp/7000 over IPv6"
        );
        assert!(
            !tcp_connects(h, sa(ALLOWED_V4, 8443), WAIT),
            "an allowed address on another port"
        );
        assert!(
            !tcp_connects(h, sa(BLOCKED_V4, 443), WAIT),
            "an address no rule lists, IPv4"
        );
        assert!(
            !tcp_connects(h, sa(BLOCKED_V6, 443), WAIT),
            "an address no rule lists, IPv6"
        );
        assert!(!udp_echoes(h, sa(BLOCKED_V4, 7000), WAIT));
        assert!(!udp_echoes(h, sa(BLOCKED_V6, 7000), WAIT));

        // Management comes in; other ports do not.
        let _host_servers = Servers::start(h, &[sa("192.0.2.1", 22), sa("192.0.2.1", 2323)], &[]);
        assert!(
            tcp_connects(&self.pair.peer, sa("192.0.2.1", 22), PASS_WAIT),
            "ssh from the management CIDR"
        );
        assert!(
            !tcp_connects(&self.pair.peer, sa("192.0.2.1", 2323), WAIT),
            "another port from the management CIDR"
        );
    }
}

fn counter(status: &serde_json::Value, direction: &str, verdict: &str) -> u64 {
    status["counters"][direction][verdict]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {direction}.{verdict} in {status}"))
}

#[test]
fn the_daemon_enforces_tcp_and_udp_over_both_families() {
    let world = World::new("enforce");
    let _servers = world.servers();
    // Without the daemon everything flows: the test's reachability is real.
    assert!(tcp_connects(world.host(), sa(BLOCKED_V4, 443), PASS_WAIT));
    let daemon = world.start_daemon();

    world.assert_enforced();

    let status = world.status();
    assert_eq!(status["mode"], "enforce");
    assert_eq!(status["regions"], serde_json::json!(["eu1"]));
    assert_eq!(status["interfaces"][0]["name"], world.pair.host_if.as_str());
    assert_eq!(status["interfaces"][0]["xdp_mode"], "native", "veth has native XDP");
    assert!(status["generation"].as_u64().unwrap() >= 1);
    assert!(status["entries"]["v4"].as_u64().unwrap() > 10, "{status}");
    assert_eq!(status["entries"]["v6"], 2);
    assert_eq!(
        status["entries"]["v4_host_index"], true,
        "the catalog's /32s fit the index: {status}"
    );
    assert!(counter(&status, "egress", "drop") >= 4, "{status}");
    assert!(counter(&status, "ingress", "drop") >= 1, "{status}");
    assert!(counter(&status, "egress", "pass") > 0 && counter(&status, "ingress", "pass") > 0);
    assert!(
        status["counters"]["ingress"]["pass_by_reason"]["ipv6-nd"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{status}"
    );
    assert!(
        status["counters"]["egress"]["drop_by_reason"]["policy"]
            .as_u64()
            .unwrap()
            >= 4
    );
    drop(daemon);
}

#[test]
fn monitor_mode_counts_what_it_would_drop_and_drops_nothing() {
    let world = World::new("monitor");
    let _servers = world.servers();
    let daemon = world.start_daemon();
    let before = counter(&world.status(), "egress", "drop");
    assert!(
        tcp_connects(world.host(), sa(BLOCKED_V4, 443), PASS_WAIT),
        "monitor mode lets it through"
    );
    assert!(udp_echoes(world.host(), sa(BLOCKED_V6, 7000), PASS_WAIT));
    let status = world.status();
    assert_eq!(status["mode"], "monitor");
    assert!(
        counter(&status, "egress", "drop") >= before + 2,
        "would-drops are counted: {status}"
    );
    // Summed up once per drop_log_interval (1 s here), never one line per packet.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains("would drop") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = daemon.log();
    let summary = log
        .lines()
        .find(|l| l.contains("would drop"))
        .unwrap_or_else(|| panic!("would-drops are summed up in the log:\n{log}"));
    assert!(summary.contains("egress policy"), "by direction and reason: {summary}");
    assert!(
        !log.contains("would drop egress"),
        "single events stay out of the log at info:\n{log}"
    );
}

#[test]
fn a_killed_daemon_leaves_the_policy_and_a_restart_takes_over_without_a_gap() {
    let world = World::new("enforce");
    let _servers = world.servers();
    let mut daemon = world.start_daemon();
    daemon.kill9();

    // Still enforced with no daemon at all.
    assert!(tcp_connects(world.host(), sa(ALLOWED_V4, 443), PASS_WAIT));
    assert!(!tcp_connects(world.host(), sa(BLOCKED_V4, 443), WAIT));
    let status = world.status();
    assert_eq!(status["running"], false);

    // A prober sends numbered datagrams to an allowed and a blocked echo server through
    // the restart, then waits for late answers: a slow answer on a loaded machine is not
    // a lost one, a missing number is.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        world.host().spawn(move || {
            let allowed = UdpSocket::bind("0.0.0.0:0").unwrap();
            let blocked = UdpSocket::bind("0.0.0.0:0").unwrap();
            for s in [&allowed, &blocked] {
                s.set_nonblocking(true).unwrap();
            }
            let drain = |s: &UdpSocket, seen: &mut HashSet<u32>| {
                let mut buf = [0u8; 16];
                while let Ok((4, _)) = s.recv_from(&mut buf) {
                    seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                }
            };
            let (mut answered, mut leaked) = (HashSet::new(), HashSet::new());
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) {
                allowed.send_to(&sent.to_be_bytes(), sa(ALLOWED_V4, 7000)).unwrap();
                blocked.send_to(&sent.to_be_bytes(), sa(BLOCKED_V4, 7000)).unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
                drain(&allowed, &mut answered);
                drain(&blocked, &mut leaked);
            }
            let late = Instant::now() + Duration::from_secs(1);
            while Instant::now() < late && answered.len() < sent as usize {
                std::thread::sleep(Duration::from_millis(10));
                drain(&allowed, &mut answered);
                drain(&blocked, &mut leaked);
            }
            (sent, answered.len() as u32, leaked.len() as u32)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let restarted = world.start_daemon();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (sent, answered, leaked) = prober.join().unwrap();
    assert!(sent > 50, "the prober ran ({sent} probes)");
    assert_eq!(answered, sent, "allowed probes lost across the restart");
    assert_eq!(leaked, 0, "blocked probes got through during the restart ({sent} sent)");
    assert!(
        restarted.log().contains("adopted the pinned policy"),
        "{}",
        restarted.log()
    );
    assert!(
        restarted.log().contains("adopted=true"),
        "the links were replaced in place:\n{}",
        restarted.log()
    );
    let status = world.status();
    assert_eq!(status["running"], true);
    assert_eq!(status["generation"], 2);
}

#[test]
fn down_detaches_and_unpins_everything() {
    let world = World::new("enforce");
    let _servers = world.servers();
    let mut daemon = world.start_daemon();
    daemon.kill9();
    assert!(!tcp_connects(world.host(), sa(BLOCKED_V4, 443), WAIT));
    let out = world.allowgate(&["down"]);
    assert!(out.status.success(), "down: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        tcp_connects(world.host(), sa(BLOCKED_V4, 443), PASS_WAIT),
        "after down everything flows again"
    );
    assert!(!world.pins.0.exists(), "the pins are gone");
    let out = world.allowgate(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing is enforced here"));
}

#[test]
fn the_nft_script_enforces_the_same_list() {
    let world = World::new("enforce");
    let _servers = world.servers();
    let out = world.allowgate(&["show", "--format", "nft"]);
    assert!(out.status.success(), "show: {}", String::from_utf8_lossy(&out.stderr));
    let script = world.dir.path().join("policy.nft");
    std::fs::write(&script, &out.stdout).unwrap();
    let nft = world.host().command("nft").arg("-f").arg(&script).output().unwrap();
    assert!(nft.status.success(), "nft -f: {}", String::from_utf8_lossy(&nft.stderr));

    // The same probes as the daemon's test, with nftables alone doing the judging.
    world.assert_enforced();
}
