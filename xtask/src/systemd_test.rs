//! `cargo xtask test-systemd`: the Debian package under a real systemd.
//!
//! mmdebstrap makes a minimal Debian tree; systemd-nspawn boots it with systemd as PID 1
//! in a network namespace of ours, joined by a veth pair to a peer namespace (addresses
//! from 192.0.2.0/24 and 203.0.113.0/24 only, never the host's uplink). The package is
//! installed in it and the unit is put through what an operator does: start (returns
//! only once enforcing), probes from the peer, reload with a good and a broken config,
//! stop (still enforcing) and start (adopted, no gap), every verb under the unit's
//! sandbox, the journal, `man`, the completions, remove and purge.
//!
//! Everything it makes (the tree, the container, the namespaces and veths, the pins,
//! which live in a bpffs mounted inside the container) goes when it ends, on failure too.
//! `--skip-if-unable` (what CI passes) turns "this machine cannot boot the container"
//! (no root, no Debian mirror, nspawn cannot boot) into one line and exit 0;
//! a failure once the container runs is always a failure.

use std::{
    fs,
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::FromRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::common::netns::{Netns, Pair, Servers, sa};

/// An address of the peer that neither the config nor the catalog lists.
const UNLISTED_V4: &str = "203.0.113.10";
/// What the peer's resolver answers for a name under the portal's
/// `*.eu.portal.cloudappsecurity.com`; the peer holds it, with a TCP server on :443.
const TENANT_V4: &str = "198.51.100.40";
const TENANT_NAME: &str = "tenant.eu.portal.cloudappsecurity.com";
const HOST_V4: &str = crate::common::netns::HOST_V4;
const PEER_V4: &str = crate::common::netns::PEER_V4;
const HOST_V6: &str = crate::common::netns::HOST_V6;
/// What the container needs besides the minimal base: systemd as init, D-Bus for
/// systemctl, iproute2, man-db for `man allowgate`, bash-completion to try the
/// completions, and the package's dependencies (procps for the unit's /bin/kill), since
/// the container has no network to fetch them: `dpkg -i` checks they are there.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,man-db,bash-completion,procps";
const SUITE: &str = "bookworm";
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

#[derive(Debug, clap::Args)]
pub struct Args {
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

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let result = prepare(args).and_then(|prepared| match prepared {
        Err(Unable(why)) => Ok(Some(why)),
        Ok((deb, tree)) => test(&deb, tree),
    });
    match result {
        Ok(None) => {
            println!("\ntest-systemd: passed in {:.0} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Ok(Some(why)) if args.skip_if_unable => {
            println!("test-systemd: skipped, this machine cannot boot the test container: {why}");
            Ok(())
        }
        Ok(Some(why)) => bail!("this machine cannot boot the test container: {why}"),
        Err(e) => Err(e),
    }
}

/// The root file system of the container, removed on drop (unless it is `--tree`'s).
struct Tree {
    dir: tempfile::TempDir,
    kept: Option<PathBuf>,
}

impl Tree {
    fn root(&self) -> PathBuf {
        self.kept.clone().unwrap_or_else(|| self.dir.path().join("root"))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // No mount may be left in the tree before it is removed (nspawn unmounts its
        // own; this is for a crash in between).
        let root = self.root();
        if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
            let mut under: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| Path::new(m).starts_with(&root))
                .collect();
            under.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in under {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
    }
}

/// The package, and a Debian tree to boot; or why this machine cannot.
fn prepare(args: &Args) -> anyhow::Result<Result<(PathBuf, Tree), Unable>> {
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

    let deb = match &args.deb {
        Some(deb) => deb.clone(),
        None => {
            step("the package: cargo xtask deb");
            crate::deb::package(true, &crate::deb::default_out())?
        }
    };

    step(&format!("a minimal Debian {SUITE} with systemd: mmdebstrap"));
    let tree = Tree {
        dir: tempfile::Builder::new().prefix("allowgate-systemd-").tempdir()?,
        kept: args.tree.clone(),
    };
    if tree.kept.as_ref().is_some_and(|t| t.join("usr/bin/systemctl").exists()) {
        println!("reusing {}", tree.root().display());
        return Ok(Ok((deb, tree)));
    }
    let t = Instant::now();
    let out = Command::new("mmdebstrap")
        .args(["--variant=minbase", &format!("--include={INCLUDE}")])
        .arg(SUITE)
        .arg(tree.root())
        .arg(&args.mirror)
        .stdin(Stdio::null())
        .output()
        .context("cannot run mmdebstrap")?;
    if !out.status.success() {
        let why = mmdebstrap_failure(&out.stderr);
        return Ok(Err(Unable(format!("mmdebstrap from {} failed: {why}", args.mirror))));
    }
    println!("built in {:.0} s", t.elapsed().as_secs_f64());
    Ok(Ok((deb, tree)))
}

/// The line of mmdebstrap's output that says why it failed: apt's "Failed to fetch"
/// (no mirror) rather than its own closing "E: mmdebstrap failed to run".
pub fn mmdebstrap_failure(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    let telling = errors
        .iter()
        .find(|l| l.contains("Failed to fetch") || l.contains("Unable to") || l.contains("Could not"))
        .or(errors.first())
        .copied()
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()));
    telling.map_or_else(|| "no output".to_string(), |l| l.trim().to_string())
}

/// `apt-get install`, with `apt-get update` first when the lists are too old or empty
/// (a fresh machine has none) for it to find the packages.
pub fn apt_install(packages: &[&str]) -> bool {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    install()
        || (Command::new("apt-get")
            .args(["update", "-qq"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && install())
}

fn has_command(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

fn step(text: &str) {
    println!("\n== {text}");
}

/// The booted container: systemd-nspawn, and the PID of the container's systemd.
/// Dropping it powers the container off (then kills it if it does not stop).
struct Container {
    nspawn: Child,
    leader: u32,
    log: PathBuf,
}

impl Container {
    fn boot(root: &Path, netns: &Netns, log: &Path) -> Result<Container, Unable> {
        let log_file = fs::File::create(log).map_err(|e| Unable(format!("cannot write {}: {e}", log.display())))?;
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(root)
            .args([
                "--boot",
                // This host's PID 1 may not be systemd, and has no D-Bus to register with.
                "--register=no",
                "--keep-unit",
                "--quiet",
                // The daemon's capabilities on top of nspawn's default set (which has
                // CAP_SYS_ADMIN, for the container's own mounts, but not these; nor
                // CAP_NET_ADMIN when the network namespace is given by path).
                "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
                // nspawn's own seccomp filter refuses bpf(2) (EPERM) to everything the
                // container's systemd starts; without this the unit's daemon cannot
                // create a map, whatever its own sandbox allows.
                "--system-call-filter=bpf",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
            ])
            .arg(format!("--machine={}", netns.name))
            .arg(format!("--network-namespace-path={}", netns.path().display()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| Unable(e.to_string()))?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| Unable(format!("cannot run systemd-nspawn: {e}")))?;
        let mut container = Container {
            nspawn,
            leader: 0,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // The leader: nspawn's child, once it has become systemd.
        while container.leader == 0 {
            if let Ok(Some(status)) = container.nspawn.try_wait() {
                return Err(Unable(format!(
                    "systemd-nspawn exited ({status}) before systemd ran: {}",
                    container.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(Unable(format!(
                    "systemd did not start in the container within 60 s: {}",
                    container.log_tail()
                )));
            }
            let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children", pid = container.nspawn.id()))
                .unwrap_or_default();
            for pid in children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd") {
                    container.leader = pid;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // systemctl answers once systemd is up; `--wait` returns when boot is done.
        let state = loop {
            let out = container
                .command("systemctl", &["is-system-running", "--wait"])
                .output();
            match out {
                Ok(out) if !out.stdout.is_empty() => break String::from_utf8_lossy(&out.stdout).trim().to_string(),
                _ if Instant::now() > deadline => {
                    return Err(Unable(format!(
                        "systemd in the container did not finish booting within 60 s: {}",
                        container.log_tail()
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        if state != "running" && state != "degraded" {
            return Err(Unable(format!("the container's systemd is {state} after boot")));
        }
        Ok(container)
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }

    /// A command run inside the container: its namespaces (mount, PID, network, ...) and
    /// root, as root.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.leader.to_string())
            .args(["--all", "--", program])
            .args(args)
            .stdin(Stdio::null())
            .env("SYSTEMD_PAGER", "")
            .env("PAGER", "cat")
            .env("SYSTEMD_COLORS", "0");
        c
    }

    /// Runs it inside, returns (exit code, stdout, stderr).
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = self
            .command(program, args)
            .output()
            .with_context(|| format!("cannot run {program} in the container"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs it inside and wants exit 0; returns stdout.
    fn ok(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let (code, out, err) = self.run(program, args)?;
        ensure!(
            code == 0,
            "`{program} {}` in the container exited {code}: {}{}",
            args.join(" "),
            out.trim(),
            err.trim()
        );
        Ok(out)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.leader != 0 {
            // SIGRTMIN+4 asks systemd to power off.
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(self.leader as i32, libc::SIGRTMIN() + 4) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("test-systemd: the container did not power off in 20 s: killing it");
        if self.leader != 0 {
            // SAFETY: as above.
            unsafe { libc::kill(self.leader as i32, libc::SIGKILL) };
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// A TCP connection from `src` (an address of the calling thread's namespace) to `dst`
/// that completes and answers "ok" within `timeout`. std cannot bind before connecting.
fn connects_from(src: Ipv4Addr, dst: SocketAddr, timeout: Duration) -> bool {
    let SocketAddr::V4(dst) = dst else {
        return false;
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on an fd owned here; the addresses outlive the calls.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return false;
        }
        let stream = TcpStream::from_raw_fd(fd);
        let from = sockaddr(src, 0);
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) != 0 {
            return false;
        }
        let to = sockaddr(*dst.ip(), dst.port());
        let rc = libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len);
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, timeout.as_millis() as i32) != 1 {
            return false;
        }
        if !matches!(stream.take_error(), Ok(None)) || stream.set_nonblocking(false).is_err() {
            return false;
        }
        let mut stream = stream;
        let _ = stream.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).is_ok() && &buf == b"ok"
    }
}

/// The peer's view: does `src` reach the container's :22?
fn probe(peer: &Netns, src: &str) -> bool {
    let src: Ipv4Addr = src.parse().expect("an IPv4 address");
    peer.enter(move || connects_from(src, sa(HOST_V4, 22), PROBE_TIMEOUT))
}

/// Probes from the peer in a loop until dropped, one thread per source address (a
/// refused probe waits out its timeout): (tries, connected) per source.
struct Prober {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 4]>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(peer: &Netns) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        let threads = [PEER_V4, UNLISTED_V4]
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let (stop, counts) = (stop.clone(), counts.clone());
                let src: Ipv4Addr = src.parse().expect("an IPv4 address");
                peer.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let ok = connects_from(src, sa(HOST_V4, 22), Duration::from_millis(200));
                        counts[i * 2].fetch_add(1, Ordering::Relaxed);
                        counts[i * 2 + 1].fetch_add(ok as u64, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Prober { stop, counts, threads }
    }

    /// ((tries, connected) from the management address, (tries, connected) from the
    /// unlisted one).
    fn finish(mut self) -> ((u64, u64), (u64, u64)) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        ((c(0), c(1)), (c(2), c(3)))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn config(iface: &str, extra: &str) -> String {
    format!(
        r#"# test-systemd: enforce on the container's end of the veth.
interfaces = ["{iface}"]
mode = "enforce"
regions = ["eu1"]
features = ["portal", "siem"]
metrics = "127.0.0.1:9464"
# One drop summary a second, so the journal shows the unlisted probes' drops.
drop_log_interval = 1

[essentials]
# The peer's resolver: DNS names are learned from its answers, held and given back.
dns_servers = ["{PEER_V4}"]

[dns]
learn = true
refresh = 3600

[management]
cidrs = ["{PEER_V4}/32", "2001:db8:1::2/128"]
ports = [22]
{extra}"#
    )
}

/// The unlisted address let in to :22: what the good reload adds.
const ALLOW_UNLISTED: &str = r#"
[[allow]]
cidr = "203.0.113.10/32"
direction = "ingress"
proto = "tcp"
ports = [22]
comment = "added by the reload"
"#;

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

/// Ok(Some(why)) when the container does not boot here; Err when the test fails.
fn test(deb: &Path, tree: Tree) -> anyhow::Result<Option<String>> {
    let root = tree.root();
    step("namespaces: the container's and a peer, a veth pair between them (documentation addresses)");
    let pair = Pair::new(&[UNLISTED_V4, TENANT_V4]);
    println!(
        "container netns {} on {} ({HOST_V4}, {HOST_V6}); peer {} on {} ({PEER_V4}, {UNLISTED_V4})",
        pair.host.name, pair.host_if, pair.peer.name, pair.peer_if
    );
    // The container answers on :22 (a listener in its namespace), and routes back to the
    // unlisted address, so only the filter can keep that address out.
    // One dual-stack socket ([::]:22 takes IPv4 too).
    let _sshd = Servers::start(&pair.host, &[sa("::", 22)], &[]);
    // The resolver, and a server behind a catalog wildcard name.
    let _resolver = crate::common::dns::DnsServer::start(
        &pair.peer,
        sa(PEER_V4, 53),
        crate::common::dns::Zone::new().a(TENANT_NAME, 300, TENANT_V4),
    );
    let _tenant = Servers::start(&pair.peer, &[sa(TENANT_V4, 443)], &[]);
    check(
        "without allowgate, the management and the unlisted address both reach :22",
        probe(&pair.peer, PEER_V4) && probe(&pair.peer, UNLISTED_V4),
    )?;

    step("boot: systemd-nspawn --boot, systemd as PID 1");
    let t = Instant::now();
    let log = tree.dir.path().join("nspawn.log");
    let ct = match Container::boot(&root, &pair.host, &log) {
        Ok(ct) => ct,
        Err(Unable(why)) => return Ok(Some(why)),
    };
    println!(
        "booted in {:.1} s (container PID 1 is {} here)",
        t.elapsed().as_secs_f64(),
        ct.leader
    );
    // A bpffs of the container's own: its pins vanish with it, and never mix with the host's.
    ct.ok("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])?;

    step("install: dpkg -i allowgate.deb");
    fs::copy(deb, root.join("root/allowgate.deb")).context("cannot copy the package into the container")?;
    let (code, out, err) = ct.run("dpkg", &["-i", "/root/allowgate.deb"])?;
    ensure!(code == 0, "dpkg -i failed ({code}): {out}{err}");
    print!("{err}");
    let (_, enabled, _) = ct.run("systemctl", &["is-enabled", "allowgate"])?;
    let (_, active, _) = ct.run("systemctl", &["is-active", "allowgate"])?;
    check(
        &format!(
            "installing neither enables nor starts it ({}, {})",
            enabled.trim(),
            active.trim()
        ),
        enabled.trim() == "disabled" && active.trim() == "inactive",
    )?;
    check(
        "nothing is pinned and nothing filtered after the install",
        !pinned(&ct) && probe(&pair.peer, UNLISTED_V4),
    )?;
    let conffiles = ct.ok("dpkg-query", &["-W", "-f=${Conffiles}", "allowgate"])?;
    check(
        "the config is a conffile",
        conffiles.contains("/etc/allowgate/config.toml"),
    )?;
    let man = ct.ok("man", &["-P", "cat", "allowgate"])?;
    check(
        "`man allowgate` shows the page",
        man.contains("allowgate") && man.contains("status"),
    )?;
    let man = ct.ok("man", &["-P", "cat", "5", "allowgate.toml"])?;
    check("`man 5 allowgate.toml` documents the keys", man.contains("bpffs_dir"))?;
    let man = ct.ok("man", &["-P", "cat", "allowgate-catalog-fetch"])?;
    check(
        "`man allowgate-catalog-fetch` has the verb's options",
        man.contains("--ca-file"),
    )?;
    // What bash offers after `allowgate enable ` and `allowgate show --feature `: the
    // regions come from the installed binary, at the time of the Tab.
    let offered = ct.ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/bash_completion; \
             source /usr/share/bash-completion/completions/allowgate; \
             COMP_WORDS=(allowgate enable ''); COMP_CWORD=2; COMP_LINE='allowgate enable '; COMP_POINT=17; \
             _allowgate allowgate '' enable; echo \"${COMPREPLY[*]}\"; \
             COMP_WORDS=(allowgate show --feature ''); COMP_CWORD=3; \
             _allowgate allowgate '' --feature; echo \"${COMPREPLY[*]}\"",
        ],
    )?;
    check(
        &format!(
            "bash completes regions and features: {}",
            offered.trim().replace('\n', " | ")
        ),
        offered.contains("eu1") && offered.contains("gov-us1") && offered.contains("log-collector"),
    )?;

    step("start: systemctl start returns once the policy is attached");
    let conf = root.join("etc/allowgate/config.toml");
    fs::write(&conf, config(&pair.host_if, ""))?;
    let t = Instant::now();
    if let Err(e) = ct.ok("systemctl", &["start", "allowgate"]) {
        bail!("{e:#}\njournalctl -u allowgate:\n{}", journal(&ct).unwrap_or_default());
    }
    let start_ms = t.elapsed().as_millis();
    // Right away, no waiting: READY=1 came after the attach.
    check(
        &format!("`systemctl start` took {start_ms} ms, and at once status says enforce, attached (exit 0)"),
        enforcing(&ct, &pair.host_if)?,
    )?;
    check(
        "the unlisted address is dropped at once",
        !probe(&pair.peer, UNLISTED_V4),
    )?;
    check("the management address reaches :22", probe(&pair.peer, PEER_V4))?;
    check(
        "the management address reaches :22 over IPv6",
        crate::common::netns::tcp_connects(&pair.peer, sa(HOST_V6, 22), PROBE_TIMEOUT),
    )?;
    let metrics = crate::common::netns::http_get(&pair.host, sa("127.0.0.1", 9464), "/metrics", PROBE_TIMEOUT)
        .context("the metrics endpoint does not answer")?;
    check(
        "the metrics endpoint answers inside the sandbox",
        metrics.contains("200 OK"),
    )?;

    step("DNS under the unit: an answer held, learned and given back, its first connection through");
    let dns = status_json(&ct)?["dns"].clone();
    let path = dns["path"].as_str().unwrap_or_default().to_string();
    check(
        &format!("a give-back path works under the unit's sandbox: {path} ({dns})"),
        dns["learning"] == true && (path == "loopback" || path == "live-frames"),
    )?;
    check(
        &format!("{TENANT_V4} is dropped before its name is resolved"),
        !crate::common::netns::tcp_connects(&pair.host, sa(TENANT_V4, 443), PROBE_TIMEOUT),
    )?;
    let (answer, connected) = pair.host.enter(|| {
        let (answer, _) = crate::common::dns::resolve_here(
            sa(PEER_V4, 53),
            TENANT_NAME,
            hickory_proto::rr::RecordType::A,
            Duration::from_secs(2),
        );
        // Shorter than TCP's 1 s SYN retransmit: a dropped first SYN fails.
        let connected =
            answer.is_some() && crate::common::netns::tcp_connects_here(sa(TENANT_V4, 443), Duration::from_millis(300));
        (answer, connected)
    });
    check(
        &format!("{TENANT_NAME} answered ({answer:?}) and the first connection to it passed at once"),
        answer.as_deref() == Some(&[TENANT_V4.parse::<std::net::IpAddr>()?][..]) && connected,
    )?;
    let dns = status_json(&ct)?["dns"].clone();
    check(
        &format!("status counts it held and given back, none lost ({dns})"),
        dns["held"].as_u64() >= Some(1) && dns["given_back"].as_u64() >= Some(1) && dns["failed"] == 0,
    )?;

    step("reload: a good config applies, a broken one is refused");
    let before = generation(&ct)?;
    fs::write(&conf, config(&pair.host_if, ALLOW_UNLISTED))?;
    ct.ok("systemctl", &["reload", "allowgate"])?;
    let applied = wait_until(Duration::from_secs(5), || generation(&ct).is_ok_and(|g| g > before));
    check(
        "the good reload swapped in a new generation and lets the added address in",
        applied && probe(&pair.peer, UNLISTED_V4),
    )?;
    let good = generation(&ct)?;
    fs::write(&conf, config(&pair.host_if, "[[allow]]\ncidr = \"not-an-address\"\n"))?;
    let (code, _, _) = ct.run("systemctl", &["reload", "allowgate"])?;
    let refused = wait_until(Duration::from_secs(5), || {
        journal(&ct).is_ok_and(|j| j.contains("reload refused"))
    });
    check(
        &format!("the broken reload is refused (systemctl exit {code}; journal: \"reload refused\")"),
        code != 0 || refused,
    )?;
    check(
        "the old policy stays: same generation, the added address still reaches :22",
        generation(&ct)? == good && probe(&pair.peer, UNLISTED_V4) && enforcing(&ct, &pair.host_if)?,
    )?;
    fs::write(&conf, config(&pair.host_if, ""))?;
    ct.ok("systemctl", &["reload", "allowgate"])?;
    check(
        "back to the first config: the unlisted address is dropped again",
        wait_until(Duration::from_secs(5), || !probe(&pair.peer, UNLISTED_V4)),
    )?;

    step("the sandbox lets every verb work");
    for verb in [
        &["status"][..],
        &["regions"],
        &["show", "--region", "eu1"],
        &["enable", "eu2"],
        &["disable", "eu2"],
        &["mode", "monitor"],
        &["mode", "enforce"],
        &[
            "catalog",
            "apply",
            "/usr/share/allowgate/network-requirements-2019-11.md",
        ],
    ] {
        ct.ok("allowgate", verb)?;
        println!("ok  allowgate {}", verb.join(" "));
    }
    let (code, out, _) = ct.run("allowgate", &["check", PEER_V4, "--port", "22", "--direction", "in"])?;
    check(
        &format!("allowgate check {PEER_V4} :22 in: allowed (exit {code})"),
        code == 0 && !out.is_empty(),
    )?;
    let (code, _, _) = ct.run(
        "allowgate",
        &["check", UNLISTED_V4, "--port", "22", "--direction", "in"],
    )?;
    check(
        &format!("allowgate check {UNLISTED_V4} :22 in: denied (exit {code})"),
        code == 1,
    )?;
    ct.ok("systemctl", &["enable", "allowgate"])?;
    ct.ok("systemctl", &["disable", "allowgate"])?;
    println!("ok  systemctl enable / disable allowgate");
    let journal_text = journal(&ct)?;
    // The give-back line names the kernel's refusal of live frames where it refuses them
    // (to every process, sandboxed or not): that one is not the sandbox's doing.
    let sandboxed: String = journal_text
        .lines()
        .filter(|l| !l.contains("DNS answers are held and given back through"))
        .collect::<Vec<_>>()
        .join("\n");
    for bad in ["Operation not permitted", "SIGSYS", "panicked", "EPERM"] {
        ensure!(
            !sandboxed.contains(bad),
            "the journal has {bad:?}: the sandbox refused something:\n{journal_text}"
        );
    }
    check(
        "still enforcing after every verb",
        enforcing(&ct, &pair.host_if)? && !probe(&pair.peer, UNLISTED_V4),
    )?;

    step("upgrade: the package again over itself restarts the running daemon, which adopts with no gap");
    let main_pid = |ct: &Container| ct.ok("systemctl", &["show", "-P", "MainPID", "allowgate"]);
    let pid_before = main_pid(&ct)?;
    let config_before = fs::read_to_string(&conf)?;
    let prober = Prober::start(&pair.peer);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = ct.run("dpkg", &["-i", "/root/allowgate.deb"])?;
    ensure!(
        code == 0,
        "dpkg -i over the installed package failed ({code}): {out}{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let ((tries, passed), (bad_tries, let_through)) = prober.finish();
    let pid_after = main_pid(&ct)?;
    check(
        &format!(
            "the daemon was restarted (MainPID {} -> {})",
            pid_before.trim(),
            pid_after.trim()
        ),
        pid_before != pid_after && pid_after.trim() != "0",
    )?;
    check(
        &format!("through the upgrade: {passed}/{tries} management probes passed, {let_through}/{bad_tries} unlisted"),
        tries > 20 && passed == tries && bad_tries > 0 && let_through == 0,
    )?;
    check(
        "the edited config (a conffile) was kept",
        fs::read_to_string(&conf)? == config_before,
    )?;

    step("stop keeps enforcing; start adopts with no gap");
    let prober = Prober::start(&pair.peer);
    std::thread::sleep(Duration::from_millis(300));
    ct.ok("systemctl", &["stop", "allowgate"])?;
    let (_, active, _) = ct.run("systemctl", &["is-active", "allowgate"])?;
    ensure!(active.trim() == "inactive", "after stop the unit is {}", active.trim());
    std::thread::sleep(Duration::from_millis(1000));
    let stopped_generation = pinned(&ct);
    ct.ok("systemctl", &["start", "allowgate"])?;
    std::thread::sleep(Duration::from_millis(300));
    let ((tries, passed), (bad_tries, let_through)) = prober.finish();
    check("the pins stay while the service is stopped", stopped_generation)?;
    check(
        &format!(
            "through stop and start: {passed}/{tries} management probes passed, {let_through}/{bad_tries} unlisted"
        ),
        tries > 20 && passed == tries && bad_tries > 5 && let_through == 0,
    )?;
    let journal_text = journal(&ct)?;
    check(
        "the new daemon adopted the pinned policy",
        journal_text.contains("adopted the pinned policy"),
    )?;

    step("the journal: one line per event");
    println!("{journal_text}");
    let lines: Vec<&str> = journal_text.lines().collect();
    for (event, count) in [
        ("INFO enforcing generation=", 3),
        ("INFO adopted the pinned policy", 2),
        ("INFO reloaded generation=", 2),
        ("ERROR reload refused", 1),
        ("INFO changed uid=0", 4),
        ("INFO catalog applied", 1),
        ("INFO exiting; the policy stays enforced", 2),
    ] {
        let seen = lines.iter().filter(|l| l.trim_start().starts_with(event)).count();
        check(&format!("{count} line(s) \"{event}...\" (saw {seen})"), seen == count)?;
    }
    // systemd says "Started" only after the daemon said it enforces (READY=1 follows it).
    let mut enforcing_since_starting = false;
    let mut starts = 0;
    for line in &lines {
        if line.starts_with("Starting allowgate.service") {
            enforcing_since_starting = false;
        } else if line.trim_start().starts_with("INFO enforcing generation=") {
            enforcing_since_starting = true;
        } else if line.starts_with("Started allowgate.service") {
            ensure!(
                enforcing_since_starting,
                "systemd reported the start before the daemon enforced"
            );
            starts += 1;
        }
    }
    check(
        &format!("each of the {starts} starts: \"enforcing\" before systemd's \"Started\""),
        starts == 3,
    )?;
    // Every line is the daemon's (a level, or the one-line error of `allowgate:`) or
    // systemd's own: nothing continues a line (no multi-line message, no backtrace).
    let strays: Vec<&&str> = lines
        .iter()
        .filter(|l| {
            let daemon = ["INFO ", "WARN ", "ERROR ", "DEBUG ", "allowgate: "]
                .iter()
                .any(|p| l.trim_start().starts_with(p));
            let systemd = [
                "Starting ",
                "Started ",
                "Stopping ",
                "Stopped ",
                "Reloading ",
                "Reloaded ",
                "allowgate.service: ",
            ]
            .iter()
            .any(|p| l.starts_with(p));
            !daemon && !systemd
        })
        .collect();
    check(
        &format!("every line is one whole message (strays: {strays:?})"),
        strays.is_empty(),
    )?;
    // Drops are summed up in one line per interval (never a line per packet).
    check(
        "drops are summed up in one line per interval",
        lines
            .iter()
            .any(|l| l.contains("INFO dropped ") && l.contains("packets in the last 1 s: ingress policy")),
    )?;

    step("remove keeps the pinned policy; purge removes it");
    let (code, out, err) = ct.run("dpkg", &["-r", "allowgate"])?;
    ensure!(code == 0, "dpkg -r failed ({code}): {out}{err}");
    let (_, active, _) = ct.run("systemctl", &["is-active", "allowgate"])?;
    check(
        &format!(
            "after dpkg -r the service is stopped ({}) and still enforcing",
            active.trim()
        ),
        active.trim() != "active" && pinned(&ct) && !probe(&pair.peer, UNLISTED_V4) && probe(&pair.peer, PEER_V4),
    )?;
    let (code, out, err) = ct.run("dpkg", &["--purge", "allowgate"])?;
    ensure!(code == 0, "dpkg --purge failed ({code}): {out}{err}");
    print!("{err}");
    check("after dpkg --purge: no pins", !pinned(&ct))?;
    check("after dpkg --purge: no state", !root.join("var/lib/allowgate").exists())?;
    // The kernel may let go of an unpinned link's program a moment later.
    check(
        "after dpkg --purge: no filter, the unlisted address reaches :22 again",
        wait_until(Duration::from_secs(5), || probe(&pair.peer, UNLISTED_V4)),
    )?;
    drop(ct);
    drop(pair);
    drop(tree);
    Ok(None)
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
