//! The daemon: compile the configured policy, load and attach, then keep it enforced
//! while it runs. One reconcile path (`apply`) serves start-up and reloads; signals
//! end in one shutdown.
//!
//! Leaving does not detach: the programs, links and maps are pinned, so the last
//! policy stays enforced when the daemon exits or is killed, and the next daemon
//! adopts it without a gap. `allowgate down` is the way to stop enforcing.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{debug, error, info, warn};

use crate::{
    catalog::Feature,
    cli::load_config,
    dataplane::{Attachment, Dataplane, LoadOptions},
    policy::{Config, Policy, Selection, compile_policy},
};

/// What the daemon last put in force, kept in `state_dir/state.json` for `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub regions: Vec<String>,
    pub features: Vec<Feature>,
    pub mode: String,
    pub interfaces: Vec<InterfaceState>,
    pub generation: u64,
    /// Seconds since the Unix epoch.
    pub last_change: u64,
    pub bpffs_dir: PathBuf,
    pub pid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceState {
    pub name: String,
    pub xdp_mode: String,
    pub tc_mode: String,
}

pub const STATE_FILE: &str = "state.json";

impl State {
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<State>> {
        let path = state_dir.join(STATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text).with_context(|| format!("{} is not an allowgate state file", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Written whole or not at all: a temporary file, fsync, rename.
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
        let path = state_dir.join(STATE_FILE);
        let tmp = state_dir.join(format!(".{STATE_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Builds and compiles the policy `config` selects: everything that can fail on bad
/// input fails here, before the kernel is touched.
pub fn compile(config_path: &Path) -> anyhow::Result<(Config, Policy, crate::policy::Tables)> {
    let (config, catalog) = load_config(Some(config_path))?;
    let selection = Selection { regions: config.regions.clone(), features: config.features.clone() };
    let policy = Policy::build(&catalog, &selection, &config, &config.dns_servers());
    let tables = compile_policy(&policy)?;
    Ok((config, policy, tables))
}

/// Tells systemd (Type=notify) something, when it is listening.
fn sd_notify(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => return warn!("cannot notify systemd: {e}"),
    };
    let bytes = socket.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
    } else {
        sock.send_to(message.as_bytes(), &socket)
    };
    if let Err(e) = result {
        warn!("cannot notify systemd: {e}");
    }
}

struct Running {
    dataplane: Dataplane,
    config: Config,
    attachments: Vec<Attachment>,
    generation: u64,
}

impl Running {
    fn state(&self, policy: &Policy) -> State {
        State {
            regions: policy.selection.regions.clone(),
            features: policy.selection.features.clone(),
            mode: policy.mode.as_str().to_string(),
            interfaces: self
                .attachments
                .iter()
                .map(|a| InterfaceState {
                    name: a.name.clone(),
                    xdp_mode: a.xdp_mode.as_str().to_string(),
                    tc_mode: format!("{:?}", a.tc_mode).to_lowercase(),
                })
                .collect(),
            generation: self.generation,
            last_change: now(),
            bpffs_dir: self.config.bpffs_dir.clone(),
            pid: std::process::id(),
        }
    }
}

/// Loads, installs the policy, attaches: the policy is in the maps before any program
/// sees a packet, and an adopted link switches to the new program in one step.
fn start(config_path: &Path) -> anyhow::Result<Running> {
    let (config, policy, tables) = compile(config_path)?;
    if config.interfaces.is_empty() {
        anyhow::bail!("{}: `interfaces` is empty: name the interfaces to enforce on", config_path.display());
    }
    if config.management.cidrs.is_empty() {
        warn!("no [management] cidrs: nothing but the catalog and [[allow]] entries can reach this host");
    }
    let mut dataplane = Dataplane::load(&config.bpffs_dir, &LoadOptions::default())?;
    let (_, before) = dataplane.active()?;
    let generation = dataplane.install(&tables)?;
    if before > 0 {
        info!(generation = before, "adopted the pinned policy");
    }
    let mut attachments = Vec::new();
    for iface in &config.interfaces {
        let a = dataplane.attach(iface)?;
        info!(
            interface = %a.name,
            xdp = a.xdp_mode.as_str(),
            tc = ?a.tc_mode,
            adopted = a.adopted,
            "attached"
        );
        attachments.push(a);
    }
    dataplane.pin_programs()?;
    let running = Running { dataplane, config, attachments, generation };
    running.state(&policy).save(&running.config.state_dir)?;
    info!(
        generation,
        mode = policy.mode.as_str(),
        regions = ?policy.selection.regions,
        v4 = tables.v4_entries(),
        v6 = tables.v6_entries(),
        "enforcing"
    );
    Ok(running)
}

/// Recompiles and swaps in the config's policy; on any error the old one stays.
fn reload(running: &mut Running, config_path: &Path) {
    let result = (|| -> anyhow::Result<()> {
        let (config, policy, tables) = compile(config_path)?;
        if config.interfaces != running.config.interfaces || config.bpffs_dir != running.config.bpffs_dir {
            warn!("interfaces and bpffs_dir change only on restart; the rest is reloaded");
        }
        running.generation = running.dataplane.install(&tables)?;
        running.config = Config { interfaces: running.config.interfaces.clone(), bpffs_dir: running.config.bpffs_dir.clone(), ..config };
        running.state(&policy).save(&running.config.state_dir)?;
        info!(generation = running.generation, "reloaded");
        Ok(())
    })();
    if let Err(e) = result {
        error!("reload refused, the previous policy stays enforced: {e:#}");
    }
}

/// `allowgate daemon`.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let mut running = start(config_path)?;
    let events = running.dataplane.take_events()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        // SAFETY: the ring buffer owns its fd, and the AsyncFd owns the ring buffer, so
        // the fd stays open for as long as it is registered.
        let mut events = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot watch the event ring buffer: {e}"))?;
        let mut counters = tokio::time::interval(Duration::from_secs(60));
        sd_notify("READY=1\nSTATUS=enforcing");
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&mut running, config_path),
                guard = events.readable_mut() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        log_event(&item);
                    }
                    guard.clear_ready();
                }
                _ = counters.tick() => {
                    if let Ok(c) = running.dataplane.counters() {
                        debug!(
                            ingress_pass = c.packets(0, 0), ingress_drop = c.packets(0, 1),
                            egress_pass = c.packets(1, 0), egress_drop = c.packets(1, 1),
                            "counters"
                        );
                    }
                }
            }
        }
        sd_notify("STOPPING=1");
        info!("exiting; the policy stays enforced (`allowgate down` removes it)");
        anyhow::Ok(())
    })
}

fn log_event(bytes: &[u8]) {
    if bytes.len() < std::mem::size_of::<allowgate_ebpf::Event>() {
        return warn!(len = bytes.len(), "short drop event");
    }
    // SAFETY: the ring buffer record holds at least one `Event`, a plain repr(C) struct
    // of integers; read_unaligned copes with any alignment.
    let e: allowgate_ebpf::Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let event = crate::events::Decoded::from(&e);
    info!(target: "allowgate::events", "{event}");
}
