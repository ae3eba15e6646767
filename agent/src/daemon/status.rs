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

use super::{Record, now};
pub use crate::control::status::{
    CatalogSourceStatus, DirectionCounters, DirectionsCounters, DnsStatus, Entries, EventCounts, HookProgram,
    HookStatus, InterfaceStatus, LearnedCounts, StatusReport, Tracking,
};
use crate::{
    dataplane::{Counters, DataplaneError, read_live},
    policy::{Mode, StateMode},
};

/// The configured interfaces of `state` as the kernel has them, for a reader without
/// a daemon to ask (the pins are what is asked).
pub fn kernel_interfaces(bpffs_dir: &Path, state: &Record) -> Vec<InterfaceStatus> {
    state
        .interfaces
        .iter()
        .map(|i| interface_status(bpffs_dir, &i.attachment()))
        .collect()
}

/// One interface as the kernel has it: attached or what is wrong, and the programs on
/// its hooks with allowgate's place among them.
pub fn interface_status(bpffs_dir: &Path, a: &crate::dataplane::Attachment) -> InterfaceStatus {
    let problem = crate::dataplane::attachment_problem(bpffs_dir, a);
    InterfaceStatus {
        name: a.name.clone(),
        xdp_mode: a.xdp_mode,
        tc_mode: a.tc_mode,
        xdp_attach: a.xdp_attach,
        attached: problem.is_none(),
        problem,
        hooks: crate::dataplane::hooks::list(bpffs_dir, &a.name)
            .into_iter()
            .map(|h| HookStatus {
                hook: h.hook.to_string(),
                attach: h.attach.clone(),
                position: h.position(),
                programs: h
                    .programs
                    .into_iter()
                    .map(|p| HookProgram {
                        id: p.id,
                        name: p.name,
                        tag: p.tag,
                        priority: p.priority,
                        continues_on: p.continues_on,
                        allowgate: p.allowgate,
                    })
                    .collect(),
            })
            .collect(),
    }
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
            StateMode::Stateful
        } else {
            StateMode::Stateless
        },
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
    state: Option<&Record>,
    running: bool,
    interfaces: Option<Vec<InterfaceStatus>>,
) -> Result<StatusReport, DataplaneError> {
    let live = read_live(bpffs_dir, state.and_then(|s| s.entries))?;
    let mode = if live.config.flags & abi::F_ENFORCE != 0 {
        Mode::Enforce
    } else {
        Mode::Monitor
    };
    let interfaces = interfaces.unwrap_or_else(|| {
        state
            .map(|s| {
                s.interfaces
                    .iter()
                    .map(|i| InterfaceStatus {
                        name: i.name.clone(),
                        xdp_mode: i.xdp_mode,
                        tc_mode: i.tc_mode,
                        xdp_attach: i.xdp_attach,
                        attached: true,
                        problem: None,
                        hooks: Vec::new(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    Ok(StatusReport {
        running,
        enforcing: !interfaces.is_empty() && interfaces.iter().all(|i| i.attached),
        mode,
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
            v4_host_index: live.config.flags & abi::F_V4_HOST_INDEX != 0,
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
        catalog_sources: state.map(catalog_sources).unwrap_or_default(),
        max_catalog_age_days: state.and_then(|s| s.max_catalog_age),
        dns: dns(&live, state),
    })
}

/// The state's catalog sources, aged now (a page's sidecar may say it was found current
/// since the state was written).
fn catalog_sources(state: &Record) -> Vec<CatalogSourceStatus> {
    let now = now();
    let max = state.max_catalog_age.unwrap_or(0);
    state
        .catalog_sources
        .iter()
        .map(|s| {
            let age = s.age(now);
            CatalogSourceStatus {
                source: s.source.clone(),
                kind: s.kind.clone(),
                version: s.version.clone(),
                date: s.date.clone(),
                age_seconds: age,
                stale: age.is_some_and(|a| super::catalog_age::is_stale(a, max)),
            }
        })
        .collect()
}

/// The give-back path and counts from the kernel, the choice and reason from the daemon.
fn dns(live: &crate::dataplane::LiveState, state: Option<&Record>) -> DnsStatus {
    let kernel = live.dns.unwrap_or(crate::dataplane::DnsLive {
        path: Default::default(),
        learning: false,
        given_back: 0,
        failed: 0,
    });
    let give_back = state.and_then(|s| s.give_back.as_ref());
    DnsStatus {
        learning: kernel.learning,
        give_back: give_back.map(|g| g.choice).unwrap_or_default(),
        path: kernel.path,
        reason: match (kernel.learning, give_back) {
            (false, _) => Some("no learner: [dns] learn = false, or the daemon is not running".to_string()),
            (true, g) => g.and_then(|g| g.reason.clone()),
        },
        held: live.counters.dns_held,
        given_back: kernel.given_back,
        failed: kernel.failed,
        passed_unheld: live.counters.dns_passed,
    }
}
