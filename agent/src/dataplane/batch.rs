//! Whole maps read in few system calls: BPF_MAP_LOOKUP_BATCH for the flow tables (a
//! full table of 262,144 flows is about 70 calls instead of half a million), and
//! `membarrier` for the RCU grace period the peer filter's rebuild waits for. aya 0.14
//! has neither.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::MapData;

/// `BPF_MAP_LOOKUP_BATCH` (linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call: more than a hash bucket ever holds.
const CHUNK: usize = 4096;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of the hash map `map` (a plain or LRU hash), in the kernel's
/// order. Entries added or removed while it reads may or may not be in it.
pub(super) fn entries<K: aya::Pod + Default, V: aya::Pod + Default>(map: &MapData) -> io::Result<Vec<(K, V)>> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut out = Vec::new();
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // The hash maps' batch cursor is a bucket index (u32).
    let (mut cursor_in, mut cursor_out) = (0u32, 0u32);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &cursor_in as *const u32 as u64 },
            out_batch: &mut cursor_out as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of CHUNK keys and values and at two u32
        // cursors, all live for the call; the kernel writes at most `count` of each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let got = (attr.count as usize).min(CHUNK);
        out.extend(keys[..got].iter().copied().zip(values[..got].iter().copied()));
        match err {
            None => {}
            // The end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
        }
        cursor_in = cursor_out;
        first = false;
    }
}

/// Waits for an RCU grace period: every BPF program that was running when it was
/// called has returned (they run in RCU read-side sections). `MEMBARRIER_CMD_GLOBAL`
/// is synchronize_rcu() in the kernel; it is refused on nohz_full kernels.
pub(super) fn rcu_grace_period() -> io::Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
