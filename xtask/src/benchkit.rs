//! What both benches share (`bench` per packet and per policy, `traffic` on real
//! frames): the base config and its seeded extra prefixes, medians, and the table
//! printer. A leaf: it imports neither bench, so `bench` can hand `--traffic` to
//! `traffic` without the two importing each other.

use std::{collections::HashSet, net::Ipv4Addr};

use allowgate::{
    catalog::{Direction, PortRange, Proto},
    policy::{Config, config::AllowEntry},
};
use ipnet::Ipv4Net;

/// 100k is where the targets are set.
pub(crate) const LARGE: usize = 100_000;

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

pub(crate) const V6_HOST: &str = "2001:db8:1::10/128";
pub(crate) const V6_NET: &str = "2001:db8:2::/48";

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// How the extra prefixes spread over prefix lengths.
#[derive(Clone, Copy)]
pub(crate) enum Mix {
    /// 90% /32, the rest /24../31: many single hosts, as resolved names give.
    HostHeavy,
    /// 10% /32, the rest /16../30: mostly networks, as cloud ranges give.
    CidrHeavy,
}

pub(crate) struct ExtraSet {
    pub(crate) count: usize,
    pub(crate) mix: Mix,
    pub(crate) seed: u64,
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
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero seed (zero stays zero).
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in 0..n for n far below 2^64.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
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
    pub(crate) header: Vec<(&'static str, bool)>,
    pub(crate) rows: Vec<Vec<String>>,
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
