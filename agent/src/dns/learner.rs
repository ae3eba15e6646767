//! The daemon's side of the catalog's names: take the answers the XDP program held (or
//! copied, where no give-back path works), learn what they say about the catalog's
//! names, put the addresses in the data plane, then give each held answer back to the
//! stack (`give_back`). Also asks the resolvers for the explicit names itself, so they
//! are allowed before any application asks.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use allowgate_ebpf as abi;
use tracing::{debug, error, info, warn};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};

use super::{
    frame::{Checksum, check_udp_checksum, release_key},
    give_back::GiveBack,
    learn::{Inserted, LearnedTable, NameSet, TtlPolicy, learn},
    message::parse_answer,
};
use crate::{
    dataplane::{Dataplane, DnsControl, monotonic_ns},
    policy::{
        Policy,
        compile::value_of,
        config::{DnsSettings, GiveBackPath},
    },
};

/// How long the data plane keeps holding answers after the learner's last heartbeat:
/// past it, answers pass unheld, so a dead daemon never takes DNS down with it.
pub const HEARTBEAT_STALE_AFTER: Duration = Duration::from_secs(3);

/// Whole seconds of the data plane's clock, rounded down: what has run out by now.
fn monotonic_secs() -> u64 {
    monotonic_ns() / 1_000_000_000
}

/// Rounded up, for learning: an address then lives at least its TTL plus the grace,
/// never a fraction of a second less.
fn monotonic_secs_up() -> u64 {
    monotonic_ns().div_ceil(1_000_000_000)
}

pub struct Learner {
    names: NameSet,
    table: LearnedTable,
    ttl: TtlPolicy,
    servers: Vec<IpAddr>,
    refresh: Duration,
    last_queries: Option<Instant>,
    sockets: Vec<UdpSocket>,
    next_id: u16,
    /// Addresses a previous daemon learned, kept until their expiry (monotonic ns).
    orphans: HashMap<IpAddr, u64>,
    /// How held answers go back to the stack.
    give_back: GiveBack,
    /// The last hold-to-release time, for `status`.
    pub last_window: Option<Duration>,
}

impl Learner {
    /// A learner for `policy`'s names: proves a give-back path, tells the data plane
    /// its resolvers and that it is alive. What the data plane still holds from an
    /// earlier daemon stays until it expires.
    pub fn start(policy: &Policy, settings: &DnsSettings, dataplane: &mut Dataplane) -> anyhow::Result<Learner> {
        let previous = dataplane.learned_addresses().unwrap_or_default();
        let counts = dataplane
            .dns_live()
            .map(|d| (d.given_back, d.failed))
            .unwrap_or_default();
        dataplane.set_dns_servers(&policy.dns_servers)?;
        let give_back = GiveBack::choose(settings.give_back, &policy.dns_servers, counts, dataplane);
        let learner = Learner::new(policy, settings, previous, give_back);
        dataplane.set_dns_control(&learner.control())?;
        Ok(learner)
    }

    /// What the data plane is told on every heartbeat.
    pub fn control(&self) -> DnsControl {
        DnsControl {
            stale_after: Some(HEARTBEAT_STALE_AFTER),
            path: self.give_back.path(),
            given_back: self.give_back.given_back,
            failed: self.give_back.failed,
        }
    }

    /// What the data plane is told when this learner ends: hold and copy nothing, and
    /// keep the counts for the next one.
    pub fn stopped_control(&self) -> DnsControl {
        DnsControl {
            stale_after: None,
            path: GiveBackPath::None,
            ..self.control()
        }
    }

    /// Proves the give-back paths again (a reload): one lost at run time may work now,
    /// and the resolvers may have changed.
    pub fn prove_again(&mut self, policy: &Policy, dataplane: &mut Dataplane) {
        let counts = (self.give_back.given_back, self.give_back.failed);
        self.give_back = GiveBack::choose(self.give_back.choice(), &policy.dns_servers, counts, dataplane);
        if let Err(e) = dataplane.set_dns_control(&self.control()) {
            warn!("cannot tell the data plane how answers go back: {e}");
        }
    }

    /// The give-back path in force and why it is not the first choice, for `status`.
    pub fn give_back(&self) -> &GiveBack {
        &self.give_back
    }

    fn new(policy: &Policy, settings: &DnsSettings, previous: Vec<(IpAddr, u64)>, give_back: GiveBack) -> Learner {
        let sockets = ["0.0.0.0:0", "[::]:0"]
            .iter()
            .filter_map(|a| UdpSocket::bind(a).ok())
            .inspect(|s| {
                let _ = s.set_nonblocking(true);
            })
            .collect();
        Learner {
            names: NameSet::from_policy(policy),
            table: LearnedTable::new(settings.max_learned),
            ttl: TtlPolicy {
                floor: Duration::from_secs(settings.ttl_floor),
                grace: Duration::from_secs(settings.ttl_grace),
                max: Duration::from_secs(settings.ttl_max),
            },
            servers: policy.dns_servers.clone(),
            refresh: Duration::from_secs(settings.refresh),
            last_queries: None,
            sockets,
            next_id: (monotonic_ns() & 0xffff) as u16,
            orphans: previous.into_iter().collect(),
            give_back,
            last_window: None,
        }
    }

    pub fn servers(&self) -> &[IpAddr] {
        &self.servers
    }

    pub fn counts(&self) -> (usize, u64) {
        (self.table.len(), self.table.refused())
    }

    /// The explicit names no address is learned for now: their resolution fails (or
    /// has not answered yet), and what they allowed has run out.
    pub fn unresolved(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .names
            .explicit_names()
            .filter(|n| !self.table.iter().any(|l| &l.name == *n))
            .map(|n| n.as_str().to_string())
            .collect();
        names.sort();
        names
    }

    /// A new policy: its names, its resolvers; what it no longer lists is forgotten.
    pub fn reconcile(&mut self, policy: &Policy, dataplane: &mut Dataplane) {
        self.names = NameSet::from_policy(policy);
        self.servers = policy.dns_servers.clone();
        if let Err(e) = dataplane.set_dns_servers(&self.servers) {
            warn!("cannot set the DNS servers: {e}");
        }
        for gone in self.table.reconcile(&self.names) {
            self.push(gone.addr, dataplane);
        }
        self.last_queries = None;
    }

    /// Puts what the table says of `addr` in the data plane: the union of its entries'
    /// rules until the latest expiry, or nothing.
    fn push(&mut self, addr: IpAddr, dataplane: &mut Dataplane) {
        let entries: Vec<_> = self.table.entries_for(addr).collect();
        let result = match entries.iter().map(|l| l.expires).max() {
            None => dataplane.remove_learned(addr).map_err(anyhow::Error::from),
            Some(expires) => value_of(addr, entries.iter().flat_map(|l| l.rules.iter()))
                .map_err(anyhow::Error::from)
                .and_then(|value| {
                    dataplane
                        .put_learned(addr, value, expires.saturating_mul(1_000_000_000))
                        .map_err(Into::into)
                }),
        };
        if let Err(e) = result {
            warn!(%addr, "cannot update a learned address: {e:#}");
        }
    }

    /// One answer from the ring: learn from it, then give it back when the data plane
    /// held it (a copy of an answer that passed is only learned from). Whatever goes
    /// wrong in learning, a held answer goes back.
    pub fn on_frame(&mut self, record: &[u8], dataplane: &mut Dataplane) {
        let started = Instant::now();
        let header = std::mem::size_of::<abi::DnsFrameHeader>();
        if record.len() < header {
            return warn!(len = record.len(), "short DNS record from the data plane");
        }
        let word = |at: usize| u32::from_ne_bytes(record[at..at + 4].try_into().expect("4 bytes"));
        let (ifindex, len, held) = (word(0), word(4) as usize, word(8) == 1);
        let mut frame = record[header..(header + len).min(record.len())].to_vec();
        let frame = &mut frame[..];
        let sound = check_udp_checksum(frame) != Some(Checksum::Bad);
        // Live frames re-enter at the interface: a generic-mode program would hold the
        // answer again unless it is marked released.
        let mark = held && self.give_back.path() == GiveBackPath::LiveFrames;
        let mut released = None;
        match parse_answer(frame) {
            Ok(answer) => {
                if !sound {
                    debug!(server = %answer.server, "a held answer with a bad UDP checksum teaches nothing");
                } else if self.servers.contains(&answer.server) {
                    let now = monotonic_secs_up();
                    for learned in learn(&answer, &self.names, now, &self.ttl) {
                        let (addr, name) = (learned.addr, learned.name.clone());
                        match self.table.insert(learned) {
                            Inserted::Refused => {
                                warn!(%addr, %name, "learned-address table full: refused (raise dns.max_learned)")
                            }
                            Inserted::Added => {
                                info!(%addr, %name, question = %answer.question, "learned");
                                self.push(addr, dataplane);
                            }
                            Inserted::Refreshed => self.push(addr, dataplane),
                        }
                    }
                }
                if mark {
                    match dataplane.release(answer.server, answer.id, answer.client_port) {
                        Ok(()) => released = Some((answer.server, answer.id, answer.client_port)),
                        Err(e) => debug!("cannot mark an answer released: {e}"),
                    }
                }
            }
            Err(e) => {
                debug!("an answer teaches nothing: {e}");
                // Still released, or a generic-mode program would hold it again.
                if mark
                    && let Some((server, id, port)) = release_key(frame)
                    && dataplane.release(server, id, port).is_ok()
                {
                    released = Some((server, id, port));
                }
            }
        }
        if !held {
            return;
        }
        // A failure is logged and counted inside. The data plane hears at once whether
        // holding ended, and the counts (status reads them from the kernel).
        let _ = self.give_back.deliver(frame, ifindex, dataplane);
        if let Err(e) = dataplane.set_dns_control(&self.control()) {
            error!("cannot tell the data plane how answers go back now: {e}");
        }
        if let Some((server, id, port)) = released
            && let Err(e) = dataplane.unrelease(server, id, port)
        {
            debug!("cannot forget a released answer: {e}");
        }
        self.last_window = Some(started.elapsed());
    }

    /// Once a second: the heartbeat, expiries, and the explicit names' queries.
    pub fn tick(&mut self, dataplane: &mut Dataplane) {
        if let Err(e) = dataplane.set_dns_control(&self.control()) {
            warn!("cannot refresh the learner's heartbeat: {e}");
        }
        let now = monotonic_secs();
        for gone in self.table.expire(now) {
            debug!(addr = %gone.addr, name = %gone.name, "expired");
            self.push(gone.addr, dataplane);
        }
        let now_ns = monotonic_ns();
        let due: Vec<IpAddr> = self
            .orphans
            .iter()
            .filter(|(_, e)| **e <= now_ns)
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            self.orphans.remove(&addr);
            if self.table.entries_for(addr).next().is_none() {
                let _ = dataplane.remove_learned(addr);
            }
        }
        // Answers to our own queries come back through the data plane like any other;
        // the copies our sockets receive are not needed.
        let mut buf = [0u8; 1500];
        for s in &self.sockets {
            while s.recv_from(&mut buf).is_ok() {}
        }
        if self.last_queries.is_none_or(|t| t.elapsed() >= self.refresh) {
            self.query_explicit_names();
            self.last_queries = Some(Instant::now());
        }
    }

    fn query_explicit_names(&mut self) {
        let names: Vec<String> = self.names.explicit_names().map(|n| n.as_str().to_string()).collect();
        for name in names {
            for rtype in [RecordType::A, RecordType::AAAA] {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                let Some(query) = dns_query(id, &name, rtype) else {
                    warn!(%name, "cannot write a DNS query for this name");
                    continue;
                };
                for &server in &self.servers {
                    let to = SocketAddr::new(server, 53);
                    if let Some(s) = self
                        .sockets
                        .iter()
                        .find(|s| s.local_addr().is_ok_and(|l| l.is_ipv4() == server.is_ipv4()))
                        && let Err(e) = s.send_to(&query, to)
                    {
                        debug!(%server, %name, "cannot send a query: {e}");
                    }
                }
            }
        }
    }

    /// What the table holds, each entry with the whole seconds it has left (rounded
    /// down), for `show --learned`.
    pub fn learned(&self) -> impl Iterator<Item = (&super::Learned, u64)> {
        let now = monotonic_secs_up();
        self.table.iter().map(move |l| (l, l.expires.saturating_sub(now)))
    }
}

/// A recursive query for `name` of type `rtype`, in wire format; `None` for a name that
/// is not one (the catalog's names are checked when it is read, so this is a guard).
fn dns_query(id: u16, name: &str, rtype: RecordType) -> Option<Vec<u8>> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name, rtype));
    query.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_wire_format() {
        let q = dns_query(0x1234, "portal.cloudappsecurity.com.", RecordType::AAAA).expect("a query");
        assert!(Message::from_vec(&q).is_ok(), "hickory reads it");
        assert_eq!(&q[..12], &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..19], b"\x06portal");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 28, 0, 1], "root label, AAAA, IN");
    }
}
