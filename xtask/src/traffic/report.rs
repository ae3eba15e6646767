//! What the traffic bench prints and writes: per case, the capacity (median of rounds)
//! beside the generator, the offered rate and the receiver's NAPI utilisation; ratios
//! paired per round; the per-round samples as CSV.

use std::{fmt::Write as _, fs::File, io::Write as _, path::Path, time::Duration};

use anyhow::Context as _;

use super::{
    cases::{Load, Receiver, Traffic},
    generator::GeneratorKind,
    measure::Measured,
    rig::{GRO_FLUSH_TIMEOUT_NS, NAPI_DEFER_HARD_IRQS},
};
use crate::benchkit::{Table, machine, median};

pub(crate) struct Sample {
    pub(crate) round: usize,
    pub(crate) receiver: Receiver,
    pub(crate) traffic: Traffic,
    pub(crate) by: GeneratorKind,
    pub(crate) m: Measured,
}

impl Sample {
    /// Frames per second of NAPI CPU time, in millions.
    fn mpps(&self) -> f64 {
        ratio(self.m.frames as f64, self.m.cpu_s) / 1e6
    }

    fn offered_mpps(&self) -> f64 {
        ratio(self.m.offered as f64, self.m.offered_s) / 1e6
    }

    /// The share of its core the NAPI thread used while frames came.
    fn busy(&self) -> f64 {
        ratio(self.m.cpu_s, self.m.offered_s)
    }

    /// The share of the offered frames the receiver's NAPI took (the rest overflowed
    /// its ring: it did not keep up, or it was not woken in time).
    fn taken(&self) -> f64 {
        ratio(self.m.frames as f64, self.m.offered as f64)
    }

    fn per_wakeup(&self) -> f64 {
        ratio(self.m.frames as f64, self.m.wakeups as f64)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b <= 0.0 { f64::NAN } else { a / b }
}

pub(crate) struct TrafficReport {
    pub(crate) rounds: usize,
    pub(crate) seconds: f64,
    pub(crate) slices: usize,
    pub(crate) samples: Vec<Sample>,
    /// What each case did in its path check, e.g. "dropped (no-flow)".
    pub(crate) outcomes: Vec<((Receiver, Traffic), String)>,
    pub(crate) missing: Vec<String>,
    /// 1-minute load averages read at the start and after each round.
    pub(crate) load: Vec<f64>,
    pub(crate) elapsed: Duration,
}

type Case = (Receiver, Traffic);

impl TrafficReport {
    fn cases(&self) -> Vec<Case> {
        let mut cases: Vec<Case> = self.samples.iter().map(|s| (s.receiver, s.traffic)).collect();
        cases.sort_by_key(|(r, t)| (*t, *r));
        cases.dedup();
        cases
    }

    fn samples_of(&self, case: Case) -> Vec<&Sample> {
        let mut v: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| (s.receiver, s.traffic) == case)
            .collect();
        v.sort_by_key(|s| s.round);
        v
    }

    fn series(&self, case: Case, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.samples_of(case).into_iter().map(f).collect()
    }

    /// Per-round a / b (capacity), in round order; empty when b was not measured.
    fn paired(&self, a: Case, b: Case) -> Vec<f64> {
        let (x, y) = (self.series(a, Sample::mpps), self.series(b, Sample::mpps));
        if y.is_empty() {
            return Vec::new();
        }
        x.iter().zip(&y).map(|(x, y)| x / y).collect()
    }

    fn paired_cell(&self, a: Case, b: Case) -> String {
        let p = self.paired(a, b);
        if p.is_empty() {
            "-".into()
        } else {
            format!("{:.2}", median(&p))
        }
    }

    pub(crate) fn render(&self, markdown: bool) -> String {
        let (kernel, cpu) = machine();
        let mut out = String::new();
        let generators: Vec<&str> = {
            let mut g: Vec<&str> = self.samples.iter().map(|s| s.by.key()).collect();
            g.sort();
            g.dedup();
            g
        };
        let _ = writeln!(
            out,
            "Kernel {kernel}, {cpu}. Real traffic: 64-byte frames from one core ({} generator) through a veth; \
             capacity is frames per second of the receiving NAPI thread's CPU time (threaded NAPI pinned to the \
             other core, SCHED_FIFO, polls batched: napi_defer_hard_irqs {NAPI_DEFER_HARD_IRQS}, \
             gro_flush_timeout {} us). {} rounds of {:.1} s per case, each in {} slices taking turns with the \
             other cases'; figures are medians of rounds, ratios medians of per-round ratios. Whole run {:.0} s; \
             load average (1 min) {}.",
            generators.join(", "),
            GRO_FLUSH_TIMEOUT_NS.parse::<u64>().unwrap_or(0) / 1000,
            self.rounds,
            self.seconds,
            self.slices,
            self.elapsed.as_secs_f64(),
            self.load_summary(),
        );
        let kinds: Vec<Traffic> = {
            let mut k: Vec<Traffic> = self.samples.iter().map(|s| s.traffic).collect();
            k.sort();
            k.dedup();
            k
        };
        let legend: Vec<String> = kinds.iter().map(|t| format!("{}: {}", t.key(), t.label())).collect();
        let _ = writeln!(out, "Traffic: {}.", legend.join("; "));
        for m in &self.missing {
            let _ = writeln!(out, "Left out: {m}.");
        }
        out.push('\n');
        let ceiling = (Receiver::XdpDrop, Traffic::Denied);
        let mut t = Table::new(&[
            ("traffic", false),
            ("receiver", false),
            ("outcome", false),
            ("generator", false),
            ("offered Mpps", true),
            ("taken", true),
            ("NAPI busy", true),
            ("frames/wake-up", true),
            ("Mpps per core", true),
            ("vs XDP_DROP", true),
            ("vs xdp-filter", true),
            ("vs nftables", true),
            ("per-round Mpps", false),
        ]);
        for case @ (receiver, traffic) in self.cases() {
            let samples = self.samples_of(case);
            let (filter, nft) = receiver.yardsticks();
            let outcome = self
                .outcomes
                .iter()
                .find(|(c, _)| *c == case)
                .map(|(_, o)| o.clone())
                .unwrap_or_default();
            let series = self.series(case, Sample::mpps);
            t.row(vec![
                traffic.key().into(),
                receiver.label().into(),
                outcome,
                samples.first().map(|s| s.by.key()).unwrap_or("-").into(),
                format!("{:.2}", median(&self.series(case, Sample::offered_mpps))),
                format!("{:.0}%", 100.0 * median(&self.series(case, Sample::taken))),
                format!("{:.0}%", 100.0 * median(&self.series(case, Sample::busy))),
                format!("{:.0}", median(&self.series(case, Sample::per_wakeup))),
                format!("{:.2}", median(&series)),
                self.paired_cell(case, ceiling),
                self.paired_cell(case, (filter, traffic)),
                self.paired_cell(case, (nft, traffic)),
                series.iter().map(|m| format!("{m:.2}")).collect::<Vec<_>>().join(" "),
            ]);
        }
        out.push_str(&t.render(markdown));
        out.push('\n');

        let against = |ours: Case, theirs: Case, what: &str, target: Option<(f64, &str)>| -> String {
            let paired = self.paired(ours, theirs);
            if paired.is_empty() || self.series(ours, Sample::mpps).is_empty() {
                return format!("{what}: not measured\n");
            }
            let m = median(&paired);
            let rounds = paired.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
            match target {
                Some((goal, source)) => format!(
                    "{what}: median {m:.2} (rounds: {rounds}); {source} >= {goal}: {}\n",
                    if m >= goal { "PASS" } else { "MISS" }
                ),
                None => format!("{what}: median {m:.2} (rounds: {rounds})\n"),
            }
        };
        let ours = (Receiver::Allowgate(Load::Catalog), Traffic::Denied);
        out.push_str(&against(
            ours,
            (Receiver::XdpFilter, Traffic::Denied),
            "allowgate / xdp-filter, denied, paired per round",
            Some((1.0, "target")),
        ));
        out.push_str(&against(
            ours,
            ceiling,
            "allowgate denied / XDP_DROP",
            Some((0.6, "goal")),
        ));
        out.push_str(&against(
            (Receiver::Allowgate(Load::Catalog), Traffic::Junk),
            (Receiver::XdpFilter, Traffic::Junk),
            "allowgate / xdp-filter, junk, without the web server",
            None,
        ));
        let web = Receiver::Allowgate(Load::WebServer);
        for flood in Traffic::FLOODS {
            let target = (flood == Traffic::Junk).then_some((1.0, "target (issue 18)"));
            out.push_str(&against(
                (web, flood),
                (Receiver::XdpFilterWeb, flood),
                &format!("allowgate / xdp-filter, {}", flood.key()),
                target,
            ));
            out.push_str(&against(
                (web, flood),
                (Receiver::NftConntrack, flood),
                &format!("allowgate / nftables with conntrack, {}", flood.key()),
                None,
            ));
        }
        out
    }

    fn load_summary(&self) -> String {
        if self.load.is_empty() {
            return "unknown".into();
        }
        let min = self.load.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.load.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{min:.2}-{max:.2} (this bench keeps about 1-2 of it busy)")
    }

    pub(crate) fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut f = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(
            f,
            "round,receiver,traffic,generator,frames,napi_cpu_s,mpps,offered,offered_s,offered_mpps,napi_busy,wakeups"
        )?;
        for s in &self.samples {
            writeln!(
                f,
                "{},{},{},{},{},{:.4},{:.4},{},{:.3},{:.4},{:.4},{}",
                s.round + 1,
                s.receiver.key(),
                s.traffic.key(),
                s.by.key(),
                s.m.frames,
                s.m.cpu_s,
                s.mpps(),
                s.m.offered,
                s.m.offered_s,
                s.offered_mpps(),
                s.busy(),
                s.m.wakeups
            )?;
        }
        Ok(())
    }
}

/// The 1-minute load average.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: usize, receiver: Receiver, traffic: Traffic, frames: u64, cpu_s: f64) -> Sample {
        Sample {
            round,
            receiver,
            traffic,
            by: GeneratorKind::Tap,
            m: Measured {
                frames,
                cpu_s,
                wakeups: frames / 100,
                offered: frames,
                offered_s: 2.0,
            },
        }
    }

    #[test]
    fn ratios_pair_rounds_and_a_missing_receiver_shows_a_dash() {
        let web = Receiver::Allowgate(Load::WebServer);
        let mut samples = Vec::new();
        // Round 0: ours 2x theirs; round 1: 1x; round 2: 4x (a noisy round): median 2.
        for (round, ours, theirs) in [(0, 0.1, 0.2), (1, 0.2, 0.2), (2, 0.05, 0.2)] {
            samples.push(sample(round, web, Traffic::Junk, 1_000_000, ours));
            samples.push(sample(round, Receiver::XdpFilterWeb, Traffic::Junk, 1_000_000, theirs));
        }
        let report = TrafficReport {
            rounds: 3,
            seconds: 2.0,
            slices: 4,
            samples,
            outcomes: vec![((web, Traffic::Junk), "dropped (no-rule)".into())],
            missing: vec![],
            load: vec![0.5, 1.5],
            elapsed: Duration::from_secs(10),
        };
        let paired = report.paired((web, Traffic::Junk), (Receiver::XdpFilterWeb, Traffic::Junk));
        assert_eq!(paired, vec![2.0, 1.0, 4.0]);
        let text = report.render(true);
        assert!(
            text.contains(
                "allowgate / xdp-filter, junk: median 2.00 (rounds: 2.00 1.00 4.00); target (issue 18) >= 1: PASS"
            ),
            "{text}"
        );
        assert!(
            text.contains("allowgate / nftables with conntrack, junk: not measured"),
            "{text}"
        );
        assert!(text.contains("dropped (no-rule)"), "{text}");
        assert!(text.contains("load average (1 min) 0.50-1.50"), "{text}");
        // Capacity: 1e6 frames in 0.1 s of NAPI time is 10 Mpps; offered 0.5 Mpps over 2 s.
        let row = text.lines().find(|l| l.contains("allowgate")).expect("allowgate's row");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(&cells[5..11], ["0.50", "100%", "5%", "100", "10.00", "-"], "{row}");
        assert_eq!(cells[13], "10.00 5.00 20.00", "{row}");
    }
}
