//! The bench's namespaces and bpffs directory, removed on drop (on errors and ctrl-c
//! too), and the commands it runs in them.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    thread::JoinHandle,
};

use anyhow::{Context as _, anyhow, bail};

/// Whether `tool` is on the PATH (it runs at all; `xdp-filter help` exits non-zero).
pub(crate) fn tool_present(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Runs a command; its stderr becomes the one-line error when it fails.
pub(crate) fn run_cmd(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{:?} {:?} failed: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            err.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace of the bench, deleted (with its veth ends, taps, nftables
/// tables and conntrack entries) on drop.
pub(crate) struct Namespace {
    pub(crate) name: String,
}

impl Namespace {
    pub(crate) fn create(name: String) -> anyhow::Result<Namespace> {
        // An existing namespace of this name is not ours to remove (another run, or one
        // killed hard): say so rather than take it over.
        if Path::new("/run/netns").join(&name).exists() {
            bail!(
                "namespace {name} exists already: another bench running, or left by a killed one (`ip netns del {name}`)"
            );
        }
        run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Namespace { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub(crate) fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run_cmd(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `nsenter --net`, which keeps /sys/fs/bpf visible (`ip netns exec` remounts /sys).
    pub(crate) fn nsenter(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display())).arg("--").arg(program);
        c
    }

    /// Writes `value` to /sys/class/net/`dev`/`file`, which shows this namespace's
    /// devices only in a sysfs mounted from inside it (`ip netns exec` does that).
    pub(crate) fn write_sysfs(&self, dev: &str, file: &str, value: &str) -> anyhow::Result<()> {
        run_cmd(Command::new("ip").args([
            "netns",
            "exec",
            &self.name,
            "sh",
            "-c",
            &format!("echo {value} > /sys/class/net/{dev}/{file}"),
        ]))
        .map(drop)
    }

    /// `ethtool` in this namespace (it asks the kernel through a socket of its own).
    pub(crate) fn ethtool(&self, args: &[&str]) -> anyhow::Result<()> {
        run_cmd(self.nsenter("ethtool").args(args)).map(drop)
    }

    /// Runs `f` on a thread that joined this namespace.
    pub(crate) fn spawn<F, R>(&self, f: F) -> JoinHandle<anyhow::Result<R>>
    where
        F: FnOnce() -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path();
        std::thread::spawn(move || {
            enter_netns(&path)?;
            f()
        })
    }

    /// Runs `f` in this namespace on a thread of its own, and waits for it.
    pub(crate) fn run<F, R>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce() -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.spawn(f)
            .join()
            .map_err(|_| anyhow!("a thread in namespace {} panicked", self.name))?
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Moves the calling thread into the namespace at `path`.
pub(crate) fn enter_netns(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: a valid namespace fd; only the calling thread moves.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// The bench's bpffs directory: allowgate's pins and libxdp's (LIBXDP_BPFFS), removed
/// on drop.
pub(crate) struct BpffsDir(pub(crate) PathBuf);

impl BpffsDir {
    pub(crate) fn create(path: PathBuf) -> anyhow::Result<BpffsDir> {
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(BpffsDir(path))
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
