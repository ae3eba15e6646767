//! `allowgate status`: what is enforced now. From the daemon when one answers, else
//! read from the kernel's pins and the daemon's state file.

use std::{
    collections::BTreeMap,
    path::Path,
    process::ExitCode,
    time::{Duration, UNIX_EPOCH},
};

use allowgate_ebpf::{self as abi, Reason};
use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    control::{
        client::{self, ClientError},
        protocol::{Request, Response},
    },
    daemon::State,
    dataplane::{Counters, read_live},
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

fn by_reason(c: &Counters, direction: u8, verdict: u8) -> BTreeMap<&'static str, u64> {
    Reason::ALL
        .iter()
        .map(|&r| (r.as_str(), c.get(direction, verdict, r).packets))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "allowgate")
}

/// The status object (SPEC section 3) from the pins under `bpffs_dir` and `state`.
pub fn report(bpffs_dir: &Path, state: Option<&State>, running: bool) -> anyhow::Result<Value> {
    let live = read_live(bpffs_dir, state.and_then(|s| s.entries)).with_context(|| {
        format!(
            "nothing is enforced here: no allowgate pins under {} (start the daemon)",
            bpffs_dir.display()
        )
    })?;
    let mode = if live.config.flags & abi::F_ENFORCE != 0 {
        "enforce"
    } else {
        "monitor"
    };
    let last_change =
        state.map(|s| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s.last_change)).to_string());
    let counters = |direction| {
        json!({
            "pass": live.counters.packets(direction, abi::VERDICT_PASS),
            "drop": live.counters.packets(direction, abi::VERDICT_DROP),
            "pass_by_reason": by_reason(&live.counters, direction, abi::VERDICT_PASS),
            "drop_by_reason": by_reason(&live.counters, direction, abi::VERDICT_DROP),
        })
    };
    let interfaces: Vec<Value> = state
        .map(|s| {
            s.interfaces
                .iter()
                .map(|i| json!({"name": i.name, "xdp_mode": i.xdp_mode, "tc_mode": i.tc_mode}))
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({
        "running": running,
        "mode": mode,
        "regions": state.map(|s| s.regions.clone()).unwrap_or_default(),
        "features": state.map(|s| s.features.clone()).unwrap_or_default(),
        "interfaces": interfaces,
        "generation": live.config.generation,
        "last_change": last_change,
        "rollback_in_secs": state.and_then(|s| s.rollback_deadline).map(|d| d.saturating_sub(crate::daemon::now())),
        "entries": { "v4": live.v4_entries, "v6": live.v6_entries },
        "counters": { "ingress": counters(abi::DIR_INGRESS), "egress": counters(abi::DIR_EGRESS) },
        "events": { "suppressed": live.counters.events_suppressed, "lost": live.counters.events_lost },
        "learned": {
            "entries": state.and_then(|s| s.learned).map(|l| l.0).unwrap_or(0),
            "refused": state.and_then(|s| s.learned).map(|l| l.1).unwrap_or(0),
            "held": live.counters.dns_held,
            "unheld": live.counters.dns_unheld,
            "unsolicited": live.counters.dns_unsolicited,
            "unresolved": state.map(|s| s.unresolved.clone()).unwrap_or_default(),
        },
    }))
}

impl Args {
    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

pub fn execute(args: Args, socket: &Path) -> anyhow::Result<ExitCode> {
    let status = match client::call(socket, &Request::Status) {
        Ok(Response::Status { status }) => status,
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
        // No daemon (or not ours to ask): the kernel's pins still say what is enforced.
        Err(ClientError::NotRunning { .. } | ClientError::PermissionDenied { .. }) => {
            let (config, _) = super::load_config(args.config.as_deref())?;
            let state = State::load(&config.state_dir)?;
            let running = state.as_ref().is_some_and(|s| pid_alive(s.pid));
            report(&config.bpffs_dir, state.as_ref(), running)?
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", table(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn words(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn table(s: &Value) -> String {
    let mut out = String::new();
    let running = s["running"].as_bool().unwrap_or(false);
    out += &format!(
        "daemon:      {}\n",
        if running {
            "running"
        } else {
            "not running (the pinned policy is still enforced)"
        }
    );
    out += &format!("mode:        {}\n", s["mode"].as_str().unwrap_or("?"));
    out += &format!(
        "generation:  {} (last change {})\n",
        s["generation"],
        s["last_change"].as_str().unwrap_or("unknown")
    );
    if let Some(secs) = s["rollback_in_secs"].as_u64() {
        out += &format!("pending:     the last change rolls back in {secs} s unless `allowgate confirm`\n");
    }
    out += &format!("regions:     {}\n", words(&s["regions"]));
    out += &format!("features:    {}\n", words(&s["features"]));
    for i in s["interfaces"].as_array().into_iter().flatten() {
        out += &format!(
            "interface:   {} (XDP {}, TC {})\n",
            i["name"].as_str().unwrap_or("?"),
            i["xdp_mode"].as_str().unwrap_or("?"),
            i["tc_mode"].as_str().unwrap_or("?")
        );
    }
    out += &format!(
        "entries:     {} IPv4, {} IPv6\n\n",
        s["entries"]["v4"], s["entries"]["v6"]
    );
    let mut rows = vec![["DIRECTION", "VERDICT", "REASON", "PACKETS"].map(String::from).to_vec()];
    for direction in ["ingress", "egress"] {
        for (verdict, key) in [("pass", "pass_by_reason"), ("drop", "drop_by_reason")] {
            for (reason, n) in s["counters"][direction][key].as_object().into_iter().flatten() {
                rows.push(vec![direction.into(), verdict.into(), reason.clone(), n.to_string()]);
            }
        }
    }
    out + &super::render_table(&rows)
}
