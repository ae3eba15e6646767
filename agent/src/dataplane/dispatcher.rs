//! Sharing the XDP hook by libxdp's multi-prog protocol (xdp-tools
//! lib/libxdp/protocol.org, version 2), spoken here through aya rather than by
//! linking libxdp: libxdp can only put into a dispatcher a program it loads itself
//! from a libbpf object (or an extension already loaded against some target), while
//! allowgate's program is loaded by aya over its pinned maps with its load-time
//! constants and ABI checks; and the agent links no C library.
//!
//! The protocol, as both sides keep it:
//! - A dispatcher is an XDP program named `xdp_dispatcher` with one map, a frozen
//!   `.rodata` whose value is `DispatcherConfig` (magic 236, version 2): per slot the
//!   run priority and the XDP actions after which the next slot runs.
//! - Its components are extension (freplace) programs linked to its stub functions
//!   `prog0`..`prog9`, in run order: lowest priority first, then by name.
//! - The links and programs are pinned as `dispatch-IFINDEX-ID/progN-link` and
//!   `progN-prog` under `$LIBXDP_BPFFS/xdp` (default /sys/fs/bpf/xdp), and changes
//!   are made under an exclusive flock of that directory.
//! - A change builds a whole new dispatcher with every component linked again (an
//!   extension may be linked to several programs at once), pins it, swaps it onto the
//!   interface with `XDP_FLAGS_REPLACE` and the expected old program, and unpins the
//!   old one. A swap that lost a race starts over.
//!
//! The components are read from the kernel (the tracing links to the dispatcher), not
//! from the pins, so `status` tells what runs even when the pins lie.

use std::{
    fs::File,
    io,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use allowgate_ebpf::{self as abi, DispatcherConfig};
use aya::{EbpfLoader, programs::Xdp};
use aya_obj::btf::{Btf, BtfKind};

use super::{
    kernel::{self, ProgInfo},
    xdp_hook,
};
use crate::policy::config::XdpMode;

const XDP_PASS: u32 = 2;
const XDP_ACTIONS: [&str; 5] = ["aborted", "drop", "pass", "tx", "redirect"];
const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;
/// How often a swap that lost a race to another tool is tried again.
const MAX_TRIES: usize = 10;

/// One program of a dispatcher, in its slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub slot: usize,
    pub prog: ProgInfo,
    pub priority: u32,
    /// A bit per XDP action after which the next slot runs.
    pub chain_call_actions: u32,
    pub frags: bool,
}

impl Component {
    /// Whether an XDP_PASS of this program lets the slots after it run.
    pub fn continues_on_pass(&self) -> bool {
        self.chain_call_actions & (1 << XDP_PASS) != 0
    }

    /// Its chain call actions by name (`pass`, `drop`, ...).
    pub fn chain_call_names(&self) -> Vec<String> {
        chain_names(self.chain_call_actions)
    }
}

pub fn chain_names(bits: u32) -> Vec<String> {
    XDP_ACTIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// A libxdp dispatcher on an interface, as the kernel has it.
#[derive(Debug)]
pub struct Dispatcher {
    pub ifindex: u32,
    pub prog: ProgInfo,
    pub fd: OwnedFd,
    pub mode: XdpMode,
    pub config: DispatcherConfig,
    /// In run order (by slot).
    pub components: Vec<Component>,
}

impl Dispatcher {
    /// Its components that are not allowgate's (`is_ours` says which are), as entries
    /// of a new dispatcher.
    fn others(&self, is_ours: &dyn Fn(&ProgInfo) -> bool) -> io::Result<Vec<Entry>> {
        self.components
            .iter()
            .filter(|c| !is_ours(&c.prog))
            .map(Entry::of)
            .collect()
    }
}

/// What holds an interface's XDP hook.
#[derive(Debug)]
pub enum Holder {
    Nothing,
    Dispatcher(Dispatcher),
    /// A program on its own; `link`: the id of the bpf_link that holds it, `None`
    /// when it was attached through netlink.
    Program {
        prog: ProgInfo,
        mode: XdpMode,
        link: Option<u32>,
        /// A dispatcher of a protocol version this build does not speak.
        dispatcher_version: Option<u8>,
        /// False when the kernel would not let us open the program by id (that takes
        /// CAP_SYS_ADMIN): only its id and mode are known.
        readable: bool,
    },
}

/// `$LIBXDP_BPFFS/xdp`, where libxdp keeps its pins and its lock.
pub fn state_dir() -> PathBuf {
    let root = std::env::var_os("LIBXDP_BPFFS").unwrap_or_else(|| "/sys/fs/bpf".into());
    Path::new(&root).join("xdp")
}

fn pin_dir(ifindex: u32, dispatcher_id: u32) -> PathBuf {
    state_dir().join(format!("dispatch-{ifindex}-{dispatcher_id}"))
}

/// A directory only root may enter, as libxdp makes its own.
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// libxdp's lock: an exclusive flock of its state directory, released on drop.
struct Lock {
    _dir: File,
}

impl Lock {
    fn take() -> io::Result<Lock> {
        let dir = state_dir();
        if let Err(e) = private_dir(&dir)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ));
        }
        let file = File::open(&dir)?;
        file.lock()?;
        Ok(Lock { _dir: file })
    }
}

/// The configuration of program `prog` when it is a dispatcher this build speaks:
/// `Ok(None)` when it is no dispatcher, `Err(version)` for another protocol version.
fn dispatcher_config(prog: &ProgInfo) -> Result<Option<DispatcherConfig>, u8> {
    if prog.name != abi::PROG_DISPATCHER || prog.map_ids.len() != 1 {
        return Ok(None);
    }
    let Ok(map) = kernel::map_by_id(prog.map_ids[0]) else {
        return Ok(None);
    };
    let size = kernel::map_value_size(&map).unwrap_or(0) as usize;
    if !(2..=4096).contains(&size) {
        return Ok(None);
    }
    let mut value = vec![0u8; size];
    if kernel::map_lookup(&map, &0u32.to_ne_bytes(), &mut value).is_err() {
        return Ok(None);
    }
    // Version 1 had no magic; libxdp then reads the version from BTF metadata.
    if value[0] != abi::DISPATCHER_MAGIC {
        return Err(1);
    }
    if value[1] != abi::DISPATCHER_VERSION || size != std::mem::size_of::<DispatcherConfig>() {
        return Err(value[1]);
    }
    // SAFETY: `value` holds exactly one `DispatcherConfig`, a repr(C) struct of
    // integers for which every byte pattern is valid; read_unaligned copes with any
    // alignment.
    Ok(Some(unsafe { std::ptr::read_unaligned(value.as_ptr().cast()) }))
}

/// BTF ids of the functions a component may replace: slot N is `progN`; a newer
/// libxdp links a lone component to `xdp_dispatcher` itself, which is slot 0.
fn slot_btf_ids(prog: &ProgInfo) -> Vec<(u32, usize)> {
    let Ok(bytes) = kernel::btf_bytes(prog.btf_id) else {
        return Vec::new();
    };
    let Ok(btf) = Btf::parse(&bytes, Default::default()) else {
        return Vec::new();
    };
    let mut ids: Vec<(u32, usize)> = (0..abi::DISPATCHER_SLOTS)
        .filter_map(|slot| {
            btf.id_by_type_name_kind(&format!("prog{slot}"), BtfKind::Func)
                .ok()
                .map(|id| (id, slot))
        })
        .collect();
    if let Ok(id) = btf.id_by_type_name_kind(abi::PROG_DISPATCHER, BtfKind::Func) {
        ids.push((id, 0));
    }
    ids
}

fn components(prog: &ProgInfo, config: &DispatcherConfig) -> Vec<Component> {
    let slots = slot_btf_ids(prog);
    let mut out: Vec<Component> = kernel::all_links()
        .into_iter()
        .filter(|l| l.link_type == kernel::LINK_TYPE_TRACING && l.union[1] == prog.id)
        .filter_map(|l| {
            let slot = slots.iter().find(|(id, _)| *id == l.union[2])?.1;
            if slot >= usize::from(config.num_progs_enabled) {
                return None;
            }
            let info = kernel::prog_by_id(l.prog_id)
                .and_then(|fd| kernel::prog_info(&fd))
                .ok()?;
            Some(Component {
                slot,
                prog: info,
                priority: config.run_prios[slot],
                chain_call_actions: config.chain_call_actions[slot] & !(1 << abi::DISPATCHER_STUB_RET),
                frags: config.program_flags[slot] & BPF_F_XDP_HAS_FRAGS != 0,
            })
        })
        .collect();
    out.sort_by_key(|c| c.slot);
    out.dedup_by_key(|c| c.slot);
    out
}

/// The bpf_link that holds program `prog_id` on the XDP hook of `ifindex`, if any.
fn xdp_link(ifindex: u32, prog_id: u32) -> Option<u32> {
    kernel::all_links()
        .into_iter()
        .find(|l| l.link_type == kernel::LINK_TYPE_XDP && l.union[0] == ifindex && l.prog_id == prog_id)
        .map(|l| l.id)
}

/// What holds the XDP hook of `ifindex`, per the kernel.
pub fn inspect(ifindex: u32) -> io::Result<Holder> {
    let Some(hook) = xdp_hook::query(ifindex)? else {
        return Ok(Holder::Nothing);
    };
    let fd = match kernel::prog_by_id(hook.prog_id) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            return Ok(Holder::Program {
                prog: ProgInfo {
                    id: hook.prog_id,
                    prog_type: kernel::PROG_TYPE_XDP,
                    tag: [0; 8],
                    name: "?".into(),
                    btf_id: 0,
                    map_ids: Vec::new(),
                },
                mode: hook.mode,
                link: None,
                dispatcher_version: None,
                readable: false,
            });
        }
        Err(e) => return Err(e),
    };
    let prog = kernel::prog_info(&fd)?;
    match dispatcher_config(&prog) {
        Ok(Some(config)) => {
            let components = components(&prog, &config);
            Ok(Holder::Dispatcher(Dispatcher {
                ifindex,
                prog,
                fd,
                mode: hook.mode,
                config,
                components,
            }))
        }
        Ok(None) => Ok(Holder::Program {
            link: xdp_link(ifindex, prog.id),
            prog,
            mode: hook.mode,
            dispatcher_version: None,
            readable: true,
        }),
        Err(version) => Ok(Holder::Program {
            link: xdp_link(ifindex, prog.id),
            prog,
            mode: hook.mode,
            dispatcher_version: Some(version),
            readable: true,
        }),
    }
}

/// Links allowgate's own program into slot function `func` (BTF id `btf_id`) of the
/// dispatcher being built; returns the link and the program.
pub type LinkOurs<'a> = dyn FnMut(&aya::programs::ProgramFd, &str, u32) -> Result<(OwnedFd, OwnedFd), ShareError> + 'a;

/// A program to place in a dispatcher being built.
pub struct Entry {
    /// `None` for allowgate's own, which `LinkOurs` loads and links.
    pub fd: Option<OwnedFd>,
    pub name: String,
    pub tag: [u8; 8],
    pub priority: u32,
    pub chain_call_actions: u32,
    pub frags: bool,
    /// allowgate's own: loaded with aya against the first dispatcher it goes into
    /// (`Extension::load` needs a target), so the builder leaves its slot to the caller.
    pub ours: bool,
}

impl Entry {
    fn of(c: &Component) -> io::Result<Entry> {
        Ok(Entry {
            fd: Some(kernel::prog_by_id(c.prog.id)?),
            name: c.prog.name.clone(),
            tag: c.prog.tag,
            priority: c.priority,
            chain_call_actions: c.chain_call_actions,
            frags: c.frags,
            ours: false,
        })
    }
}

/// The run order libxdp gives programs: priority, then name, then tag.
pub fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
            .then_with(|| a.tag.cmp(&b.tag))
    });
}

/// What went wrong while sharing the hook.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("cannot load a dispatcher: {0}")]
    Load(String),
    #[error("cannot link {name} into the dispatcher's slot {slot}: {source}")]
    Link {
        name: String,
        slot: usize,
        #[source]
        source: io::Error,
    },
    #[error(
        "this kernel refuses extension (freplace) programs ({detail}), which a libxdp dispatcher's programs are: nothing can join a dispatcher here (libxdp tools attach their program alone on such a kernel); set xdp_mode = \"auto\" or \"native\" to attach allowgate alone"
    )]
    ExtensionsRefused { detail: String },
    #[error("another tool changed the XDP hook {MAX_TRIES} times while allowgate was joining it: try again")]
    Raced,
    #[error("{count} programs would share the dispatcher; libxdp's holds at most {max}", max = abi::DISPATCHER_SLOTS)]
    Full { count: usize },
}

/// Whether the kernel loads and links an extension program (libxdp's components are
/// ones): a dispatcher and a do-nothing extension of its first slot are loaded and
/// linked, never attached to an interface.
pub fn probe_extensions() -> Result<(), ShareError> {
    let config = DispatcherConfig {
        magic: abi::DISPATCHER_MAGIC,
        dispatcher_version: abi::DISPATCHER_VERSION,
        num_progs_enabled: 1,
        ..DispatcherConfig::default()
    };
    let mut ebpf = load_dispatcher(&config)?;
    let target = dispatcher_program(&mut ebpf)?
        .fd()
        .map_err(|e| ShareError::Load(e.to_string()))?
        .try_clone()?;
    let ext: &mut aya::programs::Extension = ebpf
        .program_mut(abi::PROG_PROBE_EXT)
        .ok_or_else(|| ShareError::Load("the object has no probe extension".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| ShareError::Load(e.to_string()))?;
    ext.load(target, "prog0").map_err(|e| ShareError::ExtensionsRefused {
        detail: super::attach::chain(&e),
    })?;
    ext.attach().map_err(|e| ShareError::ExtensionsRefused {
        detail: super::attach::chain(&e),
    })?;
    Ok(())
}

/// The dispatcher object with `config` in its global, its program loaded.
fn load_dispatcher(config: &DispatcherConfig) -> Result<aya::Ebpf, ShareError> {
    let mut ebpf = EbpfLoader::new()
        .override_global(abi::GLOBAL_DISPATCHER_CONF, config, true)
        .load(abi::DISPATCHER_OBJ)
        .map_err(|e| ShareError::Load(super::attach::chain(&e)))?;
    dispatcher_program(&mut ebpf)?
        .load()
        .map_err(|e| ShareError::Load(super::attach::chain(&e)))?;
    Ok(ebpf)
}

fn dispatcher_program(ebpf: &mut aya::Ebpf) -> Result<&mut Xdp, ShareError> {
    ebpf.program_mut(abi::PROG_DISPATCHER)
        .ok_or_else(|| ShareError::Load("the object has no xdp_dispatcher".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| ShareError::Load(e.to_string()))
}

/// A dispatcher built, linked and pinned, not yet on the interface.
pub struct Built {
    pub fd: OwnedFd,
    pub id: u32,
    /// allowgate's slot in it.
    pub our_slot: Option<usize>,
}

/// Builds a dispatcher running `entries` in their order (the caller sorted them),
/// links every component but ours (`link_ours` links that one, given the new
/// dispatcher's fd and the slot's function name), and pins it for `ifindex`.
fn build(ifindex: u32, entries: &[Entry], link_ours: &mut LinkOurs<'_>) -> Result<Built, ShareError> {
    if entries.len() > abi::DISPATCHER_SLOTS {
        return Err(ShareError::Full { count: entries.len() });
    }
    let mut config = DispatcherConfig {
        magic: abi::DISPATCHER_MAGIC,
        dispatcher_version: abi::DISPATCHER_VERSION,
        num_progs_enabled: entries.len() as u8,
        is_xdp_frags: 0,
        ..DispatcherConfig::default()
    };
    for (slot, e) in entries.iter().enumerate() {
        config.chain_call_actions[slot] = e.chain_call_actions | (1 << abi::DISPATCHER_STUB_RET);
        config.run_prios[slot] = e.priority;
        config.program_flags[slot] = if e.frags { BPF_F_XDP_HAS_FRAGS } else { 0 };
    }
    // Frames of several buffers only when every component takes them; allowgate's
    // own does not, so its dispatchers never ask for them.
    let mut ebpf = load_dispatcher(&config)?;
    let program_fd = dispatcher_program(&mut ebpf)?
        .fd()
        .map_err(|e| ShareError::Load(e.to_string()))?;
    let fd = program_fd.as_fd().try_clone_to_owned()?;
    let info = kernel::prog_info(&fd)?;
    let bytes = kernel::btf_bytes(info.btf_id)?;
    let btf = Btf::parse(&bytes, Default::default()).map_err(|e| ShareError::Load(e.to_string()))?;
    // (link, program) per slot.
    let mut linked: Vec<(OwnedFd, OwnedFd)> = Vec::new();
    let mut our_slot = None;
    for (slot, e) in entries.iter().enumerate() {
        let func = format!("prog{slot}");
        let btf_id = btf
            .id_by_type_name_kind(&func, BtfKind::Func)
            .map_err(|e| ShareError::Load(e.to_string()))?;
        match &e.fd {
            None => {
                our_slot = Some(slot);
                linked.push(link_ours(program_fd, &func, btf_id)?);
            }
            Some(prog) => {
                let link = kernel::link_extension(prog, &fd, btf_id).map_err(|source| ShareError::Link {
                    name: e.name.clone(),
                    slot,
                    source,
                })?;
                linked.push((link, prog.try_clone()?));
            }
        }
    }
    // Pinned before it goes on the interface: a crash after the swap must not
    // unravel the components (their links live as long as a pin or fd holds them).
    let dir = pin_dir(ifindex, info.id);
    let pinned = (|| -> io::Result<()> {
        if let Err(e) = private_dir(&dir)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(e);
        }
        for (slot, (link, prog)) in linked.iter().enumerate() {
            kernel::obj_pin(link, &dir.join(format!("prog{slot}-link")))?;
            kernel::obj_pin(prog, &dir.join(format!("prog{slot}-prog")))?;
        }
        Ok(())
    })();
    if let Err(e) = pinned {
        unpin(&dir);
        return Err(e.into());
    }
    Ok(Built {
        fd,
        id: info.id,
        our_slot,
    })
}

/// Removes a dispatcher's pins (`progN-link`, `progN-prog`) and its directory.
fn unpin(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("prog") && (name.ends_with("-link") || name.ends_with("-prog")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// How the hook stands after a change.
#[derive(Debug)]
pub struct Joined {
    pub mode: XdpMode,
    pub dispatcher_id: u32,
    /// The dispatcher held allowgate's program already (a restart adopts it).
    pub was_in: bool,
}

/// Runs allowgate's program in a dispatcher on `ifindex`: the one there, rebuilt with
/// allowgate's program added (or put in place of the one `is_ours` recognises), or a
/// new one in `new_mode` (native, then generic) when the hook is empty. `ours` is
/// allowgate's entry (its fd unused: `link_ours` links it); `check` may refuse the
/// new order before anything changes. Everything happens under libxdp's lock.
pub fn join(
    ifindex: u32,
    ours: Entry,
    is_ours: &dyn Fn(&ProgInfo) -> bool,
    new_mode: Option<XdpMode>,
    check: &dyn Fn(&[Entry]) -> Result<(), String>,
    link_ours: &mut LinkOurs<'_>,
) -> Result<Result<Joined, JoinRefused>, ShareError> {
    // Before anything changes: a kernel that refuses extensions is said so plainly.
    probe_extensions()?;
    let _lock = Lock::take()?;
    let mut ours = Some(ours);
    for _ in 0..MAX_TRIES {
        let (old, mut entries, was_in) = match inspect(ifindex)? {
            Holder::Nothing => (None, Vec::new(), false),
            Holder::Dispatcher(d) => {
                let was_in = d.components.iter().any(|c| is_ours(&c.prog));
                let entries = d.others(is_ours)?;
                (Some(d), entries, was_in)
            }
            Holder::Program {
                prog,
                mode,
                link,
                dispatcher_version,
                readable,
            } => {
                return Ok(Err(JoinRefused::Held {
                    prog,
                    mode,
                    link,
                    dispatcher_version,
                    readable,
                }));
            }
        };
        let our = ours.take().expect("put back before every retry");
        entries.push(our);
        sort(&mut entries);
        if let Err(why) = check(&entries) {
            return Ok(Err(JoinRefused::Order(why)));
        }
        let built = build(ifindex, &entries, link_ours)?;
        let modes: Vec<XdpMode> = match (&old, new_mode) {
            (Some(d), _) => vec![d.mode],
            (None, Some(m)) => vec![m],
            (None, None) => vec![XdpMode::Native, XdpMode::Generic],
        };
        let mut result = Err(io::Error::from_raw_os_error(libc::EINVAL));
        let mut used = modes[0];
        for mode in modes {
            used = mode;
            result = xdp_hook::set(ifindex, Some(&built.fd), old.as_ref().map(|d| &d.fd), mode);
            // A driver without native XDP: try generic.
            if !matches!(
                result.as_ref().map_err(io::Error::raw_os_error),
                Err(Some(libc::EOPNOTSUPP | libc::EINVAL))
            ) {
                break;
            }
        }
        match result {
            Ok(()) => {
                if let Some(d) = &old {
                    unpin(&pin_dir(ifindex, d.prog.id));
                }
                return Ok(Ok(Joined {
                    mode: used,
                    dispatcher_id: built.id,
                    was_in,
                }));
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EBUSY)) => {
                // Another tool changed the hook since we looked: start over.
                unpin(&pin_dir(ifindex, built.id));
                ours = entries.into_iter().find(|e| e.ours);
            }
            Err(e) => {
                unpin(&pin_dir(ifindex, built.id));
                return Err(e.into());
            }
        }
    }
    Err(ShareError::Raced)
}

/// Why allowgate did not join.
#[derive(Debug)]
pub enum JoinRefused {
    /// A program that is not a dispatcher of this protocol holds the hook.
    Held {
        prog: ProgInfo,
        mode: XdpMode,
        link: Option<u32>,
        dispatcher_version: Option<u8>,
        readable: bool,
    },
    /// The order it would run in lets a packet past allowgate unjudged.
    Order(String),
}

/// Takes allowgate's program (what `is_ours` recognises) out of the dispatcher on
/// `ifindex`: the others go on in a new dispatcher, or, when none is left, the
/// dispatcher is taken off the hook. Nothing to do is no error.
pub fn leave(ifindex: u32, is_ours: &dyn Fn(&ProgInfo) -> bool) -> Result<bool, ShareError> {
    // Nothing of ours there: no lock taken (nor libxdp's directory made for one).
    match inspect(ifindex)? {
        Holder::Dispatcher(d) if d.components.iter().any(|c| is_ours(&c.prog)) => {}
        _ => return Ok(false),
    }
    let _lock = Lock::take()?;
    for _ in 0..MAX_TRIES {
        let Holder::Dispatcher(d) = inspect(ifindex)? else {
            return Ok(false);
        };
        if !d.components.iter().any(|c| is_ours(&c.prog)) {
            return Ok(false);
        }
        let entries = d.others(is_ours)?;
        let (new, built_id) = if entries.is_empty() {
            (None, None)
        } else {
            let built = build(ifindex, &entries, &mut |_, func, _| {
                Err(ShareError::Load(format!("nothing of allowgate's goes in {func}")))
            })?;
            let id = built.id;
            (Some(built.fd), Some(id))
        };
        match xdp_hook::set(ifindex, new.as_ref(), Some(&d.fd), d.mode) {
            Ok(()) => {
                unpin(&pin_dir(ifindex, d.prog.id));
                return Ok(true);
            }
            Err(e) => {
                if let Some(id) = built_id {
                    unpin(&pin_dir(ifindex, id));
                }
                if !matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EBUSY)) {
                    return Err(e.into());
                }
            }
        }
    }
    Err(ShareError::Raced)
}

/// The dispatchers pinned under libxdp's directory whose interface index is given in
/// their name: `(ifindex, dispatcher id)`.
pub fn pinned_dispatchers() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir(state_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.strip_prefix("dispatch-")?.split('-');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, priority: u32, tag: u8, chain: u32) -> Entry {
        Entry {
            fd: None,
            name: name.to_string(),
            tag: [tag; 8],
            priority,
            chain_call_actions: chain,
            frags: false,
            ours: name == abi::PROG_INGRESS_EXT,
        }
    }

    fn order(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// libxdp's order (cmp_xdp_programs): priority, then name byte by byte, then tag.
    #[test]
    fn programs_run_by_priority_then_name_then_tag() {
        let mut entries = vec![
            entry("xdpfilt_alw_all", 10, 1, 4),
            entry("allowgate_xdp", 0, 2, 4),
            entry("zz", 0, 9, 4),
            entry("a_pass_first", 0, 3, 1 << 1),
            entry("Zed", 0, 4, 4),
            entry("zz", 0, 5, 4),
            entry("late", 50, 6, 4),
        ];
        sort(&mut entries);
        assert_eq!(
            order(&entries),
            [
                "Zed",
                "a_pass_first",
                "allowgate_xdp",
                "zz",
                "zz",
                "xdpfilt_alw_all",
                "late"
            ]
        );
        assert_eq!(entries[3].tag, [5; 8], "equal names: by tag");
    }

    #[test]
    fn chain_call_actions_have_names() {
        assert_eq!(chain_names(1 << 2), ["pass"]);
        assert_eq!(chain_names((1 << 1) | (1 << 2) | (1 << 31)), ["drop", "pass"]);
        assert!(chain_names(0).is_empty());
    }

    #[test]
    fn libxdp_state_lives_under_libxdp_bpffs() {
        // The variable names the bpffs; libxdp's own directory is `xdp` beneath it.
        assert!(state_dir().ends_with("xdp"));
        assert_eq!(pin_dir(7, 42).file_name().unwrap().to_string_lossy(), "dispatch-7-42");
    }
}
