//! `status`'s answer as it travels over the socket and as `status --json` prints it
//! (SPEC section 3). The daemon builds it (`daemon::status`); the CLI renders it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `status --json` (SPEC section 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub running: bool,
    /// False when any configured interface lacks its programs in the kernel.
    pub enforcing: bool,
    pub mode: String,
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
}

/// Connection tracking: its mode and the flow tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tracking {
    /// `stateful` or `stateless`.
    pub mode: String,
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
    pub xdp_mode: String,
    pub tc_mode: String,
    /// Both programs are attached to the interface of this name, per the kernel.
    #[serde(default = "yes")]
    pub attached: bool,
    /// What is wrong when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

pub(crate) fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    pub v4: usize,
    pub v6: usize,
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
