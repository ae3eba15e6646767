//! The file as written: what serde reads, before any check. Values that need checking
//! keep their span, so an error can name the line.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{DnsSettings, Essentials};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) interfaces: Vec<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) regions: Vec<Spanned<String>>,
    pub(super) features: Option<Vec<Spanned<String>>>,
    pub(super) socket: Option<PathBuf>,
    pub(super) socket_group: Option<String>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) bpffs_dir: Option<PathBuf>,
    pub(super) catalog: Option<RawCatalog>,
    pub(super) proxy_regions: Option<Vec<Spanned<String>>>,
    pub(super) max_shrink: Option<Spanned<i64>>,
    pub(super) max_catalog_age: Option<Spanned<i64>>,
    pub(super) essentials: RawEssentials,
    pub(super) management: RawManagement,
    pub(super) allow: Vec<Spanned<RawAllow>>,
    pub(super) feature_ports: RawFeaturePorts,
    pub(super) log_collector: RawLogCollector,
    pub(super) metrics: Option<Spanned<String>>,
    pub(super) dns: RawDns,
    pub(super) drop_log_interval: Option<Spanned<u64>>,
    pub(super) state: RawState,
    pub(super) xdp_mode: Option<Spanned<String>>,
    pub(super) xdp_priority: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawState {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) timeouts: RawTimeouts,
    pub(super) liberal: Option<bool>,
    pub(super) max_flows: Option<Spanned<i64>>,
}

/// Seconds; each key falls back to its default.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTimeouts {
    pub(super) tcp_syn_sent: Option<Spanned<i64>>,
    pub(super) tcp_established: Option<Spanned<i64>>,
    pub(super) tcp_closing: Option<Spanned<i64>>,
    pub(super) tcp_close: Option<Spanned<i64>>,
    pub(super) udp: Option<Spanned<i64>>,
    pub(super) udp_stream: Option<Spanned<i64>>,
    pub(super) icmp: Option<Spanned<i64>>,
    pub(super) other: Option<Spanned<i64>>,
}

/// The longest idle timeout `[state.timeouts]` takes: 30 days.
pub(super) const MAX_FLOW_TIMEOUT: i64 = 30 * 86_400;

/// `catalog = "page.md"` or `catalog = ["page.md", "ServiceTags_Public.json"]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawCatalog {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl RawCatalog {
    pub(super) fn into_paths(self) -> Vec<PathBuf> {
        match self {
            RawCatalog::One(p) => vec![p],
            RawCatalog::Many(list) => list,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDns {
    pub(super) learn: bool,
    pub(super) ttl_floor: Spanned<u64>,
    pub(super) ttl_grace: Spanned<u64>,
    pub(super) ttl_max: Spanned<u64>,
    pub(super) max_learned: Spanned<u64>,
    pub(super) refresh: Spanned<u64>,
    pub(super) give_back: Option<Spanned<String>>,
}

impl Default for RawDns {
    fn default() -> Self {
        let d = DnsSettings::default();
        RawDns {
            learn: d.learn,
            ttl_floor: Spanned::new(0..0, d.ttl_floor),
            ttl_grace: Spanned::new(0..0, d.ttl_grace),
            ttl_max: Spanned::new(0..0, d.ttl_max),
            max_learned: Spanned::new(0..0, d.max_learned as u64),
            refresh: Spanned::new(0..0, d.refresh),
            give_back: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEssentials {
    pub(super) arp: bool,
    pub(super) ipv6_nd: bool,
    pub(super) icmp_errors: bool,
    pub(super) dhcp: bool,
    pub(super) dns: bool,
    pub(super) dns_servers: Vec<Spanned<String>>,
    pub(super) ethertypes: Vec<Spanned<RawEthertype>>,
}

impl Default for RawEssentials {
    fn default() -> Self {
        let d = Essentials::default();
        RawEssentials {
            arp: d.arp,
            ipv6_nd: d.ipv6_nd,
            icmp_errors: d.icmp_errors,
            dhcp: d.dhcp,
            dns: d.dns,
            dns_servers: Vec::new(),
            ethertypes: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawEthertype {
    Number(i64),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawManagement {
    pub(super) cidrs: Vec<Spanned<String>>,
    pub(super) ports: Option<Vec<Spanned<RawPort>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawPort {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    pub(super) cidr: Spanned<String>,
    pub(super) direction: Spanned<String>,
    #[serde(default)]
    pub(super) proto: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ports: Vec<Spanned<RawPort>>,
    #[serde(default)]
    pub(super) comment: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawFeaturePorts {
    #[serde(rename = "app-connector")]
    pub(super) app_connector: Option<Vec<Spanned<RawPort>>>,
    pub(super) dlp: Option<Vec<Spanned<RawPort>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLogCollector {
    pub(super) sources: Vec<Spanned<String>>,
    pub(super) ftp_passive_ports: Vec<Spanned<RawPort>>,
}
