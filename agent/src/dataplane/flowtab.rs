//! The agent's view of the flow tables' layout (`lib/flow.h`): how `[state] max_flows`
//! sizes them, the keyed hash that places an unassured flow in its bucket and the bit
//! of a peer in the filter (the same arithmetic as the C), and the mappings through
//! which the agent reads the unassured tables and rebuilds the filter without a system
//! call per entry.

use std::{
    io,
    mem::size_of,
    net::IpAddr,
    os::fd::AsFd as _,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use allowgate_ebpf as abi;
use aya::maps::MapData;

/// How the tables are sized for `max_flows` assured flows per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSizes {
    /// Each family's assured table (LRU hash).
    pub max_flows: u32,
    /// Buckets of each family's unassured table: room for `max_flows / 2` flows (at
    /// least 16,384) in `FLOW_NEW_WAYS` ways, a power of two.
    pub new_buckets: u32,
    /// Words of one generation of the peer filter: 4 bits per assured flow, a power of two.
    pub peer_words: u32,
}

impl FlowSizes {
    pub fn for_max_flows(max_flows: u32) -> FlowSizes {
        let max_flows = max_flows.max(1);
        let new_ways = (max_flows / 2).max(16_384).next_power_of_two();
        FlowSizes {
            max_flows,
            new_buckets: new_ways / abi::FLOW_NEW_WAYS as u32,
            peer_words: (max_flows.next_power_of_two() * 4 / 64).max(64),
        }
    }

    /// Unassured flows the tables hold per family.
    pub fn new_flows(&self) -> u64 {
        u64::from(self.new_buckets) * abi::FLOW_NEW_WAYS as u64
    }
}

use abi::flow_mix as mix;

fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(w)
}

fn ports(lport: u16, rport: u16, proto: u8) -> u64 {
    u64::from(lport) | (u64::from(rport) << 16) | (u64::from(proto) << 32)
}

/// `ag_flow_hash` of an IPv4 key: the addresses as they sit in memory.
pub fn hash_v4(key: &abi::FlowV4Key, hash_key: u64) -> u64 {
    let addrs = u64::from(u32::from_le_bytes(key.local)) | (u64::from(u32::from_le_bytes(key.remote)) << 32);
    let h = mix(hash_key, addrs);
    mix(h, ports(key.lport, key.rport, key.proto))
}

pub fn hash_v6(key: &abi::FlowV6Key, hash_key: u64) -> u64 {
    let mut h = hash_key;
    for bytes in [&key.local[..8], &key.local[8..], &key.remote[..8], &key.remote[8..]] {
        h = mix(h, word(bytes));
    }
    mix(h, ports(key.lport, key.rport, key.proto))
}

/// `ag_flow_check_of`: the check a way holds for a hash, never 0.
pub fn check_of(h: u64) -> u32 {
    (h >> 32) as u32 | 1
}

/// `ag_flow_peer_bit`: the filter bit of a remote address in a generation of `words`.
pub fn peer_bit(remote: IpAddr, words: u32) -> u32 {
    let folded = match remote {
        IpAddr::V4(a) => u32::from_le_bytes(a.octets()),
        IpAddr::V6(a) => {
            let o = a.octets();
            (0..4).fold(0u32, |acc, i| {
                acc ^ u32::from_le_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
    };
    ((u64::from(folded).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32) & (words * 64 - 1)
}

/// A map of the object mapped into the agent's memory (`BPF_F_MMAPABLE` arrays),
/// unmapped on drop. The programs write it concurrently: readers take what they see.
pub struct Mapped {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapped {
    /// Maps `len` bytes of `map` (its max_entries times its value size), read-write.
    pub fn new(map: &MapData, len: usize) -> io::Result<Mapped> {
        let page = 4096;
        let len = len.div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks the length
        // against the map and we never hand out references that outlive it.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                map.fd().as_fd(),
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Mapped {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?,
            len,
        })
    }

    /// Element `i` of type T (a Pod of the map's value size), copied out.
    pub fn get<T: aya::Pod>(&self, i: usize) -> Option<T> {
        let at = i.checked_mul(size_of::<T>())?;
        if at + size_of::<T>() > self.len {
            return None;
        }
        // SAFETY: in bounds (checked), T is plain data; the programs may write it at
        // the same time, which a volatile read of a Pod tolerates (a torn value is
        // what the checks in it exist for).
        Some(unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(at).cast::<T>()) })
    }

    pub fn set<T: aya::Pod>(&self, i: usize, value: T) -> bool {
        let Some(at) = i.checked_mul(size_of::<T>()) else {
            return false;
        };
        if at + size_of::<T>() > self.len {
            return false;
        }
        // SAFETY: as in `get`.
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(at).cast::<T>(), value) };
        true
    }

    /// Word `i` as an atomic: the programs OR bits into the same words (lock or).
    pub fn word(&self, i: usize) -> Option<&AtomicU64> {
        let at = i.checked_mul(8)?;
        if at + 8 > self.len {
            return None;
        }
        // SAFETY: in bounds, 8-aligned (the mapping is page-aligned), and the kernel's
        // atomics and ours agree on a u64 in shared memory.
        Some(unsafe { &*self.ptr.as_ptr().add(at).cast::<AtomicU64>() })
    }

    /// The peer filter's word of `generation` holding `bit` (its entries put a word of
    /// each generation side by side: `struct ag_flow_peer_word`).
    pub fn peer_word(&self, generation: u32, bit: u32) -> Option<&AtomicU64> {
        self.word((bit / 64 * 2 + (generation & 1)) as usize)
    }

    /// Sets bit `bit` of generation `generation` atomically.
    pub fn set_bit(&self, generation: u32, bit: u32) {
        if let Some(w) = self.peer_word(generation, bit) {
            w.fetch_or(1 << (bit % 64), Ordering::SeqCst);
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A family's unassured table as mapped: its buckets and, apart, their checks.
pub struct Tables {
    pub buckets: Mapped,
    pub checks: Mapped,
}

macro_rules! place {
    ($(#[$doc:meta])* $name:ident, $key:ty, $bucket:ty, $way:ident, $hash:ident) => {
        $(#[$doc])*
        pub fn $name(table: &Tables, buckets: u32, hash_key: u64, key: &$key, value: abi::FlowValue) -> bool {
            let h = $hash(key, hash_key);
            let index = (h as u32 & (buckets - 1)) as usize;
            let (Some(mut b), Some(mut c)) = (table.buckets.get::<$bucket>(index), table.checks.get::<abi::FlowChecks>(index))
            else {
                return false;
            };
            let keys: Vec<&$key> = b.way.iter().map(|w| &w.key).collect();
            let i = choose(&c.check, &b.stamp, &keys, key, check_of(h));
            b.way[i] = abi::$way { key: *key, value };
            b.stamp[i] = stamp_of(value.seen_ns);
            // As the programs write a way: its check cleared first and set last.
            c.check[i] = 0;
            let cleared = table.checks.set(index, c);
            let written = table.buckets.set(index, b);
            c.check[i] = check_of(h);
            cleared && written && table.checks.set(index, c)
        }
    };
}

place!(
    /// Puts `value` (an unassured flow of `key`) in its bucket as the programs would
    /// (`ag_flow_new_find`): the way holding the same key, else an empty one, else the
    /// oldest. Returns false when the bucket is out of the mapping.
    place_v4, abi::FlowV4Key, abi::FlowBucketV4, FlowNewV4, hash_v4
);
place!(
    /// `place_v4` for an IPv6 flow.
    place_v6, abi::FlowV6Key, abi::FlowBucketV6, FlowNewV6, hash_v6
);

/// `ag_flow_stamp`: a bucket's time of a flow.
pub fn stamp_of(seen_ns: u64) -> u32 {
    (seen_ns >> 20) as u32
}

/// The way for a key: its own, else the first empty, else the oldest by stamp (the
/// last of equals, as the C's `>=`).
fn choose<K: PartialEq>(check: &[u32], stamp: &[u32], keys: &[&K], key: &K, want: u32) -> usize {
    if let Some(i) = (0..check.len()).find(|&i| check[i] == want && keys[i] == key) {
        return i;
    }
    if let Some(i) = check.iter().position(|&c| c == 0) {
        return i;
    }
    let now = stamp.iter().copied().max().unwrap_or(0);
    let mut best = (0, 0u32);
    for (i, &s) in stamp.iter().enumerate() {
        let age = now.wrapping_sub(s);
        if age >= best.1 {
            best = (i, age);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_max_flows() {
        let s = FlowSizes::for_max_flows(65_536);
        assert_eq!((s.new_buckets, s.peer_words), (8192, 4096));
        assert_eq!(s.new_flows(), 32_768);
        let s = FlowSizes::for_max_flows(262_144);
        assert_eq!((s.new_buckets, s.new_flows(), s.peer_words), (32_768, 131_072, 16_384));
        // Small tables keep a floor of unassured room; odd sizes round up.
        let s = FlowSizes::for_max_flows(1000);
        assert_eq!((s.new_flows(), s.peer_words), (16_384, 64));
        assert!(s.new_buckets.is_power_of_two() && s.peer_words.is_power_of_two());
    }

    #[test]
    fn the_way_is_the_keys_own_then_empty_then_oldest() {
        let (a, b, c) = (1u8, 2u8, 3u8);
        assert_eq!(choose(&[5, 7], &[10, 1], &[&a, &b], &b, 7), 1);
        assert_eq!(choose(&[5, 0, 9], &[10, 1, 0], &[&a, &b, &c], &c, 7), 1);
        assert_eq!(choose(&[5, 6, 9], &[10, 3, 7], &[&a, &b, &c], &c, 7), 1);
    }
}
