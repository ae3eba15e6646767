//! A tiny DNS server over UDP in a test's namespace, answering from a table and
//! counting the questions it got, and a client that asks one question and waits for
//! its answer. Built with hickory-proto (messages) and etherparse (raw datagrams); only
//! what the tests need (A, AAAA, CNAME).

#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME},
    },
};

use super::netns::Netns;

/// How long `resolve` waits for an answer.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// CNAME hops the server follows in one answer.
const MAX_CHAIN: usize = 8;

#[derive(Clone, Debug)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
}

/// Queries for names ending in this get no answer from the test server.
pub const SILENT: &str = ".silent.example";

/// A recursive query for `name` (type A) with `id`, in wire format.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(fqdn(name), RecordType::A));
    query.to_vec().expect("a query encodes")
}

/// What the server knows: name -> records, each with its TTL. Names are matched without
/// case and without the trailing dot.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    records: HashMap<String, Vec<(u32, Data)>>,
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    pub fn a(self, name: &str, ttl: u32, addr: &str) -> Zone {
        self.with(name, ttl, Data::A(addr.parse().expect("an IPv4 address")))
    }

    pub fn aaaa(self, name: &str, ttl: u32, addr: &str) -> Zone {
        self.with(name, ttl, Data::Aaaa(addr.parse().expect("an IPv6 address")))
    }

    pub fn cname(self, name: &str, ttl: u32, target: &str) -> Zone {
        self.with(name, ttl, Data::Cname(normalize(target)))
    }

    fn with(mut self, name: &str, ttl: u32, data: Data) -> Zone {
        self.records.entry(normalize(name)).or_default().push((ttl, data));
        self
    }

    /// A whole response to a query for `name`/`qtype` with `id`, in wire format.
    pub fn response(&self, id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
        let mut query = Message::new(id, MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(fqdn(name), qtype));
        serve(self, &query.to_vec().expect("a query encodes"))
            .expect("a response")
            .0
    }

    /// The answer section for `name`/`qtype`, CNAMEs followed within the table; `None`
    /// when the name is unknown (NXDOMAIN).
    fn answer(&self, name: &str, qtype: RecordType) -> Option<Vec<Record>> {
        let mut current = normalize(name);
        self.records.get(&current)?;
        let mut answers = Vec::new();
        for _ in 0..MAX_CHAIN {
            let Some(records) = self.records.get(&current) else {
                break;
            };
            let cname = records.iter().find_map(|(ttl, d)| match d {
                Data::Cname(target) => Some((*ttl, target.clone())),
                _ => None,
            });
            match cname {
                Some((ttl, target)) if qtype != RecordType::CNAME => {
                    answers.push(Record::from_rdata(
                        fqdn(&current),
                        ttl,
                        RData::CNAME(CNAME(fqdn(&target))),
                    ));
                    current = target;
                }
                _ => {
                    for (ttl, data) in records {
                        let rdata = match (data, qtype) {
                            (Data::A(a), RecordType::A) => RData::A(A(*a)),
                            (Data::Aaaa(a), RecordType::AAAA) => RData::AAAA(AAAA(*a)),
                            (Data::Cname(t), RecordType::CNAME) => RData::CNAME(CNAME(fqdn(t))),
                            _ => continue,
                        };
                        answers.push(Record::from_rdata(fqdn(&current), *ttl, rdata));
                    }
                    break;
                }
            }
        }
        Some(answers)
    }
}

/// Lowercase, without the trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{}.", normalize(name))).unwrap_or_else(|e| panic!("bad name {name:?}: {e}"))
}

/// One question the server got: the name (normalized), its type, who asked, and when.
#[derive(Clone, Debug)]
pub struct Asked {
    pub name: String,
    pub qtype: RecordType,
    pub from: SocketAddr,
    pub at: Instant,
}

/// A DNS server on UDP `addr` (port 53 normally) in a namespace, until dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<Asked>>>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(ns: &Netns, addr: SocketAddr, zone: Zone) -> DnsServer {
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, asked) = (stop.clone(), asked.clone());
            ns.spawn(move || {
                let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                tx.send(()).unwrap();
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some((reply, question)) = serve(&zone, &buf[..n]) else {
                        continue;
                    };
                    if let Some((name, qtype)) = question {
                        asked.lock().unwrap().push(Asked {
                            name,
                            qtype,
                            from,
                            at: Instant::now(),
                        });
                    }
                    let _ = sock.send_to(&reply, from);
                }
            })
        };
        rx.recv().expect("the DNS server started");
        DnsServer {
            addr,
            stop,
            asked,
            thread: Some(thread),
        }
    }

    /// Every question so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    /// How many questions (any type) named `name`.
    pub fn queries_for(&self, name: &str) -> usize {
        let name = normalize(name);
        self.asked.lock().unwrap().iter().filter(|a| a.name == name).count()
    }

    /// How many questions of type `qtype` named `name`.
    pub fn queries_of(&self, name: &str, qtype: RecordType) -> usize {
        let name = normalize(name);
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.name == name && a.qtype == qtype)
            .count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The response to one datagram, and its question; `None` for what is not a query.
#[allow(clippy::type_complexity)]
fn serve(zone: &Zone, datagram: &[u8]) -> Option<(Vec<u8>, Option<(String, RecordType)>)> {
    let request = Message::from_vec(datagram).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    let question = match (request.metadata.op_code, request.queries.as_slice()) {
        (OpCode::Query, [query]) => {
            let name = normalize(&query.name.to_ascii());
            // A name the server never answers: lets a test send a real query whose
            // answer it then forges.
            if name.ends_with(SILENT) {
                return None;
            }
            response.add_query(query.clone());
            match zone.answer(&name, query.query_type) {
                Some(records) => {
                    response.add_answers(records);
                }
                None => response.metadata.response_code = ResponseCode::NXDomain,
            }
            Some((name, query.query_type))
        }
        _ => {
            response.add_queries(request.queries.iter().cloned());
            response.metadata.response_code = ResponseCode::FormErr;
            None
        }
    };
    Some((response.to_vec().ok()?, question))
}

/// The addresses an answer carries (every A and AAAA of its answer section).
fn addresses(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// From the calling thread, which must already be in the namespace (a thread of
/// `Netns::spawn`): one query for `name`/`rtype` to `server`, from a fresh socket. The
/// addresses of the answer (empty for NXDOMAIN or no data), or `None` when no answer came
/// within `timeout`; and the time from the send to the answer (or to giving up).
pub fn resolve_here(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> (Option<Vec<IpAddr>>, Duration) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let id = (std::process::id() as u16)
        .wrapping_mul(31)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(fqdn(name), rtype));
    let bytes = query.to_vec().expect("a query encodes");
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind).expect("bind a client socket");
    let started = Instant::now();
    if sock.send_to(&bytes, server).is_err() {
        return (None, started.elapsed());
    }
    let deadline = started + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (None, started.elapsed());
        }
        sock.set_read_timeout(Some(left)).unwrap();
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return (None, started.elapsed());
        };
        let took = started.elapsed();
        if from != server {
            continue;
        }
        let Ok(answer) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if answer.metadata.id == id && answer.metadata.message_type == MessageType::Response {
            return (Some(addresses(&answer)), took);
        }
    }
}

/// From inside `ns`: `resolve_here` with `RESOLVE_TIMEOUT`.
pub fn resolve(ns: &Netns, server: SocketAddr, name: &str, rtype: RecordType) -> Option<Vec<IpAddr>> {
    let name = name.to_string();
    ns.enter(move || resolve_here(server, &name, rtype, RESOLVE_TIMEOUT).0)
}

/// The UDP datagrams `ns` dropped for a bad checksum so far: (IPv4, IPv6), from
/// /proc/net/snmp and /proc/net/snmp6 as a process in the namespace sees them. A held
/// answer given back to the stack with a checksum the kernel refuses shows up here.
pub fn udp_checksum_errors(ns: &Netns) -> (u64, u64) {
    let read = |file: &str| {
        let out = ns.command("cat").arg(file).output().expect("run cat");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let snmp = read("/proc/net/snmp");
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp: ")).collect();
    let v4 = match udp.as_slice() {
        [names, values, ..] => names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InCsumErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let v6 = read("/proc/net/snmp6")
        .lines()
        .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (v4, v6)
}

/// From inside `ns`: sends `payload` as a UDP datagram from `from` to `to` through a raw
/// socket, with the right checksum or, `corrupt`, a wrong one (neither the right one, nor
/// 0, nor the partial form an offloading sender leaves). The kernel leaves the checksum
/// of a raw socket's packet alone, so it reaches the other end as written.
pub fn send_udp_raw(
    ns: &Netns,
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    payload: &[u8],
    corrupt: bool,
) {
    use std::os::fd::FromRawFd as _;
    let (source, destination) = (from.ip().octets(), to.ip().octets());
    let mut header =
        etherparse::UdpHeader::without_ipv4_checksum(from.port(), to.port(), payload.len()).expect("a datagram");
    let right = header
        .calc_checksum_ipv4_raw(source, destination, payload)
        .expect("a datagram");
    header.checksum = if corrupt {
        // The partial form an offloading sender leaves: the pseudo-header's sum, folded
        // and not inverted (etherparse sums in native byte order).
        let partial = (!etherparse::checksum::Sum16BitWords::new()
            .add_4bytes(source)
            .add_4bytes(destination)
            .add_2bytes([0, 17])
            .add_2bytes(header.length.to_be_bytes())
            .ones_complement())
        .to_be();
        (1..=u16::MAX)
            .map(|x| right ^ x)
            .find(|&c| c != 0 && c != right && c != partial && c != 0xffff)
            .expect("a wrong checksum")
    } else {
        right
    };
    let udp = [&header.to_bytes()[..], payload].concat();
    let from_ip = *from.ip();
    ns.enter(move || {
        // SAFETY: plain socket(2); the fd is owned by the UdpSocket made from it.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // The source address of the packets it sends.
        let local = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(from_ip.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid sockaddr_in of the size given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&local as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind the raw socket: {}", std::io::Error::last_os_error());
        // A raw socket is a datagram socket as far as send_to goes.
        // SAFETY: fd is a fresh socket nothing else owns.
        let sock = unsafe { UdpSocket::from_raw_fd(fd) };
        let sent = sock
            .send_to(&udp, SocketAddr::new(IpAddr::V4(*to.ip()), 0))
            .expect("send the raw datagram");
        assert_eq!(sent, udp.len());
    });
}
