//! One test world for the daemon's end-to-end tests: a veth pair between two
//! namespaces, a small catalog page whose regions list documentation addresses the
//! peer really holds (so a toggle is judged by traffic), a config written for it, the
//! daemon's state and socket in a temporary directory, and helpers to run the CLI and
//! read its answers. Everything is removed when the world is dropped.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    PinDir,
    config::ConfigBuilder,
    daemon::Daemon,
    netns::{Netns, PEER_V4, Pair, Servers, sa, tcp_connects},
};

/// Portal, listed by both EU1 and EU2 (like 13.80.125.22 on the real page).
pub const SHARED: &str = "198.51.100.10";
/// Portal, EU1 only.
pub const EU1_ONLY: &str = "198.51.100.20";
/// Portal, EU2 only.
pub const EU2_ONLY: &str = "198.51.100.30";
/// Portal, US1 only.
pub const US1_ONLY: &str = "203.0.113.70";
/// EU2's app connector: comes in on tcp/443 (ingress).
pub const EU2_CONNECTOR: &str = "198.51.100.50";
/// Listed by nothing: must never pass.
pub const UNLISTED: &str = "203.0.113.10";
pub const PEER_ADDRS: [&str; 6] = [SHARED, EU1_ONLY, EU2_ONLY, US1_ONLY, EU2_CONNECTOR, UNLISTED];

/// How long an allowed probe may take (it answers in well under a millisecond), and how
/// long a blocked one is waited for.
pub const PASS_WAIT: Duration = Duration::from_secs(2);
pub const BLOCK_WAIT: Duration = Duration::from_millis(400);

/// The test catalog: the seven sections the parser requires, in the layout of later
/// versions of the page, three data centers, documentation addresses only.
pub const PAGE: &str = r#"---
title: Network requirements
ms.date: 01/01/2024
---

# Network requirements

A test page in the layout of the service's page, with documentation addresses only.

## Portal access

To use the portal, add **outbound port 443** for the following IP addresses and DNS names to your firewall's allowlist:

```ini
portal.example.com
```

Additionally, the following items should be allowed, depending on which data center you use:

|Data center|IP addresses|DNS name|
|----|----|----|
|US1 (West US 2)|203.0.113.70|\*.us1.portal.example.com|
|EU1 (West Europe)|198.51.100.10, 198.51.100.20|\*.eu1.portal.example.com|
|EU2 (North Europe)|198.51.100.10, 198.51.100.30|\*.eu2.portal.example.com|

## Access and session controls

To enable the reverse proxy, add **outbound port 443** for the following DNS names to your firewall's allowlist:

|Data center|IP addresses|DNS name|
|----|----|----|
|US1 (West US 2)|203.0.113.71|\*.us1.proxy.example.com|
|EU1 (West Europe)|203.0.113.72|\*.eu1.proxy.example.com|
|EU2 (North Europe)|203.0.113.73|\*.eu2.proxy.example.com|

## SIEM agent connection

To enable the service to connect to your SIEM, add **outbound port 443** for the following IP addresses to your firewall's allowlist:

|Data center|IP addresses|
|----|----|
|US1 (West US 2)|203.0.113.74|
|EU1 (West Europe)|203.0.113.75|
|EU2 (North Europe)|203.0.113.76|

## App connector

To connect to third-party apps, enable the service to connect from these IP addresses:

|Data center|IP addresses|
|----|----|
|US1 (West US 2)|203.0.113.77|
|EU1 (West Europe)|203.0.113.78|
|EU2 (North Europe)|198.51.100.50|

## Third-party DLP integration

To integrate with external DLP solutions, enable the service to connect from these IP addresses:

|Data center|IP addresses|
|----|----|
|US1 (West US 2)|203.0.113.80|

## Mail server

To enable notifications to be sent, add these IP addresses to your anti-spam allowlist:

- 203.0.113.192/28

## Log collector

To enable Cloud Discovery features using a log collector, open the following items:

- Allow the log collector to initiate outbound traffic to the portal on port 443.
- Allow the log collector to initiate outbound traffic to the blob storage on port 443:

  | Data center | URL |
  |-------------|-----|
  | US1 | `https://us1console.blob.example.net/` |
  | EU1 | `https://eu1console.blob.example.net/` |
  | EU2 | `https://eu2console.blob.example.net/` |
"#;

/// What a world's config says besides the fixed parts.
pub struct Setup {
    pub regions: &'static [&'static str],
    pub features: &'static [&'static str],
    /// Lines added verbatim after the top-level keys (`metrics = ...`, tables of a
    /// test's own).
    pub extra: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            regions: &["eu1"],
            features: &["portal"],
            extra: String::new(),
        }
    }
}

/// One test's world: the namespaces, its pins, its directory with the config, the
/// catalog page, the state and the socket.
pub struct World {
    /// The `allowgate` binary the world runs (a test's `env!("CARGO_BIN_EXE_allowgate")`).
    pub bin: PathBuf,
    pub pair: Pair,
    pub pins: PinDir,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// What `config` was last written from.
    builder: std::sync::Mutex<ConfigBuilder>,
}

impl World {
    /// The world of the test page (`PAGE`, as the catalog): the peer holds
    /// `PEER_ADDRS`, the config selects `setup`'s regions and features.
    pub fn new(bin: &str, setup: Setup) -> World {
        World::edited(bin, setup, |config| config)
    }

    /// `Setup::default()`'s world whose control socket `group` may use (`socket_group`).
    pub fn for_group(bin: &str, group: &crate::TempGroup) -> World {
        World::edited(bin, Setup::default(), |c| c.key("socket_group", group.name.as_str()))
    }

    /// `new`'s world, its config then `edit`ed (a test's own keys and entries).
    pub fn edited(bin: &str, setup: Setup, edit: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> World {
        World::with(bin, &PEER_ADDRS, |world, config| {
            edit(
                config
                    .catalog(&world.page())
                    .regions(setup.regions)
                    .features(setup.features)
                    .raw(&setup.extra),
            )
        })
    }

    /// A world whose peer holds `peer_addrs`, its config `config` makes of the base
    /// every world shares: the host's end of the veth pair, enforce, the pins, state
    /// and socket in the world's directory, the peer as the resolver, management from
    /// 192.0.2.0/24.
    pub fn with(bin: &str, peer_addrs: &[&str], config: impl FnOnce(&World, ConfigBuilder) -> ConfigBuilder) -> World {
        let pair = Pair::new(peer_addrs);
        let pins = PinDir::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("page.md"), PAGE).unwrap();
        let world = World {
            bin: PathBuf::from(bin),
            config: dir.path().join("config.toml"),
            socket: dir.path().join("control.sock"),
            pair,
            pins,
            dir,
            builder: Default::default(),
        };
        let base = ConfigBuilder::new(&[&world.pair.host_if])
            .mode("enforce")
            .homes(&world.pins.0, &world.state_dir(), &world.socket)
            .dns_servers(&[PEER_V4])
            .management(&["192.0.2.0/24"]);
        let built = config(&world, base);
        world.edit_config(|_| built);
        world
    }

    /// The test page, `PAGE`, in the world's directory.
    pub fn page(&self) -> PathBuf {
        self.dir.path().join("page.md")
    }

    /// Rewrites the config with `edit` applied to what it was last written from.
    pub fn edit_config(&self, edit: impl FnOnce(ConfigBuilder) -> ConfigBuilder) {
        let mut builder = self.builder.lock().unwrap_or_else(|e| e.into_inner());
        *builder = edit(std::mem::take(&mut *builder));
        builder.write(&self.config);
    }

    /// Rewrites the config with `regions` selected.
    pub fn write_config(&self, regions: &[&str]) {
        self.edit_config(|c| c.regions(regions));
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn host(&self) -> &Netns {
        &self.pair.host
    }

    /// TCP servers on :443 of every peer address.
    pub fn servers(&self) -> Servers {
        let tcp: Vec<SocketAddr> = PEER_ADDRS.iter().map(|a| sa(a, 443)).collect();
        Servers::start(&self.pair.peer, &tcp, &[])
    }

    /// From the host: does tcp/443 of `addr` answer?
    pub fn passes(&self, addr: &str) -> bool {
        tcp_connects(self.host(), sa(addr, 443), PASS_WAIT)
    }

    pub fn blocked(&self, addr: &str) -> bool {
        !tcp_connects(self.host(), sa(addr, 443), BLOCK_WAIT)
    }

    /// `allowgate ARGS --socket SOCKET`, run in the host namespace, outside any SSH
    /// session (the test runner's own SSH_CONNECTION must not reach the lockout check).
    pub fn cli(&self, args: &[&str]) -> Out {
        self.cli_env(args, &[])
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = self.host().command(self.bin.to_str().expect("a UTF-8 path"));
        cmd.args(args)
            .arg("--socket")
            .arg(&self.socket)
            .env_remove("SSH_CONNECTION");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Out::of(cmd)
    }

    /// `allowgate status --json`, from the daemon or (none answering) from the pins.
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json", "--config", self.config.to_str().unwrap()]);
        assert_eq!(out.code, 0, "status: {out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
    }

    pub fn start_daemon(&self) -> Daemon {
        Daemon::start(self.host(), &self.bin, &self.config, self.dir.path())
    }
}

/// `allowgate events --json` running in the host namespace, its lines on a channel;
/// killed on drop.
pub struct Events {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Events {
    pub fn follow(world: &World) -> Events {
        let mut child = world
            .host()
            .command(world.bin.to_str().expect("a UTF-8 path"))
            .args(["events", "--json", "--socket"])
            .arg(&world.socket)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run allowgate events");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Events { child, lines }
    }

    /// The events that arrived within `wait`.
    pub fn drain(&self, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            got.push(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("events --json printed a non-JSON line ({e}): {line}")),
            );
        }
        got
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A finished command: exit code, output, how long it took.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    pub fn of(mut cmd: Command) -> Out {
        let started = Instant::now();
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "the command failed: {self}");
        self
    }

    /// Exit 1 with one line on stderr that holds every one of `words`.
    pub fn fails_saying(self, words: &[&str]) -> Out {
        assert_eq!(self.code, 1, "expected exit 1: {self}");
        assert_eq!(self.stderr.lines().count(), 1, "expected one line on stderr: {self}");
        for w in words {
            assert!(self.stderr.contains(w), "stderr does not say {w:?}: {self}");
        }
        self
    }

    /// The "applied in X ms" of a change, in milliseconds.
    pub fn applied_ms(&self) -> f64 {
        let rest = self
            .stdout
            .split("applied in ")
            .nth(1)
            .unwrap_or_else(|| panic!("no \"applied in\": {self}"));
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad \"applied in\": {self}"))
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Writes `bytes` to the socket (then shuts down writing when `shutdown`), and reads
/// every line of the answer until the daemon closes or `timeout` passes. A write the
/// daemon cut short is not an error here: what it answered is what counts.
pub fn raw(socket: &Path, bytes: &[u8], shutdown: bool, timeout: Duration) -> Vec<String> {
    let mut s = UnixStream::connect(socket).expect("connect to the control socket");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(bytes);
    if shutdown {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    read_lines(&mut s)
}

pub fn read_lines(s: &mut UnixStream) -> Vec<String> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            // A reset after the answer (the daemon closed with our request unread) or
            // the timeout: the lines so far are the answer.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&all).lines().map(str::to_string).collect()
}

/// The status object through the socket by hand, or `None` when nothing answers.
pub fn request_status(socket: &Path) -> Option<Value> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"{\"version\":1,\"request\":{\"verb\":\"status\"}}\n")
        .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let v: Value = serde_json::from_str(&line).ok()?;
    (v["response"] == "status").then(|| v["status"].clone())
}

/// Polls status until its regions are `want` (sorted), or `deadline` passes.
pub fn wait_regions(world: &World, want: &[&str], deadline: Instant) -> bool {
    loop {
        if regions(&world.status()) == strings(want) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn generation(status: &Value) -> u64 {
    status["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no generation in {status}"))
}

pub fn regions(status: &Value) -> Vec<String> {
    let mut r: Vec<String> = status["regions"]
        .as_array()
        .unwrap_or_else(|| panic!("no regions in {status}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    r.sort();
    r
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn median(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `allowgate ARGS --socket SOCKET` as `nobody`, with `groups` as its supplementary
/// groups.
pub fn as_nobody(world: &World, args: &[&str], groups: Option<u32>) -> Out {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup"]);
    match groups {
        Some(gid) => cmd.arg(format!("--groups={gid}")),
        None => cmd.arg("--clear-groups"),
    };
    cmd.arg(&world.bin)
        .args(args)
        .arg("--socket")
        .arg(&world.socket)
        .env_remove("SSH_CONNECTION");
    Out::of(cmd)
}

/// Lets everyone reach the socket's file: the directory is traversable and the socket
/// writable, so what refuses is the daemon's check of the peer's credentials.
pub fn open_up(world: &World) {
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&world.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
}

/// Runs `args` as nobody until its refusal comes with a message holding `want` (at
/// most 10 times): each run must fail in one line and be counted as a refusal in the
/// daemon's log, so it is the daemon's check of the peer's credentials that refuses.
/// (Retried because the message itself can be lost to a race, which
/// `the_refusal_reaches_an_unprivileged_client_however_the_race_goes` shows.)
pub fn refused(world: &World, daemon: &Daemon, args: &[&str], groups: Option<u32>, want: &str) {
    let mut said = Vec::new();
    for _ in 0..10 {
        let before = daemon.log().matches("refused an unprivileged client").count();
        let out = as_nobody(world, args, groups);
        assert_eq!(out.code, 1, "{args:?} as nobody: {out}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?} as nobody: {out}");
        assert!(
            daemon.wait_log_count("refused an unprivileged client", before + 1, Duration::from_secs(5)),
            "{args:?}: the daemon did not log the refusal:\n{}",
            daemon.log()
        );
        if out.stderr.contains(want) {
            return;
        }
        said.push(out.stderr);
    }
    panic!("{args:?} as nobody was never told {want:?}: {said:#?}");
}
