//! Selection + config -> policy (a list of rules) -> compiled tables, and the
//! reference verdict model. Pure: nothing here touches the kernel, so every rule of the
//! product is testable without one.

pub mod compile;
pub mod config;
pub mod explain;
pub mod model;
pub mod nft;

use std::{collections::BTreeMap, fmt, net::IpAddr};

use ipnet::IpNet;
use serde::Serialize;

pub use compile::{CompileError, Tables, compile_policy};
pub use config::{Config, ConfigError, Essentials, FlowTimeouts, Mode, StateMode, StateSettings};

use crate::catalog::{Catalog, Direction, Feature, Peer, PortRange, Proto};

/// Where a rule comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The page lists it; which regions and features say so is in `Rule::listed_by`.
    Catalog,
    /// An essential of the host (DNS to its resolvers).
    Essentials,
    /// The operator's management access.
    Management,
    /// An `[[allow]]` entry of the config.
    Allow,
    /// Operator settings of a feature (the log collector's senders).
    Config,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Catalog => "catalog",
            Source::Essentials => "essentials",
            Source::Management => "management",
            Source::Allow => "allow",
            Source::Config => "config",
        }
    }
}

/// One (region, feature) of the catalog that lists a rule, and where: the page line,
/// or the service tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ListedBy {
    pub region: String,
    pub feature: Feature,
    pub line: usize,
    /// `page.md (ms.date 04/04/2024) line 57`, `service tag X changeNumber 7 (file)`.
    pub source: String,
}

/// One allow rule: packets between this host and `peer`, opened in `direction`, of
/// `proto` to `ports` (empty: every port), plus the reflexive return path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub peer: Peer,
    pub direction: Direction,
    pub proto: Proto,
    pub ports: Vec<PortRange>,
    pub source: Source,
    /// For catalog rules: every enabled (region, feature) that lists it.
    pub listed_by: Vec<ListedBy>,
    /// What the operator wrote next to an `[[allow]]` entry, or which key made it.
    pub note: Option<String>,
}

impl Rule {
    pub fn net(&self) -> Option<IpNet> {
        match &self.peer {
            Peer::Net(n) => Some(*n),
            Peer::Name(_) => None,
        }
    }

    pub fn regions(&self) -> Vec<&str> {
        let mut r: Vec<&str> = self.listed_by.iter().map(|l| l.region.as_str()).collect();
        r.sort();
        r.dedup();
        r
    }

    pub fn features(&self) -> Vec<Feature> {
        let mut f: Vec<Feature> = self.listed_by.iter().map(|l| l.feature).collect();
        f.sort();
        f.dedup();
        f
    }

    /// `tcp/443`, `tcp/8000-8100,9000`, `udp/*`, `icmp`, `any`.
    pub fn ports_label(&self) -> String {
        match self.proto {
            Proto::Icmp | Proto::Any => self.proto.to_string(),
            _ if self.ports.is_empty() => format!("{}/*", self.proto),
            _ => format!(
                "{}/{}",
                self.proto,
                self.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")
            ),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.direction, self.peer, self.ports_label())
    }
}

/// The regions and features an operator picked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub regions: Vec<String>,
    pub features: Vec<Feature>,
}

/// Everything the data plane enforces, as rules. Compile it with `compile_policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub selection: Selection,
    pub essentials: Essentials,
    /// The resolvers the `dns` essential allows (resolved from /etc/resolv.conf when
    /// the config names none).
    pub dns_servers: Vec<IpAddr>,
    pub rules: Vec<Rule>,
    /// Connection tracking: whether return paths need a tracked flow, and its timeouts.
    pub state: StateSettings,
}

/// What makes two rules the same rule (then listed by several region, feature pairs).
type RuleKey = (Source, Peer, Direction, Proto, Vec<PortRange>, Option<String>);

impl Policy {
    /// Builds the rules of `selection` from `catalog` and `config`. `dns_servers` are
    /// the resolvers to allow when the `dns` essential is on.
    pub fn build(catalog: &Catalog, selection: &Selection, config: &Config, dns_servers: &[IpAddr]) -> Policy {
        // Rules that say the same thing are one rule listed by several (region, feature).
        let mut merged: BTreeMap<RuleKey, Vec<ListedBy>> = BTreeMap::new();
        let mut add =
            |source: Source, peer: Peer, direction, proto, ports: Vec<PortRange>, note, by: Option<ListedBy>| {
                let listed = merged.entry((source, peer, direction, proto, ports, note)).or_default();
                if let Some(by) = by
                    && !listed.contains(&by)
                {
                    listed.push(by);
                }
            };

        for region in &selection.regions {
            for &feature in &selection.features {
                for (listing, entry) in catalog.selected(region, feature, config.proxy_regions.as_deref()) {
                    // The page's default ports for features that it says can be changed.
                    let ports = match feature {
                        crate::catalog::Feature::AppConnector => config.app_connector_ports.clone(),
                        crate::catalog::Feature::Dlp => config.dlp_ports.clone(),
                        _ => entry.ports.clone(),
                    };
                    let by = ListedBy {
                        region: listing.to_string(),
                        feature,
                        line: entry.line,
                        source: entry.cite(catalog),
                    };
                    add(
                        Source::Catalog,
                        entry.peer.clone(),
                        entry.direction,
                        entry.proto,
                        ports,
                        None,
                        Some(by),
                    );
                }
            }
        }

        if selection.features.contains(&Feature::LogCollector) {
            // FTP control, its passive data ports, and syslog, from the senders the
            // operator names: the page leaves them to the operator.
            for &source in &config.log_collector.sources {
                let peer = Peer::Net(source);
                let note = Some("log_collector.sources".to_string());
                add(
                    Source::Config,
                    peer.clone(),
                    Direction::Ingress,
                    Proto::Tcp,
                    vec![PortRange::single(21)],
                    note.clone(),
                    None,
                );
                if !config.log_collector.ftp_passive_ports.is_empty() {
                    let ports = config.log_collector.ftp_passive_ports.clone();
                    add(
                        Source::Config,
                        peer.clone(),
                        Direction::Ingress,
                        Proto::Tcp,
                        ports,
                        note.clone(),
                        None,
                    );
                }
                add(
                    Source::Config,
                    peer,
                    Direction::Ingress,
                    Proto::Udp,
                    vec![PortRange::single(514)],
                    note,
                    None,
                );
            }
        }

        for &cidr in &config.management.cidrs {
            let ports = config.management.ports.clone();
            add(
                Source::Management,
                Peer::Net(cidr),
                Direction::Ingress,
                Proto::Tcp,
                ports,
                None,
                None,
            );
        }

        for allow in &config.allow {
            let note = Some(match &allow.comment {
                Some(c) => format!("line {}: {c}", allow.line),
                None => format!("line {}", allow.line),
            });
            add(
                Source::Allow,
                Peer::Net(allow.cidr),
                allow.direction,
                allow.proto,
                allow.ports.clone(),
                note,
                None,
            );
        }

        let dns_servers = if config.essentials.dns {
            dns_servers.to_vec()
        } else {
            Vec::new()
        };
        for &server in &dns_servers {
            for proto in [Proto::Udp, Proto::Tcp] {
                let peer = Peer::Net(IpNet::from(server));
                add(
                    Source::Essentials,
                    peer,
                    Direction::Egress,
                    proto,
                    vec![PortRange::single(53)],
                    Some("dns".into()),
                    None,
                );
            }
        }

        let rules = merged
            .into_iter()
            .map(|((source, peer, direction, proto, ports, note), mut listed_by)| {
                listed_by.sort();
                Rule {
                    peer,
                    direction,
                    proto,
                    ports,
                    source,
                    listed_by,
                    note,
                }
            })
            .collect();

        Policy {
            mode: config.mode,
            selection: selection.clone(),
            essentials: config.essentials.clone(),
            dns_servers,
            rules,
            state: config.state,
        }
    }

    /// The distinct addresses and prefixes the catalog's rules allow: what `catalog
    /// apply` compares to refuse a catalog that shrinks too much.
    pub fn catalog_nets(&self) -> std::collections::BTreeSet<IpNet> {
        self.rules
            .iter()
            .filter(|r| r.source == Source::Catalog)
            .filter_map(Rule::net)
            .collect()
    }

    /// The rules that come from the config rather than the catalog (management,
    /// essentials, `[[allow]]`, feature settings).
    pub fn config_rules(&self) -> Vec<&Rule> {
        self.rules.iter().filter(|r| r.source != Source::Catalog).collect()
    }

    /// Rules on addresses (the ones the tables can hold).
    pub fn net_rules(&self) -> impl Iterator<Item = (IpNet, &Rule)> {
        self.rules.iter().filter_map(|r| r.net().map(|n| (n, r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eu1_portal() -> Policy {
        let catalog = Catalog::builtin();
        let selection = Selection {
            regions: vec!["eu1".into()],
            features: vec![Feature::Portal],
        };
        Policy::build(&catalog, &selection, &Config::default(), &[])
    }

    #[test]
    fn a_catalog_rule_says_who_lists_it() {
        let policy = eu1_portal();
        let rule = policy
            .rules
            .iter()
            .find(|r| r.peer == Peer::Net("13.80.125.22/32".parse().unwrap()))
            .expect("13.80.125.22 is an EU1 portal address");
        assert_eq!(rule.regions(), ["eu1"]);
        assert_eq!(rule.features(), [Feature::Portal]);
        assert_eq!(rule.direction, Direction::Egress);
        assert_eq!(rule.ports_label(), "tcp/443");
    }

    #[test]
    fn a_shared_address_is_one_rule_listed_by_every_region() {
        let catalog = Catalog::builtin();
        let regions = ["us1", "us2", "us3", "eu1", "eu2"].map(String::from).to_vec();
        let selection = Selection {
            regions,
            features: vec![Feature::Siem],
        };
        let policy = Policy::build(&catalog, &selection, &Config::default(), &[]);
        let shared: Vec<_> = policy
            .rules
            .iter()
            .filter(|r| r.peer == Peer::Net("13.80.125.22/32".parse().unwrap()))
            .collect();
        assert_eq!(shared.len(), 1, "{shared:?}");
        assert_eq!(shared[0].regions(), ["eu1", "eu2", "us1", "us2", "us3"]);
    }

    #[test]
    fn configured_ports_replace_the_page_defaults() {
        let catalog = Catalog::builtin();
        let config = Config {
            dlp_ports: vec![PortRange::single(1344)],
            ..Config::default()
        };
        let selection = Selection {
            regions: vec!["us3".into()],
            features: vec![Feature::Dlp],
        };
        let policy = Policy::build(&catalog, &selection, &config, &[]);
        assert!(!policy.rules.is_empty());
        assert!(
            policy
                .rules
                .iter()
                .all(|r| r.ports == [PortRange::single(1344)] && r.direction == Direction::Ingress)
        );
    }

    #[test]
    fn essentials_management_and_allow_entries_are_rules() {
        let catalog = Catalog::builtin();
        let mut config = Config::default();
        config.management.cidrs = vec!["192.0.2.0/24".parse().unwrap()];
        let dns: IpAddr = "198.51.100.53".parse().unwrap();
        let policy = Policy::build(&catalog, &Selection::default(), &config, &[dns]);
        let labels: Vec<String> = policy
            .rules
            .iter()
            .map(|r| format!("{} {r}", r.source.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                "essentials egress 198.51.100.53/32 tcp/53",
                "essentials egress 198.51.100.53/32 udp/53",
                "management ingress 192.0.2.0/24 tcp/22",
            ]
        );
        config.essentials.dns = false;
        let policy = Policy::build(&catalog, &Selection::default(), &config, &[dns]);
        assert!(policy.rules.iter().all(|r| r.source != Source::Essentials));
    }
}
