//! Sharing the NIC (issue 22): allowgate with other XDP programs on one interface
//! through libxdp's dispatcher (xdp-filter from xdp-tools, in both orders), a clear
//! word on who holds a hook allowgate cannot share, a first start that fails leaving
//! no pin, and a tcx program of another owner beside allowgate's on egress. Each with
//! the control that shows the hole it closes.
//!
//! libxdp keeps its pins under `$LIBXDP_BPFFS/xdp`: every test gives xdp-filter,
//! xdp-loader and the daemon a bpffs directory of its own there, removed (after the
//! namespaces, whose interfaces hold the dispatchers) even when the test fails.
//!
//! A libxdp dispatcher's programs are extension (freplace) programs. A kernel that
//! refuses those (this project's own machines do, with EPERM) can run no dispatcher
//! with programs in it, libxdp's included: there the dispatcher tests check what
//! allowgate and libxdp do instead, and say so in one line.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, tc::TcAttachOptions};
use serde_json::Value;
use testkit::{
    daemon::Daemon,
    netns::{PEER_V4, sa},
    world::*,
};

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");

/// Whether this kernel takes extension programs (what a dispatcher's are); when it
/// does not, the one line that says so.
fn extensions() -> bool {
    match allowgate::dataplane::dispatcher::probe_extensions() {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "this kernel refuses extension programs, so no dispatcher can hold programs here: testing what happens instead ({e})"
            );
            false
        }
    }
}

/// A bpffs directory for libxdp's pins (`LIBXDP_BPFFS`), removed on drop.
struct LibxdpDir(PathBuf);

impl LibxdpDir {
    fn new() -> LibxdpDir {
        testkit::require_root();
        allowgate::dataplane::ensure_bpffs().expect("bpffs");
        let dir = Path::new("/sys/fs/bpf").join(testkit::unique("ag-libxdp-"));
        std::fs::create_dir_all(&dir).expect("create the libxdp directory");
        LibxdpDir(dir)
    }
}

impl Drop for LibxdpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A world, its libxdp directory, and what xdp-filter was given (its maps are shared
/// by every xdp-filter of the host: the addresses this test adds go again). The world
/// drops first, its namespaces (whose interfaces hold the dispatchers) before its pins,
/// then libxdp's directory.
struct Shared {
    world: World,
    libxdp: LibxdpDir,
    filtered: std::cell::RefCell<Vec<String>>,
}

impl Shared {
    /// `allowgate down`, with libxdp's bpffs directory of this world.
    fn down(&self) {
        self.world
            .cli_env(
                &["down", "--config", self.world.config.to_str().unwrap()],
                &[("LIBXDP_BPFFS", self.libxdp.0.to_str().unwrap())],
            )
            .ok();
    }

    fn new(extra: &str) -> Shared {
        let libxdp = LibxdpDir::new();
        let world = World::new(
            BIN,
            Setup {
                extra: extra.to_string(),
                ..Setup::default()
            },
        );
        Shared {
            world,
            libxdp,
            filtered: Default::default(),
        }
    }

    fn iface(&self) -> String {
        self.world.pair.host_if.clone()
    }

    fn env(&self) -> [(&'static str, &Path); 1] {
        [("LIBXDP_BPFFS", self.libxdp.0.as_path())]
    }

    fn daemon(&self) -> Daemon {
        Daemon::start_env(
            self.world.host(),
            &self.world.bin,
            &self.world.config,
            self.world.dir.path(),
            &self.env(),
        )
    }

    /// `allowgate daemon` that is expected to fail: run to its end (at most 2 minutes:
    /// an emulated machine loads the filter slowly).
    fn daemon_fails(&self) -> Out {
        self.daemon_fails_with(&[])
    }

    /// `daemon_fails`, run through `wrapper` (a command and its arguments).
    fn daemon_fails_with(&self, wrapper: &[&str]) -> Out {
        let mut c = Command::new("timeout");
        c.arg("120")
            .arg("nsenter")
            .arg(format!("--net={}", self.world.host().path().display()))
            .arg("--")
            .args(wrapper)
            .arg(BIN)
            .args(["daemon", "--config"])
            .arg(&self.world.config)
            .env("LIBXDP_BPFFS", &self.libxdp.0)
            .env_remove("NOTIFY_SOCKET");
        let out = Out::of(c);
        assert_eq!(out.code, 1, "the start was to fail: {out}");
        out
    }

    /// An xdp-tools command in the host namespace with this test's libxdp pins.
    fn tool(&self, program: &str, args: &[&str]) -> Out {
        let mut c = self.world.host().command(program);
        c.args(args).env("LIBXDP_BPFFS", &self.libxdp.0);
        Out::of(c)
    }

    /// xdp-filter on the host's interface, dropping what comes from `from`.
    fn xdp_filter(&self, from: &str) {
        self.tool("xdp-filter", &["load", "--mode", "native", &self.iface()])
            .ok();
        self.filtered.borrow_mut().push(from.to_string());
        self.tool("xdp-filter", &["ip", from, "--mode", "src"]).ok();
    }

    /// xdp-filter's hit counter of the address it filters.
    fn xdp_filter_hits(&self, addr: &str) -> u64 {
        let out = self.tool("xdp-filter", &["status"]).ok();
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(addr))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no hit counter of {addr} in xdp-filter status: {out}"))
    }

    fn status(&self) -> Value {
        let out = self.world.cli_env(
            &["status", "--json", "--config", self.world.config.to_str().unwrap()],
            &[("LIBXDP_BPFFS", self.libxdp.0.to_str().unwrap())],
        );
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
    }

    fn table(&self) -> String {
        self.world
            .cli_env(
                &["status", "--config", self.world.config.to_str().unwrap()],
                &[("LIBXDP_BPFFS", self.libxdp.0.to_str().unwrap())],
            )
            .stdout
    }

    /// allowgate's pins left under its `bpffs_dir`.
    fn pins(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.world.pins.0, &mut out);
        out
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for addr in self.filtered.borrow().iter() {
            let _ = self.tool("xdp-filter", &["ip", addr, "--mode", "src", "--remove"]);
        }
        if !self.filtered.borrow().is_empty() {
            let _ = self.tool("xdp-filter", &["unload", &self.iface()]);
        }
        // What xdp-filter leaves of its own state when a load fails (only when empty:
        // another xdp-filter of the host may use it).
        let _ = std::fs::remove_dir("/sys/fs/bpf/xdp-filter/programs");
        let _ = std::fs::remove_dir("/sys/fs/bpf/xdp-filter");
    }
}

fn hook(status: &Value, name: &str) -> Value {
    status["interfaces"][0]["hooks"]
        .as_array()
        .unwrap_or_else(|| panic!("no hooks in {status}"))
        .iter()
        .find(|h| h["hook"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} hook in {status}"))
}

fn names(hook: &Value) -> Vec<String> {
    hook["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn ingress_drops(status: &Value) -> u64 {
    status["counters"]["ingress"]["drop"].as_u64().unwrap()
}

fn ingress_passes(status: &Value) -> u64 {
    status["counters"]["ingress"]["pass"].as_u64().unwrap()
}

/// Datagrams from `from` (an address of the peer) to the host's port 9: what
/// allowgate drops at ingress (no rule lets them in).
fn send_from(world: &World, from: &'static str, count: usize) {
    world.pair.peer.enter(move || {
        let sock = std::net::UdpSocket::bind(sa(from, 0)).expect("bind on the peer");
        for _ in 0..count {
            let _ = sock.send_to(b"probe", sa(testkit::netns::HOST_V4, 9));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
}

/// Whether a datagram the host sends to `to` (an address of the peer) leaves the
/// host: the peer listens for it. Only egress judges it.
fn egress_reaches(world: &World, to: &'static str) -> bool {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = world.pair.peer.spawn(move || {
        let sock = std::net::UdpSocket::bind(sa(to, 7777)).expect("bind on the peer");
        sock.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 16];
        sock.recv_from(&mut buf).is_ok()
    });
    ready_rx.recv().unwrap();
    world.host().enter(move || {
        let sock = std::net::UdpSocket::bind(sa(testkit::netns::HOST_V4, 0)).unwrap();
        for _ in 0..3 {
            let _ = sock.send_to(b"out", sa(to, 7777));
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    listener.join().unwrap()
}

/// `count` datagrams from the host to `to:port`.
fn send_udp(world: &World, to: &'static str, port: u16, count: usize) {
    world.host().enter(move || {
        let sock = std::net::UdpSocket::bind(sa(testkit::netns::HOST_V4, 0)).unwrap();
        for _ in 0..count {
            let _ = sock.send_to(b"out", sa(to, port));
        }
    });
    std::thread::sleep(Duration::from_millis(100));
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// XDP: libxdp's dispatcher

#[test]
fn xdp_filter_first_then_allowgate_both_enforce() {
    let shared = Shared::new("");
    let _servers = shared.world.servers();
    // xdp-filter first, through libxdp: it drops what comes from EU1_ONLY, which
    // allowgate's policy allows.
    shared.xdp_filter(EU1_ONLY);
    // Control: xdp-filter alone lets through what only allowgate forbids.
    assert!(
        shared.world.passes(UNLISTED),
        "before allowgate, nothing blocks UNLISTED"
    );
    assert!(shared.world.blocked(EU1_ONLY), "xdp-filter's own verdict");

    if !extensions() {
        // libxdp attached xdp-filter alone: allowgate names it and how to go on, and
        // its failed first start leaves nothing behind; xdp-filter goes on working.
        let out = shared.daemon_fails();
        for word in [
            "cannot attach XDP on",
            "the hook is held by program",
            "`xdpfilt_alw_all`",
            "tag ",
            "native mode through netlink",
            "detach it (ip link set dev",
            "xdp-loader load",
            "xdp_mode = \"dispatcher\"",
        ] {
            assert!(out.stderr.contains(word), "the error says {word:?}: {out}");
        }
        assert_eq!(
            shared.pins(),
            Vec::<PathBuf>::new(),
            "a failed first start leaves no pin"
        );
        assert!(shared.world.blocked(EU1_ONLY), "xdp-filter still works");
        assert!(shared.world.passes(SHARED));
        return;
    }

    let daemon = shared.daemon();
    let status = shared.status();
    assert_eq!(status["enforcing"], true, "{status}");
    assert_eq!(status["interfaces"][0]["xdp_attach"], "dispatcher", "{status}");
    let xdp = hook(&status, "xdp");
    assert_eq!(
        names(&xdp),
        ["allowgate_xdp", "xdpfilt_alw_all"],
        "allowgate runs first: {xdp}"
    );
    assert_eq!(xdp["position"], 0, "{xdp}");
    assert!(shared.table().contains("[allowgate]"), "{}", shared.table());

    // Both enforce, each its own verdict.
    let before = (shared.status(), shared.xdp_filter_hits(EU1_ONLY));
    assert!(shared.world.passes(SHARED), "passed by both");
    assert!(
        shared.world.blocked(EU1_ONLY),
        "allowgate passes it, xdp-filter drops it"
    );
    send_from(&shared.world, UNLISTED, 20);
    let after = (shared.status(), shared.xdp_filter_hits(EU1_ONLY));
    assert!(
        after.1 > before.1,
        "xdp-filter counted its drops of EU1_ONLY: {before:?} -> {after:?}"
    );
    assert!(
        ingress_passes(&after.0) > ingress_passes(&before.0),
        "allowgate counted EU1_ONLY's answers as passes"
    );
    assert!(
        ingress_drops(&after.0) >= ingress_drops(&before.0) + 20,
        "allowgate counted its drops of UNLISTED's datagrams"
    );
    // Control: without xdp-filter, EU1_ONLY's answers reach the host (the drop was
    // xdp-filter's), and allowgate stays in the dispatcher libxdp rebuilds.
    shared.tool("xdp-filter", &["unload", &shared.iface()]).ok();
    shared.filtered.borrow_mut().clear();
    assert!(shared.world.passes(EU1_ONLY), "xdp-filter's verdict left with it");
    assert!(shared.world.blocked(UNLISTED), "allowgate still enforces");
    assert_eq!(shared.status()["enforcing"], true);
    drop(daemon);
}

#[test]
fn allowgate_first_then_xdp_filter_joins() {
    // Control: allowgate alone on its own bpf_link (xdp_mode = "native", as before
    // this issue) leaves libxdp no room.
    let alone = Shared::new("xdp_mode = \"native\"");
    let _daemon = alone.daemon();
    let out = alone.tool("xdp-filter", &["load", "--mode", "native", &alone.iface()]);
    assert_ne!(out.code, 0, "xdp-filter cannot join allowgate alone: {out}");
    assert!(alone.world.blocked(UNLISTED), "allowgate still enforces");
    drop(_daemon);
    drop(alone);

    let shared = Shared::new("xdp_mode = \"dispatcher\"");
    let _servers = shared.world.servers();
    if !extensions() {
        let out = shared.daemon_fails();
        assert!(
            out.stderr.contains("this kernel refuses extension (freplace) programs")
                && out.stderr.contains("xdp_mode = \"auto\""),
            "{out}"
        );
        assert_eq!(
            shared.pins(),
            Vec::<PathBuf>::new(),
            "a failed first start leaves no pin"
        );
        return;
    }
    let mut daemon = shared.daemon();
    // libxdp sees a dispatcher of its protocol with allowgate in it.
    let out = shared.tool("xdp-loader", &["status", &shared.iface()]).ok();
    assert!(
        out.stdout.contains("xdp_dispatcher") && out.stdout.contains("allowgate_xdp"),
        "{out}"
    );
    assert!(shared.world.blocked(UNLISTED));

    // xdp-filter joins: libxdp rebuilds the dispatcher with both.
    shared.xdp_filter(EU1_ONLY);
    let status = shared.status();
    assert_eq!(status["enforcing"], true, "{status}");
    assert_eq!(
        names(&hook(&status, "xdp")),
        ["allowgate_xdp", "xdpfilt_alw_all"],
        "{status}"
    );
    assert!(shared.world.passes(SHARED));
    assert!(shared.world.blocked(EU1_ONLY), "xdp-filter enforces");
    assert!(shared.world.blocked(UNLISTED), "allowgate enforces");

    // A restart puts the new daemon's program in the old one's place, beside xdp-filter.
    daemon.kill9();
    let _daemon = shared.daemon();
    let status = shared.status();
    assert_eq!(
        names(&hook(&status, "xdp")),
        ["allowgate_xdp", "xdpfilt_alw_all"],
        "{status}"
    );
    assert_eq!(status["enforcing"], true, "{status}");
    assert!(shared.world.blocked(UNLISTED));
    assert!(shared.world.blocked(EU1_ONLY));

    // `down` takes allowgate out; xdp-filter goes on alone in its dispatcher.
    drop(_daemon);
    shared.down();
    let out = shared.tool("xdp-loader", &["status", &shared.iface()]).ok();
    assert!(
        !out.stdout.contains("allowgate_xdp") && out.stdout.contains("xdpfilt_alw_all"),
        "{out}"
    );
    assert!(shared.world.passes(UNLISTED), "allowgate is gone");
    assert!(shared.world.blocked(EU1_ONLY), "xdp-filter is not");
}

#[test]
fn a_program_ahead_that_ends_the_chain_on_pass_keeps_allowgate_out() {
    if !extensions() {
        return;
    }
    let shared = Shared::new("");
    let _servers = shared.world.servers();
    let object = shared.world.dir.path().join("share_test.bpf.o");
    std::fs::write(&object, allowgate_ebpf::SHARE_TEST_OBJ).unwrap();
    // Control: behind a program that ends the chain on XDP_PASS, xdp-filter's drop
    // never happens: what runs after such a program judges nothing it passes.
    shared
        .tool(
            "xdp-loader",
            &[
                "load",
                "--mode",
                "native",
                &shared.iface(),
                object.to_str().unwrap(),
                "--prog-name",
                "a_pass_first",
            ],
        )
        .ok();
    shared.xdp_filter(EU1_ONLY);
    assert!(
        shared.world.passes(EU1_ONLY),
        "xdp-filter behind a_pass_first judges nothing"
    );
    // allowgate refuses that place, naming the program and what to do.
    let out = shared.daemon_fails();
    assert!(
        out.stderr.contains("a_pass_first") && out.stderr.contains("ends the chain on XDP_PASS"),
        "{out}"
    );
    assert_eq!(shared.pins(), Vec::<PathBuf>::new());
}

#[test]
fn a_plain_xdp_program_holding_the_hook_gives_the_clear_error() {
    let shared = Shared::new("");
    let iface = shared.iface();
    let object = shared.world.dir.path().join("noop.bpf.o");
    std::fs::write(&object, allowgate_ebpf::NOOP_OBJ).unwrap();
    // Control: with the hook free, this very config starts.
    let daemon = shared.daemon();
    drop(daemon);
    shared.down();

    // Through netlink, as `ip link` attaches.
    shared.world.host().ip(&[
        "link",
        "set",
        "dev",
        &iface,
        "xdpdrv",
        "obj",
        object.to_str().unwrap(),
        "sec",
        "xdp",
    ]);
    let out = shared.daemon_fails();
    assert_eq!(
        out.stderr.lines().filter(|l| l.starts_with("allowgate:")).count(),
        1,
        "one line: {out}"
    );
    for word in [
        &format!("cannot attach XDP on {iface}: the hook is held by program "),
        "`noop` (tag ",
        "attached alone in native mode through netlink",
        &format!("detach it (ip link set dev {iface} xdpdrv off)"),
        "or load it through libxdp",
    ] {
        assert!(out.stderr.contains(word), "the error says {word:?}: {out}");
    }
    // With the systemd unit's capabilities (no CAP_SYS_ADMIN, which opening another
    // program by id takes), the holder is still named by its id and mode, and the
    // error says what it could not read and why.
    let out = shared.daemon_fails_with(&["setpriv", "--bounding-set", "-sys_admin", "--"]);
    assert!(
        out.stderr.contains("the hook is held by program ")
            && out
                .stderr
                .contains("in native mode (its name and how it is attached cannot be read")
            && out.stderr.contains("CAP_SYS_ADMIN"),
        "{out}"
    );
    shared.world.host().ip(&["link", "set", "dev", &iface, "xdpdrv", "off"]);

    // Through a bpf_link, as aya and libbpf attach.
    let name = iface.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = shared.world.host().spawn(move || {
        let mut ebpf = aya::Ebpf::load(allowgate_ebpf::NOOP_OBJ).expect("load noop");
        let prog: &mut aya::programs::Xdp = ebpf.program_mut("noop").unwrap().try_into().unwrap();
        prog.load().unwrap();
        prog.attach(&name, aya::programs::XdpMode::Driver).expect("attach noop");
        tx.send(()).unwrap();
        let _ = done_rx.recv();
    });
    rx.recv().unwrap();
    let out = shared.daemon_fails();
    assert!(
        out.stderr.contains("`noop`")
            && out.stderr.contains("through bpf_link ")
            && out.stderr.contains("bpftool link detach id "),
        "{out}"
    );
    // And with xdp_mode = "dispatcher" the answer is the same: nothing to join.
    assert_eq!(
        shared.pins(),
        Vec::<PathBuf>::new(),
        "a failed first start leaves no pin"
    );
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}

#[test]
fn a_failed_first_start_leaves_no_pin_and_a_failed_restart_keeps_the_policy() {
    let shared = Shared::new("");
    let iface = shared.iface();
    let object = shared.world.dir.path().join("noop.bpf.o");
    std::fs::write(&object, allowgate_ebpf::NOOP_OBJ).unwrap();
    shared.world.host().ip(&[
        "link",
        "set",
        "dev",
        &iface,
        "xdpgeneric",
        "obj",
        object.to_str().unwrap(),
        "sec",
        "xdp",
    ]);
    // It fails at attaching, after its maps were pinned and its policy installed.
    let out = shared.daemon_fails();
    assert!(out.stderr.contains("the hook is held by"), "{out}");
    assert_eq!(
        shared.pins(),
        Vec::<PathBuf>::new(),
        "nothing of the failed first start stays"
    );

    // Control: a start that worked pins what it enforces (23 maps and more), and a
    // restart that fails afterwards keeps all of it: the policy stays enforced.
    shared
        .world
        .host()
        .ip(&["link", "set", "dev", &iface, "xdpgeneric", "off"]);
    let _servers = shared.world.servers();
    let daemon = shared.daemon();
    let pinned = shared.pins();
    assert!(pinned.len() >= allowgate_ebpf::map::ALL.len(), "{pinned:?}");
    drop(daemon);
    let good = std::fs::read_to_string(&shared.world.config).unwrap();
    std::fs::write(&shared.world.config, format!("xdp_mode = \"dispatcher\"\n{good}")).unwrap();
    let out = shared.daemon_fails();
    assert!(out.stderr.contains("XDP"), "{out}");
    assert_eq!(shared.pins(), pinned, "a failed restart keeps the pins");
    assert!(shared.world.blocked(UNLISTED), "and the policy");
    assert!(shared.world.passes(EU1_ONLY));
}

// ---------------------------------------------------------------------------------------
// tc egress: tcx chains natively

/// A program of another owner on the tcx egress hook of the world's interface, in
/// `order`, with its packet counter; detached when dropped.
struct OtherTcx {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    seen: aya::maps::MapData,
}

impl OtherTcx {
    fn attach(world: &World, program: &'static str, first: bool) -> OtherTcx {
        let iface = world.pair.host_if.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = world.host().spawn(move || {
            let mut ebpf = aya::Ebpf::load(allowgate_ebpf::SHARE_TEST_OBJ).expect("load the test object");
            let prog: &mut SchedClassifier = ebpf.program_mut(program).unwrap().try_into().unwrap();
            prog.load().unwrap();
            let order = if first { LinkOrder::first() } else { LinkOrder::last() };
            prog.attach_with_options(&iface, TcAttachType::Egress, TcAttachOptions::TcxOrder(order))
                .expect("attach on tcx egress");
            let map = ebpf.map("other_seen").unwrap();
            let id = match map {
                aya::maps::Map::Array(d) => d.info().unwrap().id(),
                _ => unreachable!(),
            };
            tx.send(id).unwrap();
            let _ = stopped.recv();
        });
        let id = rx.recv().expect("the other program attached");
        OtherTcx {
            stop,
            thread: Some(thread),
            seen: aya::maps::MapData::from_id(id).unwrap(),
        }
    }

    fn seen(&self) -> u64 {
        let fd = self.seen.fd().as_fd().try_clone_to_owned().unwrap();
        let mut value = [0u8; 8];
        allowgate::dataplane::kernel::map_lookup(&fd, &0u32.to_ne_bytes(), &mut value).unwrap();
        u64::from_ne_bytes(value)
    }
}

impl Drop for OtherTcx {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_tcx_program_of_another_owner_runs_beside_allowgate_on_egress() {
    let shared = Shared::new("");
    let _servers = shared.world.servers();
    // Another owner's counter, first on egress, ending the chain with TC_ACT_OK.
    let other = OtherTcx::attach(&shared.world, "other_egress_ok", true);
    assert!(egress_reaches(&shared.world, UNLISTED), "nothing else filters yet");
    let daemon = shared.daemon();
    assert!(!egress_reaches(&shared.world, UNLISTED), "allowgate judges first");
    let status = shared.status();
    let tc = hook(&status, "tc egress");
    assert_eq!(
        names(&tc),
        ["allowgate_egres", "other_egress_ok"],
        "allowgate goes first: {tc}"
    );
    assert_eq!(tc["position"], 0, "{tc}");
    assert_eq!(status["enforcing"], true, "{status}");
    // Both run: the other program counts what allowgate passed, and only that (a
    // stray neighbour discovery packet may pass meanwhile).
    let before = other.seen();
    send_udp(&shared.world, UNLISTED, 7777, 20);
    let after_dropped = other.seen();
    send_udp(&shared.world, PEER_V4, 53, 20);
    let after_passed = other.seen();
    assert!(
        after_dropped - before < 5,
        "the other program never saw what allowgate dropped: {before} -> {after_dropped}"
    );
    assert!(
        after_passed - after_dropped >= 20,
        "it saw what allowgate passed: {after_dropped} -> {after_passed}"
    );

    // Another program put ahead of allowgate while it runs: a running program cannot
    // move on tcx without a gap, so the daemon says so, once, and status names it.
    let second = OtherTcx::attach(&shared.world, "other_egress", true);
    assert!(
        daemon.wait_log("NOT PROTECTED, and cannot attach again", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    let status = shared.status();
    assert_eq!(status["enforcing"], false, "{status}");
    assert_eq!(hook(&status, "tc egress")["position"], 1, "{status}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        daemon.log().matches("NOT PROTECTED").count(),
        1,
        "logged once: {}",
        daemon.log()
    );
    drop(second);
    wait_until("protected again", Duration::from_secs(5), || {
        shared.status()["enforcing"] == true
    });

    // With no daemon to repair it, a program put ahead of allowgate is reported by
    // status, and it is the hole that the first place closes (the control): it ends
    // the chain with TC_ACT_OK before allowgate judges.
    let mut daemon = daemon;
    daemon.kill9();
    let ahead = OtherTcx::attach(&shared.world, "other_egress_ok", true);
    let status = shared.status();
    assert_eq!(status["enforcing"], false, "{status}");
    let problem = status["interfaces"][0]["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("other_egress_ok") && problem.contains("runs before allowgate"),
        "{status}"
    );
    assert_eq!(hook(&status, "tc egress")["position"], 1, "{status}");
    assert!(
        egress_reaches(&shared.world, UNLISTED),
        "a program ahead that ends the chain lets it out unjudged"
    );
    // A start takes the first place back.
    let _daemon = shared.daemon();
    let status = shared.status();
    assert_eq!(hook(&status, "tc egress")["position"], 0, "{status}");
    assert_eq!(status["enforcing"], true, "{status}");
    assert!(!egress_reaches(&shared.world, UNLISTED));
    drop(ahead);
    drop(other);
}
