//! What `packaging/` ships: the example config parses, says the truth about the
//! defaults and documents every key; the systemd unit has the lines the daemon and the
//! installer rely on, and agrees with the paths the code uses.

use std::path::Path;

use allowgate::{
    catalog::{Catalog, Feature},
    policy::{
        Config, Mode,
        config::{DEFAULT_BPFFS_DIR, DEFAULT_CONFIG_PATH, DEFAULT_SOCKET, DEFAULT_STATE_DIR},
    },
};

const EXAMPLE: &str = include_str!("../packaging/config.example.toml");
const UNIT: &str = include_str!("../packaging/allowgate.service");

fn parse(text: &str) -> Config {
    Config::parse(text, "config.example.toml", &Catalog::builtin())
        .unwrap_or_else(|e| panic!("the example does not parse: {e}"))
}

/// The example as shipped: the defaults, except that it starts in monitor mode; and
/// with no interface, so a daemon started on it unedited refuses to run.
#[test]
fn the_example_config_parses_and_shows_the_defaults() {
    let config = parse(EXAMPLE);
    assert!(
        config.interfaces.is_empty(),
        "the shipped config must not enforce on anything before it is edited"
    );
    assert_eq!(config.mode, Mode::Monitor);
    assert_eq!(
        config,
        Config {
            mode: Mode::Monitor,
            ..Config::default()
        },
        "the example's values are not the defaults"
    );
}

/// `# key = value` lines (no indent) are the optional settings an operator
/// uncomments; with all of them uncommented the file must still parse, and set them.
#[test]
fn every_optional_line_of_the_example_parses_uncommented() {
    let is_setting = |line: &str| {
        let first = line.split([' ', '=']).next().unwrap_or("");
        line.starts_with('[')
            || (line.contains(" = ")
                && !first.is_empty()
                && first.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '-'))
    };
    let mut uncommented = 0;
    let text: String = EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_setting(rest) => {
                uncommented += 1;
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let config = parse(&text);
    assert!(
        uncommented >= 9,
        "only {uncommented} optional lines found in the example:\n{text}"
    );
    assert_eq!(config.socket_group.as_deref(), Some("allowgate"));
    assert_eq!(config.catalog, [Path::new("/etc/allowgate/catalog.json")]);
    assert_eq!(config.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(config.allow.len(), 1);
    assert_eq!(config.allow[0].cidr, "198.51.100.0/24".parse().unwrap());
    assert_eq!(config.allow[0].comment.as_deref(), Some("the backup service"));
}

/// Every key the config takes is in the example, set or shown commented out.
#[test]
fn the_example_documents_every_key() {
    let keys = [
        "interfaces",
        "mode",
        "regions",
        "features",
        "socket",
        "socket_group",
        "state_dir",
        "bpffs_dir",
        "catalog",
        "metrics",
        "[essentials]",
        "arp",
        "ipv6_nd",
        "icmp_errors",
        "dhcp",
        "dns",
        "dns_servers",
        "ethertypes",
        "[management]",
        "cidrs",
        "ports",
        "[feature_ports]",
        "app-connector",
        "dlp",
        "[log_collector]",
        "sources",
        "ftp_passive_ports",
        "[[allow]]",
        "cidr",
        "direction",
        "proto",
        "comment",
    ];
    for key in keys {
        let documented = EXAMPLE.lines().any(|line| {
            let line = line.trim_start_matches('#').trim();
            if key.starts_with('[') {
                line == key
            } else {
                line.starts_with(&format!("{key} = "))
            }
        });
        assert!(documented, "the example config does not show `{key}`");
    }
    for region in ["us1", "us2", "us3", "eu1", "eu2", "gov-us1"] {
        assert!(EXAMPLE.contains(region), "the example does not name region {region}");
    }
    for feature in Feature::ALL {
        assert!(
            EXAMPLE.contains(feature.as_str()),
            "the example does not name feature {feature}"
        );
    }
}

/// The unit's `[Service]` settings as (key, value) pairs, in order.
fn service_settings() -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in UNIT.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line without `=`: {line}"));
        assert!(!line.ends_with('\\'), "continued lines are not expected: {line}");
        if section == "[Service]" {
            out.push((key.to_string(), value.to_string()));
        }
    }
    out
}

fn setting(key: &str) -> String {
    let values = settings(key);
    assert_eq!(
        values.len(),
        1,
        "the unit sets {key} {} times: {values:?}",
        values.len()
    );
    values.into_iter().next().unwrap()
}

/// Every value the unit gives `key` in `[Service]`, in order (SystemCallFilter= is
/// given more than once: later lines add to and take from the first).
fn settings(key: &str) -> Vec<String> {
    service_settings()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn the_unit_has_what_the_daemon_and_the_installer_rely_on() {
    // The daemon sends READY=1 once enforcing; a reload answers with its verdict, so a
    // refused config fails `systemctl reload`.
    assert_eq!(setting("Type"), "notify");
    assert_eq!(
        setting("ExecReload"),
        format!("/usr/local/bin/allowgate reload --config {DEFAULT_CONFIG_PATH}")
    );
    assert_eq!(setting("Restart"), "on-failure");
    // `cargo xtask install` rewrites this path to its --prefix.
    assert_eq!(
        setting("ExecStart"),
        format!("/usr/local/bin/allowgate daemon --config {DEFAULT_CONFIG_PATH}")
    );

    // The least capabilities that load, attach and pin (and chown the socket to
    // socket_group); never CAP_SYS_ADMIN. Root needs no ambient ones.
    let caps = "CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_CHOWN CAP_NET_RAW";
    assert_eq!(setting("CapabilityBoundingSet"), caps);
    assert!(settings("AmbientCapabilities").is_empty());
    assert_eq!(setting("LimitMEMLOCK"), "infinity");

    // @system-service, less @privileged and @resources, plus bpf(2) (in @privileged)
    // and chown(2) for socket_group, added back last.
    assert_eq!(
        settings("SystemCallFilter"),
        ["@system-service", "~@privileged @resources", "bpf chown fchownat"]
    );
    assert_eq!(setting("SystemCallErrorNumber"), "EPERM");
    // ProtectKernelTunables=yes makes /sys/fs/bpf read-only whatever ReadWritePaths= or
    // BindPaths= say; the unit makes /sys read-only but for /sys/fs/bpf instead.
    assert_eq!(setting("ProtectKernelTunables"), "no");
    assert_eq!(setting("ReadOnlyPaths"), "/sys -/proc/sys -/proc/sysrq-trigger");
    assert_eq!(setting("ProtectSystem"), "strict");
    // The peer's groups come from the socket, so other users' processes may be hidden.
    assert_eq!(setting("ProtectProc"), "invisible");
    assert_eq!(setting("ProcSubset"), "pid");
}

/// The directories systemd makes for the service are the ones the code uses by default.
#[test]
fn the_unit_agrees_with_the_default_paths() {
    assert_eq!(
        Path::new(DEFAULT_SOCKET).parent(),
        Some(Path::new("/run").join(setting("RuntimeDirectory")).as_path())
    );
    assert_eq!(
        Path::new(DEFAULT_STATE_DIR),
        Path::new("/var/lib").join(setting("StateDirectory"))
    );
    let writable = setting("ReadWritePaths");
    assert!(
        writable
            .split_whitespace()
            .any(|p| Path::new(DEFAULT_BPFFS_DIR).starts_with(p)),
        "bpffs_dir {DEFAULT_BPFFS_DIR} is not under ReadWritePaths={writable}"
    );
    let families = setting("RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"] {
        assert!(
            families.split_whitespace().any(|f| f == family),
            "{family} missing from RestrictAddressFamilies"
        );
    }
}

/// The shell completions ask `allowgate regions --names` for region names at each Tab:
/// one name a line, every region of the catalog in use, nothing else, and no daemon.
#[test]
fn regions_names_prints_the_catalogs_regions_for_the_completions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "regions = [\"eu1\"]\n").unwrap();
    let out = assert_cmd::Command::cargo_bin("allowgate")
        .unwrap()
        .args([
            "--socket",
            "/nonexistent/allowgate.sock",
            "regions",
            "--names",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let expected: Vec<String> = Catalog::builtin().regions.iter().map(|r| r.id.clone()).collect();
    assert_eq!(names, expected);
    for region in ["us1", "eu1", "gov-us1"] {
        assert!(names.iter().any(|n| n == region), "{region} missing: {names:?}");
    }

    // A config it cannot read still gets the built-in names (the config is root's).
    let out = assert_cmd::Command::cargo_bin("allowgate")
        .unwrap()
        .args(["regions", "--names", "--config", "/nonexistent/config.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), expected.len());

    // A helper for the completions, not part of the documented interface.
    let help = assert_cmd::Command::cargo_bin("allowgate")
        .unwrap()
        .args(["regions", "--help"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("--names"));
}

const CONFIGMAP: &str = include_str!("../packaging/kubernetes/configmap.yaml");
const DAEMONSET: &str = include_str!("../packaging/kubernetes/daemonset.yaml");

/// The config the ConfigMap carries is one the daemon takes, in monitor mode until the
/// operator switches it, with the metrics the DaemonSet's annotations scrape.
#[test]
fn the_configmaps_config_parses() {
    let start = CONFIGMAP
        .find("config.toml: |\n")
        .expect("the ConfigMap has a config.toml block")
        + "config.toml: |\n".len();
    let text: String = CONFIGMAP[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let config = parse(&text);
    assert_eq!(config.mode, Mode::Monitor);
    assert!(!config.interfaces.is_empty() && !config.management.cidrs.is_empty());
    let metrics = config.metrics.expect("the ConfigMap serves metrics");
    assert!(
        DAEMONSET.contains(&format!("prometheus.io/port: \"{}\"", metrics.port())),
        "the scrape annotation's port is not the config's metrics port {metrics}"
    );
}

/// The pod gets the unit's capabilities, no more, and the mounts the daemon relies on.
#[test]
fn the_daemonset_matches_the_unit() {
    let unit_caps: Vec<String> = setting("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    let line = DAEMONSET
        .lines()
        .find(|l| l.trim_start().starts_with("add: ["))
        .expect("the DaemonSet adds capabilities");
    let added: Vec<String> = line
        .trim()
        .trim_start_matches("add: [")
        .trim_end_matches(']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .collect();
    assert_eq!(added, unit_caps);
    assert!(DAEMONSET.contains("drop: [\"ALL\"]"));
    assert!(!DAEMONSET.contains("privileged: true"));
    for needed in [
        "hostNetwork: true",
        &format!("path: {}", Path::new(DEFAULT_BPFFS_DIR).parent().unwrap().display()),
        &format!("path: {DEFAULT_STATE_DIR}"),
        "mountPath: /run/allowgate",
        "command: [\"/usr/bin/allowgate\", \"status\"]",
        "prometheus.io/scrape: \"true\"",
    ] {
        assert!(DAEMONSET.contains(needed), "the DaemonSet lacks {needed}");
    }
}
