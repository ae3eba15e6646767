//! The host index (abi.h, lib/policy.h): a generation's IPv4 /32s laid out in an
//! open-addressed table that the filter reads inline, two array reads, instead of the
//! kernel's hash lookup (a call, a jhash and a memcmp) on every packet from a catalog
//! peer. The slot's hash map stays the table of record (`status` counts it); the index
//! is laid out from the same entries and written beside it, for the idle slot only,
//! before the slot goes live.
//!
//! A /32 lies in the first free entry of the `HOST_INDEX_PROBES` from its home, so the
//! filter's search, which ends at an empty entry or after the probes, finds every /32
//! and nothing else. A generation whose /32s don't all fit that way (more than half the
//! entries, a crowded run of homes, more distinct values than `HOST_VALUES`) is not
//! indexed: the filter reads its hash map, as before.

use std::{collections::HashMap, net::Ipv4Addr};

use allowgate_ebpf::{self as abi, map};

use super::{Dataplane, DataplaneError, flowtab::Mapped, map_data};

/// A slot's index: every entry, and the distinct values the entries point at.
pub struct HostIndex {
    pub entries: Vec<abi::HostIndexV4>,
    pub values: Vec<abi::PolicyValue>,
}

/// Why a generation's /32s are left to the hash map.
#[derive(Debug, PartialEq, Eq)]
pub enum Unindexed {
    /// No /32 at all: nothing to look up (`F_V4_HOST_EMPTY` skips the lookup).
    Empty,
    /// More /32s than half the entries.
    TooMany(usize),
    /// More distinct port-rule sets than the values hold.
    TooManyValues(usize),
    /// This /32 found no free entry within the probes from its home.
    Crowded(Ipv4Addr),
}

/// The word the filter reads an address into (`union ag_addr.v4`, the host's order).
fn word(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// An address's home entry (`ag_host_index_v4()`).
pub fn home(addr: Ipv4Addr) -> u32 {
    word(addr).wrapping_mul(abi::HOST_INDEX_MUL) >> (32 - abi::HOST_INDEX_BITS)
}

/// Lays out `hosts` (each /32 once, as `Tables::v4_host` holds them).
pub fn layout<'a>(
    hosts: impl ExactSizeIterator<Item = (&'a Ipv4Addr, &'a abi::PolicyValue)>,
) -> Result<HostIndex, Unindexed> {
    let size = abi::HOST_INDEX_SIZE as usize;
    match hosts.len() {
        0 => return Err(Unindexed::Empty),
        n if n > size / 2 => return Err(Unindexed::TooMany(n)),
        _ => {}
    }
    let mut entries = vec![abi::HostIndexV4::default(); size];
    let mut values: Vec<abi::PolicyValue> = Vec::new();
    let mut value_of: HashMap<abi::PolicyValue, u32> = HashMap::new();
    for (addr, value) in hosts {
        let next = values.len() as u32;
        let v = *value_of.entry(*value).or_insert(next);
        if v == next {
            values.push(*value);
            if values.len() > abi::HOST_VALUES as usize {
                return Err(Unindexed::TooManyValues(values.len()));
            }
        }
        let home = home(*addr) as usize;
        let free = (0..abi::HOST_INDEX_PROBES as usize)
            .map(|i| (home + i) % size)
            .find(|&at| entries[at].value == 0)
            .ok_or(Unindexed::Crowded(*addr))?;
        entries[free] = abi::HostIndexV4 {
            addr: word(*addr),
            value: v + 1,
        };
    }
    Ok(HostIndex { entries, values })
}

impl HostIndex {
    /// What the filter's search finds for `addr` (the model of `ag_host_index_v4()`).
    pub fn find(&self, addr: Ipv4Addr) -> Option<&abi::PolicyValue> {
        let size = self.entries.len();
        let home = home(addr) as usize;
        for i in 0..abi::HOST_INDEX_PROBES as usize {
            let e = &self.entries[(home + i) % size];
            if e.value == 0 {
                return None;
            }
            if e.addr == word(addr) {
                return self.values.get(((e.value - 1) & (abi::HOST_VALUES - 1)) as usize);
            }
        }
        None
    }
}

impl Dataplane {
    /// Writes `index` into `slot`'s part of the index maps. The slot must be idle: no
    /// packet reads it (install's contract for the inner maps holds for these too).
    pub(super) fn write_host_index(&self, slot: u32, index: &HostIndex) -> Result<(), DataplaneError> {
        let size = abi::HOST_INDEX_SIZE as usize;
        let entries = self.mapped_array(
            map::V4_HOST_INDEX,
            abi::SLOTS as usize * size,
            size_of::<abi::HostIndexV4>(),
        )?;
        let values = self.mapped_array(
            map::HOST_VALUES,
            (abi::SLOTS * abi::HOST_VALUES) as usize,
            size_of::<abi::PolicyValue>(),
        )?;
        let (entry_base, value_base) = (slot as usize * size, (slot * abi::HOST_VALUES) as usize);
        let short = |name| DataplaneError::Mmap {
            name,
            source: std::io::Error::other("the mapping is shorter than the slot"),
        };
        for (i, v) in index.values.iter().enumerate() {
            values
                .set(value_base + i, *v)
                .then_some(())
                .ok_or_else(|| short(map::HOST_VALUES))?;
        }
        for (i, e) in index.entries.iter().enumerate() {
            entries
                .set(entry_base + i, *e)
                .then_some(())
                .ok_or_else(|| short(map::V4_HOST_INDEX))?;
        }
        Ok(())
    }

    /// `name` mapped whole, after checking it has `entries` values of `value_size`: a
    /// map of another shape (pinned by another build) is refused, not written past.
    fn mapped_array(&self, name: &'static str, entries: usize, value_size: usize) -> Result<Mapped, DataplaneError> {
        let data = map_data(self.map(name)?);
        let info = data.info().map_err(|e| DataplaneError::Mmap {
            name,
            source: std::io::Error::other(e.to_string()),
        })?;
        if info.max_entries() as usize != entries || info.value_size() as usize != value_size {
            return Err(DataplaneError::Mmap {
                name,
                source: std::io::Error::other(format!(
                    "{} entries of {} bytes, want {entries} of {value_size}",
                    info.max_entries(),
                    info.value_size()
                )),
            });
        }
        Mapped::new(data, entries * value_size).map_err(|source| DataplaneError::Mmap { name, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(port: u16) -> abi::PolicyValue {
        let mut v = abi::PolicyValue {
            n_rules: 1,
            ..Default::default()
        };
        v.rules[0] = abi::PortRule {
            proto: abi::PROTO_TCP,
            slots: 1,
            _pad: 0,
            port_lo: port,
            port_hi: port,
        };
        v
    }

    #[test]
    fn every_host_is_found_with_its_value_and_nothing_else() {
        let hosts: std::collections::BTreeMap<Ipv4Addr, abi::PolicyValue> = (0..3000u32)
            .map(|i| {
                (
                    Ipv4Addr::from(0xc000_0200u32.wrapping_add(i * 7)),
                    value((i % 40) as u16),
                )
            })
            .collect();
        let index = layout(hosts.iter()).expect("3000 hosts fit");
        assert_eq!(index.values.len(), 40, "values are shared");
        for (a, v) in &hosts {
            assert_eq!(index.find(*a), Some(v), "{a}");
        }
        for i in 0..20_000u32 {
            let a = Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i));
            assert_eq!(index.find(a), hosts.get(&a), "{a}");
        }
    }

    #[test]
    fn what_does_not_fit_is_left_to_the_hash_map() {
        let none: std::collections::BTreeMap<Ipv4Addr, abi::PolicyValue> = Default::default();
        assert_eq!(layout(none.iter()).err(), Some(Unindexed::Empty));
        let many: std::collections::BTreeMap<_, _> = (0..=abi::HOST_INDEX_SIZE / 2)
            .map(|i| (Ipv4Addr::from(i), value(1)))
            .collect();
        assert_eq!(layout(many.iter()).err(), Some(Unindexed::TooMany(many.len())));
        let values: std::collections::BTreeMap<_, _> = (0..=abi::HOST_VALUES)
            .map(|i| (Ipv4Addr::from(i), value(i as u16)))
            .collect();
        assert_eq!(
            layout(values.iter()).err(),
            Some(Unindexed::TooManyValues(values.len()))
        );
        // Addresses that share a home: the probes hold HOST_INDEX_PROBES of them.
        let target = home(Ipv4Addr::new(192, 0, 2, 1));
        let crowd: Vec<Ipv4Addr> = (0..u32::MAX)
            .map(Ipv4Addr::from)
            .filter(|a| home(*a) == target)
            .take(abi::HOST_INDEX_PROBES as usize + 1)
            .collect();
        let fits: std::collections::BTreeMap<_, _> = crowd[..crowd.len() - 1].iter().map(|a| (*a, value(1))).collect();
        let index = layout(fits.iter()).expect("a full run of probes fits");
        assert!(fits.keys().all(|a| index.find(*a).is_some()));
        let over: std::collections::BTreeMap<_, _> = crowd.iter().map(|a| (*a, value(1))).collect();
        assert!(matches!(layout(over.iter()), Err(Unindexed::Crowded(_))));
    }
}

#[cfg(test)]
mod catalog_tests {
    use super::*;
    use crate::{
        catalog::{Catalog, Feature},
        policy::{Config, Policy, Selection, compile_policy},
    };

    /// The shipped catalog, every region and feature: its /32s take the index.
    #[test]
    fn the_builtin_catalog_is_indexed_whole() {
        let catalog = Catalog::builtin();
        let selection = Selection {
            regions: catalog.regions.iter().map(|r| r.id.clone()).collect(),
            features: Feature::ALL.to_vec(),
        };
        let policy = Policy::build(&catalog, &selection, &Config::default(), &[]);
        let tables = compile_policy(&policy).expect("the catalog compiles");
        let index = layout(tables.v4_host.iter()).expect("the catalog's /32s fit the index");
        eprintln!("{} /32s, {} distinct values", tables.v4_host.len(), index.values.len());
        for (a, v) in &tables.v4_host {
            assert_eq!(index.find(*a), Some(v), "{a}");
        }
    }
}
