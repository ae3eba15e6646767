//! The data plane's flow tables (connection tracking, `lib/flow.h`): seeding them with
//! the connections the host already has, carrying their flows over when a new capacity
//! (`[state] max_flows`) or a new layout replaces them, rebuilding the peer filter, and
//! reading how full they are.
//!
//! What the agent writes: the connections it seeds (assured ones into the LRU hash,
//! half-open ones into their bucket of the unassured table) and the flows it carries
//! over, each with its peer's filter bit set first (a clear bit tells the programs
//! that there is no assured flow to look up).

use std::{mem::size_of, net::IpAddr, os::fd::AsFd as _};

use allowgate_ebpf::{self as abi, map};
use aya::maps::{Array, HashMap, Map, MapData};
use serde::{Deserialize, Serialize};

use super::{
    Dataplane, DataplaneError, batch,
    flowtab::{self, FlowSizes, Mapped},
    map_data, map_err,
    seed::{KernelFlow, KernelFlowState},
};

/// `bpf_map_update_elem` flag: only if the key is not there yet (linux/bpf.h).
const BPF_NOEXIST: u64 = 1;

/// How often the peer filter is rebuilt from the assured tables: often enough that
/// bits of flows gone don't pile up, seldom enough that reading a full table (a few
/// ms) is nothing.
const PEER_FILTER_REBUILD: std::time::Duration = std::time::Duration::from_secs(60);

/// The clock `bpf_ktime_get_coarse_ns()` reads: CLOCK_MONOTONIC_COARSE.
pub fn coarse_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How full the flow tables are, and what went in and out of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    /// Flows in each family's tables now, assured and unassured (idle ones included
    /// until they are found expired or pushed out).
    pub v4: u64,
    pub v6: u64,
    /// Of those, the assured ones (a handshake completed, or answered and used again).
    pub assured_v4: u64,
    pub assured_v6: u64,
    /// Capacity of each family's assured table (`[state] max_flows`), and of its
    /// unassured one.
    pub capacity: u64,
    pub unassured_capacity: u64,
    /// Flows the programs made assured, added unassured, and the daemon seeded from the
    /// kernel's sockets or carried over from tables it replaced.
    pub inserts: u64,
    pub unassured_inserts: u64,
    pub seeded: u64,
    pub migrated: u64,
    /// Assured flows the programs removed when they found them expired.
    pub expired: u64,
    /// Assured flows the full tables pushed out to make room (least recently used
    /// first): what went in and is neither there nor removed as expired.
    pub evictions: u64,
    /// Unassured flows another one pushed out of their bucket before they expired.
    pub unassured_evictions: u64,
    /// First fragments that passed and vouch for their datagram's other fragments.
    pub fragments_noted: u64,
}

/// A flow of the kernel's (or carried over) on its way into the tables.
#[derive(Clone, Copy, Debug)]
pub(super) enum Entry {
    V4(abi::FlowV4Key, abi::FlowValue),
    V6(abi::FlowV6Key, abi::FlowValue),
}

impl Entry {
    fn of(local: IpAddr, remote: IpAddr, lport: u16, rport: u16, proto: u8, value: abi::FlowValue) -> Option<Entry> {
        // The two families' keys differ only in the addresses' width.
        macro_rules! key {
            ($key:ident, $local:expr, $remote:expr) => {
                abi::$key {
                    local: $local.octets(),
                    remote: $remote.octets(),
                    lport,
                    rport,
                    proto,
                    _pad: [0; 3],
                }
            };
        }
        match (local, remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => Some(Entry::V4(key!(FlowV4Key, l, r), value)),
            (IpAddr::V6(l), IpAddr::V6(r)) => Some(Entry::V6(key!(FlowV6Key, l, r), value)),
            _ => None,
        }
    }

    fn value(&self) -> &abi::FlowValue {
        match self {
            Entry::V4(_, v) | Entry::V6(_, v) => v,
        }
    }

    fn remote(&self) -> IpAddr {
        match self {
            Entry::V4(k, _) => IpAddr::from(k.remote),
            Entry::V6(k, _) => IpAddr::from(k.remote),
        }
    }

    fn assured(&self) -> bool {
        self.value().flags & abi::FLOW_F_ASSURED != 0
    }
}

/// The entry a connection of the kernel gets: an established (or closing) connection
/// and a connected UDP socket are assured, a half-open one is not. Its sequence
/// windows are unknown: each side's first segment teaches them (mid-stream).
fn seed_entry(flow: &KernelFlow, now: u64) -> Option<Entry> {
    let (state, assured) = match flow.state {
        KernelFlowState::SynSent | KernelFlowState::SynRecv => (abi::FLOW_TCP_SYN_SENT, false),
        KernelFlowState::Established => (abi::FLOW_TCP_ESTABLISHED, true),
        KernelFlowState::Closing => (abi::FLOW_TCP_CLOSING, true),
        KernelFlowState::Udp => (abi::FLOW_UDP_STREAM, true),
    };
    let value = abi::FlowValue {
        seen_ns: now,
        state,
        opened_by: abi::FLOW_BY_SEED,
        flags: if assured {
            abi::FLOW_F_ASSURED | abi::FLOW_F_ANSWERED
        } else {
            0
        },
        ..abi::FlowValue::default()
    };
    Entry::of(
        flow.local.ip(),
        flow.remote.ip(),
        flow.local.port(),
        flow.remote.port(),
        flow.proto,
        value,
    )
}

/// A flow pinned by a build before assured flows (ABI 2 and 3: a 24-byte value). Its
/// windows are unknown and it is not known to be more than spoofed: it goes in
/// unassured, and its next packets both ways (or the seeding) assure it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FlowValueV2 {
    seen_ns: u64,
    state: u8,
    opened_by: u8,
    allowed: u8,
    _pad: [u8; 5],
    tag: u64,
}

// SAFETY: plain #[repr(C)] integers with explicit padding.
unsafe impl aya::Pod for FlowValueV2 {}

impl FlowValueV2 {
    fn upgrade(&self) -> abi::FlowValue {
        abi::FlowValue {
            seen_ns: self.seen_ns,
            state: self.state.min(abi::FLOW_STATES as u8 - 1),
            opened_by: self.opened_by,
            ..abi::FlowValue::default()
        }
    }
}

/// An unassured bucket as ABI 4 laid it out, its checks in a header beside the stamps
/// (since then in a table of their own), to carry its flows over.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FlowBucketV4Abi4 {
    check: [u32; abi::FLOW_NEW_WAYS],
    stamp: [u32; abi::FLOW_NEW_WAYS],
    way: [abi::FlowNewV4; abi::FLOW_NEW_WAYS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FlowBucketV6Abi4 {
    check: [u32; abi::FLOW_NEW_WAYS],
    stamp: [u32; abi::FLOW_NEW_WAYS],
    way: [abi::FlowNewV6; abi::FLOW_NEW_WAYS],
}

// SAFETY: plain #[repr(C)] integers, no implicit padding (the C layout of ABI 4).
unsafe impl aya::Pod for FlowBucketV4Abi4 {}
unsafe impl aya::Pod for FlowBucketV6Abi4 {}
// The value sizes that tell ABI 4's tables apart from this build's.
const _: () = assert!(size_of::<FlowBucketV4Abi4>() == 32 + 4 * 80 && size_of::<FlowBucketV6Abi4>() == 32 + 4 * 104);

/// The pin of the checks of the unassured table pinned at `path` (named `name`).
fn checks_pin(name: &str, path: &std::path::Path) -> Option<std::path::PathBuf> {
    let checks = match name {
        map::FLOWS_NEW_V4 => map::FLOWS_CHK_V4,
        map::FLOWS_NEW_V6 => map::FLOWS_CHK_V6,
        _ => return None,
    };
    Some(path.with_file_name(checks))
}

/// Flows read out of pinned tables about to be replaced, to go into the new ones.
#[derive(Debug, Default)]
pub(super) struct Carried {
    pub(super) entries: Vec<Entry>,
}

impl Carried {
    /// Reads the flows of the pinned map `name` at `path` before it is replaced. A
    /// table that cannot be read is left behind (its flows start over), not an error:
    /// the seeding that follows puts the host's connections back.
    pub(super) fn take_from(&mut self, name: &str, path: &std::path::Path) -> Result<usize, String> {
        let data = MapData::from_pin(path).map_err(|e| format!("cannot open it ({e})"))?;
        let info = data.info().map_err(|e| format!("cannot read it ({e})"))?;
        let before = self.entries.len();
        let value_size = info.value_size() as usize;
        let fresh = |e: std::io::Error| format!("cannot read its flows ({e})");
        let buckets = info.max_entries() as usize;
        // An unassured table's buckets, each way in use an entry of the family `$entry`:
        // those of ABI 4 hold their checks; since then the checks' own table, pinned
        // beside, says which ways are in use.
        macro_rules! read_buckets {
            ($bucket:ty, $entry:path, inline) => {{
                let m = Mapped::new(&data, buckets * value_size).map_err(fresh)?;
                for i in 0..buckets {
                    let Some(b) = m.get::<$bucket>(i) else { break };
                    self.entries.extend(
                        (0..abi::FLOW_NEW_WAYS)
                            .filter(|&i| b.check[i] != 0)
                            .map(|i| $entry(b.way[i].key, b.way[i].value)),
                    );
                }
            }};
            ($bucket:ty, $entry:path) => {{
                let checks = checks_pin(name, path).expect("an unassured table");
                let cdata = MapData::from_pin(&checks).map_err(|e| format!("cannot open its checks ({e})"))?;
                let cinfo = cdata
                    .info()
                    .map_err(|e| format!("cannot read its checks ({e})"))?;
                if cinfo.value_size() as usize != size_of::<abi::FlowChecks>()
                    || (cinfo.max_entries() as usize) < buckets
                {
                    return Err(format!(
                        "its checks ({} of {} bytes) do not fit its {buckets} buckets",
                        cinfo.max_entries(),
                        cinfo.value_size()
                    ));
                }
                let m = Mapped::new(&data, buckets * value_size).map_err(fresh)?;
                let c = Mapped::new(&cdata, buckets * size_of::<abi::FlowChecks>()).map_err(fresh)?;
                for i in 0..buckets {
                    let (Some(b), Some(c)) = (m.get::<$bucket>(i), c.get::<abi::FlowChecks>(i)) else {
                        break;
                    };
                    self.entries.extend(
                        (0..abi::FLOW_NEW_WAYS)
                            .filter(|&i| c.check[i] != 0)
                            .map(|i| $entry(b.way[i].key, b.way[i].value)),
                    );
                }
            }};
        }
        match name {
            map::FLOWS_V4 if value_size == size_of::<abi::FlowValue>() => self.entries.extend(
                batch::entries::<abi::FlowV4Key, abi::FlowValue>(&data)
                    .map_err(fresh)?
                    .into_iter()
                    .map(|(k, v)| Entry::V4(k, v)),
            ),
            map::FLOWS_V6 if value_size == size_of::<abi::FlowValue>() => self.entries.extend(
                batch::entries::<abi::FlowV6Key, abi::FlowValue>(&data)
                    .map_err(fresh)?
                    .into_iter()
                    .map(|(k, v)| Entry::V6(k, v)),
            ),
            map::FLOWS_V4 if value_size == size_of::<FlowValueV2>() => self.entries.extend(
                batch::entries::<abi::FlowV4Key, FlowValueV2>(&data)
                    .map_err(fresh)?
                    .into_iter()
                    .map(|(k, v)| Entry::V4(k, v.upgrade())),
            ),
            map::FLOWS_V6 if value_size == size_of::<FlowValueV2>() => self.entries.extend(
                batch::entries::<abi::FlowV6Key, FlowValueV2>(&data)
                    .map_err(fresh)?
                    .into_iter()
                    .map(|(k, v)| Entry::V6(k, v.upgrade())),
            ),
            map::FLOWS_NEW_V4 if value_size == size_of::<abi::FlowBucketV4>() => {
                read_buckets!(abi::FlowBucketV4, Entry::V4)
            }
            map::FLOWS_NEW_V6 if value_size == size_of::<abi::FlowBucketV6>() => {
                read_buckets!(abi::FlowBucketV6, Entry::V6)
            }
            map::FLOWS_NEW_V4 if value_size == size_of::<FlowBucketV4Abi4>() => {
                read_buckets!(FlowBucketV4Abi4, Entry::V4, inline)
            }
            map::FLOWS_NEW_V6 if value_size == size_of::<FlowBucketV6Abi4>() => {
                read_buckets!(FlowBucketV6Abi4, Entry::V6, inline)
            }
            _ => {
                return Err(format!(
                    "its values ({value_size} bytes) are of no build this one knows"
                ));
            }
        }
        Ok(self.entries.len() - before)
    }
}

/// The generation of the peer filter the programs set bits in, from ag_flow_ctl.
fn ctl(m: &Map) -> Result<abi::FlowCtl, DataplaneError> {
    let ctl: Array<&MapData, abi::FlowCtl> = Array::try_from(m).map_err(map_err("open ag_flow_ctl"))?;
    ctl.get(&0, 0).map_err(map_err("read ag_flow_ctl"))
}

impl Dataplane {
    /// The sizes the tables were loaded with.
    pub fn flow_sizes(&self) -> FlowSizes {
        self.flow_sizes
    }

    /// The key of the flow hash: which bucket and fragment slot a flow or datagram takes.
    pub fn flow_hash_key(&self) -> u64 {
        self.hash_key
    }

    /// Records the key the unassured tables are filled under (the programs have it as a
    /// load-time constant), so that the next load keeps it and their flows in place.
    pub(super) fn write_flow_hash_key(&mut self, key: u64) -> Result<(), DataplaneError> {
        self.write_ctl(|c| c.hash_key = key)
    }

    fn write_ctl(&mut self, f: impl FnOnce(&mut abi::FlowCtl)) -> Result<(), DataplaneError> {
        let mut ctl: Array<&mut MapData, abi::FlowCtl> =
            Array::try_from(self.map_mut(map::FLOW_CTL)?).map_err(map_err("open ag_flow_ctl"))?;
        let mut c = ctl.get(&0, 0).map_err(map_err("read ag_flow_ctl"))?;
        f(&mut c);
        ctl.set(0, c, 0).map_err(map_err("write ag_flow_ctl"))
    }

    fn mapped(&self, name: &'static str, len: usize) -> Result<Mapped, DataplaneError> {
        let data = map_data(self.map(name)?);
        Mapped::new(data, len).map_err(|e| DataplaneError::Mmap { name, source: e })
    }

    fn mapped_peers(&self) -> Result<Mapped, DataplaneError> {
        self.mapped(map::FLOW_PEERS, self.flow_sizes.peer_words as usize * 16)
    }

    /// Puts `entries` in: assured ones (peer bit first) into the LRU hashes unless their
    /// key is there already, the others into their bucket of the unassured tables.
    /// Returns how many went in.
    fn put_flows(&mut self, entries: &[Entry]) -> Result<u64, DataplaneError> {
        let sizes = self.flow_sizes;
        let hash_key = self.hash_key;
        let peers = self.mapped_peers()?;
        let current = ctl(self.map(map::FLOW_CTL)?)?.peer_gen & 1;
        for e in entries.iter().filter(|e| e.assured()) {
            // Both generations: a rebuild in progress keeps it too.
            let bit = flowtab::peer_bit(e.remote(), sizes.peer_words);
            peers.set_bit(current, bit);
            peers.set_bit(current ^ 1, bit);
        }
        let mut added = 0;
        {
            let mut v4: HashMap<&mut MapData, abi::FlowV4Key, abi::FlowValue> =
                HashMap::try_from(self.map_mut(map::FLOWS_V4)?).map_err(map_err("open ag_flows_v4"))?;
            for e in entries.iter().filter(|e| e.assured()) {
                if let Entry::V4(k, v) = e
                    && v4.insert(k, v, BPF_NOEXIST).is_ok()
                {
                    added += 1;
                }
            }
        }
        {
            let mut v6: HashMap<&mut MapData, abi::FlowV6Key, abi::FlowValue> =
                HashMap::try_from(self.map_mut(map::FLOWS_V6)?).map_err(map_err("open ag_flows_v6"))?;
            for e in entries.iter().filter(|e| e.assured()) {
                if let Entry::V6(k, v) = e
                    && v6.insert(k, v, BPF_NOEXIST).is_ok()
                {
                    added += 1;
                }
            }
        }
        let n = sizes.new_buckets as usize;
        let new_v4 = flowtab::Tables {
            buckets: self.mapped(map::FLOWS_NEW_V4, n * size_of::<abi::FlowBucketV4>())?,
            checks: self.mapped(map::FLOWS_CHK_V4, n * size_of::<abi::FlowChecks>())?,
        };
        let new_v6 = flowtab::Tables {
            buckets: self.mapped(map::FLOWS_NEW_V6, n * size_of::<abi::FlowBucketV6>())?,
            checks: self.mapped(map::FLOWS_CHK_V6, n * size_of::<abi::FlowChecks>())?,
        };
        for e in entries.iter().filter(|e| !e.assured()) {
            let put = match e {
                Entry::V4(k, v) => flowtab::place_v4(&new_v4, sizes.new_buckets, hash_key, k, *v),
                Entry::V6(k, v) => flowtab::place_v6(&new_v6, sizes.new_buckets, hash_key, k, *v),
            };
            added += u64::from(put);
        }
        Ok(added)
    }

    /// Puts the kernel's connections in the flow tables, so that their answers keep
    /// passing once the programs track flows. A flow already tracked is left as it is.
    /// Returns how many went in.
    pub fn seed_flows(&mut self, flows: &[KernelFlow]) -> Result<u64, DataplaneError> {
        let now = coarse_ns();
        let entries: Vec<Entry> = flows.iter().filter_map(|f| seed_entry(f, now)).collect();
        let added = self.put_flows(&entries)?;
        self.write_ctl(|c| c.seeded += added)?;
        Ok(added)
    }

    /// Puts the flows read out of the tables this load replaced into the new ones.
    pub(super) fn carry_in(&mut self, carried: &Carried) -> Result<u64, DataplaneError> {
        if carried.entries.is_empty() {
            return Ok(0);
        }
        let added = self.put_flows(&carried.entries)?;
        self.write_ctl(|c| c.migrated += added)?;
        Ok(added)
    }

    /// Rebuilds the peer filter from the assured tables, so that the bits of flows long
    /// gone stop costing the packets of their addresses a lookup. The programs set the
    /// bits of flows they assure meanwhile in both generations (peer_building); an RCU
    /// grace period makes sure none is still writing the old one alone; and a second
    /// pass after the switch catches a flow that went in during the first. Returns the
    /// bits set in the new generation.
    pub fn rebuild_peer_filter(&mut self) -> Result<u64, DataplaneError> {
        let sizes = self.flow_sizes;
        let peers = self.mapped_peers()?;
        let current = ctl(self.map(map::FLOW_CTL)?)?.peer_gen & 1;
        let next = current ^ 1;
        for w in 0..sizes.peer_words {
            if let Some(word) = peers.peer_word(next, w * 64) {
                word.store(0, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.write_ctl(|c| c.peer_building = 1)?;
        // A kernel that refuses it (nohz_full) leaves the second pass to catch stragglers.
        let _ = batch::rcu_grace_period();
        let set = |dp: &Dataplane| -> Result<(), DataplaneError> {
            for remote in dp.assured_remotes()? {
                peers.set_bit(next, flowtab::peer_bit(remote, sizes.peer_words));
            }
            Ok(())
        };
        set(self)?;
        self.write_ctl(|c| {
            c.peer_gen = next;
            c.peer_building = 0;
        })?;
        set(self)?;
        let bits = (0..sizes.peer_words)
            .filter_map(|w| peers.peer_word(next, w * 64))
            .map(|w| u64::from(w.load(std::sync::atomic::Ordering::Relaxed).count_ones()))
            .sum();
        Ok(bits)
    }

    /// Upkeep of the flow tables, called every second or so: rebuilds the peer filter
    /// every PEER_FILTER_REBUILD. A failure (once per rebuild, for the caller to log)
    /// changes nothing that works: the old generation stays, and a stale bit only
    /// costs a lookup.
    pub fn tend_flows(&mut self) -> Result<(), DataplaneError> {
        let due = self.peers_rebuilt.is_none_or(|at| at.elapsed() >= PEER_FILTER_REBUILD);
        if !due {
            return Ok(());
        }
        self.peers_rebuilt = Some(std::time::Instant::now());
        self.rebuild_peer_filter().map(|_| ())
    }

    /// The remote addresses of every assured flow.
    fn assured_remotes(&self) -> Result<Vec<IpAddr>, DataplaneError> {
        let read = |e: std::io::Error| DataplaneError::Batch {
            what: "read the assured flows",
            source: e,
        };
        let mut out: Vec<IpAddr> = batch::entries::<abi::FlowV4Key, abi::FlowValue>(map_data(self.map(map::FLOWS_V4)?))
            .map_err(read)?
            .into_iter()
            .map(|(k, _)| IpAddr::from(k.remote))
            .collect();
        out.extend(
            batch::entries::<abi::FlowV6Key, abi::FlowValue>(map_data(self.map(map::FLOWS_V6)?))
                .map_err(read)?
                .into_iter()
                .map(|(k, _)| IpAddr::from(k.remote)),
        );
        Ok(out)
    }

    /// How full the flow tables are.
    pub fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        let maps = [
            map::FLOWS_V4,
            map::FLOWS_V6,
            map::FLOWS_NEW_V4,
            map::FLOWS_NEW_V6,
            map::FLOWS_CHK_V4,
            map::FLOWS_CHK_V6,
            map::FLOW_CTL,
            map::MISC,
            map::GEN_CONFIG,
            map::ACTIVE,
        ]
        .map(|name| self.map(name).map(map_data));
        let [v4, v6, new_v4, new_v6, chk_v4, chk_v6, ctl, misc, cfg, active] = maps;
        flow_stats(&FlowMaps {
            v4: v4?,
            v6: v6?,
            new_v4: new_v4?,
            new_v6: new_v6?,
            chk_v4: chk_v4?,
            chk_v6: chk_v6?,
            ctl: ctl?,
            misc: misc?,
            cfg: cfg?,
            active: active?,
        })
    }
}

/// The maps `flow_stats` reads, from a loaded object or from the pins.
pub(super) struct FlowMaps<'a> {
    pub(super) v4: &'a MapData,
    pub(super) v6: &'a MapData,
    pub(super) new_v4: &'a MapData,
    pub(super) new_v6: &'a MapData,
    pub(super) chk_v4: &'a MapData,
    pub(super) chk_v6: &'a MapData,
    pub(super) ctl: &'a MapData,
    pub(super) misc: &'a MapData,
    pub(super) cfg: &'a MapData,
    pub(super) active: &'a MapData,
}

/// Live ways of an unassured table: holding a flow that has not expired under the
/// timeouts of the generation in force.
fn unassured<B: aya::Pod>(
    m: &MapData,
    checks: &MapData,
    timeouts: &[u32; abi::FLOW_STATES],
    now: u64,
    value: impl Fn(&B, usize) -> abi::FlowValue,
) -> Result<u64, DataplaneError> {
    let mmap_err = |source| DataplaneError::Mmap {
        name: "an unassured flow table",
        source,
    };
    let buckets = m.info().map_err(map_err("read an unassured flow table"))?.max_entries() as usize;
    let mapped = Mapped::new(m, buckets * size_of::<B>()).map_err(mmap_err)?;
    let checks = Mapped::new(checks, buckets * size_of::<abi::FlowChecks>()).map_err(mmap_err)?;
    let mut live = 0;
    for i in 0..buckets {
        let Some(c) = checks.get::<abi::FlowChecks>(i) else {
            break;
        };
        if c.check == [0; abi::FLOW_NEW_WAYS] {
            continue;
        }
        let Some(bucket) = mapped.get::<B>(i) else { break };
        for (way, _) in c.check.iter().enumerate().filter(|&(_, &c)| c != 0) {
            let v = value(&bucket, way);
            let timeout = u64::from(timeouts[usize::from(v.state) % abi::FLOW_STATES]) * 1_000_000_000;
            if (now.wrapping_sub(v.seen_ns) as i64) <= timeout as i64 {
                live += 1;
            }
        }
    }
    Ok(live)
}

pub(super) fn flow_stats(m: &FlowMaps) -> Result<FlowStats, DataplaneError> {
    let c = {
        let ctl: Array<MapData, abi::FlowCtl> =
            Array::try_from(Map::Array(clone_data(m.ctl)?)).map_err(map_err("open ag_flow_ctl"))?;
        ctl.get(&0, 0).map_err(map_err("read ag_flow_ctl"))?
    };
    let misc: aya::maps::PerCpuArray<MapData, u64> =
        aya::maps::PerCpuArray::try_from(Map::PerCpuArray(clone_data(m.misc)?)).map_err(map_err("open ag_misc"))?;
    let sum = |i: u32| -> u64 { misc.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
    let (inserts, expired) = (sum(abi::MISC_FLOW_INSERTS), sum(abi::MISC_FLOW_REMOVED));
    let read = |e: std::io::Error| DataplaneError::Batch {
        what: "count the assured flows",
        source: e,
    };
    let assured_v4 = batch::entries::<abi::FlowV4Key, abi::FlowValue>(m.v4)
        .map_err(read)?
        .len() as u64;
    let assured_v6 = batch::entries::<abi::FlowV6Key, abi::FlowValue>(m.v6)
        .map_err(read)?
        .len() as u64;
    let (_, config) = super::live::active(&Map::Array(clone_data(m.active)?), &Map::Array(clone_data(m.cfg)?))?;
    let now = coarse_ns();
    let timeouts = config.flow_timeout_s;
    let unassured_v4 = unassured::<abi::FlowBucketV4>(m.new_v4, m.chk_v4, &timeouts, now, |b, i| b.way[i].value)?;
    let unassured_v6 = unassured::<abi::FlowBucketV6>(m.new_v6, m.chk_v6, &timeouts, now, |b, i| b.way[i].value)?;
    let capacity = u64::from(m.v4.info().map_err(map_err("read ag_flows_v4"))?.max_entries());
    let buckets = u64::from(m.new_v4.info().map_err(map_err("read ag_flows_new_v4"))?.max_entries());
    Ok(FlowStats {
        v4: assured_v4 + unassured_v4,
        v6: assured_v6 + unassured_v6,
        assured_v4,
        assured_v6,
        capacity,
        unassured_capacity: buckets * abi::FLOW_NEW_WAYS as u64,
        inserts,
        unassured_inserts: sum(abi::MISC_FLOW_NEW),
        seeded: c.seeded,
        migrated: c.migrated,
        expired,
        evictions: (inserts + c.seeded + c.migrated).saturating_sub(expired + assured_v4 + assured_v6),
        unassured_evictions: sum(abi::MISC_FLOW_NEW_EVICTED),
        fragments_noted: sum(abi::MISC_FRAG_NOTED),
    })
}

/// Another handle on the same map (aya's typed views want to own or borrow a `Map`).
fn clone_data(m: &MapData) -> Result<MapData, DataplaneError> {
    let fd = m.fd().as_fd().try_clone_to_owned().map_err(|e| DataplaneError::Batch {
        what: "open a map again",
        source: e,
    })?;
    MapData::from_fd(fd).map_err(map_err("open a map again"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_connections_are_assured_unless_half_open() {
        let flow = |state| KernelFlow {
            proto: 6,
            local: "192.0.2.1:22".parse().unwrap(),
            remote: "198.51.100.7:50000".parse().unwrap(),
            state,
        };
        for (state, assured) in [
            (KernelFlowState::Established, true),
            (KernelFlowState::Closing, true),
            (KernelFlowState::SynSent, false),
            (KernelFlowState::SynRecv, false),
        ] {
            let e = seed_entry(&flow(state), 7).unwrap();
            assert_eq!(e.assured(), assured, "{state:?}");
            assert_eq!(e.value().seq[0].flags, 0, "windows are learned, not seeded");
        }
    }

    #[test]
    fn flows_of_the_previous_abi_come_back_unassured() {
        let old = FlowValueV2 {
            seen_ns: 5,
            state: abi::FLOW_TCP_ESTABLISHED,
            opened_by: 1,
            allowed: 3,
            tag: 9,
            ..FlowValueV2::default()
        };
        let v = old.upgrade();
        assert_eq!((v.seen_ns, v.state, v.opened_by), (5, abi::FLOW_TCP_ESTABLISHED, 1));
        assert_eq!((v.flags, v.allowed, v.tag), (0, 0, 0));
    }
}
