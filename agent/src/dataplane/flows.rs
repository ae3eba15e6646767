//! The data plane's flow tables (connection tracking, `lib/flow.h`): seeding them with
//! the connections the host already has, and reading how full they are.

use std::net::IpAddr;

use allowgate_ebpf::{self as abi, map};
use aya::maps::{Array, HashMap, Map, MapData};
use serde::{Deserialize, Serialize};

use super::{
    Dataplane, DataplaneError, map_err,
    seed::{KernelFlow, KernelFlowState},
};

/// `bpf_map_update_elem` flag: only if the key is not there yet (linux/bpf.h).
const BPF_NOEXIST: u64 = 1;

/// The clock `bpf_ktime_get_coarse_ns()` reads: CLOCK_MONOTONIC_COARSE.
pub fn coarse_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How full the flow tables are, and what went in and out of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    /// Flows in each family's table now (idle ones included until they are found
    /// expired or pushed out).
    pub v4: u64,
    pub v6: u64,
    /// Capacity of each family's table.
    pub capacity: u64,
    /// Flows the programs added, and the daemon seeded from the kernel's sockets.
    pub inserts: u64,
    pub seeded: u64,
    /// Flows the programs removed when they found them expired.
    pub expired: u64,
    /// Flows the full tables pushed out to make room (least recently used first):
    /// what went in and is neither there nor removed as expired.
    pub evictions: u64,
}

/// The key and value a connection of the kernel gets in the flow table.
fn seed_entry(flow: &KernelFlow, now: u64) -> (IpAddr, IpAddr, u16, u16, u8, abi::FlowValue) {
    let state = match flow.state {
        KernelFlowState::SynSent | KernelFlowState::SynRecv => abi::FLOW_TCP_SYN_SENT,
        KernelFlowState::Established => abi::FLOW_TCP_ESTABLISHED,
        KernelFlowState::Closing => abi::FLOW_TCP_CLOSING,
        KernelFlowState::Udp => abi::FLOW_UDP_STREAM,
    };
    let value = abi::FlowValue {
        seen_ns: now,
        state,
        opened_by: abi::FLOW_BY_SEED,
        allowed: 0,
        _pad: [0; 5],
        tag: 0,
    };
    (
        flow.local.ip(),
        flow.remote.ip(),
        flow.local.port(),
        flow.remote.port(),
        flow.proto,
        value,
    )
}

/// Entries in a flow table, by walking its keys (no value is read).
fn count<K: aya::Pod>(m: &Map, what: &'static str) -> Result<u64, DataplaneError> {
    let table: HashMap<&MapData, K, abi::FlowValue> = HashMap::try_from(m).map_err(map_err(what))?;
    Ok(table.keys().filter(Result::is_ok).count() as u64)
}

/// Inserts the entries whose key is not in the flow table yet; how many went in.
fn insert_new<K: aya::Pod>(
    m: &mut Map,
    what: &'static str,
    entries: impl Iterator<Item = (K, abi::FlowValue)>,
) -> Result<u64, DataplaneError> {
    let mut table: HashMap<&mut MapData, K, abi::FlowValue> = HashMap::try_from(m).map_err(map_err(what))?;
    Ok(entries
        .filter(|(key, value)| table.insert(*key, *value, BPF_NOEXIST).is_ok())
        .count() as u64)
}

impl Dataplane {
    /// Puts the kernel's connections in the flow tables, so that their answers keep
    /// passing once the programs track flows. A flow already tracked is left as it is.
    /// Returns how many went in.
    pub fn seed_flows(&mut self, flows: &[KernelFlow]) -> Result<u64, DataplaneError> {
        let now = coarse_ns();
        let entries = flows.iter().map(|f| seed_entry(f, now));
        let v4 = entries
            .clone()
            .filter_map(|(local, remote, lport, rport, proto, value)| match (local, remote) {
                (IpAddr::V4(l), IpAddr::V4(r)) => Some((
                    abi::FlowV4Key {
                        local: l.octets(),
                        remote: r.octets(),
                        lport,
                        rport,
                        proto,
                        _pad: [0; 3],
                    },
                    value,
                )),
                _ => None,
            });
        let v6 = entries.filter_map(|(local, remote, lport, rport, proto, value)| match (local, remote) {
            (IpAddr::V6(l), IpAddr::V6(r)) => Some((
                abi::FlowV6Key {
                    local: l.octets(),
                    remote: r.octets(),
                    lport,
                    rport,
                    proto,
                    _pad: [0; 3],
                },
                value,
            )),
            _ => None,
        });
        let added = insert_new(self.map_mut(map::FLOWS_V4)?, "open ag_flows_v4", v4)?
            + insert_new(self.map_mut(map::FLOWS_V6)?, "open ag_flows_v6", v6)?;
        let mut ctl: Array<&mut MapData, abi::FlowCtl> =
            Array::try_from(self.map_mut(map::FLOW_CTL)?).map_err(map_err("open ag_flow_ctl"))?;
        let mut c = ctl.get(&0, 0).map_err(map_err("read ag_flow_ctl"))?;
        c.seeded += added;
        ctl.set(0, c, 0).map_err(map_err("write ag_flow_ctl"))?;
        Ok(added)
    }

    /// How full the flow tables are.
    pub fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        flow_stats(
            self.map(map::FLOWS_V4)?,
            self.map(map::FLOWS_V6)?,
            self.map(map::FLOW_CTL)?,
            self.map(map::MISC)?,
        )
    }
}

pub(super) fn flow_stats(v4: &Map, v6: &Map, ctl: &Map, misc: &Map) -> Result<FlowStats, DataplaneError> {
    let ctl: Array<&MapData, abi::FlowCtl> = Array::try_from(ctl).map_err(map_err("open ag_flow_ctl"))?;
    let seeded = ctl.get(&0, 0).map_err(map_err("read ag_flow_ctl"))?.seeded;
    let misc: aya::maps::PerCpuArray<&MapData, u64> =
        aya::maps::PerCpuArray::try_from(misc).map_err(map_err("open ag_misc"))?;
    let sum = |i: u32| -> u64 { misc.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
    let (inserts, expired) = (sum(abi::MISC_FLOW_INSERTS), sum(abi::MISC_FLOW_REMOVED));
    let (v4, v6) = (
        count::<abi::FlowV4Key>(v4, "open ag_flows_v4")?,
        count::<abi::FlowV6Key>(v6, "open ag_flows_v6")?,
    );
    Ok(FlowStats {
        v4,
        v6,
        capacity: u64::from(abi::FLOW_MAX),
        inserts,
        seeded,
        expired,
        evictions: (inserts + seeded).saturating_sub(expired + v4 + v6),
    })
}
