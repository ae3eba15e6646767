//! `cargo xtask bench --traffic`: what a receiving core can drop (or pass) per second,
//! on real frames, for allowgate and the tools a user would compare it with, under
//! steady traffic and under the floods attackers send.
//!
//! A generator namespace holds one end of a veth pair per receiver; each receiver sits
//! in a namespace of its own with its filter on the other end. The generator
//! (generator.rs) sends from one core; the receiver's veth runs threaded NAPI, its
//! kthread pinned to the other core, and capacity is the frames its NAPI took off the
//! ring per second of that thread's CPU time (measure.rs). The cases (cases.rs) are
//! checked once each for the path they mean before any is timed (rig.rs).
//!
//! Rounds interleave every case (the order rotates each round); figures are medians
//! of rounds, and the ratios are per round (both sides measured minutes apart at most)
//! then the median (report.rs). Everything made here (namespaces, veths, taps, bpffs
//! pins, libxdp's pins) is removed on the way out, on errors and on ctrl-c too.

mod cases;
mod frames;
mod generator;
mod measure;
mod netns;
mod report;
mod rig;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use allowgate::{
    catalog::{Catalog, CatalogEntry, Direction, Feature, Peer, PortRange, Proto},
    dataplane::ensure_bpffs,
    policy::{Policy, Selection, Tables, compile_policy, config::AllowEntry},
};
use anyhow::{Context as _, bail};

pub use self::generator::GeneratorKind;
use self::{
    cases::{Load, Receiver},
    frames::{ALLOWED, DST_PORT, PEER, PEER_PORT, WEB_PORT},
    generator::{Generator, TargetSpec},
    measure::Measured,
    netns::{BpffsDir, Namespace, tool_present},
    report::{Sample, TrafficReport, load_average},
    rig::{Rig, Setup},
};
use crate::benchkit::{ExtraSet, LARGE, Mix, base_config, with_extra};

/// Turns each case takes per round (see the round loop).
const SLICES: usize = 4;

/// Set by SIGINT/SIGTERM: the rounds stop and the guards clean up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

fn stopped() -> anyhow::Result<()> {
    if stop_requested() {
        bail!("interrupted; cleaned up");
    }
    Ok(())
}

pub struct TrafficSettings {
    pub rounds: usize,
    pub seconds: f64,
    pub csv: PathBuf,
    pub markdown: bool,
    pub generator: GeneratorKind,
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
    let mut load = Vec::from_iter(load_average());

    let mut receivers = Vec::new();
    let mut missing = Vec::new();
    for receiver in Receiver::ALL {
        match receiver.tool() {
            Some(tool) if !tool_present(tool) => {
                let line = match tool {
                    "xdp-filter" => {
                        "xdp-filter (Debian package xdp-tools; ./scripts/bootstrap installs it): its rows are left out"
                    }
                    _ => "nft (Debian package nftables): its rows are left out",
                };
                if !missing.contains(&line) {
                    missing.push(line);
                }
            }
            _ => receivers.push(receiver),
        }
    }
    for m in &missing {
        eprintln!("traffic: {m}");
    }

    // The policies first (the 100k ones take a moment), so that a compile error leaves
    // nothing to clean.
    let tables = compile_loads()?;
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
    let setup = Setup {
        tag: &tag,
        gen_ns: &gen_ns,
        pins: &pins.0,
        tables: &tables,
        hosts: &hosts,
        nets: &nets,
        gen_cpu: 0,
        napi_cpu: cpus - 1,
    };
    let mut rigs: Vec<Rig> = Vec::new();
    for (i, &receiver) in receivers.iter().enumerate() {
        stopped()?;
        eprintln!("traffic: setting up {}", receiver.key());
        let rig = Rig::create(&setup, i, receiver)
            .with_context(|| format!("cannot set up the {} receiver", receiver.key()))?;
        rigs.push(rig);
    }

    let targets = rigs
        .iter()
        .map(|r| TargetSpec {
            sender_if: r.sender_if.clone(),
            tap_if: r.tap_if.clone(),
        })
        .collect();
    let generator = Generator::start(settings.generator, &gen_ns, targets, setup.gen_cpu)?;
    eprintln!("traffic: generating with {}", generator.kind.key());

    // (rig index, traffic), in report order.
    let cases: Vec<(usize, cases::Traffic)> = cases::cases(&receivers)
        .into_iter()
        .map(|(r, t)| (receivers.iter().position(|&x| x == r).expect("a rig per receiver"), t))
        .collect();
    // Check once that each case takes the path meant before timing it.
    let mut outcomes = Vec::new();
    for &(i, traffic) in &cases {
        stopped()?;
        let outcome = rigs[i].check_path(&generator, i, traffic)?;
        outcomes.push(((rigs[i].receiver, traffic), outcome));
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
        let mut sums = vec![Measured::default(); n];
        let mut by = vec![generator.kind; n];
        for _ in 0..SLICES {
            for k in 0..n {
                stopped()?;
                let c = (k + round) % n;
                let (i, traffic) = cases[c];
                let (m, kind) = rigs[i].measure(&generator, i, traffic, slice)?;
                sums[c].add(&m);
                by[c] = kind;
            }
        }
        for (c, &(i, traffic)) in cases.iter().enumerate() {
            samples.push(Sample {
                round,
                receiver: rigs[i].receiver,
                traffic,
                by: by[c],
                m: sums[c],
            });
        }
        load.extend(load_average());
    }
    drop(generator);
    drop(rigs);
    drop(gen_ns);
    drop(pins);

    let report = TrafficReport {
        rounds: settings.rounds,
        seconds: settings.seconds,
        slices: SLICES,
        samples,
        outcomes,
        missing: missing.iter().map(|s| s.to_string()).collect(),
        load,
        elapsed: started.elapsed(),
    };
    report.write_csv(&settings.csv)?;
    print!("{}", report.render(settings.markdown));
    eprintln!("traffic: per-round samples in {}", settings.csv.display());
    Ok(())
}

/// The allowgate policies of the receivers, compiled.
fn compile_loads() -> anyhow::Result<BTreeMap<Load, Tables>> {
    let catalog = catalog_with_peer();
    let selection = Selection {
        regions: catalog.regions.iter().map(|r| r.id.clone()).collect(),
        features: Feature::ALL.to_vec(),
    };
    let mut base = base_config();
    base.allow.push(allow_in(
        IpAddr::V4(ALLOWED).into(),
        DST_PORT,
        Proto::Udp,
        "the allowed source",
        3,
    ));
    let mut tables = BTreeMap::new();
    for load in [
        Load::Catalog,
        Load::CatalogLearned,
        Load::HostHeavy,
        Load::CidrHeavy,
        Load::WebServer,
    ] {
        let extra = match load {
            Load::HostHeavy => ExtraSet::new(LARGE, Mix::HostHeavy, 0x5eed_000d).prefixes(),
            Load::CidrHeavy => ExtraSet::new(LARGE, Mix::CidrHeavy, 0x5eed_000e).prefixes(),
            _ => Vec::new(),
        };
        let mut config = with_extra(&base, &extra);
        if load == Load::WebServer {
            let world = "0.0.0.0/0".parse().expect("a valid CIDR");
            config
                .allow
                .push(allow_in(world, WEB_PORT, Proto::Tcp, "a web server", 4));
        }
        let policy = Policy::build(&catalog, &selection, &config, &[]);
        let compiled = compile_policy(&policy).with_context(|| format!("cannot compile the {load:?} policy"))?;
        tables.insert(load, compiled);
    }
    Ok(tables)
}

fn allow_in(cidr: ipnet::IpNet, port: u16, proto: Proto, comment: &str, line: usize) -> AllowEntry {
    AllowEntry {
        cidr,
        direction: Direction::Ingress,
        proto,
        ports: vec![PortRange::single(port)],
        comment: Some(format!("traffic bench: {comment}")),
        line,
    }
}

/// The built-in catalog with one more portal address, a documentation one (PEER): the
/// spoofed ACKs come "from the catalog" without a real catalog address on any frame.
fn catalog_with_peer() -> Catalog {
    let mut catalog = Catalog::builtin();
    catalog.entries.push(CatalogEntry {
        region: None,
        feature: Feature::Portal,
        peer: Peer::Net(IpAddr::V4(PEER).into()),
        direction: Direction::Egress,
        proto: Proto::Tcp,
        ports: vec![PortRange::single(PEER_PORT)],
        line: 0,
        offering: None,
        origin: 0,
    });
    catalog
}

#[cfg(test)]
mod tests {
    use allowgate::policy::model::{Hook, L4, Packet, Reason, Tracker, Verdict};

    use super::{frames::RECEIVER, *};

    fn judge(load: Load, remote: Ipv4Addr, l4: L4) -> (Verdict, Reason) {
        let catalog = catalog_with_peer();
        let selection = Selection {
            regions: catalog.regions.iter().map(|r| r.id.clone()).collect(),
            features: Feature::ALL.to_vec(),
        };
        let mut config = base_config();
        config
            .allow
            .push(allow_in(IpAddr::V4(ALLOWED).into(), DST_PORT, Proto::Udp, "allowed", 3));
        if load == Load::WebServer {
            config
                .allow
                .push(allow_in("0.0.0.0/0".parse().unwrap(), WEB_PORT, Proto::Tcp, "web", 4));
        }
        let policy = Policy::build(&catalog, &selection, &config, &[]);
        // A tracker that has seen nothing: no flow exists, as for a spoofed frame.
        let packet = Packet::between(Hook::Ingress, IpAddr::V4(RECEIVER), IpAddr::V4(remote), l4);
        let j = Tracker::default().judge(&policy, &packet);
        (j.verdict, j.reason)
    }

    /// The policies mean what the cases say, by the reference model: the peer is the
    /// catalog's and its answers need a flow, the web server lets any SYN in, and junk
    /// from a spoofable source is denied.
    #[test]
    fn the_bench_policies_judge_the_flood_frames_as_the_cases_expect() {
        let ack = L4::tcp(PEER_PORT, 40000, false, true);
        assert_eq!(judge(Load::WebServer, PEER, ack).1, Reason::NoFlow);
        let syn = L4::tcp(5555, WEB_PORT, true, false);
        assert_eq!(
            judge(Load::WebServer, Ipv4Addr::new(203, 0, 113, 77), syn).0,
            Verdict::Pass
        );
        assert_eq!(
            judge(Load::Catalog, Ipv4Addr::new(203, 0, 113, 77), syn).0,
            Verdict::Drop
        );
        let junk = L4::Udp {
            sport: 5555,
            dport: DST_PORT,
        };
        assert_eq!(
            judge(Load::WebServer, Ipv4Addr::new(203, 0, 113, 77), junk).0,
            Verdict::Drop
        );
        assert_eq!(judge(Load::WebServer, ALLOWED, junk).0, Verdict::Pass);
    }
}
