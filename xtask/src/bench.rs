//! `cargo xtask bench`: what allowgate costs per packet, and per policy change.
//!
//! Per packet: crafted frames go through the loaded XDP (ingress) and TC (egress)
//! programs with BPF_PROG_TEST_RUN; nothing is attached and nothing is sent. Every
//! figure is paired with a run of a do-nothing XDP program just before it (noop, case,
//! noop, case, ...), so drift in clock speed or machine load between runs cancels out
//! of the ratio. Per policy: the time to build and compile it, and to install it (fill
//! fresh inner maps, swap the generation).
//!
//! The policies are the built-in catalog (every region and feature) and the catalog
//! plus 10k or 100k seeded random prefixes, /32-heavy or CIDR-heavy. At 100k the same
//! entries also go into a plain LPM trie (no host hash), the design the host hash has
//! to beat.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use allowgate::{
    catalog::{Catalog, Direction, Feature, PortRange, Proto},
    dataplane::{Dataplane, LoadOptions, ensure_bpffs},
    policy::{
        Config, Policy, Selection, Tables, compile_policy,
        config::AllowEntry,
        model::{self, Frame, Hook, L4, Packet, Reason, Verdict},
    },
};
use allowgate_ebpf as abi;
use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::common::{PinDir, packet};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Program runs per measurement (the BPF_PROG_TEST_RUN repeat) [default: 1000000, 100000 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: Option<u32>,
    /// Measurements per figure, of which the median is reported [default: 5, 3 with --quick]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    runs: Option<u32>,
    /// Fewer repeats and runs: checks that the bench works, not figures to quote
    #[arg(long)]
    quick: bool,
    /// Print the tables as Markdown, for the README
    #[arg(long)]
    markdown: bool,
    /// Only one row: `import` (a 5 MB service tags file; no BPF, no root needed) or
    /// `config` (100k [[allow]] entries from the config's text to the kernel)
    #[arg(long, value_name = "ROW", value_parser = ["import", "config"])]
    only: Option<String>,
    /// Real traffic instead: live frames through veths, capacity of the receiving core
    /// for XDP_DROP, XDP_PASS, xdp-filter, nftables and allowgate (see traffic.rs)
    #[arg(long)]
    traffic: bool,
    /// --traffic: interleaved rounds, of which the medians are reported [default: 5, 2 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: Option<u32>,
    /// --traffic: seconds of traffic per case and round [default: 2, 0.5 with --quick]
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// --traffic: where the per-round samples go as CSV
    #[arg(long, value_name = "PATH", default_value = "target/traffic-bench.csv")]
    csv: std::path::PathBuf,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.2..=60.0).contains(&s) => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds from 0.2 to 60")),
    }
}

/// Set in the release child so that it never starts another one.
const RELEASE_CHILD: &str = "ALLOWGATE_BENCH_RELEASE_CHILD";

// BPF_PROG_TEST_RUN return values of the two programs.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (-1): the filter passes so that programs after it still run.
const TC_PASS: u32 = u32::MAX;
/// TC_ACT_SHOT.
const TC_DROP: u32 = 2;

/// The host the probes are judged for: a documentation address, never a real peer.
const ME4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const ME6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 7);
const EPHEMERAL_PORT: u16 = 40000;

/// 100k is where the targets are set.
pub(crate) const LARGE: usize = 100_000;
const COMPILE_AND_LOAD_BUDGET: Duration = Duration::from_secs(1);
const CATALOG_MAX_RATIO: f64 = 4.0;
/// What a plain LPM trie costs at 100k for a /32 hit, as measured when the design was
/// chosen (EBPF-NOTES.md); the baseline measured here is what the target compares with.
const PLAIN_LPM_REFERENCE_RATIO: f64 = 12.0;

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    // `cargo xtask` builds xtask in debug. The kernel side does not care, but the
    // compile timings are of Rust code, and a debug build of the compiler is several
    // times slower than the daemon users run: measure the release build instead.
    if cfg!(debug_assertions) && std::env::var_os(RELEASE_CHILD).is_none() {
        return rerun_in_release();
    }
    if args.traffic {
        if args.repeat.is_some() || args.runs.is_some() {
            bail!("--repeat and --runs are settings of the test-run bench; --traffic takes --rounds and --seconds");
        }
        return crate::traffic::run(&crate::traffic::TrafficSettings {
            rounds: args.rounds.unwrap_or(if args.quick { 2 } else { 5 }) as usize,
            seconds: args.seconds.unwrap_or(if args.quick { 0.5 } else { 2.0 }),
            csv: args.csv.clone(),
            markdown: args.markdown,
        });
    }
    if args.rounds.is_some() || args.seconds.is_some() {
        bail!("--rounds and --seconds are settings of --traffic");
    }
    if args.only.as_deref() == Some("import") {
        let import = crate::import_bench::run(args.runs.unwrap_or(5) as usize)?;
        print!("{}", import.render());
        return Ok(());
    }
    if !crate::is_root() {
        bail!("the bench loads BPF programs and test-runs them: run `cargo xtask bench` as root");
    }
    let settings = Settings {
        repeat: args.repeat.unwrap_or(if args.quick { 100_000 } else { 1_000_000 }),
        runs: args.runs.unwrap_or(if args.quick { 3 } else { 5 }) as usize,
    };

    // First, while the process is small: its peak memory is the import's.
    eprintln!("bench: service tags import ...");
    let import = crate::import_bench::run(settings.runs)?;

    let catalog = Catalog::builtin();
    let selection = Selection {
        regions: catalog.regions.iter().map(|r| r.id.clone()).collect(),
        features: Feature::ALL.to_vec(),
    };
    let base = base_config();

    let mut noop = Noop::load()?;
    ensure_bpffs()?;
    // Declared before the data plane, so dropped after it: the pins go last, also when
    // the bench stops on an error.
    let pins = PinDir::with_prefix("allowgate-bench-");
    let mut dataplane = Dataplane::load(&pins.0, &LoadOptions::default()).context(
        "cannot load the allowgate BPF object (if the C programs are being changed, retry in a few minutes)",
    )?;

    eprintln!(
        "bench: {} [[allow]] entries through the config ...",
        crate::config_bench::ENTRIES
    );
    let through_config = crate::config_bench::run(&mut dataplane, settings.runs)?;
    if args.only.as_deref() == Some("config") {
        print!("{}", through_config.render());
        return Ok(());
    }

    let mut results = Vec::new();
    for spec in policy_specs() {
        eprintln!("bench: {} ...", spec.label);
        let extra = spec.extra.as_ref().map(ExtraSet::prefixes).unwrap_or_default();
        let config = with_extra(&base, &extra);
        let (policy, tables, compile) = compile_timed(&catalog, &selection, &config, settings.runs)
            .with_context(|| format!("cannot compile policy {}", spec.label))?;
        let probes = probes(&tables, &extra);

        let ours = measure_policy(
            &mut dataplane,
            &mut noop,
            &settings,
            &spec.label,
            &policy,
            &tables,
            &probes,
        )?;
        results.push(PolicyResult {
            compile: Some(compile),
            extra: extra.len(),
            ..ours
        });

        if extra.len() == LARGE {
            let label = format!("({}') plain LPM", &spec.label[1..2]);
            eprintln!("bench: {label} ...");
            let baseline = plain_lpm(&tables);
            let mut result = measure_policy(
                &mut dataplane,
                &mut noop,
                &settings,
                &label,
                &policy,
                &baseline,
                &probes,
            )?;
            result.extra = extra.len();
            result.baseline_of = Some(results.len() - 1);
            results.push(result);
        }
    }
    drop(dataplane);
    drop(pins);

    let report = Report {
        settings,
        noop_ns: median(&noop.samples),
        results,
    };
    print!("{}", report.render(args.markdown));
    print!("{}", through_config.render());
    print!("{}", import.render());
    Ok(())
}

fn rerun_in_release() -> anyhow::Result<()> {
    eprintln!("bench: running the release build of xtask (the compile timings are of Rust code)");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace");
    let status = crate::cargo()
        .current_dir(workspace)
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .env(RELEASE_CHILD, "1")
        .status()
        .context("cannot run cargo to build the release bench")?;
    // The child has printed its results or its one-line error: only its status is left
    // to pass on.
    std::process::exit(status.code().unwrap_or(1));
}

/// `base` with the extra prefixes as `[[allow]]` entries (egress tcp/443): they become
/// `Source::Allow` rules through `Policy::build`, the path an operator's entries take.
pub(crate) fn with_extra(base: &Config, extra: &[Ipv4Net]) -> Config {
    let mut config = base.clone();
    config
        .allow
        .extend(extra.iter().enumerate().map(|(i, &net)| AllowEntry {
            cidr: net.into(),
            direction: Direction::Egress,
            proto: Proto::Tcp,
            ports: vec![PortRange::single(443)],
            comment: None,
            line: 1000 + i,
        }));
    config
}

/// Builds and compiles the policy as the daemon does on a change, `runs` times.
fn compile_timed(
    catalog: &Catalog,
    selection: &Selection,
    config: &Config,
    runs: usize,
) -> anyhow::Result<(Policy, Tables, CompileTimes)> {
    let (mut build, mut compile, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let mut compiled = None;
    for _ in 0..runs {
        let start = Instant::now();
        let policy = Policy::build(catalog, selection, config, &[]);
        let built = Instant::now();
        let tables = compile_policy(&policy)?;
        build.push(built - start);
        compile.push(built.elapsed());
        both.push(start.elapsed());
        compiled = Some((policy, tables));
    }
    let (policy, tables) = compiled.expect("runs is at least 1");
    let times = CompileTimes {
        build: median_duration(&build),
        compile: median_duration(&compile),
        both: median_duration(&both),
    };
    Ok((policy, tables, times))
}

struct Settings {
    repeat: u32,
    runs: usize,
}

/// The bench's own bpffs directory, detached and removed on drop.
/// The do-nothing XDP program, and every time it took, for the report's header.
struct Noop {
    ebpf: Ebpf,
    samples: Vec<f64>,
}

impl Noop {
    fn load() -> anyhow::Result<Noop> {
        let mut ebpf = EbpfLoader::new()
            .load(abi::NOOP_OBJ)
            .context("cannot load the do-nothing XDP program")?;
        let prog: &mut Xdp = ebpf
            .program_mut(abi::PROG_NOOP)
            .context("the do-nothing object has no program `noop`: the build is broken")?
            .try_into()?;
        prog.load().context("cannot load the do-nothing XDP program")?;
        Ok(Noop {
            ebpf,
            samples: Vec::new(),
        })
    }

    /// Mean ns per run of `repeat` runs over `frame`.
    fn time(&mut self, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
        let prog: &Xdp = self.ebpf.program(abi::PROG_NOOP).expect("checked at load").try_into()?;
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::new()
            })
            .context("cannot test-run the do-nothing XDP program")?;
        if result.return_value != XDP_PASS {
            bail!(
                "the do-nothing XDP program returned {}, not XDP_PASS: the build is broken",
                result.return_value
            );
        }
        let ns = result.duration.as_nanos() as f64;
        self.samples.push(ns);
        Ok(ns)
    }
}

/// The config of every policy (the catalog comes in through the selection): IPv6
/// `[[allow]]` entries on documentation addresses, since the catalog lists no IPv6, and
/// no DNS servers, so that nothing depends on this host's resolv.conf.
pub(crate) fn base_config() -> Config {
    let allow = |cidr: &str, line| AllowEntry {
        cidr: cidr.parse().expect("a valid CIDR"),
        direction: Direction::Egress,
        proto: Proto::Tcp,
        ports: vec![PortRange::single(443)],
        comment: Some("bench".into()),
        line,
    };
    Config {
        allow: vec![allow(V6_HOST, 1), allow(V6_NET, 2)],
        ..Config::default()
    }
}

const V6_HOST: &str = "2001:db8:1::10/128";
const V6_NET: &str = "2001:db8:2::/48";

/// How the extra prefixes spread over prefix lengths.
#[derive(Clone, Copy)]
pub(crate) enum Mix {
    /// 90% /32, the rest /24../31: many single hosts, as resolved names give.
    HostHeavy,
    /// 10% /32, the rest /16../30: mostly networks, as cloud ranges give.
    CidrHeavy,
}

pub(crate) struct ExtraSet {
    count: usize,
    mix: Mix,
    seed: u64,
}

impl ExtraSet {
    pub(crate) fn new(count: usize, mix: Mix, seed: u64) -> ExtraSet {
        ExtraSet { count, mix, seed }
    }

    /// `count` distinct prefixes in 10.0.0.0/8 and 100.64.0.0/10, in the order drawn.
    /// Seeded: every run compiles the same tables.
    pub(crate) fn prefixes(&self) -> Vec<Ipv4Net> {
        const TEN: u32 = 10 << 24;
        const CGNAT: u32 = (100 << 24) | (64 << 16);
        let mut rng = XorShift(self.seed);
        let mut seen = HashSet::with_capacity(self.count);
        let mut out = Vec::with_capacity(self.count);
        // Short lengths run out of distinct prefixes (there are only 320 /16s in the
        // two ranges): drawing on until `count` are distinct shifts a little of their
        // share to the longer lengths.
        while out.len() < self.count {
            let offset = rng.below((1 << 24) + (1 << 22)) as u32;
            let addr = if offset < 1 << 24 {
                TEN + offset
            } else {
                CGNAT + offset - (1 << 24)
            };
            let roll = rng.below(100);
            let len = match self.mix {
                Mix::HostHeavy if roll < 90 => 32,
                Mix::HostHeavy => 24 + rng.below(8) as u8,
                Mix::CidrHeavy if roll < 10 => 32,
                Mix::CidrHeavy => 16 + rng.below(15) as u8,
            };
            let net = Ipv4Net::new(Ipv4Addr::from(addr), len).expect("len <= 32").trunc();
            if seen.insert(net) {
                out.push(net);
            }
        }
        out
    }
}

/// xorshift64*: enough randomness to scatter prefixes, and no extra dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in 0..n for n far below 2^64.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct PolicySpec {
    label: String,
    extra: Option<ExtraSet>,
}

fn policy_specs() -> Vec<PolicySpec> {
    let spec = |label: &str, extra| PolicySpec {
        label: label.to_string(),
        extra,
    };
    let set = |count, mix, seed| Some(ExtraSet { count, mix, seed });
    vec![
        spec("(a) catalog", None),
        spec("(b) +10k /32-heavy", set(10_000, Mix::HostHeavy, 0x5eed_000b)),
        spec("(c) +10k CIDR-heavy", set(10_000, Mix::CidrHeavy, 0x5eed_000c)),
        spec("(d) +100k /32-heavy", set(LARGE, Mix::HostHeavy, 0x5eed_000d)),
        spec("(e) +100k CIDR-heavy", set(LARGE, Mix::CidrHeavy, 0x5eed_000e)),
    ]
}

/// `tables` with every host entry moved into the LPM trie at full length: the host
/// hash always misses and the trie answers, as in a design without the hash.
fn plain_lpm(tables: &Tables) -> Tables {
    let mut t = tables.clone();
    for (addr, value) in std::mem::take(&mut t.v4_host) {
        t.v4_lpm.insert(Ipv4Net::new(addr, 32).expect("/32"), value);
    }
    for (addr, value) in std::mem::take(&mut t.v6_host) {
        t.v6_lpm.insert(Ipv6Net::new(addr, 128).expect("/128"), value);
    }
    t
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// ARP, passed as an essential: the program's cost without any table lookup.
    Arp,
    CatalogHost,
    CatalogCidr,
    ExtraHost,
    ExtraCidr,
    Denied,
    V6Host,
    V6Cidr,
    V6Denied,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Arp => "ARP (no lookup)",
            Kind::CatalogHost => "allowed: catalog /32",
            Kind::CatalogCidr => "allowed: catalog CIDR",
            Kind::ExtraHost => "allowed: extra /32",
            Kind::ExtraCidr => "allowed: extra CIDR",
            Kind::Denied => "denied",
            Kind::V6Host => "allowed: v6 /128",
            Kind::V6Cidr => "allowed: v6 CIDR",
            Kind::V6Denied => "denied v6",
        }
    }

    /// An address the built-in catalog lists: the ≤ 4× target is about these (the
    /// IPv6 probes are `[[allow]]` entries the bench adds; the catalog has no IPv6).
    fn catalog(self) -> bool {
        matches!(self, Kind::CatalogHost | Kind::CatalogCidr)
    }

    /// The verdict the probe is meant to get, and why.
    fn expect(self) -> (Verdict, Reason) {
        match self {
            Kind::Arp => (Verdict::Pass, Reason::Arp),
            Kind::Denied | Kind::V6Denied => (Verdict::Drop, Reason::Policy),
            _ => (Verdict::Pass, Reason::Policy),
        }
    }
}

/// One remote peer, and the packet each hook sees of a connection with it.
struct Probe {
    kind: Kind,
    remote: Option<IpAddr>,
    ingress: Packet,
    egress: Packet,
}

impl Probe {
    /// A connection we open to `remote:port` (an egress rule): our SYN out, its
    /// SYN-ACK back in.
    fn outbound(kind: Kind, remote: IpAddr, port: u16) -> Probe {
        Probe {
            kind,
            remote: Some(remote),
            egress: tcp(Hook::Egress, remote, EPHEMERAL_PORT, port, false),
            ingress: tcp(Hook::Ingress, remote, port, EPHEMERAL_PORT, true),
        }
    }

    /// A connection `remote` opens to our `port` (an ingress rule): its SYN in, our
    /// SYN-ACK out.
    fn arp() -> Probe {
        let arp = |hook| Packet {
            hook,
            vlan_tags: 0,
            frame: Frame::Arp,
        };
        Probe {
            kind: Kind::Arp,
            remote: None,
            ingress: arp(Hook::Ingress),
            egress: arp(Hook::Egress),
        }
    }

    fn inbound(kind: Kind, remote: IpAddr, port: u16) -> Probe {
        Probe {
            kind,
            remote: Some(remote),
            ingress: tcp(Hook::Ingress, remote, EPHEMERAL_PORT, port, false),
            egress: tcp(Hook::Egress, remote, port, EPHEMERAL_PORT, true),
        }
    }
}

/// A TCP SYN (or SYN-ACK) between us and `remote`, as `hook` sees it.
fn tcp(hook: Hook, remote: IpAddr, sport: u16, dport: u16, ack: bool) -> Packet {
    let me = if remote.is_ipv4() {
        IpAddr::V4(ME4)
    } else {
        IpAddr::V6(ME6)
    };
    packet::between(
        hook,
        me,
        remote,
        L4::Tcp {
            sport,
            dport,
            syn: true,
            ack,
        },
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a valid address")
}

/// The probes of a policy: the catalog's, the extra set's (a /32 of it, and an address
/// inside one of its CIDRs that no /32 of it covers), and addresses next to them that
/// nothing allows. The catalog alone also gets ARP, the program's fixed cost, once.
fn probes(tables: &Tables, extra: &[Ipv4Net]) -> Vec<Probe> {
    let mut probes = Vec::new();
    if extra.is_empty() {
        probes.push(Probe::arp());
    }
    probes.extend([
        // EU1's portal address (it serves five regions), on a connection we open.
        Probe::outbound(Kind::CatalogHost, ip("13.80.125.22"), 443),
        // The mail servers' 65.55.234.192/26 connecting in to port 25.
        Probe::inbound(Kind::CatalogCidr, ip("65.55.234.200"), 25),
    ]);
    if let Some(host) = extra.iter().find(|n| n.prefix_len() == 32) {
        probes.push(Probe::outbound(Kind::ExtraHost, IpAddr::V4(host.addr()), 443));
    }
    // A CIDR at least /24 deep: a lookup that walks far down the trie.
    let inside = extra
        .iter()
        .filter(|n| (24..32).contains(&n.prefix_len()))
        .map(|n| Ipv4Addr::from(u32::from(n.network()) + 1))
        .find(|a| !tables.v4_host.contains_key(a));
    if let Some(addr) = inside {
        probes.push(Probe::outbound(Kind::ExtraCidr, IpAddr::V4(addr), 443));
    }
    probes.extend([
        Probe::outbound(Kind::Denied, ip("13.80.125.23"), 443),
        Probe::outbound(Kind::V6Host, ip(V6_HOST.split('/').next().expect("an address")), 443),
        Probe::outbound(Kind::V6Cidr, ip("2001:db8:2::99"), 443),
        Probe::outbound(Kind::V6Denied, ip("2001:db8:1::11"), 443),
    ]);
    probes
}

/// Which table answers a lookup of `addr`, read from the compiled tables.
fn lookup_path(tables: &Tables, addr: Option<IpAddr>) -> String {
    let Some(addr) = addr else { return "none".into() };
    let (host, longest) = match addr {
        IpAddr::V4(a) => (
            tables.v4_host.contains_key(&a),
            tables
                .v4_lpm
                .keys()
                .filter(|n| n.contains(&a))
                .map(|n| n.prefix_len())
                .max(),
        ),
        IpAddr::V6(a) => (
            tables.v6_host.contains_key(&a),
            tables
                .v6_lpm
                .keys()
                .filter(|n| n.contains(&a))
                .map(|n| n.prefix_len())
                .max(),
        ),
    };
    match (host, longest) {
        (true, _) => "hash hit".into(),
        (false, Some(len)) => format!("trie hit /{len}"),
        (false, None) => "both miss".into(),
    }
}

/// Median ns and ratio to the do-nothing program, over the runs of one figure.
#[derive(Clone, Copy)]
struct Timing {
    ns: f64,
    ratio: f64,
}

struct ProbeResult {
    kind: Kind,
    remote: Option<IpAddr>,
    lookup: String,
    ingress: Timing,
    egress: Timing,
}

/// Medians of `Policy::build`, of `compile_policy`, and of the two in one run.
#[derive(Clone, Copy)]
struct CompileTimes {
    build: Duration,
    compile: Duration,
    both: Duration,
}

impl CompileTimes {
    fn with_install(&self, install: Duration) -> Duration {
        self.both + install
    }
}

struct PolicyResult {
    label: String,
    rules: usize,
    /// Prefixes added to the catalog.
    extra: usize,
    entries: [usize; 4],
    /// None for a baseline: its tables are made by hand from the policy's.
    compile: Option<CompileTimes>,
    install: Duration,
    probes: Vec<ProbeResult>,
    /// For a plain-LPM baseline: the index of the result it is the baseline of.
    baseline_of: Option<usize>,
}

/// Installs `tables` `runs` times (timing each), then times every probe through both
/// programs.
fn measure_policy(
    dataplane: &mut Dataplane,
    noop: &mut Noop,
    settings: &Settings,
    label: &str,
    policy: &Policy,
    tables: &Tables,
    probes: &[Probe],
) -> anyhow::Result<PolicyResult> {
    let mut install_times = Vec::new();
    for _ in 0..settings.runs {
        let start = Instant::now();
        dataplane
            .install(tables)
            .with_context(|| format!("cannot install policy {label}"))?;
        install_times.push(start.elapsed());
    }
    let mut results = Vec::new();
    for probe in probes {
        let what = match probe.remote {
            Some(remote) => format!("{label}: probe `{}` {remote}", probe.kind.label()),
            None => format!("{label}: probe `{}`", probe.kind.label()),
        };
        let (verdict, reason) = probe.kind.expect();
        let mut timing = |packet: &Packet| -> anyhow::Result<Timing> {
            check_intent(policy, packet, verdict, reason).with_context(|| what.clone())?;
            time_probe(dataplane, noop, settings, packet, verdict)
                .with_context(|| format!("{what} on {:?}", packet.hook))
        };
        let ingress = timing(&probe.ingress)?;
        let egress = timing(&probe.egress)?;
        results.push(ProbeResult {
            kind: probe.kind,
            remote: probe.remote,
            lookup: lookup_path(tables, probe.remote),
            ingress,
            egress,
        });
    }
    Ok(PolicyResult {
        label: label.to_string(),
        rules: policy.rules.len(),
        extra: 0,
        entries: [
            tables.v4_host.len(),
            tables.v4_lpm.len(),
            tables.v6_host.len(),
            tables.v6_lpm.len(),
        ],
        compile: None,
        install: median_duration(&install_times),
        probes: results,
        baseline_of: None,
    })
}

/// The reference model must agree that the probe goes the way it is meant to, and for
/// the reason meant (the policy tables, not an essential): else the bench would time
/// another path than it says.
fn check_intent(policy: &Policy, packet: &Packet, verdict: Verdict, reason: Reason) -> anyhow::Result<()> {
    let judgement = model::judge(policy, packet);
    if judgement.verdict != verdict || judgement.reason != reason {
        bail!(
            "the reference model gives {:?} ({}), the bench means {verdict:?} ({}): fix the probe",
            judgement.verdict,
            judgement.reason.as_str(),
            reason.as_str()
        );
    }
    Ok(())
}

/// `runs` pairs of (do-nothing, probe), each `repeat` runs long; every run's return
/// value must be the verdict expected, so a wrong path is never timed.
fn time_probe(
    dataplane: &mut Dataplane,
    noop: &mut Noop,
    settings: &Settings,
    packet: &Packet,
    expect: Verdict,
) -> anyhow::Result<Timing> {
    let frame = packet::frame(packet, &packet::Shape::Plain);
    let (pass, drop) = match packet.hook {
        Hook::Ingress => (XDP_PASS, XDP_DROP),
        Hook::Egress => (TC_PASS, TC_DROP),
    };
    let want = if expect == Verdict::Pass { pass } else { drop };
    // Each timed run is checked too: it is the last run's return value, but a policy
    // that changed under the bench would show there.
    let run = |dataplane: &mut Dataplane, repeat| -> anyhow::Result<Result<f64, u32>> {
        let result = dataplane.test_run(packet.hook, &frame, repeat)?;
        Ok(if result.return_value == want {
            Ok(result.duration.as_nanos() as f64)
        } else {
            Err(result.return_value)
        })
    };
    let wrong_path = |got: u32, reasons: &str| {
        let got = match got {
            v if v == pass => "pass".to_string(),
            v if v == drop => "drop".to_string(),
            v => format!("return value {v}"),
        };
        anyhow::anyhow!("the kernel gives {got}{reasons}, the bench means {expect:?}: refusing to time the wrong path")
    };
    // One run first: a wrong verdict stops the bench before it spends time on it, and
    // the counter it moved says which path the kernel took.
    let before = dataplane.counters()?;
    if let Err(got) = run(dataplane, 1)? {
        let after = dataplane.counters()?;
        let moved: Vec<&str> = after
            .by_key
            .iter()
            .filter(|(k, c)| c.packets != before.get(k.0, k.1, k.2).packets)
            .map(|((_, _, reason), _)| reason.as_str())
            .collect();
        return Err(wrong_path(got, &format!(" (reason {})", moved.join(", "))));
    }
    let (mut ns, mut ratios) = (Vec::new(), Vec::new());
    for _ in 0..settings.runs {
        let base = noop.time(&frame, settings.repeat)?;
        let cost = run(dataplane, settings.repeat)?.map_err(|got| wrong_path(got, ""))?;
        ns.push(cost);
        ratios.push(cost / base.max(1.0));
    }
    Ok(Timing {
        ns: median(&ns),
        ratio: median(&ratios),
    })
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn median_duration(values: &[Duration]) -> Duration {
    Duration::from_secs_f64(median(&values.iter().map(Duration::as_secs_f64).collect::<Vec<_>>()))
}

struct Report {
    settings: Settings,
    noop_ns: f64,
    results: Vec<PolicyResult>,
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn times(ratio: f64) -> String {
    format!("{ratio:.1}×")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

impl Report {
    fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        let (kernel, cpu) = machine();
        let s = &self.settings;
        let lines = [
            format!("Kernel {kernel}, {cpu}."),
            format!(
                "Per packet: BPF_PROG_TEST_RUN, {} runs per measurement; each figure is the median of {} measurements; \
                 × noop is the ratio to a do-nothing XDP program run just before each measurement \
                 (median {:.0} ns; TC figures too, as there is no do-nothing TC program). The kernel reports whole ns.",
                s.repeat, s.runs, self.noop_ns
            ),
            format!(
                "Per policy: `Policy::build` and `compile_policy` (release build), and install (fill fresh inner maps, \
                 swap the generation), each the median of {} runs; total is build + compile + install.",
                s.runs
            ),
        ];
        for line in lines {
            out.push_str(&line);
            out.push_str(if markdown { "\n\n" } else { "\n" });
        }
        if !markdown {
            out.push('\n');
        }
        out.push_str(&self.policy_table().render(markdown));
        out.push('\n');
        out.push_str(&self.packet_table().render(markdown));
        out.push('\n');
        out.push_str(&self.target_table().render(markdown));
        out
    }

    fn policy_table(&self) -> Table {
        let mut t = Table::new(&[
            ("policy", false),
            ("rules", true),
            ("v4 hash", true),
            ("v4 trie", true),
            ("v6 hash", true),
            ("v6 trie", true),
            ("build ms", true),
            ("compile ms", true),
            ("install ms", true),
            ("total ms", true),
            ("target", false),
        ]);
        for r in &self.results {
            let [v4h, v4l, v6h, v6l] = r.entries;
            let total = r.compile.map(|c| c.with_install(r.install));
            let target = match total {
                Some(total) if self.is_large(r) => format!("< 1 s: {}", verdict(total < COMPILE_AND_LOAD_BUDGET)),
                _ => String::new(),
            };
            t.row(vec![
                r.label.clone(),
                r.rules.to_string(),
                v4h.to_string(),
                v4l.to_string(),
                v6h.to_string(),
                v6l.to_string(),
                r.compile.map(|c| ms(c.build)).unwrap_or_else(|| "same".into()),
                r.compile.map(|c| ms(c.compile)).unwrap_or_else(|| "same".into()),
                ms(r.install),
                total.map(ms).unwrap_or_default(),
                target,
            ]);
        }
        t
    }

    fn packet_table(&self) -> Table {
        let mut t = Table::new(&[
            ("policy", false),
            ("probe", false),
            ("remote", false),
            ("lookup", false),
            ("XDP ns", true),
            ("XDP × noop", true),
            ("TC ns", true),
            ("TC × noop", true),
            ("target", false),
        ]);
        for r in &self.results {
            for (i, p) in r.probes.iter().enumerate() {
                let target = if r.label.starts_with("(a)") && p.kind.catalog() {
                    let worst = p.ingress.ratio.max(p.egress.ratio);
                    format!("≤ 4×: {}", verdict(worst <= CATALOG_MAX_RATIO))
                } else if p.kind == Kind::ExtraHost && self.is_large(r) {
                    match self.baseline_for(r).and_then(|b| b.probe(Kind::ExtraHost)) {
                        Some(b) => format!("< plain LPM: {}", verdict(beats(p, b))),
                        None => String::new(),
                    }
                } else if p.kind == Kind::ExtraHost && r.baseline_of.is_some() {
                    format!("reference ~{PLAIN_LPM_REFERENCE_RATIO:.0}×")
                } else {
                    String::new()
                };
                t.row(vec![
                    if i == 0 { r.label.clone() } else { String::new() },
                    p.kind.label().into(),
                    p.remote.map(|r| r.to_string()).unwrap_or_default(),
                    p.lookup.clone(),
                    format!("{:.0}", p.ingress.ns),
                    times(p.ingress.ratio),
                    format!("{:.0}", p.egress.ns),
                    times(p.egress.ratio),
                    target,
                ]);
            }
        }
        t
    }

    fn target_table(&self) -> Table {
        let mut t = Table::new(&[("target", false), ("measured", false), ("result", false)]);
        if let Some(catalog) = self.results.first() {
            let worst = catalog
                .probes
                .iter()
                .filter(|p| p.kind.catalog())
                .flat_map(|p| [(p, "XDP", p.ingress.ratio), (p, "TC", p.egress.ratio)])
                .max_by(|a, b| a.2.total_cmp(&b.2));
            // Nearly every catalog entry is a single address: say what a hash hit costs
            // next to the worst allowed path.
            let hash_hits = catalog
                .probes
                .iter()
                .filter(|p| p.kind.catalog() && p.lookup == "hash hit")
                .flat_map(|p| [p.ingress.ratio, p.egress.ratio])
                .fold(f64::NAN, f64::max);
            if let Some((p, hook, ratio)) = worst {
                t.row(vec![
                    "(a) catalog: an allowed catalog address costs ≤ 4× the do-nothing program".into(),
                    format!(
                        "worst {} ({}, {hook}); hash hits ≤ {}",
                        times(ratio),
                        p.kind.label(),
                        times(hash_hits)
                    ),
                    verdict(ratio <= CATALOG_MAX_RATIO).into(),
                ]);
            }
        }
        if let Some(catalog) = self.results.first()
            && let (Some(denied), Some(allowed)) = (catalog.probe(Kind::Denied), catalog.probe(Kind::CatalogHost))
        {
            // The attacker picks the denied path: it must not be the dear one.
            t.row(vec![
                "(a) catalog: a denied packet costs no more than an allowed one (a catalog /32)".into(),
                format!(
                    "XDP {} vs {}, TC {} vs {}",
                    times(denied.ingress.ratio),
                    times(allowed.ingress.ratio),
                    times(denied.egress.ratio),
                    times(allowed.egress.ratio)
                ),
                verdict(denied.ingress.ratio <= allowed.ingress.ratio && denied.egress.ratio <= allowed.egress.ratio)
                    .into(),
            ]);
        }
        for r in self.results.iter().filter(|r| self.is_large(r)) {
            let name = &r.label[..3];
            if let (Some(ours), Some(base)) = (
                r.probe(Kind::ExtraHost),
                self.baseline_for(r).and_then(|b| b.probe(Kind::ExtraHost)),
            ) {
                t.row(vec![
                    format!("{name} 100k: a /32 hit beats a plain LPM trie"),
                    format!(
                        "XDP {} vs {}, TC {} vs {} (reference ~{PLAIN_LPM_REFERENCE_RATIO:.0}×)",
                        times(ours.ingress.ratio),
                        times(base.ingress.ratio),
                        times(ours.egress.ratio),
                        times(base.egress.ratio)
                    ),
                    verdict(beats(ours, base)).into(),
                ]);
            }
            if let Some(compile) = r.compile {
                let total = compile.with_install(r.install);
                t.row(vec![
                    format!("{name} 100k: build + compile + install < 1 s"),
                    format!("{} + {} = {} ms", ms(compile.both), ms(r.install), ms(total)),
                    verdict(total < COMPILE_AND_LOAD_BUDGET).into(),
                ]);
            }
        }
        t
    }

    /// One of ours (not a baseline) with 100k extra prefixes.
    fn is_large(&self, r: &PolicyResult) -> bool {
        r.baseline_of.is_none() && r.extra == LARGE
    }

    fn baseline_for(&self, r: &PolicyResult) -> Option<&PolicyResult> {
        let index = self.results.iter().position(|x| std::ptr::eq(x, r))?;
        self.results.iter().find(|b| b.baseline_of == Some(index))
    }
}

impl PolicyResult {
    fn probe(&self, kind: Kind) -> Option<&ProbeResult> {
        self.probes.iter().find(|p| p.kind == kind)
    }
}

/// Ours is cheaper than the baseline on both hooks.
fn beats(ours: &ProbeResult, baseline: &ProbeResult) -> bool {
    ours.ingress.ns < baseline.ingress.ns && ours.egress.ns < baseline.egress.ns
}

/// The kernel release, and the CPU the figures come from.
pub(crate) fn machine() -> (String, String) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (kernel, format!("{model}, {cpus} CPUs"))
}

/// A table printed aligned for a terminal or as Markdown.
pub(crate) struct Table {
    header: Vec<(&'static str, bool)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns as (title, right-aligned).
    pub(crate) fn new(header: &[(&'static str, bool)]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    pub(crate) fn render(&self, markdown: bool) -> String {
        let titles: Vec<String> = self.header.iter().map(|(h, _)| h.to_string()).collect();
        let width = |i: usize| {
            std::iter::once(&titles[i])
                .chain(self.rows.iter().map(|r| &r[i]))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..titles.len()).map(width).collect();
        let line = |cells: &[String]| -> String {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = " ".repeat(widths[i] - c.chars().count());
                    if self.header[i].1 {
                        format!("{pad}{c}")
                    } else {
                        format!("{c}{pad}")
                    }
                })
                .collect();
            if markdown {
                format!("| {} |\n", padded.join(" | "))
            } else {
                format!("{}\n", padded.join("  ").trim_end())
            }
        };
        let mut out = line(&titles);
        if markdown {
            let rule: Vec<String> = self
                .header
                .iter()
                .zip(&widths)
                .map(|((_, right), &w)| {
                    if *right {
                        format!("{}:", "-".repeat(w.max(2) - 1))
                    } else {
                        "-".repeat(w.max(1))
                    }
                })
                .collect();
            out.push_str(&format!("| {} |\n", rule.join(" | ")));
        }
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}
