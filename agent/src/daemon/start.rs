//! Starting: load the config and the catalog, check everything that can be checked
//! before the kernel is touched, install the desired policy, attach all interfaces or
//! none, and start learning the catalog's names.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use super::{
    DESIRED_FILE, Daemon, Desired, DesiredFile, catalog, catalog_guard, change::compile, load_json, now, now_ms, state,
};
use crate::{
    dataplane::{Dataplane, DnsControl, LoadOptions, Placement},
    dns::learner::Learner,
    policy::{Config, Policy, StateMode, config::load_config},
};

/// The learner `config` asks for, or none; without one the data plane holds nothing.
fn start_learner(policy: &Policy, config: &Config, dataplane: &mut Dataplane) -> anyhow::Result<Option<Learner>> {
    if config.dns.learn {
        return Ok(Some(Learner::start(policy, &config.dns, dataplane)?));
    }
    dataplane.set_dns_control(&DnsControl::default())?;
    Ok(None)
}

/// Seeds connection tracking with the host's connections (TCP and connected UDP, from
/// sock_diag), so that enforcing the return paths cuts none of them: the SSH session
/// that started the daemon keeps working although its peer speaks first. A failure is
/// logged and enforcing goes on: such connections pass again once the host sends.
pub(super) fn seed_flows(dataplane: &mut Dataplane) {
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

pub(super) fn placement(config: &Config) -> Placement {
    Placement {
        mode: config.xdp_mode,
        priority: config.xdp_priority,
    }
}

impl Daemon {
    /// Loads, installs the desired policy, attaches: the policy is in the maps before
    /// any program sees a packet, and an adopted link switches program in one step.
    pub(super) fn start(config_path: &Path) -> anyhow::Result<Daemon> {
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
        let catalog = catalog_guard::at_start(&config, &desired, catalog);
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
            let a = match dataplane.attach(iface, placement(&config)) {
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
            info!(interface = %a.name, xdp = a.xdp_mode.as_str(), xdp_attach = a.xdp_attach.as_str(), tc = ?a.tc_mode, adopted = a.adopted, "attached");
            attachments.push(a);
        }
        dataplane.pin_programs()?;
        let learner = start_learner(&policy, &config, &mut dataplane)?;
        let (events, _) = broadcast::channel(1024);
        let mut daemon = Daemon {
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
            catalog_sources: Vec::new(),
            last_change: now(),
        };
        daemon.catalog_in_force();
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
}
