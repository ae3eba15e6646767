//! The main job, as a demo: two network namespaces joined by a veth pair, the daemon
//! on one end with a catalog selection plus documentation-range `[[allow]]` entries,
//! real connections that pass or are blocked, the counters, and everything removed
//! at the end (on failure too). Nothing touches the machine's own interfaces.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::common::{
    PinDir,
    config::{Allow, ConfigBuilder},
    daemon::Daemon,
    netns::{Pair, Servers, sa, tcp_connects, udp_echoes},
};

const ALLOWED_V4: &str = "198.51.100.10";
const BLOCKED_V4: &str = "203.0.113.10";
const ALLOWED_V6: &str = "2001:db8:b::10";
const BLOCKED_V6: &str = "2001:db8:c::10";

fn build_allowgate() -> anyhow::Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--package", "allowgate"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build --package allowgate failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    Ok(target.join("debug/allowgate"))
}

fn step(text: &str) {
    println!("\n== {text}");
}

pub fn run() -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the demo makes namespaces and loads BPF programs: run `cargo xtask demo` as root");
    }
    let bin = build_allowgate()?;

    step("two namespaces joined by a veth pair (documentation addresses only)");
    let pair = Pair::new(&[ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6]);
    println!("host  {} on {}: 192.0.2.1, 2001:db8:1::1", pair.host.name, pair.host_if);
    println!(
        "peer  {} on {}: 192.0.2.2, {ALLOWED_V4}, {BLOCKED_V4}, {ALLOWED_V6}, {BLOCKED_V6}",
        pair.peer.name, pair.peer_if
    );
    let tcp: Vec<_> = [ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6]
        .iter()
        .flat_map(|a| [sa(a, 443), sa(a, 8443)])
        .collect();
    let udp: Vec<_> = [ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6]
        .iter()
        .map(|a| sa(a, 7000))
        .collect();
    let _servers = Servers::start(&pair.peer, &tcp, &udp);

    let pins = PinDir::with_prefix("allowgate-demo-");
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    ConfigBuilder::new(&[&pair.host_if])
        .comment(
            "The demo's config: the EU1 data center's portal, SIEM and mail entries, plus\n\
             documentation-range additions standing in for the service, which a demo cannot reach.",
        )
        .regions(&["eu1"])
        .features(&["portal", "siem", "mail"])
        .homes(&pins.0, &dir.path().join("state"), &dir.path().join("control.sock"))
        .dns_servers(&["192.0.2.2"])
        .management(&["192.0.2.0/24"])
        .allow(
            Allow::egress(&format!("{ALLOWED_V4}/32"), "tcp")
                .ports(&["443"])
                .comment("stands in for an EU1 portal address"),
        )
        .allow(Allow::egress("2001:db8:b::/48", "tcp").ports(&["443"]))
        .allow(Allow::egress(&format!("{ALLOWED_V4}/32"), "udp").ports(&["7000"]))
        .allow(Allow::egress("2001:db8:b::/48", "udp").ports(&["7000"]))
        .write(&config);
    let allowgate = |args: &[&str]| -> anyhow::Result<String> {
        let out = pair
            .host
            .command(bin.to_str().unwrap())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        Ok(text)
    };

    step("what the host may talk to: allowgate show (the [[allow]] and essentials part)");
    for line in allowgate(&["show"])?.lines().filter(|l| !l.contains(" catalog ")) {
        println!("{line}");
    }
    step("real catalog addresses are judged by the same rules, offline: allowgate check");
    for args in [
        ["13.80.125.22", "--port", "443"],
        ["13.80.125.22", "--port", "80"],
        ["8.8.8.8", "--port", "443"],
    ] {
        print!(
            "{}",
            allowgate(&["check", args[0], args[1], args[2]])?
                .lines()
                .next()
                .map(|l| format!("{l}\n"))
                .unwrap_or_default()
        );
    }

    step("allowgate daemon: compile, load, install, attach XDP and TC on the host's veth");
    let daemon = Daemon::start(&pair.host, &bin, &config, dir.path());
    print!("{}", daemon.log());

    step("connections from the host (blocked ones time out after 1 s)");
    let wait = Duration::from_secs(1);
    let mut wrong = 0;
    let mut probe = |what: &str, ok: bool, want: bool| {
        let mark = if ok == want { "as expected" } else { "UNEXPECTED" };
        if ok != want {
            wrong += 1;
        }
        println!("{:<44} {:<9} {mark}", what, if ok { "passed" } else { "blocked" });
    };
    probe(
        &format!("tcp {ALLOWED_V4}:443"),
        tcp_connects(&pair.host, sa(ALLOWED_V4, 443), wait),
        true,
    );
    probe(
        &format!("tcp {ALLOWED_V4}:8443 (port not listed)"),
        tcp_connects(&pair.host, sa(ALLOWED_V4, 8443), wait),
        false,
    );
    probe(
        &format!("tcp {BLOCKED_V4}:443 (address not listed)"),
        tcp_connects(&pair.host, sa(BLOCKED_V4, 443), wait),
        false,
    );
    probe(
        &format!("tcp [{ALLOWED_V6}]:443"),
        tcp_connects(&pair.host, sa(ALLOWED_V6, 443), wait),
        true,
    );
    probe(
        &format!("tcp [{BLOCKED_V6}]:443"),
        tcp_connects(&pair.host, sa(BLOCKED_V6, 443), wait),
        false,
    );
    probe(
        &format!("udp {ALLOWED_V4}:7000"),
        udp_echoes(&pair.host, sa(ALLOWED_V4, 7000), wait),
        true,
    );
    probe(
        &format!("udp [{ALLOWED_V6}]:7000"),
        udp_echoes(&pair.host, sa(ALLOWED_V6, 7000), wait),
        true,
    );
    probe(
        &format!("udp {BLOCKED_V4}:7000"),
        udp_echoes(&pair.host, sa(BLOCKED_V4, 7000), wait),
        false,
    );

    step("allowgate status");
    print!("{}", allowgate(&["status"])?);

    step("SIGKILL the daemon: the pinned policy stays enforced");
    drop(daemon);
    probe(
        &format!("tcp {ALLOWED_V4}:443, no daemon"),
        tcp_connects(&pair.host, sa(ALLOWED_V4, 443), wait),
        true,
    );
    probe(
        &format!("tcp {BLOCKED_V4}:443, no daemon"),
        tcp_connects(&pair.host, sa(BLOCKED_V4, 443), wait),
        false,
    );

    step("allowgate down: detach and unpin; then everything flows again");
    print!("{}", allowgate(&["down"])?);
    probe(
        &format!("tcp {BLOCKED_V4}:443, after down"),
        tcp_connects(&pair.host, sa(BLOCKED_V4, 443), wait),
        true,
    );

    step("clean up: namespaces, veth pair and pins are removed");
    if wrong > 0 {
        bail!("{wrong} probes did not go as the policy says");
    }
    Ok(())
}
