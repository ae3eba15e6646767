//! `cargo xtask test-systemd`: the Debian package under a real systemd, on Debian 12
//! (bookworm, systemd 252) or Debian 13 (trixie, systemd 257): `--suite`.
//!
//! mmdebstrap makes a minimal Debian tree; systemd-nspawn boots it with systemd as PID 1
//! in a network namespace of ours, joined by a veth pair to a peer namespace (addresses
//! from the documentation ranges only, never the host's uplink). The package is installed
//! in it and the unit is put through what an operator does (`steps.rs`): install (neither
//! enabled nor started), the sandbox's exposure, start (returns only once enforcing),
//! probes from the peer, DNS learning under the unit, reloads whose verdict
//! `systemctl reload` returns, socket_group, every verb under the sandbox, an upgrade
//! and a stop and start (adopted, no gap), the journal, a site's IP allow list, remove,
//! purge (no trace left) and a reinstall (not enabled).
//!
//! Everything it makes (the tree, the container, the namespaces and veths, the pins,
//! which live in a bpffs mounted inside the container) goes when it ends, on failure too.
//! `--skip-if-unable` (what CI passes) turns "this machine cannot boot the container"
//! (no root, no Debian mirror, nspawn cannot boot) into one line and exit 0;
//! a failure once the container runs is always a failure.

mod container;
mod probe;
mod steps;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::config::ConfigBuilder;
use anyhow::{Context as _, bail, ensure};
use container::{Container, Tree, has_command};
pub use container::{apt_install, mmdebstrap_failure};

/// An address of the peer that neither the config nor the catalog lists.
const UNLISTED_V4: &str = "203.0.113.10";
/// Names under the portal's `*.eu.portal.cloudappsecurity.com` and what the peer's
/// resolver answers for them; the peer holds each address, with a TCP server on :443.
/// One per step that learns a name: a name learned once stays allowed for its TTL.
const TENANTS: [(&str, &str); 3] = [
    ("tenant.eu.portal.cloudappsecurity.com", "198.51.100.40"),
    ("tenant2.eu.portal.cloudappsecurity.com", "198.51.100.41"),
    ("tenant3.eu.portal.cloudappsecurity.com", "198.51.100.42"),
];
const HOST_V4: &str = crate::common::netns::HOST_V4;
const PEER_V4: &str = crate::common::netns::PEER_V4;
const HOST_V6: &str = crate::common::netns::HOST_V6;
/// `socket_group`, a member of it (by a supplementary group only) and a user who is not.
const GROUP: &str = "agctl";
const MEMBER: &str = "agmember";
const OTHER: &str = "agother";
/// What the container needs besides the minimal base: systemd as init, D-Bus for
/// systemctl, iproute2, man-db for `man allowgate`, bash-completion to try the
/// completions. The package needs nothing else (`dpkg -i` checks: the container has no
/// network to fetch it).
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,man-db,bash-completion";
/// The exposure `systemd-analyze security` gave the unit before its sandbox was reviewed
/// (issue 21), on both suites: 2.8 (2.7 when the issue was filed, before CAP_NET_RAW).
const EXPOSURE_BEFORE: f64 = 2.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Debian 12, systemd 252.
    Bookworm,
    /// Debian 13, systemd 257.
    Trixie,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }

    fn debian(self) -> &'static str {
        match self {
            Suite::Bookworm => "Debian 12",
            Suite::Trixie => "Debian 13",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Debian release to boot and install the package on.
    #[arg(long, value_enum, default_value = "bookworm")]
    suite: Suite,
    /// Install this .deb instead of building one with `cargo xtask deb`.
    #[arg(long, value_name = "FILE")]
    deb: Option<PathBuf>,
    /// When this machine cannot boot the container (not root, no Debian mirror,
    /// systemd-nspawn fails to boot), say why in one line and exit 0.
    #[arg(long)]
    skip_if_unable: bool,
    /// The Debian mirror mmdebstrap fetches from.
    #[arg(long, value_name = "URL", default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// For working on this test: boot the tree in DIR (made by mmdebstrap the first
    /// time) and keep it afterwards. Without it, a fresh tree is made and removed.
    #[arg(long, value_name = "DIR", hide = true)]
    tree: Option<PathBuf>,
}

/// Why the machine cannot run the test, as opposed to the test failing.
struct Unable(String);

/// Where the time went, for the summary line.
#[derive(Default)]
struct Timings {
    package: Option<Duration>,
    tree: Option<Duration>,
    boot: Duration,
    checks: Duration,
}

/// What a passing run found, for the summary line.
struct Passed {
    systemd: String,
    exposure: f64,
    timings: Timings,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let suite = args.suite;
    let result = prepare(args).and_then(|prepared| match prepared {
        Err(Unable(why)) => Ok(Err(why)),
        Ok((deb, tree, timings)) => test(&deb, tree, timings),
    });
    let secs = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.0} s", d.as_secs_f64()));
    match result {
        Ok(Ok(p)) => {
            let t = &p.timings;
            println!(
                "\ntest-systemd: passed on {} ({}), {}, in {:.0} s (package {}, tree {}, boot {:.1} s, checks {:.0} s); exposure {:.1} (was {EXPOSURE_BEFORE})",
                suite.debian(),
                suite.name(),
                p.systemd,
                started.elapsed().as_secs_f64(),
                secs(t.package),
                secs(t.tree),
                t.boot.as_secs_f64(),
                t.checks.as_secs_f64(),
                p.exposure,
            );
            Ok(())
        }
        Ok(Err(why)) if args.skip_if_unable => {
            println!(
                "test-systemd: skipped on {} ({}), this machine cannot boot the test container: {why}",
                suite.debian(),
                suite.name()
            );
            Ok(())
        }
        Ok(Err(why)) => bail!("this machine cannot boot the test container: {why}"),
        Err(e) => Err(e),
    }
}

/// The package, and a Debian tree to boot; or why this machine cannot.
fn prepare(args: &Args) -> anyhow::Result<Result<(PathBuf, Tree, Timings), Unable>> {
    if !crate::is_root() {
        return Ok(Err(Unable("it needs root (namespaces, systemd-nspawn, BPF)".into())));
    }
    for (tool, package) in [("mmdebstrap", "mmdebstrap"), ("systemd-nspawn", "systemd-container")] {
        if !has_command(tool) {
            println!("test-systemd: installing {package} (for {tool})");
            if !apt_install(&[package]) || !has_command(tool) {
                return Ok(Err(Unable(format!(
                    "{tool} is missing and `apt-get install {package}` failed"
                ))));
            }
        }
    }

    let mut timings = Timings::default();
    let deb = match &args.deb {
        Some(deb) => deb.clone(),
        None => {
            step("the package: cargo xtask deb");
            let t = Instant::now();
            let deb = crate::deb::package(true, &crate::deb::default_out())?;
            timings.package = Some(t.elapsed());
            deb
        }
    };

    let suite = args.suite.name();
    step(&format!(
        "a minimal {} ({suite}) with systemd: mmdebstrap",
        args.suite.debian()
    ));
    let tree = Tree {
        dir: tempfile::Builder::new().prefix("allowgate-systemd-").tempdir()?,
        kept: args.tree.clone(),
    };
    if tree.kept.as_ref().is_some_and(|t| t.join("usr/bin/systemctl").exists()) {
        println!("reusing {}", tree.root().display());
        return Ok(Ok((deb, tree, timings)));
    }
    let t = Instant::now();
    let out = Command::new("mmdebstrap")
        .args(["--variant=minbase", &format!("--include={INCLUDE}")])
        .arg(suite)
        .arg(tree.root())
        .arg(&args.mirror)
        .stdin(Stdio::null())
        .output()
        .context("cannot run mmdebstrap")?;
    if !out.status.success() {
        let why = mmdebstrap_failure(&out.stderr);
        return Ok(Err(Unable(format!(
            "mmdebstrap of {suite} from {} failed: {why}",
            args.mirror
        ))));
    }
    timings.tree = Some(t.elapsed());
    println!("built in {:.0} s", t.elapsed().as_secs_f64());
    Ok(Ok((deb, tree, timings)))
}

fn step(text: &str) {
    println!("\n== {text}");
}

/// Ok(Err(why)) when the container does not boot here; Err when the test fails.
fn test(deb: &Path, tree: Tree, mut timings: Timings) -> anyhow::Result<Result<Passed, String>> {
    use crate::common::netns::{Pair, Servers, sa};

    let root = tree.root();
    step("namespaces: the container's and a peer, a veth pair between them (documentation addresses)");
    let mut peer_addrs = vec![UNLISTED_V4];
    peer_addrs.extend(TENANTS.iter().map(|(_, a)| *a));
    let pair = Pair::new(&peer_addrs);
    println!(
        "container netns {} on {} ({HOST_V4}, {HOST_V6}); peer {} on {} ({PEER_V4}, {UNLISTED_V4})",
        pair.host.name, pair.host_if, pair.peer.name, pair.peer_if
    );
    // The container answers on :22 (a listener in its namespace), and routes back to the
    // unlisted address, so only the filter can keep that address out.
    // One dual-stack socket ([::]:22 takes IPv4 too).
    let _sshd = Servers::start(&pair.host, &[sa("::", 22)], &[]);
    // The resolver, and servers behind catalog wildcard names.
    let zone = TENANTS
        .iter()
        .fold(crate::common::dns::Zone::new(), |z, (name, addr)| z.a(name, 300, addr));
    let _resolver = crate::common::dns::DnsServer::start(&pair.peer, sa(PEER_V4, 53), zone);
    let tenants: Vec<_> = TENANTS.iter().map(|(_, a)| sa(a, 443)).collect();
    let _tenants = Servers::start(&pair.peer, &tenants, &[]);
    check(
        "without allowgate, the management and the unlisted address both reach :22",
        probe::probe(&pair.peer, PEER_V4) && probe::probe(&pair.peer, UNLISTED_V4),
    )?;

    step("boot: systemd-nspawn --boot, systemd as PID 1");
    let t = Instant::now();
    let log = tree.dir.path().join("nspawn.log");
    let ct = match Container::boot(&root, &pair.host, &log) {
        Ok(ct) => ct,
        Err(Unable(why)) => return Ok(Err(why)),
    };
    timings.boot = t.elapsed();
    // "systemd 257 (257.13-1~deb13u1)"
    let systemd = ct
        .ok("systemctl", &["--version"])?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    println!(
        "booted {systemd} in {:.1} s (container PID 1 is {} here)",
        timings.boot.as_secs_f64(),
        ct.leader
    );
    // A bpffs of the container's own: its pins vanish with it, and never mix with the host's.
    ct.ok("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])?;

    let t = Instant::now();
    let x = steps::Ctx {
        conf: root.join("etc/allowgate/config.toml"),
        root,
        ct,
        pair,
    };
    steps::install(&x, deb)?;
    let exposure = steps::exposure(&x)?;
    steps::start(&x)?;
    steps::dns(&x, TENANTS[0])?;
    steps::reload(&x)?;
    steps::socket_group(&x)?;
    steps::verbs(&x)?;
    steps::upgrade(&x)?;
    steps::stop_start(&x)?;
    steps::journal_lines(&x)?;
    steps::ip_allow_list(&x, TENANTS[1], TENANTS[2])?;
    steps::remove_purge_reinstall(&x)?;
    timings.checks = t.elapsed();
    drop(x);
    drop(tree);
    Ok(Ok(Passed {
        systemd,
        exposure,
        timings,
    }))
}

/// The unit's config; `extra` goes verbatim at the end (`[[allow]]` entries, good or broken).
fn config(iface: &str, extra: &str) -> String {
    ConfigBuilder::new(&[iface])
        .comment(
            "test-systemd: enforce on the container's end of the veth. One drop summary a\n\
             second, so the journal shows the unlisted probes' drops; the peer is the resolver:\n\
             DNS names are learned from its answers, held and given back.",
        )
        .mode("enforce")
        .regions(&["eu1"])
        .features(&["portal", "siem"])
        .key("metrics", "127.0.0.1:9464")
        .key("socket_group", GROUP)
        .key("drop_log_interval", 1u64)
        .dns_servers(&[PEER_V4])
        .set("dns", "learn", true)
        .set("dns", "refresh", 3600u64)
        .management(&[&format!("{PEER_V4}/32"), "2001:db8:1::2/128"])
        .set("management", "ports", &[22u16][..])
        .tail(extra)
        .render()
}

fn status_json(ct: &Container) -> anyhow::Result<serde_json::Value> {
    let (code, out, err) = ct.run("allowgate", &["status", "--json"])?;
    serde_json::from_str(&out)
        .with_context(|| format!("`allowgate status --json` (exit {code}) printed no JSON: {out}{err}"))
}

/// Status says the policy is in force on `iface`: the daemon answers, in enforce mode,
/// with XDP and TC attached there (and `enforcing`, where the status has that field).
fn enforcing(ct: &Container, iface: &str) -> anyhow::Result<bool> {
    let (code, _, _) = ct.run("allowgate", &["status"])?;
    let s = status_json(ct)?;
    let attached = s["interfaces"].as_array().is_some_and(|list| {
        list.iter()
            .any(|i| i["name"] == iface && i["xdp_mode"].is_string() && i["tc_mode"].is_string())
    });
    Ok(code == 0 && s["mode"] == "enforce" && attached && s.get("enforcing").is_none_or(|e| e == true))
}

fn generation(ct: &Container) -> anyhow::Result<u64> {
    status_json(ct)?["generation"]
        .as_u64()
        .context("status --json has no generation")
}

fn check(what: &str, ok: bool) -> anyhow::Result<()> {
    ensure!(ok, "{what}: no");
    println!("ok  {what}");
    Ok(())
}

fn journal(ct: &Container) -> anyhow::Result<String> {
    // This boot's only: a tree kept with --tree has the journals of earlier runs.
    ct.ok("journalctl", &["-b", "-u", "allowgate", "-o", "cat", "--no-pager"])
}

/// The package's pins, as the container sees its bpffs.
fn pinned(ct: &Container) -> bool {
    ct.run("test", &["-d", "/sys/fs/bpf/allowgate"])
        .is_ok_and(|(code, _, _)| code == 0)
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
