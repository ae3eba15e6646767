//! The catalog: what the service's "Network requirements" page lists, per region and
//! feature. `parse` reads the page; this file holds the model every other module uses.

pub mod fetch;
mod parse;

use std::{fmt, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use parse::{CatalogError, parse_page};

/// The page the built-in catalog is made from, shipped in the repository.
pub const BUILTIN_PAGE: &str = include_str!("../../../catalog/network-requirements-2019-11.md");

/// A feature of the service: one section of the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    Portal,
    Proxy,
    Siem,
    AppConnector,
    Dlp,
    Mail,
    LogCollector,
}

impl Feature {
    pub const ALL: [Feature; 7] = [
        Feature::Portal,
        Feature::Proxy,
        Feature::Siem,
        Feature::AppConnector,
        Feature::Dlp,
        Feature::Mail,
        Feature::LogCollector,
    ];

    /// The features enabled when the config names none.
    pub const DEFAULT: [Feature; 3] = [Feature::Portal, Feature::Proxy, Feature::Siem];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Portal => "portal",
            Feature::Proxy => "proxy",
            Feature::Siem => "siem",
            Feature::AppConnector => "app-connector",
            Feature::Dlp => "dlp",
            Feature::Mail => "mail",
            Feature::LogCollector => "log-collector",
        }
    }

    /// One line on what the feature is for, as the page's section heading says.
    pub fn describe(self) -> &'static str {
        match self {
            Feature::Portal => "portal access",
            Feature::Proxy => "access and session controls (reverse proxy)",
            Feature::Siem => "SIEM agent connection",
            Feature::AppConnector => "app connector (the service connects in)",
            Feature::Dlp => "third-party DLP integration (stunnel, inbound)",
            Feature::Mail => "mail server (notifications come in)",
            Feature::LogCollector => "log collector",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown feature name, with the nearest valid one when there is a close one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown feature `{name}`{}", suggestion_suffix(.suggestion))]
pub struct UnknownFeature {
    pub name: String,
    pub suggestion: Option<String>,
}

pub(crate) fn suggestion_suffix(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(": did you mean `{s}`?"),
        None => String::new(),
    }
}

/// The nearest of `candidates` to `name`, if it is close enough to be a typo.
pub(crate) fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&name.to_ascii_lowercase(), c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

impl FromStr for Feature {
    type Err = UnknownFeature;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Feature::ALL
            .into_iter()
            .find(|f| f.as_str() == wanted)
            .ok_or_else(|| UnknownFeature {
                name: s.to_string(),
                suggestion: nearest(&wanted, Feature::ALL.iter().map(|f| f.as_str())),
            })
    }
}

/// Which way the connection a rule allows is opened, seen from this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This host connects out to the peer.
    Egress,
    /// The peer connects in to this host.
    Ingress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP for IPv4 and ICMPv6 for IPv6.
    Icmp,
    Any,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Any => "any",
        }
    }

    /// Whether rules of this protocol can name ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of ports; a single port has `lo == hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange { lo: 0, hi: u16::MAX };

    pub const fn single(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.lo == self.hi {
            s.serialize_u16(self.lo)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Port(u16),
            Range(String),
        }
        match Raw::deserialize(d)? {
            Raw::Port(p) => Ok(PortRange::single(p)),
            Raw::Range(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{s}` is not a port (0-65535) or a range `LO-HI`"))
        };
        match s.split_once('-') {
            None => Ok(PortRange::single(port(s)?)),
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("port range `{s}` runs backwards"));
                }
                Ok(PortRange { lo, hi })
            }
        }
    }
}

/// A DNS name the page lists, lowercased, without scheme or path. A leading `*.`
/// marks a wildcard name (any name below the rest).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DnsName(pub String);

impl DnsName {
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a catalog entry lets the host talk to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// An address or a CIDR; a bare address is a /32 or /128.
    Net(IpNet),
    Name(DnsName),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Net(n) => write!(f, "{n}"),
            Peer::Name(n) => write!(f, "{n}"),
        }
    }
}

/// A data center of the page. `id` is what users type (`gov-us1`), `label` what the
/// page prints (`Gov US1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub id: String,
    pub label: String,
}

/// One thing the page lists: a peer, for a feature, in one region or in every region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// `None`: the page lists it for every region (global names, mail addresses).
    pub region: Option<String>,
    pub feature: Feature,
    pub peer: Peer,
    pub direction: Direction,
    pub proto: Proto,
    pub ports: Vec<PortRange>,
    /// The page line that lists it (1-based), so a user can find it.
    pub line: usize,
}

/// Everything one page lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Where the catalog came from (file name, and the page's `ms.date` when it has one).
    pub source: String,
    pub regions: Vec<Region>,
    pub entries: Vec<CatalogEntry>,
}

/// An unknown region name, with the nearest valid one when there is a close one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region `{name}`{}; `allowgate regions` lists them", suggestion_suffix(.suggestion))]
pub struct UnknownRegion {
    pub name: String,
    pub suggestion: Option<String>,
}

/// `GOV-US1`, `Gov US1` and `govus1` all name `gov-us1`: case, spaces, dashes and
/// underscores do not matter.
pub fn region_key(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Catalog {
    /// The catalog made from the page shipped in the binary.
    pub fn builtin() -> Catalog {
        parse_page(BUILTIN_PAGE, "network-requirements-2019-11.md")
            .expect("the shipped page parses; a test guards this")
    }

    /// The region `name` names, matched case-insensitively and ignoring separators.
    pub fn region(&self, name: &str) -> Result<&Region, UnknownRegion> {
        let key = region_key(name);
        self.regions
            .iter()
            .find(|r| region_key(&r.id) == key || region_key(&r.label) == key)
            .ok_or_else(|| UnknownRegion {
                name: name.to_string(),
                suggestion: nearest(&name.to_ascii_lowercase(), self.regions.iter().map(|r| r.id.as_str())),
            })
    }

    /// The entries of `feature` that `region` lists, including the page's global ones.
    pub fn entries_for<'a>(&'a self, region: &'a str, feature: Feature) -> impl Iterator<Item = &'a CatalogEntry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.feature == feature && e.region.as_deref().is_none_or(|r| r == region))
    }
}
