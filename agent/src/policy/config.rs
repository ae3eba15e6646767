//! The TOML config (packaging/config.example.toml, `man 5 allowgate.toml`): parsed strictly, validated, and every error one
//! line that names the key and the line it is on.

use std::{
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::catalog::{Catalog, Direction, Feature, PortRange, Proto};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Monitor,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// The names above, shown as they are written in the config, the state file and `status`.
macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Mode, XdpMode, TcMode, XdpAttach, GiveBack);

/// How allowgate's XDP program sits on an interface, as the kernel reports it: these
/// names persist in the state file and travel in `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver.
    Native,
    /// In the kernel's stack, for drivers without XDP.
    Generic,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// Whose XDP hook allowgate's program is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttach {
    #[default]
    /// Alone, through a bpf_link of its own.
    Link,
    /// As one program of a libxdp dispatcher.
    Dispatcher,
}

impl XdpAttach {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpAttach::Link => "link",
            XdpAttach::Dispatcher => "dispatcher",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcMode {
    Tcx,
    Clsact,
}

impl TcMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TcMode::Tcx => "tcx",
            TcMode::Clsact => "clsact",
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "monitor" => Ok(Mode::Monitor),
            _ => Err(format!("unknown mode `{s}`: use `enforce` or `monitor`")),
        }
    }
}

/// The host's essentials (README: "Semantics"), each on unless turned off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Essentials {
    pub arp: bool,
    pub ipv6_nd: bool,
    pub icmp_errors: bool,
    pub dhcp: bool,
    pub dns: bool,
    /// Empty: the nameservers of /etc/resolv.conf, looked up when the policy is built.
    pub dns_servers: Vec<IpAddr>,
    pub ethertypes: Vec<u16>,
}

impl Default for Essentials {
    fn default() -> Self {
        Essentials {
            arp: true,
            ipv6_nd: true,
            icmp_errors: true,
            dhcp: true,
            dns: true,
            dns_servers: Vec::new(),
            ethertypes: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Management {
    pub cidrs: Vec<IpNet>,
    pub ports: Vec<PortRange>,
}

impl Default for Management {
    fn default() -> Self {
        Management {
            cidrs: Vec::new(),
            ports: vec![PortRange::single(DEFAULT_MANAGEMENT_PORT)],
        }
    }
}

/// An operator's own `[[allow]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowEntry {
    pub cidr: IpNet,
    pub direction: Direction,
    pub proto: Proto,
    /// Empty: every port.
    pub ports: Vec<PortRange>,
    pub comment: Option<String>,
    /// The config line of the entry, for `show` and `check`.
    pub line: usize,
}

/// Settings of the log collector feature that the page leaves to the operator.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LogCollector {
    /// Who may send FTP and syslog in.
    pub sources: Vec<IpNet>,
    /// The FTP server's passive data ports.
    pub ftp_passive_ports: Vec<PortRange>,
}

/// How the catalog's DNS names are learned and resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Learn addresses from the resolvers' answers and resolve the explicit names.
    pub learn: bool,
    /// A learned address lives for the answer's TTL clamped to [floor, max], plus grace.
    pub ttl_floor: u64,
    pub ttl_grace: u64,
    pub ttl_max: u64,
    /// Learned addresses held at most; past it new ones are refused and counted.
    pub max_learned: usize,
    /// Seconds between the daemon's own queries for the explicit names.
    pub refresh: u64,
    /// How a held answer goes back to the stack (`auto`: the first path proved to work).
    pub give_back: GiveBack,
}

/// `[dns] give_back`: how held answers go back to the stack (docs/dns-names.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GiveBack {
    /// Live frames where the kernel allows them, else loopback, else none: the first
    /// path the daemon proves to work at start and on reload.
    #[default]
    Auto,
    LiveFrames,
    Loopback,
    /// Hold nothing: answers pass at once and are learned from a copy.
    None,
}

impl GiveBack {
    pub const NAMES: [&str; 4] = ["auto", "live-frames", "loopback", "none"];

    pub fn as_str(self) -> &'static str {
        match self {
            GiveBack::Auto => "auto",
            GiveBack::LiveFrames => "live-frames",
            GiveBack::Loopback => "loopback",
            GiveBack::None => "none",
        }
    }
}

/// How held answers go back to the stack now: the path the daemon proved, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GiveBackPath {
    /// BPF_PROG_TEST_RUN of a do-nothing XDP program with BPF_F_TEST_XDP_LIVE_FRAMES:
    /// the frame enters the stack at the interface it came in on.
    LiveFrames,
    /// A raw IP socket sends the datagram to the host's own address, through loopback.
    Loopback,
    /// Nothing is held: answers pass at once, the learner reads a copy.
    #[default]
    None,
}

impl GiveBackPath {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveBackPath::LiveFrames => "live-frames",
            GiveBackPath::Loopback => "loopback",
            GiveBackPath::None => "none",
        }
    }
}

impl std::fmt::Display for GiveBackPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            learn: true,
            ttl_floor: 30,
            ttl_grace: 10,
            ttl_max: 86_400,
            max_learned: 4096,
            refresh: 30,
            give_back: GiveBack::Auto,
        }
    }
}

/// Whether return paths need a tracked flow (docs/state.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateMode {
    /// A return path passes only for a flow this host opened or an ingress rule let in.
    #[default]
    Stateful,
    /// A return path passes on the rule alone (ports and flags), as before tracking:
    /// for asymmetric routing, where a flow's two ways cross different hosts.
    Stateless,
}

impl std::fmt::Display for StateMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateMode::Stateful => "stateful",
            StateMode::Stateless => "stateless",
        })
    }
}

/// The idle timeout, in seconds, of each flow state: conntrack's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub tcp_syn_sent: u32,
    pub tcp_established: u32,
    pub tcp_closing: u32,
    pub tcp_close: u32,
    pub udp: u32,
    pub udp_stream: u32,
    pub icmp: u32,
    pub other: u32,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        FlowTimeouts {
            tcp_syn_sent: 120,
            tcp_established: 432_000,
            tcp_closing: 120,
            tcp_close: 10,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            other: 600,
        }
    }
}

impl FlowTimeouts {
    /// Indexed by the data plane's flow states (`allowgate_ebpf::FLOW_*`).
    pub fn by_state(&self) -> [u32; allowgate_ebpf::FLOW_STATES] {
        [
            self.tcp_syn_sent,
            self.tcp_established,
            self.tcp_closing,
            self.tcp_close,
            self.udp,
            self.udp_stream,
            self.icmp,
            self.other,
        ]
    }
}

/// `[state]`: connection tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSettings {
    pub mode: StateMode,
    pub timeouts: FlowTimeouts,
    /// A TCP segment outside its flow's window passes (still changing nothing) instead
    /// of dropping as `out-of-window`: conntrack's `nf_conntrack_tcp_be_liberal`.
    pub liberal: bool,
    /// Assured flows each family's table holds; the unassured tables are sized from it.
    pub max_flows: u32,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            mode: StateMode::default(),
            timeouts: FlowTimeouts::default(),
            liberal: false,
            max_flows: default_max_flows(),
        }
    }
}

/// The least and most `[state] max_flows` takes. The floor is the table's size before
/// it could be set; the ceiling keeps a mistyped value from taking gigabytes (each
/// assured flow costs about 150 bytes per family, and an unassured way half as much).
pub const MIN_MAX_FLOWS: u32 = 65_536;
pub const MAX_MAX_FLOWS: u32 = 16_777_216;

/// `max_flows` when the config says nothing: what conntrack makes `nf_conntrack_max`
/// for this host's memory (262,144 above 4 GiB, 65,536 above 1 GiB, less below), and
/// never below the floor.
pub fn default_max_flows() -> u32 {
    let total = rustix::system::sysinfo();
    max_flows_for_memory(u64::from(total.mem_unit).max(1) * total.totalram)
}

/// nf_conntrack_init_start's sizing: a bucket per 16 KiB of memory (8-byte buckets),
/// capped at 262,144 above 4 GiB and 65,536 above 1 GiB.
pub fn max_flows_for_memory(bytes: u64) -> u32 {
    let buckets = if bytes > 4 << 30 {
        262_144
    } else if bytes > 1 << 30 {
        65_536
    } else {
        (bytes / 16_384 / 8).max(1024) as u32
    };
    buckets.max(MIN_MAX_FLOWS)
}

/// How the XDP program goes on an interface (`xdp_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpPlacement {
    /// Into the libxdp dispatcher when one is there, else alone (native, else generic).
    #[default]
    Auto,
    /// Alone, in the driver.
    Native,
    /// Alone, in the kernel's stack.
    Generic,
    /// As one program of a libxdp dispatcher: the one there, or a new one.
    Dispatcher,
}

impl XdpPlacement {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpPlacement::Auto => "auto",
            XdpPlacement::Native => "native",
            XdpPlacement::Generic => "generic",
            XdpPlacement::Dispatcher => "dispatcher",
        }
    }
}

/// allowgate's run priority in a libxdp dispatcher when none is configured: lowest,
/// so that it runs first (libxdp's default is 50, xdp-filter's 10).
pub const DEFAULT_XDP_PRIORITY: u32 = 0;

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

// The file as written. Values that need checking keep their span so an error can
// name the line.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    interfaces: Vec<Spanned<String>>,
    mode: Option<Spanned<String>>,
    regions: Vec<Spanned<String>>,
    features: Option<Vec<Spanned<String>>>,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    state_dir: Option<PathBuf>,
    bpffs_dir: Option<PathBuf>,
    catalog: Option<RawCatalog>,
    proxy_regions: Option<Vec<Spanned<String>>>,
    max_shrink: Option<Spanned<i64>>,
    max_catalog_age: Option<Spanned<i64>>,
    essentials: RawEssentials,
    management: RawManagement,
    allow: Vec<Spanned<RawAllow>>,
    feature_ports: RawFeaturePorts,
    log_collector: RawLogCollector,
    metrics: Option<Spanned<String>>,
    dns: RawDns,
    drop_log_interval: Option<Spanned<u64>>,
    state: RawState,
    xdp_mode: Option<Spanned<String>>,
    xdp_priority: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawState {
    mode: Option<Spanned<String>>,
    timeouts: RawTimeouts,
    liberal: Option<bool>,
    max_flows: Option<Spanned<i64>>,
}

/// Seconds; each key falls back to its default.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    tcp_syn_sent: Option<Spanned<i64>>,
    tcp_established: Option<Spanned<i64>>,
    tcp_closing: Option<Spanned<i64>>,
    tcp_close: Option<Spanned<i64>>,
    udp: Option<Spanned<i64>>,
    udp_stream: Option<Spanned<i64>>,
    icmp: Option<Spanned<i64>>,
    other: Option<Spanned<i64>>,
}

/// The longest idle timeout `[state.timeouts]` takes: 30 days.
const MAX_FLOW_TIMEOUT: i64 = 30 * 86_400;

/// `catalog = "page.md"` or `catalog = ["page.md", "ServiceTags_Public.json"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCatalog {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl RawCatalog {
    fn into_paths(self) -> Vec<PathBuf> {
        match self {
            RawCatalog::One(p) => vec![p],
            RawCatalog::Many(list) => list,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDns {
    learn: bool,
    ttl_floor: Spanned<u64>,
    ttl_grace: Spanned<u64>,
    ttl_max: Spanned<u64>,
    max_learned: Spanned<u64>,
    refresh: Spanned<u64>,
    give_back: Option<Spanned<String>>,
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
struct RawEssentials {
    arp: bool,
    ipv6_nd: bool,
    icmp_errors: bool,
    dhcp: bool,
    dns: bool,
    dns_servers: Vec<Spanned<String>>,
    ethertypes: Vec<Spanned<RawEthertype>>,
}

impl Default for RawEssentials {
    fn default() -> Self {
        RawEssentials {
            arp: true,
            ipv6_nd: true,
            icmp_errors: true,
            dhcp: true,
            dns: true,
            dns_servers: Vec::new(),
            ethertypes: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawEthertype {
    Number(i64),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawManagement {
    cidrs: Vec<Spanned<String>>,
    ports: Option<Vec<Spanned<RawPort>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    cidr: Spanned<String>,
    direction: Spanned<String>,
    #[serde(default)]
    proto: Option<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<RawPort>>,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFeaturePorts {
    #[serde(rename = "app-connector")]
    app_connector: Option<Vec<Spanned<RawPort>>>,
    dlp: Option<Vec<Spanned<RawPort>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLogCollector {
    sources: Vec<Spanned<String>>,
    ftp_passive_ports: Vec<Spanned<RawPort>>,
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

/// Turns byte offsets into 1-based line numbers for one file. The line starts are
/// found once: counting newlines per lookup made parsing quadratic in `[[allow]]`
/// entries (100k entries took minutes).
struct Lines<'a> {
    path: &'a str,
    /// Byte offset of each line after the first.
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(path: &'a str, text: &str) -> Lines<'a> {
        let starts = text
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Lines { path, starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset) + 1
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            line: self.line_of(span.start),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads and validates the config at `path` against `catalog`'s regions.
    pub fn load(path: &Path, catalog: &Catalog) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string(), catalog)
    }

    /// The catalog sources a config names, read before the full parse so regions can
    /// be checked against the right catalog. Relative paths are made relative to
    /// `config_dir`. A value of the wrong type names nothing here; the full parse
    /// reports it.
    pub fn catalog_paths(text: &str, config_dir: &Path) -> Vec<PathBuf> {
        let Ok(table) = toml::from_str::<toml::Table>(text) else {
            return Vec::new();
        };
        let paths: Vec<PathBuf> = match table.get("catalog") {
            Some(toml::Value::String(s)) => vec![PathBuf::from(s)],
            Some(toml::Value::Array(list)) => list.iter().filter_map(|v| v.as_str()).map(PathBuf::from).collect(),
            _ => Vec::new(),
        };
        paths.into_iter().map(|p| config_dir.join(p)).collect()
    }

    /// `max_shrink` and `max_catalog_age` of a config, read on their own (for `catalog
    /// fetch`, which must work when the catalog the config names is broken); a key that
    /// is missing or not valid gives its default here, and the full parse reports it.
    pub fn catalog_limits(text: &str) -> (u8, u32) {
        let table = toml::from_str::<toml::Table>(text).unwrap_or_default();
        let shrink = table
            .get("max_shrink")
            .and_then(toml::Value::as_integer)
            .and_then(|v| u8::try_from(v).ok())
            .filter(|p| *p <= 100)
            .unwrap_or(DEFAULT_MAX_SHRINK);
        let age = table
            .get("max_catalog_age")
            .and_then(toml::Value::as_integer)
            .and_then(parse_catalog_age)
            .unwrap_or(DEFAULT_MAX_CATALOG_AGE);
        (shrink, age)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &str, catalog: &Catalog) -> Result<Config, ConfigError> {
        let lines = Lines::new(path, text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| lines.line_of(s.start)).unwrap_or(1);
            ConfigError::Invalid {
                path: path.to_string(),
                line,
                message: one_line(e.message()),
            }
        })?;
        let defaults = Config::default();
        // One function per section, checked in a fixed order: with several mistakes, the
        // one named is always the same.
        Ok(Config {
            interfaces: parse_interfaces(&raw.interfaces, &lines)?,
            mode: match &raw.mode {
                None => defaults.mode,
                Some(m) => m
                    .get_ref()
                    .parse()
                    .map_err(|e: String| lines.error(m.span(), format!("mode: {e}")))?,
            },
            regions: parse_regions(&raw.regions, catalog, &lines)?,
            socket: raw.socket.unwrap_or(defaults.socket),
            socket_group: raw.socket_group,
            state_dir: raw.state_dir.unwrap_or(defaults.state_dir),
            bpffs_dir: raw.bpffs_dir.unwrap_or(defaults.bpffs_dir),
            catalog: raw.catalog.map(RawCatalog::into_paths).unwrap_or_default(),
            proxy_regions: match &raw.proxy_regions {
                None => None,
                Some(list) => Some(parse_proxy_regions(list, catalog, &lines)?),
            },
            max_shrink: match &raw.max_shrink {
                None => defaults.max_shrink,
                Some(v) => parse_max_shrink(v, &lines)?,
            },
            max_catalog_age: match &raw.max_catalog_age {
                None => defaults.max_catalog_age,
                Some(v) => parse_catalog_age(*v.get_ref()).ok_or_else(|| {
                    lines.error(
                        v.span(),
                        format!(
                            "max_catalog_age: {} is not a number of days (0, never, to {MAX_CATALOG_AGE})",
                            v.get_ref()
                        ),
                    )
                })?,
            },
            features: match &raw.features {
                None => defaults.features.clone(),
                Some(list) => parse_features(list, &lines)?,
            },
            essentials: parse_essentials(&raw.essentials, &lines)?,
            management: Management {
                cidrs: parse_cidrs(&raw.management.cidrs, "management.cidrs", &lines)?,
                ports: match &raw.management.ports {
                    None => defaults.management.ports.clone(),
                    Some(p) => parse_ports(p, "management.ports", &lines)?,
                },
            },
            allow: raw
                .allow
                .iter()
                .enumerate()
                .map(|(i, entry)| parse_allow(entry, i, &lines))
                .collect::<Result<_, _>>()?,
            app_connector_ports: match &raw.feature_ports.app_connector {
                None => defaults.app_connector_ports.clone(),
                Some(p) => parse_ports(p, "feature_ports.app-connector", &lines)?,
            },
            dlp_ports: match &raw.feature_ports.dlp {
                None => defaults.dlp_ports.clone(),
                Some(p) => parse_ports(p, "feature_ports.dlp", &lines)?,
            },
            log_collector: LogCollector {
                sources: parse_cidrs(&raw.log_collector.sources, "log_collector.sources", &lines)?,
                ftp_passive_ports: parse_ports(
                    &raw.log_collector.ftp_passive_ports,
                    "log_collector.ftp_passive_ports",
                    &lines,
                )?,
            },
            metrics: match &raw.metrics {
                None => None,
                Some(m) => Some(parse_metrics(m, &lines)?),
            },
            drop_log_interval: match &raw.drop_log_interval {
                None => DEFAULT_DROP_LOG_INTERVAL,
                Some(v) if (1..=86_400).contains(v.get_ref()) => *v.get_ref(),
                Some(v) => return Err(lines.error(v.span(), "drop_log_interval: 1 to 86400 seconds")),
            },
            dns: parse_dns(&raw.dns, &lines)?,
            state: parse_state(&raw.state, &lines)?,
            xdp_mode: parse_xdp_mode(&raw.xdp_mode, &lines)?,
            xdp_priority: match &raw.xdp_priority {
                None => DEFAULT_XDP_PRIORITY,
                Some(p) => u32::try_from(*p.get_ref())
                    .map_err(|_| lines.error(p.span(), "xdp_priority: 0 to 4294967295 (lowest runs first)"))?,
            },
        })
    }

    /// The DNS servers the `dns` essential allows: the configured ones, else the host's.
    pub fn dns_servers(&self) -> Vec<IpAddr> {
        if !self.essentials.dns_servers.is_empty() {
            return self.essentials.dns_servers.clone();
        }
        host_resolvers(Path::new(RESOLV_CONF), Path::new(RESOLVED_UPSTREAM))
    }
}

/// `interfaces`: names the kernel can take, each once.
fn parse_interfaces(raw: &[Spanned<String>], lines: &Lines) -> Result<Vec<String>, ConfigError> {
    let mut interfaces = Vec::new();
    for name in raw {
        let n = name.get_ref();
        if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', ' ']) {
            return Err(lines.error(name.span(), format!("interfaces: `{n}` is not an interface name")));
        }
        if interfaces.contains(n) {
            return Err(lines.error(name.span(), format!("interfaces: `{n}` is listed twice")));
        }
        interfaces.push(n.clone());
    }
    Ok(interfaces)
}

/// `regions`: each a region of the catalog, kept as the catalog spells it.
fn parse_regions(raw: &[Spanned<String>], catalog: &Catalog, lines: &Lines) -> Result<Vec<String>, ConfigError> {
    let mut regions = Vec::new();
    for r in raw {
        let region = catalog
            .region(r.get_ref())
            .map_err(|e| lines.error(r.span(), format!("regions: {e}")))?;
        if !regions.contains(&region.id) {
            regions.push(region.id.clone());
        }
    }
    Ok(regions)
}

/// `proxy_regions`: Azure regions of the catalog only.
fn parse_proxy_regions(raw: &[Spanned<String>], catalog: &Catalog, lines: &Lines) -> Result<Vec<String>, ConfigError> {
    let mut ids = Vec::new();
    for r in raw {
        let region = catalog
            .region(r.get_ref())
            .map_err(|e| lines.error(r.span(), format!("proxy_regions: {e}")))?;
        if region.kind != crate::catalog::RegionKind::AzureRegion {
            return Err(lines.error(
                r.span(),
                format!(
                    "proxy_regions: `{}` is not a proxy region (an Azure region such as `westeurope`); `allowgate regions` lists them",
                    r.get_ref()
                ),
            ));
        }
        if !ids.contains(&region.id) {
            ids.push(region.id.clone());
        }
    }
    Ok(ids)
}

fn parse_max_shrink(v: &Spanned<i64>, lines: &Lines) -> Result<u8, ConfigError> {
    u8::try_from(*v.get_ref()).ok().filter(|p| *p <= 100).ok_or_else(|| {
        lines.error(
            v.span(),
            format!("max_shrink: {} is not a percentage (0 to 100)", v.get_ref()),
        )
    })
}

fn parse_features(list: &[Spanned<String>], lines: &Lines) -> Result<Vec<Feature>, ConfigError> {
    let mut features = Vec::new();
    for f in list {
        let feature: Feature = f
            .get_ref()
            .parse()
            .map_err(|e| lines.error(f.span(), format!("features: {e}")))?;
        if !features.contains(&feature) {
            features.push(feature);
        }
    }
    Ok(features)
}

/// `[essentials]`: the switches, the resolvers the `dns` essential allows and the
/// extra ethertypes.
fn parse_essentials(essentials: &RawEssentials, lines: &Lines) -> Result<Essentials, ConfigError> {
    let mut dns_servers = Vec::new();
    for s in &essentials.dns_servers {
        let ip: IpAddr = s.get_ref().trim().parse().map_err(|_| {
            lines.error(
                s.span(),
                format!("essentials.dns_servers: `{}` is not an IP address", s.get_ref()),
            )
        })?;
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Err(lines.error(
                s.span(),
                format!(
                    "essentials.dns_servers: `{}` is an IPv4-mapped IPv6 address, which never appears on the wire here: write {v4}",
                    s.get_ref()
                ),
            ));
        }
        dns_servers.push(ip);
    }
    let mut ethertypes = Vec::new();
    for e in &essentials.ethertypes {
        let value =
            parse_ethertype(e.get_ref()).map_err(|m| lines.error(e.span(), format!("essentials.ethertypes: {m}")))?;
        if !ethertypes.contains(&value) {
            ethertypes.push(value);
        }
    }
    if ethertypes.len() > allowgate_ebpf::MAX_ETHERTYPES {
        let span = essentials.ethertypes[allowgate_ebpf::MAX_ETHERTYPES].span();
        return Err(lines.error(
            span,
            format!(
                "essentials.ethertypes: at most {} ethertypes can be listed",
                allowgate_ebpf::MAX_ETHERTYPES
            ),
        ));
    }
    Ok(Essentials {
        arp: essentials.arp,
        ipv6_nd: essentials.ipv6_nd,
        icmp_errors: essentials.icmp_errors,
        dhcp: essentials.dhcp,
        dns: essentials.dns,
        dns_servers,
        ethertypes,
    })
}

fn parse_metrics(m: &Spanned<String>, lines: &Lines) -> Result<SocketAddr, ConfigError> {
    m.get_ref().parse::<SocketAddr>().map_err(|_| {
        lines.error(
            m.span(),
            format!(
                "metrics: `{}` is not an address:port such as 127.0.0.1:9464",
                m.get_ref()
            ),
        )
    })
}

/// `[dns]`: the learner's TTL bounds, its table size and the refresh interval.
fn parse_xdp_mode(raw: &Option<Spanned<String>>, lines: &Lines) -> Result<XdpPlacement, ConfigError> {
    let Some(m) = raw else {
        return Ok(XdpPlacement::Auto);
    };
    Ok(match m.get_ref().as_str() {
        "auto" => XdpPlacement::Auto,
        "native" => XdpPlacement::Native,
        "generic" => XdpPlacement::Generic,
        "dispatcher" => XdpPlacement::Dispatcher,
        other => {
            return Err(lines.error(
                m.span(),
                format!("xdp_mode: `{other}` is none of auto, native, generic, dispatcher"),
            ));
        }
    })
}

fn parse_dns(raw_dns: &RawDns, lines: &Lines) -> Result<DnsSettings, ConfigError> {
    if raw_dns.ttl_floor.get_ref() > raw_dns.ttl_max.get_ref() {
        return Err(lines.error(raw_dns.ttl_floor.span(), "dns.ttl_floor: larger than dns.ttl_max"));
    }
    let max_learned = *raw_dns.max_learned.get_ref();
    if max_learned == 0 || max_learned > u64::from(allowgate_ebpf::DYN_MAX) {
        return Err(lines.error(
            raw_dns.max_learned.span(),
            format!(
                "dns.max_learned: 1 to {} (the size of the data plane's table)",
                allowgate_ebpf::DYN_MAX
            ),
        ));
    }
    if *raw_dns.refresh.get_ref() == 0 {
        return Err(lines.error(raw_dns.refresh.span(), "dns.refresh: at least 1 second"));
    }
    let give_back = match &raw_dns.give_back {
        None => GiveBack::default(),
        Some(v) => match GiveBack::NAMES.iter().position(|n| *n == v.get_ref().as_str()) {
            Some(0) => GiveBack::Auto,
            Some(1) => GiveBack::LiveFrames,
            Some(2) => GiveBack::Loopback,
            Some(_) => GiveBack::None,
            None => {
                return Err(lines.error(
                    v.span(),
                    format!(
                        "dns.give_back: unknown path `{}`: use {}",
                        v.get_ref(),
                        GiveBack::NAMES.map(|n| format!("`{n}`")).join(", ")
                    ),
                ));
            }
        },
    };
    Ok(DnsSettings {
        learn: raw_dns.learn,
        give_back,
        ttl_floor: *raw_dns.ttl_floor.get_ref(),
        ttl_grace: *raw_dns.ttl_grace.get_ref(),
        ttl_max: *raw_dns.ttl_max.get_ref(),
        max_learned: max_learned as usize,
        refresh: *raw_dns.refresh.get_ref(),
    })
}

fn parse_state(raw: &RawState, lines: &Lines) -> Result<StateSettings, ConfigError> {
    let mode = match &raw.mode {
        None => StateMode::default(),
        Some(m) => match m.get_ref().as_str() {
            "stateful" => StateMode::Stateful,
            "stateless" => StateMode::Stateless,
            other => {
                return Err(lines.error(
                    m.span(),
                    format!("state.mode: unknown mode `{other}`: use `stateful` or `stateless`"),
                ));
            }
        },
    };
    let d = FlowTimeouts::default();
    let t = &raw.timeouts;
    let pick = |value: &Option<Spanned<i64>>, key: &str, default: u32| -> Result<u32, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if (1..=MAX_FLOW_TIMEOUT).contains(v.get_ref()) => Ok(*v.get_ref() as u32),
            Some(v) => Err(lines.error(
                v.span(),
                format!("state.timeouts.{key}: 1 to {MAX_FLOW_TIMEOUT} seconds"),
            )),
        }
    };
    let timeouts = FlowTimeouts {
        tcp_syn_sent: pick(&t.tcp_syn_sent, "tcp_syn_sent", d.tcp_syn_sent)?,
        tcp_established: pick(&t.tcp_established, "tcp_established", d.tcp_established)?,
        tcp_closing: pick(&t.tcp_closing, "tcp_closing", d.tcp_closing)?,
        tcp_close: pick(&t.tcp_close, "tcp_close", d.tcp_close)?,
        udp: pick(&t.udp, "udp", d.udp)?,
        udp_stream: pick(&t.udp_stream, "udp_stream", d.udp_stream)?,
        icmp: pick(&t.icmp, "icmp", d.icmp)?,
        other: pick(&t.other, "other", d.other)?,
    };
    let max_flows = match &raw.max_flows {
        None => default_max_flows(),
        Some(v) if (i64::from(MIN_MAX_FLOWS)..=i64::from(MAX_MAX_FLOWS)).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            return Err(lines.error(
                v.span(),
                format!("state.max_flows: {MIN_MAX_FLOWS} to {MAX_MAX_FLOWS} flows per address family"),
            ));
        }
    };
    Ok(StateSettings {
        mode,
        timeouts,
        liberal: raw.liberal.unwrap_or(false),
        max_flows,
    })
}

/// The nameservers of `resolv_conf`. When it lists only loopback stubs (systemd-resolved's
/// 127.0.0.53), the upstream servers in `upstream` are the ones packets go to.
pub fn host_resolvers(resolv_conf: &Path, upstream: &Path) -> Vec<IpAddr> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default()
    };
    let servers = read(resolv_conf);
    if !servers.is_empty() && servers.iter().all(|s| s.is_loopback()) {
        let real = read(upstream);
        if !real.is_empty() {
            return real;
        }
    }
    servers
}

pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && let Some(addr) = words.next()
            // A scoped IPv6 address (fe80::1%eth0) names its interface after `%`.
            && let Ok(ip) = addr.split('%').next().unwrap_or(addr).parse::<IpAddr>()
            && !servers.contains(&ip)
        {
            servers.push(ip);
        }
    }
    servers
}

/// toml's messages can span lines; a user gets one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A CIDR or a bare address (a /32 or /128). Host bits set is an error: `10.0.0.1/8`
/// is more likely a typo than a wish for 10.0.0.0/8.
fn parse_catalog_age(days: i64) -> Option<u32> {
    u32::try_from(days).ok().filter(|d| *d <= MAX_CATALOG_AGE)
}

pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return Err(format!("`{text}` is not a CIDR (such as 192.0.2.0/24) or an address")),
        },
    };
    if net.trunc() != net {
        return Err(format!("`{text}` has host bits set: did you mean {}?", net.trunc()));
    }
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        // The data plane drops every v4-mapped address on the wire (a way around
        // IPv4 rules); a rule on one could never match anything.
        let len = v6.prefix_len().saturating_sub(96);
        return Err(format!(
            "`{text}` is an IPv4-mapped IPv6 address, which never appears on the wire here: write the IPv4 form, {}",
            if v6.prefix_len() >= 96 {
                IpNet::new(IpAddr::V4(v4), len)
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            } else {
                v4.to_string()
            }
        ));
    }
    Ok(net)
}

fn parse_cidrs(list: &[Spanned<String>], key: &str, lines: &Lines) -> Result<Vec<IpNet>, ConfigError> {
    let mut out = Vec::new();
    for c in list {
        let net = parse_cidr(c.get_ref()).map_err(|m| lines.error(c.span(), format!("{key}: {m}")))?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

fn parse_port(raw: &RawPort) -> Result<PortRange, String> {
    match raw {
        RawPort::Number(n) => u16::try_from(*n)
            .map(PortRange::single)
            .map_err(|_| format!("{n} is not a port (0-65535)")),
        RawPort::Text(s) => s.parse(),
    }
}

fn parse_ports(list: &[Spanned<RawPort>], key: &str, lines: &Lines) -> Result<Vec<PortRange>, ConfigError> {
    let mut out = Vec::new();
    for p in list {
        let range = parse_port(p.get_ref()).map_err(|m| lines.error(p.span(), format!("{key}: {m}")))?;
        if !out.contains(&range) {
            out.push(range);
        }
    }
    Ok(out)
}

fn parse_ethertype(raw: &RawEthertype) -> Result<u16, String> {
    let value = match raw {
        RawEthertype::Number(n) => u16::try_from(*n).map_err(|_| format!("{n} is not an ethertype (0x0600-0xffff)"))?,
        RawEthertype::Text(s) => {
            let hex = s.trim().trim_start_matches("0x").trim_start_matches("0X");
            u16::from_str_radix(hex, 16).map_err(|_| format!("`{s}` is not an ethertype such as \"0x88cc\""))?
        }
    };
    match value {
        0x0800 | 0x86dd => Err(format!(
            "0x{value:04x} is IP, which the policy judges; list only non-IP ethertypes"
        )),
        0x0806 => Err("0x0806 is ARP: use essentials.arp".to_string()),
        0x8100 | 0x88a8 => Err(format!("0x{value:04x} is a VLAN tag, which the filter looks through")),
        v if v < 0x0600 => Err(format!("0x{v:04x} is a frame length, not an ethertype (0x0600-0xffff)")),
        v => Ok(v),
    }
}

fn parse_allow(entry: &Spanned<RawAllow>, index: usize, lines: &Lines) -> Result<AllowEntry, ConfigError> {
    let key = format!("allow[{index}]");
    let raw = entry.get_ref();
    let cidr = parse_cidr(raw.cidr.get_ref()).map_err(|m| lines.error(raw.cidr.span(), format!("{key}.cidr: {m}")))?;
    let direction = match raw.direction.get_ref().as_str() {
        "egress" | "out" => Direction::Egress,
        "ingress" | "in" => Direction::Ingress,
        other => {
            return Err(lines.error(
                raw.direction.span(),
                format!("{key}.direction: `{other}` is not `egress` or `ingress`"),
            ));
        }
    };
    let proto = match &raw.proto {
        None => Proto::Any,
        Some(p) => match p.get_ref().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" | "icmpv6" => Proto::Icmp,
            "any" => Proto::Any,
            other => {
                return Err(lines.error(p.span(), format!("{key}.proto: `{other}` is not tcp, udp, icmp or any")));
            }
        },
    };
    let ports = parse_ports(&raw.ports, &format!("{key}.ports"), lines)?;
    if !ports.is_empty() && !proto.has_ports() {
        return Err(lines.error(
            raw.ports[0].span(),
            format!("{key}.ports: only tcp and udp have ports; set proto = \"tcp\" or \"udp\""),
        ));
    }
    Ok(AllowEntry {
        cidr,
        direction,
        proto,
        ports,
        comment: raw.comment.clone(),
        line: lines.line_of(entry.span().start),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "test.toml", &Catalog::builtin()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_spec_example_parses() {
        let c = parse(
            r#"
interfaces = ["eth0"]
mode = "enforce"
regions = ["eu1"]
features = ["portal", "proxy", "siem"]
socket = "/run/allowgate/control.sock"
state_dir = "/var/lib/allowgate"
bpffs_dir = "/sys/fs/bpf/allowgate"

[essentials]
arp = true
ipv6_nd = true
icmp_errors = true
dhcp = true
dns = true
dns_servers = []
ethertypes = []

[management]
cidrs = ["192.0.2.0/24"]
ports = [22]

[[allow]]
cidr = "198.51.100.0/24"
direction = "egress"
proto = "tcp"
ports = [443, "8000-8100"]
"#,
        )
        .unwrap();
        assert_eq!(c.regions, ["eu1"]);
        assert_eq!(c.features, [Feature::Portal, Feature::Proxy, Feature::Siem]);
        assert_eq!(c.management.cidrs, ["192.0.2.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(c.allow.len(), 1);
        assert_eq!(
            c.allow[0].ports,
            [PortRange::single(443), PortRange { lo: 8000, hi: 8100 }]
        );
        assert_eq!(c.allow[0].line, 23);
    }

    #[test]
    fn defaults_fill_what_is_missing() {
        let c = parse("").unwrap();
        assert_eq!(c.features, Feature::DEFAULT);
        assert_eq!(c.mode, Mode::Enforce);
        assert!(c.essentials.arp && c.essentials.dns && c.essentials.dhcp);
        assert_eq!(c.management.ports, [PortRange::single(22)]);
        assert_eq!(c.dlp_ports, [PortRange::single(11344)]);
        assert_eq!(c.state.mode, StateMode::Stateful);
        assert_eq!(c.state.timeouts.tcp_established, 432_000);
        assert_eq!(c.max_catalog_age, DEFAULT_MAX_CATALOG_AGE);
    }

    #[test]
    fn catalog_limits_are_read_alone_and_leniently() {
        assert_eq!(parse("max_catalog_age = 0\n").unwrap().max_catalog_age, 0);
        assert_eq!(parse("max_catalog_age = 7\n").unwrap().max_catalog_age, 7);
        assert_eq!(
            Config::catalog_limits("max_shrink = 10\nmax_catalog_age = 7\n"),
            (10, 7)
        );
        // What the full parse refuses gives the defaults here, as does a broken file.
        assert_eq!(
            Config::catalog_limits("max_shrink = 300\nmax_catalog_age = \"x\"\n"),
            (25, 30)
        );
        assert_eq!(Config::catalog_limits("[[[ not toml"), (25, 30));
    }

    #[test]
    fn state_takes_a_mode_and_timeouts() {
        let c = parse("[state]\nmode = \"stateless\"\n[state.timeouts]\nudp = 5\ntcp_close = 3\n").unwrap();
        assert_eq!(c.state.mode, StateMode::Stateless);
        let want = FlowTimeouts {
            udp: 5,
            tcp_close: 3,
            ..FlowTimeouts::default()
        };
        assert_eq!(c.state.timeouts, want);
        assert!(!c.state.liberal);
        let c = parse("[state]\nliberal = true\nmax_flows = 100000\n").unwrap();
        assert!(c.state.liberal);
        assert_eq!(c.state.max_flows, 100_000);
        assert_eq!(want.by_state()[allowgate_ebpf::FLOW_UDP as usize], 5);
        assert_eq!(want.by_state()[allowgate_ebpf::FLOW_TCP_CLOSE as usize], 3);
    }

    #[test]
    fn dns_give_back_takes_each_path() {
        assert_eq!(parse("").unwrap().dns.give_back, GiveBack::Auto);
        for (name, want) in [
            ("auto", GiveBack::Auto),
            ("live-frames", GiveBack::LiveFrames),
            ("loopback", GiveBack::Loopback),
            ("none", GiveBack::None),
        ] {
            let c = parse(&format!("[dns]\ngive_back = \"{name}\"\n")).unwrap();
            assert_eq!(c.dns.give_back, want, "{name}");
            assert_eq!(want.as_str(), name);
        }
    }

    #[test]
    fn xdp_placement_defaults_to_auto_first_and_takes_each_mode() {
        let c = parse("").unwrap();
        assert_eq!((c.xdp_mode, c.xdp_priority), (XdpPlacement::Auto, 0));
        for (text, mode) in [
            ("auto", XdpPlacement::Auto),
            ("native", XdpPlacement::Native),
            ("generic", XdpPlacement::Generic),
            ("dispatcher", XdpPlacement::Dispatcher),
        ] {
            let c = parse(&format!("xdp_mode = \"{text}\"\nxdp_priority = 20\n")).unwrap();
            assert_eq!((c.xdp_mode, c.xdp_priority), (mode, 20));
            assert_eq!(mode.as_str(), text);
        }
    }

    #[test]
    fn regions_match_whatever_the_spelling() {
        let c = parse(r#"regions = ["Gov US1", "EU1", "govus1"]"#).unwrap();
        assert_eq!(c.regions, ["gov-us1", "eu1"]);
    }

    #[test]
    fn max_flows_follows_memory_as_conntrack_does() {
        const GIB: u64 = 1 << 30;
        assert_eq!(max_flows_for_memory(24 * GIB), 262_144);
        assert_eq!(max_flows_for_memory(4 * GIB + 1), 262_144);
        assert_eq!(max_flows_for_memory(4 * GIB), 65_536);
        assert_eq!(max_flows_for_memory(2 * GIB), 65_536);
        // Small hosts keep the table's old size: conntrack would go lower.
        assert_eq!(max_flows_for_memory(512 << 20), 65_536);
        assert!(default_max_flows() >= MIN_MAX_FLOWS);
    }

    /// An Azure region is named by any of its spellings (the service tags' older
    /// `centralfrance`, the page's "France Central") and kept in Azure's form.
    #[test]
    fn azure_regions_take_their_aliases_and_keep_azures_form() {
        let page = "## Portal access\n\n|Data center|IP addresses|\n|---|---|\n|EU1|192.0.2.1|\n\n\
                    ## Access and session controls\n\nThe following IP addresses should be allowed for both inbound and outbound connections:\n\n\
                    ||IP addresses|\n|---|---|\n|**Session controls**|France Central: 192.0.2.2<br /><br />Germany West Central: 192.0.2.3|\n";
        let catalog = crate::catalog::parse_page(page, "page.md").unwrap();
        let text = r#"
regions = ["eu1", "centralfrance", "Germany West Central"]
proxy_regions = ["germanywc", "France Central"]
"#;
        let c = Config::parse(text, "test.toml", &catalog).unwrap();
        assert_eq!(c.regions, ["eu1", "francecentral", "germanywestcentral"]);
        assert_eq!(c.proxy_regions.unwrap(), ["germanywestcentral", "francecentral"]);
        let err = Config::parse("regions = [\"centralfrancee\"]", "test.toml", &catalog).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.toml:1: regions: unknown region `centralfrancee`: did you mean `francecentral`?; `allowgate regions` lists them"
        );
    }

    /// Each bad input gets one line naming the file, the line and the key.
    #[test]
    fn bad_input_is_named_with_its_line() {
        let cases: &[(&str, &str)] = &[
            ("regions = [\"eu1\"]\nbogus = 1\n", "test.toml:2: unknown field `bogus`"),
            (
                "xdp_mode = \"shared\"\n",
                "test.toml:1: xdp_mode: `shared` is none of auto, native, generic, dispatcher",
            ),
            (
                "xdp_priority = -1\n",
                "test.toml:1: xdp_priority: 0 to 4294967295 (lowest runs first)",
            ),
            (
                "regions = [\"eu3\"]\n",
                "test.toml:1: regions: unknown region `eu3`: did you mean `eu1`?",
            ),
            (
                "features = [\"portl\"]\n",
                "test.toml:1: features: unknown feature `portl`: did you mean `portal`?",
            ),
            (
                "\n[management]\ncidrs = [\"192.0.2.1/24\"]\n",
                "test.toml:3: management.cidrs: `192.0.2.1/24` has host bits set: did you mean 192.0.2.0/24?",
            ),
            (
                "[management]\ncidrs = [\"300.1.1.1\"]\n",
                "test.toml:2: management.cidrs: `300.1.1.1` is not a CIDR",
            ),
            (
                "[management]\nports = [70000]\n",
                "test.toml:2: management.ports: 70000 is not a port",
            ),
            (
                "[[allow]]\ncidr = \"198.51.100.0/24\"\ndirection = \"egress\"\nproto = \"tcp\"\nports = [\"9000-8000\"]\n",
                "test.toml:5: allow[0].ports: port range `9000-8000` runs backwards",
            ),
            (
                "[[allow]]\ncidr = \"198.51.100.0/24\"\ndirection = \"sideways\"\n",
                "test.toml:3: allow[0].direction: `sideways` is not `egress` or `ingress`",
            ),
            (
                "[[allow]]\ncidr = \"198.51.100.0/24\"\ndirection = \"egress\"\nproto = \"icmp\"\nports = [1]\n",
                "test.toml:5: allow[0].ports: only tcp and udp have ports",
            ),
            (
                "[[allow]]\ncidr = \"198.51.100.0/24\"\n",
                "test.toml:1: missing field `direction`",
            ),
            (
                "mode = \"permissive\"\n",
                "test.toml:1: mode: unknown mode `permissive`",
            ),
            (
                "[essentials]\ndns_servers = [\"resolver\"]\n",
                "test.toml:2: essentials.dns_servers: `resolver` is not an IP address",
            ),
            (
                "[essentials]\nethertypes = [\"0x0800\"]\n",
                "test.toml:2: essentials.ethertypes: 0x0800 is IP",
            ),
            ("[essentials]\nbogus = true\n", "test.toml:2: unknown field `bogus`"),
            (
                "[dns]\ngive_back = \"reinject\"\n",
                "test.toml:2: dns.give_back: unknown path `reinject`: use `auto`, `live-frames`, `loopback`, `none`",
            ),
            (
                "regions = \"eu1\"\n",
                "test.toml:1: invalid type: string \"eu1\", expected a sequence",
            ),
            (
                "interfaces = [\"a b\"]\n",
                "test.toml:1: interfaces: `a b` is not an interface name",
            ),
            (
                "metrics = \"localhost\"\n",
                "test.toml:1: metrics: `localhost` is not an address:port",
            ),
            (
                "drop_log_interval = 0\n",
                "test.toml:1: drop_log_interval: 1 to 86400 seconds",
            ),
            (
                "max_catalog_age = -1\n",
                "test.toml:1: max_catalog_age: -1 is not a number of days (0, never, to 3650)",
            ),
            (
                "[state]\nmode = \"tracking\"\n",
                "test.toml:2: state.mode: unknown mode `tracking`: use `stateful` or `stateless`",
            ),
            (
                "[state.timeouts]\nudp = 30\ntcp_established = 0\n",
                "test.toml:3: state.timeouts.tcp_established: 1 to 2592000 seconds",
            ),
            (
                "[state.timeouts]\nicmp = -1\n",
                "test.toml:2: state.timeouts.icmp: 1 to 2592000 seconds",
            ),
            (
                "[state]\nmax_flows = 1000\n",
                "test.toml:2: state.max_flows: 65536 to 16777216 flows per address family",
            ),
            ("[state]\ntimeout = 5\n", "test.toml:2: unknown field `timeout`"),
            (
                "[log_collector]\nsources = [\"2001:db8::1/32\"]\n",
                "test.toml:2: log_collector.sources: `2001:db8::1/32` has host bits set",
            ),
            ("regions = [\"eu1\"\n", "test.toml:1: unclosed array, expected `]`"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(want), "config {text:?}\n  got:  {err}\n  want: {want}…");
            assert!(!err.contains('\n'), "error is not one line: {err:?}");
        }
    }

    #[test]
    fn v4_mapped_addresses_are_refused_with_the_ipv4_form() {
        assert_eq!(
            parse_cidr("::ffff:192.0.2.0/120").unwrap_err(),
            "`::ffff:192.0.2.0/120` is an IPv4-mapped IPv6 address, which never appears on the wire here: write the IPv4 form, 192.0.2.0/24"
        );
        assert!(
            parse_cidr("::ffff:198.51.100.7")
                .unwrap_err()
                .ends_with("write the IPv4 form, 198.51.100.7/32")
        );
        assert!(parse_cidr("2001:db8::/32").is_ok());
        let err = parse("interfaces = [\"x\"]\n[essentials]\ndns_servers = [\"::ffff:192.0.2.53\"]\n").unwrap_err();
        assert!(err.contains(":3:") && err.ends_with("write 192.0.2.53"), "{err}");
        let err = parse("[management]\ncidrs = [\"::ffff:192.0.2.0/120\"]\n").unwrap_err();
        assert!(err.contains("IPv4-mapped"), "{err}");
    }

    #[test]
    fn resolv_conf_nameservers() {
        let servers = parse_resolv_conf(
            "# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver junk\nnameserver 192.0.2.53\n",
        );
        assert_eq!(
            servers,
            ["192.0.2.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]
        );
    }

    #[test]
    fn a_loopback_stub_resolver_is_looked_through() {
        let dir = tempfile::tempdir().unwrap();
        let stub = dir.path().join("resolv.conf");
        let upstream = dir.path().join("upstream.conf");
        std::fs::write(&stub, "nameserver 127.0.0.53\n").unwrap();
        std::fs::write(&upstream, "nameserver 198.51.100.53\n").unwrap();
        assert_eq!(
            host_resolvers(&stub, &upstream),
            ["198.51.100.53".parse::<IpAddr>().unwrap()]
        );
        std::fs::remove_file(&upstream).unwrap();
        assert_eq!(
            host_resolvers(&stub, &upstream),
            ["127.0.0.53".parse::<IpAddr>().unwrap()]
        );
    }
}
