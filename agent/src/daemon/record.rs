//! What the daemon keeps on disk besides the desired state (`state.rs`): the record of
//! what it put in force, `state_dir/state.json`, which `status` and the metrics read
//! when no daemon answers, and the whole-or-nothing JSON writes both files use. One
//! builder, `Daemon::record`, makes the record from what the daemon holds.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Daemon, DesiredFile, catalog_age};
use crate::{
    catalog::Feature,
    dataplane::Attachment,
    dns::learner::Learner,
    policy::{
        Mode,
        config::{GiveBack, GiveBackPath, TcMode, XdpAttach, XdpMode},
    },
};

/// What the daemon last put in force, kept in `state_dir/state.json` for `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub regions: Vec<String>,
    pub features: Vec<Feature>,
    pub mode: Mode,
    pub interfaces: Vec<InterfaceRecord>,
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
    /// Each source of the catalog in force, with what dates it.
    #[serde(default)]
    pub catalog_sources: Vec<catalog_age::CatalogSource>,
    /// The config's `max_catalog_age` (days; 0: never).
    #[serde(default)]
    pub max_catalog_age: Option<u32>,
    /// DNS learning's give-back choice and why the path in force is what it is (the
    /// path itself and the counts are the kernel's, in `ag_dns_ctl`).
    #[serde(default)]
    pub give_back: Option<GiveBackRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GiveBackRecord {
    pub choice: GiveBack,
    pub path: GiveBackPath,
    pub reason: Option<String>,
}

impl GiveBackRecord {
    fn of(learner: &Learner) -> GiveBackRecord {
        let g = learner.give_back();
        GiveBackRecord {
            choice: g.choice(),
            path: g.path(),
            reason: g.reason().map(str::to_string),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceRecord {
    pub name: String,
    pub xdp_mode: XdpMode,
    pub tc_mode: TcMode,
    /// Alone, or one of a libxdp dispatcher's programs (records before it: alone).
    #[serde(default)]
    pub xdp_attach: XdpAttach,
}

impl InterfaceRecord {
    /// The attachment this record describes, for asking the kernel about it.
    pub fn attachment(&self) -> Attachment {
        Attachment {
            name: self.name.clone(),
            xdp_mode: self.xdp_mode,
            xdp_attach: self.xdp_attach,
            tc_mode: self.tc_mode,
            adopted: false,
        }
    }

    pub fn of(a: &Attachment) -> InterfaceRecord {
        InterfaceRecord {
            name: a.name.clone(),
            xdp_mode: a.xdp_mode,
            tc_mode: a.tc_mode,
            xdp_attach: a.xdp_attach,
        }
    }
}

pub const STATE_FILE: &str = "state.json";
pub const DESIRED_FILE: &str = "desired.json";

/// Writes `value` as JSON to `dir/name` whole or not at all: a temporary file, fsync,
/// rename, fsync of the directory.
pub(super) fn save_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> anyhow::Result<()> {
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

pub(super) fn load_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> anyhow::Result<Option<T>> {
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

impl Record {
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Record>> {
        load_json(state_dir, STATE_FILE)
    }

    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        save_json(state_dir, STATE_FILE, self)
    }
}

pub fn now() -> u64 {
    now_ms() / 1000
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Daemon {
    /// The record of what is in force now, from what the daemon holds: the one builder
    /// of `state.json` and of the daemon's answer to `status`.
    pub(super) fn record(&self) -> Record {
        Record {
            regions: self.desired.regions.clone(),
            features: self.desired.features.clone(),
            mode: self.desired.mode,
            interfaces: self.attachments.iter().map(InterfaceRecord::of).collect(),
            generation: self.generation,
            last_change: self.last_change,
            bpffs_dir: self.config.bpffs_dir.clone(),
            pid: std::process::id(),
            rollback_deadline: self.pending.as_ref().map(|p| p.deadline_ms.div_ceil(1000)),
            entries: Some(self.entries),
            learned: self.learner.as_ref().map(Learner::counts),
            unresolved: self.learner.as_ref().map(Learner::unresolved).unwrap_or_default(),
            catalog: Some(self.catalog.source.clone()),
            catalog_sources: self.catalog_sources.clone(),
            max_catalog_age: Some(self.config.max_catalog_age),
            give_back: self.learner.as_ref().map(GiveBackRecord::of),
        }
    }

    /// Writes the desired state and the record, each whole or not at all.
    pub(super) fn persist(&self) -> anyhow::Result<()> {
        let file = DesiredFile {
            desired: self.desired.clone(),
            basis: self.basis.clone(),
            pending: self.pending.clone(),
        };
        save_json(&self.config.state_dir, DESIRED_FILE, &file)?;
        self.record().save(&self.config.state_dir)
    }
}
