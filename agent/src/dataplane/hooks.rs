//! The other programs on the hooks allowgate shares, per the kernel: the XDP hook
//! (alone, or a libxdp dispatcher and its components in run order) and the tcx egress
//! hook (in run order), with allowgate's place among them. `status` lists them; the
//! checks say when a program ahead of allowgate could let a packet past it unjudged.

use std::path::Path;

use allowgate_ebpf as abi;

use super::{
    Attachment, TcMode, XdpAttach, attach,
    dispatcher::{self, Holder},
    kernel::{self, ProgInfo},
};

/// One program on a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookProgram {
    pub id: u32,
    pub name: String,
    pub tag: String,
    /// Its run priority in a dispatcher.
    pub priority: Option<u32>,
    /// In a dispatcher: the XDP actions after which the next program runs.
    pub continues_on: Vec<String>,
    /// One of this allowgate's (it uses the maps pinned under its `bpffs_dir`).
    pub allowgate: bool,
}

/// One hook of an interface and the programs on it, in run order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `xdp` or `tc egress`.
    pub hook: &'static str,
    /// How the programs sit there: `alone` (native|generic), `dispatcher` (native|generic,
    /// with the dispatcher's program id), `tcx`.
    pub attach: String,
    pub programs: Vec<HookProgram>,
}

impl Hook {
    /// allowgate's place (0: first), when it is there.
    pub fn position(&self) -> Option<usize> {
        self.programs.iter().position(|p| p.allowgate)
    }
}

/// A program of this allowgate: one that uses its maps.
pub fn is_ours(p: &ProgInfo, our_maps: &[u32]) -> bool {
    p.map_ids.iter().any(|m| our_maps.contains(m))
}

/// The ids of the maps pinned under `dir` that every allowgate program uses.
pub fn pinned_map_ids(dir: &Path) -> Vec<u32> {
    [abi::map::ACTIVE, abi::map::STATS]
        .iter()
        .filter_map(|name| kernel::obj_get(&dir.join("maps").join(name)).ok())
        .filter_map(|fd| kernel::map_id(&fd).ok())
        .collect()
}

fn program(p: &ProgInfo, our_maps: &[u32]) -> HookProgram {
    HookProgram {
        id: p.id,
        name: p.name.clone(),
        tag: p.tag_hex(),
        priority: None,
        continues_on: Vec::new(),
        allowgate: is_ours(p, our_maps),
    }
}

/// The XDP hook of `ifindex`, or `None` when nothing is on it.
pub fn xdp(ifindex: u32, our_maps: &[u32], our_ingress: Option<u32>) -> Option<Hook> {
    match dispatcher::inspect(ifindex).ok()? {
        Holder::Nothing => None,
        Holder::Program {
            prog,
            mode,
            link,
            readable,
            ..
        } => Some(Hook {
            hook: "xdp",
            attach: match (link, readable) {
                (Some(id), _) => format!("alone ({}, bpf_link {id})", mode.as_str()),
                (None, true) => format!("alone ({}, netlink)", mode.as_str()),
                (None, false) => format!("alone ({})", mode.as_str()),
            },
            programs: vec![if readable {
                program(&prog, our_maps)
            } else {
                HookProgram {
                    name: UNREADABLE.to_string(),
                    allowgate: Some(prog.id) == our_ingress,
                    ..program(&prog, our_maps)
                }
            }],
        }),
        Holder::Dispatcher(d) => Some(Hook {
            hook: "xdp",
            attach: format!("libxdp dispatcher {} ({})", d.prog.id, d.mode.as_str()),
            programs: d
                .components
                .iter()
                .map(|c| HookProgram {
                    priority: Some(c.priority),
                    continues_on: c.chain_call_names(),
                    ..program(&c.prog, our_maps)
                })
                .collect(),
        }),
    }
}

/// The tcx egress hook of `iface`, or `None` when nothing is on it. A program the
/// kernel does not let us open (that takes CAP_SYS_ADMIN) is listed by its id alone.
pub fn tcx_egress(iface: &str, our_maps: &[u32], our_egress: Option<u32>) -> Option<Hook> {
    let ids = super::attach::tcx_order(iface);
    let programs: Vec<HookProgram> = ids
        .iter()
        .map(
            |&id| match kernel::prog_by_id(id).and_then(|fd| kernel::prog_info(&fd)) {
                Ok(p) => program(&p, our_maps),
                Err(_) => HookProgram {
                    id,
                    name: UNREADABLE.to_string(),
                    tag: String::new(),
                    priority: None,
                    continues_on: Vec::new(),
                    allowgate: Some(id) == our_egress,
                },
            },
        )
        .collect();
    (!programs.is_empty()).then(|| Hook {
        hook: "tc egress",
        attach: "tcx".to_string(),
        programs,
    })
}

/// The name shown for a program the kernel does not let us open by id.
const UNREADABLE: &str = "? (reading it takes CAP_SYS_ADMIN)";

/// Both hooks of `iface` as the kernel has them.
pub fn list(dir: &Path, iface: &str) -> Vec<Hook> {
    let our_maps = pinned_map_ids(dir);
    let pinned = |name: &str| {
        kernel::obj_get(&dir.join("progs").join(name))
            .ok()
            .and_then(|fd| kernel::prog_id(&fd).ok())
    };
    let (our_ingress, our_egress) = (pinned("ingress"), pinned("egress"));
    let Some(ifindex) = kernel::if_index(iface) else {
        return Vec::new();
    };
    xdp(ifindex, &our_maps, our_ingress)
        .into_iter()
        .chain(tcx_egress(iface, &our_maps, our_egress))
        .collect()
}

/// What is wrong with interface `a.name`'s attachment (pins under `dir`), per the
/// kernel: no such interface here, a link detached, gone, on another interface, or
/// running another program than the one pinned under `dir/progs`; allowgate's program
/// missing from the dispatcher, or behind a program that lets packets past it. `None`:
/// it filters.
pub fn attachment_problem(dir: &Path, a: &Attachment) -> Option<String> {
    let iface = a.name.as_str();
    let Some(ifindex) = kernel::if_index(iface) else {
        return Some(format!("there is no interface `{iface}` here"));
    };
    let prog = |name: &str| {
        kernel::obj_get(&dir.join("progs").join(name))
            .ok()
            .and_then(|fd| kernel::prog_id(&fd).ok())
    };
    let links = dir.join("links");
    let mut problems = Vec::new();
    match a.xdp_attach {
        XdpAttach::Link => {
            let xdp = kernel::hook_state(
                &attach::xdp_pin(&links, a.xdp_mode, iface),
                iface,
                ifindex,
                prog("ingress"),
                "XDP",
            );
            if let kernel::HookState::Broken(p) = xdp {
                problems.push(p);
            }
        }
        XdpAttach::Dispatcher => {
            if let Some(p) = dispatcher_problem(ifindex, prog(super::INGRESS_DISPATCHED)) {
                problems.push(p);
            }
        }
    }
    // A clsact filter has no link to ask; the kernel keeps it with the qdisc.
    if a.tc_mode == TcMode::Tcx {
        let pin = attach::tcx_pin(&links, iface);
        let tc = kernel::hook_state(&pin, iface, ifindex, prog("egress"), "TC egress");
        match tc {
            kernel::HookState::Broken(p) => problems.push(p),
            kernel::HookState::Attached => {
                if let Some(p) = tcx_problem(iface, prog("egress")) {
                    problems.push(p);
                }
            }
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// What is wrong with allowgate (its component: program `want`) in the dispatcher on
/// `ifindex`: no dispatcher there, allowgate's program not in it, or a program ahead
/// of it that ends the chain on XDP_PASS. `None`: every packet the hook passes on was
/// judged by allowgate.
pub fn dispatcher_problem(ifindex: u32, want: Option<u32>) -> Option<String> {
    let d = match dispatcher::inspect(ifindex) {
        Err(e) => return Some(format!("cannot read its XDP hook: {e}")),
        Ok(Holder::Nothing) => return Some("its XDP hook is empty: the libxdp dispatcher was taken off".into()),
        Ok(Holder::Program {
            readable: false, prog, ..
        }) => {
            return Some(format!(
                "cannot tell whether program {} on its XDP hook is a libxdp dispatcher: opening a program by id takes CAP_SYS_ADMIN",
                prog.id
            ));
        }
        Ok(Holder::Program { prog, .. }) => {
            return Some(format!(
                "its XDP hook runs program {} `{}`, no libxdp dispatcher",
                prog.id, prog.name
            ));
        }
        Ok(Holder::Dispatcher(d)) => d,
    };
    let Some(position) = d.components.iter().position(|c| Some(c.prog.id) == want) else {
        return Some(format!(
            "allowgate's program is not among those of the libxdp dispatcher {} on its XDP hook",
            d.prog.id
        ));
    };
    d.components[..position]
        .iter()
        .find(|c| !c.continues_on_pass())
        .map(|c| {
            format!(
                "program {} `{}` (priority {}) runs before allowgate in the libxdp dispatcher and ends the chain on XDP_PASS: packets it passes are never judged",
                c.prog.id, c.prog.name, c.priority
            )
        })
}

/// What is wrong with allowgate's place (program `want`) on the tcx egress hook of
/// `iface`: a program ahead of it, which may end the chain (any verdict but
/// TC_ACT_UNSPEC) before allowgate judges.
pub fn tcx_problem(iface: &str, want: Option<u32>) -> Option<String> {
    let want = want?;
    let ids = super::attach::tcx_order(iface);
    let position = ids.iter().position(|&id| id == want)?;
    let ahead = *ids.first().filter(|_| position > 0)?;
    let name = kernel::prog_by_id(ahead)
        .and_then(|fd| kernel::prog_info(&fd))
        .map(|p| format!(" `{}`", p.name))
        .unwrap_or_default();
    Some(format!(
        "program {ahead}{name} runs before allowgate on tc egress (tcx) and may end the chain before allowgate judges"
    ))
}
