//! The real daemon as a child process in a test's namespace, killed on drop (pass or
//! fail), with its log at hand.

#![allow(dead_code)]

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use super::netns::Netns;

pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `bin daemon --config config` in `ns`, logging into `log_dir`, and waits
    /// until it is ready (what it tells systemd): enforcing, its control socket and its
    /// metrics endpoint answering. ("enforcing" alone comes before the metrics
    /// endpoint is bound: a scrape right after it was refused on a busy machine.)
    pub fn start(ns: &Netns, bin: &Path, config: &Path, log_dir: &Path) -> Daemon {
        Daemon::start_env(ns, bin, config, log_dir, &[])
    }

    /// `start`, with `env` set for the daemon (`LIBXDP_BPFFS` for a test's own libxdp
    /// pins).
    pub fn start_env(ns: &Netns, bin: &Path, config: &Path, log_dir: &Path, env: &[(&str, &Path)]) -> Daemon {
        let mut d = Daemon::spawn_env(ns, bin, config, log_dir, env);
        // Long enough for an emulated machine; a start that works here takes < 1 s.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !d.log().contains("daemon ready") {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("the daemon exited with {status}:\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "the daemon did not start:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The daemon's process, started and not waited for (for what a test does while it
    /// starts).
    pub fn spawn_env(ns: &Netns, bin: &Path, config: &Path, log_dir: &Path, env: &[(&str, &Path)]) -> Daemon {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let log = log_dir.join(format!("daemon-{}.log", NEXT.fetch_add(1, Ordering::Relaxed)));
        let mut command = ns.command(bin.to_str().expect("a UTF-8 path"));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .args(["daemon", "--config"])
            .arg(config)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create the daemon's log"))
            .spawn()
            .expect("start the daemon");
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("kill the daemon");
        self.child.wait().expect("reap the daemon");
    }

    /// nsenter execs the daemon, so the child is the daemon itself.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory preconditions; the pid is our live child's.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    /// Waits up to `within` until `text` is in the log `count` times.
    pub fn wait_log_count(&self, text: &str, count: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.log().matches(text).count() < count {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Waits up to `within` for `text` in the log.
    pub fn wait_log(&self, text: &str, within: Duration) -> bool {
        self.wait_log_count(text, 1, within)
    }

    /// The daemon's process id (nsenter execs it, so it is the child's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
