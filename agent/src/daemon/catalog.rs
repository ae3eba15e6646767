//! `catalog apply` and `catalog rollback`: a new catalog goes in as one generation
//! swap, is persisted in `state_dir/catalog.json` with the one it replaced, and wins
//! over the config's `catalog` until the operator edits that key.
//!
//! The rules are pure functions (`choose` here, `check_shrink` in `state`, which start
//! and reload share) with tests; `Daemon`'s methods below only read files, compile and
//! install.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::state::check_shrink;
use super::{Daemon, Pending, change::compile, load_json, now, now_ms, save_json, state};
use crate::{
    catalog::{
        Catalog,
        sources::{ImportOptions, SourceKind, import_bytes, read_opened},
    },
    control::{
        protocol::{CatalogApplied, ChangeOptions, Response},
        server,
    },
};

pub const CATALOG_FILE: &str = "catalog.json";

/// A catalog put in force by `catalog apply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub catalog: Catalog,
    /// The file it was read from.
    pub from: PathBuf,
    /// Seconds since the epoch.
    pub applied_at: u64,
    /// The config's `catalog` key when it was applied: an edit of that key makes the
    /// config win again.
    pub basis: Vec<PathBuf>,
}

/// `state_dir/catalog.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedCatalogs {
    pub current: Option<Applied>,
    /// What was in force before `current`, for `catalog rollback`.
    pub previous: Option<Applied>,
}

impl AppliedCatalogs {
    /// The record with its catalogs' Azure regions spelled as Azure does: one applied
    /// before the region vocabulary names `centralfrance` where the config now says
    /// `francecentral`.
    fn in_azure_spelling(mut self) -> AppliedCatalogs {
        for applied in [&mut self.current, &mut self.previous].into_iter().flatten() {
            applied.catalog.normalize_regions();
        }
        self
    }
}

/// Which catalog to enforce: the applied one while the config's `catalog` key is as
/// it was when it was applied, else the config's. The second value says why the
/// applied one was set aside, for the log.
pub fn choose(
    config_catalog: Catalog,
    config_paths: &[PathBuf],
    applied: Option<&Applied>,
) -> (Catalog, Option<&'static str>) {
    match applied {
        Some(a) if a.basis == config_paths => (a.catalog.clone(), None),
        Some(_) => (
            config_catalog,
            Some("the config's `catalog` changed since the last `catalog apply`: the config wins"),
        ),
        None => (config_catalog, None),
    }
}

/// Reads the file a `catalog apply` names, refusing one the requesting user could not
/// have read: the daemon runs as root, and a catalog's errors quote the lines they
/// name. The owner is checked on the file opened (one open, `O_NOFOLLOW`, `fstat` on
/// that descriptor), not by path before opening: a user who may use the socket could
/// otherwise swap the path for a link to a root-only file between the check and the
/// read. `O_NONBLOCK` and the regular-file check keep a FIFO from stalling the daemon.
fn read_owned(path: &Path, peer: &server::Peer) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!(
                "{} is a symbolic link: name the file itself (`catalog apply` resolves links before asking)",
                path.display()
            ),
            _ => format!(
                "the daemon cannot read {}: {e} (as a service it sees neither /tmp nor /home: put the file under /etc/allowgate or /var/lib/allowgate)",
                path.display()
            ),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file: apply a catalog file",
            path.display()
        ));
    }
    if peer.uid != 0 && meta.uid() != peer.uid {
        return Err(format!(
            "{} belongs to uid {}, not to you (uid {}): apply a catalog file you own",
            path.display(),
            meta.uid(),
            peer.uid
        ));
    }
    read_opened(file, path).map_err(|e| format!("refused, nothing changed: {}", crate::error_chain(&e)))
}

/// Which way a catalog goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Switch {
    Apply,
    Rollback,
}

impl Switch {
    fn as_str(self) -> &'static str {
        match self {
            Switch::Apply => "catalog applied",
            Switch::Rollback => "catalog rolled back",
        }
    }
}

impl Daemon {
    pub(super) fn applied_catalogs(&self) -> AppliedCatalogs {
        match load_json::<AppliedCatalogs>(&self.config.state_dir, CATALOG_FILE) {
            Ok(Some(a)) => a.in_azure_spelling(),
            Ok(None) => AppliedCatalogs::default(),
            Err(e) => {
                warn!("ignoring {CATALOG_FILE}: {e:#}");
                AppliedCatalogs::default()
            }
        }
    }

    /// `catalog apply FILE`.
    pub(super) fn catalog_apply(&mut self, peer: &server::Peer, path: &Path, options: ChangeOptions) -> Response {
        let bytes = match read_owned(path, peer) {
            Ok(bytes) => bytes,
            Err(e) => return Response::error(e),
        };
        let import = ImportOptions::with_fallback(&self.catalog);
        let catalog = match import_bytes(&bytes, path, SourceKind::detect(&bytes), import) {
            Ok(c) => c,
            Err(e) => return Response::error(format!("refused, nothing changed: {}", crate::error_chain(&e))),
        };
        let applied = Applied {
            catalog,
            from: path.to_path_buf(),
            applied_at: now(),
            basis: self.config.catalog.clone(),
        };
        self.switch_catalog(peer.uid, applied, options, Switch::Apply)
    }

    /// `catalog rollback`: the catalog before the last apply.
    /// `uid` is who asked, for the log (0 for the daemon's own rollback).
    pub(super) fn catalog_rollback(&mut self, uid: u32, options: ChangeOptions) -> Response {
        let Some(previous) = self.applied_catalogs().previous else {
            return Response::error("no previous catalog to roll back to (nothing was applied with `catalog apply`)");
        };
        self.switch_catalog(uid, previous, options, Switch::Rollback)
    }

    /// Puts `next` in force in one swap, keeping the one it replaces as `previous`.
    fn switch_catalog(&mut self, uid: u32, next: Applied, options: ChangeOptions, switch: Switch) -> Response {
        // The enabled regions must still exist: a catalog without them would quietly
        // allow nothing for them.
        let missing: Vec<&str> = self
            .desired
            .regions
            .iter()
            .chain(self.config.proxy_regions.iter().flatten())
            .filter(|r| next.catalog.region(r).is_err())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Response::error(format!(
                "refused, nothing changed: the new catalog has no region {}, which the selection names; disable it first",
                missing.join(", ")
            ));
        }
        let (policy, tables) = match compile(&next.catalog, &self.config, &self.desired) {
            Ok(x) => x,
            Err(e) => return Response::error(format!("refused, nothing changed: {e:#}")),
        };
        // The way back to what was in force is never held to max_shrink: after a bigger
        // catalog went in, going back removes more than the guard allows.
        let force = options.force || switch == Switch::Rollback;
        let shrink = match check_shrink(&self.policy, &policy, self.config.max_shrink, force) {
            Ok(s) => s,
            Err(e) => return Response::error(format!("refused, nothing changed: {e}")),
        };
        let mut warnings = next.catalog.warnings.clone();
        match state::admit("this catalog", self.pending.as_ref(), &options, &self.policy, &policy) {
            Ok(w) => warnings.extend(w),
            Err(e) => return Response::error(e),
        }
        let outgoing = Applied {
            catalog: self.catalog.clone(),
            from: PathBuf::from("(the catalog in force before)"),
            applied_at: now(),
            basis: self.config.catalog.clone(),
        };
        let old_record = self.applied_catalogs();
        let record = AppliedCatalogs {
            current: Some(next.clone()),
            previous: Some(outgoing),
        };
        // Persist first: a catalog in force that a restart would forget is worse than
        // a refusal.
        if let Err(e) = save_json(&self.config.state_dir, CATALOG_FILE, &record) {
            return Response::error(format!("refused, nothing changed: cannot persist the catalog: {e:#}"));
        }
        let desired = self.desired.clone();
        let generation = match self.put_in_force((policy, tables), Some(next.catalog), None, desired) {
            Ok(g) => g,
            Err(e) => {
                if let Err(e) = save_json(&self.config.state_dir, CATALOG_FILE, &old_record) {
                    warn!("cannot restore {CATALOG_FILE} after a refused install: {e:#}");
                }
                return Response::error(format!("refused, the previous policy stays enforced: {e:#}"));
            }
        };
        self.pending = options.confirm_secs.map(|secs| Pending {
            previous: self.desired.clone(),
            deadline_ms: now_ms() + secs * 1000,
            catalog_rollback: true,
        });
        if let Err(e) = self.persist() {
            warnings.push(format!("applied, but cannot persist the state: {e:#}"));
        }
        info!(
            uid,
            generation,
            source = %self.catalog.source,
            added = shrink.added,
            removed = shrink.removed,
            confirm = ?options.confirm_secs,
            "{}",
            switch.as_str()
        );
        Response::CatalogApplied(CatalogApplied {
            generation,
            source: self.catalog.source.clone(),
            enforced_before: shrink.before,
            enforced_after: shrink.after,
            added: shrink.added,
            removed: shrink.removed,
            rollback_in_secs: options.confirm_secs,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Config, Policy, Selection};

    fn policy(catalog: &Catalog) -> Policy {
        let selection = Selection {
            regions: vec!["eu1".into(), "us1".into()],
            features: vec![crate::catalog::Feature::Portal, crate::catalog::Feature::AppConnector],
        };
        let mut config = Config::default();
        config.management.cidrs = vec!["192.0.2.0/24".parse().unwrap()];
        Policy::build(catalog, &selection, &config, &[])
    }

    #[test]
    fn a_catalog_that_drops_too_much_is_refused_unless_forced() {
        let old = Catalog::builtin();
        let before = policy(&old);
        let total = before.catalog_nets().len();
        // Drop the app connector's us1 addresses: far more than a quarter.
        let mut new = old.clone();
        new.entries
            .retain(|e| !(e.region.as_deref() == Some("us1") && e.feature == crate::catalog::Feature::AppConnector));
        let after = policy(&new);
        let err = check_shrink(&before, &after, 25, false).unwrap_err();
        assert!(
            err.contains(&format!("of the {total} catalog addresses enforced now")),
            "{err}"
        );
        let forced = check_shrink(&before, &after, 25, true).unwrap();
        assert_eq!(forced.before, total);
        assert!(forced.removed * 4 > total);
        assert_eq!(forced.added, 0);
        // The same shrink is fine under a looser max_shrink.
        assert!(check_shrink(&before, &after, 100, false).is_ok());
        // A catalog that only adds is always fine.
        let mut grown = old.clone();
        let mut extra = grown
            .entries
            .iter()
            .find(|e| e.region.as_deref() == Some("eu1"))
            .unwrap()
            .clone();
        extra.peer = crate::catalog::Peer::Net("198.51.100.9/32".parse().unwrap());
        grown.entries.push(extra);
        let s = check_shrink(&before, &policy(&grown), 0, false).unwrap();
        assert_eq!((s.added, s.removed), (1, 0));
    }

    #[test]
    fn the_applied_catalog_wins_until_the_config_names_another() {
        let builtin = Catalog::builtin();
        let mut applied_catalog = builtin.clone();
        applied_catalog.source = "applied".into();
        let applied = Applied {
            catalog: applied_catalog,
            from: "/tmp/x.md".into(),
            applied_at: 1,
            basis: vec![],
        };
        let (c, why) = choose(builtin.clone(), &[], Some(&applied));
        assert_eq!((c.source.as_str(), why), ("applied", None));
        let (c, why) = choose(builtin.clone(), &["/etc/allowgate/page.md".into()], Some(&applied));
        assert_eq!(c.source, builtin.source);
        assert!(why.unwrap().contains("the config wins"));
        let (c, why) = choose(builtin.clone(), &[], None);
        assert_eq!((c.source, why), (builtin.source, None));
    }

    fn peer(uid: u32) -> server::Peer {
        server::Peer {
            uid,
            gid: uid,
            pid: None,
            groups: Vec::new(),
        }
    }

    /// The file `catalog apply` names is opened once, without following a link, and
    /// judged by what was opened. Before, the owner was read by path (following links)
    /// and the file opened again by path: a link to a file of one's own went through, a
    /// FIFO stalled the daemon in open(2), and a path swapped between the two calls was
    /// read as whatever it pointed to then.
    #[test]
    fn apply_reads_the_file_it_judged() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("page.md");
        std::fs::write(&page, crate::catalog::BUILTIN_PAGE).unwrap();
        let owner = std::fs::metadata(&page).unwrap().uid();
        assert_eq!(
            read_owned(&page, &peer(owner)).unwrap(),
            crate::catalog::BUILTIN_PAGE.as_bytes()
        );

        let link = dir.path().join("link.md");
        std::os::unix::fs::symlink(&page, &link).unwrap();
        let err = read_owned(&link, &peer(owner)).unwrap_err();
        assert!(
            err.ends_with(
                "link.md is a symbolic link: name the file itself (`catalog apply` resolves links before asking)"
            ),
            "{err}"
        );

        let fifo = dir.path().join("fifo.md");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        let err = read_owned(&fifo, &peer(owner)).unwrap_err();
        assert!(
            err.ends_with("fifo.md is not a regular file: apply a catalog file"),
            "{err}"
        );

        let other = owner.wrapping_add(1);
        let err = read_owned(&page, &peer(other)).unwrap_err();
        assert!(
            err.ends_with(&format!(
                "page.md belongs to uid {owner}, not to you (uid {other}): apply a catalog file you own"
            )),
            "{err}"
        );
        assert!(read_owned(&page, &peer(0)).is_ok(), "root reads any file");
    }

    #[test]
    fn a_record_from_before_the_vocabulary_reads_in_azures_spelling() {
        let mut catalog = Catalog::builtin();
        catalog.regions.push(crate::catalog::Region {
            id: "centralfrance".into(),
            label: "FranceCentral".into(),
            kind: crate::catalog::RegionKind::AzureRegion,
        });
        let mut entry = catalog.entries[0].clone();
        entry.region = Some("centralfrance".into());
        catalog.entries.push(entry);
        let applied = Applied {
            catalog,
            from: "/etc/allowgate/tags.json".into(),
            applied_at: 1,
            basis: vec![],
        };
        let record = AppliedCatalogs {
            current: Some(applied.clone()),
            previous: Some(applied),
        }
        .in_azure_spelling();
        for applied in [record.current.unwrap(), record.previous.unwrap()] {
            let c = applied.catalog;
            assert!(
                c.regions
                    .iter()
                    .any(|r| r.id == "francecentral" && r.label == "France Central")
            );
            assert!(c.entries.iter().all(|e| e.region.as_deref() != Some("centralfrance")));
            assert!(c.entries.iter().any(|e| e.region.as_deref() == Some("francecentral")));
        }
    }
}
