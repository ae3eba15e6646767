use std::net::IpAddr;

use ipnet::IpNet;

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, "test.toml", &Catalog::builtin()).map_err(|e| e.to_string())
}

#[test]
fn the_spec_example_parses() {
    let c = parse(
        r#"
interfaces = ["eth0"]
mode = "enforce"
regions = ["eu1"]
features = ["portal", "proxy", "siem"]
socket = "/run/allowgate/control.sock"
state_dir = "/var/lib/allowgate"
bpffs_dir = "/sys/fs/bpf/allowgate"

[essentials]
arp = true
ipv6_nd = true
icmp_errors = true
dhcp = true
dns = true
dns_servers = []
ethertypes = []

[management]
cidrs = ["192.0.2.0/24"]
ports = [22]

[[allow]]
cidr = "198.51.100.0/24"
direction = "egress"
proto = "tcp"
ports = [443, "8000-8100"]
"#,
    )
    .unwrap();
    assert_eq!(c.regions, ["eu1"]);
    assert_eq!(c.features, [Feature::Portal, Feature::Proxy, Feature::Siem]);
    assert_eq!(c.management.cidrs, ["192.0.2.0/24".parse::<IpNet>().unwrap()]);
    assert_eq!(c.allow.len(), 1);
    assert_eq!(
        c.allow[0].ports,
        [PortRange::single(443), PortRange { lo: 8000, hi: 8100 }]
    );
    assert_eq!(c.allow[0].line, 23);
}

#[test]
fn defaults_fill_what_is_missing() {
    let c = parse("").unwrap();
    assert_eq!(c.features, Feature::DEFAULT);
    assert_eq!(c.mode, Mode::Enforce);
    assert!(c.essentials.arp && c.essentials.dns && c.essentials.dhcp);
    assert_eq!(c.management.ports, [PortRange::single(22)]);
    assert_eq!(c.dlp_ports, [PortRange::single(11344)]);
    assert_eq!(c.state.mode, StateMode::Stateful);
    assert_eq!(c.state.timeouts.tcp_established, 432_000);
    assert_eq!(c.max_catalog_age, DEFAULT_MAX_CATALOG_AGE);
}

#[test]
fn catalog_limits_are_read_alone_and_leniently() {
    assert_eq!(parse("max_catalog_age = 0\n").unwrap().max_catalog_age, 0);
    assert_eq!(parse("max_catalog_age = 7\n").unwrap().max_catalog_age, 7);
    assert_eq!(
        Config::catalog_limits("max_shrink = 10\nmax_catalog_age = 7\n"),
        (10, 7)
    );
    // What the full parse refuses gives the defaults here, as does a broken file.
    assert_eq!(
        Config::catalog_limits("max_shrink = 300\nmax_catalog_age = \"x\"\n"),
        (25, 30)
    );
    assert_eq!(Config::catalog_limits("[[[ not toml"), (25, 30));
}

#[test]
fn state_takes_a_mode_and_timeouts() {
    let c = parse("[state]\nmode = \"stateless\"\n[state.timeouts]\nudp = 5\ntcp_close = 3\n").unwrap();
    assert_eq!(c.state.mode, StateMode::Stateless);
    let want = FlowTimeouts {
        udp: 5,
        tcp_close: 3,
        ..FlowTimeouts::default()
    };
    assert_eq!(c.state.timeouts, want);
    assert!(!c.state.liberal);
    let c = parse("[state]\nliberal = true\nmax_flows = 100000\n").unwrap();
    assert!(c.state.liberal);
    assert_eq!(c.state.max_flows, 100_000);
    assert_eq!(want.by_state()[allowgate_ebpf::FLOW_UDP as usize], 5);
    assert_eq!(want.by_state()[allowgate_ebpf::FLOW_TCP_CLOSE as usize], 3);
}

#[test]
fn dns_give_back_takes_each_path() {
    assert_eq!(parse("").unwrap().dns.give_back, GiveBack::Auto);
    for (name, want) in [
        ("auto", GiveBack::Auto),
        ("live-frames", GiveBack::LiveFrames),
        ("loopback", GiveBack::Loopback),
        ("none", GiveBack::None),
    ] {
        let c = parse(&format!("[dns]\ngive_back = \"{name}\"\n")).unwrap();
        assert_eq!(c.dns.give_back, want, "{name}");
        assert_eq!(want.as_str(), name);
    }
}

#[test]
fn xdp_placement_defaults_to_auto_first_and_takes_each_mode() {
    let c = parse("").unwrap();
    assert_eq!((c.xdp_mode, c.xdp_priority), (XdpPlacement::Auto, 0));
    for (text, mode) in [
        ("auto", XdpPlacement::Auto),
        ("native", XdpPlacement::Native),
        ("generic", XdpPlacement::Generic),
        ("dispatcher", XdpPlacement::Dispatcher),
    ] {
        let c = parse(&format!("xdp_mode = \"{text}\"\nxdp_priority = 20\n")).unwrap();
        assert_eq!((c.xdp_mode, c.xdp_priority), (mode, 20));
        assert_eq!(mode.as_str(), text);
    }
}

#[test]
fn regions_match_whatever_the_spelling() {
    let c = parse(r#"regions = ["Gov US1", "EU1", "govus1"]"#).unwrap();
    assert_eq!(c.regions, ["gov-us1", "eu1"]);
}

#[test]
fn max_flows_follows_memory_as_conntrack_does() {
    const GIB: u64 = 1 << 30;
    assert_eq!(max_flows_for_memory(24 * GIB), 262_144);
    assert_eq!(max_flows_for_memory(4 * GIB + 1), 262_144);
    assert_eq!(max_flows_for_memory(4 * GIB), 65_536);
    assert_eq!(max_flows_for_memory(2 * GIB), 65_536);
    // Small hosts keep the table's old size: conntrack would go lower.
    assert_eq!(max_flows_for_memory(512 << 20), 65_536);
    assert!(default_max_flows() >= MIN_MAX_FLOWS);
}

/// An Azure region is named by any of its spellings (the service tags' older
/// `centralfrance`, the page's "France Central") and kept in Azure's form.
#[test]
fn azure_regions_take_their_aliases_and_keep_azures_form() {
    let page = "## Portal access\n\n|Data center|IP addresses|\n|---|---|\n|EU1|192.0.2.1|\n\n\
                ## Access and session controls\n\nThe following IP addresses should be allowed for both inbound and outbound connections:\n\n\
                ||IP addresses|\n|---|---|\n|**Session controls**|France Central: 192.0.2.2<br /><br />Germany West Central: 192.0.2.3|\n";
    let catalog = crate::catalog::parse_page(page, "page.md").unwrap();
    let text = r#"
regions = ["eu1", "centralfrance", "Germany West Central"]
proxy_regions = ["germanywc", "France Central"]
"#;
    let c = Config::parse(text, "test.toml", &catalog).unwrap();
    assert_eq!(c.regions, ["eu1", "francecentral", "germanywestcentral"]);
    assert_eq!(c.proxy_regions.unwrap(), ["germanywestcentral", "francecentral"]);
    let err = Config::parse("regions = [\"centralfrancee\"]", "test.toml", &catalog).unwrap_err();
    assert_eq!(
        err.to_string(),
        "test.toml:1: regions: unknown region `centralfrancee`: did you mean `francecentral`?; `allowgate regions` lists them"
    );
}

/// Each bad input gets one line naming the file, the line and the key.
#[test]
fn bad_input_is_named_with_its_line() {
    let cases: &[(&str, &str)] = &[
        ("regions = [\"eu1\"]\nbogus = 1\n", "test.toml:2: unknown field `bogus`"),
        (
            "xdp_mode = \"shared\"\n",
            "test.toml:1: xdp_mode: `shared` is none of auto, native, generic, dispatcher",
        ),
        (
            "xdp_priority = -1\n",
            "test.toml:1: xdp_priority: 0 to 4294967295 (lowest runs first)",
        ),
        (
            "regions = [\"eu3\"]\n",
            "test.toml:1: regions: unknown region `eu3`: did you mean `eu1`?",
        ),
        (
            "features = [\"portl\"]\n",
            "test.toml:1: features: unknown feature `portl`: did you mean `portal`?",
        ),
        (
            "\n[management]\ncidrs = [\"192.0.2.1/24\"]\n",
            "test.toml:3: management.cidrs: `192.0.2.1/24` has host bits set: did you mean 192.0.2.0/24?",
        ),
        (
            "[management]\ncidrs = [\"300.1.1.1\"]\n",
            "test.toml:2: management.cidrs: `300.1.1.1` is not a CIDR",
        ),
        (
            "[management]\nports = [70000]\n",
            "test.toml:2: management.ports: 70000 is not a port",
        ),
        (
            "[[allow]]\ncidr = \"198.51.100.0/24\"\ndirection = \"egress\"\nproto = \"tcp\"\nports = [\"9000-8000\"]\n",
            "test.toml:5: allow[0].ports: port range `9000-8000` runs backwards",
        ),
        (
            "[[allow]]\ncidr = \"198.51.100.0/24\"\ndirection = \"sideways\"\n",
            "test.toml:3: allow[0].direction: `sideways` is not `egress` or `ingress`",
        ),
        (
            "[[allow]]\ncidr = \"198.51.100.0/24\"\ndirection = \"egress\"\nproto = \"icmp\"\nports = [1]\n",
            "test.toml:5: allow[0].ports: only tcp and udp have ports",
        ),
        (
            "[[allow]]\ncidr = \"198.51.100.0/24\"\n",
            "test.toml:1: missing field `direction`",
        ),
        (
            "mode = \"permissive\"\n",
            "test.toml:1: mode: unknown mode `permissive`",
        ),
        (
            "[essentials]\ndns_servers = [\"resolver\"]\n",
            "test.toml:2: essentials.dns_servers: `resolver` is not an IP address",
        ),
        (
            "[essentials]\nethertypes = [\"0x0800\"]\n",
            "test.toml:2: essentials.ethertypes: 0x0800 is IP",
        ),
        ("[essentials]\nbogus = true\n", "test.toml:2: unknown field `bogus`"),
        (
            "[dns]\ngive_back = \"reinject\"\n",
            "test.toml:2: dns.give_back: unknown path `reinject`: use `auto`, `live-frames`, `loopback`, `none`",
        ),
        (
            "regions = \"eu1\"\n",
            "test.toml:1: invalid type: string \"eu1\", expected a sequence",
        ),
        (
            "interfaces = [\"a b\"]\n",
            "test.toml:1: interfaces: `a b` is not an interface name",
        ),
        (
            "metrics = \"localhost\"\n",
            "test.toml:1: metrics: `localhost` is not an address:port",
        ),
        (
            "drop_log_interval = 0\n",
            "test.toml:1: drop_log_interval: 1 to 86400 seconds",
        ),
        (
            "max_catalog_age = -1\n",
            "test.toml:1: max_catalog_age: -1 is not a number of days (0, never, to 3650)",
        ),
        (
            "[state]\nmode = \"tracking\"\n",
            "test.toml:2: state.mode: unknown mode `tracking`: use `stateful` or `stateless`",
        ),
        (
            "[state.timeouts]\nudp = 30\ntcp_established = 0\n",
            "test.toml:3: state.timeouts.tcp_established: 1 to 2592000 seconds",
        ),
        (
            "[state.timeouts]\nicmp = -1\n",
            "test.toml:2: state.timeouts.icmp: 1 to 2592000 seconds",
        ),
        (
            "[state]\nmax_flows = 1000\n",
            "test.toml:2: state.max_flows: 65536 to 16777216 flows per address family",
        ),
        ("[state]\ntimeout = 5\n", "test.toml:2: unknown field `timeout`"),
        (
            "[log_collector]\nsources = [\"2001:db8::1/32\"]\n",
            "test.toml:2: log_collector.sources: `2001:db8::1/32` has host bits set",
        ),
        ("regions = [\"eu1\"\n", "test.toml:1: unclosed array, expected `]`"),
    ];
    for (text, want) in cases {
        let err = parse(text).expect_err(text);
        assert!(err.starts_with(want), "config {text:?}\n  got:  {err}\n  want: {want}…");
        assert!(!err.contains('\n'), "error is not one line: {err:?}");
    }
}

#[test]
fn v4_mapped_addresses_are_refused_with_the_ipv4_form() {
    assert_eq!(
        parse_cidr("::ffff:192.0.2.0/120").unwrap_err(),
        "`::ffff:192.0.2.0/120` is an IPv4-mapped IPv6 address, which never appears on the wire here: write the IPv4 form, 192.0.2.0/24"
    );
    assert!(
        parse_cidr("::ffff:198.51.100.7")
            .unwrap_err()
            .ends_with("write the IPv4 form, 198.51.100.7/32")
    );
    assert!(parse_cidr("2001:db8::/32").is_ok());
    let err = parse("interfaces = [\"x\"]\n[essentials]\ndns_servers = [\"::ffff:192.0.2.53\"]\n").unwrap_err();
    assert!(err.contains(":3:") && err.ends_with("write 192.0.2.53"), "{err}");
    let err = parse("[management]\ncidrs = [\"::ffff:192.0.2.0/120\"]\n").unwrap_err();
    assert!(err.contains("IPv4-mapped"), "{err}");
}

#[test]
fn resolv_conf_nameservers() {
    let servers = parse_resolv_conf(
        "# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver junk\nnameserver 192.0.2.53\n",
    );
    assert_eq!(
        servers,
        ["192.0.2.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]
    );
}

#[test]
fn a_loopback_stub_resolver_is_looked_through() {
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("resolv.conf");
    let upstream = dir.path().join("upstream.conf");
    std::fs::write(&stub, "nameserver 127.0.0.53\n").unwrap();
    std::fs::write(&upstream, "nameserver 198.51.100.53\n").unwrap();
    assert_eq!(
        host_resolvers(&stub, &upstream),
        ["198.51.100.53".parse::<IpAddr>().unwrap()]
    );
    std::fs::remove_file(&upstream).unwrap();
    assert_eq!(
        host_resolvers(&stub, &upstream),
        ["127.0.0.53".parse::<IpAddr>().unwrap()]
    );
}
