//! The desired-state rules, as pure functions: what to enforce at start (the config,
//! the persisted runtime changes, a rollback that came due while no daemon ran), what a
//! reload may change, and how much a new catalog may take away (`shrink_guard`, for
//! start, reload and `catalog apply` alike). The daemon reads files and calls these; the
//! tests here need no kernel.

use std::{collections::BTreeSet, fmt, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::now_ms;
use crate::{
    catalog::{Catalog, Feature},
    control::protocol::{ChangeOptions, SshSession},
    policy::{
        Config, Mode, Policy, Selection,
        model::{self, Frame, Hook, IpPacket, L4, Verdict},
    },
};

/// The selection and mode to enforce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub regions: Vec<String>,
    pub features: Vec<Feature>,
    pub mode: Mode,
}

impl Desired {
    /// `enable` (`on`) or `disable` of regions and features, named in any spelling the
    /// catalog knows; an unknown name refuses the whole toggle. A region both enabled and
    /// named again, or disabled and not enabled, changes nothing.
    pub fn toggle(
        &mut self,
        catalog: &Catalog,
        regions: &[String],
        features: &[String],
        on: bool,
    ) -> anyhow::Result<()> {
        fn set<T: PartialEq>(list: &mut Vec<T>, item: T, on: bool) {
            match (on, list.contains(&item)) {
                (true, false) => list.push(item),
                (false, true) => list.retain(|x| *x != item),
                _ => {}
            }
        }
        for r in regions {
            set(&mut self.regions, catalog.region(r)?.id.clone(), on);
        }
        for f in features {
            set(&mut self.features, f.parse::<Feature>()?, on);
        }
        Ok(())
    }

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
    // What is bound or sized once at start: a reload that answered "reloaded" would keep
    // the old ones (the flow tables are sized at load; a restart carries their flows over).
    let fixed = [
        ("socket", new.socket != old.socket),
        ("state_dir", new.state_dir != old.state_dir),
        ("bpffs_dir", new.bpffs_dir != old.bpffs_dir),
        ("interfaces", new.interfaces != old.interfaces),
        ("metrics", new.metrics != old.metrics),
        ("socket_group", new.socket_group != old.socket_group),
        ("xdp_mode", new.xdp_mode != old.xdp_mode),
        ("xdp_priority", new.xdp_priority != old.xdp_priority),
        ("state.max_flows", new.state.max_flows != old.state.max_flows),
    ];
    if let Some((key, _)) = fixed.iter().find(|(_, changed)| *changed) {
        return Err(format!("`{key}` changes only on restart (systemctl restart allowgate)"));
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

/// What a new catalog does to a set of enforced catalog addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shrink {
    pub before: usize,
    pub after: usize,
    pub added: usize,
    pub removed: usize,
}

impl Shrink {
    pub fn between(before: &BTreeSet<IpNet>, after: &BTreeSet<IpNet>) -> Shrink {
        Shrink {
            before: before.len(),
            after: after.len(),
            added: after.difference(before).count(),
            removed: before.difference(after).count(),
        }
    }

    /// More than `max_shrink` percent of what was there goes.
    pub fn exceeds(&self, max_shrink: u8) -> bool {
        // removed / before > max_shrink / 100, without floating point.
        self.removed * 100 > self.before * usize::from(max_shrink)
    }

    /// The share removed, in whole percent rounded up.
    pub fn percent(&self) -> usize {
        (self.removed * 100).div_ceil(self.before.max(1))
    }
}

/// Why a new catalog may not replace the one in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShrinkRefused {
    /// It removes more than `max_shrink` percent of the catalog addresses enforced now.
    TooMuch { shrink: Shrink, max_shrink: u8 },
    /// The two policies differ in what the config makes, which a catalog cannot do.
    ConfigRules,
}

impl fmt::Display for ShrinkRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShrinkRefused::TooMuch { shrink, max_shrink } => write!(
                f,
                "the new catalog would remove {} of the {} catalog addresses enforced now ({}%), more than max_shrink ({max_shrink}%)",
                shrink.removed,
                shrink.before,
                shrink.percent()
            ),
            ShrinkRefused::ConfigRules => f.write_str(
                "the new catalog would change management, essential or [[allow]] rules; that is a bug, nothing changed",
            ),
        }
    }
}

/// The one guard on every path by which a catalog reaches the kernel (start, reload,
/// `catalog apply`; not `catalog rollback`, which restores what was in force): compares
/// the catalog addresses of the policy in force (`old`) with those of the same selection
/// and config under the new catalog (`new`), and refuses, unless `force`, a change that
/// removes more than `max_shrink` percent of them.
pub fn shrink_guard(old: &Policy, new: &Policy, max_shrink: u8, force: bool) -> Result<Shrink, ShrinkRefused> {
    if old.config_rules() != new.config_rules() {
        return Err(ShrinkRefused::ConfigRules);
    }
    let shrink = Shrink::between(&old.catalog_nets(), &new.catalog_nets());
    if !force && shrink.exceeds(max_shrink) {
        return Err(ShrinkRefused::TooMuch { shrink, max_shrink });
    }
    Ok(shrink)
}

/// `shrink_guard` with what `catalog apply` tells its caller to do.
pub fn check_shrink(old: &Policy, new: &Policy, max_shrink: u8, force: bool) -> Result<Shrink, String> {
    shrink_guard(old, new, max_shrink, force).map_err(|e| match e {
        ShrinkRefused::TooMuch { .. } => {
            format!("{e}: check it with `allowgate catalog diff`, then repeat with --force")
        }
        ShrinkRefused::ConfigRules => e.to_string(),
    })
}

/// The admission rules every change a user asks for passes, after it compiled and
/// before it goes in (a toggle, a mode, `catalog apply`, `catalog rollback`): no other
/// change awaits confirmation, a confirm window within range, and the SSH session the
/// request came from (`SSH_CONNECTION`) not cut off unless `--confirm` (rolled back
/// unless confirmed) or `--force`. `what` names the change in the messages ("this
/// change", "this catalog"). `Ok` carries what to warn the user of.
pub fn admit(
    what: &str,
    pending: Option<&Pending>,
    options: &ChangeOptions,
    in_force: &Policy,
    next: &Policy,
) -> Result<Vec<String>, String> {
    if let Some(p) = pending {
        return Err(format!(
            "a change awaits confirmation (it rolls back in {} s): run `allowgate confirm`, or wait",
            p.remaining_secs()
        ));
    }
    if let Some(secs) = options.confirm_secs
        && !(1..=MAX_CONFIRM_SECS).contains(&secs)
    {
        return Err(format!("--confirm takes 1 to {MAX_CONFIRM_SECS} seconds, not {secs}"));
    }
    let mut warnings = Vec::new();
    if let Some(ssh) = &options.ssh
        && cuts_off(in_force, next, ssh)
    {
        let cut = format!(
            "{what} would cut off your SSH session from {} to port {}",
            ssh.client, ssh.server_port
        );
        if !options.force && options.confirm_secs.is_none() {
            return Err(format!(
                "{cut}: repeat it with --confirm SECONDS to have it rolled back unless confirmed, or with --force"
            ));
        }
        warnings.push(cut);
    }
    Ok(warnings)
}

/// Whether the SSH session's next segment passes under `old` but not under `new`.
fn cuts_off(old: &Policy, new: &Policy, ssh: &SshSession) -> bool {
    let local: std::net::IpAddr = if ssh.client.is_ipv4() {
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

    /// The rules every change path shares, in the order they refuse.
    #[test]
    fn admission_refuses_a_second_change_a_bad_window_and_a_cut_ssh_session() {
        let catalog = crate::catalog::Catalog::builtin();
        let build = |config: &Config| Policy::build(&catalog, &Desired::of(config).selection(), config, &[]);
        let with_ssh = build(&config());
        let mut cut = config();
        cut.management.cidrs.clear();
        let without = build(&cut);
        let ssh = ChangeOptions {
            ssh: Some(SshSession {
                client: "192.0.2.10".parse().unwrap(),
                server_port: 22,
            }),
            ..ChangeOptions::default()
        };
        // A change that keeps the session is admitted, with nothing to warn of.
        assert_eq!(admit("this change", None, &ssh, &with_ssh, &with_ssh), Ok(vec![]));
        // One that cuts it is refused, and admitted with --confirm or --force, warned.
        let err = admit("this change", None, &ssh, &with_ssh, &without).unwrap_err();
        assert!(
            err.starts_with(
                "this change would cut off your SSH session from 192.0.2.10 to port 22: repeat it with --confirm"
            ),
            "{err}"
        );
        for options in [
            ChangeOptions {
                confirm_secs: Some(60),
                ..ssh.clone()
            },
            ChangeOptions {
                force: true,
                ..ssh.clone()
            },
        ] {
            let warnings = admit("this catalog", None, &options, &with_ssh, &without).unwrap();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].starts_with("this catalog would cut off"), "{warnings:?}");
        }
        // Outside an SSH session nothing is cut.
        assert_eq!(
            admit("this change", None, &ChangeOptions::default(), &with_ssh, &without),
            Ok(vec![])
        );
        // A window out of range, and a change while another awaits confirmation.
        for secs in [0, MAX_CONFIRM_SECS + 1] {
            let options = ChangeOptions {
                confirm_secs: Some(secs),
                ..ChangeOptions::default()
            };
            let err = admit("this change", None, &options, &with_ssh, &with_ssh).unwrap_err();
            assert!(err.starts_with("--confirm takes 1 to"), "{err}");
        }
        let pending = Pending {
            previous: Desired::of(&config()),
            deadline_ms: now_ms() + 30_000,
            catalog_rollback: false,
        };
        let err = admit("this change", Some(&pending), &ssh, &with_ssh, &with_ssh).unwrap_err();
        assert!(
            err.starts_with("a change awaits confirmation (it rolls back in"),
            "{err}"
        );
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
            (
                "metrics",
                Box::new(|c: &mut Config| c.metrics = Some("127.0.0.1:9464".parse().unwrap())),
            ),
            (
                "socket_group",
                Box::new(|c: &mut Config| c.socket_group = Some("adm".into())),
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
