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

use netlink_sys::AsyncSocketExt as _;
use std::{
    collections::BTreeMap,
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
    control::{
        protocol::{ChangeOptions, Changed, Request, Response, SshSession},
        server::{self, Access, Incoming},
    },
    dataplane::{Attachment, Dataplane, LoadOptions},
    dns::learner::{HEARTBEAT_STALE_AFTER, Learner},
    events::{Decoded, DropSummary},
    policy::config::load_config,
    policy::{
        Config, Mode, Policy, StateMode, Tables, compile_policy,
        explain::explain,
        model::{self, Frame, Hook, IpPacket, L4, Verdict},
    },
};

mod catalog;
pub mod metrics;
pub mod state;

pub use state::{Desired, DesiredFile, MAX_CONFIRM_SECS, Pending};
pub mod status;

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
    /// The catalog in force (its sources and versions).
    #[serde(default)]
    pub catalog: Option<String>,
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

/// Tells systemd (Type=notify) something, when it is listening (`NOTIFY_SOCKET` set).
/// Seeds connection tracking with the host's connections (TCP and connected UDP, from
/// sock_diag), so that enforcing the return paths cuts none of them: the SSH session
/// that started the daemon keeps working although its peer speaks first. A failure is
/// logged and enforcing goes on: such connections pass again once the host sends.
fn seed_flows(dataplane: &mut Dataplane) {
    let flows = match crate::dataplane::seed::kernel_flows() {
        Ok(flows) => flows,
        Err(e) => {
            warn!(
                "cannot list the host's connections ({e}): answers to connections opened before now drop until the host sends on them"
            );
            return;
        }
    };
    // Loopback never crosses an interface the programs are on.
    let flows: Vec<_> = flows
        .into_iter()
        .filter(|f| !f.local.ip().is_loopback() && !f.remote.ip().is_loopback())
        .collect();
    match dataplane.seed_flows(&flows) {
        Ok(added) => info!(
            connections = flows.len(),
            added, "seeded connection tracking with the host's connections"
        ),
        Err(e) => warn!("cannot seed connection tracking: {}", crate::error_chain(&e)),
    }
}

fn sd_notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
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
    /// What was last found wrong with each interface's attachment, so that each
    /// change is logged once.
    problems: BTreeMap<String, String>,
}

impl Daemon {
    /// Loads, installs the desired policy, attaches: the policy is in the maps before
    /// any program sees a packet, and an adopted link switches program in one step.
    fn start(config_path: &Path) -> anyhow::Result<Daemon> {
        let (config, config_catalog) = load_config(Some(config_path))?;
        let applied = match load_json::<catalog::AppliedCatalogs>(&config.state_dir, catalog::CATALOG_FILE) {
            Ok(a) => a.unwrap_or_default(),
            Err(e) => {
                warn!("ignoring the applied catalog: {e:#}");
                catalog::AppliedCatalogs::default()
            }
        };
        let (catalog, why) = catalog::choose(config_catalog, &config.catalog, applied.current.as_ref());
        if let Some(why) = why {
            warn!("{why}");
        } else if applied.current.is_some() {
            info!(source = %catalog.source, "enforcing the catalog of the last `catalog apply`");
        }
        // Everything that can be checked is checked before the kernel is touched.
        state::validate(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
        let missing: Vec<&str> = config
            .interfaces
            .iter()
            .filter(|i| crate::dataplane::kernel::if_index(i).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "{}: no interface {} here: check `interfaces` (nothing was attached)",
                config_path.display(),
                missing.join(", ")
            );
        }
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
        if config.management.cidrs.is_empty() {
            warn!("no [management] cidrs: nothing but the catalog and [[allow]] entries can reach this host");
        }
        let basis = Desired::of(&config);
        let persisted = load_json::<DesiredFile>(&config.state_dir, DESIRED_FILE).map_err(|e| format!("{e:#}"));
        let (desired, pending, warnings) = state::restore(&basis, persisted, now_ms());
        for w in warnings {
            warn!("{w}");
        }
        let (policy, tables) = compile(&catalog, &config, &desired)?;

        let load = LoadOptions {
            max_flows: config.state.max_flows,
            ..LoadOptions::default()
        };
        let mut dataplane = Dataplane::load(&config.bpffs_dir, &load)?;
        for replaced in dataplane.replaced() {
            warn!("replaced a pinned map that does not fit this build (its contents start over): {replaced}");
        }
        // Before the policy goes in: resolvers whose answers need a query of this host,
        // and the connections the host has, so that tracking cuts none of them.
        dataplane.set_dns_servers(&policy.dns_servers)?;
        if policy.state.mode == StateMode::Stateful {
            seed_flows(&mut dataplane);
        }
        let (before_slot, before) = dataplane.active()?;
        let generation = dataplane.install(&tables)?;
        if before > 0 {
            info!(generation = before, "adopted the pinned policy");
        }
        let mut attachments: Vec<crate::dataplane::Attachment> = Vec::new();
        for iface in &config.interfaces {
            let a = match dataplane.attach(iface) {
                Ok(a) => a,
                Err(e) => {
                    // All or none: take back what this start attached, and put back
                    // the generation that was enforced before it.
                    for a in attachments.iter().filter(|a| !a.adopted) {
                        dataplane.detach(a);
                    }
                    if before > 0
                        && let Err(e) = dataplane.revert_to(before_slot)
                    {
                        error!("cannot put the previous generation back: {}", crate::error_chain(&e));
                    }
                    return Err(e.into());
                }
            };
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
            problems: BTreeMap::new(),
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
            catalog: Some(self.catalog.source.clone()),
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
        let compiled = compile(&self.catalog, &self.config, &desired)?;
        self.put_in_force(compiled, None, None, desired)
    }

    /// The one path by which a policy goes in: a toggle, a reload, a catalog apply or
    /// a rollback compiles first (everything that can fail on bad input fails there),
    /// then hands the result here, which swaps it in and only then takes the catalog,
    /// config and selection it was made from as the daemon's own. On error nothing
    /// changed.
    fn put_in_force(
        &mut self,
        (policy, tables): (Policy, Tables),
        catalog: Option<Catalog>,
        config: Option<Config>,
        desired: Desired,
    ) -> anyhow::Result<u64> {
        // Tracking turned on: the connections the host has are tracked before it starts.
        if policy.state.mode == StateMode::Stateful && self.policy.state.mode == StateMode::Stateless {
            seed_flows(&mut self.dataplane);
        }
        if self.learner.is_none() {
            self.dataplane.set_dns_servers(&policy.dns_servers)?;
        }
        self.generation = self.dataplane.install(&tables)?;
        self.entries = (tables.v4_entries(), tables.v6_entries());
        self.policy = policy;
        self.desired = desired;
        if let Some(catalog) = catalog {
            self.catalog = catalog;
        }
        if let Some(config) = config {
            self.config = config;
        }
        if let Some(l) = self.learner.as_mut() {
            l.reconcile(&self.policy, &mut self.dataplane);
        }
        Ok(self.generation)
    }

    /// SIGHUP: the config file again. Other settings apply at once; a changed
    /// selection or mode in the file replaces the runtime toggles.
    fn reload(&mut self) {
        let result = (|| -> anyhow::Result<()> {
            let (config, config_catalog) = load_config(Some(&self.config_path))?;
            state::validate_reload(&self.config, &config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let applied = self.applied_catalogs();
            let (catalog, why) = catalog::choose(config_catalog, &config.catalog, applied.current.as_ref());
            if let Some(why) = why {
                warn!("{why}");
            }
            let basis = Desired::of(&config);
            let desired = if basis != self.basis {
                basis.clone()
            } else {
                self.desired.clone()
            };
            let compiled = compile(&catalog, &config, &desired)?;
            self.put_in_force(compiled, Some(catalog), Some(config), desired)?;
            if basis != self.basis {
                self.pending = None;
            }
            self.basis = basis;
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
        if pending.catalog_rollback {
            match self.catalog_rollback(
                0,
                ChangeOptions {
                    force: true,
                    ..ChangeOptions::default()
                },
            ) {
                Response::CatalogApplied(a) => {
                    warn!(
                        generation = a.generation,
                        "the catalog was not confirmed in time: rolled back"
                    );
                }
                other => {
                    error!("cannot roll the catalog back, will retry: {other:?}");
                    self.pending = Some(Pending {
                        deadline_ms: now_ms() + 1000,
                        ..pending
                    });
                }
            }
            return;
        }
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
                let interfaces = Some(self.interface_statuses());
                match status::report(&self.config.bpffs_dir, Some(&self.state_with_last()), true, interfaces) {
                    Ok(status) => Response::Status {
                        status: Box::new(status),
                    },
                    Err(e) => Response::error(crate::error_chain(&e)),
                }
            }
            Request::Check {
                addr,
                port,
                proto,
                direction,
            } => Response::Check {
                explanation: explain(&self.policy, addr, port, proto, direction),
            },
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
            Request::CatalogApply { path, options } => self.catalog_apply(&peer, &path, options),
            Request::CatalogRollback { options } => self.catalog_rollback(peer.uid, options),
        };
        let _ = reply.try_send(response);
    }

    /// The configured interfaces as the kernel has them.
    fn interface_statuses(&self) -> Vec<status::InterfaceStatus> {
        self.attachments
            .iter()
            .map(|a| {
                let problem = self.dataplane.attachment_problem(a);
                status::InterfaceStatus {
                    name: a.name.clone(),
                    xdp_mode: a.xdp_mode.as_str().to_string(),
                    tc_mode: format!("{:?}", a.tc_mode).to_lowercase(),
                    attached: problem.is_none(),
                    problem,
                }
            })
            .collect()
    }

    /// Every second: the kernel is asked whether each interface still runs our
    /// programs (a link detached by hand, its pin removed, the interface deleted,
    /// re-created or renamed); what is wrong is logged once and repaired when it can
    /// be, and `status` says so until it is.
    fn reconcile_attachments(&mut self) {
        for pin in self.dataplane.repin_missing() {
            warn!(pin = %pin.display(), "a link pin was removed; pinned it again");
        }
        for index in 0..self.attachments.len() {
            let name = self.attachments[index].name.clone();
            let Some(problem) = self.dataplane.attachment_problem(&self.attachments[index]) else {
                if self.problems.remove(&name).is_some() {
                    info!(interface = %name, "protected again");
                }
                continue;
            };
            match self.dataplane.attach(&name) {
                Ok(a) => {
                    warn!(interface = %name, xdp = a.xdp_mode.as_str(), %problem, "was not protected: attached again");
                    self.attachments[index] = a;
                    self.problems.remove(&name);
                    let _ = self.persist();
                }
                Err(e) => {
                    if self.problems.get(&name) != Some(&problem) {
                        error!(interface = %name, %problem, "NOT PROTECTED, and cannot attach again: {}", crate::error_chain(&e));
                    }
                    self.problems.insert(name, problem);
                }
            }
        }
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
        s.catalog = Some(self.catalog.source.clone());
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
            catalog_rollback: false,
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
            l4: L4::tcp(50000, ssh.server_port, false, true),
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

/// The control socket this daemon bound: its path and the inode it made there.
struct OwnedSocket {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl OwnedSocket {
    fn of(path: &Path) -> OwnedSocket {
        use std::os::unix::fs::MetadataExt as _;
        OwnedSocket {
            path: path.to_path_buf(),
            id: std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino())),
        }
    }

    /// Removes the socket if the path still holds the one this daemon made.
    fn remove(&self) {
        use std::os::unix::fs::MetadataExt as _;
        let now = std::fs::symlink_metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if now.is_some() && now == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A netlink socket that hears every link change of this network namespace.
fn watch_interfaces() -> std::io::Result<netlink_sys::TokioSocket> {
    use netlink_sys::{AsyncSocket as _, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};
    const RTMGRP_LINK: u32 = 1;
    let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
    socket.socket_mut().bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    Ok(socket)
}

/// `allowgate daemon`.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        // The socket before the kernel: a second daemon on the same socket stops here,
        // before it could swap its policy in under the first one.
        let (config, _) = load_config(Some(config_path))?;
        state::validate(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
        crate::dataplane::check_on_bpffs(&config.bpffs_dir)?;
        let access = Access::new(config.socket_group.as_deref())?;
        let listener = server::bind(&config.socket, &access)?;
        // The socket this daemon made, and only it, is removed at exit (a reload never
        // moves it, and another program's socket at that path is not ours).
        let socket = OwnedSocket::of(&config.socket);
        let _lock = match crate::dataplane::lock_pins(&config.bpffs_dir) {
            Ok(lock) => lock,
            Err(e) => {
                socket.remove();
                return Err(e.into());
            }
        };
        let mut daemon = match Daemon::start(config_path) {
            Ok(d) => d,
            Err(e) => {
                socket.remove();
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
        // Interface changes (deleted, re-created, renamed) are checked at once; the
        // tick catches what netlink does not announce (a link detached by hand).
        let mut links_watch = watch_interfaces()
            .map_err(|e| warn!("interface changes are checked every second only: cannot watch netlink: {e}"))
            .ok();
        let drop_log_secs = daemon.config.drop_log_interval;
        let mut drop_log_tick = tokio::time::interval(Duration::from_secs(drop_log_secs));
        let mut drops = DropSummary::default();
        let (commands_tx, mut commands) = mpsc::channel::<Incoming>(64);
        tokio::spawn(server::serve(listener, access, commands_tx));
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = daemon.config.metrics {
            let (bpffs, state) = (daemon.config.bpffs_dir.clone(), daemon.config.state_dir.clone());
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr, bpffs, state, shutdown_rx).await {
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
        sd_notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("enforcing")]);
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
                changed = async { links_watch.as_mut().expect("guarded").recv_from_full().await }, if links_watch.is_some() => {
                    if let Err(e) = changed {
                        warn!("interface changes are checked every second only: netlink: {e}");
                        links_watch = None;
                    }
                    daemon.reconcile_attachments();
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
                    daemon.reconcile_attachments();
                    if let Some(l) = daemon.learner.as_mut() {
                        l.tick(&mut daemon.dataplane);
                    }
                    if let Err(e) = daemon.dataplane.tend_flows() {
                        warn!("cannot rebuild the flow tables' peer filter (stale bits only cost lookups): {}", crate::error_chain(&e));
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
        socket.remove();
        sd_notify(&[sd_notify::NotifyState::Stopping]);
        info!("exiting; the policy stays enforced (`allowgate down` removes it)");
        anyhow::Ok(())
    })
}
