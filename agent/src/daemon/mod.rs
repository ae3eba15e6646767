//! The daemon: compile the desired policy, load and attach, then keep it enforced and
//! answer the control socket. One loop owns all state; every change (socket requests,
//! SIGHUP, a rollback deadline) compiles a whole new generation, then goes in through
//! `put_in_force` in one swap, or changes nothing.
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
//!
//! The room: `start.rs` (load, check, install, attach), `change.rs` (the socket's
//! requests and every change path, through `put_in_force`), `run.rs` (the loop, the
//! socket, the interface watch, sd_notify), `record.rs` (what is in force, on disk for
//! `status`), `state.rs` (the pure rules: desired state, admission, reload refusals),
//! `catalog*.rs` (catalog apply, rollback, the shrink guard, each source's age),
//! `status.rs` and `metrics/` (what is reported).

use std::{collections::BTreeMap, path::PathBuf};

use tokio::sync::broadcast;

use crate::{
    catalog::Catalog,
    dataplane::{Attachment, Dataplane},
    dns::learner::Learner,
    events::Decoded,
    policy::{Config, Policy},
};

mod catalog;
pub mod catalog_age;
mod catalog_guard;
mod change;
pub mod metrics;
mod record;
mod run;
mod start;
pub mod state;
pub mod status;

pub use record::{DESIRED_FILE, GiveBackRecord, InterfaceRecord, Record, STATE_FILE, now};
use record::{load_json, now_ms, save_json};
pub use run::run;
pub use state::{Desired, DesiredFile, MAX_CONFIRM_SECS, Pending};

/// The daemon: one loop (`run`) owns it and hands it each event.
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
    /// The sources of `catalog` and what dates them (`catalog_guard::catalog_in_force`).
    catalog_sources: Vec<catalog_age::CatalogSource>,
    /// When the generation in force went in (seconds since the epoch).
    last_change: u64,
}
