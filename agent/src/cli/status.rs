//! `allowgate status`: what is enforced now, read from the kernel's pins and the
//! daemon's state file.

use std::{collections::BTreeMap, process::ExitCode, time::{Duration, UNIX_EPOCH}};

use allowgate_ebpf::{self as abi, Reason};
use anyhow::Context as _;
use serde_json::json;

use crate::{daemon::State, dataplane::{Counters, read_live}};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (fields are documented in the README).
    #[arg(long)]
    json: bool,
    /// The config file (for `bpffs_dir` and `state_dir`).
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

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let (config, _) = super::load_config(args.config.as_deref())?;
    let state = State::load(&config.state_dir)?;
    let live = read_live(&config.bpffs_dir).with_context(|| {
        format!("nothing is enforced here: no allowgate pins under {} (start the daemon)", config.bpffs_dir.display())
    })?;
    let mode = if live.config.flags & abi::F_ENFORCE != 0 { "enforce" } else { "monitor" };
    let running = state.as_ref().is_some_and(|s| pid_alive(s.pid));
    let last_change = state
        .as_ref()
        .map(|s| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s.last_change)).to_string());
    let counters = |direction| {
        json!({
            "pass": live.counters.packets(direction, abi::VERDICT_PASS),
            "drop": live.counters.packets(direction, abi::VERDICT_DROP),
            "pass_by_reason": by_reason(&live.counters, direction, abi::VERDICT_PASS),
            "drop_by_reason": by_reason(&live.counters, direction, abi::VERDICT_DROP),
        })
    };
    let interfaces: Vec<serde_json::Value> = state
        .as_ref()
        .map(|s| s.interfaces.iter().map(|i| json!({"name": i.name, "xdp_mode": i.xdp_mode, "tc_mode": i.tc_mode})).collect())
        .unwrap_or_default();
    let status = json!({
        "running": running,
        "mode": mode,
        "regions": state.as_ref().map(|s| s.regions.clone()).unwrap_or_default(),
        "features": state.as_ref().map(|s| s.features.clone()).unwrap_or_default(),
        "interfaces": interfaces,
        "generation": live.config.generation,
        "last_change": last_change,
        "entries": { "v4": live.v4_entries, "v6": live.v6_entries },
        "counters": { "ingress": counters(abi::DIR_INGRESS), "egress": counters(abi::DIR_EGRESS) },
        "events": { "suppressed": live.counters.events_suppressed, "lost": live.counters.events_lost },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = &status;
    println!("daemon:      {}", if running { "running" } else { "not running (the pinned policy is still enforced)" });
    println!("mode:        {mode}");
    println!("generation:  {} (last change {})", live.config.generation, last_change.as_deref().unwrap_or("unknown"));
    println!("regions:     {}", s["regions"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default());
    println!("features:    {}", s["features"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default());
    for i in state.iter().flat_map(|s| &s.interfaces) {
        println!("interface:   {} (XDP {}, TC {})", i.name, i.xdp_mode, i.tc_mode);
    }
    println!("entries:     {} IPv4, {} IPv6", live.v4_entries, live.v6_entries);
    let mut rows = vec![["DIRECTION", "VERDICT", "REASON", "PACKETS", "BYTES"].map(String::from).to_vec()];
    for ((direction, verdict, reason), c) in &live.counters.by_key {
        rows.push(vec![
            if *direction == abi::DIR_EGRESS { "egress" } else { "ingress" }.to_string(),
            if *verdict == abi::VERDICT_PASS { "pass" } else { "drop" }.to_string(),
            reason.as_str().to_string(),
            c.packets.to_string(),
            c.bytes.to_string(),
        ]);
    }
    println!();
    print!("{}", super::render_table(&rows));
    Ok(ExitCode::SUCCESS)
}
