//! The shrink guard where the config's catalog reaches the kernel: at start and on
//! reload, as `catalog apply` does for its file (`catalog.rs`) and `catalog rollback`
//! does not (it restores what was in force). A catalog that would remove more than
//! `max_shrink` percent of the catalog addresses of the one in force is refused and the
//! one in force stays, with the reason in the log: a page cut short, or a tags file of
//! the wrong cloud, that a timer fetched into the file the config names, never reaches
//! the kernel by a restart or a reload.
//!
//! The catalog in force is kept in `state_dir/catalog-in-force.json` whenever it
//! changes, so a start compares with what the last daemon enforced, also after a reboot
//! emptied the kernel. To put a smaller catalog in force on purpose: `catalog apply FILE
//! --force`, or `max_shrink = 100` for one reload.

use std::path::Path;

use anyhow::anyhow;
use tracing::{error, info, warn};

use super::{Daemon, Desired, catalog_age, load_json, save_json, state};
use crate::{
    catalog::Catalog,
    policy::{Config, Policy},
};

pub const IN_FORCE_FILE: &str = "catalog-in-force.json";

/// The catalog the last daemon put in force, if it kept one that reads.
fn load_in_force(state_dir: &Path) -> Option<Catalog> {
    match load_json::<Catalog>(state_dir, IN_FORCE_FILE) {
        Ok(c) => c,
        Err(e) => {
            warn!("the shrink guard has nothing to compare with at start: {e:#}");
            None
        }
    }
}

/// The policy `catalog` gives for `desired` under `config`: the same selection and
/// config on both sides, so that only the catalog's part differs.
fn policy_of(catalog: &Catalog, config: &Config, desired: &Desired) -> Policy {
    let config = Config {
        mode: desired.mode,
        ..config.clone()
    };
    Policy::build(catalog, &desired.selection(), &config, &config.dns_servers())
}

/// What to tell the operator when the config's catalog is refused.
fn refusal(new: &Catalog, in_force: &Catalog, why: state::ShrinkRefused) -> String {
    format!(
        "the config's catalog ({}) is refused: {why}; the catalog in force ({}) stays. Check the difference with \
         `allowgate catalog diff`, then put it in force with `allowgate catalog apply FILE --force`, or set max_shrink = 100 for one reload",
        new.source, in_force.source
    )
}

/// At start: `chosen` (the config's catalog, or the applied one), unless it would shrink
/// the catalog the last daemon enforced past `max_shrink`; then that one.
pub(super) fn at_start(config: &Config, desired: &Desired, chosen: Catalog) -> Catalog {
    let Some(in_force) = load_in_force(&config.state_dir) else {
        return chosen;
    };
    if in_force == chosen {
        return chosen;
    }
    let (old, new) = (
        policy_of(&in_force, config, desired),
        policy_of(&chosen, config, desired),
    );
    match state::shrink_guard(&old, &new, config.max_shrink, false) {
        Ok(_) => chosen,
        Err(why) => {
            error!("{}", refusal(&chosen, &in_force, why));
            in_force
        }
    }
}

impl Daemon {
    /// On reload: whether `catalog` may replace the catalog in force, for `desired`
    /// under the new `config`.
    pub(super) fn guard_reload(&self, catalog: &Catalog, config: &Config, desired: &Desired) -> anyhow::Result<()> {
        if *catalog == self.catalog {
            return Ok(());
        }
        let (old, new) = (
            policy_of(&self.catalog, config, desired),
            policy_of(catalog, config, desired),
        );
        match state::shrink_guard(&old, &new, config.max_shrink, false) {
            Ok(shrink) => {
                info!(
                    source = %catalog.source,
                    added = shrink.added,
                    removed = shrink.removed,
                    "a new catalog from the config"
                );
                Ok(())
            }
            Err(why) => Err(anyhow!(refusal(catalog, &self.catalog, why))),
        }
    }

    /// After the catalog in force changed (and at start): keep it for the next start's
    /// guard, and date its sources.
    pub(super) fn catalog_in_force(&mut self) {
        if let Err(e) = save_json(&self.config.state_dir, IN_FORCE_FILE, &self.catalog) {
            warn!("cannot keep the catalog in force for the next start's shrink guard: {e:#}");
        }
        let applied = self.applied_catalogs().current;
        let applied_from = applied
            .as_ref()
            .filter(|a| a.catalog == self.catalog)
            .map(|a| a.from.as_path());
        let paths = catalog_age::paths_of(applied_from, &self.config.catalog);
        self.catalog_sources = catalog_age::sources(&self.catalog, &paths);
    }
}
