//! The Prometheus endpoint (`metrics = "127.0.0.1:9464"` in the config): the counters,
//! table sizes, selection and catalog ages in the text exposition format 0.0.4, served
//! on `GET /metrics`.
//!
//! `prometheus-client` writes the exposition (here); hyper parses the requests and
//! `listener` decides who is served and what a scrape may cost (per-address and total
//! connection limits, a head deadline, one shared scrape at a time), on a thread of its
//! own.
//!
//! Each scrape reads fresh numbers from the pins (`read_live`) and the daemon's state
//! file, so the endpoint shows what the kernel enforces, not what the daemon believes.

mod listener;
#[cfg(test)]
mod tests;

use std::{fmt, io, net::SocketAddr, path::PathBuf};

use allowgate_ebpf::{self as abi, Reason};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, prometheus_text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

pub use listener::{
    Limits, MAX_CONNECTIONS, MAX_PER_PEER, MAX_REQUEST, MAX_SCRAPES, PeerKey, REQUEST_TIMEOUT, Server, spawn,
};

use super::Record;
use crate::{
    dataplane::{DataplaneError, LiveState, read_live},
    policy::config::GiveBackPath,
};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr}: {source} (free the port or change `metrics` in the config)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the pinned maps under {dir}: {source}")]
    Live {
        dir: PathBuf,
        // Boxed: aya's errors are large, and this travels in every scrape's Result.
        #[source]
        source: Box<DataplaneError>,
    },
    #[error("cannot read the daemon's state in {dir}: {detail}")]
    State { dir: PathBuf, detail: String },
}

// ---------------------------------------------------------------------------------------
// The exposition.

fn direction_name(direction: u8) -> &'static str {
    if direction == abi::DIR_EGRESS {
        "egress"
    } else {
        "ingress"
    }
}

fn verdict_name(verdict: u8) -> &'static str {
    if verdict == abi::VERDICT_DROP { "drop" } else { "pass" }
}

/// One scrape's numbers, written out by `prometheus-client` as they are: the values
/// come from the kernel's counters, so they are constants to the encoder rather than
/// counters it keeps.
#[derive(Debug)]
struct Snapshot {
    live: LiveState,
    state: Option<Record>,
    /// Seconds since the epoch, for the catalog's ages.
    now: u64,
    /// Each configured interface, and whether the kernel runs our programs on it;
    /// `None` where nobody asked the kernel (a rendering from given numbers).
    protected: Option<Vec<(String, bool)>>,
}

/// Families are written in the order of the calls; a counter's name gets `_total`.
struct Families<'a>(DescriptorEncoder<'a>);

impl Families<'_> {
    fn counter(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], u64)]) -> fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], u64)]) -> fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

impl Collector for Snapshot {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let (live, mut out) = (&self.live, Families(encoder));
        let directions = [abi::DIR_INGRESS, abi::DIR_EGRESS];
        let verdicts = [abi::VERDICT_PASS, abi::VERDICT_DROP];
        type Field = fn(&abi::Counter) -> u64;
        let per_reason: [(&str, &str, Field); 2] = [
            (
                "allowgate_packets",
                "Packets judged, by direction, verdict and reason.",
                |c| c.packets,
            ),
            (
                "allowgate_bytes",
                "Bytes of the packets judged, by direction, verdict and reason.",
                |c| c.bytes,
            ),
        ];
        for (name, help, field) in per_reason {
            let mut labels = Vec::new();
            for direction in directions {
                for verdict in verdicts {
                    for reason in Reason::ALL {
                        let value = field(&live.counters.get(direction, verdict, reason));
                        let set = [
                            ("direction", direction_name(direction)),
                            ("verdict", verdict_name(verdict)),
                            ("reason", reason.as_str()),
                        ];
                        labels.push((set, value));
                    }
                }
            }
            let samples: Vec<(&[(&str, &str)], u64)> = labels.iter().map(|(l, v)| (&l[..], *v)).collect();
            out.counter(name, help, &samples)?;
        }

        out.gauge(
            "allowgate_table_entries",
            "Entries of the active policy tables, by address family.",
            &[
                (&[("family", "ipv4")], live.v4_entries as u64),
                (&[("family", "ipv6")], live.v6_entries as u64),
            ],
        )?;
        out.gauge(
            "allowgate_generation",
            "Generation of the policy in force (0: none loaded yet).",
            &[(&[], live.config.generation)],
        )?;
        let enforcing = u64::from(live.config.flags & abi::F_ENFORCE != 0);
        out.gauge(
            "allowgate_enforcing",
            "1 when drops are enforced, 0 in monitor mode.",
            &[(&[], enforcing)],
        )?;
        let counters = &live.counters;
        let plain: [(&str, &str, u64); 5] = [
            (
                "allowgate_events_suppressed",
                "Drop events not emitted because of the per-CPU event rate limit.",
                counters.events_suppressed,
            ),
            (
                "allowgate_events_lost",
                "Drop events lost because the event ring buffer was full.",
                counters.events_lost,
            ),
            (
                "allowgate_dns_answers_held",
                "DNS answers from the resolvers held until what they teach was in place.",
                counters.dns_held,
            ),
            (
                "allowgate_dns_answers_unheld",
                "DNS answers passed without being held because the answer ring was full.",
                counters.dns_unheld,
            ),
            (
                "allowgate_dns_answers_unsolicited",
                "Answers from a resolver's address to no query this host sent: they teach nothing.",
                counters.dns_unsolicited,
            ),
        ];
        for (name, help, value) in plain {
            out.counter(name, help, &[(&[], value)])?;
        }

        // DNS give-back: left out for pins that predate it.
        if let Some(dns) = &live.dns {
            let paths = [GiveBackPath::LiveFrames, GiveBackPath::Loopback, GiveBackPath::None];
            let samples: Vec<[(&str, &str); 1]> = paths.iter().map(|p| [("path", p.as_str())]).collect();
            let samples: Vec<(&[(&str, &str)], u64)> = samples
                .iter()
                .zip(paths)
                .map(|(l, p)| (&l[..], u64::from(dns.path == p)))
                .collect();
            out.gauge(
                "allowgate_dns_give_back",
                "1 for the path by which held DNS answers go back to the stack (none: answers pass at once, learned from a copy).",
                &samples,
            )?;
            out.counter(
                "allowgate_dns_answers",
                "DNS answers from the resolvers, by what became of them: held, given back, failed (held and lost), passed unheld (no give-back path, a copy learned).",
                &[
                    (&[("outcome", "held")], counters.dns_held),
                    (&[("outcome", "given_back")], dns.given_back),
                    (&[("outcome", "failed")], dns.failed),
                    (&[("outcome", "passed_unheld")], counters.dns_passed),
                ],
            )?;
        }

        // Connection tracking: left out for pins that predate it.
        if let Some(f) = &live.flows {
            out.gauge(
                "allowgate_flows",
                "Flows in the connection tracking tables (assured and not), by address family.",
                &[(&[("family", "ipv4")], f.v4), (&[("family", "ipv6")], f.v6)],
            )?;
            out.gauge(
                "allowgate_flows_assured",
                "Assured flows (a handshake completed, or answered and used again), by address family.",
                &[
                    (&[("family", "ipv4")], f.assured_v4),
                    (&[("family", "ipv6")], f.assured_v6),
                ],
            )?;
            out.gauge(
                "allowgate_flows_capacity",
                "Capacity of each family's table of assured flows ([state] max_flows).",
                &[(&[], f.capacity)],
            )?;
            out.gauge(
                "allowgate_flows_unassured_capacity",
                "Capacity of each family's table of unassured flows.",
                &[(&[], f.unassured_capacity)],
            )?;
            let flows: [(&str, &str, u64); 8] = [
                (
                    "allowgate_flow_inserts",
                    "Flows the data plane made assured.",
                    f.inserts,
                ),
                (
                    "allowgate_flow_unassured_inserts",
                    "Flows the data plane began to track, unassured.",
                    f.unassured_inserts,
                ),
                (
                    "allowgate_flows_seeded",
                    "Flows the daemon seeded from the host's connections before enforcing.",
                    f.seeded,
                ),
                (
                    "allowgate_flows_migrated",
                    "Flows the daemon carried over from tables it replaced (a new capacity or layout).",
                    f.migrated,
                ),
                (
                    "allowgate_flows_expired",
                    "Assured flows found idle past their timeout and removed.",
                    f.expired,
                ),
                (
                    "allowgate_flow_evictions",
                    "Assured flows a full table pushed out, least recently used first.",
                    f.evictions,
                ),
                (
                    "allowgate_flow_unassured_evictions",
                    "Unassured flows another one pushed out of their bucket before they expired.",
                    f.unassured_evictions,
                ),
                (
                    "allowgate_fragments_noted",
                    "First fragments that passed and vouch for their datagram's other fragments.",
                    f.fragments_noted,
                ),
            ];
            for (name, help, value) in flows {
                out.counter(name, help, &[(&[], value)])?;
            }
        }

        // What only the daemon's state file knows; without one these families are left out
        // rather than written with made-up values.
        let Some(state) = &self.state else { return Ok(()) };

        if let Some((entries, refused)) = state.learned {
            out.gauge(
                "allowgate_learned_addresses",
                "Addresses learned or resolved for the catalog's DNS names.",
                &[(&[], entries as u64)],
            )?;
            out.counter(
                "allowgate_learned_refused",
                "Learned addresses refused because the table was at its bound.",
                &[(&[], refused)],
            )?;
        }
        out.gauge(
            "allowgate_last_change_timestamp_seconds",
            "When the daemon last put a policy in force, in seconds since the Unix epoch.",
            &[(&[], state.last_change)],
        )?;

        let mut regions: Vec<&str> = state.regions.iter().map(String::as_str).collect();
        regions.sort_unstable();
        regions.dedup();
        let regions: Vec<_> = regions.into_iter().map(|r| [("region", r)]).collect();
        if !regions.is_empty() {
            let samples: Vec<(&[(&str, &str)], u64)> = regions.iter().map(|l| (&l[..], 1)).collect();
            out.gauge(
                "allowgate_region_enabled",
                "1 for each enabled region (data center).",
                &samples,
            )?;
        }

        let mut features: Vec<&str> = state.features.iter().map(|f| f.as_str()).collect();
        features.sort_unstable();
        features.dedup();
        let features: Vec<_> = features.into_iter().map(|f| [("feature", f)]).collect();
        if !features.is_empty() {
            let samples: Vec<(&[(&str, &str)], u64)> = features.iter().map(|l| (&l[..], 1)).collect();
            out.gauge(
                "allowgate_feature_enabled",
                "1 for each enabled feature of the catalog.",
                &samples,
            )?;
        }

        let mut interfaces: Vec<_> = state.interfaces.iter().collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        let interfaces: Vec<_> = interfaces
            .into_iter()
            .map(|i| {
                [
                    ("interface", i.name.as_str()),
                    ("xdp_mode", i.xdp_mode.as_str()),
                    ("tc_mode", i.tc_mode.as_str()),
                ]
            })
            .collect();
        if !interfaces.is_empty() {
            let samples: Vec<(&[(&str, &str)], u64)> = interfaces.iter().map(|l| (&l[..], 1)).collect();
            out.gauge(
                "allowgate_interface_info",
                "1 for each interface the daemon attached to, with its hook modes.",
                &samples,
            )?;
        }
        if let Some(protected) = &self.protected {
            let labels: Vec<_> = protected
                .iter()
                .map(|(name, _)| [("interface", name.as_str())])
                .collect();
            let samples: Vec<(&[(&str, &str)], u64)> = labels
                .iter()
                .zip(protected)
                .map(|(l, (_, on))| (&l[..], u64::from(*on)))
                .collect();
            out.gauge(
                "allowgate_interface_protected",
                "1 for each configured interface the kernel runs both programs on (as `status` says), 0 where it does not.",
                &samples,
            )?;
        }

        // Each source of the catalog in force: what it is, and how old (when something
        // dates it).
        let sources = &state.catalog_sources;
        if !sources.is_empty() {
            let info: Vec<_> = sources
                .iter()
                .map(|s| {
                    [
                        ("source", s.source.as_str()),
                        ("kind", s.kind.as_str()),
                        ("version", s.version.as_str()),
                    ]
                })
                .collect();
            let samples: Vec<(&[(&str, &str)], u64)> = info.iter().map(|l| (&l[..], 1)).collect();
            out.gauge(
                "allowgate_catalog_source_info",
                "1 for each source of the catalog in force, with its kind and version (ms.date or changeNumber).",
                &samples,
            )?;
            let ages: Vec<_> = sources
                .iter()
                .filter_map(|s| Some(([("source", s.source.as_str())], s.age(self.now)?)))
                .collect();
            if !ages.is_empty() {
                let samples: Vec<(&[(&str, &str)], u64)> = ages.iter().map(|(l, v)| (&l[..], *v)).collect();
                out.gauge(
                    "allowgate_catalog_age_seconds",
                    "Age of each source of the catalog in force: a service tags file since the date in its name, a page since it was last found current.",
                    &samples,
                )?;
            }
        }
        if let Some(days) = state.max_catalog_age {
            out.gauge(
                "allowgate_catalog_max_age_seconds",
                "The config's max_catalog_age in seconds: a source older than this is stale (0: never).",
                &[(&[], u64::from(days) * 86_400)],
            )?;
        }
        Ok(())
    }
}

/// The metrics of `live` (the pins) and `state` (the daemon's state file, if any), in
/// the Prometheus text format 0.0.4. Every (direction, verdict, reason) series is
/// written, zeros too, so that series do not appear and vanish between scrapes; the
/// order is fixed.
pub fn render(live: &LiveState, state: Option<&Record>) -> String {
    render_at(live, state, super::now())
}

/// `render` with ages counted to `now` (seconds since the epoch).
pub fn render_at(live: &LiveState, state: Option<&Record>, now: u64) -> String {
    encode(Snapshot {
        live: live.clone(),
        state: state.cloned(),
        now,
        protected: None,
    })
}

fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

// ---------------------------------------------------------------------------------------
// Where a scrape's numbers come from.

/// Produces the body of one scrape. It runs on a blocking thread: reading maps is a
/// series of syscalls, one per table entry counted.
pub trait Source: Send + Sync + 'static {
    fn scrape(&self) -> Result<String, MetricsError>;
}

impl<F> Source for F
where
    F: Fn() -> Result<String, MetricsError> + Send + Sync + 'static,
{
    fn scrape(&self) -> Result<String, MetricsError> {
        self()
    }
}

/// The daemon's source: the pins under `bpffs_dir` and the state file in `state_dir`.
#[derive(Clone, Debug)]
pub struct Pinned {
    pub bpffs_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Source for Pinned {
    fn scrape(&self) -> Result<String, MetricsError> {
        let state = Record::load(&self.state_dir).map_err(|e| MetricsError::State {
            dir: self.state_dir.clone(),
            detail: format!("{e:#}"),
        })?;
        // The daemon's own count of what it installed: counting in the kernel needs
        // CAP_SYS_ADMIN, which the service does not have.
        let live = read_live(&self.bpffs_dir, state.as_ref().and_then(|s| s.entries)).map_err(|source| {
            MetricsError::Live {
                dir: self.bpffs_dir.clone(),
                source: Box::new(source),
            }
        })?;
        // The kernel's word on each interface, as `status` gives it.
        let protected = state.as_ref().map(|s| {
            super::status::kernel_interfaces(&self.bpffs_dir, s)
                .into_iter()
                .map(|i| (i.name, i.attached))
                .collect()
        });
        Ok(encode(Snapshot {
            live,
            state,
            now: super::now(),
            protected,
        }))
    }
}
