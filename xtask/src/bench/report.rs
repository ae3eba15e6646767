//! What the bench prints: the per-packet and per-policy tables, against the targets.

use std::time::Duration;

use super::*;

pub(crate) fn median_duration(values: &[Duration]) -> Duration {
    Duration::from_secs_f64(median(&values.iter().map(Duration::as_secs_f64).collect::<Vec<_>>()))
}

pub(crate) struct Report {
    pub(crate) settings: Settings,
    pub(crate) noop_ns: f64,
    pub(crate) results: Vec<PolicyResult>,
    pub(crate) flows: Option<super::flows::FlowTimes>,
    pub(crate) attack: Option<super::attack::AttackTimes>,
}

/// How much dearer than the stateless path a denied packet may look in one run and
/// still count as no slower: the spread of repeated runs of one probe on this machine.
const DENIED_NOISE: f64 = 1.10;

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

pub(crate) fn times(ratio: f64) -> String {
    format!("{ratio:.1}×")
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

impl Report {
    pub(crate) fn render(&self, markdown: bool) -> String {
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
        if !self.results.is_empty() {
            out.push_str(&self.policy_table().render(markdown));
            out.push('\n');
            out.push_str(&self.packet_table().render(markdown));
            out.push('\n');
        }
        let targets = self.target_table();
        if !targets.rows.is_empty() {
            out.push_str(&targets.render(markdown));
        }
        if let Some(a) = &self.attack {
            out.push('\n');
            out.push_str(&a.table().render(markdown));
            out.push_str(if markdown { "\n" } else { "" });
            out.push_str(&a.footnote());
        }
        out
    }

    pub(crate) fn policy_table(&self) -> Table {
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

    pub(crate) fn packet_table(&self) -> Table {
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

    pub(crate) fn target_table(&self) -> Table {
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
        let stateless = self.results.iter().find(|r| r.label == STATELESS_LABEL);
        if let Some(catalog) = self.results.first()
            && let (Some(out), Some(inbound)) = (catalog.probe(Kind::CatalogHost), catalog.probe(Kind::CatalogCidr))
        {
            // The portal's SYN-ACK coming back, and the host's SYN-ACK to a mail server:
            // each the answer of a flow the other packet opened.
            let worst = out.ingress.ratio.max(inbound.egress.ratio);
            let without = stateless
                .and_then(|r| Some((r.probe(Kind::CatalogHost)?, r.probe(Kind::CatalogCidr)?)))
                .map(|(o, i)| format!("; stateless {} and {}", times(o.ingress.ratio), times(i.egress.ratio)))
                .unwrap_or_default();
            t.row(vec![
                "(a) catalog: the answer of a tracked flow costs ≤ 4× the do-nothing program".into(),
                format!(
                    "XDP {} (portal's answer), TC {} (answer to mail){without}",
                    times(out.ingress.ratio),
                    times(inbound.egress.ratio)
                ),
                verdict(worst <= CATALOG_MAX_RATIO).into(),
            ]);
        }
        if let (Some(catalog), Some(stateless)) = (self.results.first(), stateless)
            && let (Some(with), Some(without)) = (catalog.probe(Kind::Denied), stateless.probe(Kind::Denied))
        {
            t.row(vec![
                format!(
                    "(a) catalog: a denied packet costs no more with tracking than without (within {:.0} %)",
                    (DENIED_NOISE - 1.0) * 100.0
                ),
                format!(
                    "XDP {} vs {}, TC {} vs {}",
                    times(with.ingress.ratio),
                    times(without.ingress.ratio),
                    times(with.egress.ratio),
                    times(without.egress.ratio)
                ),
                verdict(
                    with.ingress.ratio <= without.ingress.ratio * DENIED_NOISE
                        && with.egress.ratio <= without.egress.ratio * DENIED_NOISE,
                )
                .into(),
            ]);
        }
        if let Some(f) = &self.flows {
            t.row(vec![
                format!(
                    "new flow: the first packet of {} connections (TC, single runs; no target)",
                    f.connections
                ),
                format!(
                    "{:.0} ns opening, {:.0} ns once open, {:.0} ns do-nothing ({} flows added)",
                    f.new_ns, f.refresh_ns, f.noop_ns, f.inserted
                ),
                "-".into(),
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
    pub(crate) fn is_large(&self, r: &PolicyResult) -> bool {
        r.baseline_of.is_none() && r.extra == LARGE
    }

    pub(crate) fn baseline_for(&self, r: &PolicyResult) -> Option<&PolicyResult> {
        let index = self.results.iter().position(|x| std::ptr::eq(x, r))?;
        self.results.iter().find(|b| b.baseline_of == Some(index))
    }
}

impl PolicyResult {
    pub(crate) fn probe(&self, kind: Kind) -> Option<&ProbeResult> {
        self.probes.iter().find(|p| p.kind == kind)
    }
}

/// Ours is cheaper than the baseline on both hooks.
pub(crate) fn beats(ours: &ProbeResult, baseline: &ProbeResult) -> bool {
    ours.ingress.ns < baseline.ingress.ns && ours.egress.ns < baseline.egress.ns
}
