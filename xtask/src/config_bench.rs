//! The "100k [[allow]] entries through the config" row of `cargo xtask bench`: the way
//! users add prefixes, timed from the config's text to the generation in force
//! (parse, build, compile, install). Target (issue 10): under 1 s.

use std::time::{Duration, Instant};

use crate::common::config::{Allow, ConfigBuilder};

use allowgate::{
    catalog::{Catalog, Feature},
    dataplane::Dataplane,
    policy::{Config, Policy, Selection, compile_policy},
};

pub const ENTRIES: usize = 100_000;
const BUDGET: Duration = Duration::from_secs(1);

pub struct ConfigResult {
    pub bytes: usize,
    /// Medians: parse, build + compile, install, total.
    pub parse: Duration,
    pub compile: Duration,
    pub install: Duration,
    pub total: Duration,
}

/// A config with `ENTRIES` `[[allow]]` entries, /32s and /24s in the documentation
/// ranges' neighbourhood (10.0.0.0/8 here is only ever a table key, never traffic).
fn config_text() -> String {
    (0..ENTRIES as u32)
        .fold(
            ConfigBuilder::new(&["bench0"])
                .regions(&["eu1"])
                .management(&["192.0.2.0/24"]),
            |config, i| {
                let (a, b, c) = ((i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
                config.allow(if i % 4 == 0 {
                    Allow::egress(&format!("10.{a}.{b}.0/24"), "tcp").ports(&["443"])
                } else {
                    Allow::ingress(&format!("11.{a}.{b}.{c}"), "udp").ports(&["8000-8100"])
                })
            },
        )
        .render()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run(dataplane: &mut Dataplane, runs: usize) -> anyhow::Result<ConfigResult> {
    let text = config_text();
    let catalog = Catalog::builtin();
    let (mut parse, mut compile, mut install, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let config = Config::parse(&text, "bench.toml", &catalog)?;
        let t1 = Instant::now();
        let selection = Selection {
            regions: config.regions.clone(),
            features: Feature::DEFAULT.to_vec(),
        };
        let policy = Policy::build(&catalog, &selection, &config, &[]);
        let tables = compile_policy(&policy)?;
        let t2 = Instant::now();
        dataplane.install(&tables)?;
        let t3 = Instant::now();
        parse.push(t1 - t0);
        compile.push(t2 - t1);
        install.push(t3 - t2);
        total.push(t3 - t0);
    }
    Ok(ConfigResult {
        bytes: text.len(),
        parse: median(parse),
        compile: median(compile),
        install: median(install),
        total: median(total),
    })
}

impl ConfigResult {
    pub fn render(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "\n{} [[allow]] entries through the config ({:.1} MB): parse {:.0} ms, build and compile {:.0} ms, install {:.0} ms; \
             total {:.0} ms (target < {:.0} ms: {})\n",
            ENTRIES,
            self.bytes as f64 / (1 << 20) as f64,
            ms(self.parse),
            ms(self.compile),
            ms(self.install),
            ms(self.total),
            ms(BUDGET),
            if self.total < BUDGET { "met" } else { "NOT met" }
        )
    }
}
