//! `status`'s answer as it travels over the socket and as `status --json` prints it
//! (README: "Output formats"). The daemon builds it (`daemon::status`); the CLI renders it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{
    Mode, StateMode,
    config::{GiveBack, GiveBackPath, TcMode, XdpAttach, XdpMode},
};

/// `status --json` (README: "Output formats").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub running: bool,
    /// False when any configured interface lacks its programs in the kernel.
    pub enforcing: bool,
    pub mode: Mode,
    pub regions: Vec<String>,
    pub features: Vec<String>,
    pub interfaces: Vec<InterfaceStatus>,
    pub generation: u64,
    pub last_change: Option<String>,
    pub rollback_in_secs: Option<u64>,
    pub entries: Entries,
    pub counters: DirectionsCounters,
    pub events: EventCounts,
    pub learned: LearnedCounts,
    /// The catalog in force: its sources and versions.
    #[serde(default)]
    pub catalog: Option<String>,
    /// Connection tracking.
    #[serde(default)]
    pub tracking: Tracking,
    /// Each source of the catalog in force, with its version and age.
    #[serde(default)]
    pub catalog_sources: Vec<CatalogSourceStatus>,
    /// The config's `max_catalog_age` in days (0: never stale); `None` from a daemon
    /// that predates it.
    #[serde(default)]
    pub max_catalog_age_days: Option<u32>,
    /// How DNS answers are held and given back.
    #[serde(default)]
    pub dns: DnsStatus,
}

/// One source of the catalog in force (a page, a service tags file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogSourceStatus {
    /// The file it was read from.
    pub source: String,
    /// `page` or `service-tags`.
    pub kind: String,
    /// `ms.date MM/DD/YYYY` or `changeNumber N`.
    pub version: String,
    /// When it was published (YYYY-MM-DD), when known.
    pub date: Option<String>,
    /// How old it is: a tags file since its date, a page since it was last found current
    /// (`catalog fetch`), else since its `ms.date`. `None`: nothing dates it.
    pub age_seconds: Option<u64>,
    /// Older than `max_catalog_age`.
    pub stale: bool,
}

/// DNS learning's give-back path (docs/dns-names.md) and what became of the answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// A learner is alive (`[dns] learn`, and the daemon's heartbeat is fresh).
    pub learning: bool,
    /// `[dns] give_back` as configured: `auto`, `live-frames`, `loopback` or `none`.
    pub give_back: GiveBack,
    /// The path in force, from the kernel: `live-frames`, `loopback`, or `none` (answers
    /// pass at once and are learned from a copy).
    pub path: GiveBackPath,
    /// Why the path in force is not the first choice, or what ended holding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Answers held, given back, lost (held and not given back), and passed at once
    /// with a copy to the learner.
    pub held: u64,
    pub given_back: u64,
    pub failed: u64,
    pub passed_unheld: u64,
}

/// Connection tracking: its mode and the flow tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tracking {
    pub mode: StateMode,
    /// `[state] liberal`: out-of-window segments pass (changing nothing).
    pub liberal: bool,
    /// Flows tracked now, per family, assured or not (idle ones until found expired or
    /// pushed out).
    pub flows_v4: u64,
    pub flows_v6: u64,
    /// Of those, the assured ones: a TCP handshake completed, or UDP (and other
    /// protocols) answered and then used again. Nothing unassured pushes them out.
    pub assured_v4: u64,
    pub assured_v6: u64,
    /// The capacity of each family's table of assured flows (`[state] max_flows`), and
    /// of its table of unassured ones.
    pub capacity: u64,
    pub unassured_capacity: u64,
    /// Flows the programs made assured, and began to track unassured.
    pub inserts: u64,
    pub unassured_inserts: u64,
    /// Flows the daemon seeded from the host's connections, and carried over from tables
    /// it replaced.
    pub seeded: u64,
    pub migrated: u64,
    /// Assured flows found expired and removed.
    pub expired: u64,
    /// Assured flows a full table pushed out, least recently used first.
    pub evictions: u64,
    /// Unassured flows another one pushed out of their bucket before they expired.
    pub unassured_evictions: u64,
}

/// One configured interface as the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub xdp_mode: XdpMode,
    pub tc_mode: TcMode,
    /// Both programs are attached to the interface of this name, per the kernel.
    #[serde(default = "yes")]
    pub attached: bool,
    /// What is wrong when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// `link` (XDP alone) or `dispatcher` (one program of a libxdp dispatcher).
    #[serde(default)]
    pub xdp_attach: XdpAttach,
    /// The hooks allowgate is on and every program there, in run order.
    #[serde(default)]
    pub hooks: Vec<HookStatus>,
}

/// One hook of an interface (`xdp`, `tc egress`) and the programs on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    pub hook: String,
    /// `alone (native, bpf_link 12)`, `libxdp dispatcher 40 (native)`, `tcx`.
    pub attach: String,
    /// allowgate's place among `programs` (0: first); none when it is not there.
    pub position: Option<usize>,
    pub programs: Vec<HookProgram>,
}

/// A program on a hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookProgram {
    pub id: u32,
    pub name: String,
    pub tag: String,
    /// Its run priority in a libxdp dispatcher (lowest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// In a dispatcher: the XDP actions after which the next program runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continues_on: Vec<String>,
    /// allowgate's own program.
    pub allowgate: bool,
}

pub(crate) fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    pub v4: usize,
    pub v6: usize,
    /// The filter reads the IPv4 /32s from the host index (the active generation's flag in
    /// the kernel); false: from the hash map. Absent from older daemons.
    #[serde(default)]
    pub v4_host_index: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionsCounters {
    pub ingress: DirectionCounters,
    pub egress: DirectionCounters,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionCounters {
    pub pass: u64,
    pub drop: u64,
    pub pass_by_reason: BTreeMap<String, u64>,
    pub drop_by_reason: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub suppressed: u64,
    pub lost: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedCounts {
    pub entries: usize,
    pub refused: u64,
    pub held: u64,
    pub unheld: u64,
    pub unsolicited: u64,
    pub unresolved: Vec<String>,
}
