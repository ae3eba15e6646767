//! The run loop: the control socket, the signals, the rings of drop events and DNS
//! answers, the interface watch (netlink and a one-second tick), the rollback deadline
//! and sd_notify. It owns the daemon and hands each event to it.

use netlink_sys::AsyncSocketExt as _;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{debug, error, info, warn};

use super::{Daemon, metrics, start::placement, state, status};
use crate::{
    control::server::{self, Access, Incoming},
    dataplane::DnsControl,
    dns::learner::Learner,
    events::{Decoded, DropSummary},
    policy::{Mode, config::load_config},
};

/// Whether anything of allowgate's is pinned under `dir` (a previous generation).
fn has_pins(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("maps")).is_ok_and(|mut d| d.next().is_some())
}

fn sd_notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify systemd: {e}");
    }
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
        // The signals first: until a handler is in place a SIGHUP (a reload sent as the
        // daemon starts) or a SIGTERM would kill it by default, halfway through
        // attaching. Caught from here on, they are acted on once the loop runs.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
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
        // A first start (nothing pinned yet) that fails leaves nothing pinned either.
        let first_start = !has_pins(&config.bpffs_dir);
        let mut daemon = match Daemon::start(config_path) {
            Ok(d) => d,
            Err(e) => {
                if first_start {
                    for p in crate::dataplane::detach_all(&config.bpffs_dir, &[]) {
                        warn!("cleaning up after a failed first start: {p}");
                    }
                }
                socket.remove();
                return Err(e);
            }
        };
        let ring = daemon.dataplane.take_events()?;
        // Watched with or without a learner: a reload may start one.
        let mut dns_ring = match daemon.dataplane.take_dns_frames() {
            // SAFETY: as for the event ring below.
            Ok(r) => Some(
                unsafe { AsyncFd::register_with_interest(r, tokio::io::Interest::READABLE) }
                    .map_err(|e| anyhow::anyhow!("cannot watch the DNS answer ring: {e}"))?,
            ),
            Err(e) => {
                warn!("DNS names are not learned: {e}");
                if daemon.learner.take().is_some() {
                    daemon.dataplane.set_dns_control(&DnsControl::default())?;
                }
                None
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Interface changes (deleted, re-created, renamed) are checked at once; the
        // tick catches what netlink does not announce (a link detached by hand).
        let mut links_watch = watch_interfaces()
            .map_err(|e| warn!("interface changes are checked every second only: cannot watch netlink: {e}"))
            .ok();
        let mut drop_log_secs = daemon.config.drop_log_interval;
        let mut drop_log_tick = tokio::time::interval(Duration::from_secs(drop_log_secs));
        let mut drops = DropSummary::default();
        // Daily, the first time now: sources past max_catalog_age are worth a warning a
        // day, not one a second.
        let mut catalog_age_tick = tokio::time::interval(Duration::from_secs(86_400));
        let (commands_tx, mut commands) = mpsc::channel::<Incoming>(64);
        tokio::spawn(server::serve(listener, access, commands_tx));
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = daemon.config.metrics {
            let source = metrics::Pinned {
                bpffs_dir: daemon.config.bpffs_dir.clone(),
                state_dir: daemon.config.state_dir.clone(),
            };
            // On a thread of its own: a flood of clients there never slows this loop.
            if let Err(e) = metrics::spawn(addr, source, shutdown_rx) {
                error!("metrics endpoint {addr}: {e:#}");
            }
        }

        // SAFETY: the ring buffer owns its fd, and the AsyncFd owns the ring buffer, so
        // the fd stays open for as long as it is registered.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot watch the event ring buffer: {e}"))?;
        sd_notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("enforcing")]);
        // What systemd hears as READY=1, for whoever reads the log instead: the control
        // socket and the metrics endpoint answer from here on.
        info!(socket = %daemon.config.socket.display(), "daemon ready");
        loop {
            let rollback_at = daemon.pending.as_ref().map(|p| tokio::time::Instant::now() + p.remaining());
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                // The verdict is logged; SIGHUP has no one to answer.
                _ = hup.recv() => { let _ = daemon.reload(None); }
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
                _ = catalog_age_tick.tick() => daemon.warn_if_stale(),
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
                    let path = daemon.learner.as_ref().map(|l| l.give_back().path());
                    while let Some(item) = ring.next() {
                        if let Some(l) = daemon.learner.as_mut() {
                            l.on_frame(&item, &mut daemon.dataplane);
                        }
                    }
                    guard.clear_ready();
                    // A path lost at run time: `status` read from the state file says so too.
                    if daemon.learner.as_ref().map(|l| l.give_back().path()) != path
                        && let Err(e) = daemon.persist()
                    {
                        warn!("cannot persist the state: {e:#}");
                    }
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
            // A reload (SIGHUP or the socket) may have changed the interval.
            if daemon.config.drop_log_interval != drop_log_secs {
                drop_log_secs = daemon.config.drop_log_interval;
                drop_log_tick = tokio::time::interval(Duration::from_secs(drop_log_secs));
            }
        }
        let _ = shutdown_tx.send(true);
        // No learner, no holding: answers pass unheld from now on.
        let stopped = daemon.learner.as_ref().map(Learner::stopped_control).unwrap_or_default();
        let _ = daemon.dataplane.set_dns_control(&stopped);
        socket.remove();
        sd_notify(&[sd_notify::NotifyState::Stopping]);
        info!("exiting; the policy stays enforced (`allowgate down` removes it)");
        anyhow::Ok(())
    })
}

impl Daemon {
    /// The configured interfaces as the kernel has them.
    pub(super) fn interface_statuses(&self) -> Vec<status::InterfaceStatus> {
        self.attachments
            .iter()
            .map(|a| status::interface_status(&self.config.bpffs_dir, a))
            .collect()
    }

    /// Every second: the kernel is asked whether each interface still runs our
    /// programs (a link detached by hand, its pin removed, the interface deleted,
    /// re-created or renamed); what is wrong is logged once and repaired when it can
    /// be, and `status` says so until it is.
    pub(super) fn reconcile_attachments(&mut self) {
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
            // A repair puts back what was there: a dispatcher's program goes into one again.
            let mut placement = placement(&self.config);
            if self.attachments[index].xdp_attach == crate::dataplane::XdpAttach::Dispatcher
                && placement.mode == crate::policy::config::XdpPlacement::Auto
            {
                placement.mode = crate::policy::config::XdpPlacement::Dispatcher;
            }
            match self.dataplane.attach(&name, placement) {
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
}
