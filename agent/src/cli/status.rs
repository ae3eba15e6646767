//! `allowgate status`: what is enforced now. From the daemon when one answers, else
//! read from the kernel's pins and the daemon's state file.

use std::{path::Path, process::ExitCode};

use anyhow::bail;

use crate::{
    control::{
        client::{self, ClientError},
        protocol::{Request, Response},
    },
    daemon::{
        Record,
        status::{StatusReport, kernel_interfaces, report},
    },
    policy::{StateMode, config::XdpAttach},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (fields are documented in the README).
    #[arg(long)]
    json: bool,
    /// The config file (for `bpffs_dir` and `state_dir` when no daemon answers).
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
}

/// The effective uid, from /proc (no `unsafe` for geteuid).
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "allowgate")
}

impl Args {
    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

pub fn execute(args: Args, socket: &Path) -> anyhow::Result<ExitCode> {
    let status = match client::call(socket, &Request::Status) {
        Ok(Response::Status { status }) => *status,
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
        // No daemon (or not ours to ask): the kernel's pins still say what is enforced.
        Err(asked @ (ClientError::NotRunning { .. } | ClientError::PermissionDenied { .. })) => {
            let (config, _) = super::load_config(args.config.as_deref())?;
            let state = Record::load(&config.state_dir).unwrap_or(None);
            let running = state.as_ref().is_some_and(|s| pid_alive(s.pid));
            let interfaces = state.as_ref().map(|s| kernel_interfaces(&config.bpffs_dir, s));
            match report(&config.bpffs_dir, state.as_ref(), running, interfaces) {
                Ok(status) => status,
                Err(e) if e.is_permission_denied() => bail!(
                    "{asked}, and uid {} may not read the pins under {}: run as root, or as a member of the daemon's `socket_group`",
                    current_uid(),
                    config.bpffs_dir.display()
                ),
                Err(e) if matches!(asked, ClientError::NotRunning { .. }) => bail!(
                    "nothing is enforced here: no allowgate pins under {} (start the daemon): {}",
                    config.bpffs_dir.display(),
                    crate::error_chain(&e)
                ),
                Err(e) => bail!("{asked}, and {}", crate::error_chain(&e)),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", table(&status));
    }
    // Like `systemctl is-active`: scripts and probes see at once that nothing filters.
    Ok(if status.enforcing {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    })
}

fn table(s: &StatusReport) -> String {
    let mut out = String::new();
    out += &format!(
        "daemon:      {}\n",
        if s.running {
            "running"
        } else {
            "not running (the pinned policy is still enforced)"
        }
    );
    if !s.enforcing {
        out += "enforcing:   NO: a configured interface is not protected (see below)\n";
    }
    out += &format!("mode:        {}\n", s.mode);
    out += &format!(
        "generation:  {} (last change {})\n",
        s.generation,
        s.last_change.as_deref().unwrap_or("unknown")
    );
    if let Some(secs) = s.rollback_in_secs {
        out += &format!("pending:     the last change rolls back in {secs} s unless `allowgate confirm`\n");
    }
    if let Some(catalog) = &s.catalog {
        out += &format!("catalog:     {catalog}\n");
    }
    for c in &s.catalog_sources {
        let published = c
            .date
            .as_deref()
            .map(|d| format!(", published {d}"))
            .unwrap_or_default();
        let age = match c.age_seconds {
            Some(secs) => format!("{} days old", secs / 86_400),
            None => "age unknown".to_string(),
        };
        let stale = match (c.stale, s.max_catalog_age_days) {
            (true, Some(max)) => format!(": STALE, past max_catalog_age ({max} days)"),
            _ => String::new(),
        };
        out += &format!("source:      {} ({}{published}), {age}{stale}\n", c.source, c.version);
    }
    out += &format!("regions:     {}\n", s.regions.join(", "));
    out += &format!("features:    {}\n", s.features.join(", "));
    for i in &s.interfaces {
        let xdp = match i.xdp_attach {
            XdpAttach::Dispatcher => format!("{} in a libxdp dispatcher", i.xdp_mode),
            XdpAttach::Link => i.xdp_mode.to_string(),
        };
        match &i.problem {
            None => out += &format!("interface:   {} (XDP {xdp}, TC {})\n", i.name, i.tc_mode),
            Some(p) => out += &format!("interface:   {} NOT PROTECTED: {p}\n", i.name),
        }
        // The other programs on the hooks, and allowgate's place among them.
        for h in &i.hooks {
            let programs = h
                .programs
                .iter()
                .enumerate()
                .map(|(n, p)| {
                    let mut what = vec![format!("program {}", p.id)];
                    if let Some(prio) = p.priority {
                        what.push(format!("priority {prio}"));
                    }
                    if !p.continues_on.is_empty() {
                        what.push(format!("next runs after {}", p.continues_on.join("/")));
                    }
                    let who = if p.allowgate { " [allowgate]" } else { "" };
                    format!("{}. {}{who} ({})", n + 1, p.name, what.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ");
            out += &format!("  {:<11}{}: {programs}\n", format!("{}:", h.hook), h.attach);
        }
    }
    let indexed = if s.entries.v4_host_index { " (/32s indexed)" } else { "" };
    out += &format!("entries:     {} IPv4{indexed}, {} IPv6\n", s.entries.v4, s.entries.v6);
    let t = &s.tracking;
    if t.mode == StateMode::Stateful {
        out += &format!(
            "tracking:    stateful{}: {} IPv4 and {} IPv6 flows, {} and {} of them assured\n",
            if t.liberal { ", liberal" } else { "" },
            t.flows_v4,
            t.flows_v6,
            t.assured_v4,
            t.assured_v6,
        );
        out += &format!(
            "             assured: {} per family; {} made assured, {} seeded, {} expired, {} evicted\n",
            t.capacity, t.inserts, t.seeded, t.expired, t.evictions
        );
        out += &format!(
            "             unassured: {} per family; {} added, {} pushed out by newer ones\n\n",
            t.unassured_capacity, t.unassured_inserts, t.unassured_evictions
        );
    } else {
        out += &format!("tracking:    {}: return paths pass on their rule alone\n\n", t.mode);
    }
    let d = &s.dns;
    if d.learning {
        let how = match d.path.as_str() {
            "none" => "answers pass at once, learned from a copy".to_string(),
            path => format!("answers held, given back through {path}"),
        };
        out.truncate(out.trim_end_matches('\n').len() + 1);
        out += &format!(
            "dns:         {how} (give_back = {}); {} held, {} given back, {} lost, {} passed unheld\n",
            d.give_back, d.held, d.given_back, d.failed, d.passed_unheld
        );
        if let Some(why) = &d.reason {
            out += &format!("             {why}\n");
        }
        out += "\n";
    }
    let mut rows = vec![["DIRECTION", "VERDICT", "REASON", "PACKETS"].map(String::from).to_vec()];
    for (direction, c) in [("ingress", &s.counters.ingress), ("egress", &s.counters.egress)] {
        for (verdict, by) in [("pass", &c.pass_by_reason), ("drop", &c.drop_by_reason)] {
            for (reason, n) in by {
                rows.push(vec![direction.into(), verdict.into(), reason.clone(), n.to_string()]);
            }
        }
    }
    out + &super::render_table(&rows)
}
