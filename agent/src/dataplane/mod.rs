//! The data plane: load the BPF object, pin its maps, attach its programs, swap in
//! policy generations, read counters. The only module that uses aya.
//!
//! Everything the kernel holds lives under `bpffs_dir`:
//!   maps/<name>              every map of the object (pinned by name)
//!   links/xdp-<mode>-<if>    the XDP link of an interface (mode: native, generic)
//!   links/tc-tcx-<if>        the TC egress link (tcx; a clsact filter needs no pin)
//!   progs/ingress, egress    the programs the links run
//!   progs/ingress-dispatched ingress as a libxdp dispatcher's component
//! so a killed daemon leaves the policy enforced, and a new one adopts it. In a
//! dispatcher, the component's link is pinned where libxdp keeps its own
//! (`dispatcher.rs`): libxdp moves it when it rebuilds the dispatcher.

mod attach;
mod batch;
mod bpffs;
pub mod dispatcher;
mod dns;
pub mod flows;
mod flowtab;
pub mod hooks;
pub mod hostindex;
pub mod kernel;
mod live;
pub mod seed;
mod xdp_hook;

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use allowgate_ebpf::{self as abi, map};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap, LpmTrie, MapData, MapError, MapType, lpm_trie::Key},
    programs::{ProgramError, SchedClassifier, Xdp},
};

pub use crate::policy::config::{TcMode, XdpAttach, XdpMode};
pub use attach::{Attachment, Placement, detach_all};
pub use hooks::attachment_problem;

pub use bpffs::{check_on_bpffs, ensure_bpffs, lock_pins};
pub use dns::{DnsControl, DnsLive, LIVE_FRAME_PROBE, monotonic_ns};
pub use flowtab::FlowSizes;
pub use live::{Counters, LiveState, read_live};

use crate::policy::Tables;

/// `BPF_F_NO_PREALLOC`: LPM tries need it, and inner maps must match their template.
const BPF_F_NO_PREALLOC: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot prepare {path}: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the BPF object (root, and a kernel with BTF and BPF, are needed): {source}")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("the BPF object has no {what} `{name}`: the build is broken")]
    Missing { what: &'static str, name: &'static str },
    #[error("cannot load program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "map {name} in {dir} does not match this build's Rust view of the ABI ({detail}): the build is broken (abi.h and ebpf-prog/src/lib.rs disagree)"
    )]
    MapShape {
        name: &'static str,
        dir: PathBuf,
        detail: String,
    },
    #[error("cannot {what}: {source}")]
    Map {
        what: String,
        #[source]
        source: MapError,
    },
    #[error("no interface `{name}`: check `interfaces` in the config")]
    NoInterface { name: String },
    #[error("cannot attach {hook} on {iface}: {detail}")]
    Attach {
        iface: String,
        hook: &'static str,
        detail: String,
    },
    #[error("cannot attach {hook} on {iface}: the hook is held by {holder}: {ways}")]
    HookHeld {
        iface: String,
        hook: &'static str,
        holder: String,
        ways: String,
    },
    #[error("cannot pin {path}: {detail}")]
    Pin { path: PathBuf, detail: String },
    #[error(
        "bpffs_dir {dir} is not on a bpf filesystem: pins live only there (mount -t bpf bpf /sys/fs/bpf, or choose a directory under it)"
    )]
    NotBpffs { dir: PathBuf },
    #[error(
        "another allowgate daemon enforces from {dir} (it holds its lock): stop it first, or give this one its own bpffs_dir"
    )]
    Locked { dir: PathBuf },
    #[error("cannot read the BPF object's map definitions: {detail}")]
    Object { detail: String },
    #[error("cannot map {name} into memory (the kernel needs BPF_F_MMAPABLE arrays, 5.5 or later): {source}")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what}: {source}")]
    Batch {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel refused a live-frame test run ({}): {source}",
        errno_name(os_error_of(source))
    )]
    LiveFrames {
        #[source]
        source: ProgramError,
    },
}

/// The first OS error code in `error`'s chain.
pub fn os_error_of(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(code) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(code);
        }
        source = e.source();
    }
    None
}

/// The symbolic name of an errno the kernel's BPF and socket calls give, as operators
/// read them in man pages and kernel sources.
pub fn errno_name(code: Option<i32>) -> String {
    let name = match code {
        None => return "no error code".to_string(),
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::ENXIO) => "ENXIO",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(libc::ENETUNREACH) => "ENETUNREACH",
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH",
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL",
        Some(libc::EAFNOSUPPORT) => "EAFNOSUPPORT",
        Some(libc::EMSGSIZE) => "EMSGSIZE",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(524) => "ENOTSUPP",
        Some(n) => return format!("errno {n}"),
    };
    name.to_string()
}

impl DataplaneError {
    /// The kernel refused for want of privilege (EACCES, EPERM) somewhere in the chain.
    pub fn is_permission_denied(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && (io.kind() == std::io::ErrorKind::PermissionDenied
                    || matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES)))
            {
                return true;
            }
            source = e.source();
        }
        false
    }
}

/// The pin of ingress as a dispatcher's component, under `progs/`.
pub(super) const INGRESS_DISPATCHED: &str = "ingress-dispatched";

fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Map { what, source }
}

/// Options the BPF object takes at load time.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Drop events each CPU may emit per second, and in a burst.
    pub event_rate_per_sec: u64,
    pub event_burst: u64,
    /// Assured flows each family's table holds (`[state] max_flows`); the unassured
    /// tables and the peer filter are sized from it (`FlowSizes`).
    pub max_flows: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            event_rate_per_sec: 1000,
            event_burst: 100,
            max_flows: abi::FLOW_MAX,
        }
    }
}

/// The loaded object, its maps pinned under `dir/maps`.
pub struct Dataplane {
    ebpf: Ebpf,
    dir: PathBuf,
    /// The do-nothing XDP program that gives held DNS answers back, loaded on first use.
    noop: Option<Ebpf>,
    /// Our own fd on each link we pinned: a link whose pin is removed stays attached
    /// while we hold it, and is pinned again (`repin_missing`).
    held: Vec<(PathBuf, std::os::fd::OwnedFd)>,
    /// Pinned maps this load replaced because they did not fit this build, and why.
    replaced: Vec<String>,
    /// The flow tables' sizes, and the key of the flow hash they were filled with.
    flow_sizes: FlowSizes,
    hash_key: u64,
    /// When the peer filter was last rebuilt (`tend_flows`).
    peers_rebuilt: Option<std::time::Instant>,
}

/// A tag no earlier install used, so that what a flow remembers of another generation
/// (even one of the same number, after the generation config was replaced) never
/// counts for this one: the wall clock's ns, mixed with the generation, never 0.
fn flow_tag(generation: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (now ^ generation.rotate_left(40)).max(1)
}

/// Maps that kept their shape but changed their meaning in an ABI version: pins of an
/// older version are replaced, never read the new way.
const CHANGED_IN_VERSION: [(u32, &[&str]); 3] = [(2, &[map::STATS]), (3, &[map::DNS_FRAMES]), (4, &[map::FLOW_CTL])];

/// The flow tables, whose flows a replacement carries over rather than drops.
const FLOW_TABLES: [&str; 4] = [map::FLOWS_V4, map::FLOWS_V6, map::FLOWS_NEW_V4, map::FLOWS_NEW_V6];

/// Unassured tables and their checks: each pair is kept or replaced as one (checks of
/// other buckets, or buckets without their checks, would mean nothing).
const FLOW_TABLE_CHECKS: [(&str, &str); 2] = [
    (map::FLOWS_NEW_V4, map::FLOWS_CHK_V4),
    (map::FLOWS_NEW_V6, map::FLOWS_CHK_V6),
];

/// The capacity this load gives `name`, where it is not the object's own.
fn capacity_of(name: &str, sizes: &FlowSizes) -> Option<u32> {
    match name {
        map::FLOWS_V4 | map::FLOWS_V6 => Some(sizes.max_flows),
        map::FLOWS_NEW_V4 | map::FLOWS_NEW_V6 | map::FLOWS_CHK_V4 | map::FLOWS_CHK_V6 => Some(sizes.new_buckets),
        map::FLOW_PEERS => Some(sizes.peer_words),
        _ => None,
    }
}

/// The flow hash key of the pins, when they have one this build can use.
fn pinned_hash_key(maps_dir: &Path) -> Option<u64> {
    let data = MapData::from_pin(maps_dir.join(map::FLOW_CTL)).ok()?;
    let info = data.info().ok()?;
    if info.value_size() as usize != std::mem::size_of::<abi::FlowCtl>() || pinned_abi_version(maps_dir) < 4 {
        return None;
    }
    let ctl = Array::<MapData, abi::FlowCtl>::try_from(aya::maps::Map::Array(data)).ok()?;
    Some(ctl.get(&0, 0).ok()?.hash_key).filter(|&k| k != 0)
}

/// A random key for the flow hash: an attacker who can't know it can't aim its spoofed
/// flows at the bucket of a flow of the host's.
fn random_hash_key() -> u64 {
    let mut bytes = [0u8; 8];
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_ne_bytes(bytes),
        // Without the kernel's randomness: the clock's ns, which an attacker off the
        // host does not know either.
        _ => flows::coarse_ns() ^ std::process::id() as u64 ^ 0x6a09_e667_f3bc_c909,
    }
    .max(1)
}

/// Compares every pinned map under `maps_dir` with the object's own definition of it
/// (type, key and value size, capacity (`capacity_of` where this load sets it),
/// flags) and the ABI version the pins were written by; a pin that does not fit is
/// removed so that the loader makes the map afresh, and an unassured table and its
/// checks go together (`FLOW_TABLE_CHECKS`). The flows of a flow table are read out
/// first, into `carried` (also when `rehash`: a new hash key places the unassured ones
/// elsewhere), before any pin is removed. Returns what was replaced and why, for the log.
fn adopt_or_replace(
    maps_dir: &Path,
    object: &[u8],
    sizes: &FlowSizes,
    rehash: bool,
    carried: &mut flows::Carried,
) -> Result<Vec<String>, DataplaneError> {
    let obj = aya_obj::Object::parse(object).map_err(|e| DataplaneError::Object { detail: e.to_string() })?;
    let pinned_version = pinned_abi_version(maps_dir);
    // Every pin this build defines, with why it goes (None: it stays), in name order.
    let mut verdicts: Vec<(String, PathBuf, Option<String>)> = Vec::new();
    let mut names: Vec<&String> = obj.maps.keys().collect();
    names.sort();
    for name in names {
        let def = &obj.maps[name];
        if def.pinning() != aya_obj::maps::PinningType::ByName {
            continue;
        }
        let path = maps_dir.join(name);
        if !path.exists() {
            continue;
        }
        let want = (
            def.map_type(),
            def.key_size(),
            def.value_size(),
            capacity_of(name, sizes).unwrap_or(def.max_entries()),
            def.map_flags(),
        );
        let why = match aya::maps::MapInfo::from_pin(&path) {
            Err(e) => Some(format!("cannot be read ({e})")),
            Ok(info) => {
                let have = (
                    info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
                    info.key_size(),
                    info.value_size(),
                    info.max_entries(),
                    info.map_flags(),
                );
                if have != want {
                    Some(format!(
                        "pinned as type {} key {} value {} entries {} flags {:#x}, this build has type {} key {} value {} entries {} flags {:#x}",
                        have.0, have.1, have.2, have.3, have.4, want.0, want.1, want.2, want.3, want.4
                    ))
                } else {
                    CHANGED_IN_VERSION
                        .iter()
                        .find(|(version, maps)| pinned_version < *version && maps.contains(&name.as_str()))
                        .map(|(version, _)| {
                            format!("pinned by ABI version {pinned_version}; its meaning changed in version {version}")
                        })
                        .or_else(|| {
                            (rehash && (name == map::FLOWS_NEW_V4 || name == map::FLOWS_NEW_V6))
                                .then(|| "filled under another flow hash key".to_string())
                        })
                }
            }
        };
        verdicts.push((name.clone(), path, why));
    }
    for (table, checks) in FLOW_TABLE_CHECKS {
        let verdict = |name: &str| {
            verdicts
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, why)| why.is_some())
        };
        let partner_goes = |partner: &str| match verdict(partner) {
            None => Some(format!("pinned without {partner}")),
            Some(true) => Some(format!("replaced with {partner}")),
            Some(false) => None,
        };
        let (table_why, checks_why) = (partner_goes(checks), partner_goes(table));
        for (name, why) in [(table, table_why), (checks, checks_why)] {
            if let Some(entry) = verdicts.iter_mut().find(|(n, _, w)| n == name && w.is_none()) {
                entry.2 = why;
            }
        }
    }
    let mut replaced = Vec::new();
    for (name, path, why) in &mut verdicts {
        if let Some(why) = why
            && FLOW_TABLES.contains(&name.as_str())
        {
            match carried.take_from(name, path) {
                Ok(n) => *why += &format!("; its {n} flows carried over"),
                Err(e) => *why += &format!("; its flows start over: {e}"),
            }
        }
    }
    for (name, path, why) in verdicts {
        if let Some(why) = why {
            std::fs::remove_file(&path).map_err(|source| DataplaneError::Bpffs {
                path: path.clone(),
                source,
            })?;
            replaced.push(format!("{name}: {why}"));
        }
    }
    Ok(replaced)
}

/// The ABI version of the pins under `maps_dir`: `ag_abi[0]`, 1 for pins made before
/// it existed, this build's when nothing is pinned yet.
fn pinned_abi_version(maps_dir: &Path) -> u32 {
    let path = maps_dir.join(map::ABI);
    if !path.exists() {
        let anything = std::fs::read_dir(maps_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        return if anything { 1 } else { abi::ABI_VERSION };
    }
    MapData::from_pin(&path)
        .ok()
        .and_then(|data| Array::<MapData, u32>::try_from(aya::maps::Map::Array(data)).ok())
        .and_then(|a| a.get(&0, 0).ok())
        .unwrap_or(1)
}

/// The shape each pinned map must have: a map pinned by an older, different build
/// would be reused by the loader as it is.
fn expected_shape(name: &str) -> Option<(MapType, u32, u32)> {
    use std::mem::size_of;
    let u32s = size_of::<u32>() as u32;
    Some(match name {
        map::V4_HOST | map::V4_LPM | map::V6_HOST | map::V6_LPM => (MapType::ArrayOfMaps, u32s, u32s),
        map::GEN_CONFIG => (MapType::Array, u32s, size_of::<abi::GenConfig>() as u32),
        map::ACTIVE | map::DYN_EMPTY => (MapType::Array, u32s, u32s),
        map::EVENT_QUIET => (MapType::PerCpuArray, u32s, size_of::<u64>() as u32),
        map::ABI => (MapType::Array, u32s, u32s),
        map::STATS => (MapType::PerCpuArray, u32s, size_of::<abi::Counter>() as u32),
        map::MISC => (MapType::PerCpuArray, u32s, size_of::<u64>() as u32),
        map::V4_DYN => (MapType::Hash, 4, size_of::<abi::DynValue>() as u32),
        map::V6_DYN => (MapType::Hash, 16, size_of::<abi::DynValue>() as u32),
        map::DNS_QUERIES => (MapType::LruHash, size_of::<abi::DnsReleaseKey>() as u32, 8),
        map::FLOWS_V4 => (
            MapType::LruHash,
            size_of::<abi::FlowV4Key>() as u32,
            size_of::<abi::FlowValue>() as u32,
        ),
        map::FLOWS_V6 => (
            MapType::LruHash,
            size_of::<abi::FlowV6Key>() as u32,
            size_of::<abi::FlowValue>() as u32,
        ),
        map::FLOWS_NEW_V4 => (MapType::Array, u32s, size_of::<abi::FlowBucketV4>() as u32),
        map::FLOWS_NEW_V6 => (MapType::Array, u32s, size_of::<abi::FlowBucketV6>() as u32),
        map::FLOWS_CHK_V4 | map::FLOWS_CHK_V6 => (MapType::Array, u32s, size_of::<abi::FlowChecks>() as u32),
        map::FLOW_PEERS => (MapType::Array, u32s, 2 * size_of::<u64>() as u32),
        map::FLOW_CTL => (MapType::Array, u32s, size_of::<abi::FlowCtl>() as u32),
        map::V4_HOST_INDEX => (MapType::Array, u32s, size_of::<abi::HostIndexV4>() as u32),
        map::HOST_VALUES => (MapType::Array, u32s, size_of::<abi::PolicyValue>() as u32),
        map::DNS_SOCKETS => (
            MapType::LruHash,
            size_of::<abi::DnsSocketKey>() as u32,
            size_of::<abi::DnsSocketValue>() as u32,
        ),
        _ => return None,
    })
}

impl Dataplane {
    /// Loads the object with its maps pinned under `dir/maps`: maps already pinned
    /// there (by an earlier daemon) are reused, with the policy they hold.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Dataplane, DataplaneError> {
        Dataplane::load_object(dir, options, abi::FILTER_OBJ)
    }

    /// `load`, of the given build of the filter (a test loads the next build's over
    /// this one's pins).
    pub fn load_object(dir: &Path, options: &LoadOptions, object: &[u8]) -> Result<Dataplane, DataplaneError> {
        ensure_bpffs()?;
        let maps_dir = dir.join("maps");
        for d in [&maps_dir, &dir.join("links")] {
            std::fs::create_dir_all(d).map_err(|source| DataplaneError::Bpffs {
                path: d.clone(),
                source,
            })?;
        }
        let sizes = FlowSizes::for_max_flows(options.max_flows);
        let pinned_key = pinned_hash_key(&maps_dir);
        let hash_key = pinned_key.unwrap_or_else(random_hash_key);
        let mut carried = flows::Carried::default();
        let replaced = adopt_or_replace(&maps_dir, object, &sizes, pinned_key.is_none(), &mut carried)?;
        let new_mask = sizes.new_buckets - 1;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global(abi::global::EVENT_RATE, &options.event_rate_per_sec, true)
            .override_global(abi::global::EVENT_BURST, &options.event_burst, true)
            .override_global(abi::global::FLOW_HASH_KEY, &hash_key, true)
            .override_global(abi::global::FLOW_NEW_MASK, &new_mask, true)
            .override_global(abi::global::FLOW_PEER_WORDS, &sizes.peer_words, true)
            .map_max_entries(map::FLOWS_V4, sizes.max_flows)
            .map_max_entries(map::FLOWS_V6, sizes.max_flows)
            .map_max_entries(map::FLOWS_NEW_V4, sizes.new_buckets)
            .map_max_entries(map::FLOWS_NEW_V6, sizes.new_buckets)
            .map_max_entries(map::FLOWS_CHK_V4, sizes.new_buckets)
            .map_max_entries(map::FLOWS_CHK_V6, sizes.new_buckets)
            .map_max_entries(map::FLOW_PEERS, sizes.peer_words)
            .load(object)
            .map_err(|source| DataplaneError::Load { source })?;
        let mut dataplane = Dataplane {
            ebpf,
            dir: dir.to_path_buf(),
            noop: None,
            held: Vec::new(),
            replaced,
            flow_sizes: sizes,
            hash_key,
            peers_rebuilt: None,
        };
        dataplane.check_map_shapes()?;
        dataplane.write_flow_hash_key(hash_key)?;
        dataplane.carry_in(&carried)?;
        dataplane.rebuild_peer_filter()?;
        dataplane.peers_rebuilt = Some(std::time::Instant::now());
        let mut version: Array<&mut MapData, u32> =
            Array::try_from(dataplane.map_mut(map::ABI)?).map_err(map_err("open ag_abi"))?;
        version
            .set(0, abi::ABI_VERSION, 0)
            .map_err(map_err("record the ABI version"))?;
        dataplane.refresh_learned_empty()?;
        let program = |name| move |source| DataplaneError::Program { name, source };
        dataplane.xdp()?.load().map_err(program(abi::PROG_INGRESS))?;
        dataplane.tc()?.load().map_err(program(abi::PROG_EGRESS))?;
        // The dispatcher's component is loaded when it first joins one: an extension
        // is verified against the program it extends.
        Ok(dataplane)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pinned maps this load replaced, and why (for the log).
    pub fn replaced(&self) -> &[String] {
        &self.replaced
    }

    /// The maps as loaded against the Rust mirrors of their keys and values: pins that
    /// do not fit the object were replaced before loading (`adopt_or_replace`), so a
    /// mismatch here is a build whose C and Rust sides disagree.
    fn check_map_shapes(&self) -> Result<(), DataplaneError> {
        for name in map::ALL {
            let Some((ty, key, value)) = expected_shape(name) else {
                continue;
            };
            let m = self
                .ebpf
                .map(name)
                .ok_or(DataplaneError::Missing { what: "map", name })?;
            let data: &MapData = map_data(m);
            let info = data.info().map_err(map_err(format!("read map {name}")))?;
            let actual_ty = info.map_type().map_err(map_err(format!("read map {name}")))?;
            if actual_ty != ty || info.key_size() != key || info.value_size() != value {
                return Err(DataplaneError::MapShape {
                    name,
                    dir: self.dir.join("maps"),
                    detail: format!(
                        "{actual_ty:?} key {} value {}, want {ty:?} key {key} value {value}",
                        info.key_size(),
                        info.value_size()
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn xdp(&mut self) -> Result<&mut Xdp, DataplaneError> {
        let prog = self
            .ebpf
            .program_mut(abi::PROG_INGRESS)
            .ok_or(DataplaneError::Missing {
                what: "program",
                name: abi::PROG_INGRESS,
            })?;
        prog.try_into().map_err(|source| DataplaneError::Program {
            name: abi::PROG_INGRESS,
            source,
        })
    }

    /// Ingress as a dispatcher's component (loaded by the first join).
    pub fn ext(&mut self) -> Result<&mut aya::programs::Extension, DataplaneError> {
        let prog = self
            .ebpf
            .program_mut(abi::PROG_INGRESS_EXT)
            .ok_or(DataplaneError::Missing {
                what: "program",
                name: abi::PROG_INGRESS_EXT,
            })?;
        prog.try_into().map_err(|source| DataplaneError::Program {
            name: abi::PROG_INGRESS_EXT,
            source,
        })
    }

    /// The kernel's id of the loaded component, once loaded.
    pub fn ext_id(&mut self) -> Option<u32> {
        let fd = self.ext().ok()?.fd().ok()?.as_fd().try_clone_to_owned().ok()?;
        kernel::prog_id(&fd).ok()
    }

    /// The ids of the maps this object uses (its programs, and a previous daemon's on
    /// the same pins, use them).
    pub fn our_map_ids(&self) -> Vec<u32> {
        [map::ACTIVE, map::STATS]
            .iter()
            .filter_map(|name| self.ebpf.map(name))
            .filter_map(|m| map_data(m).info().ok())
            .map(|info| info.id())
            .collect()
    }

    pub fn tc(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        let prog = self.ebpf.program_mut(abi::PROG_EGRESS).ok_or(DataplaneError::Missing {
            what: "program",
            name: abi::PROG_EGRESS,
        })?;
        prog.try_into().map_err(|source| DataplaneError::Program {
            name: abi::PROG_EGRESS,
            source,
        })
    }

    /// Pins the loaded programs as `progs/ingress` and `progs/egress`, replacing a
    /// previous daemon's: after adoption the links run these, and an old pin would
    /// only keep a program nothing runs alive.
    pub fn pin_programs(&mut self) -> Result<(), DataplaneError> {
        let progs = self.dir.join("progs");
        std::fs::create_dir_all(&progs).map_err(|source| DataplaneError::Bpffs {
            path: progs.clone(),
            source,
        })?;
        let (ingress, egress) = (progs.join("ingress"), progs.join("egress"));
        for path in [&ingress, &egress] {
            let _ = std::fs::remove_file(path);
        }
        let pin_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: aya::pin::PinError| DataplaneError::Pin {
                path,
                detail: e.to_string(),
            }
        };
        self.xdp()?.pin(&ingress).map_err(pin_err(&ingress))?;
        self.tc()?.pin(&egress).map_err(pin_err(&egress))?;
        let dispatched = progs.join(INGRESS_DISPATCHED);
        if self.ext().is_ok_and(|e| e.fd().is_ok()) {
            let _ = std::fs::remove_file(&dispatched);
            self.ext()?.pin(&dispatched).map_err(pin_err(&dispatched))?;
        }
        Ok(())
    }

    /// Attaches (or adopts the pinned attachment of) XDP and TC egress on `iface`.
    pub fn attach(&mut self, iface: &str, placement: Placement) -> Result<Attachment, DataplaneError> {
        let attachment = attach::attach(self, iface, placement)?;
        self.hold(&attachment);
        Ok(attachment)
    }

    /// The pins of `a`'s links (a dispatcher's component is pinned by libxdp's rules,
    /// not here).
    fn link_pins(&self, a: &Attachment) -> Vec<PathBuf> {
        let links = self.dir.join("links");
        let mut pins = Vec::new();
        if a.xdp_attach == XdpAttach::Link {
            pins.push(attach::xdp_pin(&links, a.xdp_mode, &a.name));
        }
        if a.tc_mode == TcMode::Tcx {
            pins.push(attach::tcx_pin(&links, &a.name));
        }
        pins
    }

    fn hold(&mut self, a: &Attachment) {
        for pin in self.link_pins(a) {
            self.held.retain(|(p, _)| *p != pin);
            if let Ok(fd) = kernel::obj_get(&pin) {
                self.held.push((pin, fd));
            }
        }
    }

    /// Pins again every link of ours whose pin was removed (it stayed attached because
    /// we hold it); returns the pins restored.
    pub fn repin_missing(&self) -> Vec<PathBuf> {
        self.held
            .iter()
            .filter(|(pin, fd)| !pin.exists() && kernel::link_state(fd).is_ok_and(|s| s.ifindex != 0))
            .filter(|(pin, fd)| kernel::obj_pin(fd, pin).is_ok())
            .map(|(pin, _)| pin.clone())
            .collect()
    }

    /// What is wrong with `a` per the kernel, or `None` when both hooks run our
    /// programs on the interface of that name.
    pub fn attachment_problem(&self, a: &Attachment) -> Option<String> {
        attachment_problem(&self.dir, a)
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::Missing { what: "map", name })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing { what: "map", name })
    }

    /// The active slot and its generation (0: nothing loaded yet).
    pub fn active(&self) -> Result<(u32, u64), DataplaneError> {
        live::active(self.map(map::ACTIVE)?, self.map(map::GEN_CONFIG)?).map(|(slot, cfg)| (slot, cfg.generation))
    }

    /// The active slot's config as the kernel holds it: its flags say which tables the
    /// filter reads.
    pub fn active_config(&self) -> Result<abi::GenConfig, DataplaneError> {
        live::active(self.map(map::ACTIVE)?, self.map(map::GEN_CONFIG)?).map(|(_, cfg)| cfg)
    }

    /// Puts `tables` in as the next generation, whole: the idle slot is filled, then
    /// made active with one write; a packet sees either the old policy or the new one.
    /// On any error the active policy is untouched.
    pub fn install(&mut self, tables: &Tables) -> Result<u64, DataplaneError> {
        let (active, generation) = self.active()?;
        let idle = 1 - active.min(1);
        let next = generation + 1;

        // Fresh inner maps, sized to fit: a policy that does not fit fails here,
        // before anything the kernel enforces has changed.
        let v4_host = fill_hash(
            tables
                .v4_host
                .iter()
                .map(|(a, v)| (abi::V4HostKey { addr: a.octets() }, *v)),
            "IPv4 host",
        )?;
        let v6_host = fill_hash(
            tables
                .v6_host
                .iter()
                .map(|(a, v)| (abi::V6HostKey { addr: a.octets() }, *v)),
            "IPv6 host",
        )?;
        let v4_lpm = fill_lpm(
            tables
                .v4_lpm
                .iter()
                .map(|(n, v)| (u32::from(n.prefix_len()), n.addr().octets(), *v)),
            "IPv4 prefix",
        )?;
        let v6_lpm = fill_lpm(
            tables
                .v6_lpm
                .iter()
                .map(|(n, v)| (u32::from(n.prefix_len()), n.addr().octets(), *v)),
            "IPv6 prefix",
        )?;

        set_outer::<HashMap<MapData, abi::V4HostKey, abi::PolicyValue>>(self.map_mut(map::V4_HOST)?, idle, &v4_host)?;
        set_outer::<HashMap<MapData, abi::V6HostKey, abi::PolicyValue>>(self.map_mut(map::V6_HOST)?, idle, &v6_host)?;
        set_outer::<LpmTrie<MapData, [u8; 4], abi::PolicyValue>>(self.map_mut(map::V4_LPM)?, idle, &v4_lpm)?;
        set_outer::<LpmTrie<MapData, [u8; 16], abi::PolicyValue>>(self.map_mut(map::V6_LPM)?, idle, &v6_lpm)?;

        let mut flags = tables.config.flags;
        // The /32s in the host index too, when they fit (hostindex.rs); else the hash map.
        if let Ok(index) = hostindex::layout(tables.v4_host.iter()) {
            self.write_host_index(idle, &index)?;
            flags |= abi::F_V4_HOST_INDEX;
        }
        // Empty tables are not looked up: a miss in them is what every dropped packet
        // of a flood would pay for.
        for (empty, flag) in [
            (tables.v4_host.is_empty(), abi::F_V4_HOST_EMPTY),
            (tables.v4_lpm.is_empty(), abi::F_V4_LPM_EMPTY),
            (tables.v6_host.is_empty(), abi::F_V6_HOST_EMPTY),
            (tables.v6_lpm.is_empty(), abi::F_V6_LPM_EMPTY),
        ] {
            if empty {
                flags |= flag;
            }
        }
        let config = abi::GenConfig {
            generation: next,
            flags,
            flow_tag: flow_tag(next),
            ..tables.config
        };
        let mut cfg: Array<&mut MapData, abi::GenConfig> =
            Array::try_from(self.map_mut(map::GEN_CONFIG)?).map_err(map_err("open ag_gen_cfg"))?;
        cfg.set(idle, config, 0)
            .map_err(map_err("write the generation config"))?;

        let mut active_map: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(map::ACTIVE)?).map_err(map_err("open ag_active"))?;
        active_map
            .set(0, idle, 0)
            .map_err(map_err("switch to the new generation"))?;

        // A write to a map-in-map returns only after an RCU grace period, so once this
        // rewrite returns no packet still reads the slot just left; the next install
        // may overwrite it.
        set_outer::<HashMap<MapData, abi::V4HostKey, abi::PolicyValue>>(self.map_mut(map::V4_HOST)?, idle, &v4_host)?;
        Ok(next)
    }

    /// Makes `slot` the active one again: after an install, the slot it left still
    /// holds the previous generation whole, so a start that fails after installing
    /// puts back what was enforced before it.
    pub fn revert_to(&mut self, slot: u32) -> Result<(), DataplaneError> {
        let mut active_map: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(map::ACTIVE)?).map_err(map_err("open ag_active"))?;
        active_map
            .set(0, slot, 0)
            .map_err(map_err("switch back to the previous generation"))
    }

    /// Cuts `a`'s links from their interface and removes their pins (a start that
    /// fails takes back what it attached).
    pub fn detach(&mut self, a: &Attachment) {
        if a.xdp_attach == XdpAttach::Dispatcher
            && let Some(ifindex) = kernel::if_index(&a.name)
        {
            let our_maps = self.our_map_ids();
            let is_ours = |p: &kernel::ProgInfo| hooks::is_ours(p, &our_maps);
            let _ = dispatcher::leave(ifindex, &is_ours);
        }
        for pin in self.link_pins(a) {
            if let Ok(fd) = kernel::obj_get(&pin) {
                let _ = kernel::link_detach(&fd);
            }
            let _ = std::fs::remove_file(&pin);
            self.held.retain(|(p, _)| *p != pin);
        }
        if a.tc_mode == TcMode::Clsact {
            let _ = aya::programs::tc::qdisc_detach_program(
                &a.name,
                aya::programs::TcAttachType::Egress,
                allowgate_ebpf::PROG_EGRESS,
            );
        }
    }

    /// The per-CPU counters, summed.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        live::counters(self.map(map::STATS)?, self.map(map::MISC)?)
    }

    /// The drop-event ring buffer, for the caller to poll.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>, DataplaneError> {
        let m = self.ebpf.take_map(map::EVENTS).ok_or(DataplaneError::Missing {
            what: "map",
            name: map::EVENTS,
        })?;
        aya::maps::RingBuf::try_from(m).map_err(map_err("open the event ring buffer"))
    }
}

/// The `MapData` behind any `Map` (aya has no accessor for it).
fn map_data(m: &aya::maps::Map) -> &MapData {
    use aya::maps::Map;
    match m {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    }
}

fn set_outer<V: aya::maps::InnerMap>(outer: &mut aya::maps::Map, slot: u32, inner: &V) -> Result<(), DataplaneError> {
    let mut outer: ArrayOfMaps<&mut MapData, V> =
        ArrayOfMaps::try_from(outer).map_err(map_err("open a policy table"))?;
    outer
        .set(slot, inner, 0)
        .map_err(map_err("put a policy table in its slot"))
}

fn fill_hash<K: aya::Pod>(
    entries: impl ExactSizeIterator<Item = (K, abi::PolicyValue)>,
    what: &str,
) -> Result<HashMap<MapData, K, abi::PolicyValue>, DataplaneError> {
    let len = entries.len();
    let mut m = HashMap::<MapData, K, abi::PolicyValue>::create(len.max(1) as u32, BPF_F_NO_PREALLOC)
        .map_err(map_err(format!("create a {what} table of {len} entries")))?;
    for (k, v) in entries {
        m.insert(k, v, 0)
            .map_err(map_err(format!("fill the {what} table ({len} entries)")))?;
    }
    Ok(m)
}

fn fill_lpm<K: aya::Pod>(
    entries: impl ExactSizeIterator<Item = (u32, K, abi::PolicyValue)>,
    what: &str,
) -> Result<LpmTrie<MapData, K, abi::PolicyValue>, DataplaneError> {
    let len = entries.len();
    let mut m = LpmTrie::<MapData, K, abi::PolicyValue>::create(len.max(1) as u32, BPF_F_NO_PREALLOC)
        .map_err(map_err(format!("create a {what} table of {len} entries")))?;
    for (len_bits, addr, v) in entries {
        m.insert(&Key::new(len_bits, addr), v, 0)
            .map_err(map_err(format!("fill the {what} table ({len} entries)")))?;
    }
    Ok(m)
}

/// One BPF_PROG_TEST_RUN of `frame` through the program of `hook`, `repeat` times:
/// the program's return value and the mean time per run. Nothing is sent anywhere.
impl Dataplane {
    pub fn test_run(
        &mut self,
        hook: crate::policy::model::Hook,
        frame: &[u8],
        repeat: u32,
    ) -> Result<aya::programs::TestRunResult, DataplaneError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        };
        match hook {
            crate::policy::model::Hook::Ingress => {
                self.xdp()?.test_run(opts).map_err(|source| DataplaneError::Program {
                    name: abi::PROG_INGRESS,
                    source,
                })
            }
            crate::policy::model::Hook::Egress => self.tc()?.test_run(opts).map_err(|source| DataplaneError::Program {
                name: abi::PROG_EGRESS,
                source,
            }),
        }
    }
}
