//! Speed under attack: what the packets of the floods an attacker sends cost, each in test
//! runs next to the do-nothing program and, where one exists, xdp-filter's verdict on the
//! same frame. The allow list is public, so the attacker knows which sources the filter
//! trusts:
//!
//! - an ACK spoofed from a catalog peer to a port with no connection (dropped `no-flow`);
//! - a SYN spoofed from a new source to a port open to the world (a new, unassured flow),
//!   while the tables have room and once they are full;
//! - the denied path, before and after a million distinct spoofed peers went through.
//!
//! xdp-filter (Debian `xdp-tools`) is loaded from its own object, `--policy deny` with the
//! compiled catalog's IPv4 addresses as allowed sources, as `xdp-filter load` and `xdp-filter
//! ip ADDR --mode src` would set it up; nothing is attached.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use allowgate::{
    catalog::{Direction, PortRange, Proto},
    policy::{config::AllowEntry, model::L4},
};
use aya::maps::{PerCpuHashMap, PerCpuValues};

use super::*;

/// The do-nothing program and ours alternate per measurement (as everywhere in the
/// bench); xdp-filter runs right after ours on the same frame.
pub(crate) struct Paired {
    pub(crate) ours: Timing,
    /// Ours divided by xdp-filter's, per measurement, median; None when xdp-filter is missing.
    pub(crate) vs_xdp_filter: Option<f64>,
    pub(crate) xdp_filter: Option<Timing>,
}

/// Single runs (each the first packet of its own flow), as `flows.rs` times them, each
/// right after a single run of the same SYN from another new source to a closed port
/// (which the policy drops, no flow made): single runs of new sources meet cold caches
/// that move a lot from run to run, and the pair cancels that out. `flow_ns` is the
/// median of the differences: what opening the flow itself costs.
#[derive(Clone, Copy)]
pub(crate) struct Singles {
    pub(crate) ns: f64,
    pub(crate) closed_ns: f64,
    pub(crate) flow_ns: f64,
    pub(crate) count: usize,
}

pub(crate) struct AttackTimes {
    pub(crate) no_flow: Paired,
    pub(crate) new_flow: Singles,
    pub(crate) new_flow_full: Singles,
    /// Spoofed SYNs sent before `new_flow_full` was measured.
    pub(crate) filled_with: usize,
    pub(crate) denied_before: Timing,
    pub(crate) denied_after: Timing,
    pub(crate) peers: usize,
    /// The flow table counters after everything, for the report's footnote.
    pub(crate) stats: allowgate::dataplane::flows::FlowStats,
}

/// The port the attacked host serves to the whole world (a web server), and one it does not.
const OPEN_PORT: u16 = 80;
const CLOSED_PORT: u16 = 81;
/// A catalog peer: EU1's portal, allowed tcp/443 out, so its answers come in.
const PORTAL: Ipv4Addr = Ipv4Addr::new(13, 80, 125, 22);
/// Distinct spoofed sources of the denied-path figure.
const PEERS: usize = 1_000_000;
/// New flows timed, in each of the two figures.
const NEW_FLOWS: usize = 2000;

/// The catalog plus `[[allow]]` ingress tcp/80 from anywhere: the attacker may send
/// what it likes to port 80.
pub(crate) fn open_port_config(base: &Config) -> Config {
    let mut config = base.clone();
    config.allow.push(AllowEntry {
        cidr: "0.0.0.0/0".parse().expect("a CIDR"),
        direction: Direction::Ingress,
        proto: Proto::Tcp,
        ports: vec![PortRange::single(OPEN_PORT)],
        comment: Some("bench: a web server".into()),
        line: 3,
    });
    config
}

/// The n-th spoofed source: distinct for n below 2^32 - 2^24, never in 0.0.0.0/8.
fn spoofed(n: usize) -> Ipv4Addr {
    Ipv4Addr::from((n as u32).wrapping_add(1 << 24).wrapping_mul(2_654_435_761) | (1 << 24))
}

fn tcp_in(src: Ipv4Addr, sport: u16, dport: u16, syn: bool, ack: bool) -> Packet {
    packet::between(
        Hook::Ingress,
        IpAddr::V4(ME4),
        IpAddr::V4(src),
        L4::tcp(sport, dport, syn, ack),
    )
}

pub(crate) fn measure(
    dataplane: &mut Dataplane,
    noop: &mut Noop,
    settings: &Settings,
    catalog: &Catalog,
    selection: &Selection,
    base: &Config,
) -> anyhow::Result<AttackTimes> {
    let config = open_port_config(base);
    let (policy, tables, _) = compile_timed(catalog, selection, &config, 1)?;
    dataplane.install(&tables)?;
    let mut xdp_filter = XdpFilter::load(&tables).context("cannot load xdp-filter's object for the comparison")?;
    if xdp_filter.is_none() {
        eprintln!("bench: xdp-filter's object is not installed (Debian package xdp-tools): its column is left out");
    }

    // An ACK from the portal's 443 to a port the host never connected from.
    let ack = tcp_in(PORTAL, 443, 40_999, false, true);
    check_intent(&policy, &ack, Verdict::Pass, Reason::Policy)
        .context("the spoofed ACK must be one the stateless return path would let in")?;
    let no_flow = paired(dataplane, noop, xdp_filter.as_mut(), settings, &ack)?;

    // New flows: SYNs from sources never seen, to the open port.
    let mut next = 0usize;
    let new_flow = new_flows(dataplane, &policy, &mut next, NEW_FLOWS)?;
    // Then fill the tables past their capacity, and time new flows again.
    let fill = allowgate_ebpf::FLOW_MAX as usize * 2;
    send_syns(dataplane, &mut next, fill)?;
    let new_flow_full = new_flows(dataplane, &policy, &mut next, NEW_FLOWS)?;

    // The denied path: a UDP datagram from a fresh source (the /0 covers it, no rule
    // allows UDP), before and after a million spoofed peers.
    let denied = packet::between(
        Hook::Ingress,
        IpAddr::V4(ME4),
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        L4::Udp { sport: 4444, dport: 53 },
    );
    check_intent(&policy, &denied, Verdict::Drop, Reason::Policy)?;
    // A fresh load starts with an empty filter: the reference.
    let mut fresh = FreshLoad::new(&tables)?;
    let denied_before = time_probe(&mut fresh.dataplane, noop, settings, &denied, Verdict::Drop)?;
    drop(fresh);
    let already = next;
    let peers = if settings.quick { PEERS / 10 } else { PEERS };
    send_syns(dataplane, &mut next, peers.saturating_sub(already))?;
    let denied_after = time_probe(dataplane, noop, settings, &denied, Verdict::Drop)?;
    Ok(AttackTimes {
        no_flow,
        new_flow,
        new_flow_full,
        filled_with: fill,
        denied_before,
        denied_after,
        peers: next,
        stats: dataplane.flow_stats()?,
    })
}

/// The data plane loaded afresh (its own pins) with `tables`: nothing tracked yet.
struct FreshLoad {
    dataplane: Dataplane,
    _pins: PinDir,
}

impl FreshLoad {
    fn new(tables: &Tables) -> anyhow::Result<FreshLoad> {
        let pins = PinDir::with_prefix("allowgate-bench-fresh-");
        let mut dataplane = Dataplane::load(&pins.0, &LoadOptions::default())?;
        dataplane.install(tables)?;
        Ok(FreshLoad { dataplane, _pins: pins })
    }
}

/// `count` SYNs from new sources to the open port, one test run each, untimed.
fn send_syns(dataplane: &mut Dataplane, next: &mut usize, count: usize) -> anyhow::Result<()> {
    for _ in 0..count {
        let syn = tcp_in(spoofed(*next), 1024 + (*next % 60_000) as u16, OPEN_PORT, true, false);
        *next += 1;
        let frame = packet::frame(&syn, &packet::Shape::Plain);
        let result = dataplane.test_run(Hook::Ingress, &frame, 1)?;
        if result.return_value != XDP_PASS {
            bail!("a SYN to the open port was dropped: the flood would not be what the bench says");
        }
    }
    Ok(())
}

/// `count` pairs of single runs: a SYN from a new source to the closed port, then one
/// from another new source to the open port (a new flow).
fn new_flows(dataplane: &mut Dataplane, policy: &Policy, next: &mut usize, count: usize) -> anyhow::Result<Singles> {
    let (mut open, mut closed, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    let mut single = |dataplane: &mut Dataplane, port: u16| -> anyhow::Result<f64> {
        let (verdict, want) = if port == OPEN_PORT {
            (Verdict::Pass, XDP_PASS)
        } else {
            (Verdict::Drop, XDP_DROP)
        };
        let syn = tcp_in(spoofed(*next), 1024 + (*next % 60_000) as u16, port, true, false);
        *next += 1;
        check_intent(policy, &syn, verdict, Reason::Policy)?;
        let frame = packet::frame(&syn, &packet::Shape::Plain);
        let result = dataplane.test_run(Hook::Ingress, &frame, 1)?;
        if result.return_value != want {
            bail!(
                "a SYN to port {port} got return value {}: refusing to time it",
                result.return_value
            );
        }
        Ok(result.duration.as_nanos() as f64)
    };
    for _ in 0..count {
        let c = single(dataplane, CLOSED_PORT)?;
        let o = single(dataplane, OPEN_PORT)?;
        closed.push(c);
        open.push(o);
        diff.push(o - c);
    }
    Ok(Singles {
        ns: median(&open),
        closed_ns: median(&closed),
        flow_ns: median(&diff),
        count,
    })
}

/// `settings.runs` rounds of (do-nothing, ours, xdp-filter) on `packet`'s frame.
fn paired(
    dataplane: &mut Dataplane,
    noop: &mut Noop,
    mut xdp_filter: Option<&mut XdpFilter>,
    settings: &Settings,
    packet: &Packet,
) -> anyhow::Result<Paired> {
    let frame = packet::frame(packet, &packet::Shape::Plain);
    // The path first: ours must drop it as no-flow, xdp-filter pass it (its source is listed).
    let before = dataplane.counters()?;
    let first = dataplane.test_run(Hook::Ingress, &frame, 1)?;
    let after = dataplane.counters()?;
    let no_flow = after.get(abi::DIR_INGRESS, abi::VERDICT_DROP, Reason::NoFlow).packets
        - before.get(abi::DIR_INGRESS, abi::VERDICT_DROP, Reason::NoFlow).packets;
    if first.return_value != XDP_DROP || no_flow != 1 {
        bail!("the spoofed ACK was not dropped as no-flow: refusing to time another path");
    }
    if let Some(f) = xdp_filter.as_deref_mut()
        && f.run(&frame, 1)?.0 != XDP_PASS
    {
        bail!("xdp-filter did not pass the catalog peer's packet: its allow list is not what the bench says");
    }
    let (mut ns, mut ratios, mut theirs, mut theirs_ratio, mut vs) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..settings.runs {
        let base = noop.time(&frame, settings.repeat)?.max(1.0);
        let cost = dataplane.test_run(Hook::Ingress, &frame, settings.repeat)?;
        if cost.return_value != XDP_DROP {
            bail!("the spoofed ACK passed: refusing to time it");
        }
        let cost = cost.duration.as_nanos() as f64;
        ns.push(cost);
        ratios.push(cost / base);
        if let Some(f) = xdp_filter.as_deref_mut() {
            let (_, t) = f.run(&frame, settings.repeat)?;
            theirs.push(t);
            theirs_ratio.push(t / base);
            vs.push(cost / t.max(1.0));
        }
    }
    let timing = |ns: &[f64], ratios: &[f64]| Timing {
        ns: median(ns),
        ratio: median(ratios),
    };
    Ok(Paired {
        ours: timing(&ns, &ratios),
        vs_xdp_filter: (!vs.is_empty()).then(|| median(&vs)),
        xdp_filter: (!theirs.is_empty()).then(|| timing(&theirs, &theirs_ratio)),
    })
}

/// Where Debian and upstream install xdp-filter's programs.
const XDP_FILTER_OBJECTS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_all.o",
    "/usr/lib/bpf/xdpfilt_dny_all.o",
    "/usr/local/lib/bpf/xdpfilt_dny_all.o",
];
/// Its program, and the bits of its address map (xdp-filter's common_kern_user.h).
const XDP_FILTER_PROG: &str = "xdpfilt_dny_all";
const XDP_FILTER_MAP_V4: &str = "filter_ipv4";
const XDP_FILTER_FLAG_SRC: u64 = 1;

/// xdp-filter's deny-policy program (all features, what `xdp-filter load --policy deny`
/// loads), with the compiled catalog's IPv4 addresses as allowed sources.
struct XdpFilter {
    ebpf: aya::Ebpf,
    _pins: PinsGuard,
}

/// A directory under /sys/fs/bpf for xdp-filter's pins, emptied and removed on drop.
struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl XdpFilter {
    fn load(tables: &Tables) -> anyhow::Result<Option<XdpFilter>> {
        let Some(path) = XDP_FILTER_OBJECTS.iter().map(PathBuf::from).find(|p| p.exists()) else {
            return Ok(None);
        };
        let object = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        // Its maps are pinned by name: in a directory of the bench's own.
        let pins = PinsGuard(Path::new("/sys/fs/bpf").join(crate::common::unique("allowgate-bench-xdpfilt-")));
        std::fs::create_dir_all(&pins.0).with_context(|| format!("cannot create {}", pins.0.display()))?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .load(&object)
            .with_context(|| format!("cannot load {}", path.display()))?;
        let mut filter = XdpFilter { ebpf, _pins: pins };
        let prog: &mut Xdp = filter
            .ebpf
            .program_mut(XDP_FILTER_PROG)
            .with_context(|| format!("{} has no program {XDP_FILTER_PROG}", path.display()))?
            .try_into()?;
        prog.load().context("the kernel refused xdp-filter's program")?;
        let map = filter
            .ebpf
            .map_mut(XDP_FILTER_MAP_V4)
            .with_context(|| format!("{} has no map {XDP_FILTER_MAP_V4}", path.display()))?;
        let mut addrs: PerCpuHashMap<&mut aya::maps::MapData, u32, u64> = PerCpuHashMap::try_from(map)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for addr in tables.v4_host.keys() {
            let values = PerCpuValues::try_from(vec![XDP_FILTER_FLAG_SRC; cpus])?;
            addrs.insert(u32::from_ne_bytes(addr.octets()), values, 0)?;
        }
        Ok(Some(filter))
    }

    /// The return value and mean ns per run of `repeat` runs over `frame`.
    fn run(&mut self, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, f64)> {
        let prog: &Xdp = self
            .ebpf
            .program(XDP_FILTER_PROG)
            .expect("checked at load")
            .try_into()?;
        let result = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })?;
        Ok((result.return_value, result.duration.as_nanos() as f64))
    }
}

/// What a new flow cost before the unassured tables (one LRU hash for every flow), by
/// the same measures on the project's VM (Xeon, kernel 6.18; medians of five runs of
/// that build beside this one): a SYN spoofed to an open port beyond the same SYN to a
/// closed port, and, once the table was full, the whole single run (there the old
/// build's closed-port baseline grew too, its peer filter saturated, so only the whole
/// run compares). The targets are half.
pub(crate) const NEW_FLOW_BEFORE_NS: f64 = 226.0;
pub(crate) const NEW_FLOW_FULL_BEFORE_NS: f64 = 434.0;
/// How much dearer the denied path may be after a million peers than with none.
const DENIED_AFTER_MAX: f64 = 1.2;

impl AttackTimes {
    pub(crate) fn table(&self) -> Table {
        let mut t = Table::new(&[
            ("under attack", false),
            ("ns", true),
            ("× noop", true),
            ("vs xdp-filter", true),
            ("target", false),
        ]);
        let nf = &self.no_flow;
        t.row(vec![
            "ACK spoofed from a catalog peer, no flow (XDP, dropped no-flow)".into(),
            format!("{:.0}", nf.ours.ns),
            times(nf.ours.ratio),
            nf.vs_xdp_filter
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into()),
            match nf.vs_xdp_filter {
                Some(r) => format!("≤ xdp-filter: {}", verdict(r <= 1.0)),
                None => "≤ xdp-filter: not measured".into(),
            },
        ]);
        if let Some(x) = &nf.xdp_filter {
            t.row(vec![
                "  xdp-filter, deny policy, the same frame (its source listed: XDP_PASS)".into(),
                format!("{:.0}", x.ns),
                times(x.ratio),
                "1.00".into(),
                String::new(),
            ]);
        }
        let rows = [
            (
                "SYN spoofed to an open port: a new flow (single runs, beyond the same SYN to a closed port)",
                self.new_flow.flow_ns,
                NEW_FLOW_BEFORE_NS,
            ),
            (
                "  the same once the tables are full (pushes one out; the whole single run)",
                self.new_flow_full.ns,
                NEW_FLOW_FULL_BEFORE_NS,
            ),
        ];
        for (what, ns, before) in rows {
            t.row(vec![
                what.into(),
                format!("{ns:.0}"),
                "-".into(),
                "-".into(),
                format!(
                    "≤ half of {before:.0} before: {:.2}× {}",
                    ns / before,
                    verdict(ns <= before / 2.0)
                ),
            ]);
        }
        let growth = self.denied_after.ns / self.denied_before.ns.max(1.0);
        t.row(vec![
            "denied (UDP from a new source), empty peer filter".into(),
            format!("{:.0}", self.denied_before.ns),
            times(self.denied_before.ratio),
            "-".into(),
            String::new(),
        ]);
        t.row(vec![
            format!("  the same after {} distinct spoofed peers", self.peers),
            format!("{:.0}", self.denied_after.ns),
            times(self.denied_after.ratio),
            "-".into(),
            format!(
                "≤ {DENIED_AFTER_MAX}× empty: {:.2}× {}",
                growth,
                verdict(growth <= DENIED_AFTER_MAX)
            ),
        ]);
        t
    }

    pub(crate) fn footnote(&self) -> String {
        format!(
            "Single runs: {} pairs each, a new flow and the same SYN to a closed port right before it \
             (medians {:.0} and {:.0} ns; {:.0} and {:.0} once full), median of the differences; the tables were \
             filled with {} spoofed SYNs first for the second. Flow counters after: {:?}.\n",
            self.new_flow.count,
            self.new_flow.ns,
            self.new_flow.closed_ns,
            self.new_flow_full.ns,
            self.new_flow_full.closed_ns,
            self.filled_with,
            self.stats
        )
    }
}
