//! Attaching the programs to interfaces, adopting the pinned links a previous daemon
//! left (the program is replaced in place: no gap), and taking it all down.

use std::path::{Path, PathBuf};

use aya::programs::{
    LinkOrder, ProgramError, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
};
use serde::Serialize;

use super::{
    Dataplane, DataplaneError,
    kernel::{self, if_index},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver.
    Native,
    /// In the kernel's stack, for drivers without XDP.
    Generic,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcMode {
    Tcx,
    Clsact,
}

/// How the programs sit on one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub name: String,
    pub xdp_mode: XdpMode,
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
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

pub(super) fn attach(dp: &mut Dataplane, iface: &str) -> Result<Attachment, DataplaneError> {
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
    let (xdp_mode, xdp_adopted) = attach_xdp(dp, &links, iface)?;
    let (tc_mode, tc_adopted) = attach_tc(dp, &links, iface)?;
    Ok(Attachment {
        name: iface.to_string(),
        xdp_mode,
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

fn attach_xdp(dp: &mut Dataplane, links: &Path, iface: &str) -> Result<(XdpMode, bool), DataplaneError> {
    for mode in [XdpMode::Native, XdpMode::Generic] {
        let path = xdp_pin(links, mode, iface);
        let Some(link) = pinned_link(&path) else { continue };
        // Replace the program inside the existing link: packets never see no program.
        let adopted = XdpLink::try_from(link)
            .ok()
            .and_then(|l| dp.xdp().ok()?.attach_to_link(l).ok());
        if adopted.is_some() {
            return Ok((mode, true));
        }
        // The link is defunct (its interface went away): start over.
        let _ = std::fs::remove_file(&path);
    }
    let xdp = dp.xdp()?;
    let (id, mode) = match xdp.attach(iface, aya::programs::XdpMode::Driver) {
        Ok(id) => (id, XdpMode::Native),
        Err(_) => (
            xdp.attach(iface, aya::programs::XdpMode::Skb)
                .map_err(attach_error(iface, "XDP"))?,
            XdpMode::Generic,
        ),
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
    Ok((mode, false))
}

fn attach_tc(dp: &mut Dataplane, links: &Path, iface: &str) -> Result<(TcMode, bool), DataplaneError> {
    let path = tcx_pin(links, iface);
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
    match tc.attach_with_options(
        iface,
        TcAttachType::Egress,
        TcAttachOptions::TcxOrder(LinkOrder::default()),
    ) {
        Ok(id) => {
            let link = tc.take_link(id).map_err(attach_error(iface, "TC egress"))?;
            let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Attach {
                iface: iface.to_string(),
                hook: "TC egress",
                detail: format!("the kernel gave no bpf_link to pin ({e})"),
            })?;
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
    for name in ["ingress", "egress"] {
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
