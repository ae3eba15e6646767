//! What the kernel has attached, asked of the kernel: the pinned links' own view of
//! their interface (`bpf_link_info`) and program, so `status` reports what filters, not
//! what the daemon meant to attach. aya keeps a link's fd and its ifindex to itself,
//! so the few bpf(2) commands needed are spoken here directly.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_prog_type` values `status` names.
pub const PROG_TYPE_SCHED_CLS: u32 = 3;
pub const PROG_TYPE_XDP: u32 = 6;
pub const PROG_TYPE_EXT: u32 = 28;
/// `enum bpf_link_type` values of the hooks allowgate shares.
pub const LINK_TYPE_TRACING: u32 = 2;
pub const LINK_TYPE_XDP: u32 = 6;
pub const LINK_TYPE_TCX: u32 = 11;

#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes a `#[repr(C)]` prefix of `union bpf_attr` for `cmd`,
    // whose pointers (paths, info buffers) outlive the call; the kernel reads no more
    // than `size_of::<T>()` bytes of it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `bpf` for commands that write their answer into the attribute itself.
fn bpf_mut<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: as for `bpf`; the kernel writes within the `size_of::<T>()` bytes of a
    // struct we hold mutably.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Opens the pinned object at `path` (BPF_OBJ_GET).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let cpath = c_path(path)?;
    let attr = ObjAttr {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &attr)?;
    // SAFETY: the kernel just returned this fd to us; the OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the object `fd` at `path` (BPF_OBJ_PIN).
pub fn obj_pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let cpath = c_path(path)?;
    let attr = ObjAttr {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &attr).map(|_| ())
}

/// Cuts the link `fd` from its hook (BPF_LINK_DETACH), whoever else holds it.
pub fn link_detach(fd: &OwnedFd) -> io::Result<()> {
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }
    let attr = LinkDetachAttr {
        link_fd: fd.as_fd().as_raw_fd() as u32,
    };
    bpf(BPF_LINK_DETACH, &attr).map(|_| ())
}

/// The start of `struct bpf_link_info`, for XDP and tcx links: the union's first field
/// (at offset 16, after its 8-byte alignment) is the interface index for both, and 0
/// once the link is detached or its interface gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub prog_id: u32,
    pub ifindex: u32,
}

fn info(fd: &OwnedFd, buf: &mut [u8; 512]) -> io::Result<()> {
    // The kernel writes back the length it filled: the attribute is mutable.
    let mut attr = InfoAttr {
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf_mut(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("four bytes"))
}

pub fn link_state(fd: &OwnedFd) -> io::Result<LinkState> {
    // A tcx or XDP link's union starts with its ifindex.
    let info = link_info(fd)?;
    Ok(LinkState {
        prog_id: info.prog_id,
        ifindex: info.union[0],
    })
}

/// The id of the program `fd` (`struct bpf_prog_info`: type, then id).
pub fn prog_id(fd: &OwnedFd) -> io::Result<u32> {
    let mut buf = [0u8; 512];
    info(fd, &mut buf)?;
    Ok(u32_at(&buf, 4))
}

fn fd_by_id(cmd: libc::c_long, id: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct GetFdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let fd = bpf(
        cmd,
        &GetFdAttr {
            id,
            next_id: 0,
            open_flags: 0,
        },
    )?;
    // SAFETY: the kernel just returned this fd to us; the OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The program of id `id`.
pub fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(BPF_PROG_GET_FD_BY_ID, id)
}

/// The map of id `id`.
pub fn map_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(BPF_MAP_GET_FD_BY_ID, id)
}

/// The link of id `id`.
pub fn link_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(BPF_LINK_GET_FD_BY_ID, id)
}

/// The id of the link after `id` (0: the first), or `None` after the last.
pub fn next_link_id(id: u32) -> io::Result<Option<u32>> {
    #[repr(C)]
    struct NextIdAttr {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = NextIdAttr {
        start_id: id,
        next_id: 0,
        open_flags: 0,
    };
    match bpf_mut(BPF_LINK_GET_NEXT_ID, &mut attr) {
        Ok(_) => Ok(Some(attr.next_id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What `status` and the attach code need of a program (`struct bpf_prog_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub tag: [u8; 8],
    /// The kernel's name of it (at most 15 bytes of the function's name).
    pub name: String,
    pub btf_id: u32,
    pub map_ids: Vec<u32>,
}

impl ProgInfo {
    /// The tag as bpftool prints it.
    pub fn tag_hex(&self) -> String {
        self.tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Up to 64 map ids of the program `fd`, and the rest of its info.
pub fn prog_info(fd: &OwnedFd) -> io::Result<ProgInfo> {
    let mut map_ids = [0u32; 64];
    let mut buf = [0u8; 512];
    // nr_map_ids (at 52) and map_ids (at 56) ask the kernel to fill that array.
    buf[52..56].copy_from_slice(&(map_ids.len() as u32).to_ne_bytes());
    buf[56..64].copy_from_slice(&(map_ids.as_mut_ptr() as u64).to_ne_bytes());
    info(fd, &mut buf)?;
    let nr = (u32_at(&buf, 52) as usize).min(map_ids.len());
    let name = &buf[64..80];
    let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())]).into_owned();
    Ok(ProgInfo {
        prog_type: u32_at(&buf, 0),
        id: u32_at(&buf, 4),
        tag: buf[8..16].try_into().expect("eight bytes"),
        name,
        btf_id: u32_at(&buf, 128),
        map_ids: map_ids[..nr].to_vec(),
    })
}

/// The start of `struct bpf_link_info`: its type, id and program, and the first three
/// words of its union (XDP: ifindex; tcx: ifindex, attach type; tracing: attach type,
/// target program id, target BTF id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    pub union: [u32; 3],
}

pub fn link_info(fd: &OwnedFd) -> io::Result<LinkInfo> {
    let mut buf = [0u8; 512];
    info(fd, &mut buf)?;
    Ok(LinkInfo {
        link_type: u32_at(&buf, 0),
        id: u32_at(&buf, 4),
        prog_id: u32_at(&buf, 8),
        union: [u32_at(&buf, 16), u32_at(&buf, 20), u32_at(&buf, 24)],
    })
}

/// The ids of the programs on the tcx egress hook of interface `ifindex`, in run order
/// (BPF_PROG_QUERY: CAP_NET_ADMIN is enough, where opening a program by id takes
/// CAP_SYS_ADMIN).
pub fn tcx_egress_ids(ifindex: u32) -> io::Result<Vec<u32>> {
    #[repr(C)]
    struct QueryAttr {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        count: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    let mut ids = [0u32; 64];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: BPF_TCX_EGRESS,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        count: ids.len() as u32,
        _pad: 0,
        prog_attach_flags: 0,
        link_ids: 0,
        link_attach_flags: 0,
        revision: 0,
    };
    bpf_mut(BPF_PROG_QUERY, &mut attr)?;
    Ok(ids[..(attr.count as usize).min(ids.len())].to_vec())
}

/// Every link of the host that the kernel lets us open, with its info.
pub fn all_links() -> Vec<LinkInfo> {
    let mut out = Vec::new();
    let mut id = 0;
    // Bounded: ids only grow, and a link that goes away while we walk is skipped.
    while let Ok(Some(next)) = next_link_id(id) {
        id = next;
        if let Ok(info) = link_by_id(id).and_then(|fd| link_info(&fd)) {
            out.push(info);
        }
    }
    out
}

/// Reads `value.len()` bytes of map `fd` at `key` (BPF_MAP_LOOKUP_ELEM).
pub fn map_lookup(fd: &OwnedFd, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    #[repr(C)]
    struct LookupAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = LookupAttr {
        map_fd: fd.as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &attr).map(|_| ())
}

/// The value size of map `fd` (`struct bpf_map_info`: type, id, key_size, value_size).
pub fn map_value_size(fd: &OwnedFd) -> io::Result<u32> {
    let mut buf = [0u8; 512];
    info(fd, &mut buf)?;
    Ok(u32_at(&buf, 12))
}

/// Attaches the extension program `prog` to the function of BTF id `btf_id` in the
/// program `target` (BPF_LINK_CREATE, attach type 0): one more attachment of an
/// extension that may already run elsewhere (kernel 5.10 and later).
pub fn link_extension(prog: &OwnedFd, target: &OwnedFd, btf_id: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct LinkCreateAttr {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        target_btf_id: u32,
        _pad: [u32; 3],
    }
    let attr = LinkCreateAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        target_fd: target.as_fd().as_raw_fd() as u32,
        attach_type: 0,
        flags: 0,
        target_btf_id: btf_id,
        _pad: [0; 3],
    };
    let fd = bpf(BPF_LINK_CREATE, &attr)?;
    // SAFETY: the kernel just returned this fd to us; the OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The raw BTF of id `id` (a program's `btf_id`), for looking up its functions.
pub fn btf_bytes(id: u32) -> io::Result<Vec<u8>> {
    let fd = fd_by_id(BPF_BTF_GET_FD_BY_ID, id)?;
    let mut data = vec![0u8; 64 * 1024];
    loop {
        // struct bpf_btf_info: btf (pointer), btf_size, id, ...
        let mut buf = [0u8; 64];
        buf[0..8].copy_from_slice(&(data.as_mut_ptr() as u64).to_ne_bytes());
        buf[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        let mut attr = InfoAttr {
            bpf_fd: fd.as_fd().as_raw_fd() as u32,
            info_len: buf.len() as u32,
            info: buf.as_mut_ptr() as u64,
        };
        bpf_mut(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        let size = u32_at(&buf, 8) as usize;
        if size <= data.len() {
            data.truncate(size);
            return Ok(data);
        }
        data = vec![0u8; size];
    }
}

/// The id of the map `fd` (`struct bpf_map_info`: type, then id).
pub fn map_id(fd: &OwnedFd) -> io::Result<u32> {
    let mut buf = [0u8; 512];
    info(fd, &mut buf)?;
    Ok(u32_at(&buf, 4))
}

/// The index of the interface `name` in this network namespace.
pub fn if_index(name: &str) -> Option<u32> {
    use rustix::net::{AddressFamily, SocketType, netdevice::name_to_index, socket};
    let probe = socket(AddressFamily::INET, SocketType::DGRAM, None).ok()?;
    name_to_index(&probe, name).ok().filter(|&i| i != 0)
}

/// How one hook of one interface stands, per the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookState {
    /// Our program is attached to the interface of that name.
    Attached,
    /// Something is wrong; the text says what, for people.
    Broken(String),
}

/// The kernel's word on the link pinned at `pin` for interface `iface` (index
/// `ifindex`), expected to run program `want_prog` when known.
pub fn hook_state(pin: &Path, iface: &str, ifindex: u32, want_prog: Option<u32>, hook: &str) -> HookState {
    let fd = match obj_get(pin) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return HookState::Broken(format!("its {hook} link pin {} is gone", pin.display()));
        }
        Err(e) => return HookState::Broken(format!("cannot open its {hook} link pin {}: {e}", pin.display())),
    };
    match link_state(&fd) {
        Err(e) => HookState::Broken(format!("cannot read its {hook} link: {e}")),
        Ok(s) if s.ifindex == 0 => HookState::Broken(format!("its {hook} link was detached")),
        Ok(s) if s.ifindex != ifindex => HookState::Broken(format!(
            "its {hook} link is on interface index {}, not on `{iface}` (index {ifindex}): the interface was renamed or re-created",
            s.ifindex
        )),
        Ok(s) if want_prog.is_some_and(|p| p != s.prog_id) => HookState::Broken(format!(
            "its {hook} link runs program {}, not allowgate's ({})",
            s.prog_id,
            want_prog.unwrap_or(0)
        )),
        Ok(_) => HookState::Attached,
    }
}
