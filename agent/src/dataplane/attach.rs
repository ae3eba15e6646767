//! Attaching the programs to interfaces, adopting the pinned links a previous daemon
//! left (the program is replaced in place: no gap), sharing the hooks with other
//! programs (XDP through a libxdp dispatcher, tc egress through tcx in first place),
//! saying who holds a hook that cannot be shared, and taking it all down.

use std::{
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::{
    LinkOrder, ProgramError, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{self, NlOptions, SchedClassifier, SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
};
use serde::Serialize;

use super::{
    Dataplane, DataplaneError,
    dispatcher::{self, Entry, Holder, JoinRefused, ShareError},
    kernel::{self, ProgInfo, if_index},
};
use crate::policy::config::{TcMode, XdpAttach, XdpMode, XdpPlacement};

/// Where the XDP program goes (`xdp_mode`, `xdp_priority` of the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub mode: XdpPlacement,
    pub priority: u32,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            mode: XdpPlacement::Auto,
            priority: crate::policy::config::DEFAULT_XDP_PRIORITY,
        }
    }
}

/// How the programs sit on one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub name: String,
    pub xdp_mode: XdpMode,
    pub xdp_attach: XdpAttach,
    pub tc_mode: TcMode,
    /// The links were a previous daemon's and now run this daemon's programs.
    #[serde(skip)]
    pub adopted: bool,
}

pub(super) fn xdp_pin(links: &Path, mode: XdpMode, iface: &str) -> PathBuf {
    links.join(format!("xdp-{}-{iface}", mode.as_str()))
}

pub(super) fn tcx_pin(links: &Path, iface: &str) -> PathBuf {
    links.join(format!("tc-tcx-{iface}"))
}

fn attach_error<'a>(iface: &'a str, hook: &'static str) -> impl FnOnce(ProgramError) -> DataplaneError + 'a {
    move |e| DataplaneError::Attach {
        iface: iface.to_string(),
        hook,
        detail: chain(&e),
    }
}

/// An error and its causes on one line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

pub(super) fn attach(dp: &mut Dataplane, iface: &str, placement: Placement) -> Result<Attachment, DataplaneError> {
    let Some(ifindex) = if_index(iface) else {
        return Err(DataplaneError::NoInterface {
            name: iface.to_string(),
        });
    };
    let links = dp.dir().join("links");
    for path in [
        xdp_pin(&links, XdpMode::Native, iface),
        xdp_pin(&links, XdpMode::Generic, iface),
        tcx_pin(&links, iface),
    ] {
        drop_stale_pin(&path, ifindex);
    }
    let (xdp_mode, xdp_attach, xdp_adopted) = attach_xdp(dp, &links, iface, ifindex, placement)?;
    let (tc_mode, tc_adopted) = match attach_tc(dp, &links, iface) {
        Ok(tc) => tc,
        Err(e) => {
            // All or none on this interface too: what this call attached goes again.
            if !xdp_adopted {
                dp.detach(&Attachment {
                    name: iface.to_string(),
                    xdp_mode,
                    xdp_attach,
                    tc_mode: TcMode::Tcx,
                    adopted: false,
                });
            }
            return Err(e);
        }
    };
    Ok(Attachment {
        name: iface.to_string(),
        xdp_mode,
        xdp_attach,
        tc_mode,
        adopted: xdp_adopted && tc_adopted,
    })
}

/// Opens a pinned link, or `None` when there is none; a link whose interface is gone is
/// unpinned and forgotten.
fn pinned_link(path: &Path) -> Option<FdLink> {
    if !path.exists() {
        return None;
    }
    match PinnedLink::from_pin(path) {
        Ok(link) => Some(FdLink::from(link)),
        Err(_) => {
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

fn attach_xdp(
    dp: &mut Dataplane,
    links: &Path,
    iface: &str,
    ifindex: u32,
    placement: Placement,
) -> Result<(XdpMode, XdpAttach, bool), DataplaneError> {
    for mode in [XdpMode::Native, XdpMode::Generic] {
        let path = xdp_pin(links, mode, iface);
        let Some(link) = pinned_link(&path) else { continue };
        if placement.mode == XdpPlacement::Dispatcher {
            return Err(DataplaneError::HookHeld {
                iface: iface.to_string(),
                hook: "XDP",
                holder: format!("allowgate's own program, alone on a bpf_link ({})", path.display()),
                ways: "moving it into a dispatcher would leave the interface unfiltered for an instant: run `allowgate down` and start again, or keep xdp_mode = \"auto\"".into(),
            });
        }
        // Replace the program inside the existing link: packets never see no program.
        let adopted = XdpLink::try_from(link)
            .ok()
            .and_then(|l| dp.xdp().ok()?.attach_to_link(l).ok());
        if adopted.is_some() {
            return Ok((mode, XdpAttach::Link, true));
        }
        // The link is defunct (its interface went away): start over.
        let _ = std::fs::remove_file(&path);
    }
    let holder = dispatcher::inspect(ifindex).map_err(|e| DataplaneError::Attach {
        iface: iface.to_string(),
        hook: "XDP",
        detail: format!("cannot ask the kernel what holds the hook: {e}"),
    })?;
    let join = match (&holder, placement.mode) {
        (Holder::Dispatcher(_), XdpPlacement::Auto | XdpPlacement::Dispatcher) => true,
        (Holder::Nothing, XdpPlacement::Dispatcher) => true,
        (Holder::Nothing, _) => false,
        (Holder::Dispatcher(d), _) => return Err(held(iface, &holder_of_dispatcher(d), placement)),
        (Holder::Program { .. }, _) => return Err(held_by(iface, &holder, placement)),
    };
    if join {
        drop(holder);
        let (mode, adopted) = join_dispatcher(dp, iface, ifindex, placement)?;
        return Ok((mode, XdpAttach::Dispatcher, adopted));
    }
    let modes: &[(aya::programs::XdpMode, XdpMode)] = match placement.mode {
        XdpPlacement::Native => &[(aya::programs::XdpMode::Driver, XdpMode::Native)],
        XdpPlacement::Generic => &[(aya::programs::XdpMode::Skb, XdpMode::Generic)],
        _ => &[
            (aya::programs::XdpMode::Driver, XdpMode::Native),
            (aya::programs::XdpMode::Skb, XdpMode::Generic),
        ],
    };
    let xdp = dp.xdp()?;
    let mut attached = None;
    let mut last = None;
    for &(flags, mode) in modes {
        match xdp.attach(iface, flags) {
            Ok(id) => {
                attached = Some((id, mode));
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some((id, mode)) = attached else {
        // Another tool may have taken the hook since we looked: name it.
        if let Ok(h @ (Holder::Program { .. } | Holder::Dispatcher(_))) = dispatcher::inspect(ifindex) {
            return Err(held_by(iface, &h, placement));
        }
        let e = last.expect("at least one mode was tried");
        return Err(attach_error(iface, "XDP")(e));
    };
    let link = xdp.take_link(id).map_err(attach_error(iface, "XDP"))?;
    let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Attach {
        iface: iface.to_string(),
        hook: "XDP",
        detail: format!("the kernel gave no bpf_link to pin ({e})"),
    })?;
    let path = xdp_pin(links, mode, iface);
    fd_link.pin(&path).map_err(|e| DataplaneError::Pin {
        path,
        detail: chain(&e),
    })?;
    Ok((mode, XdpAttach::Link, false))
}

/// XDP_PASS in a chain call bitmap.
const CONTINUES_ON_PASS: u32 = 1 << 2;

/// A program that would run before allowgate in a dispatcher and end the chain on
/// XDP_PASS: packets it passes would reach the host unjudged.
fn bypass_ahead(entries: &[Entry]) -> Option<&Entry> {
    entries
        .iter()
        .take_while(|e| !e.ours)
        .find(|e| e.chain_call_actions & CONTINUES_ON_PASS == 0)
}

/// Runs allowgate's ingress as a component of the dispatcher on `ifindex` (made when
/// there is none): `(mode, adopted)`.
fn join_dispatcher(
    dp: &mut Dataplane,
    iface: &str,
    ifindex: u32,
    placement: Placement,
) -> Result<(XdpMode, bool), DataplaneError> {
    let our_maps = dp.our_map_ids();
    // What a previous daemon of these pins left in the dispatcher is ours too (it uses
    // our maps): it is replaced, not run twice.
    let is_ours = |p: &ProgInfo| super::hooks::is_ours(p, &our_maps);
    let ours = Entry {
        fd: None,
        name: allowgate_ebpf::PROG_INGRESS_EXT.to_string(),
        tag: [0; 8],
        priority: placement.priority,
        chain_call_actions: CONTINUES_ON_PASS,
        frags: false,
        ours: true,
    };
    let check = |entries: &[Entry]| match bypass_ahead(entries) {
        None => Ok(()),
        Some(e) => Err(format!(
            "{} (priority {}) would run before allowgate (priority {}) and ends the chain on XDP_PASS, so packets it passes would never be judged: give allowgate a lower xdp_priority (equal priorities run in the order of the programs' names), or load {} so that XDP_PASS goes on to the next program",
            e.name, e.priority, placement.priority, e.name
        )),
    };
    let new_mode = match placement.mode {
        XdpPlacement::Native => Some(XdpMode::Native),
        XdpPlacement::Generic => Some(XdpMode::Generic),
        _ => None,
    };
    let share_error = |e: ShareError| DataplaneError::Attach {
        iface: iface.to_string(),
        hook: "XDP",
        detail: format!("cannot run in the libxdp dispatcher: {e}"),
    };
    let result = {
        let mut link_ours =
            |target: &aya::programs::ProgramFd, func: &str, btf_id: u32| -> Result<(OwnedFd, OwnedFd), ShareError> {
                let ext = dp.ext().map_err(|e| ShareError::Load(e.to_string()))?;
                if ext.fd().is_err() {
                    let target = target.try_clone().map_err(ShareError::Io)?;
                    ext.load(target, func).map_err(|e| ShareError::Load(chain(&e)))?;
                }
                let prog = ext
                    .fd()
                    .map_err(|e| ShareError::Load(e.to_string()))?
                    .as_fd()
                    .try_clone_to_owned()?;
                let target = target.as_fd().try_clone_to_owned()?;
                let link = kernel::link_extension(&prog, &target, btf_id).map_err(|source| ShareError::Link {
                    name: allowgate_ebpf::PROG_INGRESS_EXT.to_string(),
                    slot: func.trim_start_matches("prog").parse().unwrap_or(0),
                    source,
                })?;
                Ok((link, prog))
            };
        dispatcher::join(ifindex, ours, &is_ours, new_mode, &check, &mut link_ours)
    };
    match result.map_err(share_error)? {
        Ok(joined) => Ok((joined.mode, joined.was_in)),
        Err(JoinRefused::Order(why)) => Err(DataplaneError::Attach {
            iface: iface.to_string(),
            hook: "XDP",
            detail: format!("refused to join the libxdp dispatcher: {why}"),
        }),
        Err(JoinRefused::Held {
            prog,
            mode,
            link,
            dispatcher_version,
            readable,
        }) => Err(held_by(
            iface,
            &Holder::Program {
                prog,
                mode,
                link,
                dispatcher_version,
                readable,
            },
            placement,
        )),
    }
}

fn describe_prog(p: &ProgInfo) -> String {
    format!("program {} `{}` (tag {})", p.id, p.name, p.tag_hex())
}

fn holder_of_dispatcher(d: &dispatcher::Dispatcher) -> String {
    let list = d
        .components
        .iter()
        .map(|c| format!("{} (priority {})", describe_prog(&c.prog), c.priority))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "a libxdp dispatcher ({}, {} mode) running {}",
        describe_prog(&d.prog),
        d.mode.as_str(),
        if list.is_empty() { "nothing".into() } else { list }
    )
}

fn held(iface: &str, holder: &str, placement: Placement) -> DataplaneError {
    DataplaneError::HookHeld {
        iface: iface.to_string(),
        hook: "XDP",
        holder: holder.to_string(),
        ways: format!(
            "xdp_mode = \"{}\" attaches allowgate alone; set xdp_mode = \"dispatcher\" (or \"auto\") to run it as one of the dispatcher's programs, or unload them first (xdp-loader unload {iface} --all)",
            placement.mode.as_str()
        ),
    }
}

/// The error for a hook held by `holder` (a program that is no dispatcher, or a
/// dispatcher when allowgate is to run alone), with the two ways forward.
fn held_by(iface: &str, holder: &Holder, placement: Placement) -> DataplaneError {
    match holder {
        Holder::Dispatcher(d) => held(iface, &holder_of_dispatcher(d), placement),
        Holder::Nothing => DataplaneError::Attach {
            iface: iface.to_string(),
            hook: "XDP",
            detail: "the hook was free, then not".into(),
        },
        Holder::Program {
            prog,
            mode,
            readable: false,
            ..
        } => DataplaneError::HookHeld {
            iface: iface.to_string(),
            hook: "XDP",
            holder: format!(
                "program {} in {} mode (its name and how it is attached cannot be read: opening a program by id takes CAP_SYS_ADMIN, which the service does not have)",
                prog.id,
                mode.as_str()
            ),
            ways: format!(
                "detach it (as root: xdp-loader status {iface} names it), or, if it is a libxdp dispatcher, give the service CAP_SYS_ADMIN (systemctl edit allowgate: CapabilityBoundingSet= and AmbientCapabilities=) so that allowgate can join it"
            ),
        },
        Holder::Program {
            prog,
            mode,
            link,
            dispatcher_version,
            ..
        } => {
            let how = match link {
                Some(id) => format!("through bpf_link {id}"),
                None => "through netlink".to_string(),
            };
            let detach = match (link, mode) {
                (Some(id), _) => format!("bpftool link detach id {id}"),
                (None, XdpMode::Native) => format!("ip link set dev {iface} xdpdrv off"),
                (None, XdpMode::Generic) => format!("ip link set dev {iface} xdpgeneric off"),
            };
            let holder = match dispatcher_version {
                Some(v) => format!(
                    "a libxdp dispatcher of protocol version {v} ({}, {} mode, {how}), which allowgate (version {}) does not join",
                    describe_prog(prog),
                    mode.as_str(),
                    allowgate_ebpf::DISPATCHER_VERSION
                ),
                None => format!(
                    "{}, attached alone in {} mode {how}",
                    describe_prog(prog),
                    mode.as_str()
                ),
            };
            DataplaneError::HookHeld {
                iface: iface.to_string(),
                hook: "XDP",
                holder,
                ways: format!(
                    "detach it ({detach}), or load it through libxdp (xdp-loader load {iface} FILE) and set xdp_mode = \"dispatcher\" (or \"auto\") so that both run in its dispatcher"
                ),
            }
        }
    }
}

fn attach_tc(dp: &mut Dataplane, links: &Path, iface: &str) -> Result<(TcMode, bool), DataplaneError> {
    let path = tcx_pin(links, iface);
    // A program put ahead of the pinned link since: this daemon's program goes first
    // on a link of its own before the old link goes, so egress is never unfiltered.
    if take_first_place(dp, &path, iface)? {
        return Ok((TcMode::Tcx, true));
    }
    if let Some(link) = pinned_link(&path) {
        let adopted = SchedClassifierLink::try_from(link)
            .ok()
            .and_then(|l| dp.tc().ok()?.attach_to_link(l).ok());
        if adopted.is_some() {
            return Ok((TcMode::Tcx, true));
        }
        let _ = std::fs::remove_file(&path);
    }
    let tc = dp.tc()?;
    // First: tcx runs its programs in order and any verdict but TC_ACT_UNSPEC ends
    // the chain, so a program before allowgate could let a packet out unjudged.
    match tcx_first(tc, iface) {
        Ok(fd_link) => {
            fd_link.pin(&path).map_err(|e| DataplaneError::Pin {
                path,
                detail: chain(&e),
            })?;
            Ok((TcMode::Tcx, false))
        }
        Err(_) => {
            // Kernels before 6.6: a clsact filter, which the kernel keeps after we exit
            // without a pin. A restart replaces it: our old filter is removed first.
            if let Err(e) = tc::qdisc_add_clsact(iface)
                && !matches!(&e, tc::TcError::AlreadyAttached)
                && !chain(&e).contains("exists")
            {
                return Err(DataplaneError::Attach {
                    iface: iface.to_string(),
                    hook: "TC egress",
                    detail: chain(&e),
                });
            }
            let _ = tc::qdisc_detach_program(iface, TcAttachType::Egress, allowgate_ebpf::PROG_EGRESS);
            let id = tc
                .attach_with_options(
                    iface,
                    TcAttachType::Egress,
                    TcAttachOptions::Netlink(NlOptions::default()),
                )
                .map_err(attach_error(iface, "TC egress"))?;
            // Dropping the link would remove the filter; it must outlive the daemon.
            std::mem::forget(tc.take_link(id).map_err(attach_error(iface, "TC egress"))?);
            Ok((TcMode::Clsact, false))
        }
    }
}

/// Moves allowgate's tcx egress link (pinned at `pin`) back to the front when a program
/// was put ahead of it: a link of this daemon's program goes first, is pinned in place
/// of the old one, and only then the old link is cut, so egress is never unfiltered
/// (for that instant a packet may be judged twice, which counts it twice and changes
/// nothing else). tcx takes a program once per hook, so this works when the old link
/// runs another program (a previous daemon's); a running daemon's own link cannot move
/// without a gap, and says so. `false`: nothing to move.
pub(super) fn take_first_place(dp: &mut Dataplane, pin: &Path, iface: &str) -> Result<bool, DataplaneError> {
    let Ok(old) = kernel::obj_get(pin) else {
        return Ok(false);
    };
    let Ok(state) = kernel::link_state(&old) else {
        return Ok(false);
    };
    let Some(ifindex) = if_index(iface) else {
        return Ok(false);
    };
    if state.ifindex != ifindex {
        return Ok(false);
    }
    let order = tcx_order(iface);
    if order.first() == Some(&state.prog_id) || order.is_empty() {
        return Ok(false);
    }
    let ours = dp.tc()?.fd().ok().and_then(|fd| fd.as_fd().try_clone_to_owned().ok());
    if ours.and_then(|fd| kernel::prog_id(&fd).ok()) == Some(state.prog_id) {
        return Err(DataplaneError::Attach {
            iface: iface.to_string(),
            hook: "TC egress",
            detail: format!(
                "program {} was put ahead of allowgate since it attached, and tcx cannot move a running program without a gap: remove that program, or restart allowgate (a new daemon goes first again)",
                order[0]
            ),
        });
    }
    let fd_link = tcx_first(dp.tc()?, iface)?;
    // bpffs takes no dot in a name.
    let tmp = pin.with_file_name(format!("{}-new", pin.file_name().unwrap_or_default().to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    fd_link.pin(&tmp).map_err(|e| DataplaneError::Pin {
        path: tmp.clone(),
        detail: chain(&e),
    })?;
    std::fs::rename(&tmp, pin).map_err(|source| DataplaneError::Bpffs {
        path: pin.to_path_buf(),
        source,
    })?;
    let _ = kernel::link_detach(&old);
    Ok(true)
}

/// A tcx link of the egress program ahead of every other program on `iface`, for the
/// caller to pin. An error also where the kernel has no tcx (before 6.6).
fn tcx_first(tc: &mut SchedClassifier, iface: &str) -> Result<FdLink, DataplaneError> {
    let id = tc
        .attach_with_options(
            iface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )
        .map_err(attach_error(iface, "TC egress"))?;
    let link = tc.take_link(id).map_err(attach_error(iface, "TC egress"))?;
    FdLink::try_from(link).map_err(|e| DataplaneError::Attach {
        iface: iface.to_string(),
        hook: "TC egress",
        detail: format!("the kernel gave no bpf_link to pin ({e})"),
    })
}

/// The ids of the programs on the tcx egress hook of `iface`, in run order.
pub(super) fn tcx_order(iface: &str) -> Vec<u32> {
    if_index(iface)
        .and_then(|i| kernel::tcx_egress_ids(i).ok())
        .unwrap_or_default()
}

/// Opens the pinned link at `path` and cuts it from its hook, even while another
/// process (a running daemon) still holds it.
fn force_detach(path: &Path) -> std::io::Result<()> {
    kernel::link_detach(&kernel::obj_get(path)?)
}

/// A pinned link that is not on the interface `iface` now (detached, its interface
/// re-created, or renamed away) is cut and unpinned, so that a fresh one is made
/// instead of a program being swapped into a link that filters nothing, or filters
/// another interface.
fn drop_stale_pin(path: &Path, ifindex: u32) {
    let Ok(fd) = kernel::obj_get(path) else { return };
    if kernel::link_state(&fd).is_ok_and(|s| s.ifindex == ifindex) {
        return;
    }
    let _ = kernel::link_detach(&fd);
    let _ = std::fs::remove_file(path);
}

/// Detaches every pinned link under `dir`, removes clsact filters from `interfaces`,
/// and removes every pin: the interfaces pass everything again. What it cannot remove
/// is reported; the rest is still removed.
pub fn detach_all(dir: &Path, interfaces: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    // allowgate's programs in libxdp dispatchers (of this network namespace's
    // interfaces, configured or not): the others there go on without them.
    let our_maps = super::hooks::pinned_map_ids(dir);
    if !our_maps.is_empty() {
        let is_ours = |p: &ProgInfo| super::hooks::is_ours(p, &our_maps);
        let mut ifindexes: Vec<u32> = dispatcher::pinned_dispatchers().into_iter().map(|(i, _)| i).collect();
        ifindexes.extend(interfaces.iter().filter_map(|i| if_index(i)));
        ifindexes.sort_unstable();
        ifindexes.dedup();
        for ifindex in ifindexes {
            if let Err(e) = dispatcher::leave(ifindex, &is_ours) {
                problems.push(format!(
                    "cannot take allowgate out of the XDP dispatcher of interface {ifindex}: {e}"
                ));
            }
        }
    }
    let links = dir.join("links");
    // Only what allowgate pins there: a bpffs_dir shared with other programs (or
    // pointed at /sys/fs/bpf itself) keeps their pins.
    let ours =
        |name: &str| name.starts_with("xdp-native-") || name.starts_with("xdp-generic-") || name.starts_with("tc-tcx-");
    if let Ok(entries) = std::fs::read_dir(&links) {
        for entry in entries.flatten() {
            let path = entry.path();
            if !ours(&entry.file_name().to_string_lossy()) {
                problems.push(format!("left {}: not a pin of allowgate's", path.display()));
                continue;
            }
            // A link whose interface is gone is already detached (ENOLINK).
            if let Err(e) = force_detach(&path)
                && e.raw_os_error() != Some(libc::ENOLINK)
            {
                problems.push(format!("cannot detach {}: {e}", path.display()));
            }
            let _ = std::fs::remove_file(&path);
        }
    }
    for iface in interfaces {
        let _ = tc::qdisc_detach_program(iface, TcAttachType::Egress, allowgate_ebpf::PROG_EGRESS);
    }
    for name in ["ingress", "egress", "ingress-dispatched"] {
        let _ = std::fs::remove_file(dir.join("progs").join(name));
    }
    for name in allowgate_ebpf::map::ALL {
        let path = dir.join("maps").join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("cannot unpin {}: {e}", path.display()));
            }
            _ => {}
        }
    }
    // Directories go only when empty: what is left in them is someone else's.
    for d in [links, dir.join("maps"), dir.join("progs"), dir.to_path_buf()] {
        let _ = std::fs::remove_dir(&d);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, chain: u32, ours: bool) -> Entry {
        Entry {
            fd: None,
            name: name.to_string(),
            tag: [0; 8],
            priority: 0,
            chain_call_actions: chain,
            frags: false,
            ours,
        }
    }

    const DROP: u32 = 1 << 1;

    /// Only a program before allowgate whose XDP_PASS ends the chain lets packets past it.
    #[test]
    fn a_program_ahead_that_ends_the_chain_on_pass_is_a_bypass() {
        let ours = || entry(allowgate_ebpf::PROG_INGRESS_EXT, CONTINUES_ON_PASS, true);
        let goes_on = entry("goes_on", CONTINUES_ON_PASS, false);
        let ends = entry("ends_on_pass", DROP, false);
        assert!(
            bypass_ahead(&[ours(), entry("after", DROP, false)]).is_none(),
            "behind us: harmless"
        );
        assert!(bypass_ahead(&[goes_on, ours()]).is_none(), "passes on to us: harmless");
        let chain = [entry("first", CONTINUES_ON_PASS | DROP, false), ends, ours()];
        assert_eq!(bypass_ahead(&chain).map(|e| e.name.as_str()), Some("ends_on_pass"));
    }
}
