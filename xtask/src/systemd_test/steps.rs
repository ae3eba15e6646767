//! What test-systemd does to the package in the booted container, in the order an
//! operator meets it; each step prints one `ok` line per check and stops at the first
//! that fails.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{
    EXPOSURE_BEFORE, GROUP, HOST_V4, HOST_V6, MEMBER, OTHER, PEER_V4, UNLISTED_V4, check, config,
    container::Container,
    enforcing, generation, journal, pinned,
    probe::{PROBE_TIMEOUT, Prober, probe},
    status_json, step, wait_until,
};
use crate::common::netns::{Pair, sa};

/// The booted container and what the steps share.
pub struct Ctx {
    pub ct: Container,
    pub pair: Pair,
    /// The container's root, as this host sees it.
    pub root: PathBuf,
    /// /etc/allowgate/config.toml, as this host sees it.
    pub conf: PathBuf,
}

/// The unlisted address let in to :22: what the good reload adds.
const ALLOW_UNLISTED: &str = r#"
[[allow]]
cidr = "203.0.113.10/32"
direction = "ingress"
proto = "tcp"
ports = [22]
comment = "added by the reload"
"#;
/// What the refused reloads are given, and the reason the daemon gives.
const BROKEN_ALLOW: &str = "[[allow]]\ncidr = \"198.51.100.0/24\"\n";

/// The reason the daemon gives for `text` (a config ending in `BROKEN_ALLOW`): the line
/// of its `[[allow]]`, wherever the config builder put it.
fn broken_reason(text: &str) -> String {
    let line = text.lines().position(|l| l == "[[allow]]").map_or(0, |i| i + 1);
    format!("config.toml:{line}: missing field `direction`")
}
const ENABLE_LINK: &str = "etc/systemd/system/multi-user.target.wants/allowgate.service";

pub fn install(x: &Ctx, deb: &Path) -> anyhow::Result<()> {
    let ct = &x.ct;
    step("install: dpkg -i allowgate.deb");
    fs::copy(deb, x.root.join("root/allowgate.deb")).context("cannot copy the package into the container")?;
    let (code, out, err) = ct.run("dpkg", &["-i", "/root/allowgate.deb"])?;
    ensure!(code == 0, "dpkg -i failed ({code}): {out}{err}");
    print!("{err}");
    not_enabled_nor_started(x, "installing")?;
    check(
        "the links enabling would make are recorded for purge (deb-systemd-helper update-state)",
        helper_records(x)
            .iter()
            .any(|r| r.ends_with("allowgate.service.dsh-also")),
    )?;
    let conffiles = ct.ok("dpkg-query", &["-W", "-f=${Conffiles}", "allowgate"])?;
    check(
        "the config is a conffile",
        conffiles.contains("/etc/allowgate/config.toml"),
    )?;
    let man = ct.ok("man", &["-P", "cat", "allowgate"])?;
    check(
        "`man allowgate` shows the page",
        man.contains("allowgate") && man.contains("status"),
    )?;
    let man = ct.ok("man", &["-P", "cat", "5", "allowgate.toml"])?;
    check("`man 5 allowgate.toml` documents the keys", man.contains("bpffs_dir"))?;
    let man = ct.ok("man", &["-P", "cat", "allowgate-catalog-fetch"])?;
    check(
        "`man allowgate-catalog-fetch` has the verb's options",
        man.contains("--ca-file"),
    )?;
    let man = ct.ok("man", &["-P", "cat", "allowgate-reload"])?;
    check("`man allowgate-reload` says what it exits with", man.contains("SIGHUP"))?;
    // What bash offers after `allowgate enable ` and `allowgate show --feature `: the
    // regions come from the installed binary, at the time of the Tab.
    let offered = ct.ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/bash_completion; \
             source /usr/share/bash-completion/completions/allowgate; \
             COMP_WORDS=(allowgate enable ''); COMP_CWORD=2; COMP_LINE='allowgate enable '; COMP_POINT=17; \
             _allowgate allowgate '' enable; echo \"${COMPREPLY[*]}\"; \
             COMP_WORDS=(allowgate show --feature ''); COMP_CWORD=3; \
             _allowgate allowgate '' --feature; echo \"${COMPREPLY[*]}\"",
        ],
    )?;
    check(
        &format!(
            "bash completes regions and features: {}",
            offered.trim().replace('\n', " | ")
        ),
        offered.contains("eu1") && offered.contains("gov-us1") && offered.contains("log-collector"),
    )?;
    // socket_group, a member of it by a supplementary group only, and someone else.
    ct.ok("groupadd", &[GROUP])?;
    ct.ok(
        "useradd",
        &["--no-create-home", "--user-group", "--groups", GROUP, MEMBER],
    )?;
    ct.ok("useradd", &["--no-create-home", "--user-group", OTHER])?;
    Ok(())
}

/// Installed and unit file known, but neither enabled nor started, nothing pinned and
/// nothing filtered.
fn not_enabled_nor_started(x: &Ctx, after: &str) -> anyhow::Result<()> {
    let (_, enabled, _) = x.ct.run("systemctl", &["is-enabled", "allowgate"])?;
    let (_, active, _) = x.ct.run("systemctl", &["is-active", "allowgate"])?;
    check(
        &format!(
            "{after} neither enables nor starts it ({}, {}), and leaves no enable link",
            enabled.trim(),
            active.trim()
        ),
        enabled.trim() == "disabled" && active.trim() == "inactive" && !has_link(x),
    )?;
    check(
        &format!("nothing is pinned and nothing filtered after {after}"),
        !pinned(&x.ct) && probe(&x.pair.peer, UNLISTED_V4),
    )
}

/// `multi-user.target.wants/allowgate.service`, dangling or not.
fn has_link(x: &Ctx) -> bool {
    x.root.join(ENABLE_LINK).symlink_metadata().is_ok()
}

/// deb-systemd-helper's records of allowgate (its enable state).
fn helper_records(x: &Ctx) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![x.root.join("var/lib/systemd/deb-systemd-helper-enabled")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if entry.file_name().to_string_lossy().contains("allowgate") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// `systemd-analyze security allowgate`: the exposure score, lower than before the
/// unit's review, and every item it marks exposed named in the unit's comments, which
/// say why it stays.
pub fn exposure(x: &Ctx) -> anyhow::Result<f64> {
    step("the sandbox: systemd-analyze security allowgate");
    let out = x.ct.ok("systemd-analyze", &["security", "--no-pager", "allowgate"])?;
    let unit = fs::read_to_string(x.root.join("usr/lib/systemd/system/allowgate.service"))?;
    let comments: String = unit
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut unexplained = Vec::new();
    for line in out.lines().filter(|l| l.starts_with('✗')) {
        let name = line
            .trim_start_matches('✗')
            .split_whitespace()
            .next()
            .unwrap_or_default();
        let exposure = line.split_whitespace().last().unwrap_or_default();
        let said = comments.contains(name);
        println!(
            "✗ {name:<60} {exposure:>4}  {}",
            if said { "(the unit says why)" } else { "NOT EXPLAINED" }
        );
        if !said {
            unexplained.push(name.to_string());
        }
    }
    let overall = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| format!("systemd-analyze security printed no overall exposure:\n{out}"))?;
    let score: f64 = overall
        .rsplit(": ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("cannot read the exposure in {overall:?}"))?;
    println!("{}", overall.trim());
    check(
        &format!("exposure {score:.1}, below the {EXPOSURE_BEFORE} of before"),
        score < EXPOSURE_BEFORE,
    )?;
    check(
        &format!("every item marked ✗ is explained in the unit (not: {unexplained:?})"),
        unexplained.is_empty(),
    )?;
    Ok(score)
}

pub fn start(x: &Ctx) -> anyhow::Result<()> {
    let ct = &x.ct;
    step("start: systemctl start returns once the policy is attached");
    fs::write(&x.conf, config(&x.pair.host_if, ""))?;
    let t = Instant::now();
    if let Err(e) = ct.ok("systemctl", &["start", "allowgate"]) {
        bail!("{e:#}\njournalctl -u allowgate:\n{}", journal(ct).unwrap_or_default());
    }
    let start_ms = t.elapsed().as_millis();
    // Right away, no waiting: READY=1 came after the attach.
    check(
        &format!("`systemctl start` took {start_ms} ms, and at once status says enforce, attached (exit 0)"),
        enforcing(ct, &x.pair.host_if)?,
    )?;
    check(
        "the unlisted address is dropped at once",
        !probe(&x.pair.peer, UNLISTED_V4),
    )?;
    check("the management address reaches :22", probe(&x.pair.peer, PEER_V4))?;
    check(
        "the management address reaches :22 over IPv6",
        crate::common::netns::tcp_connects(&x.pair.peer, sa(HOST_V6, 22), PROBE_TIMEOUT),
    )?;
    check("the metrics endpoint answers inside the sandbox", metrics_answer(x))
}

fn metrics_answer(x: &Ctx) -> bool {
    crate::common::netns::http_get(&x.pair.host, sa("127.0.0.1", 9464), "/metrics", PROBE_TIMEOUT)
        .is_ok_and(|m| m.contains("200 OK"))
}

/// From the container's namespace: `name` answered with `addr`, and a connection to
/// `addr`:443 right after the answer; (the answer, connected).
fn lookup_and_connect(x: &Ctx, name: &str, addr: &str) -> (Option<Vec<std::net::IpAddr>>, bool) {
    let addr: std::net::IpAddr = addr.parse().expect("an address");
    let name = name.to_string();
    x.pair.host.enter(move || {
        let (answer, _) = crate::common::dns::resolve_here(
            sa(PEER_V4, 53),
            &name,
            hickory_proto::rr::RecordType::A,
            Duration::from_secs(2),
        );
        // Shorter than TCP's 1 s SYN retransmit: a dropped first SYN fails.
        let connected = answer.is_some()
            && crate::common::netns::tcp_connects_here(
                std::net::SocketAddr::new(addr, 443),
                Duration::from_millis(300),
            );
        (answer, connected)
    })
}

/// `dns` of `status --json`, and its count `key`.
fn dns_count(dns: &serde_json::Value, key: &str) -> u64 {
    dns[key].as_u64().unwrap_or(0)
}

pub fn dns(x: &Ctx, (name, addr): (&str, &str)) -> anyhow::Result<()> {
    let ct = &x.ct;
    step("DNS under the unit: an answer held, learned and given back, its first connection through");
    let dns = status_json(ct)?["dns"].clone();
    let path = dns["path"].as_str().unwrap_or_default().to_string();
    check(
        &format!("a give-back path works under the unit's sandbox: {path} ({dns})"),
        dns["learning"] == true && (path == "loopback" || path == "live-frames"),
    )?;
    check(
        &format!("{addr} is dropped before its name is resolved"),
        !crate::common::netns::tcp_connects(&x.pair.host, sa(addr, 443), PROBE_TIMEOUT),
    )?;
    let (answer, connected) = lookup_and_connect(x, name, addr);
    check(
        &format!("{name} answered ({answer:?}) and the first connection to it passed at once"),
        answer.as_deref() == Some(&[addr.parse::<std::net::IpAddr>()?][..]) && connected,
    )?;
    let dns = status_json(ct)?["dns"].clone();
    check(
        &format!("status counts it held and given back, none lost ({dns})"),
        dns_count(&dns, "held") >= 1 && dns_count(&dns, "given_back") >= 1 && dns["failed"] == 0,
    )
}

/// Lines of the journal that start with `prefix`.
fn journal_count(ct: &Container, prefix: &str) -> anyhow::Result<usize> {
    Ok(journal(ct)?
        .lines()
        .filter(|l| l.trim_start().starts_with(prefix))
        .count())
}

pub fn reload(x: &Ctx) -> anyhow::Result<()> {
    let ct = &x.ct;
    let peer = &x.pair.peer;
    step("reload: systemctl reload returns the daemon's verdict (ExecReload is `allowgate reload`)");
    let before = generation(ct)?;
    fs::write(&x.conf, config(&x.pair.host_if, ALLOW_UNLISTED))?;
    let (code, _, err) = ct.run("systemctl", &["reload", "allowgate"])?;
    // No waiting: the reload is in force when systemctl returns.
    let good = generation(ct)?;
    check(
        &format!(
            "a good config: `systemctl reload` exits {code}, and the new generation is in force when it returns ({before} -> {good}): the added address gets in{}",
            err.trim()
        ),
        code == 0 && good > before && probe(peer, UNLISTED_V4),
    )?;

    let broken = config(&x.pair.host_if, BROKEN_ALLOW);
    let reason = broken_reason(&broken);
    fs::write(&x.conf, &broken)?;
    let (code, _, err) = ct.run("systemctl", &["reload", "allowgate"])?;
    check(
        &format!(
            "a refused config fails `systemctl reload` (exit {code}: {})",
            err.trim().replace('\n', " ")
        ),
        code != 0,
    )?;
    let text = journal(ct)?;
    let daemon_says = text
        .lines()
        .find(|l| l.starts_with("ERROR reload refused") && l.contains(&reason));
    let exec_reload_says = text
        .lines()
        .find(|l| l.starts_with("allowgate: reload refused") && l.contains(&reason));
    check(
        &format!("the journal says why, from the daemon ({daemon_says:?}) and from ExecReload ({exec_reload_says:?})"),
        daemon_says.is_some() && exec_reload_says.is_some(),
    )?;
    let (_, active, _) = ct.run("systemctl", &["is-active", "allowgate"])?;
    check(
        &format!(
            "the old policy stays: the unit is {}, same generation, the added address still reaches :22",
            active.trim()
        ),
        active.trim() == "active"
            && generation(ct)? == good
            && probe(peer, UNLISTED_V4)
            && enforcing(ct, &x.pair.host_if)?,
    )?;
    let (code, out, err) = ct.run("allowgate", &["reload"])?;
    check(
        &format!(
            "`allowgate reload` by hand exits {code} with the reason in one line: {}",
            err.trim()
        ),
        code == 1
            && out.is_empty()
            && err.lines().count() == 1
            && err.contains("reload refused")
            && err.contains(&reason),
    )?;
    // SIGHUP, for those who send it: the same path, the verdict in the journal only.
    let refused = journal_count(ct, "ERROR reload refused")?;
    ct.ok("sh", &["-c", "kill -HUP \"$(systemctl show -P MainPID allowgate)\""])?;
    check(
        "SIGHUP still reloads: the same refusal in the journal, nothing installed",
        wait_until(Duration::from_secs(5), || {
            journal_count(ct, "ERROR reload refused").is_ok_and(|n| n == refused + 1)
        }) && generation(ct)? == good,
    )?;

    fs::write(&x.conf, config(&x.pair.host_if, ""))?;
    ct.ok("systemctl", &["reload", "allowgate"])?;
    check(
        "back to the first config: the unlisted address is dropped again, at once",
        !probe(peer, UNLISTED_V4),
    )
}

/// `allowgate ARGS` as `user`, with the groups the system gives them.
fn as_user(ct: &Container, user: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let (reuid, regid) = (format!("--reuid={user}"), format!("--regid={user}"));
    let mut all = vec![reuid.as_str(), regid.as_str(), "--init-groups", "allowgate"];
    all.extend_from_slice(args);
    ct.run("setpriv", &all)
}

pub fn socket_group(x: &Ctx) -> anyhow::Result<()> {
    let ct = &x.ct;
    step("socket_group under ProtectProc=invisible: a member (by a supplementary group) may reload, no one else");
    let (code, out, err) = as_user(ct, MEMBER, &["status"])?;
    check(
        &format!(
            "{MEMBER} (in {GROUP} by a supplementary group) reads the status (exit {code}{})",
            err.trim()
        ),
        code == 0 && out.contains("enforce"),
    )?;
    let g = generation(ct)?;
    let (code, out, err) = as_user(ct, MEMBER, &["reload"])?;
    check(
        &format!("{MEMBER} reloads (exit {code}: {}{})", out.trim(), err.trim()),
        code == 0 && generation(ct)? > g,
    )?;
    // Past the socket's file mode, so that it is the daemon's own check that refuses.
    let socket = "/run/allowgate/control.sock";
    ct.ok("chmod", &["0666", socket])?;
    let g = generation(ct)?;
    let refused = as_user(ct, OTHER, &["reload"]);
    ct.ok("chmod", &["0660", socket])?;
    let (code, _, err) = refused?;
    check(
        &format!("{OTHER} is refused by the daemon (exit {code}: {})", err.trim()),
        code == 1 && err.contains(&format!("only root and members of group `{GROUP}`")) && generation(ct)? == g,
    )
}

pub fn verbs(x: &Ctx) -> anyhow::Result<()> {
    let ct = &x.ct;
    step("the sandbox lets every verb work");
    for verb in [
        &["status"][..],
        &["regions"],
        &["show", "--region", "eu1"],
        &["enable", "eu2"],
        &["disable", "eu2"],
        &["mode", "monitor"],
        &["mode", "enforce"],
        &[
            "catalog",
            "apply",
            "/usr/share/allowgate/network-requirements-2019-11.md",
        ],
    ] {
        ct.ok("allowgate", verb)?;
        println!("ok  allowgate {}", verb.join(" "));
    }
    let (code, out, _) = ct.run("allowgate", &["check", PEER_V4, "--port", "22", "--direction", "in"])?;
    check(
        &format!("allowgate check {PEER_V4} :22 in: allowed (exit {code})"),
        code == 0 && !out.is_empty(),
    )?;
    let (code, _, _) = ct.run(
        "allowgate",
        &["check", UNLISTED_V4, "--port", "22", "--direction", "in"],
    )?;
    check(
        &format!("allowgate check {UNLISTED_V4} :22 in: denied (exit {code})"),
        code == 1,
    )?;
    ct.ok("systemctl", &["enable", "allowgate"])?;
    ct.ok("systemctl", &["disable", "allowgate"])?;
    println!("ok  systemctl enable / disable allowgate");
    let journal_text = journal(ct)?;
    // The give-back line names the kernel's refusal of live frames where it refuses them
    // (to every process, sandboxed or not): that one is not the sandbox's doing.
    let sandboxed: String = journal_text
        .lines()
        .filter(|l| !l.contains("DNS answers are held and given back through"))
        .collect::<Vec<_>>()
        .join("\n");
    for bad in ["Operation not permitted", "SIGSYS", "panicked", "EPERM"] {
        ensure!(
            !sandboxed.contains(bad),
            "the journal has {bad:?}: the sandbox refused something:\n{journal_text}"
        );
    }
    check(
        "still enforcing after every verb",
        enforcing(ct, &x.pair.host_if)? && !probe(&x.pair.peer, UNLISTED_V4),
    )
}

fn main_pid(ct: &Container) -> anyhow::Result<String> {
    Ok(ct
        .ok("systemctl", &["show", "-P", "MainPID", "allowgate"])?
        .trim()
        .to_string())
}

pub fn upgrade(x: &Ctx) -> anyhow::Result<()> {
    let ct = &x.ct;
    step("upgrade: the package again over itself restarts the running daemon, which adopts with no gap");
    let pid_before = main_pid(ct)?;
    let config_before = fs::read_to_string(&x.conf)?;
    let prober = Prober::start(&x.pair.peer);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = ct.run("dpkg", &["-i", "/root/allowgate.deb"])?;
    ensure!(
        code == 0,
        "dpkg -i over the installed package failed ({code}): {out}{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let ((tries, passed), (bad_tries, let_through)) = prober.finish();
    let pid_after = main_pid(ct)?;
    check(
        &format!("the daemon was restarted (MainPID {pid_before} -> {pid_after})"),
        pid_before != pid_after && pid_after != "0",
    )?;
    check(
        &format!("through the upgrade: {passed}/{tries} management probes passed, {let_through}/{bad_tries} unlisted"),
        tries > 20 && passed == tries && bad_tries > 0 && let_through == 0,
    )?;
    check(
        "the edited config (a conffile) was kept",
        fs::read_to_string(&x.conf)? == config_before,
    )
}

pub fn stop_start(x: &Ctx) -> anyhow::Result<()> {
    let ct = &x.ct;
    step("stop keeps enforcing; start adopts with no gap");
    let prober = Prober::start(&x.pair.peer);
    std::thread::sleep(Duration::from_millis(300));
    ct.ok("systemctl", &["stop", "allowgate"])?;
    let (_, active, _) = ct.run("systemctl", &["is-active", "allowgate"])?;
    ensure!(active.trim() == "inactive", "after stop the unit is {}", active.trim());
    std::thread::sleep(Duration::from_millis(1000));
    let stopped_generation = pinned(ct);
    ct.ok("systemctl", &["start", "allowgate"])?;
    std::thread::sleep(Duration::from_millis(300));
    let ((tries, passed), (bad_tries, let_through)) = prober.finish();
    check("the pins stay while the service is stopped", stopped_generation)?;
    check(
        &format!(
            "through stop and start: {passed}/{tries} management probes passed, {let_through}/{bad_tries} unlisted"
        ),
        tries > 20 && passed == tries && bad_tries > 5 && let_through == 0,
    )?;
    check(
        "the new daemon adopted the pinned policy",
        journal(ct)?.contains("adopted the pinned policy"),
    )
}

pub fn journal_lines(x: &Ctx) -> anyhow::Result<()> {
    step("the journal: one line per event");
    let journal_text = journal(&x.ct)?;
    println!("{journal_text}");
    let lines: Vec<&str> = journal_text.lines().collect();
    for (event, count) in [
        ("INFO enforcing generation=", 3),
        ("INFO adopted the pinned policy", 2),
        // Two by systemctl reload, one by the socket_group member.
        ("INFO reloaded generation=", 3),
        // systemctl reload, allowgate reload, SIGHUP.
        ("ERROR reload refused", 3),
        ("INFO changed uid=0", 4),
        ("INFO catalog applied", 1),
        ("INFO exiting; the policy stays enforced", 2),
    ] {
        let seen = lines.iter().filter(|l| l.trim_start().starts_with(event)).count();
        check(&format!("{count} line(s) \"{event}...\" (saw {seen})"), seen == count)?;
    }
    // systemd says "Started" only after the daemon said it enforces (READY=1 follows it).
    let mut enforcing_since_starting = false;
    let mut starts = 0;
    for line in &lines {
        if line.starts_with("Starting allowgate.service") {
            enforcing_since_starting = false;
        } else if line.trim_start().starts_with("INFO enforcing generation=") {
            enforcing_since_starting = true;
        } else if line.starts_with("Started allowgate.service") {
            ensure!(
                enforcing_since_starting,
                "systemd reported the start before the daemon enforced"
            );
            starts += 1;
        }
    }
    check(
        &format!("each of the {starts} starts: \"enforcing\" before systemd's \"Started\""),
        starts == 3,
    )?;
    // Every line is the daemon's (a level, or the one-line error of `allowgate:`), the
    // reload's answer, or systemd's own: nothing continues a line (no multi-line
    // message, no backtrace).
    let strays: Vec<&&str> = lines
        .iter()
        .filter(|l| {
            let daemon = ["INFO ", "WARN ", "ERROR ", "DEBUG ", "allowgate: ", "reloaded: "]
                .iter()
                .any(|p| l.trim_start().starts_with(p));
            let systemd = [
                "Starting ",
                "Started ",
                "Stopping ",
                "Stopped ",
                "Reloading ",
                "Reloaded ",
                "Reload failed for ",
                "allowgate.service: ",
            ]
            .iter()
            .any(|p| l.starts_with(p));
            !daemon && !systemd
        })
        .collect();
    check(
        &format!("every line is one whole message (strays: {strays:?})"),
        strays.is_empty(),
    )?;
    // Drops are summed up in one line per interval (never a line per packet).
    check(
        "drops are summed up in one line per interval",
        lines
            .iter()
            .any(|l| l.contains("INFO dropped ") && l.contains("packets in the last 1 s: ingress policy")),
    )
}

/// The unit's recipe for a site's IP allow list, as a drop-in: the resolver, and with
/// `host` this host's addresses. Restarts the service under it.
fn restart_with_allow_list(x: &Ctx, host: bool) -> anyhow::Result<String> {
    let dir = x.root.join("etc/systemd/system/allowgate.service.d");
    fs::create_dir_all(&dir)?;
    let hosts = if host {
        format!(" {HOST_V4} {HOST_V6}")
    } else {
        String::new()
    };
    let allow = format!("localhost {PEER_V4}{hosts}");
    fs::write(
        dir.join("ip-allow-list.conf"),
        format!("[Service]\nIPAddressDeny=any\nIPAddressAllow={allow}\n"),
    )?;
    x.ct.ok("systemctl", &["daemon-reload"])?;
    x.ct.ok("systemctl", &["restart", "allowgate"])?;
    Ok(allow)
}

pub fn ip_allow_list(x: &Ctx, without: (&str, &str), with: (&str, &str)) -> anyhow::Result<()> {
    let ct = &x.ct;
    step("a site's IP allow list (the drop-in the unit describes): DNS learning needs this host's addresses in it");
    // The control: the resolver and localhost only. The give-back probe (to 127.0.0.1)
    // passes; the first held answer's give-back, to this host's address, is refused.
    // The counts are the data plane's: they go on from one daemon to the next.
    let failed_before = dns_count(&status_json(ct)?["dns"], "failed");
    let allow = restart_with_allow_list(x, false)?;
    let (name, addr) = without;
    let (answer, _) = lookup_and_connect(x, name, addr);
    let dns = status_json(ct)?["dns"].clone();
    let lost = dns_count(&dns, "failed").saturating_sub(failed_before);
    check(
        &format!(
            "IPAddressAllow={allow}: give-back is refused, {lost} held answer(s) lost, and holding stops (the lookup of {name}: {answer:?}; {dns})"
        ),
        lost > 0 && dns["path"] == "none",
    )?;

    let allow = restart_with_allow_list(x, true)?;
    let dns = status_json(ct)?["dns"].clone();
    let given_back = dns_count(&dns, "given_back");
    let failed = dns_count(&dns, "failed");
    let (name, addr) = with;
    let (answer, connected) = lookup_and_connect(x, name, addr);
    let dns = status_json(ct)?["dns"].clone();
    check(
        &format!(
            "IPAddressAllow={allow}: {name} answered ({answer:?}), its first connection passed, given back and none lost ({dns})"
        ),
        answer.as_deref() == Some(&[addr.parse::<std::net::IpAddr>()?][..])
            && connected
            && dns_count(&dns, "given_back") > given_back
            && dns_count(&dns, "failed") == failed
            && dns["path"] == "loopback",
    )?;
    check("the metrics endpoint on 127.0.0.1 still answers", metrics_answer(x))?;
    check(
        "still enforcing under the allow list",
        enforcing(ct, &x.pair.host_if)? && !probe(&x.pair.peer, UNLISTED_V4),
    )?;

    fs::remove_dir_all(x.root.join("etc/systemd/system/allowgate.service.d"))?;
    ct.ok("systemctl", &["daemon-reload"])?;
    ct.ok("systemctl", &["restart", "allowgate"])?;
    Ok(())
}

pub fn remove_purge_reinstall(x: &Ctx) -> anyhow::Result<()> {
    let ct = &x.ct;
    let peer = &x.pair.peer;
    step("remove keeps the pinned policy; purge removes it and every trace; a reinstall is not enabled");
    ct.ok("systemctl", &["enable", "allowgate"])?;
    check("enabled by the operator: the link is there", has_link(x))?;
    let (code, out, err) = ct.run("dpkg", &["-r", "allowgate"])?;
    ensure!(code == 0, "dpkg -r failed ({code}): {out}{err}");
    let (_, active, _) = ct.run("systemctl", &["is-active", "allowgate"])?;
    check(
        &format!(
            "after dpkg -r the service is stopped ({}) and still enforcing",
            active.trim()
        ),
        active.trim() != "active" && pinned(ct) && !probe(peer, UNLISTED_V4) && probe(peer, PEER_V4),
    )?;
    // Debian keeps the enable state over a remove (a reinstall before purge has it back).
    check("the enable link stays until purge, as Debian keeps it", has_link(x))?;

    let (code, out, err) = ct.run("dpkg", &["--purge", "allowgate"])?;
    ensure!(code == 0, "dpkg --purge failed ({code}): {out}{err}");
    print!("{err}");
    check("after dpkg --purge: no pins", !pinned(ct))?;
    check(
        "after dpkg --purge: no state",
        !x.root.join("var/lib/allowgate").exists(),
    )?;
    check(
        "after dpkg --purge: no config (/etc/allowgate is gone)",
        !x.root.join("etc/allowgate").exists(),
    )?;
    check(&format!("after dpkg --purge: no {ENABLE_LINK}"), !has_link(x))?;
    let records = helper_records(x);
    check(
        &format!("after dpkg --purge: no deb-systemd-helper record ({records:?})"),
        records.is_empty(),
    )?;
    // The kernel may let go of an unpinned link's program a moment later.
    check(
        "after dpkg --purge: no filter, the unlisted address reaches :22 again",
        wait_until(Duration::from_secs(5), || probe(peer, UNLISTED_V4)),
    )?;

    step("reinstall after purge: as a first install");
    let (code, out, err) = ct.run("dpkg", &["-i", "/root/allowgate.deb"])?;
    ensure!(code == 0, "dpkg -i after purge failed ({code}): {out}{err}");
    not_enabled_nor_started(x, "a reinstall after purge")?;
    let (code, out, err) = ct.run("dpkg", &["--purge", "allowgate"])?;
    ensure!(code == 0, "the last dpkg --purge failed ({code}): {out}{err}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use allowgate::{catalog::Catalog, policy::Config};

    use super::*;

    /// The reason the refused-reload checks look for is the one the daemon's parser gives
    /// for the config test-systemd writes (its line moves with the config's layout).
    #[test]
    fn the_broken_allow_is_refused_with_the_reason_the_checks_expect() {
        let text = config("veth0", BROKEN_ALLOW);
        let err = Config::parse(&text, "/etc/allowgate/config.toml", &Catalog::builtin())
            .expect_err("a [[allow]] without a direction is refused")
            .to_string();
        assert!(err.contains(&broken_reason(&text)), "{err}\n{text}");
        Config::parse(&config("veth0", ALLOW_UNLISTED), "config.toml", &Catalog::builtin())
            .expect("the good reload's config parses");
    }
}
