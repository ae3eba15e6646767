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
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use allowgate::{
    catalog::{Catalog, Feature},
    dataplane::{Dataplane, LoadOptions, ensure_bpffs},
    policy::{
        Config, Policy, Selection, StateMode, Tables, compile_policy,
        model::{self, Hook, Packet, Reason, Verdict},
    },
};
use allowgate_ebpf as abi;
use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};

pub(crate) use crate::benchkit::*;
use crate::common::{PinDir, packet};

mod attack;
mod flows;
mod policies;
mod report;

pub(crate) use policies::*;
pub(crate) use report::*;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Program runs per measurement (the BPF_PROG_TEST_RUN repeat) [default: 1000000, 100000 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) repeat: Option<u32>,
    /// Measurements per figure, of which the median is reported [default: 5, 3 with --quick]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) runs: Option<u32>,
    /// Fewer repeats and runs: checks that the bench works, not figures to quote
    #[arg(long)]
    pub(crate) quick: bool,
    /// Print the tables as Markdown, for the README
    #[arg(long)]
    pub(crate) markdown: bool,
    /// Only one part: `import` (a 5 MB service tags file; no BPF, no root needed),
    /// `config` (100k [[allow]] entries from the config's text to the kernel), or
    /// `catalog` (the catalog's packets, with and without connection tracking), or
    /// `attack` (the packets of the floods an attacker sends, beside xdp-filter's verdict)
    #[arg(long, value_name = "ROW", value_parser = ["import", "config", "catalog", "attack"])]
    pub(crate) only: Option<String>,
    /// Real traffic instead: frames through veths, capacity of the receiving core for
    /// XDP_DROP, XDP_PASS, xdp-filter, nftables and allowgate, steady and under floods
    /// (see traffic/mod.rs)
    #[arg(long)]
    pub(crate) traffic: bool,
    /// --traffic: where the frames come from
    #[arg(long, value_enum, default_value = "tap")]
    pub(crate) generator: crate::traffic::GeneratorKind,
    /// --traffic: interleaved rounds, of which the medians are reported [default: 5, 2 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) rounds: Option<u32>,
    /// --traffic: seconds of traffic per case and round [default: 2, 0.5 with --quick]
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub(crate) seconds: Option<f64>,
    /// --traffic: where the per-round samples go as CSV
    #[arg(long, value_name = "PATH", default_value = "target/traffic-bench.csv")]
    pub(crate) csv: std::path::PathBuf,
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

/// The label of the catalog measured again with the stateless return path.
pub(crate) const STATELESS_LABEL: &str = "(a') catalog, stateless";
/// Connections the new-flow figure opens, one packet each.
const NEW_FLOWS: u16 = 2000;
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
            generator: args.generator,
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
        quick: args.quick,
    };

    // First, while the process is small: its peak memory is the import's.
    let only_attack = args.only.as_deref() == Some("attack");
    let only_catalog = args.only.as_deref() == Some("catalog") || only_attack;
    let import = if only_catalog {
        None
    } else {
        eprintln!("bench: service tags import ...");
        Some(crate::import_bench::run(settings.runs)?)
    };

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

    let through_config = if only_catalog {
        None
    } else {
        eprintln!(
            "bench: {} [[allow]] entries through the config ...",
            crate::config_bench::ENTRIES
        );
        Some(crate::config_bench::run(&mut dataplane, settings.runs)?)
    };
    if let (Some("config"), Some(through_config)) = (args.only.as_deref(), &through_config) {
        print!("{}", through_config.render());
        return Ok(());
    }

    let mut results = Vec::new();
    let mut flows = None;
    let mut attack = None;
    // `--only catalog`: the catalog alone (with and without tracking, and new flows).
    let specs = policy_specs();
    let take = if only_catalog { 1 } else { specs.len() };
    for spec in specs.into_iter().take(take) {
        if only_attack {
            break;
        }
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

        if extra.is_empty() {
            // The same catalog with the stateless return path: what tracking costs,
            // measured in this run.
            let label = STATELESS_LABEL;
            eprintln!("bench: {label} ...");
            let mut config = config.clone();
            config.state.mode = StateMode::Stateless;
            let (policy, tables, _) = compile_timed(&catalog, &selection, &config, 1)?;
            let result = measure_policy(&mut dataplane, &mut noop, &settings, label, &policy, &tables, &probes)?;
            results.push(result);

            eprintln!("bench: new flows ...");
            let (policy, tables, _) = compile_timed(&catalog, &selection, &base, 1)?;
            dataplane.install(&tables)?;
            flows = Some(flows::measure(&mut dataplane, &mut noop, &policy, NEW_FLOWS)?);
        }

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
    if args.only.is_none() || only_attack {
        eprintln!("bench: the floods an attacker sends ...");
        attack = Some(attack::measure(
            &mut dataplane,
            &mut noop,
            &settings,
            &catalog,
            &selection,
            &base,
        )?);
    }
    drop(dataplane);
    drop(pins);

    let report = Report {
        settings,
        noop_ns: median(&noop.samples),
        results,
        flows,
        attack,
    };
    print!("{}", report.render(args.markdown));
    if let Some(through_config) = through_config {
        print!("{}", through_config.render());
    }
    if let Some(import) = import {
        print!("{}", import.render());
    }
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

pub(crate) struct Settings {
    pub(crate) repeat: u32,
    pub(crate) runs: usize,
    /// `--quick`: fewer of everything (the attack bench sends a tenth of its peers).
    pub(crate) quick: bool,
}

/// The bench's own bpffs directory, detached and removed on drop.
/// The do-nothing XDP program, and every time it took, for the report's header.
pub(crate) struct Noop {
    pub(crate) ebpf: Ebpf,
    pub(crate) samples: Vec<f64>,
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

/// Median ns and ratio to the do-nothing program, over the runs of one figure.
#[derive(Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) ns: f64,
    pub(crate) ratio: f64,
}

pub(crate) struct ProbeResult {
    pub(crate) kind: Kind,
    pub(crate) remote: Option<IpAddr>,
    pub(crate) lookup: String,
    pub(crate) ingress: Timing,
    pub(crate) egress: Timing,
}

/// Medians of `Policy::build`, of `compile_policy`, and of the two in one run.
#[derive(Clone, Copy)]
pub(crate) struct CompileTimes {
    pub(crate) build: Duration,
    pub(crate) compile: Duration,
    pub(crate) both: Duration,
}

impl CompileTimes {
    fn with_install(&self, install: Duration) -> Duration {
        self.both + install
    }
}

pub(crate) struct PolicyResult {
    pub(crate) label: String,
    pub(crate) rules: usize,
    /// Prefixes added to the catalog.
    pub(crate) extra: usize,
    pub(crate) entries: [usize; 4],
    /// None for a baseline: its tables are made by hand from the policy's.
    pub(crate) compile: Option<CompileTimes>,
    pub(crate) install: Duration,
    pub(crate) probes: Vec<ProbeResult>,
    /// For a plain-LPM baseline: the index of the result it is the baseline of.
    pub(crate) baseline_of: Option<usize>,
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
        let timing = |dataplane: &mut Dataplane, noop: &mut Noop, packet: &Packet| -> anyhow::Result<Timing> {
            check_intent(policy, packet, verdict, reason).with_context(|| what.clone())?;
            time_probe(dataplane, noop, settings, packet, verdict)
                .with_context(|| format!("{what} on {:?}", packet.hook))
        };
        // The opening packet first, then the handshake once, so that the answer is timed
        // as an established flow's.
        let (ingress, egress) = if probe.opener == Hook::Egress {
            let egress = timing(dataplane, noop, &probe.egress)?;
            if verdict == Verdict::Pass {
                handshake(dataplane, &probe.handshake).with_context(|| what.clone())?;
            }
            (timing(dataplane, noop, &probe.ingress)?, egress)
        } else {
            let ingress = timing(dataplane, noop, &probe.ingress)?;
            if verdict == Verdict::Pass {
                handshake(dataplane, &probe.handshake).with_context(|| what.clone())?;
            }
            (ingress, timing(dataplane, noop, &probe.egress)?)
        };
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

/// Puts a probe's handshake through once: each packet must pass.
fn handshake(dataplane: &mut Dataplane, packets: &[Packet]) -> anyhow::Result<()> {
    for packet in packets {
        let frame = packet::frame(packet, &packet::Shape::Plain);
        let pass = match packet.hook {
            Hook::Ingress => XDP_PASS,
            Hook::Egress => TC_PASS,
        };
        let got = dataplane.test_run(packet.hook, &frame, 1)?.return_value;
        if got != pass {
            bail!(
                "the handshake's {:?} packet did not pass (return value {got})",
                packet.hook
            );
        }
    }
    Ok(())
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
