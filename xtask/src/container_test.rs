//! `cargo xtask test-container`: the image of packaging/Containerfile, built with podman
//! from the Debian package, run as the DaemonSet runs it (the host's network, the four
//! capabilities, bpffs and state from the host, the config mounted read-only), against
//! a veth pair between two namespaces of ours with the demo's probes.
//!
//! `cargo xtask check-manifests`: packaging/kubernetes/ against the Kubernetes API
//! schemas, offline, with the `kubernetes-validate` package from PyPI in a virtualenv
//! made for the run.
//!
//! No image registry is reachable from the machines this is built on, so the base image
//! is made here: mmdebstrap's minimal Debian, imported into podman. Everything made (the
//! images, the container, the namespaces and veths, the pins) goes when it ends, on
//! failure too.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::common::{
    PinDir,
    config::{Allow, ConfigBuilder},
    netns::{Pair, Servers, sa, tcp_connects, udp_echoes},
};

const ALLOWED_V4: &str = "198.51.100.10";
const BLOCKED_V4: &str = "203.0.113.10";
const ALLOWED_V6: &str = "2001:db8:b::10";
const BLOCKED_V6: &str = "2001:db8:c::10";
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// Pinned: the schemas it bundles are what the manifests are checked against.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// The oldest Kubernetes the manifests claim to work with, and the newest the
/// validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this .deb instead of building one with `cargo xtask deb`.
    #[arg(long, value_name = "FILE")]
    deb: Option<PathBuf>,
    /// When podman cannot run containers here, say why in one line and exit 0.
    #[arg(long)]
    skip_if_unable: bool,
    /// The Debian mirror the base image is made from.
    #[arg(long, value_name = "URL", default_value = "http://deb.debian.org/debian")]
    mirror: String,
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn check(what: &str, ok: bool) -> anyhow::Result<()> {
    ensure!(ok, "{what}: no");
    println!("ok  {what}");
    Ok(())
}

fn has_command(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

fn apt_install(packages: &[&str]) -> bool {
    println!("test-container: installing {}", packages.join(" "));
    crate::systemd_test::apt_install(packages)
}

/// podman with the flags this machine needs: runc where crun refuses the host (crun
/// will not run on a "hybrid" cgroup layout, cgroup v2 controllers next to v1's).
fn podman() -> Command {
    let mut c = Command::new("podman");
    if hybrid_cgroups() {
        c.args(["--runtime", "runc"]);
    }
    c
}

fn hybrid_cgroups() -> bool {
    Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists()
}

/// Resource limits the container can be given here: podman raises RLIMIT_NOFILE and
/// RLIMIT_NPROC by default, which fails where the bounding set lacks CAP_SYS_RESOURCE
/// (this VM's does): this process's limits, and no more than 32768, which runc's own
/// starting limits allow (65536 was refused for RLIMIT_NPROC here).
fn limits() -> Vec<String> {
    const MAX: libc::rlim_t = 32768;
    let mut out = Vec::new();
    for (name, resource) in [("nofile", libc::RLIMIT_NOFILE), ("nproc", libc::RLIMIT_NPROC)] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(resource, &mut lim) } == 0 {
            let show = |v: libc::rlim_t| {
                if v == libc::RLIM_INFINITY {
                    "-1".to_string()
                } else {
                    v.to_string()
                }
            };
            let (soft, hard) = (lim.rlim_cur.min(MAX), lim.rlim_max.min(MAX));
            out.push(format!("--ulimit={name}={}:{}", show(soft.min(hard)), show(hard)));
        }
    }
    out
}

/// Where podman keeps its default seccomp profile.
const DEFAULT_SECCOMP: &str = "/usr/share/containers/seccomp.json";

/// podman's default seccomp profile, changed to allow bpf(2) to a process holding
/// CAP_BPF, when it allows it only with CAP_SYS_ADMIN (podman 4.3's on Debian 12 does:
/// there the daemon's first map fails with EPERM). None when the default profile
/// already allows it, or there is no profile to start from.
fn seccomp_with_bpf(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Ok(text) = fs::read_to_string(DEFAULT_SECCOMP) else {
        return Ok(None);
    };
    let mut profile: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{DEFAULT_SECCOMP} is not JSON"))?;
    let rules = profile["syscalls"]
        .as_array_mut()
        .with_context(|| format!("{DEFAULT_SECCOMP} has no syscalls list"))?;
    let names_bpf = |r: &serde_json::Value| r["names"].as_array().is_some_and(|n| n.iter().any(|x| x == "bpf"));
    let caps = |r: &serde_json::Value, key: &str| r[key]["caps"].clone();
    if rules.iter().any(|r| {
        names_bpf(r) && r["action"] == "SCMP_ACT_ALLOW" && caps(r, "includes") == serde_json::json!(["CAP_BPF"])
    }) {
        return Ok(None);
    }
    // The rule that refuses bpf without CAP_SYS_ADMIN would override the new one.
    for rule in rules.iter_mut() {
        if names_bpf(rule)
            && rule["action"] != "SCMP_ACT_ALLOW"
            && let Some(names) = rule["names"].as_array_mut()
        {
            names.retain(|n| n != "bpf");
        }
    }
    rules.push(serde_json::json!({
        "names": ["bpf"],
        "action": "SCMP_ACT_ALLOW",
        "args": [],
        "comment": "allowgate: bpf(2) with CAP_BPF, as newer default profiles allow it",
        "includes": {"caps": ["CAP_BPF"]},
        "excludes": {}
    }));
    let path = dir.join("seccomp-bpf.json");
    fs::write(&path, serde_json::to_vec_pretty(&profile)?)?;
    Ok(Some(path))
}

fn run_ok(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last non-empty line of a command's error output.
fn last_line(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// Images and a container that podman removes on drop.
#[derive(Default)]
struct Podman {
    images: Vec<String>,
    container: Option<String>,
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(name) = self.container.take() {
            let _ = podman()
                .args(["rm", "--force", "--time", "5", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for image in self.images.drain(..).rev() {
            let _ = podman()
                .args(["rmi", "--force", &image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    match test(args)? {
        None => {
            println!("\ntest-container: passed in {:.0} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Some(why) if args.skip_if_unable => {
            println!("test-container: skipped, podman cannot run the test container here: {why}");
            Ok(())
        }
        Some(why) => bail!("podman cannot run the test container here: {why}"),
    }
}

/// Ok(Some(why)) when this machine cannot run it; Err when the test fails.
fn test(args: &Args) -> anyhow::Result<Option<String>> {
    if !crate::is_root() {
        return Ok(Some("it needs root (namespaces, BPF, rootful podman)".into()));
    }
    let mut missing = Vec::new();
    for (tool, package) in [("podman", "podman"), ("mmdebstrap", "mmdebstrap")] {
        if !has_command(tool) {
            missing.push(package);
        }
    }
    if hybrid_cgroups() && !has_command("runc") {
        missing.push("runc");
    }
    if !missing.is_empty() && !apt_install(&missing) {
        return Ok(Some(format!("`apt-get install {}` failed", missing.join(" "))));
    }

    let deb = match &args.deb {
        Some(deb) => deb.clone(),
        None => {
            step("the package: cargo xtask deb");
            crate::deb::package(true, &crate::deb::default_out())?
        }
    };
    let tag = crate::common::unique("t");
    let mut podman_guard = Podman::default();

    step("a base image: mmdebstrap's minimal Debian, imported into podman");
    let t = Instant::now();
    let base = format!("localhost/allowgate-test-base:{tag}");
    let mut debootstrap = Command::new("mmdebstrap")
        // minbase has the package's dependencies (libc6, libgcc-s1), so the image builds
        // without a network (the Containerfile fetches lists only if one lacks).
        .args(["--variant=minbase", "--format=tar", "bookworm", "-"])
        .arg(&args.mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run mmdebstrap")?;
    let tar = debootstrap.stdout.take().expect("piped");
    // A failed import may still leave an image by that name: removed with the rest.
    podman_guard.images.push(base.clone());
    let import = podman()
        .args(["import", "-", &base])
        .stdin(tar)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let made = debootstrap.wait_with_output()?;
    if !made.status.success() {
        return Ok(Some(format!(
            "mmdebstrap from {} failed: {}",
            args.mirror,
            crate::systemd_test::mmdebstrap_failure(&made.stderr)
        )));
    }
    let import = import.context("cannot run podman import")?;
    if !import.status.success() {
        return Ok(Some(format!("podman import failed: {}", last_line(&import.stderr))));
    }
    println!("made in {:.0} s", t.elapsed().as_secs_f64());
    // Can podman run anything at all here?
    let out = podman()
        .args(["run", "--rm", "--network", "none"])
        .args(limits())
        .args([&base, "true"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Ok(Some(format!(
            "podman run of a plain Debian image fails: {}",
            last_line(&out.stderr)
        )));
    }

    step("the image: podman build -f packaging/Containerfile");
    let context = tempfile::tempdir()?;
    let name = deb.file_name().context("the package has a file name")?;
    fs::copy(&deb, context.path().join(name)).context("cannot copy the package into the build context")?;
    let image = format!("localhost/allowgate-test:{tag}");
    run_ok(
        podman()
            .args([
                "build",
                "--quiet",
                "--build-arg",
                &format!("BASE={base}"),
                "-t",
                &image,
                "-f",
            ])
            .arg(crate::workspace().join("packaging/Containerfile"))
            .arg(context.path()),
        "podman build",
    )?;
    podman_guard.images.push(image.clone());

    step("namespaces: the node's and a peer's, a veth pair between them (documentation addresses)");
    let pair = Pair::new(&[ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6]);
    let tcp: Vec<_> = [ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6]
        .iter()
        .map(|a| sa(a, 443))
        .collect();
    let udp: Vec<_> = [ALLOWED_V4, BLOCKED_V4].iter().map(|a| sa(a, 7000)).collect();
    let _servers = Servers::start(&pair.peer, &tcp, &udp);
    for addr in &tcp {
        ensure!(
            tcp_connects(&pair.host, *addr, PROBE_TIMEOUT),
            "{addr} does not answer before allowgate runs: the test set-up is broken"
        );
    }
    let pins = PinDir::with_prefix("allowgate-ctest-");
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    ConfigBuilder::new(&[&pair.host_if])
        .comment("test-container: the DaemonSet's shape on the demo's namespaces.")
        .mode("enforce")
        .regions(&["eu1"])
        .features(&["portal"])
        .key("bpffs_dir", &pins.0)
        .dns_servers(&["192.0.2.2"])
        .set("dns", "learn", false)
        .management(&["192.0.2.0/24"])
        .allow(
            Allow::egress(&format!("{ALLOWED_V4}/32"), "tcp")
                .ports(&["443"])
                .comment("stands in for a catalog address"),
        )
        .allow(Allow::egress("2001:db8:b::/48", "tcp").ports(&["443"]))
        .allow(Allow::egress(&format!("{ALLOWED_V4}/32"), "udp").ports(&["7000"]))
        .write(&config);
    let state = dir.path().join("state");
    fs::create_dir(&state)?;

    step("run: the host's (here: the node namespace's) network, four capabilities, bpffs and state from the host");
    let container = format!("allowgate-test-{tag}");
    podman_guard.container = Some(container.clone());
    // The runtime's default seccomp profile, unless it refuses bpf(2) to CAP_BPF.
    let mut seccomp = Vec::new();
    if let Some(path) = seccomp_with_bpf(dir.path())? {
        println!(
            "podman's default seccomp profile allows bpf(2) only with CAP_SYS_ADMIN: running with a copy \
             that allows it with CAP_BPF"
        );
        seccomp = vec!["--security-opt".to_string(), format!("seccomp={}", path.display())];
    }
    run_ok(
        podman()
            .args(["run", "--detach", "--name", &container])
            .args(&seccomp)
            .arg("--network")
            .arg(format!("ns:{}", pair.host.path().display()))
            .args([
                "--cap-drop",
                "all",
                "--cap-add",
                "CAP_BPF,CAP_NET_ADMIN,CAP_PERFMON,CAP_CHOWN,CAP_NET_RAW",
            ])
            .args(["--security-opt", "no-new-privileges", "--read-only"])
            .args(["--tmpfs", "/run/allowgate:mode=0755"])
            .args(limits())
            .args(["-v", "/sys/fs/bpf:/sys/fs/bpf"])
            .arg("-v")
            .arg(format!("{}:/var/lib/allowgate", state.display()))
            .arg("-v")
            .arg(format!("{}:/etc/allowgate/config.toml:ro", config.display()))
            .arg(&image),
        "podman run",
    )?;
    // The DaemonSet's readiness probe: `allowgate status` exits 0 once enforcing.
    let t = Instant::now();
    let ready = loop {
        let ok = podman()
            .args(["exec", &container, "allowgate", "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok || t.elapsed() > Duration::from_secs(30) {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !ready {
        let logs = podman().args(["logs", &container]).output()?;
        bail!(
            "the readiness probe (`allowgate status`) never passed in 30 s; the container's log:\n{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    println!(
        "ok  ready (the readiness probe passes) after {:.1} s",
        t.elapsed().as_secs_f64()
    );

    step("the demo's probes, from the node namespace to the peer");
    let probes = |when: &str| -> anyhow::Result<()> {
        for (addr, allowed) in [
            (ALLOWED_V4, true),
            (BLOCKED_V4, false),
            (ALLOWED_V6, true),
            (BLOCKED_V6, false),
        ] {
            let got = tcp_connects(&pair.host, sa(addr, 443), PROBE_TIMEOUT);
            check(
                &format!(
                    "{when}: tcp {addr}:443 {}",
                    if allowed { "connects" } else { "is blocked" }
                ),
                got == allowed,
            )?;
        }
        for (addr, allowed) in [(ALLOWED_V4, true), (BLOCKED_V4, false)] {
            let got = udp_echoes(&pair.host, sa(addr, 7000), PROBE_TIMEOUT);
            check(
                &format!(
                    "{when}: udp {addr}:7000 {}",
                    if allowed { "echoes" } else { "is blocked" }
                ),
                got == allowed,
            )?;
        }
        Ok(())
    };
    probes("running")?;
    let status = run_ok(
        podman().args(["exec", &container, "allowgate", "status", "--json"]),
        "allowgate status --json in the container",
    )?;
    let status: serde_json::Value = serde_json::from_str(&status).context("status --json is not JSON")?;
    check(
        "status --json: enforcing, drops counted",
        status["mode"] == "enforce"
            && status.get("enforcing").is_none_or(|e| e == true)
            && status["counters"]["egress"]["drop"].as_u64().unwrap_or(0) > 0,
    )?;

    step("podman stop: the pinned policy stays enforced");
    run_ok(podman().args(["stop", "--time", "10", &container]), "podman stop")?;
    probes("stopped")?;
    let logs = podman().args(["logs", &container]).output()?;
    let logs = String::from_utf8_lossy(&logs.stderr).into_owned() + &String::from_utf8_lossy(&logs.stdout);
    check(
        "the log says it exits and the policy stays",
        logs.contains("exiting; the policy stays enforced"),
    )?;
    drop(podman_guard);
    drop(pins);
    Ok(None)
}

pub fn check_manifests() -> anyhow::Result<()> {
    let dir = crate::workspace().join("packaging/kubernetes");
    let mut manifests: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    ensure!(!manifests.is_empty(), "no manifests in {}", dir.display());
    let venv = tempfile::tempdir()?;
    step(&format!(
        "{KUBERNETES_VALIDATE} from PyPI, in a virtualenv for this run"
    ));
    run_ok(
        Command::new("python3").args(["-m", "venv"]).arg(venv.path()),
        "python3 -m venv",
    )?;
    run_ok(
        Command::new(venv.path().join("bin/pip")).args(["install", "--quiet", KUBERNETES_VALIDATE]),
        "pip install kubernetes-validate",
    )?;
    for version in KUBERNETES_VERSIONS {
        step(&format!(
            "packaging/kubernetes/*.yaml against Kubernetes {version} (strict)"
        ));
        let out = Command::new(venv.path().join("bin/kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .args(&manifests)
            .output()
            .context("cannot run kubernetes-validate")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        ensure!(
            out.status.success(),
            "the manifests do not validate against Kubernetes {version}"
        );
    }
    Ok(())
}
