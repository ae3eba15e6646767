//! The allowgate BPF object, built from `c/` by `build.rs`, and `#[repr(C)]` mirrors of
//! the structs in `c/abi.h`. The size asserts below keep the two in step; change both
//! or neither.

#![no_std]

/// The compiled BPF object (XDP `allowgate_ingress`, TC `allowgate_egress`).
pub static FILTER_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/filter.bpf.o"));
/// An XDP dispatcher in libxdp's multi-prog format (`c/dispatcher.bpf.c`).
pub static DISPATCHER_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dispatcher.bpf.o"));
/// Programs of "another owner" for tests/share.rs: tcx egress counters (one that
/// passes on, one that ends the chain) and an XDP program that ends a dispatcher's
/// chain on XDP_PASS.
pub static SHARE_TEST_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/share_test.bpf.o"));
/// A do-nothing XDP program, the yardstick of the bench.
pub static NOOP_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/noop.bpf.o"));
/// The real-traffic bench's programs: a live-frame generator, XDP_DROP and XDP_PASS.
/// The filter as a next build that appends one reason would be (for the upgrade test).
pub static FILTER_NEXT_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/filter-next.bpf.o"));
pub static TRAFFIC_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/traffic.bpf.o"));

/// Program names in the object.
pub const PROG_INGRESS: &str = "allowgate_ingress";
pub const PROG_EGRESS: &str = "allowgate_egress";
/// Ingress as a component of a libxdp dispatcher (freplace of one of its slots).
pub const PROG_INGRESS_EXT: &str = "allowgate_xdp";
/// The dispatcher's program and its configuration (`.rodata`), names libxdp knows it by.
pub const PROG_DISPATCHER: &str = "xdp_dispatcher";
pub const GLOBAL_DISPATCHER_CONF: &str = "conf";
/// A do-nothing extension in the dispatcher's object: whether the kernel takes one.
pub const PROG_PROBE_EXT: &str = "ag_probe_ext";
pub const PROG_NOOP: &str = "noop";
pub const PROG_TRAFFIC_GEN: &str = "traffic_gen";
pub const PROG_TRAFFIC_DROP: &str = "traffic_drop";
pub const PROG_TRAFFIC_PASS: &str = "traffic_pass";
/// The generator's load-time constant: the ifindex it redirects to (`__u32`).
pub const GLOBAL_TRAFFIC_TARGET: &str = "target_ifindex";

/// Map names in the object (and so the names of their pins).
pub mod map {
    pub const V4_HOST: &str = "ag_v4_host";
    pub const V4_LPM: &str = "ag_v4_lpm";
    pub const V6_HOST: &str = "ag_v6_host";
    pub const V6_LPM: &str = "ag_v6_lpm";
    pub const GEN_CONFIG: &str = "ag_gen_cfg";
    pub const ACTIVE: &str = "ag_active";
    pub const STATS: &str = "ag_stats";
    pub const MISC: &str = "ag_misc";
    pub const EVENTS: &str = "ag_events";
    pub const RATELIMIT: &str = "ag_ratelimit";
    pub const V4_DYN: &str = "ag_v4_dyn";
    pub const V6_DYN: &str = "ag_v6_dyn";
    pub const DNS_SERVERS: &str = "ag_dns_servers";
    pub const DNS_CTL: &str = "ag_dns_ctl";
    pub const DNS_RELEASE: &str = "ag_dns_release";
    pub const DNS_FRAMES: &str = "ag_dns_frames";
    /// Queries sent to a resolver (`DnsReleaseKey` -> `u64` ktime when sent), LRU:
    /// only answers to these are held.
    pub const DNS_QUERIES: &str = "ag_dns_queries";
    /// `u32` of `DYN_*_EMPTY` bits: which learned tables the filter need not look in.
    pub const DYN_EMPTY: &str = "ag_dyn_empty";
    /// Per-CPU `u64`: the jiffy in which the event limiter last said no.
    pub const EVENT_QUIET: &str = "ag_event_quiet";
    /// `ag_abi[0]`: the `ABI_VERSION` of the build that pinned the maps.
    pub const ABI: &str = "ag_abi";
    /// Assured flows (`FlowV4Key`/`FlowV6Key` -> `FlowValue`), LRU, `[state] max_flows`.
    pub const FLOWS_V4: &str = "ag_flows_v4";
    pub const FLOWS_V6: &str = "ag_flows_v6";
    /// Unassured flows: an mmapable array of `FlowBucketV4`/`FlowBucketV6`.
    pub const FLOWS_NEW_V4: &str = "ag_flows_new_v4";
    pub const FLOWS_NEW_V6: &str = "ag_flows_new_v6";
    /// The checks of each bucket of `FLOWS_NEW_V4`/`FLOWS_NEW_V6`: an mmapable array of
    /// `FlowChecks`, entry i for bucket i. A table and its checks are one: replaced together.
    pub const FLOWS_CHK_V4: &str = "ag_flows_chk_v4";
    pub const FLOWS_CHK_V6: &str = "ag_flows_chk_v6";
    /// The filter of remotes with an assured flow: entries of a `u64` word of each of its
    /// two generations, mmapable.
    pub const FLOW_PEERS: &str = "ag_flow_peers";
    /// `ag_flow_ctl[0]`: `FlowCtl`, written by the agent only.
    pub const FLOW_CTL: &str = "ag_flow_ctl";
    /// Each socket's own DNS queries (`DnsSocketKey` -> `DnsSocketValue`), LRU.
    pub const DNS_SOCKETS: &str = "ag_dns_sockets";
    /// The host index of each slot's IPv4 /32s: `HOST_INDEX_SIZE` `HostIndexV4` entries
    /// per slot, mmapable.
    pub const V4_HOST_INDEX: &str = "ag_v4_host_index";
    /// The host index's policy values: `HOST_VALUES` `PolicyValue`s per slot, mmapable.
    pub const HOST_VALUES: &str = "ag_host_values";
    /// Every map the agent pins, in a stable order.
    pub const ALL: [&str; 31] = [
        V4_HOST,
        V4_LPM,
        V6_HOST,
        V6_LPM,
        GEN_CONFIG,
        ACTIVE,
        STATS,
        MISC,
        EVENTS,
        RATELIMIT,
        V4_DYN,
        V6_DYN,
        DNS_SERVERS,
        DNS_CTL,
        DNS_RELEASE,
        DNS_FRAMES,
        DNS_QUERIES,
        DYN_EMPTY,
        EVENT_QUIET,
        ABI,
        FLOWS_V4,
        FLOWS_V6,
        FLOWS_NEW_V4,
        FLOWS_NEW_V6,
        FLOWS_CHK_V4,
        FLOWS_CHK_V6,
        FLOW_PEERS,
        FLOW_CTL,
        DNS_SOCKETS,
        V4_HOST_INDEX,
        HOST_VALUES,
    ];
}

/// Load-time constants (`volatile const` globals) the loader may override.
pub mod global {
    /// Drop events per second each CPU may emit (`__u64`).
    pub const EVENT_RATE: &str = "event_rate_per_sec";
    /// Events a CPU may emit in a burst (`__u64`).
    pub const EVENT_BURST: &str = "event_burst";
    /// How long after its query an answer is still held, ns (`__u64`, default 10 s).
    pub const DNS_QUERY_TTL: &str = "dns_query_ttl_ns";
    /// The key of the flow hash (`__u64`): the unassured tables' buckets, fragments.
    pub const FLOW_HASH_KEY: &str = "flow_hash_key";
    /// Buckets of each unassured table, minus one (`__u32`, a power of two minus one).
    pub const FLOW_NEW_MASK: &str = "flow_new_mask";
    /// Words of one generation of the peer filter (`__u32`, a power of two).
    pub const FLOW_PEER_WORDS: &str = "flow_peer_words";
}

pub const SLOTS: u32 = 2;
pub const MAX_PORT_RULES: usize = 16;
pub const MAX_ETHERTYPES: usize = 8;
pub const MAX_VLAN_DEPTH: usize = 2;
pub const MAX_V6_EXT_HDRS: usize = 8;

pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;
pub const DIR_MAX: usize = 2;
pub const VERDICT_PASS: u8 = 0;
pub const VERDICT_DROP: u8 = 1;
pub const VERDICT_MAX: usize = 2;

include!(concat!(env!("OUT_DIR"), "/reasons.rs"));

impl Reason {
    pub fn from_u8(v: u8) -> Option<Reason> {
        Reason::ALL.get(v as usize).copied()
    }
}

pub const F_ENFORCE: u32 = 1 << 0;
pub const F_ARP: u32 = 1 << 1;
pub const F_ND: u32 = 1 << 2;
pub const F_ICMP_ERRORS: u32 = 1 << 3;
pub const F_DHCP: u32 = 1 << 4;
/// The slot's table of that kind is empty: the filter skips the lookup (set by install).
pub const F_V4_HOST_EMPTY: u32 = 1 << 5;
pub const F_V4_LPM_EMPTY: u32 = 1 << 6;
pub const F_V6_HOST_EMPTY: u32 = 1 << 7;
pub const F_V6_LPM_EMPTY: u32 = 1 << 8;
/// Connection tracking: return paths and related essentials need a tracked flow.
pub const F_STATEFUL: u32 = 1 << 9;
/// With tracking: out-of-window TCP segments pass (still changing nothing).
pub const F_LIBERAL: u32 = 1 << 10;
/// The slot's IPv4 /32s are in the host index too, and the filter reads them there.
pub const F_V4_HOST_INDEX: u32 = 1 << 11;

/// `enum ag_flow_state`: the index of each state's timeout in `GenConfig::flow_timeout_s`.
pub const FLOW_TCP_SYN_SENT: u8 = 0;
pub const FLOW_TCP_ESTABLISHED: u8 = 1;
pub const FLOW_TCP_CLOSING: u8 = 2;
pub const FLOW_TCP_CLOSE: u8 = 3;
pub const FLOW_UDP: u8 = 4;
pub const FLOW_UDP_STREAM: u8 = 5;
pub const FLOW_ICMP: u8 = 6;
pub const FLOW_OTHER: u8 = 7;
pub const FLOW_STATES: usize = 8;
/// The build's default capacity of each family's assured table (`[state] max_flows` sets it).
pub const FLOW_MAX: u32 = 65536;
/// Ways of a bucket of the unassured tables.
pub const FLOW_NEW_WAYS: usize = 4;
/// `FlowValue::opened_by`: a direction (`DIR_*`), or the agent's seeding.
pub const FLOW_BY_SEED: u8 = 2;
/// Bits of `FlowSeq::flags`.
pub const SEQ_SEEN: u8 = 1 << 0;
pub const SEQ_END: u8 = 1 << 1;
pub const SEQ_ACKED: u8 = 1 << 2;
pub const SEQ_WSCALE: u8 = 1 << 3;
pub const SEQ_SCALE_KNOWN: u8 = 1 << 4;
pub const SEQ_FRAGS: u8 = 1 << 5;
/// Bits of `FlowValue::flags`.
pub const FLOW_F_ASSURED: u8 = 1 << 0;
pub const FLOW_F_ANSWERED: u8 = 1 << 1;
/// Slots of the fragment table, and how long a first fragment vouches for the rest.
pub const FRAG_SLOTS: u32 = 16384;
pub const FRAG_TTL_NS: u64 = 5_000_000_000;
/// Each socket's own DNS query slots, and how many sockets the table keeps.
pub const DNS_SOCKET_QUERIES: usize = 16;
pub const DNS_SOCKETS_MAX: u32 = 16384;

/// Bits of `map::DYN_EMPTY[0]`: that family's learned table has no entry.
pub const DYN_V4_EMPTY: u32 = 1 << 0;
pub const DYN_V6_EMPTY: u32 = 1 << 1;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ANY: u8 = 255;

pub const SLOT_OUT_REMOTE: u8 = 1 << 0;
pub const SLOT_IN_REMOTE: u8 = 1 << 1;
pub const SLOT_IN_LOCAL: u8 = 1 << 2;
pub const SLOT_OUT_LOCAL: u8 = 1 << 3;

pub const STATS_ENTRIES: usize = DIR_MAX * VERDICT_MAX * REASON_CAPACITY;
pub const MISC_EVENTS_SUPPRESSED: u32 = 0;
pub const MISC_EVENTS_LOST: u32 = 1;
pub const MISC_DNS_HELD: u32 = 2;
pub const MISC_DNS_UNHELD: u32 = 3;
/// Answers from a resolver that no fresh query of this host asked for: passed unheld.
pub const MISC_DNS_UNSOLICITED: u32 = 4;
/// Flows the programs made assured (added to the assured tables).
pub const MISC_FLOW_INSERTS: u32 = 5;
/// Assured flows the programs removed because they found them expired.
pub const MISC_FLOW_REMOVED: u32 = 6;
/// Answers passed at once with a copy to the learner: no give-back path in force.
pub const MISC_DNS_PASSED: u32 = 7;
/// Unassured flows the programs added.
pub const MISC_FLOW_NEW: u32 = 8;
/// Unassured flows pushed out, unexpired, by another.
pub const MISC_FLOW_NEW_EVICTED: u32 = 9;
/// First fragments noted for their datagram's other fragments.
pub const MISC_FRAG_NOTED: u32 = 10;
pub const MISC_MAX: usize = 11;
/// Slots of `ag_misc` (room to append counters without changing the pinned map).
pub const MISC_CAPACITY: usize = 32;

/// `DnsCtl::give_back`: how held answers go back to the stack; `NONE` holds nothing.
pub const GIVE_BACK_NONE: u32 = 0;
pub const GIVE_BACK_LIVE_FRAMES: u32 = 1;
pub const GIVE_BACK_LOOPBACK: u32 = 2;

pub const DYN_MAX: u32 = 16384;
pub const MAX_DNS_SERVERS: u32 = 16;
pub const DNS_RELEASE_MAX: u32 = 1024;
pub const DNS_QUERIES_MAX: u32 = 4096;
/// The default of `global::DNS_QUERY_TTL`.
pub const DNS_QUERY_TTL_NS: u64 = 10_000_000_000;
pub const DNS_FRAME_MAX: usize = 1536;

/// The `ag_stats` index of a (direction, verdict, reason) counter.
pub const fn stats_index(direction: u8, verdict: u8, reason: u8) -> u32 {
    ((direction as u32 * VERDICT_MAX as u32) + verdict as u32) * REASON_CAPACITY as u32 + reason as u32
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    pub generation: u64,
    pub flags: u32,
    pub n_ethertypes: u32,
    pub ethertypes: [u16; MAX_ETHERTYPES],
    /// Idle timeout in seconds of each flow state (`FLOW_*`).
    pub flow_timeout_s: [u32; FLOW_STATES],
    /// Unique per install, never 0: flows remember what this generation allowed by it.
    pub flow_tag: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRule {
    pub proto: u8,
    pub slots: u8,
    pub _pad: u16,
    pub port_lo: u16,
    pub port_hi: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    pub n_rules: u32,
    pub _pad: u32,
    pub rules: [PortRule; MAX_PORT_RULES],
}

impl PolicyValue {
    pub fn rules(&self) -> &[PortRule] {
        &self.rules[..(self.n_rules as usize).min(MAX_PORT_RULES)]
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct V4HostKey {
    pub addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct V6HostKey {
    pub addr: [u8; 16],
}

/// `struct ag_host_index_v4`: an entry of the host index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostIndexV4 {
    /// The address's octets as the word the filter reads them into (`u32::from_ne_bytes`).
    pub addr: u32,
    /// 1 + its value's index among the slot's values; 0: the entry is empty.
    pub value: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub generation: u64,
    pub ifindex: u32,
    pub direction: u8,
    pub reason: u8,
    pub enforced: u8,
    pub family: u8,
    pub ethertype: u16,
    pub l4proto: u8,
    pub _pad: u8,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DynValue {
    pub policy: PolicyValue,
    pub expires_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsServerKey {
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsCtl {
    pub heartbeat_ns: u64,
    pub stale_after_ns: u64,
    /// `GIVE_BACK_*`: answers are held only while it is not `GIVE_BACK_NONE`.
    pub give_back: u32,
    pub pad: u32,
    /// Written by the agent alone (status and metrics read them from the kernel).
    pub given_back: u64,
    pub give_back_failed: u64,
}

/// Key of `ag_dns_release` and of `ag_dns_queries`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsReleaseKey {
    pub server: [u8; 16],
    pub dns_id: u16,
    pub client_port: u16,
}

/// Header of an answer on `ag_dns_frames`; `len` bytes of frame follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsFrameHeader {
    pub ifindex: u32,
    pub len: u32,
    /// 1: the program dropped it and the agent gives it back; 0: it passed (a copy).
    pub held: u32,
    pub pad: u32,
}

/// Key of `ag_flows_v4`: a flow from this host's side (abi.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowV4Key {
    pub local: [u8; 4],
    pub remote: [u8; 4],
    pub lport: u16,
    pub rport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Key of `ag_flows_v6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowV6Key {
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub lport: u16,
    pub rport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// What a TCP flow knows of one direction's sender: its sequence window (abi.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSeq {
    pub end: u32,
    pub maxend: u32,
    pub maxwin: u32,
    pub maxack: u32,
    pub scale: u8,
    /// `SEQ_*`.
    pub flags: u8,
    pub _pad: u16,
}

/// Value of the flow tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// `CLOCK_MONOTONIC_COARSE` ns of the flow's last packet.
    pub seen_ns: u64,
    pub state: u8,
    pub opened_by: u8,
    /// What the tables of the generation tagged `tag` allowed of the flow, by direction.
    pub allowed: u8,
    /// `FLOW_F_*`.
    pub flags: u8,
    pub _pad: u32,
    pub tag: u64,
    /// TCP: by the direction its sender's segments go (`DIR_*`).
    pub seq: [FlowSeq; 2],
}

/// One way of an unassured bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowNewV4 {
    pub key: FlowV4Key,
    pub value: FlowValue,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowNewV6 {
    pub key: FlowV6Key,
    pub value: FlowValue,
}

/// A bucket's checks (`struct ag_flow_checks`), apart from the bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowChecks {
    /// Each way's key hash (never 0) while it holds a flow; 0: empty.
    pub check: [u32; FLOW_NEW_WAYS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowBucketV4 {
    /// When each way's flow was last seen: `CLOCK_MONOTONIC_COARSE` ns >> 20.
    pub stamp: [u32; FLOW_NEW_WAYS],
    pub way: [FlowNewV4; FLOW_NEW_WAYS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowBucketV6 {
    pub stamp: [u32; FLOW_NEW_WAYS],
    pub way: [FlowNewV6; FLOW_NEW_WAYS],
}

/// `ag_flow_ctl[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCtl {
    pub seeded: u64,
    pub migrated: u64,
    /// The key of the flow hash the tables were filled with (0: none chosen yet).
    pub hash_key: u64,
    /// The peer filter's generation the programs set bits in (0 or 1).
    pub peer_gen: u32,
    /// 1 while the agent rebuilds the other generation.
    pub peer_building: u32,
}

/// A fragment's datagram (`struct ag_frag_key`, lib/frag.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// IPv4 in the first 4 bytes, the rest 0.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}

/// One step of the keyed flow hash (`ag_flow_mix`, lib/flow.h).
pub const fn flow_mix(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 31)
}

impl FragKey {
    /// The slot of `ag_frags` its datagram takes under the flow hash key (`ag_frag_hash`).
    pub fn slot(&self, hash_key: u64) -> u32 {
        let mut bytes = [0u8; 40];
        bytes[..16].copy_from_slice(&self.src);
        bytes[16..32].copy_from_slice(&self.dst);
        bytes[32..36].copy_from_slice(&self.id.to_ne_bytes());
        bytes[36] = self.proto;
        bytes[37] = self.family;
        let mut h = hash_key;
        let mut i = 0;
        while i < 5 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
            h = flow_mix(h, u64::from_le_bytes(w));
            i += 1;
        }
        (h as u32) & (FRAG_SLOTS - 1)
    }
}

/// Key of `ag_dns_sockets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsSocketKey {
    pub server: [u8; 16],
    pub client_port: u16,
    pub _pad: u16,
}

/// Value of `ag_dns_sockets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsSocketValue {
    pub sent: [u32; DNS_SOCKET_QUERIES],
    pub id: [u16; DNS_SOCKET_QUERIES],
    pub next: u32,
}

/// Slots of a libxdp dispatcher (`MAX_DISPATCHER_ACTIONS` in libxdp).
pub const DISPATCHER_SLOTS: usize = 10;
/// The first byte of a version 2+ dispatcher's configuration.
pub const DISPATCHER_MAGIC: u8 = 236;
/// The protocol version this build speaks.
pub const DISPATCHER_VERSION: u8 = 2;
/// What an empty slot returns; always one of a slot's chain call actions.
pub const DISPATCHER_STUB_RET: u32 = 31;

/// The configuration of a libxdp dispatcher (`struct xdp_dispatcher_config`, protocol
/// version 2), as `c/dispatcher.bpf.c` declares it and libxdp reads it from the map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatcherConfig {
    pub magic: u8,
    pub dispatcher_version: u8,
    pub num_progs_enabled: u8,
    pub is_xdp_frags: u8,
    /// Per slot: a bit per XDP action after which the next slot runs.
    pub chain_call_actions: [u32; DISPATCHER_SLOTS],
    /// Per slot: the run priority the slot's program was placed by (lowest first).
    pub run_prios: [u32; DISPATCHER_SLOTS],
    /// Per slot: `BPF_F_XDP_HAS_FRAGS` when its program takes multi-buffer frames.
    pub program_flags: [u32; DISPATCHER_SLOTS],
}

const _: () = assert!(core::mem::size_of::<DispatcherConfig>() == 124);

// The C side has the same sizes; `build.rs` compiles a check of them with clang.
const _: () = assert!(core::mem::size_of::<GenConfig>() == 72);
const _: () = assert!(core::mem::size_of::<HostIndexV4>() == 8);
const _: () = assert!(core::mem::size_of::<FlowV4Key>() == 16);
const _: () = assert!(core::mem::size_of::<FlowV6Key>() == 40);
const _: () = assert!(core::mem::size_of::<FlowSeq>() == 20);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 64);
const _: () = assert!(core::mem::size_of::<FlowChecks>() == 16);
const _: () = assert!(core::mem::size_of::<FlowBucketV4>() == 16 + 4 * 80);
const _: () = assert!(core::mem::size_of::<FlowBucketV6>() == 16 + 4 * 104);
const _: () = assert!(core::mem::size_of::<FlowCtl>() == 32);
const _: () = assert!(core::mem::size_of::<DnsSocketKey>() == 20);
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);
const _: () = assert!(core::mem::size_of::<DnsSocketValue>() == 100);
const _: () = assert!(core::mem::size_of::<PortRule>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8 + 8 * MAX_PORT_RULES);
const _: () = assert!(core::mem::size_of::<V4HostKey>() == 4);
const _: () = assert!(core::mem::size_of::<V6HostKey>() == 16);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<Event>() == 64);
const _: () = assert!(core::mem::size_of::<DynValue>() == 144);
const _: () = assert!(core::mem::size_of::<DnsCtl>() == 40);
const _: () = assert!(core::mem::size_of::<DnsFrameHeader>() == 16);
const _: () = assert!(core::mem::size_of::<DnsReleaseKey>() == 20);

#[cfg(feature = "aya")]
mod pod {
    // SAFETY: plain #[repr(C)] structs of integers with explicit padding fields, so
    // every byte pattern is a valid value and none is uninitialised.
    unsafe impl aya::Pod for super::GenConfig {}
    unsafe impl aya::Pod for super::PortRule {}
    unsafe impl aya::Pod for super::PolicyValue {}
    unsafe impl aya::Pod for super::V4HostKey {}
    unsafe impl aya::Pod for super::V6HostKey {}
    unsafe impl aya::Pod for super::HostIndexV4 {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::DynValue {}
    unsafe impl aya::Pod for super::DnsServerKey {}
    unsafe impl aya::Pod for super::DnsCtl {}
    unsafe impl aya::Pod for super::DnsReleaseKey {}
    unsafe impl aya::Pod for super::FlowV4Key {}
    unsafe impl aya::Pod for super::FlowV6Key {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::FlowSeq {}
    unsafe impl aya::Pod for super::FlowChecks {}
    unsafe impl aya::Pod for super::FlowBucketV4 {}
    unsafe impl aya::Pod for super::FlowBucketV6 {}
    unsafe impl aya::Pod for super::FlowCtl {}
    unsafe impl aya::Pod for super::DnsSocketKey {}
    unsafe impl aya::Pod for super::DnsSocketValue {}
    unsafe impl aya::Pod for super::DispatcherConfig {}
}
