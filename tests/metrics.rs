//! The Prometheus endpoint end to end: what it serves agrees with `status`.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use testkit::{
    exposition::{self, Series, labels},
    netns::{Netns, http_get},
    world::*,
};

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");

// ---------------------------------------------------------------------------------------
// 8. Metrics

/// A free port on the host namespace's loopback.
fn free_port(ns: &Netns) -> u16 {
    ns.enter(|| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

fn scrape(world: &World, addr: SocketAddr) -> BTreeMap<Series, f64> {
    let response =
        http_get(world.host(), addr, "/metrics", Duration::from_secs(5)).expect("scrape the metrics endpoint");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    exposition::parse(body)
}

#[test]
fn the_metrics_endpoint_agrees_with_status() {
    let mut world = World::new(BIN, Setup::default());
    let port = free_port(world.host());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    world.setup.extra = format!("metrics = \"{addr}\"");
    world.write_config(world.setup.regions);
    let _servers = world.servers();
    let _daemon = world.start_daemon();

    // Drops we cause: three connections to an address no region lists.
    for _ in 0..3 {
        assert!(world.blocked(UNLISTED));
    }
    assert!(world.passes(EU1_ONLY));
    let status = world.status();
    let m = scrape(&world, addr);
    let get = |name: &str, l: &[(&str, &str)]| -> f64 {
        *m.get(&(name.to_string(), labels(l)))
            .unwrap_or_else(|| panic!("no {name}{l:?} in the exposition"))
    };
    assert_eq!(get("allowgate_generation", &[]), generation(&status) as f64);
    let policy_drops = get(
        "allowgate_packets_total",
        &[("direction", "egress"), ("verdict", "drop"), ("reason", "policy")],
    );
    assert!(policy_drops >= 3.0, "egress policy drops: {policy_drops}");
    assert!(
        policy_drops
            >= status["counters"]["egress"]["drop_by_reason"]["policy"]
                .as_u64()
                .unwrap() as f64,
        "the scrape came after status: {policy_drops} vs {status}"
    );
    assert!(
        get(
            "allowgate_packets_total",
            &[("direction", "egress"), ("verdict", "pass"), ("reason", "policy")]
        ) > 0.0
    );
    assert!(get("allowgate_table_entries", &[("family", "ipv4")]) > 0.0);
    assert_eq!(
        get("allowgate_table_entries", &[("family", "ipv4")]),
        status["entries"]["v4"].as_u64().unwrap() as f64
    );
    assert_eq!(get("allowgate_enforcing", &[]), 1.0);
    assert_eq!(get("allowgate_region_enabled", &[("region", "eu1")]), 1.0);
    assert!(!m.contains_key(&("allowgate_region_enabled".to_string(), labels(&[("region", "eu2")]))));
    assert_eq!(get("allowgate_feature_enabled", &[("feature", "portal")]), 1.0);
    let iface = world.pair.host_if.clone();
    assert_eq!(
        get(
            "allowgate_interface_info",
            &[
                ("interface", &iface),
                ("xdp_mode", "native"),
                ("tc_mode", status["interfaces"][0]["tc_mode"].as_str().unwrap())
            ]
        ),
        1.0
    );

    // A toggle shows in the next scrape.
    world.cli(&["enable", "eu2"]).ok();
    world.cli(&["mode", "monitor"]).ok();
    let m2 = scrape(&world, addr);
    let get2 = |name: &str, l: &[(&str, &str)]| m2.get(&(name.to_string(), labels(l))).copied();
    assert_eq!(
        get2("allowgate_generation", &[]),
        Some(generation(&status) as f64 + 2.0)
    );
    assert_eq!(get2("allowgate_region_enabled", &[("region", "eu2")]), Some(1.0));
    assert_eq!(get2("allowgate_enforcing", &[]), Some(0.0));

    // Other paths and methods are refused, and the endpoint keeps serving.
    let response = http_get(world.host(), addr, "/nope", Duration::from_secs(5)).unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    scrape(&world, addr);
}
