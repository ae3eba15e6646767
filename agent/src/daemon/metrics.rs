//! The Prometheus endpoint (`metrics = "127.0.0.1:9464"` in the config): the counters,
//! table sizes and selection in the text exposition format 0.0.4, served on
//! `GET /metrics`.
//!
//! hyper parses the requests (and answers the malformed ones), `prometheus-client` writes
//! the exposition; this file only decides what is served and keeps the limits a root
//! daemon needs: a request head of at most `MAX_REQUEST` bytes, read within a timeout,
//! one request per connection, no request body read, at most `MAX_CONNECTIONS`
//! connections at once.
//!
//! Each scrape reads fresh numbers from the pins (`read_live`) and the daemon's state
//! file, so the endpoint shows what the kernel enforces, not what the daemon believes.

use std::{convert::Infallible, fmt, io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use allowgate_ebpf::{self as abi, Reason};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, prometheus_text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use super::State;
use crate::dataplane::{DataplaneError, LiveState, read_live};

/// The largest request head (request line and headers) read; a bigger one gets 431.
/// Also the smallest read buffer hyper accepts.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request head; the scrape and the response get as
/// long again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once rather than queued, so a flood
/// costs neither memory nor blocking threads (each scrape reads maps on one).
pub const MAX_CONNECTIONS: usize = 32;

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
    state: Option<State>,
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
        Ok(())
    }
}

/// The metrics of `live` (the pins) and `state` (the daemon's state file, if any), in
/// the Prometheus text format 0.0.4. Every (direction, verdict, reason) series is
/// written, zeros too, so that series do not appear and vanish between scrapes; the
/// order is fixed.
pub fn render(live: &LiveState, state: Option<&State>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        live: live.clone(),
        state: state.cloned(),
    }));
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
        let state = State::load(&self.state_dir).map_err(|e| MetricsError::State {
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
        Ok(render(&live, state.as_ref()))
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP side.

/// Serves `GET /metrics` on `addr` from the pins under `bpffs_dir` and the state in
/// `state_dir` until `shutdown` turns true (or its sender is dropped).
///
/// A daemon that wants a taken port to fail its start, rather than a task, binds first
/// with [`Server::bind`] and spawns [`Server::run`].
pub async fn serve(
    addr: SocketAddr,
    bpffs_dir: PathBuf,
    state_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
) -> Result<(), MetricsError> {
    Server::bind(addr, Pinned { bpffs_dir, state_dir })
        .await?
        .run(shutdown)
        .await;
    Ok(())
}

/// A bound metrics listener and the source of its scrapes.
pub struct Server {
    listener: TcpListener,
    source: Arc<Scraper>,
    timeout: Duration,
}

/// A source, and the last error it gave: a scrape that keeps failing the same way (every
/// 15 s, say) is logged as a warning once, not at every scrape.
struct Scraper {
    source: Box<dyn Source>,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Scraper {
    fn scrape(&self) -> Result<String, MetricsError> {
        let result = self.source.scrape();
        let error = result.as_ref().err().map(|e| e.to_string());
        let mut last = self.last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &error {
            Some(e) if last.as_ref() != Some(e) => warn!("metrics: scrapes fail: {e}"),
            Some(e) => debug!("metrics: scrape failed: {e}"),
            None if last.is_some() => info!("metrics: scrapes work again"),
            None => {}
        }
        *last = error;
        result
    }
}

impl Server {
    pub async fn bind(addr: SocketAddr, source: impl Source) -> Result<Server, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Server::from_listener(listener, source))
    }

    pub fn from_listener(listener: TcpListener, source: impl Source) -> Server {
        let source = Scraper {
            source: Box::new(source),
            last_error: std::sync::Mutex::new(None),
        };
        Server {
            listener,
            source: Arc::new(source),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Replaces `REQUEST_TIMEOUT` (tests use a short one).
    pub fn with_timeout(self, timeout: Duration) -> Server {
        Server { timeout, ..self }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections, each served in its own task, until `shutdown` turns true or
    /// its sender is dropped; connections still open then are cut.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Server {
            listener,
            source,
            timeout,
        } = self;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            debug!(%peer, "metrics: {MAX_CONNECTIONS} connections open already; closing this one");
                            continue;
                        };
                        let source = source.clone();
                        connections.spawn(async move {
                            serve_connection(stream, source, timeout).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors, mostly: wait for some to be freed
                        // instead of spinning on the error.
                        warn!("metrics: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
    }
}

/// One request on one connection. hyper answers what it cannot parse (400, or 431 past
/// `MAX_REQUEST`) and closes a connection whose head is not in within `timeout`; the
/// whole exchange gets twice that, so a client that does not take its response is cut
/// off too.
async fn serve_connection(stream: TcpStream, source: Arc<Scraper>, timeout: Duration) {
    let service = service_fn(move |request| {
        let source = source.clone();
        async move { Ok::<_, Infallible>(respond(&request, source).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(2 * timeout, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("metrics: a connection failed: {e}"),
        Err(_) => debug!("metrics: a client took too long; closing its connection"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `GET` (or `HEAD`) `/metrics`, with any query, is a scrape; other paths are 404 and
/// other methods 405. The request body, if any, is never read.
async fn respond(request: &Request<Incoming>, source: Arc<Scraper>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found: the metrics are at /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // hyper leaves the body out of the answer to HEAD.
    match tokio::task::spawn_blocking(move || source.scrape()).await {
        Ok(Ok(body)) => {
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
            );
            response
        }
        Ok(Err(e)) => {
            let line = e.to_string().replace(['\r', '\n'], " ");
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{line}\n"))
        }
        Err(e) => {
            warn!("metrics: the scrape task failed: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "the scrape failed\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
    };

    use super::*;
    use crate::dataplane::Counters;

    fn live() -> LiveState {
        let mut counters = Counters {
            events_suppressed: 7,
            events_lost: 3,
            ..Counters::default()
        };
        let counter = |packets, bytes| abi::Counter { packets, bytes };
        counters.by_key.insert(
            (abi::DIR_INGRESS, abi::VERDICT_PASS, Reason::Policy),
            counter(100, 64_000),
        );
        counters
            .by_key
            .insert((abi::DIR_INGRESS, abi::VERDICT_DROP, Reason::NoPolicy), counter(5, 300));
        counters
            .by_key
            .insert((abi::DIR_EGRESS, abi::VERDICT_DROP, Reason::V4Mapped), counter(2, 180));
        counters
            .by_key
            .insert((abi::DIR_EGRESS, abi::VERDICT_PASS, Reason::Arp), counter(u64::MAX, 1));
        LiveState {
            slot: 1,
            config: abi::GenConfig {
                generation: 42,
                flags: abi::F_ENFORCE | abi::F_ARP,
                ..Default::default()
            },
            v4_entries: 123,
            v6_entries: 45,
            counters,
            flows: Some(crate::dataplane::flows::FlowStats {
                v4: 7,
                v6: 2,
                assured_v4: 4,
                assured_v6: 1,
                capacity: u64::from(abi::FLOW_MAX),
                unassured_capacity: 32_768,
                inserts: 12,
                unassured_inserts: 40,
                seeded: 3,
                migrated: 0,
                expired: 1,
                evictions: 5,
                unassured_evictions: 6,
                fragments_noted: 8,
            }),
            links: vec!["xdp-native-veth0".into(), "tc-tcx-veth0".into()],
        }
    }

    /// Built from JSON, as the daemon writes it, so that fields the state file gains
    /// later (with defaults) do not break this test.
    fn state() -> State {
        serde_json::from_value(serde_json::json!({
            // Out of order and repeated: the output sorts and dedups.
            "regions": ["eu2", "eu1", "eu2"],
            "features": ["siem", "portal"],
            "mode": "enforce",
            "interfaces": [{"name": "ag\"weird\\name\n", "xdp_mode": "native", "tc_mode": "tcx"}],
            "generation": 42,
            "last_change": 1_700_000_000u64,
            "bpffs_dir": "/sys/fs/bpf/allowgate",
            "pid": 1,
        }))
        .expect("a state file")
    }

    /// The exposition holds `line` (a whole sample line).
    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    /// `prometheus-client` writes the format; these check what it is given: names,
    /// labels, values, which families appear, and that label values are escaped.
    #[test]
    fn render_gives_the_values_under_their_names() {
        let text = render(&live(), Some(&state()));
        let by = |d: &str, v: &str, r: &str| format!("{{direction=\"{d}\",verdict=\"{v}\",reason=\"{r}\"}}");
        let lines = [
            format!("allowgate_packets_total{} 100", by("ingress", "pass", "policy")),
            format!("allowgate_bytes_total{} 64000", by("ingress", "pass", "policy")),
            format!("allowgate_packets_total{} 5", by("ingress", "drop", "no-policy")),
            format!("allowgate_bytes_total{} 180", by("egress", "drop", "ipv4-mapped")),
            format!("allowgate_packets_total{} {}", by("egress", "pass", "arp"), u64::MAX),
            format!("allowgate_packets_total{} 0", by("egress", "drop", "malformed")),
            format!("allowgate_bytes_total{} 0", by("ingress", "drop", "vlan-depth")),
            "allowgate_table_entries{family=\"ipv4\"} 123".into(),
            "allowgate_table_entries{family=\"ipv6\"} 45".into(),
            "allowgate_generation 42".into(),
            "allowgate_enforcing 1".into(),
            "allowgate_events_suppressed_total 7".into(),
            "allowgate_events_lost_total 3".into(),
            "allowgate_last_change_timestamp_seconds 1700000000".into(),
            "allowgate_region_enabled{region=\"eu1\"} 1".into(),
            "allowgate_region_enabled{region=\"eu2\"} 1".into(),
            "allowgate_feature_enabled{feature=\"siem\"} 1".into(),
            r#"allowgate_interface_info{interface="ag\"weird\\name\n",xdp_mode="native",tc_mode="tcx"} 1"#.into(),
        ];
        for line in &lines {
            assert!(has_line(&text, line), "no line {line:?} in\n{text}");
        }
        let help_and_type = [
            ("allowgate_packets_total", "counter"),
            ("allowgate_bytes_total", "counter"),
            ("allowgate_dns_answers_unsolicited_total", "counter"),
            ("allowgate_enforcing", "gauge"),
            ("allowgate_interface_info", "gauge"),
        ];
        for (name, kind) in help_and_type {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("# HELP {name} "))),
                "{name} has HELP"
            );
            assert!(has_line(&text, &format!("# TYPE {name} {kind}")), "{name} is a {kind}");
        }

        // Every combination, zeros included, so series never appear or vanish.
        for name in ["allowgate_packets_total{", "allowgate_bytes_total{"] {
            let n = text.lines().filter(|l| l.starts_with(name)).count();
            assert_eq!(n, abi::DIR_MAX * abi::VERDICT_MAX * Reason::ALL.len(), "{name}");
        }
        let regions = text
            .lines()
            .filter(|l| l.starts_with("allowgate_region_enabled{"))
            .count();
        assert_eq!(regions, 2, "sorted and deduplicated");
        assert!(text.ends_with('\n'));
        assert_eq!(render(&live(), Some(&state())), text, "the output is deterministic");
    }

    #[test]
    fn monitor_mode_and_no_state_file() {
        let mut live = live();
        live.config.flags = abi::F_ARP;
        let text = render(&live, None);
        assert!(has_line(&text, "allowgate_enforcing 0"), "{text}");
        assert!(
            !text.contains("allowgate_region_enabled"),
            "no state, no regions:\n{text}"
        );
        assert!(!text.contains("allowgate_last_change_timestamp_seconds"));
        assert!(has_line(&text, "allowgate_generation 42"));
    }

    /// A server on 127.0.0.1:0 with a fixed body (or a failing source), a short
    /// timeout, and the sender that stops it.
    type Running = (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>);

    async fn start(source: impl Source, timeout: Duration) -> Running {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), source)
            .await
            .expect("bind 127.0.0.1:0")
            .with_timeout(timeout);
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server.run(stopped));
        (addr, stop, task)
    }

    /// Sends `request` raw and reads the whole response (the server closes), failing
    /// rather than hanging. A server that closes with part of the request unread may
    /// reset the connection after its response: what was read by then is the response.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let io = async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            // A request the server refuses part way may not be taken in full.
            let _ = stream.write_all(request).await;
            let mut response = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                response.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8(response).expect("a text response")
        };
        tokio::time::timeout(Duration::from_secs(10), io)
            .await
            .expect("the server answers in time")
    }

    /// The response head, lowercase, to look headers up in.
    fn head_of(response: &str) -> String {
        response
            .split_once("\r\n\r\n")
            .map_or(response, |(h, _)| h)
            .to_ascii_lowercase()
    }

    fn status_of(response: &str) -> &str {
        response.split("\r\n").next().unwrap_or("")
    }

    fn body_of(response: &str) -> &str {
        response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let body = render(&live(), Some(&state()));
        let expected = body.clone();
        let (addr, stop, task) = start(move || Ok(body.clone()), Duration::from_secs(5)).await;

        let ok = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&ok), "HTTP/1.1 200 OK", "{ok}");
        let head = head_of(&ok);
        assert!(head.contains("\r\ncontent-type: text/plain; version=0.0.4"), "{ok}");
        assert!(head.contains("\r\nconnection: close"), "{ok}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", expected.len())),
            "{ok}"
        );
        assert_eq!(body_of(&ok), expected);

        let with_query = exchange(addr, b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n").await;
        assert_eq!(
            status_of(&with_query),
            "HTTP/1.0 200 OK",
            "answered in the client's version"
        );

        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status_of(&head), "HTTP/1.1 200 OK");
        assert_eq!(body_of(&head), "", "HEAD has no body");

        let cases: &[(&[u8], &str)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\nabc",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (b"GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"hello there\r\n", "HTTP/1.1 400 Bad Request"),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                "HTTP/1.1 400 Bad Request",
            ),
            (b"GET /metrics HTTP/9.9\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (
                b"GET /metrics HTTP/1.1\r\nbroken header\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
        ];
        for (request, want) in cases {
            let response = exchange(addr, request).await;
            assert_eq!(
                status_of(&response),
                *want,
                "request {:?}",
                String::from_utf8_lossy(request)
            );
        }
        let refused = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head_of(&refused).contains("\r\nallow: get, head"), "{refused}");

        // A head past the limit gets 431 at once, without the server waiting for more.
        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
        huge.resize(4 * MAX_REQUEST, b'a');
        let response = exchange(addr, &huge).await;
        assert_eq!(
            status_of(&response),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "{response}"
        );

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the server stops when told")
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is closed after shutdown"
        );
    }

    #[tokio::test]
    async fn a_slow_client_stalls_no_one_and_is_cut_off() {
        let (addr, stop, task) = start(
            || Ok("allowgate_generation 1\n".to_string()),
            Duration::from_millis(500),
        )
        .await;
        // Connects, sends half a request line, then nothing.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /met").await.unwrap();
        // Another client is served meanwhile.
        let started = std::time::Instant::now();
        let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_of(&response), "HTTP/1.1 200 OK");
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "the fast client waited for the slow one"
        );
        // The slow one is closed, unanswered, once its time is up.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
            .await
            .expect("cut off")
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"),
            "an incomplete request is not served"
        );
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a dropped sender stops the server")
            .unwrap();
    }

    /// Connections past `MAX_CONNECTIONS` are closed at once; those within it are served.
    #[tokio::test]
    async fn connections_past_the_bound_are_closed() {
        let (addr, stop, task) = start(|| Ok("allowgate_generation 1\n".to_string()), Duration::from_secs(5)).await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /met").await.unwrap();
            idle.push(s);
        }
        // Give the server time to take them all.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(response, "", "the connection past the bound is closed unanswered");
        drop(idle);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_of(&response), "HTTP/1.1 200 OK", "served once slots are free");
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_read_is_a_503_with_one_line() {
        let dir = PathBuf::from("/nonexistent/allowgate-metrics-test");
        let failing = Pinned {
            bpffs_dir: dir.clone(),
            state_dir: dir,
        };
        let (addr, stop, task) = start(failing, Duration::from_secs(5)).await;
        let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_of(&response), "HTTP/1.1 503 Service Unavailable", "{response}");
        let body = body_of(&response);
        assert!(
            body.starts_with("cannot read the pinned maps under /nonexistent/allowgate-metrics-test"),
            "{body}"
        );
        assert_eq!(body.matches('\n').count(), 1, "one line: {body:?}");
        assert!(body.ends_with('\n'));
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn serve_reports_a_taken_port() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let (_stop, stopped) = watch::channel(false);
        let err = serve(addr, "/nonexistent".into(), "/nonexistent".into(), stopped)
            .await
            .expect_err("port in use");
        assert!(matches!(err, MetricsError::Bind { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
