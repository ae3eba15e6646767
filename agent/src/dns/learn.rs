//! Learning the addresses of the catalog's names from DNS answers seen on the host.
//!
//! Pure: a frame in, addresses out, no kernel and no clock of its own (callers pass
//! `now` in seconds of the monotonic clock the data plane compares expiries against).
//! Only a chain that starts at a name the policy lists teaches anything: the question
//! must match the catalog, and only A/AAAA records reached from it through CNAMEs in the
//! answer section count, so a resolver answer cannot open addresses it merely carries.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use hickory_proto::{
    op::Message,
    rr::{DNSClass, Name, RData},
    serialize::binary::DecodeError,
};

use crate::{
    catalog::{DnsName, Peer},
    policy::{Policy, Rule},
};

/// VLAN tags parsed before the IP header (802.1Q, and 802.1ad QinQ outside it).
pub const MAX_VLAN_TAGS: usize = 2;
/// CNAME hops followed from the question name; a longer chain teaches only its first
/// hops' addresses.
pub const MAX_CNAME_HOPS: usize = 8;
/// Entries a `LearnedTable` holds unless told otherwise.
pub const DEFAULT_LEARNED_CAPACITY: usize = 4096;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const IPV6_FRAGMENT_HEADER: u8 = 44;
const DNS_PORT: u16 = 53;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const DNS_HEADER_LEN: usize = 12;

/// Why a held frame teaches nothing. Every case means the same for the daemon: give the
/// frame back to the stack untouched and count the reason.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("frame ends inside its {layer} header: {need} bytes needed, {have} present")]
    Truncated {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    #[error("frame carries more than {max} vlan tags")]
    TooManyVlanTags { max: usize },
    #[error("ethertype {ethertype:#06x} is neither ipv4 nor ipv6")]
    NotIp { ethertype: u16 },
    #[error("ip header says version {found} under the ipv{expected} ethertype")]
    IpVersion { expected: u8, found: u8 },
    #[error("ipv4 header length {ihl} is below the minimum of 5 words")]
    BadIhl { ihl: u8 },
    #[error("{layer} length {claimed} does not fit the {have} bytes the frame carries")]
    BadLength {
        layer: &'static str,
        claimed: usize,
        have: usize,
    },
    #[error("{ip} fragment: answers split over fragments are not learned")]
    Fragment { ip: &'static str },
    #[error("ip protocol {protocol} is not udp (ipv6 extension headers are not parsed)")]
    NotUdp { protocol: u8 },
    #[error("udp source port {port} is not 53")]
    NotFromDnsPort { port: u16 },
    #[error("dns message is a query, not a response")]
    NotResponse,
    #[error("dns response has {count} questions; learning needs exactly one")]
    QuestionCount { count: u16 },
    #[error("dns message does not parse: {source}")]
    Dns {
        #[source]
        source: DecodeError,
    },
}

/// The names a policy lists, each with the rules it stands for.
#[derive(Clone, Debug, Default)]
pub struct NameSet {
    /// Keyed by the normalized name.
    exact: HashMap<String, NameEntry>,
    /// Keyed by what follows the `*.`: `cas.ms` for `*.cas.ms`.
    wildcard: HashMap<String, NameEntry>,
}

#[derive(Clone, Debug)]
struct NameEntry {
    name: DnsName,
    rules: Vec<Rule>,
}

impl NameEntry {
    fn as_match(&self) -> NameMatch<'_> {
        NameMatch {
            name: &self.name,
            rules: &self.rules,
        }
    }
}

/// One catalog name a queried name falls under, and what it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameMatch<'a> {
    pub name: &'a DnsName,
    pub rules: &'a [Rule],
}

impl NameSet {
    /// Every name rule of `policy` (`rule.net()` is None for them), exact and wildcard.
    pub fn from_policy(policy: &Policy) -> NameSet {
        let mut set = NameSet::default();
        for rule in &policy.rules {
            let Peer::Name(name) = &rule.peer else { continue };
            let key = normalize(name.as_str());
            let (map, key) = match key.strip_prefix("*.") {
                Some(suffix) => (&mut set.wildcard, suffix.to_string()),
                None => (&mut set.exact, key),
            };
            if !well_formed(&key) {
                // `*.` alone would stand for every name; the page never says that.
                continue;
            }
            map.entry(key)
                .or_insert_with(|| NameEntry {
                    name: name.clone(),
                    rules: Vec::new(),
                })
                .rules
                .push(rule.clone());
        }
        set
    }

    /// How many names (exact and wildcard) the set holds.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names to resolve (not wildcards), in no particular order.
    pub fn explicit_names(&self) -> impl Iterator<Item = &DnsName> {
        self.exact.values().map(|e| &e.name)
    }

    /// The wildcard names, learned from answers only, in no particular order.
    pub fn wildcard_names(&self) -> impl Iterator<Item = &DnsName> {
        self.wildcard.values().map(|e| &e.name)
    }

    /// Every catalog name `name` falls under, most specific first: the exact name, then
    /// wildcards from the longest suffix to the shortest. Case and a trailing dot do not
    /// matter; `*.cas.ms` covers `a.cas.ms` and `a.b.cas.ms` but not `cas.ms`.
    pub fn lookup(&self, name: &str) -> Vec<NameMatch<'_>> {
        let name = normalize(name);
        if !well_formed(&name) {
            return Vec::new();
        }
        let mut found = Vec::new();
        found.extend(self.exact.get(&name).map(NameEntry::as_match));
        let mut rest = name.as_str();
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            found.extend(self.wildcard.get(rest).map(NameEntry::as_match));
        }
        found
    }

    /// The rules of every catalog name `name` falls under (see `lookup`).
    pub fn matches(&self, name: &str) -> Vec<&Rule> {
        self.lookup(name).into_iter().flat_map(|m| m.rules.iter()).collect()
    }
}

/// Lowercase ASCII, without the root's trailing dot.
fn normalize(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Not empty and no empty label: `a..cas.ms` and `.cas.ms` match nothing.
fn well_formed(name: &str) -> bool {
    !name.is_empty() && name.split('.').all(|label| !label.is_empty())
}

/// What a DNS answer held for the daemon says, already taken out of its frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The resolver (the packet's source).
    pub server: IpAddr,
    pub client: IpAddr,
    pub client_port: u16,
    pub id: u16,
    /// Lowercase, without the trailing dot (see `AnswerRecord::name`).
    pub question: String,
    /// The TC bit: the answer section may be cut short; what it holds still counts.
    pub truncated: bool,
    /// The answer section, in wire order. Authority and additional records never teach.
    pub records: Vec<AnswerRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerRecord {
    /// Lowercase labels joined by dots, without the trailing dot; a byte that is not a
    /// letter, digit, `-`, `_` or `*` is written `\DDD` (RFC 1035), so a label holding a
    /// dot cannot pass for two labels.
    pub name: String,
    pub ttl: u32,
    pub data: AnswerData,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// The target, written like `AnswerRecord::name`.
    Cname(String),
    /// Any other type, or an A/AAAA/CNAME of a class other than IN.
    Other {
        rtype: u16,
    },
}

/// Takes a DNS answer out of an Ethernet frame: 0..=2 VLAN tags (802.1Q, 802.1ad), then
/// IPv4 (options skipped; fragments refused) or IPv6 (no extension headers), then UDP from
/// port 53. The UDP checksum is not checked: frames from a veth peer carry a partial one.
/// Bytes after the IP packet (Ethernet padding) are ignored. Never panics.
pub fn parse_answer(frame: &[u8]) -> Result<DnsAnswer, LearnError> {
    let mut ethertype = be16(frame, 12, "ethernet")?;
    let mut offset = ETH_HLEN;
    let mut tags = 0;
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if tags == MAX_VLAN_TAGS {
            return Err(LearnError::TooManyVlanTags { max: MAX_VLAN_TAGS });
        }
        // The tag is the TCI then the inner ethertype.
        ethertype = be16(frame, offset + 2, "vlan")?;
        offset += VLAN_HLEN;
        tags += 1;
    }
    let packet = frame.get(offset..).unwrap_or_default();
    let (server, client, datagram) = match ethertype {
        ETHERTYPE_IPV4 => ipv4(packet)?,
        ETHERTYPE_IPV6 => ipv6(packet)?,
        other => return Err(LearnError::NotIp { ethertype: other }),
    };

    let source_port = be16(datagram, 0, "udp")?;
    let client_port = be16(datagram, 2, "udp")?;
    let udp_len = usize::from(be16(datagram, 4, "udp")?);
    if datagram.len() < UDP_HLEN {
        return Err(truncated("udp", UDP_HLEN, datagram.len()));
    }
    if udp_len < UDP_HLEN || udp_len > datagram.len() {
        return Err(LearnError::BadLength {
            layer: "udp",
            claimed: udp_len,
            have: datagram.len(),
        });
    }
    if source_port != DNS_PORT {
        return Err(LearnError::NotFromDnsPort { port: source_port });
    }
    let payload = &datagram[UDP_HLEN..udp_len];

    // Checked before hickory parses: a header claiming thousands of questions would have
    // it reserve room for all of them.
    if payload.len() < DNS_HEADER_LEN {
        return Err(truncated("dns", DNS_HEADER_LEN, payload.len()));
    }
    if payload[2] & 0x80 == 0 {
        return Err(LearnError::NotResponse);
    }
    let questions = be16(payload, 4, "dns")?;
    if questions != 1 {
        return Err(LearnError::QuestionCount { count: questions });
    }
    let message = Message::from_vec(payload).map_err(|source| LearnError::Dns { source })?;
    let Some(query) = message.queries.first() else {
        return Err(LearnError::QuestionCount { count: 0 });
    };

    let records = message
        .answers
        .iter()
        .map(|record| {
            let rtype = u16::from(record.record_type());
            let data = match &record.data {
                _ if record.dns_class != DNSClass::IN => AnswerData::Other { rtype },
                RData::A(a) => AnswerData::A(a.0),
                RData::AAAA(aaaa) => AnswerData::Aaaa(aaaa.0),
                RData::CNAME(cname) => AnswerData::Cname(canonical(&cname.0)),
                _ => AnswerData::Other { rtype },
            };
            AnswerRecord {
                name: canonical(&record.name),
                ttl: record.ttl,
                data,
            }
        })
        .collect();

    Ok(DnsAnswer {
        server,
        client,
        client_port,
        id: message.metadata.id,
        question: canonical(&query.name),
        truncated: message.metadata.truncation,
        records,
    })
}

/// Source, destination and the UDP datagram (cut at the total length).
fn ipv4(packet: &[u8]) -> Result<(IpAddr, IpAddr, &[u8]), LearnError> {
    if packet.len() < IPV4_MIN_HLEN {
        return Err(truncated("ipv4", IPV4_MIN_HLEN, packet.len()));
    }
    let version = packet[0] >> 4;
    if version != 4 {
        return Err(LearnError::IpVersion {
            expected: 4,
            found: version,
        });
    }
    let ihl = packet[0] & 0x0f;
    if usize::from(ihl) * 4 < IPV4_MIN_HLEN {
        return Err(LearnError::BadIhl { ihl });
    }
    let header_len = usize::from(ihl) * 4;
    if packet.len() < header_len {
        return Err(truncated("ipv4", header_len, packet.len()));
    }
    let total_len = usize::from(be16(packet, 2, "ipv4")?);
    if total_len < header_len || total_len > packet.len() {
        return Err(LearnError::BadLength {
            layer: "ipv4",
            claimed: total_len,
            have: packet.len(),
        });
    }
    // More-fragments flag or a fragment offset.
    if be16(packet, 6, "ipv4")? & 0x3fff != 0 {
        return Err(LearnError::Fragment { ip: "ipv4" });
    }
    if packet[9] != IPPROTO_UDP {
        return Err(LearnError::NotUdp { protocol: packet[9] });
    }
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let destination = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Ok((source.into(), destination.into(), &packet[header_len..total_len]))
}

fn ipv6(packet: &[u8]) -> Result<(IpAddr, IpAddr, &[u8]), LearnError> {
    if packet.len() < IPV6_HLEN {
        return Err(truncated("ipv6", IPV6_HLEN, packet.len()));
    }
    let version = packet[0] >> 4;
    if version != 6 {
        return Err(LearnError::IpVersion {
            expected: 6,
            found: version,
        });
    }
    let payload_len = usize::from(be16(packet, 4, "ipv6")?);
    if IPV6_HLEN + payload_len > packet.len() {
        return Err(LearnError::BadLength {
            layer: "ipv6 payload",
            claimed: payload_len,
            have: packet.len() - IPV6_HLEN,
        });
    }
    match packet[6] {
        IPPROTO_UDP => {}
        IPV6_FRAGMENT_HEADER => return Err(LearnError::Fragment { ip: "ipv6" }),
        protocol => return Err(LearnError::NotUdp { protocol }),
    }
    let address = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&packet[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Ok((address(8), address(24), &packet[IPV6_HLEN..IPV6_HLEN + payload_len]))
}

fn be16(bytes: &[u8], at: usize, layer: &'static str) -> Result<u16, LearnError> {
    match bytes.get(at..at.saturating_add(2)) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(truncated(layer, at.saturating_add(2), bytes.len())),
    }
}

fn truncated(layer: &'static str, need: usize, have: usize) -> LearnError {
    LearnError::Truncated { layer, need, have }
}

/// See `AnswerRecord::name`.
fn canonical(name: &Name) -> String {
    let mut text = String::new();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        for &byte in label {
            let byte = byte.to_ascii_lowercase();
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'*') {
                text.push(char::from(byte));
            } else {
                // Writing to a String cannot fail.
                let _ = write!(text, "\\{byte:03}");
            }
        }
    }
    text
}

/// How long a learned address stays allowed. All in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    /// The least time an address is held, whatever its TTL: a TTL of 0 or a few seconds
    /// would expire the allow before the application has connected.
    pub floor: Duration,
    /// Added after the (clamped) TTL: an application that resolved just before the
    /// expiry keeps connecting a little while after it.
    pub grace: Duration,
    /// The most time an address is held: a resolver answering with a TTL of weeks
    /// should not open an address for weeks. Wins over `floor` if they cross.
    pub max: Duration,
}

impl Default for TtlPolicy {
    /// floor 30 s, grace 10 s, max 1 day.
    fn default() -> Self {
        TtlPolicy {
            floor: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            max: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl TtlPolicy {
    /// `now` + `ttl` clamped to [floor, max] + grace.
    pub fn expiry(&self, now: u64, ttl: u32) -> u64 {
        let held = u64::from(ttl).max(self.floor.as_secs()).min(self.max.as_secs());
        now.saturating_add(held).saturating_add(self.grace.as_secs())
    }
}

/// RFC 2181 section 8: a TTL with the top bit set is read as zero.
fn effective_ttl(ttl: u32) -> u32 {
    if ttl & 0x8000_0000 != 0 { 0 } else { ttl }
}

/// An address the data plane may allow until `expires`, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub addr: IpAddr,
    /// The most specific catalog name the question fell under (`*.eu1.cas.ms` before
    /// `*.cas.ms`).
    pub name: DnsName,
    /// The question that taught it, as in `DnsAnswer::question`.
    pub queried: String,
    /// What every catalog name the question fell under allows (direction, proto, ports,
    /// and which (region, feature) lists it).
    pub rules: Vec<Rule>,
    /// In the seconds of the `now` given to `learn`.
    pub expires: u64,
}

/// The addresses `answer` teaches: when its question falls under a catalog name, every
/// A/AAAA record whose owner is the question or a name reached from it through at most
/// `MAX_CNAME_HOPS` CNAMEs of the answer section (a loop ends the chain). An address
/// expires with the least TTL along the way to it, clamped by `ttl`. Records off that
/// chain, chains that merely pass through a catalog name, and addresses no peer can have
/// (unspecified, loopback, multicast, broadcast, IPv4-mapped or -compatible IPv6) teach
/// nothing. One `Learned` per address.
pub fn learn(answer: &DnsAnswer, names: &NameSet, now: u64, ttl: &TtlPolicy) -> Vec<Learned> {
    let matched = names.lookup(&answer.question);
    let Some(most_specific) = matched.first() else {
        return Vec::new();
    };
    let rules: Vec<Rule> = matched.iter().flat_map(|m| m.rules.iter().cloned()).collect();

    // Each name of the chain with the least CNAME TTL on the way to it.
    let mut chain: Vec<(&str, u32)> = vec![(answer.question.as_str(), u32::MAX)];
    for _ in 0..MAX_CNAME_HOPS {
        let &(current, bound) = chain.last().expect("the chain starts with the question");
        let next = answer.records.iter().find_map(|r| match &r.data {
            AnswerData::Cname(target) if same_name(&r.name, current) => Some((target.as_str(), r.ttl)),
            _ => None,
        });
        let Some((target, cname_ttl)) = next else { break };
        if chain.iter().any(|&(name, _)| same_name(name, target)) {
            break;
        }
        chain.push((target, bound.min(effective_ttl(cname_ttl))));
    }

    let mut learned: Vec<Learned> = Vec::new();
    for record in &answer.records {
        let addr = match record.data {
            AnswerData::A(a) => IpAddr::V4(a),
            AnswerData::Aaaa(aaaa) => IpAddr::V6(aaaa),
            AnswerData::Cname(_) | AnswerData::Other { .. } => continue,
        };
        let Some(&(_, bound)) = chain.iter().find(|&&(name, _)| same_name(name, &record.name)) else {
            continue;
        };
        if !learnable(addr) {
            continue;
        }
        let expires = ttl.expiry(now, effective_ttl(record.ttl).min(bound));
        match learned.iter_mut().find(|l| l.addr == addr) {
            Some(seen) => seen.expires = seen.expires.max(expires),
            None => learned.push(Learned {
                addr,
                name: most_specific.name.clone(),
                queried: answer.question.clone(),
                rules: rules.clone(),
                expires,
            }),
        }
    }
    learned
}

/// Case- and trailing-dot-insensitive, for `DnsAnswer`s not made by `parse_answer`.
fn same_name(a: &str, b: &str) -> bool {
    let a = a.strip_suffix('.').unwrap_or(a);
    let b = b.strip_suffix('.').unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

fn learnable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => {
            let mapped_or_compatible = v6.octets()[..10].iter().all(|&b| b == 0);
            !(v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() || mapped_or_compatible)
        }
    }
}

/// What `LearnedTable::insert` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    Added,
    /// The (address, name) pair was there: it now expires at the later of the two
    /// expiries and carries the new rules and question.
    Refreshed,
    /// The table is full: the entry is not held and `refused()` counts it.
    Refused,
}

/// Learned addresses, one entry per (address, catalog name), at most `capacity` of them.
///
/// At the bound a new pair is refused and counted, never made room for by evicting
/// another: an address in use must not lose its allow because some other name was
/// resolved, and a flood of answers must not churn the table. Refreshing a pair already
/// held always works. Call `expire` before inserting so that entries whose time ran out
/// do not hold places; a rising `refused()` says the bound is too small for the host.
#[derive(Clone, Debug)]
pub struct LearnedTable {
    entries: HashMap<(IpAddr, DnsName), Learned>,
    capacity: usize,
    refused: u64,
}

impl Default for LearnedTable {
    fn default() -> Self {
        LearnedTable::new(DEFAULT_LEARNED_CAPACITY)
    }
}

impl LearnedTable {
    pub fn new(capacity: usize) -> LearnedTable {
        LearnedTable {
            entries: HashMap::new(),
            capacity,
            refused: 0,
        }
    }

    pub fn insert(&mut self, learned: Learned) -> Inserted {
        let key = (learned.addr, learned.name.clone());
        if let Some(held) = self.entries.get_mut(&key) {
            let expires = held.expires.max(learned.expires);
            *held = Learned { expires, ..learned };
            return Inserted::Refreshed;
        }
        if self.entries.len() >= self.capacity {
            self.refused += 1;
            return Inserted::Refused;
        }
        self.entries.insert(key, learned);
        Inserted::Added
    }

    /// Removes and returns the entries with `expires <= now`.
    pub fn expire(&mut self, now: u64) -> Vec<Learned> {
        let gone: Vec<(IpAddr, DnsName)> = self
            .entries
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(key, _)| key.clone())
            .collect();
        gone.into_iter().filter_map(|key| self.entries.remove(&key)).collect()
    }

    /// After a policy change: entries whose question no longer falls under any name of
    /// `names` are removed and returned; the others take the new names' rules.
    pub fn reconcile(&mut self, names: &NameSet) -> Vec<Learned> {
        let mut removed = Vec::new();
        for (_, mut entry) in std::mem::take(&mut self.entries) {
            let matched = names.lookup(&entry.queried);
            let Some(most_specific) = matched.first() else {
                removed.push(entry);
                continue;
            };
            entry.name = most_specific.name.clone();
            entry.rules = matched.iter().flat_map(|m| m.rules.iter().cloned()).collect();
            // Two entries may now share a name: one entry, the later expiry.
            let key = (entry.addr, entry.name.clone());
            match self.entries.get_mut(&key) {
                Some(held) if held.expires >= entry.expires => {}
                Some(held) => *held = entry,
                None => {
                    self.entries.insert(key, entry);
                }
            }
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// New pairs turned away at the bound since the table was made.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Learned> {
        self.entries.values()
    }

    /// The entries of one address: what the data plane allows it is their union, until
    /// the latest of their expiries.
    pub fn entries_for(&self, addr: IpAddr) -> impl Iterator<Item = &Learned> {
        self.entries.values().filter(move |l| l.addr == addr)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::{
        op::{OpCode, Query},
        rr::{
            Record, RecordType,
            rdata::{A, AAAA, CNAME},
        },
    };
    use proptest::prelude::*;

    use super::*;
    use crate::{
        catalog::{Catalog, Direction, Feature, PortRange, Proto},
        policy::{Config, Selection},
    };

    const RESOLVER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
    const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const RESOLVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    const CLIENT_PORT: u16 = 40_000;
    const NOW: u64 = 1_000;

    fn eu1_proxy_portal() -> Policy {
        let selection = Selection {
            regions: vec!["eu1".into()],
            features: vec![Feature::Proxy, Feature::Portal],
        };
        Policy::build(&Catalog::builtin(), &selection, &Config::default(), &[])
    }

    fn names() -> NameSet {
        NameSet::from_policy(&eu1_proxy_portal())
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap_or_else(|e| panic!("test name {text}: {e}"))
    }

    fn a(owner: &str, ttl: u32, addr: &str) -> Record {
        let addr = Ipv4Addr::from_str(addr).expect("test address");
        Record::from_rdata(name(owner), ttl, RData::A(A(addr)))
    }

    fn aaaa(owner: &str, ttl: u32, addr: &str) -> Record {
        let addr = Ipv6Addr::from_str(addr).expect("test address");
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(addr)))
    }

    fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn response(question: &str, answers: Vec<Record>) -> Vec<u8> {
        let mut message = Message::response(0x1234, OpCode::Query);
        message.add_query(Query::query(name(question), RecordType::A));
        message.add_answers(answers);
        message.to_vec().expect("test message encodes")
    }

    fn udp(source_port: u16, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(UDP_HLEN + payload.len()).expect("test datagram fits");
        let mut datagram = Vec::new();
        datagram.extend(source_port.to_be_bytes());
        datagram.extend(CLIENT_PORT.to_be_bytes());
        datagram.extend(len.to_be_bytes());
        datagram.extend([0, 0]);
        datagram.extend(payload);
        datagram
    }

    /// Ethernet with `tags` (outer first: the TPID of each), then the ethertype.
    fn ethernet(tags: &[u16], ethertype: u16) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for &tpid in tags {
            frame.extend(tpid.to_be_bytes());
            frame.extend(7u16.to_be_bytes());
        }
        frame.extend(ethertype.to_be_bytes());
        frame
    }

    fn ipv4_frame(tags: &[u16], options: &[u8], datagram: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0, "ipv4 options come in words");
        let header_len = IPV4_MIN_HLEN + options.len();
        let total = u16::try_from(header_len + datagram.len()).expect("test packet fits");
        let mut header = vec![0x40 | u8::try_from(header_len / 4).expect("ihl"), 0];
        header.extend(total.to_be_bytes());
        header.extend([0, 1, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
        header.extend(RESOLVER4.octets());
        header.extend(CLIENT4.octets());
        header.extend(options);
        let sum = header
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).expect("folded");
        header[10..12].copy_from_slice(&checksum.to_be_bytes());
        let mut frame = ethernet(tags, ETHERTYPE_IPV4);
        frame.extend(header);
        frame.extend(datagram);
        frame
    }

    fn ipv6_frame(tags: &[u16], next_header: u8, datagram: &[u8]) -> Vec<u8> {
        let mut frame = ethernet(tags, ETHERTYPE_IPV6);
        frame.extend([0x60, 0, 0, 0]);
        frame.extend(u16::try_from(datagram.len()).expect("test payload fits").to_be_bytes());
        frame.extend([next_header, 64]);
        frame.extend(RESOLVER6.octets());
        frame.extend(CLIENT6.octets());
        frame.extend(datagram);
        frame
    }

    fn answer_frame(question: &str, answers: Vec<Record>) -> Vec<u8> {
        ipv4_frame(&[], &[], &udp(DNS_PORT, &response(question, answers)))
    }

    fn learned_from(frame: &[u8]) -> Vec<Learned> {
        let answer = parse_answer(frame).unwrap_or_else(|e| panic!("test frame does not parse: {e}"));
        learn(&answer, &names(), NOW, &TtlPolicy::default())
    }

    fn addrs(learned: &[Learned]) -> Vec<IpAddr> {
        let mut addrs: Vec<IpAddr> = learned.iter().map(|l| l.addr).collect();
        addrs.sort();
        addrs
    }

    fn ip(text: &str) -> IpAddr {
        IpAddr::from_str(text).expect("test address")
    }

    fn expected_expiry(ttl: u64) -> u64 {
        NOW + ttl + TtlPolicy::default().grace.as_secs()
    }

    #[test]
    fn the_name_set_holds_every_name_rule_of_the_policy() {
        let policy = eu1_proxy_portal();
        let set = NameSet::from_policy(&policy);
        let name_rules = policy.rules.iter().filter(|r| r.net().is_none()).count();
        let held: usize = set
            .exact
            .values()
            .chain(set.wildcard.values())
            .map(|e| e.rules.len())
            .sum();
        assert_eq!(held, name_rules, "every name rule is in the set once");
        let wildcards: Vec<&str> = set.wildcard_names().map(|n| n.as_str()).collect();
        let explicit: Vec<&str> = set.explicit_names().map(|n| n.as_str()).collect();
        for wanted in ["*.cas.ms", "*.eu1.cas.ms", "*.eu1.access-control.cas.ms"] {
            assert!(wildcards.contains(&wanted), "{wanted} missing from {wildcards:?}");
        }
        assert!(
            explicit.contains(&"portal.cloudappsecurity.com"),
            "portal.cloudappsecurity.com missing from {explicit:?}"
        );
        assert_eq!(set.len(), wildcards.len() + explicit.len());
    }

    #[test]
    fn wildcards_match_the_names_below_them_only() {
        let set = names();
        let cases = [
            ("a.cas.ms", true),
            ("a.b.cas.ms", true),
            ("tenant.eu1.cas.ms", true),
            ("TeNaNt.EU1.Cas.Ms.", true),
            ("cas.ms", false),
            ("cas.ms.", false),
            ("xcas.ms", false),
            ("a.xcas.ms", false),
            ("cas.ms.example.net", false),
            (".cas.ms", false),
            ("a..cas.ms", false),
            ("", false),
            (".", false),
        ];
        for (queried, wanted) in cases {
            let covered = set.lookup(queried).iter().any(|m| m.name.as_str() == "*.cas.ms");
            assert_eq!(covered, wanted, "does *.cas.ms cover {queried:?}?");
        }
    }

    #[test]
    fn the_most_specific_name_comes_first_and_all_of_them_count() {
        let set = names();
        let found: Vec<&str> = set
            .lookup("tenant.eu1.cas.ms")
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(found, ["*.eu1.cas.ms", "*.cas.ms"]);
        let rules = set.matches("tenant.eu1.cas.ms");
        assert_eq!(
            rules.len(),
            set.lookup("tenant.eu1.cas.ms")
                .iter()
                .map(|m| m.rules.len())
                .sum::<usize>()
        );
    }

    #[test]
    fn exact_names_match_only_themselves() {
        let mut policy = eu1_proxy_portal();
        policy
            .rules
            .retain(|r| matches!(&r.peer, Peer::Name(n) if n.as_str() == "portal.cloudappsecurity.com"));
        assert_eq!(
            policy.rules.len(),
            1,
            "the page lists portal.cloudappsecurity.com once for eu1 portal"
        );
        let set = NameSet::from_policy(&policy);
        for (queried, wanted) in [
            ("portal.cloudappsecurity.com", true),
            ("PORTAL.cloudappsecurity.com.", true),
            ("a.portal.cloudappsecurity.com", false),
            ("cloudappsecurity.com", false),
            ("portal.cloudappsecurity.com.example.net", false),
            ("xportal.cloudappsecurity.com", false),
        ] {
            assert_eq!(!set.matches(queried).is_empty(), wanted, "does {queried:?} match?");
        }
    }

    #[test]
    fn a_wildcard_answer_is_learned_with_the_proxys_tcp_443() {
        let frame = answer_frame("tenant.eu1.cas.ms.", vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")]);
        let answer = parse_answer(&frame).expect("answer parses");
        assert_eq!(answer.server, IpAddr::V4(RESOLVER4));
        assert_eq!(answer.client, IpAddr::V4(CLIENT4));
        assert_eq!(answer.client_port, CLIENT_PORT);
        assert_eq!(answer.id, 0x1234);
        assert_eq!(answer.question, "tenant.eu1.cas.ms");

        let learned = learn(&answer, &names(), NOW, &TtlPolicy::default());
        assert_eq!(learned.len(), 1, "{learned:?}");
        let entry = &learned[0];
        assert_eq!(entry.addr, ip("203.0.113.7"));
        assert_eq!(entry.name.as_str(), "*.eu1.cas.ms");
        assert_eq!(entry.queried, "tenant.eu1.cas.ms");
        assert_eq!(entry.expires, expected_expiry(300));
        let proxy_443 = entry.rules.iter().any(|r| {
            r.direction == Direction::Egress
                && r.proto == Proto::Tcp
                && r.ports == [PortRange::single(443)]
                && r.listed_by
                    .iter()
                    .any(|l| l.region == "eu1" && l.feature == Feature::Proxy)
        });
        assert!(proxy_443, "the proxy's egress tcp/443 comes with it: {:?}", entry.rules);
    }

    #[test]
    fn an_aaaa_answer_over_ipv6_is_learned() {
        let dns = response(
            "tenant.eu1.cas.ms.",
            vec![aaaa("tenant.eu1.cas.ms.", 120, "2001:db8:1::7")],
        );
        let frame = ipv6_frame(&[], IPPROTO_UDP, &udp(DNS_PORT, &dns));
        let answer = parse_answer(&frame).expect("answer parses");
        assert_eq!(answer.server, IpAddr::V6(RESOLVER6));
        assert_eq!(answer.client, IpAddr::V6(CLIENT6));
        let learned = learn(&answer, &names(), NOW, &TtlPolicy::default());
        assert_eq!(addrs(&learned), [ip("2001:db8:1::7")]);
        assert_eq!(learned[0].expires, expected_expiry(120));
    }

    #[test]
    fn a_cname_chain_from_an_allowed_name_is_followed_and_its_least_ttl_applies() {
        let frame = answer_frame(
            "tenant.eu1.cas.ms.",
            vec![
                cname("tenant.eu1.cas.ms.", 600, "edge.example.net."),
                cname("edge.example.net.", 120, "lb.example.org."),
                a("lb.example.org.", 3600, "198.51.100.20"),
                aaaa("lb.example.org.", 3600, "2001:db8:2::20"),
                a("edge.example.net.", 60, "198.51.100.21"),
            ],
        );
        let learned = learned_from(&frame);
        assert_eq!(
            addrs(&learned),
            [ip("198.51.100.20"), ip("198.51.100.21"), ip("2001:db8:2::20")]
        );
        for entry in &learned {
            let wanted = match entry.addr {
                // Bounded by the 120 s CNAME on the way, not their own 3600 s.
                a if a == ip("198.51.100.20") || a == ip("2001:db8:2::20") => expected_expiry(120),
                // Its own TTL is the least on its way.
                _ => expected_expiry(60),
            };
            assert_eq!(entry.expires, wanted, "expiry of {}", entry.addr);
            assert_eq!(entry.name.as_str(), "*.eu1.cas.ms");
        }
    }

    #[test]
    fn a_short_cname_ttl_expires_the_addresses_behind_it() {
        let frame = answer_frame(
            "tenant.eu1.cas.ms.",
            vec![
                cname("tenant.eu1.cas.ms.", 5, "lb.example.org."),
                a("lb.example.org.", 3600, "198.51.100.30"),
            ],
        );
        let learned = learned_from(&frame);
        assert_eq!(addrs(&learned), [ip("198.51.100.30")]);
        // The CNAME's 5 s, raised to the floor, not the A's hour.
        assert_eq!(learned[0].expires, expected_expiry(30));
    }

    #[test]
    fn names_outside_the_catalog_teach_nothing() {
        for question in ["www.example.com.", "cas.ms.", "eu1.cas.ms.example.net."] {
            let frame = answer_frame(question, vec![a(question, 300, "203.0.113.40")]);
            assert!(learned_from(&frame).is_empty(), "{question} taught something");
        }
    }

    #[test]
    fn unrelated_records_in_the_same_answer_teach_nothing() {
        let mut message = Message::response(7, OpCode::Query);
        message.add_query(Query::query(name("tenant.eu1.cas.ms."), RecordType::A));
        message.add_answers(vec![
            a("tenant.eu1.cas.ms.", 300, "203.0.113.7"),
            a("other.example.net.", 300, "198.51.100.9"),
            cname("other.example.net.", 300, "tenant.eu1.cas.ms."),
        ]);
        message.add_additional(a("ns.example.net.", 300, "198.51.100.10"));
        message.add_authority(a("tenant.eu1.cas.ms.", 300, "198.51.100.11"));
        let frame = ipv4_frame(&[], &[], &udp(DNS_PORT, &message.to_vec().expect("encodes")));
        assert_eq!(addrs(&learned_from(&frame)), [ip("203.0.113.7")]);
    }

    #[test]
    fn a_chain_starting_outside_the_catalog_teaches_nothing() {
        let frame = answer_frame(
            "www.example.com.",
            vec![
                cname("www.example.com.", 300, "tenant.eu1.cas.ms."),
                a("tenant.eu1.cas.ms.", 300, "203.0.113.50"),
            ],
        );
        assert!(learned_from(&frame).is_empty());
    }

    #[test]
    fn cname_loops_end_the_chain() {
        let frame = answer_frame(
            "tenant.eu1.cas.ms.",
            vec![
                cname("tenant.eu1.cas.ms.", 300, "b.example.net."),
                cname("b.example.net.", 300, "c.example.net."),
                cname("c.example.net.", 300, "b.example.net."),
                a("c.example.net.", 300, "203.0.113.60"),
            ],
        );
        assert_eq!(addrs(&learned_from(&frame)), [ip("203.0.113.60")]);
    }

    #[test]
    fn chains_are_followed_for_eight_hops_only() {
        let hop = |i: usize| format!("hop{i}.example.net.");
        let mut records = vec![cname("tenant.eu1.cas.ms.", 300, &hop(1))];
        for i in 1..12 {
            records.push(cname(&hop(i), 300, &hop(i + 1)));
        }
        records.push(a(&hop(MAX_CNAME_HOPS), 300, "203.0.113.70"));
        records.push(a(&hop(MAX_CNAME_HOPS + 1), 300, "203.0.113.71"));
        let learned = learned_from(&answer_frame("tenant.eu1.cas.ms.", records));
        assert_eq!(addrs(&learned), [ip("203.0.113.70")]);
    }

    #[test]
    fn ttls_are_clamped_to_the_floor_and_the_max() {
        let ttl = TtlPolicy::default();
        let cases = [
            (0, 30),
            (29, 30),
            (31, 31),
            (86_400, 86_400),
            (10 * 86_400, 86_400),
            // RFC 2181: the top bit set reads as zero.
            (0x8000_0000, 30),
        ];
        for (record_ttl, held) in cases {
            let frame = answer_frame(
                "tenant.eu1.cas.ms.",
                vec![a("tenant.eu1.cas.ms.", record_ttl, "203.0.113.80")],
            );
            let learned = learned_from(&frame);
            assert_eq!(learned[0].expires, NOW + held + ttl.grace.as_secs(), "ttl {record_ttl}");
        }
        let crossed = TtlPolicy {
            floor: Duration::from_secs(100),
            grace: Duration::ZERO,
            max: Duration::from_secs(50),
        };
        assert_eq!(crossed.expiry(NOW, 10), NOW + 50, "max wins when floor and max cross");
        assert_eq!(TtlPolicy::default().expiry(u64::MAX - 5, 300), u64::MAX, "saturates");
    }

    #[test]
    fn addresses_no_peer_can_have_are_not_learned() {
        let frame = answer_frame(
            "tenant.eu1.cas.ms.",
            vec![
                a("tenant.eu1.cas.ms.", 300, "0.0.0.0"),
                a("tenant.eu1.cas.ms.", 300, "127.0.0.1"),
                a("tenant.eu1.cas.ms.", 300, "224.0.0.1"),
                a("tenant.eu1.cas.ms.", 300, "255.255.255.255"),
                aaaa("tenant.eu1.cas.ms.", 300, "::ffff:203.0.113.1"),
                aaaa("tenant.eu1.cas.ms.", 300, "::1"),
                aaaa("tenant.eu1.cas.ms.", 300, "ff02::1"),
                a("tenant.eu1.cas.ms.", 300, "203.0.113.90"),
            ],
        );
        assert_eq!(addrs(&learned_from(&frame)), [ip("203.0.113.90")]);
    }

    #[test]
    fn a_repeated_address_is_learned_once_with_its_later_expiry() {
        let frame = answer_frame(
            "tenant.eu1.cas.ms.",
            vec![
                a("tenant.eu1.cas.ms.", 60, "203.0.113.91"),
                a("tenant.eu1.cas.ms.", 600, "203.0.113.91"),
            ],
        );
        let learned = learned_from(&frame);
        assert_eq!(learned.len(), 1);
        assert_eq!(learned[0].expires, expected_expiry(600));
    }

    #[test]
    fn a_label_holding_a_dot_is_not_two_labels() {
        // One label `tenant.eu1` under `cas.ms`: below cas.ms, but not below eu1.cas.ms.
        let mut owner = Name::from_labels(vec![&b"tenant.eu1"[..], b"cas", b"ms"]).expect("labels");
        owner.set_fqdn(true);
        let mut message = Message::response(1, OpCode::Query);
        message.add_query(Query::query(owner.clone(), RecordType::A));
        message.add_answer(Record::from_rdata(
            owner,
            300,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 95))),
        ));
        let frame = ipv4_frame(&[], &[], &udp(DNS_PORT, &message.to_vec().expect("encodes")));
        let answer = parse_answer(&frame).expect("parses");
        assert_eq!(answer.question, "tenant\\046eu1.cas.ms");
        let learned = learn(&answer, &names(), NOW, &TtlPolicy::default());
        assert_eq!(learned.len(), 1);
        assert_eq!(learned[0].name.as_str(), "*.cas.ms", "not *.eu1.cas.ms");
    }

    fn entry(addr: &str, name: &str, expires: u64) -> Learned {
        Learned {
            addr: ip(addr),
            name: DnsName(name.into()),
            queried: format!("tenant.{}", name.trim_start_matches("*.")),
            rules: Vec::new(),
            expires,
        }
    }

    #[test]
    fn the_table_refreshes_a_pair_and_keeps_the_later_expiry() {
        let mut table = LearnedTable::new(8);
        assert_eq!(table.insert(entry("203.0.113.1", "*.cas.ms", 500)), Inserted::Added);
        assert_eq!(table.insert(entry("203.0.113.1", "*.cas.ms", 400)), Inserted::Refreshed);
        assert_eq!(
            table.iter().next().map(|l| l.expires),
            Some(500),
            "an earlier expiry does not shorten it"
        );
        assert_eq!(table.insert(entry("203.0.113.1", "*.cas.ms", 900)), Inserted::Refreshed);
        assert_eq!(table.iter().next().map(|l| l.expires), Some(900));
        assert_eq!(
            table.insert(entry("203.0.113.1", "*.eu1.cas.ms", 100)),
            Inserted::Added,
            "another name"
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table.entries_for(ip("203.0.113.1")).count(), 2);
    }

    #[test]
    fn the_table_expires_what_ran_out() {
        let mut table = LearnedTable::new(8);
        table.insert(entry("203.0.113.1", "*.cas.ms", 100));
        table.insert(entry("203.0.113.2", "*.cas.ms", 200));
        assert!(table.expire(99).is_empty());
        let gone = table.expire(100);
        assert_eq!(addrs(&gone), [ip("203.0.113.1")], "an entry is gone at its expiry");
        assert_eq!(table.len(), 1);
        assert_eq!(addrs(&table.expire(u64::MAX)), [ip("203.0.113.2")]);
        assert!(table.is_empty());
    }

    #[test]
    fn the_table_refuses_new_entries_at_its_bound_and_counts_them() {
        let mut table = LearnedTable::new(2);
        assert_eq!(table.insert(entry("203.0.113.1", "*.cas.ms", 100)), Inserted::Added);
        assert_eq!(table.insert(entry("203.0.113.2", "*.cas.ms", 100)), Inserted::Added);
        assert_eq!(table.insert(entry("203.0.113.3", "*.cas.ms", 900)), Inserted::Refused);
        assert_eq!(table.insert(entry("203.0.113.4", "*.cas.ms", 900)), Inserted::Refused);
        assert_eq!(table.refused(), 2);
        assert_eq!(
            addrs(&table.iter().cloned().collect::<Vec<_>>()),
            [ip("203.0.113.1"), ip("203.0.113.2")]
        );
        assert_eq!(
            table.insert(entry("203.0.113.1", "*.cas.ms", 300)),
            Inserted::Refreshed,
            "full, refresh works"
        );
        table.expire(100);
        assert_eq!(
            table.insert(entry("203.0.113.3", "*.cas.ms", 900)),
            Inserted::Added,
            "room after expiry"
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table.refused(), 2);
    }

    #[test]
    fn a_policy_change_drops_what_it_no_longer_lists() {
        let mut table = LearnedTable::default();
        for learned in learned_from(&answer_frame(
            "tenant.eu1.cas.ms.",
            vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")],
        )) {
            table.insert(learned);
        }
        let portal_only = NameSet::from_policy(&Policy::build(
            &Catalog::builtin(),
            &Selection {
                regions: vec!["eu1".into()],
                features: vec![Feature::Portal],
            },
            &Config::default(),
            &[],
        ));
        assert!(table.reconcile(&names()).is_empty(), "the same policy keeps it");
        assert_eq!(table.len(), 1);
        let removed = table.reconcile(&portal_only);
        assert_eq!(addrs(&removed), [ip("203.0.113.7")]);
        assert!(table.is_empty());
    }

    #[test]
    fn vlan_tagged_frames_parse_up_to_two_tags() {
        let dns = response("tenant.eu1.cas.ms.", vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")]);
        let datagram = udp(DNS_PORT, &dns);
        for tags in [
            &[ETHERTYPE_VLAN][..],
            &[ETHERTYPE_QINQ, ETHERTYPE_VLAN],
            &[ETHERTYPE_VLAN, ETHERTYPE_VLAN],
        ] {
            let learned = learned_from(&ipv4_frame(tags, &[], &datagram));
            assert_eq!(addrs(&learned), [ip("203.0.113.7")], "tags {tags:x?}");
            let learned = learned_from(&ipv6_frame(tags, IPPROTO_UDP, &datagram));
            assert_eq!(addrs(&learned), [ip("203.0.113.7")], "tags {tags:x?} over ipv6");
        }
        let three = ipv4_frame(&[ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETHERTYPE_VLAN], &[], &datagram);
        assert!(matches!(
            parse_answer(&three),
            Err(LearnError::TooManyVlanTags { max: 2 })
        ));
    }

    #[test]
    fn ipv4_options_are_skipped_and_padding_ignored() {
        let dns = response("tenant.eu1.cas.ms.", vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")]);
        // Router alert, then NOPs to the word.
        let mut frame = ipv4_frame(&[], &[0x94, 0x04, 0, 0, 1, 1, 1, 0], &udp(DNS_PORT, &dns));
        frame.extend([0u8; 16]);
        assert_eq!(addrs(&learned_from(&frame)), [ip("203.0.113.7")]);
    }

    #[test]
    fn malformed_frames_give_errors() {
        let dns = response("tenant.eu1.cas.ms.", vec![a("tenant.eu1.cas.ms.", 300, "203.0.113.7")]);
        let good = ipv4_frame(&[], &[], &udp(DNS_PORT, &dns));
        let ip_at = ETH_HLEN;
        let udp_at = ETH_HLEN + IPV4_MIN_HLEN;
        let dns_at = udp_at + UDP_HLEN;
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut frame = good.clone();
            f(&mut frame);
            frame
        };
        let mut query = dns.clone();
        query[2] &= 0x7f;
        let mut two_questions = dns.clone();
        two_questions[5] = 2;
        let mut cut_dns = dns.clone();
        cut_dns.truncate(dns.len() - 3);

        type Check = fn(&LearnError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("empty", Vec::new(), |e| {
                matches!(e, LearnError::Truncated { layer: "ethernet", .. })
            }),
            ("ethernet cut", good[..13].to_vec(), |e| {
                matches!(e, LearnError::Truncated { layer: "ethernet", .. })
            }),
            (
                "vlan cut",
                ethernet(&[ETHERTYPE_VLAN], ETHERTYPE_IPV4)[..16].to_vec(),
                |e| matches!(e, LearnError::Truncated { layer: "vlan", .. }),
            ),
            ("arp", ethernet(&[], 0x0806), |e| {
                matches!(e, LearnError::NotIp { ethertype: 0x0806 })
            }),
            ("ipv4 cut", good[..ip_at + 19].to_vec(), |e| {
                matches!(e, LearnError::Truncated { layer: "ipv4", .. })
            }),
            ("ipv4 says 6", edit(&|f| f[ip_at] = 0x65), |e| {
                matches!(e, LearnError::IpVersion { expected: 4, found: 6 })
            }),
            ("ihl 4", edit(&|f| f[ip_at] = 0x44), |e| {
                matches!(e, LearnError::BadIhl { ihl: 4 })
            }),
            (
                "ihl past the total length",
                edit(&|f| {
                    f[ip_at] = 0x4f;
                    f[ip_at + 2..ip_at + 4].copy_from_slice(&[0, 40]);
                }),
                |e| matches!(e, LearnError::BadLength { layer: "ipv4", .. }),
            ),
            ("total length long", edit(&|f| f[ip_at + 2] = 0xff), |e| {
                matches!(e, LearnError::BadLength { layer: "ipv4", .. })
            }),
            ("more fragments", edit(&|f| f[ip_at + 6] = 0x20), |e| {
                matches!(e, LearnError::Fragment { ip: "ipv4" })
            }),
            ("fragment offset", edit(&|f| f[ip_at + 7] = 0x08), |e| {
                matches!(e, LearnError::Fragment { ip: "ipv4" })
            }),
            ("tcp", edit(&|f| f[ip_at + 9] = 6), |e| {
                matches!(e, LearnError::NotUdp { protocol: 6 })
            }),
            ("udp length long", edit(&|f| f[udp_at + 4] = 0xff), |e| {
                matches!(e, LearnError::BadLength { layer: "udp", .. })
            }),
            (
                "udp length short",
                edit(&|f| f[udp_at + 4..udp_at + 6].copy_from_slice(&[0, 7])),
                |e| matches!(e, LearnError::BadLength { layer: "udp", .. }),
            ),
            ("not from 53", ipv4_frame(&[], &[], &udp(5353, &dns)), |e| {
                matches!(e, LearnError::NotFromDnsPort { port: 5353 })
            }),
            (
                "dns header cut",
                ipv4_frame(&[], &[], &udp(DNS_PORT, &dns[..11])),
                |e| matches!(e, LearnError::Truncated { layer: "dns", .. }),
            ),
            ("a query", ipv4_frame(&[], &[], &udp(DNS_PORT, &query)), |e| {
                matches!(e, LearnError::NotResponse)
            }),
            (
                "two questions",
                ipv4_frame(&[], &[], &udp(DNS_PORT, &two_questions)),
                |e| matches!(e, LearnError::QuestionCount { count: 2 }),
            ),
            ("dns cut", ipv4_frame(&[], &[], &udp(DNS_PORT, &cut_dns)), |e| {
                matches!(e, LearnError::Dns { .. })
            }),
            (
                "dns garbage",
                ipv4_frame(
                    &[],
                    &[],
                    &udp(DNS_PORT, &[0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xff]),
                ),
                |e| matches!(e, LearnError::Dns { .. }),
            ),
            (
                "ipv6 cut",
                ipv6_frame(&[], IPPROTO_UDP, &[])[..ETH_HLEN + 39].to_vec(),
                |e| matches!(e, LearnError::Truncated { layer: "ipv6", .. }),
            ),
            (
                "ipv6 says 4",
                {
                    let mut f = ipv6_frame(&[], IPPROTO_UDP, &udp(DNS_PORT, &dns));
                    f[ETH_HLEN] = 0x40;
                    f
                },
                |e| matches!(e, LearnError::IpVersion { expected: 6, found: 4 }),
            ),
            (
                "ipv6 payload long",
                {
                    let mut f = ipv6_frame(&[], IPPROTO_UDP, &udp(DNS_PORT, &dns));
                    f[ETH_HLEN + 4] = 0xff;
                    f
                },
                |e| {
                    matches!(
                        e,
                        LearnError::BadLength {
                            layer: "ipv6 payload",
                            ..
                        }
                    )
                },
            ),
            (
                "ipv6 fragment",
                ipv6_frame(&[], IPV6_FRAGMENT_HEADER, &udp(DNS_PORT, &dns)),
                |e| matches!(e, LearnError::Fragment { ip: "ipv6" }),
            ),
            ("ipv6 hop-by-hop", ipv6_frame(&[], 0, &udp(DNS_PORT, &dns)), |e| {
                matches!(e, LearnError::NotUdp { protocol: 0 })
            }),
            ("ipv6 udp cut", ipv6_frame(&[], IPPROTO_UDP, &[0, 53, 0x9c]), |e| {
                matches!(e, LearnError::Truncated { layer: "udp", .. })
            }),
        ];
        assert!(dns_at < good.len());
        for (what, frame, check) in cases {
            match parse_answer(&frame) {
                Ok(answer) => panic!("{what}: parsed as {answer:?}"),
                Err(e) => {
                    assert!(check(&e), "{what}: wrong error {e:?}");
                    let message = e.to_string();
                    assert!(!message.ends_with('.') && !message.contains('\n'), "{what}: {message}");
                    assert_eq!(
                        message.chars().next().map(|c| c.is_lowercase()),
                        Some(true),
                        "{what}: {message}"
                    );
                }
            }
        }
    }

    fn valid_frames() -> Vec<Vec<u8>> {
        let dns = response(
            "tenant.eu1.cas.ms.",
            vec![
                cname("tenant.eu1.cas.ms.", 60, "lb.example.org."),
                a("lb.example.org.", 300, "203.0.113.7"),
                aaaa("lb.example.org.", 300, "2001:db8::7"),
            ],
        );
        let datagram = udp(DNS_PORT, &dns);
        vec![
            ipv4_frame(&[], &[], &datagram),
            ipv4_frame(&[ETHERTYPE_QINQ, ETHERTYPE_VLAN], &[1, 1, 1, 1], &datagram),
            ipv6_frame(&[ETHERTYPE_VLAN], IPPROTO_UDP, &datagram),
        ]
    }

    #[test]
    fn the_fuzz_seeds_are_valid() {
        for frame in valid_frames() {
            assert_eq!(learned_from(&frame).len(), 2);
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(frame in prop::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(answer) = parse_answer(&frame) {
                let _ = learn(&answer, &names(), NOW, &TtlPolicy::default());
            }
        }

        #[test]
        fn mutated_answers_never_panic(
            seed in 0usize..3,
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            cut_it in any::<bool>(),
        ) {
            let mut frame = valid_frames().swap_remove(seed);
            for (at, byte) in flips {
                let at = at.index(frame.len());
                frame[at] = byte;
            }
            if cut_it {
                frame.truncate(cut.index(frame.len() + 1));
            }
            if let Ok(answer) = parse_answer(&frame) {
                let learned = learn(&answer, &names(), NOW, &TtlPolicy::default());
                prop_assert!(learned.iter().all(|l| l.expires >= NOW + 30));
            }
        }

        #[test]
        fn a_wildcard_covers_every_name_below_it(
            labels in prop::collection::vec("[a-z0-9-]{1,12}", 1..4),
            upper in any::<bool>(),
            dot in any::<bool>(),
        ) {
            let mut queried = format!("{}.cas.ms", labels.join("."));
            if upper {
                queried = queried.to_ascii_uppercase();
            }
            if dot {
                queried.push('.');
            }
            let set = names();
            prop_assert!(set.lookup(&queried).iter().any(|m| m.name.as_str() == "*.cas.ms"));
            let glued = format!("{}cas.ms", labels.concat());
            prop_assert!(set.lookup(&glued).iter().all(|m| m.name.as_str() != "*.cas.ms"));
        }
    }
}
