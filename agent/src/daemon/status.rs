//! `status`: what is enforced, built from the kernel's pins (counters, generation,
//! tables), the kernel's view of each interface's attachments, and the daemon's state.
//! The daemon answers `status` with it and the CLI builds the same when no daemon
//! answers; the CLI only renders it. The types are the control protocol's.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

use allowgate_ebpf::{self as abi, Reason};

use super::{State, now};
pub use crate::control::status::{
    DirectionCounters, DirectionsCounters, Entries, EventCounts, InterfaceStatus, LearnedCounts, StatusReport, Tracking,
};
use crate::dataplane::{Counters, DataplaneError, read_live};

/// The configured interfaces of `state` as the kernel has them, for a reader without
/// a daemon to ask (the pins are what is asked).
pub fn kernel_interfaces(bpffs_dir: &Path, state: &State) -> Vec<InterfaceStatus> {
    use crate::dataplane::{TcMode, XdpMode, attachment_problem};
    state
        .interfaces
        .iter()
        .map(|i| {
            let xdp = if i.xdp_mode == "generic" {
                XdpMode::Generic
            } else {
                XdpMode::Native
            };
            let tc = if i.tc_mode == "clsact" {
                TcMode::Clsact
            } else {
                TcMode::Tcx
            };
            let problem = attachment_problem(bpffs_dir, &i.name, xdp, tc);
            InterfaceStatus {
                name: i.name.clone(),
                xdp_mode: i.xdp_mode.clone(),
                tc_mode: i.tc_mode.clone(),
                attached: problem.is_none(),
                problem,
            }
        })
        .collect()
}

fn by_reason(c: &Counters, direction: u8, verdict: u8) -> BTreeMap<String, u64> {
    Reason::ALL
        .iter()
        .map(|&r| (r.as_str().to_string(), c.get(direction, verdict, r).packets))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn direction(c: &Counters, direction: u8) -> DirectionCounters {
    DirectionCounters {
        pass: c.packets(direction, abi::VERDICT_PASS),
        drop: c.packets(direction, abi::VERDICT_DROP),
        pass_by_reason: by_reason(c, direction, abi::VERDICT_PASS),
        drop_by_reason: by_reason(c, direction, abi::VERDICT_DROP),
    }
}

fn tracking(live: &crate::dataplane::LiveState) -> Tracking {
    let f = live.flows.unwrap_or_default();
    Tracking {
        mode: if live.config.flags & abi::F_STATEFUL != 0 {
            "stateful"
        } else {
            "stateless"
        }
        .to_string(),
        liberal: live.config.flags & abi::F_LIBERAL != 0,
        flows_v4: f.v4,
        flows_v6: f.v6,
        assured_v4: f.assured_v4,
        assured_v6: f.assured_v6,
        capacity: f.capacity,
        unassured_capacity: f.unassured_capacity,
        inserts: f.inserts,
        unassured_inserts: f.unassured_inserts,
        seeded: f.seeded,
        migrated: f.migrated,
        expired: f.expired,
        evictions: f.evictions,
        unassured_evictions: f.unassured_evictions,
    }
}

/// The report from the pins under `bpffs_dir`, the daemon's `state`, and what the
/// kernel says of each interface (`interfaces`; `None`: the state's word for it).
pub fn report(
    bpffs_dir: &Path,
    state: Option<&State>,
    running: bool,
    interfaces: Option<Vec<InterfaceStatus>>,
) -> Result<StatusReport, DataplaneError> {
    let live = read_live(bpffs_dir, state.and_then(|s| s.entries))?;
    let mode = if live.config.flags & abi::F_ENFORCE != 0 {
        "enforce"
    } else {
        "monitor"
    };
    let interfaces = interfaces.unwrap_or_else(|| {
        state
            .map(|s| {
                s.interfaces
                    .iter()
                    .map(|i| InterfaceStatus {
                        name: i.name.clone(),
                        xdp_mode: i.xdp_mode.clone(),
                        tc_mode: i.tc_mode.clone(),
                        attached: true,
                        problem: None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    Ok(StatusReport {
        running,
        enforcing: !interfaces.is_empty() && interfaces.iter().all(|i| i.attached),
        mode: mode.to_string(),
        regions: state.map(|s| s.regions.clone()).unwrap_or_default(),
        features: state
            .map(|s| s.features.iter().map(|f| f.to_string()).collect())
            .unwrap_or_default(),
        interfaces,
        generation: live.config.generation,
        last_change: state
            .map(|s| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s.last_change)).to_string()),
        rollback_in_secs: state.and_then(|s| s.rollback_deadline).map(|d| d.saturating_sub(now())),
        entries: Entries {
            v4: live.v4_entries,
            v6: live.v6_entries,
        },
        counters: DirectionsCounters {
            ingress: direction(&live.counters, abi::DIR_INGRESS),
            egress: direction(&live.counters, abi::DIR_EGRESS),
        },
        events: EventCounts {
            suppressed: live.counters.events_suppressed,
            lost: live.counters.events_lost,
        },
        learned: LearnedCounts {
            entries: state.and_then(|s| s.learned).map(|l| l.0).unwrap_or(0),
            refused: state.and_then(|s| s.learned).map(|l| l.1).unwrap_or(0),
            held: live.counters.dns_held,
            unheld: live.counters.dns_unheld,
            unsolicited: live.counters.dns_unsolicited,
            unresolved: state.map(|s| s.unresolved.clone()).unwrap_or_default(),
        },
        catalog: state.and_then(|s| s.catalog.clone()),
        tracking: tracking(&live),
    })
}
