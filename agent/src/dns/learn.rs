//! Learning the addresses of the catalog's names from DNS answers seen on the host.
//!
//! Pure: an answer in (taken out of its frame by `message`), addresses out, no kernel
//! and no clock of its own (callers pass `now` in seconds of the monotonic clock the
//! data plane compares expiries against).
//! Only a chain that starts at a name the policy lists teaches anything: the question
//! must match the catalog, and only A/AAAA records reached from it through CNAMEs in the
//! answer section count, so a resolver answer cannot open addresses it merely carries.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use super::message::{AnswerData, DnsAnswer};
use crate::{
    catalog::{DnsName, Peer},
    policy::{Policy, Rule},
};

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

/// CNAME hops followed from the question name; a longer chain teaches only its first
/// hops' addresses.
pub const MAX_CNAME_HOPS: usize = 8;
/// Entries a `LearnedTable` holds unless told otherwise.
pub const DEFAULT_LEARNED_CAPACITY: usize = 4096;

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
pub(crate) mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        str::FromStr,
    };

    use hickory_proto::{
        op::{Message, OpCode, Query},
        rr::{
            Name, RData, Record, RecordType,
            rdata::{A, AAAA, CNAME},
        },
    };
    use proptest::prelude::*;

    use super::*;
    use crate::dns::{
        frame::tests::{CLIENT_PORT, CLIENT4, CLIENT6, RESOLVER4, RESOLVER6, ipv4_frame, ipv6_frame},
        message::parse_answer,
    };
    use crate::{
        catalog::{Catalog, Direction, Feature, PortRange, Proto},
        policy::{Config, Selection},
    };

    pub(crate) const NOW: u64 = 1_000;

    fn eu1_proxy_portal() -> Policy {
        let selection = Selection {
            regions: vec!["eu1".into()],
            features: vec![Feature::Proxy, Feature::Portal],
        };
        Policy::build(&Catalog::builtin(), &selection, &Config::default(), &[])
    }

    pub(crate) fn names() -> NameSet {
        NameSet::from_policy(&eu1_proxy_portal())
    }

    pub(crate) fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap_or_else(|e| panic!("test name {text}: {e}"))
    }

    pub(crate) fn a(owner: &str, ttl: u32, addr: &str) -> Record {
        let addr = Ipv4Addr::from_str(addr).expect("test address");
        Record::from_rdata(name(owner), ttl, RData::A(A(addr)))
    }

    pub(crate) fn aaaa(owner: &str, ttl: u32, addr: &str) -> Record {
        let addr = Ipv6Addr::from_str(addr).expect("test address");
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(addr)))
    }

    pub(crate) fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    pub(crate) fn response(question: &str, answers: Vec<Record>) -> Vec<u8> {
        let mut message = Message::response(0x1234, OpCode::Query);
        message.add_query(Query::query(name(question), RecordType::A));
        message.add_answers(answers);
        message.to_vec().expect("test message encodes")
    }

    fn answer_frame(question: &str, answers: Vec<Record>) -> Vec<u8> {
        ipv4_frame(&[], &[], 53, &response(question, answers))
    }

    pub(crate) fn learned_from(frame: &[u8]) -> Vec<Learned> {
        let answer = parse_answer(frame).unwrap_or_else(|e| panic!("test frame does not parse: {e}"));
        learn(&answer, &names(), NOW, &TtlPolicy::default())
    }

    pub(crate) fn addrs(learned: &[Learned]) -> Vec<IpAddr> {
        let mut addrs: Vec<IpAddr> = learned.iter().map(|l| l.addr).collect();
        addrs.sort();
        addrs
    }

    pub(crate) fn ip(text: &str) -> IpAddr {
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
        let frame = ipv6_frame(&[], false, 53, &dns);
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
        let frame = ipv4_frame(&[], &[], 53, &message.to_vec().expect("encodes"));
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
        let frame = ipv4_frame(&[], &[], 53, &message.to_vec().expect("encodes"));
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

    proptest! {
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
