//! The catalog: what the service publishes (its "Network requirements" page, its Azure
//! service tags), per region and feature. `page` reads the page, `service_tags` the
//! tag files, `sources` loads and merges them; this file holds the model every other
//! module uses.

pub mod azure;
pub mod diff;
mod page;
pub mod service_tags;
pub mod sources;

use std::{fmt, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use page::{CatalogError, PageOptions, parse_page, parse_page_with};

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

/// What a feature's entries allow, the same whichever source lists them: the page's
/// sections and the service tags both use this table (README: "Config").
#[derive(Debug)]
pub struct FeatureSpec {
    pub feature: Feature,
    /// Lowercase words of the page heading that names the feature; the first spec
    /// with a match wins.
    pub keywords: &'static [&'static str],
    /// Which way connections go. The proxy's addresses go both ways (users reach the
    /// proxy; the proxy reaches the operator's apps), so it has two.
    pub directions: &'static [Direction],
    pub port: u16,
}

/// One row per feature, in `Feature::ALL` order.
pub const FEATURE_SPECS: [FeatureSpec; 7] = [
    FeatureSpec {
        feature: Feature::Portal,
        keywords: &["portal access"],
        directions: &[Direction::Egress],
        port: 443,
    },
    FeatureSpec {
        feature: Feature::Proxy,
        keywords: &["access and session controls", "session control", "reverse proxy"],
        directions: &[Direction::Egress, Direction::Ingress],
        port: 443,
    },
    FeatureSpec {
        feature: Feature::Siem,
        keywords: &["siem"],
        directions: &[Direction::Egress],
        port: 443,
    },
    FeatureSpec {
        feature: Feature::AppConnector,
        keywords: &["app connector"],
        directions: &[Direction::Ingress],
        port: 443,
    },
    FeatureSpec {
        feature: Feature::Dlp,
        keywords: &["dlp"],
        directions: &[Direction::Ingress],
        port: 11344,
    },
    FeatureSpec {
        feature: Feature::Mail,
        keywords: &["mail server"],
        directions: &[Direction::Ingress],
        port: 25,
    },
    FeatureSpec {
        feature: Feature::LogCollector,
        keywords: &["log collector"],
        directions: &[Direction::Egress],
        port: 443,
    },
];

impl Feature {
    pub fn spec(self) -> &'static FeatureSpec {
        FEATURE_SPECS
            .iter()
            .find(|s| s.feature == self)
            .expect("FEATURE_SPECS has a row for every feature")
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

/// Which customers a data center, or a proxy address, serves. The page lists the
/// reverse proxy's addresses per offering; enabling `proxy` for a data center allows
/// the proxy regions of its offering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Offering {
    Commercial,
    /// US Government GCC High: the `gov-us1` data center, names ending in `.us`.
    GccHigh,
    /// US Government GCC: the `gcc` data center.
    Gcc,
}

impl Offering {
    pub fn as_str(self) -> &'static str {
        match self {
            Offering::Commercial => "commercial",
            Offering::GccHigh => "gcc-high",
            Offering::Gcc => "gcc",
        }
    }

    /// The offering of a data center, from its id: `gov-*` is GCC High (the page's
    /// "Gov US1"), `gcc*` is GCC, every other data center is commercial.
    pub fn of_data_center(id: &str) -> Offering {
        let key = region_key(id);
        if key.starts_with("gov") {
            Offering::GccHigh
        } else if key.starts_with("gcc") {
            Offering::Gcc
        } else {
            Offering::Commercial
        }
    }
}

impl fmt::Display for Offering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of place a region is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionKind {
    /// A data center of the page (`us1`, `gov-us1`, `gcc`): a tenant lives in one.
    #[default]
    DataCenter,
    /// An Azure region (`westeurope`, `usgovvirginia`): where the page's proxy
    /// addresses, or a regional service tag, are.
    AzureRegion,
    /// Every region of a service tag (its global tag).
    All,
}

impl RegionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionKind::DataCenter => "data-center",
            RegionKind::AzureRegion => "azure-region",
            RegionKind::All => "all",
        }
    }
}

/// A region of the catalog. `id` is what users type (`gov-us1`, `westeurope`),
/// `label` what the source prints (`Gov US1`, `West Europe`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub id: String,
    pub label: String,
    #[serde(default)]
    pub kind: RegionKind,
}

impl Region {
    pub fn data_center(id: impl Into<String>, label: impl Into<String>) -> Region {
        Region {
            id: id.into(),
            label: label.into(),
            kind: RegionKind::DataCenter,
        }
    }

    /// The offering of a data center; `None` for other kinds of region.
    pub fn offering(&self) -> Option<Offering> {
        (self.kind == RegionKind::DataCenter).then(|| Offering::of_data_center(&self.id))
    }
}

/// Where entries come from: one page, or one service tag of a tag file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    /// A "Network requirements" page: its file name and `ms.date`.
    Page { file: String, date: Option<String> },
    /// One tag of an Azure "IP Ranges and Service Tags" file, with the tag's own
    /// `changeNumber` and the file's.
    ServiceTag {
        file: String,
        tag: String,
        change: u64,
        file_change: u64,
        cloud: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Page { file, date: Some(date) } => write!(f, "{file} (ms.date {date})"),
            Origin::Page { file, date: None } => f.write_str(file),
            Origin::ServiceTag { file, tag, change, .. } => {
                write!(f, "service tag {tag} changeNumber {change} ({file})")
            }
        }
    }
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
    /// The page line that lists it (1-based), so a user can find it; 0 for sources
    /// without lines (service tags).
    pub line: usize,
    /// For the proxy's addresses listed by Azure region: the offering whose table
    /// lists them. `None`: not offering-specific.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offering: Option<Offering>,
    /// Index into `Catalog::origins`.
    #[serde(default)]
    pub origin: usize,
}

impl CatalogEntry {
    /// What and where lists it: `page.md (ms.date 04/04/2024) line 57`, or `service
    /// tag MicrosoftCloudAppSecurity.WestEurope changeNumber 23 (ServiceTags.json)`.
    pub fn cite(&self, catalog: &Catalog) -> String {
        match catalog.origins.get(self.origin) {
            Some(origin @ Origin::Page { .. }) => format!("{origin} line {}", self.line),
            Some(origin) => origin.to_string(),
            None if self.line > 0 => format!("{} line {}", catalog.source, self.line),
            None => catalog.source.clone(),
        }
    }
}

/// Everything one page lists, or several sources merged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Where the catalog came from, in one line (file names, `ms.date`, change numbers).
    pub source: String,
    /// Every source an entry can name (`CatalogEntry::origin`).
    #[serde(default)]
    pub origins: Vec<Origin>,
    pub regions: Vec<Region>,
    pub entries: Vec<CatalogEntry>,
    /// What the import could not take from the source as it is and did instead
    /// (names given only by example or by a link), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

    /// The region `name` names, matched case-insensitively and ignoring separators;
    /// an Azure region by any of its spellings (`centralfrance` names `francecentral`).
    pub fn region(&self, name: &str) -> Result<&Region, UnknownRegion> {
        let key = region_key(name);
        let azure = azure::azure_region(name).map(|a| a.name);
        self.regions
            .iter()
            .find(|r| region_key(&r.id) == key || region_key(&r.label) == key)
            .or_else(|| {
                let azure = azure?;
                self.regions.iter().find(|r| {
                    r.kind == RegionKind::AzureRegion && azure::azure_region(&r.id).map(|a| a.name) == Some(azure)
                })
            })
            .ok_or_else(|| UnknownRegion {
                name: name.to_string(),
                suggestion: self.nearest_region(name),
            })
    }

    /// The region a mistyped name is closest to, by its id or, for an Azure region,
    /// any of its spellings (`centralfrancee` is near `centralfrance`: `francecentral`).
    fn nearest_region(&self, name: &str) -> Option<String> {
        let spellings: Vec<(String, &str)> = self
            .regions
            .iter()
            .flat_map(|r| {
                let azure = (r.kind == RegionKind::AzureRegion)
                    .then(|| azure::azure_region(&r.id))
                    .flatten();
                let aliases = azure.into_iter().flat_map(|a| a.aliases.iter().map(|x| x.to_string()));
                std::iter::once(r.id.clone())
                    .chain(aliases)
                    .map(move |spelling| (spelling, r.id.as_str()))
            })
            .collect();
        let near = nearest(&name.to_ascii_lowercase(), spellings.iter().map(|(s, _)| s.as_str()))?;
        spellings.iter().find(|(s, _)| *s == near).map(|(_, id)| id.to_string())
    }

    /// The proxy regions (Azure regions) that list proxy addresses for `offering`.
    pub fn proxy_regions(&self, offering: Offering) -> Vec<&str> {
        let mut regions: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.feature == Feature::Proxy && e.offering == Some(offering))
            .filter_map(|e| e.region.as_deref())
            .collect();
        regions.sort();
        regions.dedup();
        regions
    }

    /// The entries that a selection of `region` for `feature` allows: what `region`
    /// lists for it, and for `proxy` on a data center, what every proxy region of
    /// the data center's offering lists (`proxy_regions` narrows those, when given).
    /// Each comes with the region that lists it.
    pub fn selected<'a>(
        &'a self,
        region: &'a str,
        feature: Feature,
        proxy_regions: Option<&'a [String]>,
    ) -> impl Iterator<Item = (&'a str, &'a CatalogEntry)> + 'a {
        // A selection saved before the region's spelling was Azure's (`centralfrance`)
        // still names it.
        let region: &'a str = match self.regions.iter().any(|r| r.id == region) {
            true => region,
            false => self.region(region).map_or(region, |r| r.id.as_str()),
        };
        let offering = self
            .regions
            .iter()
            .find(|r| r.id == region)
            .and_then(Region::offering)
            .filter(|_| feature == Feature::Proxy);
        self.entries.iter().filter_map(move |e| {
            if e.feature != feature {
                return None;
            }
            match (e.region.as_deref(), e.offering) {
                (None, _) => Some((region, e)),
                (Some(r), _) if r == region => Some((region, e)),
                (Some(r), Some(o)) if Some(o) == offering && proxy_regions.is_none_or(|p| p.iter().any(|x| x == r)) => {
                    Some((r, e))
                }
                _ => None,
            }
        })
    }

    /// Merges catalogs into one: regions by id (the first label wins), entries that
    /// allow the same thing once (the first source is the one named).
    pub fn merge(catalogs: Vec<Catalog>) -> Catalog {
        let mut merged = Catalog {
            source: String::new(),
            origins: Vec::new(),
            regions: Vec::new(),
            entries: Vec::new(),
            warnings: Vec::new(),
        };
        let mut seen: std::collections::HashSet<EntryKey> = std::collections::HashSet::new();
        let mut sources = Vec::new();
        for mut catalog in catalogs {
            catalog.normalize_regions();
            sources.push(catalog.source.clone());
            let base = merged.origins.len();
            let own_origins = catalog.origins.len();
            merged.origins.extend(catalog.origins);
            if own_origins == 0 {
                // A catalog file written before origins existed: its source line is its origin.
                merged.origins.push(Origin::Page {
                    file: catalog.source.clone(),
                    date: None,
                });
            }
            for region in catalog.regions {
                if !merged
                    .regions
                    .iter()
                    .any(|r| region_key(&r.id) == region_key(&region.id))
                {
                    merged.regions.push(region);
                }
            }
            for mut entry in catalog.entries {
                entry.origin = base
                    + if own_origins == 0 {
                        0
                    } else {
                        entry.origin.min(own_origins - 1)
                    };
                if seen.insert(EntryKey::of(&entry)) {
                    merged.entries.push(entry);
                }
            }
            merged.warnings.extend(catalog.warnings);
        }
        merged.source = sources.join(" + ");
        merged
    }

    /// Spells every Azure region as Azure does (`centralfrance` -> `francecentral`,
    /// labelled "France Central"), in its regions and its entries, merging what were
    /// two spellings of one region. Catalogs imported before the vocabulary existed
    /// are read with it.
    pub fn normalize_regions(&mut self) {
        let mut renamed = std::collections::HashMap::new();
        for region in &mut self.regions {
            if region.kind != RegionKind::AzureRegion {
                continue;
            }
            if let Some(azure) = azure::azure_region(&region.id) {
                if region.id != azure.name {
                    renamed.insert(region.id.clone(), azure.name.to_string());
                    region.id = azure.name.to_string();
                }
                region.label = azure.display.to_string();
            }
        }
        let mut ids = std::collections::HashSet::new();
        self.regions.retain(|r| ids.insert(r.id.clone()));
        if renamed.is_empty() {
            return;
        }
        for entry in &mut self.entries {
            if let Some(new) = entry.region.as_ref().and_then(|r| renamed.get(r)) {
                entry.region = Some(new.clone());
            }
        }
        let mut seen = std::collections::HashSet::new();
        self.entries.retain(|e| seen.insert(EntryKey::of(e)));
    }

    /// Every distinct address or CIDR the catalog lists (for sizes and shrink checks).
    pub fn addresses(&self) -> std::collections::BTreeSet<IpNet> {
        self.entries
            .iter()
            .filter_map(|e| match &e.peer {
                Peer::Net(n) => Some(*n),
                Peer::Name(_) => None,
            })
            .collect()
    }
}

/// What makes two entries allow the same thing, wherever they come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EntryKey(
    Option<String>,
    Feature,
    Peer,
    Direction,
    Proto,
    Vec<PortRange>,
    Option<Offering>,
);

impl EntryKey {
    pub(crate) fn of(e: &CatalogEntry) -> EntryKey {
        EntryKey(
            e.region.clone(),
            e.feature,
            e.peer.clone(),
            e.direction,
            e.proto,
            e.ports.clone(),
            e.offering,
        )
    }
}
