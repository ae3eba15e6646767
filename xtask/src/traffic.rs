//! `cargo xtask bench --traffic`: what a receiving core can drop (or pass) per second,
//! on real frames, for allowgate and the tools a user would compare it with.
//!
//! A generator namespace holds one end of a veth pair per receiver; each receiver sits
//! in a namespace of its own with its filter on the other end. The generator is
//! BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on a tiny XDP program that
//! redirects the test frame out of the sender veth, pinned to one core. The receiver's
//! veth runs threaded NAPI, its kthread pinned to another core, and capacity is the
//! frames its NAPI took off the ring per second of that thread's CPU time
//! (/proc/PID/stat utime + stime): the noise of other work on the machine shows up as
//! time the thread did not get, not as frames it did not process.
//!
//! Rounds interleave every case (the order rotates each round); figures are medians
//! of rounds, and the ratios are per round (both sides measured minutes apart at most)
//! then the median. Everything made here (namespaces, veths in them, bpffs pins) is
//! removed on the way out, on errors and on ctrl-c too.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fmt::Write as _,
    fs::File,
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use allowgate::{
    catalog::{Catalog, Direction, Feature, PortRange, Proto},
    dataplane::{Dataplane, LoadOptions, detach_all, ensure_bpffs},
    policy::{Policy, Selection, Tables, compile_policy, config::AllowEntry},
};
use allowgate_ebpf as abi;
use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};

use crate::bench::{self, ExtraSet, Mix};

/// Where the frames come from and go to: documentation addresses only. The receiver
/// owns RECEIVER; ALLOWED is a source every filter here lets in, DENIED one none does.
const RECEIVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const ALLOWED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const DENIED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// The discard port: nothing listens, so allowed frames end in the UDP layer.
const DST_PORT: u16 = 9;
const SRC_PORT: u16 = 40000;
const SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
const RECEIVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
/// Learned addresses of the `CatalogLearned` receiver.
const LEARNED: u8 = 64;
/// Turns each case takes per round (see the round loop).
const SLICES: usize = 4;
/// Frames per test-run call: each call costs a synchronize_rcu(), so few long ones.
const FRAMES_PER_CALL: u32 = 1 << 21;
/// Frames the kernel builds per batch of the live-frame loop.
const GEN_BATCH: u32 = 64;

/// Set by SIGINT/SIGTERM: the rounds stop and the guards clean up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn stopped() -> anyhow::Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted; cleaned up");
    }
    Ok(())
}

pub struct TrafficSettings {
    pub rounds: usize,
    pub seconds: f64,
    pub csv: PathBuf,
    pub markdown: bool,
}

/// What sits on a receiver's veth.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Receiver {
    XdpDrop,
    XdpPass,
    XdpFilter,
    Nft,
    Allowgate(Load),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Load {
    Catalog,
    /// The catalog plus learned addresses, as with DNS learning on: a miss in the
    /// generation's tables is then also looked up in the learned table.
    CatalogLearned,
    HostHeavy,
    CidrHeavy,
}

impl Receiver {
    fn label(self) -> &'static str {
        match self {
            Receiver::XdpDrop => "XDP_DROP (ceiling)",
            Receiver::XdpPass => "XDP_PASS (to the stack)",
            Receiver::XdpFilter => "xdp-filter, deny policy, the catalog's addresses",
            Receiver::Nft => "nftables netdev ingress, interval set of the same",
            Receiver::Allowgate(Load::Catalog) => "allowgate, all regions and features",
            Receiver::Allowgate(Load::CatalogLearned) => "allowgate, same + 64 learned addresses",
            Receiver::Allowgate(Load::HostHeavy) => "allowgate + 100k prefixes, /32-heavy",
            Receiver::Allowgate(Load::CidrHeavy) => "allowgate + 100k prefixes, CIDR-heavy",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Receiver::XdpDrop => "xdp-drop",
            Receiver::XdpPass => "xdp-pass",
            Receiver::XdpFilter => "xdp-filter",
            Receiver::Nft => "nft",
            Receiver::Allowgate(Load::Catalog) => "allowgate",
            Receiver::Allowgate(Load::CatalogLearned) => "allowgate-learned",
            Receiver::Allowgate(Load::HostHeavy) => "allowgate-100k-host",
            Receiver::Allowgate(Load::CidrHeavy) => "allowgate-100k-cidr",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Traffic {
    Denied,
    Allowed,
}

impl Traffic {
    fn as_str(self) -> &'static str {
        match self {
            Traffic::Denied => "denied",
            Traffic::Allowed => "allowed",
        }
    }
}

pub fn run(settings: &TrafficSettings) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cpus < 2 {
        bail!("the traffic bench needs two CPUs: one generates, one receives");
    }
    for tool in ["ip", "nsenter", "ethtool"] {
        if !tool_present(tool) {
            bail!("`{tool}` is missing: run ./scripts/bootstrap");
        }
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    ensure_bpffs()?;
    let started = Instant::now();

    let mut receivers = vec![Receiver::XdpDrop, Receiver::XdpPass];
    let mut missing = Vec::new();
    if tool_present("xdp-filter") {
        receivers.push(Receiver::XdpFilter);
    } else {
        missing.push("xdp-filter (Debian package xdp-tools; ./scripts/bootstrap installs it): its rows are left out");
    }
    if tool_present("nft") {
        receivers.push(Receiver::Nft);
    } else {
        missing.push("nft (Debian package nftables): its rows are left out");
    }
    receivers.extend([
        Receiver::Allowgate(Load::Catalog),
        Receiver::Allowgate(Load::CatalogLearned),
        Receiver::Allowgate(Load::HostHeavy),
        Receiver::Allowgate(Load::CidrHeavy),
    ]);
    for m in &missing {
        eprintln!("traffic: {m}");
    }

    // The policies first (the 100k ones take a moment), so that a compile error leaves
    // nothing to clean.
    let catalog = Catalog::builtin();
    let selection = Selection {
        regions: catalog.regions.iter().map(|r| r.id.clone()).collect(),
        features: Feature::ALL.to_vec(),
    };
    let mut base = bench::base_config();
    base.allow.push(AllowEntry {
        cidr: IpAddr::V4(ALLOWED).into(),
        direction: Direction::Ingress,
        proto: Proto::Udp,
        ports: vec![PortRange::single(DST_PORT)],
        comment: Some("traffic bench: the allowed source".into()),
        line: 3,
    });
    let mut tables = BTreeMap::new();
    for load in [Load::Catalog, Load::CatalogLearned, Load::HostHeavy, Load::CidrHeavy] {
        let extra = match load {
            Load::Catalog | Load::CatalogLearned => Vec::new(),
            Load::HostHeavy => ExtraSet::new(bench::LARGE, Mix::HostHeavy, 0x5eed_000d).prefixes(),
            Load::CidrHeavy => ExtraSet::new(bench::LARGE, Mix::CidrHeavy, 0x5eed_000e).prefixes(),
        };
        let config = bench::with_extra(&base, &extra);
        let policy = Policy::build(&catalog, &selection, &config, &[]);
        let compiled = compile_policy(&policy).with_context(|| format!("cannot compile the {load:?} policy"))?;
        tables.insert(load, compiled);
    }
    // The catalog's addresses, as the other filters are given them: every IPv4 host
    // entry (small CIDRs are already expanded) and prefix, plus the allowed source.
    let catalog_tables = &tables[&Load::Catalog];
    let hosts: Vec<Ipv4Addr> = catalog_tables.v4_host.keys().copied().collect();
    let nets: Vec<String> = catalog_tables.v4_lpm.keys().map(|n| n.to_string()).collect();
    eprintln!(
        "traffic: {} receivers; the catalog is {} IPv4 addresses and {} prefixes",
        receivers.len(),
        hosts.len(),
        nets.len()
    );

    let tag = format!("{}", std::process::id() % 10_000);
    let gen_ns = Namespace::create(format!("agtb{tag}g"))?;
    let pins = BpffsDir::create(Path::new("/sys/fs/bpf").join(format!("allowgate-traffic-{tag}")))?;
    let mut rigs: Vec<Rig> = Vec::new();
    for (i, &receiver) in receivers.iter().enumerate() {
        stopped()?;
        eprintln!("traffic: setting up {}", receiver.key());
        let rig = Rig::create(&tag, i, receiver, &gen_ns, &pins.0, &tables, &hosts, &nets)
            .with_context(|| format!("cannot set up the {} receiver", receiver.key()))?;
        rigs.push(rig);
    }

    let frames = [
        (Traffic::Denied, udp_frame(DENIED, RECEIVER)),
        (Traffic::Allowed, udp_frame(ALLOWED, RECEIVER)),
    ];
    let targets: Vec<String> = rigs.iter().map(|r| r.sender_if.clone()).collect();
    let generator = Generator::start(&gen_ns, &targets, 0)?;

    // (rig index, traffic): XDP_DROP and XDP_PASS take no filter decision, one row each.
    let mut cases = Vec::new();
    for (i, rig) in rigs.iter().enumerate() {
        match rig.receiver {
            Receiver::XdpDrop => cases.push((i, Traffic::Denied)),
            Receiver::XdpPass => cases.push((i, Traffic::Allowed)),
            _ => cases.extend([(i, Traffic::Denied), (i, Traffic::Allowed)]),
        }
    }
    // Check once that each case takes the path meant before timing it.
    for &(i, traffic) in &cases {
        stopped()?;
        rigs[i].check_path(&generator, i, traffic, &frames_for(&frames, traffic))?;
    }

    // A round gives each case `seconds`, cut into slices that take turns with the other
    // cases' (ABC ABC ABC ...): noise on this shared machine comes in bursts of seconds,
    // and a burst then lands on every case of the round a little rather than on one case
    // a lot, which keeps the per-round ratios honest.
    let mut samples: Vec<Sample> = Vec::new();
    let n = cases.len();
    let slice = settings.seconds / SLICES as f64;
    for round in 0..settings.rounds {
        eprintln!("traffic: round {}/{}", round + 1, settings.rounds);
        let mut sums = vec![(0u64, 0f64); n];
        for _ in 0..SLICES {
            for k in 0..n {
                stopped()?;
                let c = (k + round) % n;
                let (i, traffic) = cases[c];
                let m = rigs[i].measure(&generator, i, &frames_for(&frames, traffic), slice)?;
                sums[c].0 += m.frames;
                sums[c].1 += m.cpu_s;
            }
        }
        for (c, &(i, traffic)) in cases.iter().enumerate() {
            samples.push(Sample {
                round,
                receiver: rigs[i].receiver,
                traffic,
                frames: sums[c].0,
                cpu_s: sums[c].1,
            });
        }
    }
    drop(generator);
    drop(rigs);
    drop(gen_ns);
    drop(pins);

    let report = TrafficReport {
        rounds: settings.rounds,
        seconds: settings.seconds,
        samples,
        missing: missing.iter().map(|s| s.to_string()).collect(),
        elapsed: started.elapsed(),
    };
    report.write_csv(&settings.csv)?;
    print!("{}", report.render(settings.markdown));
    eprintln!("traffic: per-round samples in {}", settings.csv.display());
    Ok(())
}

fn frames_for(frames: &[(Traffic, Vec<u8>)], traffic: Traffic) -> Vec<u8> {
    frames
        .iter()
        .find(|(t, _)| *t == traffic)
        .map(|(_, f)| f.clone())
        .expect("both kinds are built")
}

/// Whether `tool` is on the PATH (it runs at all; `xdp-filter help` exits non-zero).
fn tool_present(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Runs a command; its stderr becomes the one-line error when it fails.
fn run_cmd(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{:?} {:?} failed: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            err.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace of the bench, deleted (with its veth ends) on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: String) -> anyhow::Result<Namespace> {
        // An existing namespace of this name is not ours to remove (another run, or one
        // killed hard): say so rather than take it over.
        if Path::new("/run/netns").join(&name).exists() {
            bail!(
                "namespace {name} exists already: another bench running, or left by a killed one (`ip netns del {name}`)"
            );
        }
        run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Namespace { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run_cmd(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `nsenter --net`, which keeps /sys/fs/bpf visible (`ip netns exec` remounts /sys).
    fn nsenter(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display())).arg("--").arg(program);
        c
    }

    /// `ip netns exec`, for writes under /sys/class/net, which shows this namespace's
    /// devices only in a sysfs mounted from inside it.
    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that joined this namespace.
    fn spawn<F, R>(&self, f: F) -> JoinHandle<anyhow::Result<R>>
    where
        F: FnOnce() -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path();
        std::thread::spawn(move || {
            enter_netns(&path)?;
            f()
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn enter_netns(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: a valid namespace fd; only the calling thread moves.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

fn join<R>(handle: JoinHandle<anyhow::Result<R>>) -> anyhow::Result<R> {
    handle.join().map_err(|_| anyhow!("a thread in a namespace panicked"))?
}

/// The bench's bpffs directory: allowgate's pins and libxdp's (LIBXDP_BPFFS), removed
/// on drop.
struct BpffsDir(PathBuf);

impl BpffsDir {
    fn create(path: PathBuf) -> anyhow::Result<BpffsDir> {
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(BpffsDir(path))
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One receiver: its namespace, veth, what is attached, and its NAPI kthread.
struct Rig {
    receiver: Receiver,
    ns: Namespace,
    sender_if: String,
    receiver_if: String,
    napi: Vec<i32>,
    /// Kept alive: dropping them detaches the programs.
    xdp: Option<Ebpf>,
    allowgate: Option<(Dataplane, PathBuf)>,
    xdp_filter_bpffs: Option<PathBuf>,
}

impl Rig {
    #[allow(clippy::too_many_arguments)]
    fn create(
        tag: &str,
        index: usize,
        receiver: Receiver,
        gen_ns: &Namespace,
        pins: &Path,
        tables: &BTreeMap<Load, Tables>,
        hosts: &[Ipv4Addr],
        nets: &[String],
    ) -> anyhow::Result<Rig> {
        let ns = Namespace::create(format!("agtb{tag}r{index}"))?;
        // Short names: the NAPI kthread is "napi/<dev>-<id>" within 15 characters.
        let sender_if = format!("a{tag}s{index}");
        let receiver_if = format!("a{tag}r{index}");
        run_cmd(Command::new("ip").args([
            "link",
            "add",
            &sender_if,
            "netns",
            &gen_ns.name,
            "address",
            &mac(&SENDER_MAC),
            "type",
            "veth",
            "peer",
            "name",
            &receiver_if,
            "netns",
            &ns.name,
            "address",
            &mac(&RECEIVER_MAC),
        ]))?;
        let mut rig = Rig {
            receiver,
            ns,
            sender_if,
            receiver_if,
            napi: Vec::new(),
            xdp: None,
            allowgate: None,
            xdp_filter_bpffs: None,
        };
        gen_ns.ip(&["link", "set", &rig.sender_if, "up"])?;
        let ns = &rig.ns;
        ns.ip(&["addr", "add", &format!("{RECEIVER}/24"), "dev", &rig.receiver_if])?;
        ns.ip(&["link", "set", &rig.receiver_if, "up"])?;
        for net in ["198.51.100.0/24", "203.0.113.0/24"] {
            ns.ip(&["route", "add", net, "dev", &rig.receiver_if])?;
        }

        match receiver {
            Receiver::XdpDrop | Receiver::XdpPass => {
                let name = if receiver == Receiver::XdpDrop {
                    abi::PROG_TRAFFIC_DROP
                } else {
                    abi::PROG_TRAFFIC_PASS
                };
                let iface = rig.receiver_if.clone();
                rig.xdp = Some(join(rig.ns.spawn(move || {
                    let mut ebpf = EbpfLoader::new().load(abi::TRAFFIC_OBJ)?;
                    let prog: &mut Xdp = ebpf.program_mut(name).context("program missing")?.try_into()?;
                    prog.load()?;
                    prog.attach(&iface, XdpMode::Driver)
                        .with_context(|| format!("cannot attach {name} to {iface}"))?;
                    Ok(ebpf)
                }))?);
            }
            Receiver::XdpFilter => {
                let dir = pins.join("xdp");
                std::fs::create_dir_all(&dir)?;
                rig.xdp_filter_bpffs = Some(dir.clone());
                let xdp_filter = |args: &[&str]| -> anyhow::Result<String> {
                    run_cmd(rig.ns.nsenter("xdp-filter").args(args).env("LIBXDP_BPFFS", &dir))
                };
                xdp_filter(&["load", "--mode", "native", "--policy", "deny", &rig.receiver_if])?;
                for addr in hosts.iter().map(Ipv4Addr::to_string).chain([ALLOWED.to_string()]) {
                    xdp_filter(&["ip", &addr, "--mode", "src"])?;
                }
            }
            Receiver::Nft => {
                run_cmd(rig.ns.exec("ethtool").args(["-K", &rig.receiver_if, "gro", "on"]))?;
                let mut elements: Vec<String> = hosts.iter().map(Ipv4Addr::to_string).collect();
                elements.extend(nets.iter().cloned());
                elements.push(ALLOWED.to_string());
                let script = format!(
                    "table netdev agbench {{\n  set allow4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {} }} }}\n  \
                     chain ingress {{\n    type filter hook ingress device \"{}\" priority 0; policy accept;\n    \
                     meta protocol ip ip saddr @allow4 accept\n    meta protocol ip drop\n  }}\n}}\n",
                    elements.join(", "),
                    rig.receiver_if
                );
                let file = pins_file_for_nft(tag, index);
                std::fs::write(&file, script)?;
                let result = run_cmd(rig.ns.nsenter("nft").arg("-f").arg(&file));
                let _ = std::fs::remove_file(&file);
                result?;
            }
            Receiver::Allowgate(load) => {
                let dir = pins.join(format!("ag-{index}"));
                let mut dataplane =
                    Dataplane::load(&dir, &LoadOptions::default()).context("cannot load the allowgate BPF object")?;
                dataplane.install(&tables[&load])?;
                if load == Load::CatalogLearned {
                    // What DNS learning leaves in the table: addresses of the catalog's
                    // names, here documentation ones, valid for the whole run.
                    let value = *tables[&load]
                        .v4_host
                        .values()
                        .next()
                        .context("the catalog has no address")?;
                    let expires = allowgate::dataplane::monotonic_ns() + 3_600_000_000_000;
                    for i in 0..LEARNED {
                        let addr = Ipv4Addr::new(198, 51, 100, 100 + i);
                        dataplane.put_learned(IpAddr::V4(addr), value, expires)?;
                    }
                }
                let iface = rig.receiver_if.clone();
                let path = rig.ns.path();
                // The attach resolves the interface in the calling thread's namespace.
                let dataplane = std::thread::scope(|s| {
                    s.spawn(move || -> anyhow::Result<Dataplane> {
                        enter_netns(&path)?;
                        let attachment = dataplane.attach(&iface, allowgate::dataplane::Placement::default())?;
                        if attachment.xdp_mode != allowgate::dataplane::XdpMode::Native {
                            bail!("XDP attached in generic mode on {iface}: the figures would not compare");
                        }
                        Ok(dataplane)
                    })
                    .join()
                    .map_err(|_| anyhow!("the attaching thread panicked"))?
                })?;
                rig.allowgate = Some((dataplane, dir));
            }
        }

        // Threaded NAPI, once the veth has NAPI (an XDP program or GRO), its kthread
        // pinned to the last CPU; the generator has the first.
        run_cmd(
            rig.ns
                .exec("sh")
                .args(["-c", &format!("echo 1 > /sys/class/net/{}/threaded", rig.receiver_if)]),
        )?;
        rig.napi = napi_threads(&rig.receiver_if)?;
        let cpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) - 1;
        for &pid in &rig.napi {
            pin_to_cpu(pid, cpu)?;
        }
        Ok(rig)
    }

    /// Sends a short burst and checks the receiver did what the case means: the frames
    /// reach its NAPI, the stack sees allowed frames (its UDP "no port" counter) and no
    /// denied one, and allowgate counts them as passed or dropped.
    fn check_path(&self, generator: &Generator, target: usize, traffic: Traffic, frame: &[u8]) -> anyhow::Result<()> {
        let before = self.allowgate_counts()?;
        let noports = self.udp_no_ports()?;
        let m = self.measure(generator, target, frame, 0.2)?;
        if m.frames == 0 {
            bail!("{}: no frame reached the receiver's NAPI", self.receiver.key());
        }
        let to_stack = self.udp_no_ports()?.saturating_sub(noports);
        let ok = match traffic {
            Traffic::Denied => to_stack <= m.frames / 100,
            Traffic::Allowed => to_stack >= m.frames * 9 / 10,
        };
        if !ok {
            bail!(
                "{} {}: the stack saw {to_stack} of {} frames: refusing to time the wrong path",
                self.receiver.key(),
                traffic.as_str(),
                m.frames
            );
        }
        if let (Some((pass0, drop0)), Some((pass1, drop1))) = (before, self.allowgate_counts()?) {
            let (passed, dropped) = (pass1 - pass0, drop1 - drop0);
            let ok = match traffic {
                Traffic::Denied => dropped >= m.frames * 9 / 10 && passed == 0,
                Traffic::Allowed => passed >= m.frames * 9 / 10 && dropped == 0,
            };
            if !ok {
                bail!(
                    "{} {}: the filter passed {passed} and dropped {dropped} of {} frames: refusing to time the wrong path",
                    self.receiver.key(),
                    traffic.as_str(),
                    m.frames
                );
            }
        }
        Ok(())
    }

    /// (passed, dropped) on ingress, for allowgate receivers.
    fn allowgate_counts(&self) -> anyhow::Result<Option<(u64, u64)>> {
        let Some((dataplane, _)) = &self.allowgate else {
            return Ok(None);
        };
        let counters = dataplane.counters()?;
        Ok(Some((
            counters.packets(abi::DIR_INGRESS, abi::VERDICT_PASS),
            counters.packets(abi::DIR_INGRESS, abi::VERDICT_DROP),
        )))
    }

    /// Generates for `seconds` and returns what the receiver's NAPI did meanwhile.
    fn measure(&self, generator: &Generator, target: usize, frame: &[u8], seconds: f64) -> anyhow::Result<Measured> {
        let (rx0, cpu0) = (self.rx_packets()?, self.napi_ticks()?);
        generator.send(target, frame, Duration::from_secs_f64(seconds))?;
        // Let the NAPI thread (and the stack behind it) finish the ring before reading:
        // on a loaded machine it may wait for its core a while.
        let rx1 = self.settled_rx_packets()?;
        let cpu1 = self.napi_ticks()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(Measured {
            frames: rx1.saturating_sub(rx0),
            cpu_s: cpu1.saturating_sub(cpu0) as f64 / hz,
        })
    }

    /// The namespace's UDP NoPorts counter: datagrams the stack took to a port no
    /// socket has (every allowed frame of the bench).
    fn udp_no_ports(&self) -> anyhow::Result<u64> {
        let snmp = run_cmd(self.ns.nsenter("cat").arg("/proc/net/snmp"))?;
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        if let (Some(names), Some(values)) = (udp.next(), udp.next()) {
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                if name == "NoPorts" {
                    return value.parse().context("cannot parse Udp NoPorts");
                }
            }
        }
        bail!("no Udp NoPorts counter in the receiver's /proc/net/snmp")
    }

    fn napi_ticks(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for &pid in &self.napi {
            total += thread_ticks(pid)?;
        }
        Ok(total)
    }

    /// rx_packets once two reads 30 ms apart agree (at most 2 s).
    fn settled_rx_packets(&self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = self.rx_packets()?;
        loop {
            std::thread::sleep(Duration::from_millis(30));
            let now = self.rx_packets()?;
            if now == last || Instant::now() > deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    /// Frames the receiving veth took off its ring (veth counts every frame its NAPI
    /// consumed, whatever XDP did with it).
    fn rx_packets(&self) -> anyhow::Result<u64> {
        let out = self.ns.ip(&["-s", "link", "show", "dev", &self.receiver_if])?;
        let mut lines = out.lines();
        while let Some(line) = lines.next() {
            if line.trim_start().starts_with("RX:") {
                let values = lines.next().unwrap_or_default();
                return values
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow!("cannot read rx packets of {}", self.receiver_if));
            }
        }
        bail!("cannot read rx packets of {}", self.receiver_if)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(dir) = &self.xdp_filter_bpffs {
            let _ = self
                .ns
                .nsenter("xdp-filter")
                .args(["unload", "--all", &self.receiver_if])
                .env("LIBXDP_BPFFS", dir)
                .output();
        }
        if let Some((dataplane, dir)) = self.allowgate.take() {
            drop(dataplane);
            for problem in detach_all(&dir, &[]) {
                eprintln!("traffic: cleanup of {}: {problem}", dir.display());
            }
        }
        // The namespace goes next (a field), and the veth pair with it.
    }
}

fn pins_file_for_nft(tag: &str, index: usize) -> PathBuf {
    std::env::temp_dir().join(format!("allowgate-traffic-{tag}-{index}.nft"))
}

struct Measured {
    frames: u64,
    cpu_s: f64,
}

fn mac(b: &[u8; 6]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// The NAPI kthreads of `dev` ("napi/<dev>-<napi id>").
fn napi_threads(dev: &str) -> anyhow::Result<Vec<i32>> {
    let prefix = format!("napi/{dev}-");
    let mut found = Vec::new();
    // The kthread appears as the sysfs write returns, but give it a moment.
    for _ in 0..50 {
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm"))
                && comm.trim_end().starts_with(&prefix)
            {
                found.push(pid);
            }
        }
        if !found.is_empty() {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no threaded NAPI kthread for {dev}: the kernel did not start one")
}

/// utime + stime of a thread, in clock ticks.
fn thread_ticks(pid: i32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the NAPI kthread {pid} is gone"))?;
    // Fields after the ")" that ends the name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => bail!("cannot parse /proc/{pid}/stat"),
    }
}

fn pin_to_cpu(pid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin thread {pid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// A 60-byte Ethernet + IPv4 + UDP frame (64 on the wire with the FCS) from `src` to
/// `dst`, with a valid header checksum so that the stack takes what a filter passes.
fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&RECEIVER_MAC);
    f.extend_from_slice(&SENDER_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let payload = 18;
    let udp_len = 8 + payload;
    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&SRC_PORT.to_be_bytes());
    f.extend_from_slice(&DST_PORT.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    // UDP checksum 0: none, allowed on IPv4.
    f.extend_from_slice(&[0, 0]);
    f.resize(60, 0);
    f
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The live-frame generator: a thread in the generator namespace, pinned to one CPU,
/// with one generator program per target veth (each redirects to its own ifindex).
struct Generator {
    requests: Option<mpsc::Sender<(usize, Vec<u8>, Duration)>>,
    replies: mpsc::Receiver<anyhow::Result<u64>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Generator {
    fn start(ns: &Namespace, targets: &[String], cpu: usize) -> anyhow::Result<Generator> {
        let (req_tx, req_rx) = mpsc::channel::<(usize, Vec<u8>, Duration)>();
        let (rep_tx, rep_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let targets = targets.to_vec();
        let thread = ns.spawn(move || {
            let setup = (|| -> anyhow::Result<Vec<Ebpf>> {
                pin_to_cpu(0, cpu)?;
                let mut programs = Vec::new();
                for target in &targets {
                    let name = CString::new(target.as_str())?;
                    // SAFETY: a NUL-terminated name.
                    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                    if ifindex == 0 {
                        bail!("no interface {target} in the generator's namespace");
                    }
                    let mut ebpf = EbpfLoader::new()
                        .override_global(abi::GLOBAL_TRAFFIC_TARGET, &ifindex, true)
                        .load(abi::TRAFFIC_OBJ)
                        .context("cannot load the traffic generator")?;
                    let prog: &mut Xdp = ebpf
                        .program_mut(abi::PROG_TRAFFIC_GEN)
                        .context("the generator program is missing")?
                        .try_into()?;
                    prog.load().context("cannot load the traffic generator")?;
                    programs.push(ebpf);
                }
                Ok(programs)
            })();
            let programs = match setup {
                Ok(p) => {
                    let _ = ready_tx.send(Ok(()));
                    p
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            while let Ok((target, frame, duration)) = req_rx.recv() {
                let _ = rep_tx.send(generate(&programs[target], &frame, duration));
            }
            Ok(())
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the generator thread died"))?
            .context("cannot start the traffic generator")?;
        Ok(Generator {
            requests: Some(req_tx),
            replies: rep_rx,
            thread: Some(thread),
        })
    }

    /// Frames pushed out of target's veth for about `duration`.
    fn send(&self, target: usize, frame: &[u8], duration: Duration) -> anyhow::Result<u64> {
        self.requests
            .as_ref()
            .expect("until drop")
            .send((target, frame.to_vec(), duration))
            .map_err(|_| anyhow!("the generator thread died"))?;
        self.replies.recv().map_err(|_| anyhow!("the generator thread died"))?
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn generate(ebpf: &Ebpf, frame: &[u8], duration: Duration) -> anyhow::Result<u64> {
    let prog: &Xdp = ebpf
        .program(abi::PROG_TRAFFIC_GEN)
        .context("the generator program is missing")?
        .try_into()?;
    let start = Instant::now();
    let mut sent = 0u64;
    // Short runs (the path checks) get short calls.
    let repeat = if duration < Duration::from_millis(500) {
        FRAMES_PER_CALL / 8
    } else {
        FRAMES_PER_CALL
    };
    while start.elapsed() < duration {
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            attrs: TestRunAttrs::new().xdp_live_frames(GEN_BATCH),
            ..TestRunOptions::new()
        })
        .context("the live-frame test run failed")?;
        sent += u64::from(repeat);
        if STOP.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(sent)
}

struct Sample {
    round: usize,
    receiver: Receiver,
    traffic: Traffic,
    frames: u64,
    cpu_s: f64,
}

impl Sample {
    fn mpps(&self) -> f64 {
        if self.cpu_s <= 0.0 {
            return f64::NAN;
        }
        self.frames as f64 / self.cpu_s / 1e6
    }
}

struct TrafficReport {
    rounds: usize,
    seconds: f64,
    samples: Vec<Sample>,
    missing: Vec<String>,
    elapsed: Duration,
}

impl TrafficReport {
    fn cases(&self) -> Vec<(Receiver, Traffic)> {
        let mut cases: Vec<(Receiver, Traffic)> = self.samples.iter().map(|s| (s.receiver, s.traffic)).collect();
        cases.sort();
        cases.dedup();
        cases
    }

    fn series(&self, receiver: Receiver, traffic: Traffic) -> Vec<f64> {
        let mut v: Vec<(usize, f64)> = self
            .samples
            .iter()
            .filter(|s| s.receiver == receiver && s.traffic == traffic)
            .map(|s| (s.round, s.mpps()))
            .collect();
        v.sort_by_key(|(r, _)| *r);
        v.into_iter().map(|(_, m)| m).collect()
    }

    /// Per-round a / b, in round order.
    fn paired(&self, a: (Receiver, Traffic), b: (Receiver, Traffic)) -> Vec<f64> {
        let (x, y) = (self.series(a.0, a.1), self.series(b.0, b.1));
        x.iter().zip(&y).map(|(x, y)| x / y).collect()
    }

    fn render(&self, markdown: bool) -> String {
        let (kernel, cpu) = bench::machine();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Kernel {kernel}, {cpu}. Real traffic: 64-byte UDP frames from a live-frame XDP generator through a veth; \
             capacity is frames per second of the receiving NAPI thread's CPU time (threaded NAPI, pinned). \
             {} rounds of {:.1} s per case, each in {SLICES} slices taking turns with the other cases'; figures \
             are medians of rounds, ratios medians of per-round ratios. Whole run {:.0} s.",
            self.rounds,
            self.seconds,
            self.elapsed.as_secs_f64()
        );
        for m in &self.missing {
            let _ = writeln!(out, "Left out: {m}.");
        }
        out.push('\n');
        let drop_ceiling = (Receiver::XdpDrop, Traffic::Denied);
        let mut t = bench::Table::new(&[
            ("traffic", false),
            ("receiver", false),
            ("Mpps per core", true),
            ("vs XDP_DROP", true),
            ("vs xdp-filter", true),
            ("per-round Mpps", false),
        ]);
        let mut cases = self.cases();
        // Denied first (the flood), then allowed; by receiver within each.
        cases.sort_by_key(|(r, t)| (*t, *r));
        for (receiver, traffic) in cases {
            let series = self.series(receiver, traffic);
            let ratio = median(&self.paired((receiver, traffic), drop_ceiling));
            // Against xdp-filter on the same traffic, paired per round.
            let vs_filter = self.paired((receiver, traffic), (Receiver::XdpFilter, traffic));
            t.row(vec![
                traffic.as_str().into(),
                receiver.label().into(),
                format!("{:.2}", median(&series)),
                format!("{ratio:.2}"),
                if vs_filter.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2}", median(&vs_filter))
                },
                series.iter().map(|m| format!("{m:.2}")).collect::<Vec<_>>().join(" "),
            ]);
        }
        out.push_str(&t.render(markdown));
        out.push('\n');

        let ours = (Receiver::Allowgate(Load::Catalog), Traffic::Denied);
        let theirs = (Receiver::XdpFilter, Traffic::Denied);
        let paired = self.paired(ours, theirs);
        if paired.is_empty() {
            let _ = writeln!(
                out,
                "allowgate / xdp-filter (denied): not measured, xdp-filter is missing"
            );
        } else {
            let m = median(&paired);
            let _ = writeln!(
                out,
                "allowgate / xdp-filter, denied, paired per round: median {m:.2} (rounds: {}); target >= 1.0: {}",
                paired.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" "),
                if m >= 1.0 { "PASS" } else { "MISS" }
            );
        }
        let ceiling = median(&self.paired(ours, drop_ceiling));
        let _ = writeln!(
            out,
            "allowgate denied / XDP_DROP: median {ceiling:.2}; goal >= 0.6: {}",
            if ceiling >= 0.6 { "PASS" } else { "MISS" }
        );
        out
    }

    fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut f = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(f, "round,receiver,traffic,frames,napi_cpu_s,mpps")?;
        for s in &self.samples {
            writeln!(
                f,
                "{},{},{},{},{:.3},{:.4}",
                s.round + 1,
                s.receiver.key(),
                s.traffic.as_str(),
                s.frames,
                s.cpu_s,
                s.mpps()
            )?;
        }
        Ok(())
    }
}

fn median(values: &[f64]) -> f64 {
    bench::median(values)
}
