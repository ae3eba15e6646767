//! The Prometheus endpoint (`metrics = "127.0.0.1:9464"` in the config): the counters,
//! table sizes and selection in the text exposition format 0.0.4, served on
//! `GET /metrics`.
//!
//! The HTTP side is written by hand rather than with hyper or axum: it answers one fixed
//! path with one request per connection, which takes a couple of hundred lines, while a
//! general HTTP stack would add a large dependency tree (and its parsers, keep-alive,
//! pipelining and upgrade paths) to a root daemon that only needs this. What it
//! accepts is kept small on purpose: a request head of at most `MAX_REQUEST` bytes,
//! read within a timeout, in its own task, on at most `MAX_CONNECTIONS` connections.
//!
//! Each scrape reads fresh numbers from the pins (`read_live`) and the daemon's state
//! file, so the endpoint shows what the kernel enforces, not what the daemon believes.

use std::{fmt::Write as _, io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use allowgate_ebpf::{self as abi, Reason};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use crate::{
    daemon::State,
    dataplane::{DataplaneError, LiveState, read_live},
};

/// The largest request head (request line and headers) read; a bigger one gets 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request head, and then to take the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once rather than queued, so a flood
/// costs neither memory nor blocking threads (each scrape reads maps on one).
pub const MAX_CONNECTIONS: usize = 32;
/// What is read and thrown away after the response, so that closing a socket with
/// unread request bytes does not reset the connection before the client has read it.
const MAX_DRAIN: usize = 64 * 1024;
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A HELP text: backslash and newline escaped (quotes are literal there).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The exposition being written, one metric family after another.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape_label(value));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The metrics of `live` (the pins) and `state` (the daemon's state file, if any), in
/// the Prometheus text format 0.0.4. Every (direction, verdict, reason) series is
/// written, zeros too, so that series do not appear and vanish between scrapes; the
/// order is fixed.
pub fn render(live: &LiveState, state: Option<&State>) -> String {
    let mut out = Exposition(String::with_capacity(16 * 1024));
    let directions = [abi::DIR_INGRESS, abi::DIR_EGRESS];
    let verdicts = [abi::VERDICT_PASS, abi::VERDICT_DROP];

    type Field = fn(&abi::Counter) -> u64;
    let per_reason: [(&str, &str, Field); 2] = [
        (
            "allowgate_packets_total",
            "Packets judged, by direction, verdict and reason.",
            |c| c.packets,
        ),
        (
            "allowgate_bytes_total",
            "Bytes of the packets judged, by direction, verdict and reason.",
            |c| c.bytes,
        ),
    ];
    for (name, help, field) in per_reason {
        out.family(name, "counter", help);
        for direction in directions {
            for verdict in verdicts {
                for reason in Reason::ALL {
                    let counter = live.counters.get(direction, verdict, reason);
                    let labels = [
                        ("direction", direction_name(direction)),
                        ("verdict", verdict_name(verdict)),
                        ("reason", reason.as_str()),
                    ];
                    out.sample(name, &labels, field(&counter));
                }
            }
        }
    }

    out.family(
        "allowgate_table_entries",
        "gauge",
        "Entries of the active policy tables, by address family.",
    );
    out.sample("allowgate_table_entries", &[("family", "ipv4")], live.v4_entries as u64);
    out.sample("allowgate_table_entries", &[("family", "ipv6")], live.v6_entries as u64);

    out.family(
        "allowgate_generation",
        "gauge",
        "Generation of the policy in force (0: none loaded yet).",
    );
    out.sample("allowgate_generation", &[], live.config.generation);

    out.family(
        "allowgate_enforcing",
        "gauge",
        "1 when drops are enforced, 0 in monitor mode.",
    );
    out.sample(
        "allowgate_enforcing",
        &[],
        u64::from(live.config.flags & abi::F_ENFORCE != 0),
    );

    out.family(
        "allowgate_events_suppressed_total",
        "counter",
        "Drop events not emitted because of the per-CPU event rate limit.",
    );
    out.sample(
        "allowgate_events_suppressed_total",
        &[],
        live.counters.events_suppressed,
    );

    out.family(
        "allowgate_events_lost_total",
        "counter",
        "Drop events lost because the event ring buffer was full.",
    );
    out.sample("allowgate_events_lost_total", &[], live.counters.events_lost);

    out.family(
        "allowgate_dns_answers_held_total",
        "counter",
        "DNS answers from the resolvers held until what they teach was in place.",
    );
    out.sample("allowgate_dns_answers_held_total", &[], live.counters.dns_held);
    out.family(
        "allowgate_dns_answers_unheld_total",
        "counter",
        "DNS answers passed without being held because the answer ring was full.",
    );
    out.sample("allowgate_dns_answers_unheld_total", &[], live.counters.dns_unheld);
    out.family(
        "allowgate_dns_answers_unsolicited_total",
        "counter",
        "Answers from a resolver's address to no query this host sent: they teach nothing.",
    );
    out.sample(
        "allowgate_dns_answers_unsolicited_total",
        &[],
        live.counters.dns_unsolicited,
    );

    // What only the daemon's state file knows; without one these families are left out
    // rather than written with made-up values.
    let Some(state) = state else { return out.0 };

    if let Some((entries, refused)) = state.learned {
        out.family(
            "allowgate_learned_addresses",
            "gauge",
            "Addresses learned or resolved for the catalog's DNS names.",
        );
        out.sample("allowgate_learned_addresses", &[], entries as u64);
        out.family(
            "allowgate_learned_refused_total",
            "counter",
            "Learned addresses refused because the table was at its bound.",
        );
        out.sample("allowgate_learned_refused_total", &[], refused);
    }

    out.family(
        "allowgate_last_change_timestamp_seconds",
        "gauge",
        "When the daemon last put a policy in force, in seconds since the Unix epoch.",
    );
    out.sample("allowgate_last_change_timestamp_seconds", &[], state.last_change);

    let mut regions: Vec<&str> = state.regions.iter().map(String::as_str).collect();
    regions.sort_unstable();
    regions.dedup();
    if !regions.is_empty() {
        out.family(
            "allowgate_region_enabled",
            "gauge",
            "1 for each enabled region (data center).",
        );
        for region in regions {
            out.sample("allowgate_region_enabled", &[("region", region)], 1);
        }
    }

    let mut features: Vec<&str> = state.features.iter().map(|f| f.as_str()).collect();
    features.sort_unstable();
    features.dedup();
    if !features.is_empty() {
        out.family(
            "allowgate_feature_enabled",
            "gauge",
            "1 for each enabled feature of the catalog.",
        );
        for feature in features {
            out.sample("allowgate_feature_enabled", &[("feature", feature)], 1);
        }
    }

    let mut interfaces: Vec<_> = state.interfaces.iter().collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    if !interfaces.is_empty() {
        out.family(
            "allowgate_interface_info",
            "gauge",
            "1 for each interface the daemon attached to, with its hook modes.",
        );
        for i in interfaces {
            let labels = [
                ("interface", i.name.as_str()),
                ("xdp_mode", i.xdp_mode.as_str()),
                ("tc_mode", i.tc_mode.as_str()),
            ];
            out.sample("allowgate_interface_info", &labels, 1);
        }
    }
    out.0
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
                            handle(stream, source, timeout).await;
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

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    extra_header: Option<&'static str>,
    body: String,
    head_only: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            extra_header: None,
            body: body.into(),
            head_only: false,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if let Some(h) = self.extra_header {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// What reading a request head came to.
enum Head {
    /// The request line and headers, without the blank line.
    Complete(Vec<u8>),
    /// The client closed without sending anything (a port probe).
    Nothing,
    /// A reason to answer 400 at once.
    Bad(&'static str),
    /// `MAX_REQUEST` bytes and no end in sight.
    TooLarge,
}

async fn handle(mut stream: TcpStream, source: Arc<Scraper>, timeout: Duration) {
    let response = match tokio::time::timeout(timeout, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "Request Timeout", "request timeout\n"),
        Ok(Err(e)) => return debug!("metrics: cannot read a request: {e}"),
        Ok(Ok(Head::Nothing)) => return,
        Ok(Ok(Head::Bad(why))) => Response::text(400, "Bad Request", format!("bad request: {why}\n")),
        Ok(Ok(Head::TooLarge)) => Response::text(
            431,
            "Request Header Fields Too Large",
            format!("request head larger than {MAX_REQUEST} bytes\n"),
        ),
        Ok(Ok(Head::Complete(head))) => respond(&head, source).await,
    };
    let bytes = response.to_bytes();
    let reply = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await?;
        // Read what the client still sends until it closes, then close: a close with
        // unread bytes would send a reset, which may destroy the response in flight.
        let mut scratch = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_DRAIN {
            match stream.read(&mut scratch).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    };
    match tokio::time::timeout(timeout, reply).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("metrics: cannot send a response: {e}"),
        Err(_) => debug!("metrics: a client took too long to take its response"),
    }
}

/// Reads up to the blank line that ends a request head, rejecting what cannot become
/// a valid request as soon as that shows, rather than after the timeout.
async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if let Err(why) = plausible_start(&buf[..len]) {
            return Ok(Head::Bad(why));
        }
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(if len == 0 {
                Head::Nothing
            } else {
                Head::Bad("the request ends before its blank line")
            });
        }
        len += n;
    }
}

/// Where the head ends: the offset of its blank line (CRLF CRLF, or a bare LF LF).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Checks what has arrived of the request line so far: a method of capital letters,
/// and (once the line is complete) a whole valid request line. A TLS hello or random
/// bytes are turned away on their first byte.
fn plausible_start(buf: &[u8]) -> Result<(), &'static str> {
    let method_len = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
    if method_len > 16 || !buf[..method_len].iter().all(u8::is_ascii_uppercase) {
        return Err("the request line does not start with a method");
    }
    if let Some(eol) = buf.iter().position(|&b| b == b'\n') {
        let line = std::str::from_utf8(&buf[..eol]).map_err(|_| "the request line is not text")?;
        request_line(line.strip_suffix('\r').unwrap_or(line))?;
    }
    Ok(())
}

/// `METHOD SP target SP HTTP/1.x`: the method and the target.
fn request_line(line: &str) -> Result<(&str, &str), &'static str> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not `METHOD /path HTTP/1.1`");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("the method is not a token of capital letters");
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the target is not a path");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("the version is not HTTP/1.0 or HTTP/1.1");
    }
    Ok((method, target))
}

/// Validates a whole head; returns the method and the target.
fn parse_head(head: &[u8]) -> Result<(&str, &str), &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not text")?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let (method, target) = request_line(lines.next().unwrap_or(""))?;
    for header in lines {
        let Some((name, _)) = header.split_once(':') else {
            return Err("a header line has no `:`");
        };
        // Names are tokens; a leading space or tab would be a folded line, which
        // RFC 9112 says to reject.
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a header name is not a token");
        }
    }
    Ok((method, target))
}

async fn respond(head: &[u8], source: Arc<Scraper>) -> Response {
    let (method, target) = match parse_head(head) {
        Ok(request) => request,
        Err(why) => return Response::text(400, "Bad Request", format!("bad request: {why}\n")),
    };
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    if path != "/metrics" {
        return Response::text(404, "Not Found", "not found: the metrics are at /metrics\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Response {
                extra_header: Some("Allow: GET, HEAD"),
                ..Response::text(405, "Method Not Allowed", "method not allowed: use GET\n")
            };
        }
    };
    match tokio::task::spawn_blocking(move || source.scrape()).await {
        Ok(Ok(body)) => Response {
            content_type: CONTENT_TYPE,
            head_only,
            ..Response::text(200, "OK", body)
        },
        Ok(Err(e)) => {
            let line = e.to_string().replace(['\r', '\n'], " ");
            Response {
                head_only,
                ..Response::text(503, "Service Unavailable", format!("{line}\n"))
            }
        }
        Err(e) => {
            warn!("metrics: the scrape task failed: {e}");
            Response {
                head_only,
                ..Response::text(500, "Internal Server Error", "the scrape failed\n")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use tokio::net::TcpStream;

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

    /// One parsed sample: the metric name and its labels.
    type Series = (String, BTreeMap<String, String>);

    /// A parser of the text format written for the test, independent of `render`: it
    /// checks the rules a scraper relies on and returns the samples.
    fn parse_exposition(text: &str) -> BTreeMap<Series, f64> {
        assert!(text.ends_with('\n'), "the exposition must end with a newline");
        let mut help: HashMap<String, usize> = HashMap::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut finished: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        let mut samples = BTreeMap::new();
        let is_name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let (kind, name) = (
                    words.next().unwrap(),
                    words.next().expect("comment names a metric").to_string(),
                );
                assert!(is_name(&name), "bad metric name {name:?}");
                match kind {
                    "HELP" => {
                        assert!(!words.next().unwrap_or("").is_empty(), "empty HELP for {name}");
                        *help.entry(name.clone()).or_default() += 1;
                    }
                    "TYPE" => {
                        let t = words.next().expect("TYPE has a type").to_string();
                        assert!(["counter", "gauge"].contains(&t.as_str()), "type {t} of {name}");
                        assert!(types.insert(name.clone(), t).is_none(), "two TYPE lines for {name}");
                    }
                    other => panic!("unknown comment {other}"),
                }
                if current.as_deref() != Some(name.as_str()) {
                    if let Some(done) = current.take() {
                        finished.push(done);
                    }
                    assert!(!finished.contains(&name), "family {name} is split");
                    current = Some(name);
                }
                continue;
            }
            assert!(!line.is_empty() && !line.starts_with('#'), "stray line {line:?}");
            let name_end = line.find(['{', ' ']).expect("sample has a value");
            let name = &line[..name_end];
            assert!(is_name(name), "bad metric name in {line:?}");
            assert_eq!(current.as_deref(), Some(name), "sample {line:?} outside its family");
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(after) = rest.strip_prefix('{') {
                let mut chars = after.char_indices().peekable();
                loop {
                    let (start, _) = *chars.peek().expect("unterminated labels");
                    let eq = after[start..].find('=').expect("label has =") + start;
                    let key = after[start..eq].to_string();
                    assert!(is_name(&key), "bad label name {key:?}");
                    while chars.next().expect("label value").0 < eq {}
                    assert_eq!(
                        chars.next().map(|(_, c)| c),
                        Some('"'),
                        "label value is quoted in {line:?}"
                    );
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label value").1 {
                            '"' => break,
                            '\\' => match chars.next().expect("escape").1 {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                c => panic!("bad escape \\{c} in {line:?}"),
                            },
                            '\n' => panic!("raw newline in a label value"),
                            c => value.push(c),
                        }
                    }
                    assert!(labels.insert(key, value).is_none(), "repeated label in {line:?}");
                    match chars.next().expect("labels end").1 {
                        ',' => continue,
                        '}' => {
                            let (i, _) = chars.next().expect("a value after the labels");
                            rest = &after[i..];
                            break;
                        }
                        c => panic!("unexpected {c:?} in labels of {line:?}"),
                    }
                }
            }
            let value = rest.strip_prefix(' ').expect("one space before the value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value {value:?} is not a number"));
            assert!(
                samples.insert((name.to_string(), labels), value).is_none(),
                "duplicate series {line:?}"
            );
        }
        let names: std::collections::BTreeSet<&String> = samples.keys().map(|(n, _)| n).collect();
        for name in names {
            assert_eq!(help.get(name), Some(&1), "{name} needs one HELP line");
            assert!(types.contains_key(name), "{name} needs a TYPE line");
        }
        samples
    }

    fn series(name: &str, labels: &[(&str, &str)]) -> Series {
        (
            name.to_string(),
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        )
    }

    #[test]
    fn render_gives_a_parseable_exposition_with_the_values() {
        let text = render(&live(), Some(&state()));
        let samples = parse_exposition(&text);
        let get = |name: &str, labels: &[(&str, &str)]| {
            *samples
                .get(&series(name, labels))
                .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
        };
        let by = |d, v, r| [("direction", d), ("verdict", v), ("reason", r)];
        type Case<'a> = (&'a str, [(&'a str, &'a str); 3], f64);
        let cases: &[Case] = &[
            ("allowgate_packets_total", by("ingress", "pass", "policy"), 100.0),
            ("allowgate_bytes_total", by("ingress", "pass", "policy"), 64_000.0),
            ("allowgate_packets_total", by("ingress", "drop", "no-policy"), 5.0),
            ("allowgate_bytes_total", by("egress", "drop", "ipv4-mapped"), 180.0),
            ("allowgate_packets_total", by("egress", "pass", "arp"), u64::MAX as f64),
            ("allowgate_packets_total", by("egress", "drop", "malformed"), 0.0),
            ("allowgate_bytes_total", by("ingress", "drop", "vlan-depth"), 0.0),
        ];
        for (name, labels, want) in cases {
            assert_eq!(get(name, labels), *want, "{name} {labels:?}");
        }
        assert_eq!(get("allowgate_table_entries", &[("family", "ipv4")]), 123.0);
        assert_eq!(get("allowgate_table_entries", &[("family", "ipv6")]), 45.0);
        assert_eq!(get("allowgate_generation", &[]), 42.0);
        assert_eq!(get("allowgate_enforcing", &[]), 1.0);
        assert_eq!(get("allowgate_events_suppressed_total", &[]), 7.0);
        assert_eq!(get("allowgate_events_lost_total", &[]), 3.0);
        assert_eq!(get("allowgate_last_change_timestamp_seconds", &[]), 1_700_000_000.0);
        assert_eq!(get("allowgate_region_enabled", &[("region", "eu1")]), 1.0);
        assert_eq!(get("allowgate_region_enabled", &[("region", "eu2")]), 1.0);
        assert_eq!(get("allowgate_feature_enabled", &[("feature", "siem")]), 1.0);
        let iface = [
            ("interface", "ag\"weird\\name\n"),
            ("xdp_mode", "native"),
            ("tc_mode", "tcx"),
        ];
        assert_eq!(get("allowgate_interface_info", &iface), 1.0);

        // Every combination, zeros included, so series never appear or vanish.
        for name in ["allowgate_packets_total", "allowgate_bytes_total"] {
            let n = samples.keys().filter(|(n, _)| n == name).count();
            assert_eq!(n, abi::DIR_MAX * abi::VERDICT_MAX * Reason::ALL.len(), "{name}");
        }
        assert_eq!(
            samples.keys().filter(|(n, _)| n == "allowgate_region_enabled").count(),
            2
        );
        assert!(text.contains("# TYPE allowgate_packets_total counter\n"));
        assert!(text.contains("# TYPE allowgate_enforcing gauge\n"));
        assert_eq!(render(&live(), Some(&state())), text, "the output is deterministic");
    }

    #[test]
    fn monitor_mode_and_no_state_file() {
        let mut live = live();
        live.config.flags = abi::F_ARP;
        let text = render(&live, None);
        let samples = parse_exposition(&text);
        assert_eq!(samples[&series("allowgate_enforcing", &[])], 0.0);
        assert!(
            !text.contains("allowgate_region_enabled"),
            "no state, no regions:\n{text}"
        );
        assert!(!text.contains("allowgate_last_change_timestamp_seconds"));
        assert!(samples.contains_key(&series("allowgate_generation", &[])));
    }

    /// The checks above are only worth something if the parser refuses what a scraper
    /// would.
    #[test]
    fn the_test_parser_refuses_broken_expositions() {
        let family = "# HELP m A metric.\n# TYPE m gauge\n";
        let broken = [
            "m 1\n".to_string(),                                             // no HELP or TYPE
            format!("{family}m{{a=\"x}} 1\n"),                               // unterminated value
            format!("{family}m{{a=x}} 1\n"),                                 // unquoted value
            format!("{family}m{{a=\"\\q\"}} 1\n"),                           // unknown escape
            format!("{family}m one\n"),                                      // not a number
            format!("{family}m 1\nm 2\n"),                                   // duplicate series
            format!("{family}m 1"),                                          // no final newline
            format!("{family}m 1\n# HELP n N.\n# TYPE n gauge\nn 1\nm 2\n"), // split family
            format!("{family}# HELP m Again.\nm 1\n"),                       // two HELP lines
        ];
        for text in &broken {
            let caught = std::panic::catch_unwind(|| parse_exposition(text));
            assert!(caught.is_err(), "accepted {text:?}");
        }
        assert_eq!(parse_exposition(&format!("{family}m{{a=\"\\\"\\n\"}} 1\n")).len(), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(
            escape_help("back\\slash\nnew \"quoted\""),
            "back\\\\slash\\nnew \"quoted\""
        );
    }

    #[test]
    fn request_lines_are_checked() {
        assert_eq!(request_line("GET /metrics HTTP/1.1"), Ok(("GET", "/metrics")));
        assert_eq!(request_line("HEAD /metrics?x=1 HTTP/1.0"), Ok(("HEAD", "/metrics?x=1")));
        for bad in [
            "GET /metrics",
            "GET  /metrics HTTP/1.1",
            "get /metrics HTTP/1.1",
            "GET metrics HTTP/1.1",
            "GET /metrics HTTP/2",
            "GET /a b HTTP/1.1",
            "",
        ] {
            assert!(request_line(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n").is_err());
        assert!(parse_head(b"GET /metrics HTTP/1.1\r\nno colon\r\n").is_err());
        assert!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nAccept: */*").is_ok());
        assert!(
            plausible_start(b"\x16\x03\x01").is_err(),
            "a TLS hello is refused on its first byte"
        );
        assert!(plausible_start(b"GE").is_ok());
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
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
    /// rather than hanging.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let io = async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(request).await.expect("send the request");
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.expect("read the response");
            String::from_utf8(response).expect("a text response")
        };
        tokio::time::timeout(Duration::from_secs(10), io)
            .await
            .expect("the server answers in time")
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
        assert!(ok.contains("\r\nContent-Type: text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("\r\nConnection: close\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("\r\nContent-Length: {}\r\n", expected.len())),
            "{ok}"
        );
        assert_eq!(body_of(&ok), expected);
        parse_exposition(body_of(&ok));

        let with_query = exchange(addr, b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n").await;
        assert_eq!(status_of(&with_query), "HTTP/1.1 200 OK");

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
            assert!(response.contains("\r\nConnection: close\r\n"));
        }

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
        // The slow one is answered 408 and closed once its time is up.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
            .await
            .expect("cut off")
            .unwrap();
        assert_eq!(
            status_of(&String::from_utf8_lossy(&rest)),
            "HTTP/1.1 408 Request Timeout"
        );
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a dropped sender stops the server")
            .unwrap();
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
