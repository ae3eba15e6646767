//! Reading what the kernel enforces: the active generation, its table sizes and the
//! counters, from a loaded object or from the pins alone (for `status` without a
//! daemon).

use std::path::Path;

use allowgate_ebpf::{self as abi, Reason, map};
use aya::maps::{Array, ArrayOfMaps, HashMap, LpmTrie, Map, MapData, PerCpuArray};

use super::{DataplaneError, map_err};
pub use crate::events::Counters;

/// What the pins under a `bpffs_dir` say is enforced.
#[derive(Clone, Debug)]
pub struct LiveState {
    pub slot: u32,
    pub config: abi::GenConfig,
    pub v4_entries: usize,
    pub v6_entries: usize,
    pub counters: Counters,
    /// The flow tables; `None` when the pins predate connection tracking.
    pub flows: Option<super::flows::FlowStats>,
    /// Names of the pinned links (`xdp-native-eth0`, `tc-tcx-eth0`, ...).
    pub links: Vec<String>,
    /// The DNS give-back path in force and its counts; `None` for pins before it.
    pub dns: Option<super::DnsLive>,
}

pub(super) fn active(active: &Map, cfg: &Map) -> Result<(u32, abi::GenConfig), DataplaneError> {
    let active: Array<&MapData, u32> = Array::try_from(active).map_err(map_err("open ag_active"))?;
    let slot = active.get(&0, 0).map_err(map_err("read the active slot"))?.min(1);
    let cfg: Array<&MapData, abi::GenConfig> = Array::try_from(cfg).map_err(map_err("open ag_gen_cfg"))?;
    let config = cfg.get(&slot, 0).map_err(map_err("read the generation config"))?;
    Ok((slot, config))
}

pub(super) fn counters(stats: &Map, misc: &Map) -> Result<Counters, DataplaneError> {
    let stats: PerCpuArray<&MapData, abi::Counter> = PerCpuArray::try_from(stats).map_err(map_err("open ag_stats"))?;
    let mut out = Counters::default();
    for direction in [abi::DIR_INGRESS, abi::DIR_EGRESS] {
        for verdict in [abi::VERDICT_PASS, abi::VERDICT_DROP] {
            for reason in Reason::ALL {
                let index = abi::stats_index(direction, verdict, reason as u8);
                let per_cpu = stats.get(&index, 0).map_err(map_err("read the counters"))?;
                let mut sum = abi::Counter::default();
                for c in per_cpu.iter() {
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                }
                if sum.packets > 0 {
                    out.by_key.insert((direction, verdict, reason), sum);
                }
            }
        }
    }
    let misc: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(misc).map_err(map_err("open ag_misc"))?;
    let sum = |i: u32| -> Result<u64, DataplaneError> {
        Ok(misc
            .get(&i, 0)
            .map_err(map_err("read the event counters"))?
            .iter()
            .sum())
    };
    out.events_suppressed = sum(abi::MISC_EVENTS_SUPPRESSED)?;
    out.events_lost = sum(abi::MISC_EVENTS_LOST)?;
    // Pins from a build before DNS learning have no such slots: zero, not an error.
    out.dns_held = sum(abi::MISC_DNS_HELD).unwrap_or(0);
    out.dns_unheld = sum(abi::MISC_DNS_UNHELD).unwrap_or(0);
    out.dns_unsolicited = sum(abi::MISC_DNS_UNSOLICITED).unwrap_or(0);
    out.dns_passed = sum(abi::MISC_DNS_PASSED).unwrap_or(0);
    Ok(out)
}

fn count_entries(outer: &Map, slot: u32, host: bool, v6: bool) -> Result<usize, DataplaneError> {
    let what = "count the entries of a policy table";
    Ok(match (host, v6) {
        (true, false) => {
            let o: ArrayOfMaps<&MapData, HashMap<MapData, abi::V4HostKey, abi::PolicyValue>> =
                ArrayOfMaps::try_from(outer).map_err(map_err(what))?;
            o.get(&slot, 0).map_err(map_err(what))?.keys().count()
        }
        (true, true) => {
            let o: ArrayOfMaps<&MapData, HashMap<MapData, abi::V6HostKey, abi::PolicyValue>> =
                ArrayOfMaps::try_from(outer).map_err(map_err(what))?;
            o.get(&slot, 0).map_err(map_err(what))?.keys().count()
        }
        (false, false) => {
            let o: ArrayOfMaps<&MapData, LpmTrie<MapData, [u8; 4], abi::PolicyValue>> =
                ArrayOfMaps::try_from(outer).map_err(map_err(what))?;
            o.get(&slot, 0).map_err(map_err(what))?.keys().count()
        }
        (false, true) => {
            let o: ArrayOfMaps<&MapData, LpmTrie<MapData, [u8; 16], abi::PolicyValue>> =
                ArrayOfMaps::try_from(outer).map_err(map_err(what))?;
            o.get(&slot, 0).map_err(map_err(what))?.keys().count()
        }
    })
}

fn open_pinned(dir: &Path, name: &'static str) -> Result<Map, DataplaneError> {
    let path = dir.join("maps").join(name);
    let data = MapData::from_pin(&path).map_err(map_err(format!("open {}", path.display())))?;
    Map::from_map_data(data).map_err(map_err(format!("open {}", path.display())))
}

/// Reads the enforced state from the pins under `dir`. Counting the entries opens the
/// inner maps by id, which the kernel allows only with CAP_SYS_ADMIN: a daemon
/// without it passes the counts it installed as `known_entries` (v4, v6).
pub fn read_live(dir: &Path, known_entries: Option<(usize, usize)>) -> Result<LiveState, DataplaneError> {
    let (slot, config) = active(&open_pinned(dir, map::ACTIVE)?, &open_pinned(dir, map::GEN_CONFIG)?)?;
    let (mut v4_entries, mut v6_entries) = known_entries.unwrap_or((0, 0));
    if config.generation != 0 && known_entries.is_none() {
        v4_entries = count_entries(&open_pinned(dir, map::V4_HOST)?, slot, true, false)?
            + count_entries(&open_pinned(dir, map::V4_LPM)?, slot, false, false)?;
        v6_entries = count_entries(&open_pinned(dir, map::V6_HOST)?, slot, true, true)?
            + count_entries(&open_pinned(dir, map::V6_LPM)?, slot, false, true)?;
    }
    let counters = counters(&open_pinned(dir, map::STATS)?, &open_pinned(dir, map::MISC)?)?;
    let mut links: Vec<String> = std::fs::read_dir(dir.join("links"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    let flows = (|| {
        let pin = |name: &'static str| {
            let path = dir.join("maps").join(name);
            MapData::from_pin(&path).map_err(map_err(format!("open {}", path.display())))
        };
        let (v4, v6, new_v4, new_v6, chk_v4, chk_v6) = (
            pin(map::FLOWS_V4)?,
            pin(map::FLOWS_V6)?,
            pin(map::FLOWS_NEW_V4)?,
            pin(map::FLOWS_NEW_V6)?,
            pin(map::FLOWS_CHK_V4)?,
            pin(map::FLOWS_CHK_V6)?,
        );
        let (ctl, misc, cfg, active) = (
            pin(map::FLOW_CTL)?,
            pin(map::MISC)?,
            pin(map::GEN_CONFIG)?,
            pin(map::ACTIVE)?,
        );
        super::flows::flow_stats(&super::flows::FlowMaps {
            v4: &v4,
            v6: &v6,
            new_v4: &new_v4,
            new_v6: &new_v6,
            chk_v4: &chk_v4,
            chk_v6: &chk_v6,
            ctl: &ctl,
            misc: &misc,
            cfg: &cfg,
            active: &active,
        })
    })()
    .ok();
    let dns = (|| {
        let map = open_pinned(dir, map::DNS_CTL)?;
        let ctl: Array<&MapData, abi::DnsCtl> = Array::try_from(&map).map_err(map_err("open ag_dns_ctl"))?;
        ctl.get(&0, 0).map_err(map_err("read ag_dns_ctl"))
    })();
    Ok(LiveState {
        slot,
        config,
        v4_entries,
        v6_entries,
        counters,
        flows,
        links,
        dns: dns.ok().map(|ctl| super::DnsLive::of(&ctl)),
    })
}
