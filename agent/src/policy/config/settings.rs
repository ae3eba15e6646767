//! The validated settings of the config's sections, the modes and the placements, as
//! the rest of the agent reads them.

use std::{net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::Deserialize;

use super::DEFAULT_MANAGEMENT_PORT;
use crate::catalog::{Direction, PortRange, Proto};

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
