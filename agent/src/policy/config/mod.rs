//! The TOML config (packaging/config.example.toml, `man 5 allowgate.toml`): parsed
//! strictly, validated, and every error one line that names the key and the line it is
//! on. `raw` is the file as serde reads it, `parse` each section's check, `settings`
//! the validated sections.

mod parse;
mod raw;
mod settings;
#[cfg(test)]
mod tests;

pub use parse::{host_resolvers, parse_cidr, parse_resolv_conf};
pub use settings::*;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::catalog::{Catalog, Feature, PortRange};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/allowgate/config.toml";
/// `max_shrink`: a new catalog may drop a quarter of the enforced addresses unasked.
pub const DEFAULT_MAX_SHRINK: u8 = 25;
/// `max_catalog_age`, in days: the service tags are published weekly, so a month is
/// four missed weeks.
pub const DEFAULT_MAX_CATALOG_AGE: u32 = 30;
/// The largest `max_catalog_age` (days): ten years.
pub const MAX_CATALOG_AGE: u32 = 3650;
pub const DEFAULT_SOCKET: &str = "/run/allowgate/control.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/allowgate";
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/allowgate";
/// Seconds between the log lines that sum up the drops.
pub const DEFAULT_DROP_LOG_INTERVAL: u64 = 10;
pub const DEFAULT_APP_CONNECTOR_PORT: u16 = 443;
pub const DEFAULT_DLP_PORT: u16 = 11344;
pub const DEFAULT_MANAGEMENT_PORT: u16 = 22;
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where systemd-resolved writes the upstream servers its 127.0.0.53 stub uses.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid { path: String, line: usize, message: String },
}

/// A validated config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub interfaces: Vec<String>,
    pub mode: Mode,
    /// Region ids as the catalog spells them.
    pub regions: Vec<String>,
    pub features: Vec<Feature>,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub state_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    /// Catalog sources (pages, service tag files, catalogs from `allowgate catalog
    /// import`), merged; empty: the built-in one. Relative paths are relative to the
    /// config file.
    pub catalog: Vec<PathBuf>,
    /// The proxy regions that enabling `proxy` for a data center allows; `None`:
    /// every proxy region of the data center's offering (the page's advice).
    pub proxy_regions: Option<Vec<String>>,
    /// The share (percent) of the enforced catalog addresses that `catalog apply` may
    /// remove without `--force`.
    pub max_shrink: u8,
    /// Days after which a catalog source counts as stale: the daemon warns once a day,
    /// `status` and `/metrics` say so, `catalog fetch` exits 5. 0: never.
    pub max_catalog_age: u32,
    pub essentials: Essentials,
    pub management: Management,
    pub allow: Vec<AllowEntry>,
    pub app_connector_ports: Vec<PortRange>,
    pub dlp_ports: Vec<PortRange>,
    pub log_collector: LogCollector,
    pub metrics: Option<SocketAddr>,
    pub dns: DnsSettings,
    /// Seconds between the daemon's log lines that sum up the drops (only when there
    /// were any); single drop events are logged at debug only.
    pub drop_log_interval: u64,
    pub state: StateSettings,
    pub xdp_mode: XdpPlacement,
    /// allowgate's run priority among a libxdp dispatcher's programs (lowest first).
    pub xdp_priority: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interfaces: Vec::new(),
            mode: Mode::Enforce,
            regions: Vec::new(),
            features: Feature::DEFAULT.to_vec(),
            socket: DEFAULT_SOCKET.into(),
            socket_group: None,
            state_dir: DEFAULT_STATE_DIR.into(),
            bpffs_dir: DEFAULT_BPFFS_DIR.into(),
            catalog: Vec::new(),
            proxy_regions: None,
            max_shrink: DEFAULT_MAX_SHRINK,
            max_catalog_age: DEFAULT_MAX_CATALOG_AGE,
            essentials: Essentials::default(),
            management: Management::default(),
            allow: Vec::new(),
            app_connector_ports: vec![PortRange::single(DEFAULT_APP_CONNECTOR_PORT)],
            dlp_ports: vec![PortRange::single(DEFAULT_DLP_PORT)],
            log_collector: LogCollector::default(),
            metrics: None,
            dns: DnsSettings::default(),
            drop_log_interval: DEFAULT_DROP_LOG_INTERVAL,
            state: StateSettings::default(),
            xdp_mode: XdpPlacement::Auto,
            xdp_priority: DEFAULT_XDP_PRIORITY,
        }
    }
}

/// The config at `path`, or at the default path when it exists, else the defaults;
/// with the catalog it names (its sources merged).
pub fn load_config(path: Option<&Path>) -> anyhow::Result<(Config, Catalog)> {
    use anyhow::Context as _;
    let path = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
    };
    let Some(path) = path else {
        return Ok((Config::default(), Catalog::builtin()));
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let catalog = crate::catalog::sources::load(&Config::catalog_paths(&text, dir))?;
    let mut config = Config::parse(&text, &path.display().to_string(), &catalog)?;
    config.catalog = config.catalog.iter().map(|p| dir.join(p)).collect();
    Ok((config, catalog))
}
