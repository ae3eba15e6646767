//! The daemon: compile the desired policy, load and attach, then keep it enforced and
//! answer the control socket. One loop owns all state; changes (socket requests,
//! SIGHUP, a rollback deadline) go through `apply`, which compiles a whole new
//! generation and swaps it in, or changes nothing.
//!
//! Leaving does not detach: the programs, links and maps are pinned, so the last
//! policy stays enforced when the daemon exits or is killed, and the next daemon
//! adopts it without a gap. `allowgate down` is the way to stop enforcing.
//!
//! What is desired (regions, features, mode) is persisted in `state_dir/desired.json`
//! together with the config's own selection it was derived from (its basis). At start
//! the runtime toggles win while the config's selection is the one they were made on;
//! once the operator edits the config's `regions`, `features` or `mode`, the config
//! wins and the toggles are dropped (and logged), so an edit of the file is never
//! silently ignored.

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::{broadcast, mpsc},
};
use tracing::{debug, error, info, warn};

use crate::{
    catalog::{Catalog, Feature},
    cli::{check::check, load_config},
    control::{
        protocol::{ChangeOptions, Changed, Request, Response, SshSession},
        server::{self, Access, Incoming},
    },
    dataplane::{Attachment, Dataplane, LoadOptions},
    dns::learner::{HEARTBEAT_STALE_AFTER, Learner},
    events::{Decoded, DropSummary},
    policy::{
        Config, Mode, Policy, Selection, Tables, compile_policy,
        model::{self, Frame, Hook, IpPacket, L4, Verdict},
    },
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
    /// When an unconfirmed change rolls back (seconds since the epoch).
    #[serde(default)]
    pub rollback_deadline: Option<u64>,
    /// Table entries the daemon installed (IPv4, IPv6): reading them back from the
    /// kernel needs CAP_SYS_ADMIN, which the service does not have.
    #[serde(default)]
    pub entries: Option<(usize, usize)>,
    /// Addresses learned for the catalog's names, and how many were refused at the bound.
    #[serde(default)]
    pub learned: Option<(usize, u64)>,
    /// Explicit catalog names with no learned address (their resolution fails).
    #[serde(default)]
    pub unresolved: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceState {
    pub name: String,
    pub xdp_mode: String,
    pub tc_mode: String,
}

pub const STATE_FILE: &str = "state.json";
pub const DESIRED_FILE: &str = "desired.json";

/// Writes `value` as JSON to `dir/name` whole or not at all: a temporary file, fsync,
/// rename, fsync of the directory.
fn save_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(value)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn load_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> anyhow::Result<Option<T>> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not an allowgate state file", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

impl State {
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<State>> {
        load_json(state_dir, STATE_FILE)
    }

    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        save_json(state_dir, STATE_FILE, self)
    }
}

/// The selection and mode to enforce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub regions: Vec<String>,
    pub features: Vec<Feature>,
    pub mode: Mode,
}

impl Desired {
    fn of(config: &Config) -> Desired {
        Desired {
            regions: config.regions.clone(),
            features: config.features.clone(),
            mode: config.mode,
        }
    }

    fn selection(&self) -> Selection {
        Selection {
            regions: self.regions.clone(),
            features: self.features.clone(),
        }
    }
}

/// The longest `--confirm` window: a day. Anything longer is a typo, not a plan.
pub const MAX_CONFIRM_SECS: u64 = 86_400;

/// A change that rolls back unless confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub previous: Desired,
    /// Milliseconds since the epoch: a window is never shorter than asked.
    pub deadline_ms: u64,
}

impl Pending {
    fn remaining(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.saturating_sub(now_ms()))
    }

    /// Whole seconds left, rounded up, for people.
    fn remaining_secs(&self) -> u64 {
        self.deadline_ms.saturating_sub(now_ms()).div_ceil(1000)
    }
}

/// `state_dir/desired.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredFile {
    pub desired: Desired,
    /// The config's own selection when `desired` was made from it.
    pub basis: Desired,
    #[serde(default)]
    pub pending: Option<Pending>,
}

pub fn now() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Builds and compiles the policy of `desired` under `config`: everything that can
/// fail on bad input fails here, before the kernel is touched.
fn compile(catalog: &Catalog, config: &Config, desired: &Desired) -> anyhow::Result<(Policy, Tables)> {
    let config = Config {
        mode: desired.mode,
        ..config.clone()
    };
    let policy = Policy::build(catalog, &desired.selection(), &config, &config.dns_servers());
    let tables = compile_policy(&policy)?;
    Ok((policy, tables))
}

/// Tells systemd (Type=notify) something, when it is listening.
fn sd_notify(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
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

struct Daemon {
    config_path: PathBuf,
    config: Config,
    catalog: Catalog,
    dataplane: Dataplane,
    attachments: Vec<Attachment>,
    desired: Desired,
    basis: Desired,
    pending: Option<Pending>,
    policy: Policy,
    generation: u64,
    /// Entries of the installed tables (IPv4, IPv6).
    entries: (usize, usize),
    events: broadcast::Sender<Decoded>,
    /// Learns the catalog's names from held DNS answers; `None` with `dns.learn = false`.
    learner: Option<Learner>,
}

impl Daemon {
    /// Loads, installs the desired policy, attaches: the policy is in the maps before
    /// any program sees a packet, and an adopted link switches program in one step.
    fn start(config_path: &Path) -> anyhow::Result<Daemon> {
        let (config, catalog) = load_config(Some(config_path))?;
        if config.interfaces.is_empty() {
            anyhow::bail!(
                "{}: `interfaces` is empty: name the interfaces to enforce on",
                config_path.display()
            );
        }
        if config.management.cidrs.is_empty() {
            warn!("no [management] cidrs: nothing but the catalog and [[allow]] entries can reach this host");
        }
        let basis = Desired::of(&config);
        let (desired, pending) = match load_json::<DesiredFile>(&config.state_dir, DESIRED_FILE) {
            Ok(Some(file)) if file.basis == basis => (file.desired, file.pending),
            Ok(Some(_)) => {
                warn!("the config's regions, features or mode changed since the last runtime change: the config wins");
                (basis.clone(), None)
            }
            Ok(None) => (basis.clone(), None),
            Err(e) => {
                warn!("ignoring the persisted runtime changes: {e:#}");
                (basis.clone(), None)
            }
        };
        // A rollback that came due while no daemon ran happens now.
        let (desired, pending) = match pending {
            // A deadline further out than any window allows was not written by us.
            Some(p) if p.deadline_ms > now_ms() + MAX_CONFIRM_SECS * 1000 => {
                warn!("the persisted rollback deadline is out of range: rolling the change back now");
                (p.previous, None)
            }
            Some(p) if p.deadline_ms <= now_ms() => {
                warn!("an unconfirmed change passed its deadline while the daemon was down: rolling it back");
                (p.previous, None)
            }
            other => (desired, other),
        };
        let (policy, tables) = compile(&catalog, &config, &desired)?;

        let mut dataplane = Dataplane::load(&config.bpffs_dir, &LoadOptions::default())?;
        let (_, before) = dataplane.active()?;
        let generation = dataplane.install(&tables)?;
        if before > 0 {
            info!(generation = before, "adopted the pinned policy");
        }
        let mut attachments = Vec::new();
        for iface in &config.interfaces {
            let a = dataplane.attach(iface)?;
            info!(interface = %a.name, xdp = a.xdp_mode.as_str(), tc = ?a.tc_mode, adopted = a.adopted, "attached");
            attachments.push(a);
        }
        dataplane.pin_programs()?;
        let learner = if config.dns.learn {
            let previous = dataplane.learned_addresses().unwrap_or_default();
            let learner = Learner::new(&policy, &config.dns, previous);
            dataplane.set_dns_servers(learner.servers())?;
            dataplane.dns_heartbeat(Some(HEARTBEAT_STALE_AFTER))?;
            Some(learner)
        } else {
            dataplane.dns_heartbeat(None)?;
            None
        };
        let (events, _) = broadcast::channel(1024);
        let daemon = Daemon {
            config_path: config_path.to_path_buf(),
            config,
            catalog,
            dataplane,
            attachments,
            desired,
            basis,
            pending,
            policy,
            generation,
            entries: (tables.v4_entries(), tables.v6_entries()),
            events,
            learner,
        };
        daemon.persist()?;
        info!(
            generation,
            mode = daemon.desired.mode.as_str(),
            regions = ?daemon.desired.regions,
            v4 = tables.v4_entries(),
            v6 = tables.v6_entries(),
            "enforcing"
        );
        Ok(daemon)
    }

    fn state(&self) -> State {
        State {
            regions: self.desired.regions.clone(),
            features: self.desired.features.clone(),
            mode: self.desired.mode.as_str().to_string(),
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
            rollback_deadline: self.pending.as_ref().map(|p| p.deadline_ms.div_ceil(1000)),
            entries: Some(self.entries),
            learned: self.learner.as_ref().map(Learner::counts),
            unresolved: self.learner.as_ref().map(Learner::unresolved).unwrap_or_default(),
        }
    }

    fn persist(&self) -> anyhow::Result<()> {
        let file = DesiredFile {
            desired: self.desired.clone(),
            basis: self.basis.clone(),
            pending: self.pending.clone(),
        };
        save_json(&self.config.state_dir, DESIRED_FILE, &file)?;
        self.state().save(&self.config.state_dir)
    }

    /// Compiles `desired` and swaps it in whole. On error nothing changed.
    fn apply(&mut self, desired: Desired) -> anyhow::Result<u64> {
        let (policy, tables) = compile(&self.catalog, &self.config, &desired)?;
        self.generation = self.dataplane.install(&tables)?;
        self.entries = (tables.v4_entries(), tables.v6_entries());
        self.policy = policy;
        self.desired = desired;
        if let Some(l) = self.learner.as_mut() {
            l.reconcile(&self.policy, &mut self.dataplane);
        }
        Ok(self.generation)
    }

    /// SIGHUP: the config file again. Other settings apply at once; a changed
    /// selection or mode in the file replaces the runtime toggles.
    fn reload(&mut self) {
        let result = (|| -> anyhow::Result<()> {
            let (config, catalog) = load_config(Some(&self.config_path))?;
            if config.interfaces != self.config.interfaces || config.bpffs_dir != self.config.bpffs_dir {
                warn!("interfaces and bpffs_dir change only on restart; the rest is reloaded");
            }
            let basis = Desired::of(&config);
            let desired = if basis != self.basis {
                basis.clone()
            } else {
                self.desired.clone()
            };
            let (policy, tables) = compile(&catalog, &config, &desired)?;
            self.generation = self.dataplane.install(&tables)?;
            self.entries = (tables.v4_entries(), tables.v6_entries());
            let keep = (self.config.interfaces.clone(), self.config.bpffs_dir.clone());
            self.config = Config {
                interfaces: keep.0,
                bpffs_dir: keep.1,
                ..config
            };
            self.catalog = catalog;
            self.policy = policy;
            if let Some(l) = self.learner.as_mut() {
                l.reconcile(&self.policy, &mut self.dataplane);
            }
            if basis != self.basis {
                self.pending = None;
            }
            self.basis = basis;
            self.desired = desired;
            self.persist()?;
            info!(generation = self.generation, "reloaded");
            Ok(())
        })();
        if let Err(e) = result {
            error!("reload refused, the previous policy stays enforced: {e:#}");
        }
    }

    fn rollback(&mut self) {
        let Some(pending) = self.pending.take() else { return };
        match self.apply(pending.previous.clone()) {
            Ok(generation) => warn!(generation, "the change was not confirmed in time: rolled back"),
            Err(e) => {
                error!("cannot roll back, will retry: {e:#}");
                self.pending = Some(Pending {
                    deadline_ms: now_ms() + 1000,
                    ..pending
                });
            }
        }
        if let Err(e) = self.persist() {
            error!("cannot persist the rollback: {e:#}");
        }
    }

    fn handle(&mut self, incoming: Incoming) {
        let Incoming { request, reply, peer } = incoming;
        let response = match request {
            Request::Status => {
                match crate::cli::status::report(&self.config.bpffs_dir, Some(&self.state_with_last()), true) {
                    Ok(status) => Response::Status { status },
                    Err(e) => Response::error(format!("{e:#}")),
                }
            }
            Request::Check {
                addr,
                port,
                proto,
                direction,
            } => {
                let (allowed, text) = check(&self.policy, addr, port, proto, direction);
                Response::Check { allowed, text }
            }
            Request::Learned => Response::Learned {
                entries: self.learner.as_ref().map(Learner::entries).unwrap_or_default(),
            },
            Request::Events => {
                let mut rx = self.events.subscribe();
                tokio::spawn(async move {
                    loop {
                        let answer = match rx.recv().await {
                            Ok(event) => Response::Event(event),
                            Err(broadcast::error::RecvError::Lagged(missed)) => Response::Lagged { missed },
                            Err(broadcast::error::RecvError::Closed) => return,
                        };
                        if reply.send(answer).await.is_err() {
                            return;
                        }
                    }
                });
                return;
            }
            Request::Confirm => match self.pending.take() {
                Some(_) => {
                    info!(uid = peer.uid, generation = self.generation, "change confirmed");
                    match self.persist() {
                        Ok(()) => Response::Confirmed {
                            generation: self.generation,
                        },
                        Err(e) => Response::error(format!("confirmed, but cannot persist it: {e:#}")),
                    }
                }
                None => Response::error("nothing awaits confirmation"),
            },
            Request::Enable {
                regions,
                features,
                options,
            } => self.change(&peer, options, |d, catalog| {
                for r in &regions {
                    let id = catalog.region(r)?.id.clone();
                    if !d.regions.contains(&id) {
                        d.regions.push(id);
                    }
                }
                for f in &features {
                    let f: Feature = f.parse()?;
                    if !d.features.contains(&f) {
                        d.features.push(f);
                    }
                }
                Ok(())
            }),
            Request::Disable {
                regions,
                features,
                options,
            } => self.change(&peer, options, |d, catalog| {
                for r in &regions {
                    let id = catalog.region(r)?.id.clone();
                    d.regions.retain(|x| *x != id);
                }
                for f in &features {
                    let f: Feature = f.parse()?;
                    d.features.retain(|x| *x != f);
                }
                Ok(())
            }),
            Request::Mode { mode, options } => self.change(&peer, options, |d, _| {
                d.mode = mode;
                Ok(())
            }),
        };
        let _ = reply.try_send(response);
    }

    fn state_with_last(&self) -> State {
        let mut s = load_json::<State>(&self.config.state_dir, STATE_FILE)
            .ok()
            .flatten()
            .unwrap_or_else(|| self.state());
        s.rollback_deadline = self.pending.as_ref().map(|p| p.deadline_ms.div_ceil(1000));
        s.entries = Some(self.entries);
        s.learned = self.learner.as_ref().map(Learner::counts);
        s.unresolved = self.learner.as_ref().map(Learner::unresolved).unwrap_or_default();
        s
    }

    /// One runtime change: edit a copy of the desired state, refuse what would lock the
    /// caller out, apply, persist, and arm the rollback when asked.
    fn change(
        &mut self,
        peer: &server::Peer,
        options: ChangeOptions,
        edit: impl FnOnce(&mut Desired, &Catalog) -> anyhow::Result<()>,
    ) -> Response {
        if let Some(p) = &self.pending {
            return Response::error(format!(
                "a change awaits confirmation (it rolls back in {} s): run `allowgate confirm`, or wait",
                p.remaining_secs()
            ));
        }
        if let Some(secs) = options.confirm_secs
            && !(1..=MAX_CONFIRM_SECS).contains(&secs)
        {
            return Response::error(format!("--confirm takes 1 to {MAX_CONFIRM_SECS} seconds, not {secs}"));
        }
        let mut desired = self.desired.clone();
        if let Err(e) = edit(&mut desired, &self.catalog) {
            return Response::error(format!("{e:#}"));
        }
        let mut warnings = Vec::new();
        if desired.regions.is_empty() {
            warnings.push("no region is enabled: only essentials, management and [[allow]] entries pass".to_string());
        }
        let started = Instant::now();
        let (policy, _) = match compile(&self.catalog, &self.config, &desired) {
            Ok(x) => x,
            Err(e) => return Response::error(format!("refused, nothing changed: {e:#}")),
        };
        if let Some(ssh) = &options.ssh
            && cuts_off(&self.policy, &policy, ssh)
        {
            let what = format!(
                "this change would cut off your SSH session from {} to port {}",
                ssh.client, ssh.server_port
            );
            if !options.force && options.confirm_secs.is_none() {
                return Response::error(format!(
                    "{what}: repeat it with --confirm SECONDS to have it rolled back unless confirmed, or with --force"
                ));
            }
            warnings.push(what);
        }
        let previous = self.desired.clone();
        let generation = match self.apply(desired) {
            Ok(g) => g,
            Err(e) => return Response::error(format!("refused, the previous policy stays enforced: {e:#}")),
        };
        let apply_micros = started.elapsed().as_micros() as u64;
        self.pending = options.confirm_secs.map(|secs| Pending {
            previous,
            deadline_ms: now_ms() + secs * 1000,
        });
        if let Err(e) = self.persist() {
            warnings.push(format!(
                "applied, but cannot persist it (a restart would undo it): {e:#}"
            ));
        }
        info!(
            uid = peer.uid,
            generation,
            regions = ?self.desired.regions,
            features = ?self.desired.features,
            mode = self.desired.mode.as_str(),
            confirm = ?options.confirm_secs,
            "changed"
        );
        Response::Changed(Changed {
            generation,
            regions: self.desired.regions.clone(),
            features: self.desired.features.iter().map(|f| f.to_string()).collect(),
            mode: self.desired.mode,
            rollback_in_secs: options.confirm_secs,
            apply_micros,
            warnings,
        })
    }
}

/// Whether the SSH session's next segment passes under `old` but not under `new`.
fn cuts_off(old: &Policy, new: &Policy, ssh: &SshSession) -> bool {
    let local: IpAddr = if ssh.client.is_ipv4() {
        "0.0.0.0".parse().unwrap()
    } else {
        "::".parse().unwrap()
    };
    let packet = model::Packet {
        hook: Hook::Ingress,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src: ssh.client,
            dst: local,
            hop_limit: 64,
            l4: L4::Tcp {
                sport: 50000,
                dport: ssh.server_port,
                syn: false,
                ack: true,
            },
        }),
    };
    let passes = |p: &Policy| {
        let j = model::judge(p, &packet);
        j.verdict == Verdict::Pass || p.mode == Mode::Monitor
    };
    passes(old) && !passes(new)
}

fn log_event(bytes: &[u8]) -> Option<Decoded> {
    if bytes.len() < std::mem::size_of::<allowgate_ebpf::Event>() {
        warn!(len = bytes.len(), "short drop event");
        return None;
    }
    // SAFETY: the record holds at least one `Event`, a plain repr(C) struct of
    // integers; read_unaligned copes with any alignment.
    let e: allowgate_ebpf::Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let event = Decoded::from(&e);
    // One line per drop would be a flood of lines under a flood of packets: single
    // events are for debugging and `allowgate events`; the summary goes to the log.
    debug!(target: "allowgate::events", "{event}");
    Some(event)
}

/// `allowgate daemon`.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        // The socket before the kernel: a second daemon on the same socket stops here,
        // before it could swap its policy in under the first one.
        let (config, _) = load_config(Some(config_path))?;
        let access = Access::new(config.socket_group.as_deref())?;
        let listener = server::bind(&config.socket, &access)?;
        let mut daemon = match Daemon::start(config_path) {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&config.socket);
                return Err(e);
            }
        };
        let ring = daemon.dataplane.take_events()?;
        let dns_ring = match daemon.learner {
            Some(_) => match daemon.dataplane.take_dns_frames() {
                // SAFETY: as for the event ring below.
                Ok(r) => Some(
                    unsafe { AsyncFd::register_with_interest(r, tokio::io::Interest::READABLE) }
                        .map_err(|e| anyhow::anyhow!("cannot watch the DNS answer ring: {e}"))?,
                ),
                Err(e) => {
                    warn!("DNS names are not learned: {e}");
                    daemon.learner = None;
                    None
                }
            },
            None => None,
        };
        let mut dns_ring = dns_ring;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let drop_log_secs = daemon.config.drop_log_interval;
        let mut drop_log_tick = tokio::time::interval(Duration::from_secs(drop_log_secs));
        let mut drops = DropSummary::default();
        let (commands_tx, mut commands) = mpsc::channel::<Incoming>(64);
        tokio::spawn(server::serve(listener, access, commands_tx));
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = daemon.config.metrics {
            let (bpffs, state) = (daemon.config.bpffs_dir.clone(), daemon.config.state_dir.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(addr, bpffs, state, shutdown_rx).await {
                    error!("metrics endpoint {addr}: {e:#}");
                }
            });
        }

        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        // SAFETY: the ring buffer owns its fd, and the AsyncFd owns the ring buffer, so
        // the fd stays open for as long as it is registered.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot watch the event ring buffer: {e}"))?;
        sd_notify("READY=1\nSTATUS=enforcing");
        loop {
            let rollback_at = daemon.pending.as_ref().map(|p| tokio::time::Instant::now() + p.remaining());
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => daemon.reload(),
                Some(incoming) = commands.recv() => daemon.handle(incoming),
                _ = tokio::time::sleep_until(rollback_at.unwrap_or_else(tokio::time::Instant::now)), if rollback_at.is_some() => {
                    daemon.rollback();
                }
                _ = drop_log_tick.tick() => {
                    match daemon.dataplane.counters() {
                        Ok(counters) => {
                            let monitor = daemon.desired.mode == Mode::Monitor;
                            if let Some(line) = drops.take(&counters, monitor, drop_log_secs) {
                                info!(target: "allowgate::events", "{line}");
                            }
                        }
                        Err(e) => warn!("cannot read the counters for the drop summary: {e}"),
                    }
                }
                _ = tick.tick() => {
                    if let Some(l) = daemon.learner.as_mut() {
                        l.tick(&mut daemon.dataplane);
                    }
                }
                guard = async { dns_ring.as_mut().expect("guarded").readable_mut().await }, if dns_ring.is_some() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        if let Some(l) = daemon.learner.as_mut() {
                            l.on_frame(&item, &mut daemon.dataplane);
                        }
                    }
                    guard.clear_ready();
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        if let Some(event) = log_event(&item) {
                            drops.observe(&event);
                            let _ = daemon.events.send(event);
                        }
                    }
                    guard.clear_ready();
                }
            }
        }
        let _ = shutdown_tx.send(true);
        // No learner, no holding: answers pass unheld from now on.
        let _ = daemon.dataplane.dns_heartbeat(None);
        let _ = std::fs::remove_file(&daemon.config.socket);
        sd_notify("STOPPING=1");
        info!("exiting; the policy stays enforced (`allowgate down` removes it)");
        anyhow::Ok(())
    })
}
