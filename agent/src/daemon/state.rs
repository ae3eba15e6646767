//! The desired-state rules, as pure functions: what to enforce at start (the config,
//! the persisted runtime changes, a rollback that came due while no daemon ran), and
//! what a reload may change. The daemon reads files and calls these; the tests here
//! need no kernel.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::now_ms;
use crate::{
    catalog::Feature,
    policy::{Config, Mode, Selection},
};

/// The selection and mode to enforce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub regions: Vec<String>,
    pub features: Vec<Feature>,
    pub mode: Mode,
}

impl Desired {
    pub fn of(config: &Config) -> Desired {
        Desired {
            regions: config.regions.clone(),
            features: config.features.clone(),
            mode: config.mode,
        }
    }

    pub fn selection(&self) -> Selection {
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
    /// The change was a `catalog apply` (or rollback): undoing it restores the
    /// catalog before it too.
    #[serde(default)]
    pub catalog_rollback: bool,
}

impl Pending {
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.saturating_sub(now_ms()))
    }

    /// Whole seconds left, rounded up, for people.
    pub fn remaining_secs(&self) -> u64 {
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

/// What to enforce at start: the persisted runtime changes while the config's own
/// selection is what they were made on (else the config wins), and a pending change
/// whose deadline passed (or is out of range) rolled back. The strings are warnings
/// for the log.
pub fn restore(
    basis: &Desired,
    persisted: Result<Option<DesiredFile>, String>,
    now_ms: u64,
) -> (Desired, Option<Pending>, Vec<String>) {
    let mut warnings = Vec::new();
    let (desired, pending) = match persisted {
        Ok(Some(file)) if file.basis == *basis => (file.desired, file.pending),
        Ok(Some(_)) => {
            warnings.push(
                "the config's regions, features or mode changed since the last runtime change: the config wins"
                    .to_string(),
            );
            (basis.clone(), None)
        }
        Ok(None) => (basis.clone(), None),
        Err(e) => {
            warnings.push(format!("ignoring the persisted runtime changes: {e}"));
            (basis.clone(), None)
        }
    };
    match pending {
        // A deadline further out than any window allows was not written by us.
        Some(p) if p.deadline_ms > now_ms + MAX_CONFIRM_SECS * 1000 => {
            warnings.push("the persisted rollback deadline is out of range: rolling the change back now".to_string());
            (p.previous, None, warnings)
        }
        Some(p) if p.deadline_ms <= now_ms => {
            warnings.push(
                "an unconfirmed change passed its deadline while the daemon was down: rolling it back".to_string(),
            );
            (p.previous, None, warnings)
        }
        other => (desired, other, warnings),
    }
}

/// What every config must have to be enforced, at start and on reload alike.
pub fn validate(config: &Config) -> Result<(), String> {
    if config.interfaces.is_empty() {
        return Err("`interfaces` is empty: name the interfaces to enforce on".to_string());
    }
    if config.state_dir.exists() && !config.state_dir.is_dir() {
        return Err(format!("state_dir {} is not a directory", config.state_dir.display()));
    }
    Ok(())
}

/// What a reload may not change: where the daemon lives (socket, state_dir,
/// bpffs_dir) and what it is attached to need a restart; and no reload may take away
/// management access that the running config gives (a config cut short, or emptied,
/// would otherwise lock the operator out).
pub fn validate_reload(old: &Config, new: &Config) -> Result<(), String> {
    validate(new)?;
    let restart = |key: &str| Err(format!("`{key}` changes only on restart (systemctl restart allowgate)"));
    if new.socket != old.socket {
        return restart("socket");
    }
    if new.state_dir != old.state_dir {
        return restart("state_dir");
    }
    if new.bpffs_dir != old.bpffs_dir {
        return restart("bpffs_dir");
    }
    if new.interfaces != old.interfaces {
        return restart("interfaces");
    }
    // The tables are sized at load; a restart carries their flows into the new ones.
    if new.state.max_flows != old.state.max_flows {
        return restart("state.max_flows");
    }
    let covered = |cidr: &IpNet| new.management.cidrs.iter().any(|n| n.contains(cidr));
    if let Some(lost) = old.management.cidrs.iter().find(|c| !covered(c)) {
        return Err(format!(
            "it would remove management access from {lost} ([management] cidrs); a config that does so takes a restart"
        ));
    }
    let port_kept = |p: &crate::catalog::PortRange| new.management.ports.iter().any(|n| n.lo <= p.lo && p.hi <= n.hi);
    if !old.management.cidrs.is_empty()
        && let Some(lost) = old.management.ports.iter().find(|p| !port_kept(p))
    {
        return Err(format!(
            "it would remove management port {lost} ([management] ports); a config that does so takes a restart"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(regions: &[&str]) -> Desired {
        Desired {
            regions: regions.iter().map(|r| r.to_string()).collect(),
            features: vec![Feature::Portal],
            mode: Mode::Enforce,
        }
    }

    #[test]
    fn runtime_changes_win_until_the_config_changes() {
        let basis = desired(&["eu1"]);
        let file = DesiredFile {
            desired: desired(&["eu1", "eu2"]),
            basis: basis.clone(),
            pending: None,
        };
        let (d, p, w) = restore(&basis, Ok(Some(file.clone())), 1000);
        assert_eq!((d, p, w.len()), (desired(&["eu1", "eu2"]), None, 0));
        let edited = desired(&["us1"]);
        let (d, _, w) = restore(&edited, Ok(Some(file)), 1000);
        assert_eq!(d, edited);
        assert!(w[0].contains("the config wins"));
        let (d, _, w) = restore(&basis, Err("bad json".into()), 1000);
        assert_eq!(d, basis);
        assert!(w[0].contains("bad json"));
    }

    #[test]
    fn a_pending_change_rolls_back_when_due_or_absurd() {
        let basis = desired(&["eu1"]);
        let file = |deadline_ms| DesiredFile {
            desired: desired(&["eu2"]),
            basis: basis.clone(),
            pending: Some(Pending {
                previous: basis.clone(),
                deadline_ms,
                catalog_rollback: false,
            }),
        };
        let now = 10_000_000;
        let (d, p, _) = restore(&basis, Ok(Some(file(now + 5_000))), now);
        assert_eq!(d, desired(&["eu2"]));
        assert_eq!(p.unwrap().deadline_ms, now + 5_000);
        let (d, p, w) = restore(&basis, Ok(Some(file(now - 1))), now);
        assert_eq!((d, p), (basis.clone(), None));
        assert!(w[0].contains("passed its deadline"));
        let (d, p, w) = restore(&basis, Ok(Some(file(now + (MAX_CONFIRM_SECS + 5) * 1000))), now);
        assert_eq!((d, p), (basis.clone(), None));
        assert!(w[0].contains("out of range"));
    }

    fn config() -> Config {
        Config {
            interfaces: vec!["veth0".into()],
            management: crate::policy::config::Management {
                cidrs: vec!["192.0.2.0/24".parse().unwrap()],
                ..Default::default()
            },
            ..Config::default()
        }
    }

    #[test]
    fn reloads_refuse_what_needs_a_restart_or_locks_out() {
        let old = config();
        assert_eq!(validate_reload(&old, &old), Ok(()));
        let mut new = config();
        new.interfaces.clear();
        assert!(
            validate_reload(&old, &new)
                .unwrap_err()
                .contains("`interfaces` is empty")
        );
        for (key, edit) in [
            (
                "socket",
                Box::new(|c: &mut Config| c.socket = "/tmp/other.sock".into()) as Box<dyn Fn(&mut Config)>,
            ),
            (
                "state_dir",
                Box::new(|c: &mut Config| c.state_dir = "/tmp/elsewhere".into()),
            ),
            (
                "bpffs_dir",
                Box::new(|c: &mut Config| c.bpffs_dir = "/sys/fs/bpf/other".into()),
            ),
            (
                "interfaces",
                Box::new(|c: &mut Config| c.interfaces.push("veth1".into())),
            ),
            ("state.max_flows", Box::new(|c: &mut Config| c.state.max_flows += 1)),
        ] {
            let mut new = config();
            edit(&mut new);
            let err = validate_reload(&old, &new).unwrap_err();
            assert!(err.contains(&format!("`{key}` changes only on restart")), "{err}");
        }
        let mut new = config();
        new.management.cidrs.clear();
        assert!(
            validate_reload(&old, &new)
                .unwrap_err()
                .contains("remove management access from 192.0.2.0/24")
        );
        // Widening is fine; narrowing the ports is not.
        new.management.cidrs = vec!["192.0.0.0/16".parse().unwrap()];
        assert_eq!(validate_reload(&old, &new), Ok(()));
        new.management.ports = vec![crate::catalog::PortRange::single(2222)];
        assert!(validate_reload(&old, &new).unwrap_err().contains("management port 22"));
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut c = config();
        c.state_dir = file.path().to_path_buf();
        assert!(validate(&c).unwrap_err().contains("is not a directory"));
    }
}
