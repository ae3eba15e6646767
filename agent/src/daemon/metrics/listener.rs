//! The HTTP side of `/metrics`: which connections are served, for how long, and what a
//! scrape may cost, so that a flood of clients (idle, trickling, resetting or
//! reconnecting as fast as they are closed) neither keeps a real scraper out nor grows
//! the daemon.
//!
//! - One request per connection. Its head (at most `MAX_REQUEST` bytes) must be in
//!   within `REQUEST_TIMEOUT` of the connection starting, however slowly it trickles in:
//!   hyper's head deadline is set once and not moved by bytes arriving. The response gets
//!   as long again.
//! - At most `MAX_CONNECTIONS` connections, and at most `MAX_PER_PEER` from one address
//!   (an IPv6 client's address is its /64: one host has a whole /64 to pick from). When
//!   every place is taken, a newcomer from an address that holds fewer connections than
//!   another takes the place of that other address's oldest connection not being answered
//!   yet (its head still coming in, or its request waiting for a scrape); one being
//!   answered is never pushed out. A scraper holds one connection, so clients from fewer
//!   addresses than `MAX_CONNECTIONS` cannot keep it out, however many they open and
//!   whatever they send.
//! - Scrapes run one at a time on one blocking thread, and are shared: a request waits
//!   for the next scrape that starts after it came in (so it sees all that happened before
//!   it asked) and every request waiting then gets its answer. However many clients send
//!   requests (and reset, or not), the work is one scrape at a time, and a waiting
//!   request's place is free again within two scrapes.
//!
//! The listener runs on a thread and runtime of its own ([`spawn`]): a flood of
//! connections costs that thread, not the daemon's loop (control socket, DNS answers).

use std::{
    convert::Infallible,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{oneshot, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use super::{MetricsError, Source};

/// The largest request head (request line and headers) read; a bigger one gets 431.
/// Also the smallest read buffer hyper accepts.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request head, from the connection's start; the
/// scrape and the response get as long again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. Past it a newcomer takes the place of a waiting client
/// from a busier address, or is closed at once (never queued): a flood costs neither
/// memory nor threads.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections from one address (IPv6: one /64) at once. Prometheus holds one per
/// target; a second server of an HA pair, or a person with curl, is a few more.
pub const MAX_PER_PEER: usize = 4;
/// Scrapes (and so blocking threads reading maps) at once: one, shared by every request
/// waiting for it. A scrape takes a few milliseconds.
pub const MAX_SCRAPES: usize = 1;

/// Connections the kernel queues for accepting (it caps this at net.core.somaxconn,
/// 4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// The listener's bounds, `Limits::default()` in the daemon; tests shrink them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub timeout: Duration,
    pub max_connections: usize,
    pub max_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: REQUEST_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_per_peer: MAX_PER_PEER,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Admission: a pure rule over the connections open now.

/// Whose connection it is, for the per-address limit: an IPv4 address, or an IPv6 /64
/// (an IPv4-mapped IPv6 address counts as its IPv4 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey(IpAddr);

impl PeerKey {
    pub fn of(addr: IpAddr) -> PeerKey {
        match addr {
            IpAddr::V4(v4) => PeerKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    PeerKey(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            },
        }
    }
}

/// One open connection as admission sees it.
#[derive(Clone, Copy, Debug)]
struct Slot {
    peer: PeerKey,
    since: Instant,
    /// Its answer is being written: never pushed out.
    answering: bool,
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Admit,
    /// Admit it in the place of `slots[i]`, which is closed.
    Replace(usize),
    /// Its address holds `max_per_peer` connections already.
    PeerFull,
    /// Every place is taken by addresses holding no more than its own.
    Full,
}

fn admit(slots: &[Slot], peer: PeerKey, limits: &Limits) -> Admission {
    let count = |p: PeerKey| slots.iter().filter(|s| s.peer == p).count();
    let mine = count(peer);
    if mine >= limits.max_per_peer {
        return Admission::PeerFull;
    }
    if slots.len() < limits.max_connections {
        return Admission::Admit;
    }
    // Of the connections not being answered yet, one of the address that holds the most;
    // of those, the one that has waited longest (it had the most time).
    let candidate = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.answering)
        .max_by_key(|(_, s)| (count(s.peer), std::cmp::Reverse(s.since)));
    match candidate {
        Some((i, s)) if count(s.peer) > mine => Admission::Replace(i),
        _ => Admission::Full,
    }
}

/// The connections open now, shared by the accept loop and the connections' tasks.
#[derive(Default)]
struct Table {
    next_id: u64,
    open: Vec<Entry>,
}

struct Entry {
    id: u64,
    slot: Slot,
    /// Closes the connection when it is pushed out.
    evict: Option<oneshot::Sender<()>>,
}

type SharedTable = Arc<Mutex<Table>>;

fn lock(table: &SharedTable) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection's place in the table, given back when the last holder (its task, or
/// the scrape it started) lets go.
struct Place {
    table: SharedTable,
    id: u64,
}

impl Place {
    fn answering(&self) {
        if let Some(e) = lock(&self.table).open.iter_mut().find(|e| e.id == self.id) {
            e.slot.answering = true;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.table).open.retain(|e| e.id != self.id);
    }
}

/// Admits `peer` or not; on admission, its place and the signal that it was pushed out.
fn enter(table: &SharedTable, peer: PeerKey, limits: &Limits) -> Result<(Place, oneshot::Receiver<()>), Admission> {
    let mut t = lock(table);
    let slots: Vec<Slot> = t.open.iter().map(|e| e.slot).collect();
    match admit(&slots, peer, limits) {
        Admission::Admit => {}
        Admission::Replace(i) => {
            let out = t.open.swap_remove(i);
            if let Some(evict) = out.evict {
                let _ = evict.send(());
            }
        }
        refused => return Err(refused),
    }
    let id = t.next_id;
    t.next_id += 1;
    let (evict, evicted) = oneshot::channel();
    t.open.push(Entry {
        id,
        slot: Slot {
            peer,
            since: Instant::now(),
            answering: false,
        },
        evict: Some(evict),
    });
    Ok((
        Place {
            table: table.clone(),
            id,
        },
        evicted,
    ))
}

// ---------------------------------------------------------------------------------------
// The server.

/// Scrapes of a source, one at a time and shared; and the last error it gave, so that a
/// scrape that keeps failing the same way (every 15 s, say) is logged as a warning
/// once, not at every scrape.
struct Scraper {
    source: Box<dyn Source>,
    last_error: Mutex<Option<String>>,
    flight: Mutex<Flight>,
    /// The last scrape done: its number and its answer (a body, or the error's line).
    done: watch::Sender<Option<(u64, Shared)>>,
}

/// A body every waiting request shares without copying it.
type Shared = Arc<Result<Bytes, String>>;

/// Scrapes started, the newest one a waiting request needs, and whether a task runs them.
#[derive(Default)]
struct Flight {
    started: u64,
    wanted: u64,
    running: bool,
}

impl Scraper {
    fn new(source: impl Source) -> Scraper {
        Scraper {
            source: Box::new(source),
            last_error: Mutex::new(None),
            flight: Mutex::new(Flight::default()),
            done: watch::channel(None).0,
        }
    }

    /// The answer of the next scrape that starts after now. Waiting costs nothing but
    /// this task, and a client that leaves takes its wait with it.
    async fn scrape(self: &Arc<Self>) -> Shared {
        let mut done = self.done.subscribe();
        let wanted = {
            let mut f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
            let wanted = f.started + 1;
            f.wanted = f.wanted.max(wanted);
            if !f.running {
                f.running = true;
                tokio::spawn(self.clone().run());
            }
            wanted
        };
        loop {
            if let Some((n, answer)) = &*done.borrow_and_update()
                && *n >= wanted
            {
                return answer.clone();
            }
            if done.changed().await.is_err() {
                return Arc::new(Err("the metrics endpoint is stopping".into()));
            }
        }
    }

    /// Runs scrapes, one after the other, while a request waits for one.
    async fn run(self: Arc<Self>) {
        loop {
            let n = {
                let mut f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
                if f.wanted <= f.started {
                    f.running = false;
                    return;
                }
                f.started += 1;
                f.started
            };
            let me = self.clone();
            let answer = match tokio::task::spawn_blocking(move || me.scrape_now()).await {
                Ok(answer) => answer,
                Err(e) => {
                    warn!("metrics: the scrape task failed: {e}");
                    Err("the scrape failed".to_string())
                }
            };
            self.done.send_replace(Some((n, Arc::new(answer))));
        }
    }

    fn scrape_now(&self) -> Result<Bytes, String> {
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
            .map(Bytes::from)
            .map_err(|e| e.to_string().replace(['\r', '\n'], " "))
    }
}

/// A bound metrics listener and the source of its scrapes.
pub struct Server {
    listener: TcpListener,
    source: Arc<Scraper>,
    limits: Limits,
}

impl Server {
    pub async fn bind(addr: SocketAddr, source: impl Source) -> Result<Server, MetricsError> {
        let bind = || {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            // A long queue: under a flood of connections, a scraper's SYN that finds
            // the queue full is dropped, and its connect waits a second or three for
            // the retransmit; one that queues waits for the accepts before it, far less.
            socket.listen(LISTEN_BACKLOG)
        };
        let listener = bind().map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Server::from_listener(listener, source))
    }

    pub fn from_listener(listener: TcpListener, source: impl Source) -> Server {
        Server {
            listener,
            source: Arc::new(Scraper::new(source)),
            limits: Limits::default(),
        }
    }

    pub fn with_limits(self, limits: Limits) -> Server {
        Server { limits, ..self }
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
            limits,
        } = self;
        let table = SharedTable::default();
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
                        let (place, evicted) = match enter(&table, PeerKey::of(peer.ip()), &limits) {
                            Ok(admitted) => admitted,
                            Err(why) => {
                                // A reset rather than a close: no TIME_WAIT left here for
                                // every refused connection of a flood.
                                let _ = stream.set_zero_linger();
                                debug!(%peer, ?why, "metrics: connection refused");
                                continue;
                            }
                        };
                        let source = source.clone();
                        connections.spawn(async move {
                            let place = Arc::new(place);
                            let pushed_out = async {
                                // A dropped sender is a connection that ends anyway.
                                if evicted.await.is_err() {
                                    std::future::pending::<()>().await;
                                }
                            };
                            tokio::select! {
                                _ = serve_connection(stream, source, place, limits.timeout) => {}
                                _ = pushed_out => debug!(%peer, "metrics: closed a waiting connection to make room for another address"),
                            }
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

/// Binds `addr` and serves `source` there on a thread and runtime of its own until
/// `shutdown` turns true (or its sender is dropped). A taken port is an error here,
/// before anything runs.
pub fn spawn(
    addr: SocketAddr,
    source: impl Source,
    shutdown: watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>, MetricsError> {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("allowgate-metrics".into())
        .spawn(move || {
            // Scrapes are the only blocking work here, and they run one at a time: the
            // thread count is bounded by construction.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(MAX_SCRAPES)
                .build()
            {
                Ok(rt) => rt,
                Err(source) => {
                    let _ = bound_tx.send(Err(MetricsError::Bind { addr, source }));
                    return;
                }
            };
            runtime.block_on(async move {
                let server = match Server::bind(addr, source).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                let _ = bound_tx.send(Ok(()));
                server.run(shutdown).await;
            });
        })
        .map_err(|source| MetricsError::Bind { addr, source })?;
    match bound_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(MetricsError::Bind {
            addr,
            source: io::Error::other("the metrics thread ended before it bound its port"),
        }),
    }
}

/// One request on one connection. hyper answers what it cannot parse (400, or 431 past
/// `MAX_REQUEST`) and closes a connection whose head is not in within `timeout`; the
/// whole exchange gets twice that, so a client that does not take its response is cut
/// off too.
async fn serve_connection(stream: TcpStream, source: Arc<Scraper>, place: Arc<Place>, timeout: Duration) {
    let service = service_fn(move |request| {
        let (source, place) = (source.clone(), place.clone());
        async move { Ok::<_, Infallible>(respond(&request, source, place).await) }
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
async fn respond(request: &Request<Incoming>, source: Arc<Scraper>, place: Arc<Place>) -> Response<Full<Bytes>> {
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
    let answer = source.scrape().await;
    place.answering();
    // hyper leaves the body out of the answer to HEAD.
    match &*answer {
        Ok(body) => {
            let mut response = text(StatusCode::OK, body.clone());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
            );
            response
        }
        Err(line) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{line}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> PeerKey {
        PeerKey::of(ip.parse().unwrap())
    }

    fn limits(max_connections: usize, max_per_peer: usize) -> Limits {
        Limits {
            max_connections,
            max_per_peer,
            ..Limits::default()
        }
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_one_its_ipv4_address() {
        assert_eq!(key("2001:db8:1:2::5"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::5"), key("2001:db8:1:3::5"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    /// Slots from `(address, being answered)`, oldest first.
    fn slots(list: &[(&str, bool)]) -> Vec<Slot> {
        let start = Instant::now();
        list.iter()
            .enumerate()
            .map(|(i, (ip, answering))| Slot {
                peer: key(ip),
                since: start + Duration::from_millis(i as u64),
                answering: *answering,
            })
            .collect()
    }

    #[test]
    fn admission_is_per_address_then_fair_among_addresses() {
        let l = limits(4, 2);
        // Room: anyone under the per-address limit is admitted.
        assert_eq!(admit(&slots(&[]), key("192.0.2.1"), &l), Admission::Admit);
        assert_eq!(
            admit(
                &slots(&[("192.0.2.9", false), ("192.0.2.9", false)]),
                key("192.0.2.9"),
                &l
            ),
            Admission::PeerFull
        );
        // Full, two addresses with two each: a third address takes the place of the
        // oldest waiting connection (index 0), a busy address gets nothing.
        let full = slots(&[
            ("198.51.100.1", false),
            ("198.51.100.2", false),
            ("198.51.100.1", false),
            ("198.51.100.2", false),
        ]);
        assert_eq!(admit(&full, key("192.0.2.1"), &l), Admission::Replace(0));
        assert_eq!(admit(&full, key("198.51.100.1"), &l), Admission::PeerFull);
        // Every place from a different address: nobody holds more than a newcomer from
        // one of them, and such a newcomer is refused rather than evicting a peer.
        let spread = slots(&[
            ("198.51.100.1", false),
            ("198.51.100.2", false),
            ("198.51.100.3", false),
            ("198.51.100.4", false),
        ]);
        assert_eq!(admit(&spread, key("198.51.100.1"), &l), Admission::Full);
        assert_eq!(admit(&spread, key("192.0.2.1"), &l), Admission::Replace(0));
        // A connection being answered is never pushed out, busiest address or not.
        let served = slots(&[
            ("198.51.100.1", true),
            ("198.51.100.1", true),
            ("198.51.100.2", false),
            ("198.51.100.3", true),
        ]);
        assert_eq!(admit(&served, key("192.0.2.1"), &l), Admission::Replace(2));
        let all_served = slots(&[
            ("198.51.100.1", true),
            ("198.51.100.1", true),
            ("198.51.100.2", true),
            ("198.51.100.3", true),
        ]);
        assert_eq!(admit(&all_served, key("192.0.2.1"), &l), Admission::Full);
        // The busiest address loses first, whatever the age.
        let busiest = slots(&[
            ("198.51.100.1", false),
            ("198.51.100.2", false),
            ("198.51.100.2", false),
            ("198.51.100.3", false),
        ]);
        assert_eq!(admit(&busiest, key("192.0.2.1"), &l), Admission::Replace(1));
    }

    /// Whatever hostile connections fill the table, a scraper's one connection from an
    /// address of its own is admitted while the hostile ones come from fewer addresses
    /// than there are places, unless every place is being answered at that moment.
    #[test]
    fn a_lone_scraper_always_finds_a_place() {
        let l = limits(8, 3);
        let hostile = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"];
        // Fill the table by admitting hostile connections in every order of addresses.
        for rotation in 0..hostile.len() {
            let mut open: Vec<Slot> = Vec::new();
            let start = Instant::now();
            for n in 0..40 {
                let peer = key(hostile[(n + rotation) % hostile.len()]);
                let slot = Slot {
                    peer,
                    since: start + Duration::from_millis(n as u64),
                    answering: false,
                };
                match admit(&open, peer, &l) {
                    Admission::Admit => open.push(slot),
                    Admission::Replace(i) => open[i] = slot,
                    Admission::PeerFull | Admission::Full => {}
                }
            }
            assert_eq!(open.len(), l.max_connections, "the flood fills the table");
            assert!(
                matches!(admit(&open, key("192.0.2.2"), &l), Admission::Replace(_)),
                "the scraper was refused by {open:?}"
            );
        }
    }
}
