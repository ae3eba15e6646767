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

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;

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
    let attr = InfoAttr {
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &attr).map(|_| ())
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("four bytes"))
}

pub fn link_state(fd: &OwnedFd) -> io::Result<LinkState> {
    let mut buf = [0u8; 512];
    info(fd, &mut buf)?;
    Ok(LinkState {
        prog_id: u32_at(&buf, 8),
        ifindex: u32_at(&buf, 16),
    })
}

/// The id of the program `fd` (`struct bpf_prog_info`: type, then id).
pub fn prog_id(fd: &OwnedFd) -> io::Result<u32> {
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
