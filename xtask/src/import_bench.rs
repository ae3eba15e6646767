//! The catalog-import row of `cargo xtask bench`: a service tags file the size of
//! Azure's public one (about 5 MB, every service's tags), generated here, read into a
//! catalog. Targets (issue 8): under 0.5 s and under 100 MB.

use std::{fmt::Write as _, time::Instant};

use allowgate::catalog::service_tags::{TagOptions, parse_service_tags};

const TARGET_SECS: f64 = 0.5;
const TARGET_MB: f64 = 100.0;
/// The service's own prefixes in the global tag (about what it held in mid-2026).
const SERVICE_PREFIXES: usize = 2_300;
const FILE_BYTES: usize = 5 << 20;

pub struct ImportResult {
    pub file_mb: f64,
    pub entries: usize,
    pub median_ms: f64,
    pub peak_mb: f64,
    pub baseline_mb: f64,
}

/// A file in Azure's shape: other services' tags around the service's global tag and
/// its 40 regional tags, IPv4 and IPv6, until it is `FILE_BYTES` long.
fn generate() -> String {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = String::from("{\n  \"changeNumber\": 412,\n  \"cloud\": \"Public\",\n  \"values\": [\n");
    let value = |out: &mut String, name: &str, region: &str, prefixes: &[String]| {
        let list = prefixes
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(",\n          ");
        let _ = write!(
            out,
            "    {{\n      \"name\": \"{name}\",\n      \"id\": \"{name}\",\n      \"properties\": {{\n        \"changeNumber\": 7,\n        \"region\": \"{region}\",\n        \"regionId\": 1,\n        \"platform\": \"Azure\",\n        \"systemService\": \"X\",\n        \"addressPrefixes\": [\n          {list}\n        ],\n        \"networkFeatures\": [\"API\", \"NSG\"]\n      }}\n    }},\n"
        );
    };
    let v4 = |n: u64| {
        format!(
            "{}.{}.{}.{}/32",
            1 + n % 223,
            (n >> 8) % 256,
            (n >> 16) % 256,
            (n >> 24) % 256
        )
    };
    let service: Vec<String> = (0..SERVICE_PREFIXES).map(|i| v4(i as u64 * 7919 + 13)).collect();
    value(&mut out, "MicrosoftCloudAppSecurity", "", &service);
    for (r, chunk) in service.chunks(SERVICE_PREFIXES / 40 + 1).enumerate() {
        value(
            &mut out,
            &format!("MicrosoftCloudAppSecurity.Region{r}"),
            &format!("region{r}"),
            chunk,
        );
    }
    let mut tag = 0;
    while out.len() < FILE_BYTES {
        let prefixes: Vec<String> = (0..60)
            .map(|i| {
                let n = next();
                if i % 4 == 0 {
                    format!("2001:db8:{:x}:{:x}::/64", n & 0xffff, (n >> 16) & 0xffff)
                } else {
                    format!("{}/{}", v4(n).trim_end_matches("/32"), 32)
                }
            })
            .collect();
        value(
            &mut out,
            &format!("OtherService{tag}.Region{}", tag % 50),
            "somewhere",
            &prefixes,
        );
        tag += 1;
    }
    out.truncate(out.trim_end().trim_end_matches(',').len());
    out.push_str("\n  ]\n}\n");
    out
}

/// Peak resident memory of this process so far (VmHWM), in MB.
fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next().and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn run(runs: usize) -> anyhow::Result<ImportResult> {
    let file = generate();
    let baseline_mb = peak_mb();
    let mut times = Vec::new();
    let mut entries = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let catalog = parse_service_tags(file.as_bytes(), "ServiceTags_Public_bench.json", TagOptions::default())?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        entries = catalog.entries.len();
    }
    times.sort_by(f64::total_cmp);
    Ok(ImportResult {
        file_mb: file.len() as f64 / (1 << 20) as f64,
        entries,
        median_ms: times[times.len() / 2],
        peak_mb: peak_mb(),
        baseline_mb,
    })
}

impl ImportResult {
    pub fn render(&self) -> String {
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        format!(
            "\nservice tags import: a {:.1} MB file, {} entries: median {:.0} ms (target < {:.0} ms: {}); \
             peak RSS {:.0} MB, {:.0} MB of it before the import (target < {:.0} MB: {})\n",
            self.file_mb,
            self.entries,
            self.median_ms,
            TARGET_SECS * 1000.0,
            met(self.median_ms < TARGET_SECS * 1000.0),
            self.peak_mb,
            self.baseline_mb,
            TARGET_MB,
            met(self.peak_mb < TARGET_MB)
        )
    }
}
