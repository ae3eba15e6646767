//! The container test-systemd boots: a Debian tree made by mmdebstrap, booted by
//! systemd-nspawn with systemd as PID 1 in a network namespace of the test's, and
//! commands run inside it. Everything goes when it is dropped, on failure too.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use super::Unable;
use crate::common::netns::Netns;

/// The root file system of the container, removed on drop (unless it is `--tree`'s).
pub struct Tree {
    pub dir: tempfile::TempDir,
    pub kept: Option<PathBuf>,
}

impl Tree {
    pub fn root(&self) -> PathBuf {
        self.kept.clone().unwrap_or_else(|| self.dir.path().join("root"))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // No mount may be left in the tree before it is removed (nspawn unmounts its
        // own; this is for a crash in between).
        let root = self.root();
        if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
            let mut under: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| Path::new(m).starts_with(&root))
                .collect();
            under.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in under {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
    }
}

/// The line of mmdebstrap's output that says why it failed: apt's "Failed to fetch"
/// (no mirror) rather than its own closing "E: mmdebstrap failed to run".
pub fn mmdebstrap_failure(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    let telling = errors
        .iter()
        .find(|l| l.contains("Failed to fetch") || l.contains("Unable to") || l.contains("Could not"))
        .or(errors.first())
        .copied()
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()));
    telling.map_or_else(|| "no output".to_string(), |l| l.trim().to_string())
}

/// `apt-get install`, with `apt-get update` first when the lists are too old or empty
/// (a fresh machine has none) for it to find the packages.
pub fn apt_install(packages: &[&str]) -> bool {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    install()
        || (Command::new("apt-get")
            .args(["update", "-qq"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && install())
}

pub fn has_command(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// The booted container: systemd-nspawn, and the PID of the container's systemd.
/// Dropping it powers the container off (then kills it if it does not stop).
pub struct Container {
    nspawn: Child,
    pub leader: u32,
    log: PathBuf,
}

impl Container {
    pub fn boot(root: &Path, netns: &Netns, log: &Path) -> Result<Container, Unable> {
        let log_file = fs::File::create(log).map_err(|e| Unable(format!("cannot write {}: {e}", log.display())))?;
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(root)
            .args([
                "--boot",
                // This host's PID 1 may not be systemd, and has no D-Bus to register with.
                "--register=no",
                "--keep-unit",
                "--quiet",
                // The daemon's capabilities on top of nspawn's default set (which has
                // CAP_SYS_ADMIN, for the container's own mounts, but not these; nor
                // CAP_NET_ADMIN when the network namespace is given by path).
                "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
                // nspawn's own seccomp filter refuses bpf(2) (EPERM) to everything the
                // container's systemd starts; without this the unit's daemon cannot
                // create a map, whatever its own sandbox allows.
                "--system-call-filter=bpf",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
            ])
            .arg(format!("--machine={}", netns.name))
            .arg(format!("--network-namespace-path={}", netns.path().display()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| Unable(e.to_string()))?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| Unable(format!("cannot run systemd-nspawn: {e}")))?;
        let mut container = Container {
            nspawn,
            leader: 0,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // The leader: nspawn's child, once it has become systemd.
        while container.leader == 0 {
            if let Ok(Some(status)) = container.nspawn.try_wait() {
                return Err(Unable(format!(
                    "systemd-nspawn exited ({status}) before systemd ran: {}",
                    container.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(Unable(format!(
                    "systemd did not start in the container within 60 s: {}",
                    container.log_tail()
                )));
            }
            let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children", pid = container.nspawn.id()))
                .unwrap_or_default();
            for pid in children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd") {
                    container.leader = pid;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // systemctl answers once systemd is up; `--wait` returns when boot is done.
        let state = loop {
            let out = container
                .command("systemctl", &["is-system-running", "--wait"])
                .output();
            match out {
                Ok(out) if !out.stdout.is_empty() => break String::from_utf8_lossy(&out.stdout).trim().to_string(),
                _ if Instant::now() > deadline => {
                    return Err(Unable(format!(
                        "systemd in the container did not finish booting within 60 s: {}",
                        container.log_tail()
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        if state != "running" && state != "degraded" {
            return Err(Unable(format!("the container's systemd is {state} after boot")));
        }
        Ok(container)
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }

    /// A command run inside the container: its namespaces (mount, PID, network, ...) and
    /// root, as root.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.leader.to_string())
            .args(["--all", "--", program])
            .args(args)
            .stdin(Stdio::null())
            .env("SYSTEMD_PAGER", "")
            .env("PAGER", "cat")
            .env("SYSTEMD_COLORS", "0");
        c
    }

    /// Runs it inside, returns (exit code, stdout, stderr).
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = self
            .command(program, args)
            .output()
            .with_context(|| format!("cannot run {program} in the container"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs it inside and wants exit 0; returns stdout.
    pub fn ok(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let (code, out, err) = self.run(program, args)?;
        ensure!(
            code == 0,
            "`{program} {}` in the container exited {code}: {}{}",
            args.join(" "),
            out.trim(),
            err.trim()
        );
        Ok(out)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.leader != 0 {
            // SIGRTMIN+4 asks systemd to power off.
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(self.leader as i32, libc::SIGRTMIN() + 4) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("test-systemd: the container did not power off in 20 s: killing it");
        if self.leader != 0 {
            // SAFETY: as above.
            unsafe { libc::kill(self.leader as i32, libc::SIGKILL) };
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
