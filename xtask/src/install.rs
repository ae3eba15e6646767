//! `cargo xtask install`: the release binary, the systemd unit and, unless one is there
//! already, the example config; then `systemctl daemon-reload` and what to do next.
//!
//! Every destination can be put under another root (`--root DIR`, or `DESTDIR`), to
//! stage a package or to try the install without touching the system; `--dry-run`
//! prints each step and touches nothing.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const UNIT: &str = include_str!("../../packaging/allowgate.service");
const EXAMPLE_CONFIG: &str = include_str!("../../packaging/config.example.toml");
/// The binary path the shipped unit names, replaced by the one under `--prefix`.
const UNIT_BINARY: &str = "/usr/local/bin/allowgate";
const UNIT_PATH: &str = "/etc/systemd/system/allowgate.service";
const CONFIG_PATH: &str = "/etc/allowgate/config.toml";
const STATE_DIR: &str = "/var/lib/allowgate";

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Where the binary goes: PREFIX/bin/allowgate (the unit's ExecStart follows).
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    prefix: PathBuf,
    /// Put every file under DIR instead of / (like DESTDIR; DESTDIR is read when this
    /// is not given). The paths written into the unit stay those of the real system.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print what would be done, and do none of it.
    #[arg(long)]
    dry_run: bool,
}

/// Where everything goes.
#[derive(Debug)]
struct Plan {
    /// The binary to install.
    binary: PathBuf,
    /// `--prefix`, as the installed system sees it.
    prefix: PathBuf,
    /// What every destination is put under (`/` for the system itself).
    root: PathBuf,
    dry_run: bool,
}

impl Plan {
    /// `path` (absolute, as the installed system sees it) under the root.
    fn dest(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn installs_the_system(&self) -> bool {
        self.root == Path::new("/")
    }

    fn step(&self, what: std::fmt::Arguments) {
        if self.dry_run {
            println!("[dry run] would {what}");
        } else {
            println!("{what}");
        }
    }
}

pub fn run(args: &InstallArgs) -> anyhow::Result<()> {
    check_prefix(&args.prefix)?;
    let root = match &args.root {
        Some(root) => root.clone(),
        None => std::env::var_os("DESTDIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| "/".into()),
    };
    let root = if root.is_absolute() {
        root
    } else {
        std::env::current_dir()?.join(root)
    };
    if !args.dry_run && root == Path::new("/") && !crate::is_root() {
        bail!("installing into the system needs root: run it as root, or try `--dry-run` or `--root DIR` first");
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let plan = Plan {
        binary: target.join("release/allowgate"),
        prefix: args.prefix.clone(),
        root,
        dry_run: args.dry_run,
    };

    plan.step(format_args!("build: cargo build --release -p allowgate"));
    if !plan.dry_run {
        let status = crate::cargo()
            .current_dir(workspace)
            .args(["build", "--release", "-p", "allowgate"])
            .status()
            .context("cannot run cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p allowgate failed");
        }
    }
    install(&plan)
}

/// The prefix is written into the unit's ExecStart, which systemd splits on spaces and
/// expands `%` and `$` in: keep it to plain absolute paths.
fn check_prefix(prefix: &Path) -> anyhow::Result<()> {
    let text = prefix
        .to_str()
        .with_context(|| format!("--prefix {} is not UTF-8", prefix.display()))?;
    if !prefix.is_absolute() {
        bail!("--prefix {text} is not an absolute path (the unit's ExecStart needs one)");
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "%$\\\"'".contains(*c))
    {
        bail!("--prefix {text} contains {c:?}, which systemd would read as more than a path: choose another");
    }
    Ok(())
}

/// The shipped unit with ExecStart and ExecReload naming the binary under `prefix`.
pub(crate) fn unit_for(prefix: &Path) -> anyhow::Result<String> {
    let binary = prefix.join("bin/allowgate");
    let mut unit = UNIT.to_string();
    for key in ["ExecStart", "ExecReload"] {
        let from = format!("\n{key}={UNIT_BINARY} ");
        let to = format!("\n{key}={} ", binary.display());
        if unit.matches(&from).count() != 1 {
            bail!(
                "packaging/allowgate.service has no single `{key}={UNIT_BINARY} ` line to point at {}",
                binary.display()
            );
        }
        unit = unit.replacen(&from, &to, 1);
    }
    Ok(unit)
}

/// Writes `contents` to `path` with `mode` whole or not at all: a temporary file beside
/// it, then a rename, which also replaces a binary that is running (writing into it
/// would fail with ETXTBSY).
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("a destination has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .context("a destination has a file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.xtask-install"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // The umask may have narrowed the mode.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot put {} in place", path.display()))
}

fn install(plan: &Plan) -> anyhow::Result<()> {
    let system = |p: &str| PathBuf::from(p);
    let bin = plan.prefix.join("bin/allowgate");
    let bin_dest = plan.dest(&bin);
    plan.step(format_args!(
        "install {} -> {} (0755)",
        plan.binary.display(),
        bin_dest.display()
    ));
    if !plan.dry_run {
        let binary = fs::read(&plan.binary)
            .with_context(|| format!("cannot read the built binary {}", plan.binary.display()))?;
        write_atomically(&bin_dest, &binary, 0o755)?;
    }

    let unit = unit_for(&plan.prefix)?;
    let unit_dest = plan.dest(&system(UNIT_PATH));
    plan.step(format_args!(
        "install the systemd unit -> {} (0644, ExecStart={} ...)",
        unit_dest.display(),
        bin.display()
    ));
    if !plan.dry_run {
        write_atomically(&unit_dest, unit.as_bytes(), 0o644)?;
    }

    // The example also goes beside the docs, so that whoever keeps an older config can
    // see the keys a newer version takes.
    let example_dest = plan.dest(&plan.prefix.join("share/doc/allowgate/config.example.toml"));
    plan.step(format_args!(
        "install the reference example -> {} (0644)",
        example_dest.display()
    ));
    if !plan.dry_run {
        write_atomically(&example_dest, EXAMPLE_CONFIG.as_bytes(), 0o644)?;
    }

    // An operator's config is never overwritten.
    let config_dest = plan.dest(&system(CONFIG_PATH));
    let config_is_new = !config_dest.exists();
    if config_is_new {
        plan.step(format_args!(
            "install the example config -> {} (0640)",
            config_dest.display()
        ));
        if !plan.dry_run {
            let dir = config_dest.parent().expect("the config is in a directory");
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            // create_new: not even a config written a moment ago is replaced.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&config_dest)
                .with_context(|| format!("cannot write {}", config_dest.display()))?;
            f.write_all(EXAMPLE_CONFIG.as_bytes()).and_then(|()| f.sync_all())?;
        }
    } else {
        println!(
            "kept your config {} (the example of this version is {})",
            config_dest.display(),
            example_dest.display()
        );
    }

    let state_dest = plan.dest(&system(STATE_DIR));
    plan.step(format_args!("create {} (0700)", state_dest.display()));
    if !plan.dry_run {
        fs::create_dir_all(&state_dest).with_context(|| format!("cannot create {}", state_dest.display()))?;
        fs::set_permissions(&state_dest, fs::Permissions::from_mode(0o700))?;
    }

    if !plan.installs_the_system() {
        println!(
            "skipped `systemctl daemon-reload`: the files went under {}, not into this system",
            plan.root.display()
        );
    } else if !systemd_runs() {
        println!("skipped `systemctl daemon-reload`: systemd is not running here (PID 1 is not systemd)");
    } else {
        plan.step(format_args!("run systemctl daemon-reload"));
        if !plan.dry_run {
            let status = Command::new("systemctl")
                .arg("daemon-reload")
                .status()
                .context("cannot run systemctl")?;
            if !status.success() {
                bail!("systemctl daemon-reload failed");
            }
        }
    }
    if ["/home", "/root", "/run/user", "/tmp", "/var/tmp"]
        .iter()
        .any(|p| plan.prefix.starts_with(p))
    {
        println!(
            "warning: the unit hides /home, /root and /run/user (ProtectHome=) and has its own /tmp (PrivateTmp=): \
             the service cannot run {}",
            bin.display()
        );
    }

    println!("\nnext:");
    let config = system(CONFIG_PATH);
    if config_is_new {
        println!(
            "  1. edit {}: `interfaces`, `regions`, and the [management] `cidrs` you reach this host from",
            config.display()
        );
        println!(
            "     (it starts in monitor mode: nothing is dropped until `mode = \"enforce\"` or `allowgate mode enforce`)"
        );
    } else {
        println!(
            "  1. check {} against the example for keys this version adds",
            config.display()
        );
    }
    println!(
        "  2. `{} show --config {}` to see what it will allow",
        bin.display(),
        config.display()
    );
    println!("  3. `systemctl enable --now allowgate` (or `systemctl restart allowgate` if it runs already)");
    println!("  4. `allowgate status`, `allowgate events`, `journalctl -u allowgate`");
    Ok(())
}

/// systemd manages this machine: `systemctl` is there and PID 1 is systemd.
fn systemd_runs() -> bool {
    let pid1 = fs::read_to_string("/proc/1/comm")
        .map(|c| c.trim() == "systemd")
        .unwrap_or(false);
    let systemctl = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("systemctl").is_file()));
    pid1 && systemctl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn the_unit_runs_the_binary_under_the_prefix() {
        let unit = unit_for(Path::new("/opt/allowgate")).unwrap();
        assert!(
            unit.contains("\nExecStart=/opt/allowgate/bin/allowgate daemon --config /etc/allowgate/config.toml\n"),
            "{unit}"
        );
        assert!(
            unit.contains("\nExecReload=/opt/allowgate/bin/allowgate reload --config /etc/allowgate/config.toml\n"),
            "{unit}"
        );
        assert!(!unit.contains(UNIT_BINARY));
        assert_eq!(unit_for(Path::new("/usr/local")).unwrap(), UNIT);
    }

    #[test]
    fn prefixes_systemd_would_misread_are_refused() {
        for bad in ["relative", "/opt/my dir", "/opt/100%", "/opt/$HOME", "/opt/a\"b"] {
            assert!(check_prefix(Path::new(bad)).is_err(), "{bad} accepted");
        }
        check_prefix(Path::new("/usr/local")).unwrap();
        check_prefix(Path::new("/opt/allowgate-1.0")).unwrap();
    }

    #[test]
    fn installs_under_a_root_and_keeps_an_existing_config() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("built-allowgate");
        fs::write(&binary, b"#!/bin/sh\necho allowgate\n").unwrap();
        let root = dir.path().join("root");
        let plan = Plan {
            binary: binary.clone(),
            prefix: "/opt/ag".into(),
            root: root.clone(),
            dry_run: false,
        };

        // A dry run touches nothing.
        install(&Plan {
            binary: binary.clone(),
            prefix: "/opt/ag".into(),
            root: root.clone(),
            dry_run: true,
        })
        .unwrap();
        assert!(!root.exists(), "a dry run wrote under {}", root.display());

        install(&plan).unwrap();
        let bin = root.join("opt/ag/bin/allowgate");
        assert_eq!(fs::read(&bin).unwrap(), fs::read(&binary).unwrap());
        assert_eq!(mode_of(&bin), 0o755);
        let unit = root.join("etc/systemd/system/allowgate.service");
        assert!(
            fs::read_to_string(&unit)
                .unwrap()
                .contains("\nExecStart=/opt/ag/bin/allowgate daemon ")
        );
        assert_eq!(mode_of(&unit), 0o644);
        let config = root.join("etc/allowgate/config.toml");
        assert_eq!(fs::read_to_string(&config).unwrap(), EXAMPLE_CONFIG);
        assert_eq!(mode_of(&config), 0o640);
        assert_eq!(mode_of(&root.join("var/lib/allowgate")), 0o700);
        assert!(root.join("opt/ag/share/doc/allowgate/config.example.toml").is_file());

        // Again, over an edited config and a newer binary: the config stays.
        fs::write(&config, "interfaces = [\"eth9\"]\n").unwrap();
        fs::write(&binary, b"newer").unwrap();
        install(&plan).unwrap();
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            "interfaces = [\"eth9\"]\n",
            "the operator's config was replaced"
        );
        assert_eq!(fs::read(&bin).unwrap(), b"newer");
        let leftovers: Vec<_> = walk(&root)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".xtask-install"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
        out
    }
}
