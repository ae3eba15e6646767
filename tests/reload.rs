//! `allowgate reload`, end to end: the real daemon in a test world (`testkit::world`)
//! answers with its verdict, which SIGHUP shares; what it refuses changes nothing, and
//! only who may change policy may ask.

use std::time::Duration;

use testkit::{TempGroup, world::*};

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");

/// The world's config with `find` replaced by `with`.
fn edit(world: &World, find: &str, with: &str) {
    let text = std::fs::read_to_string(&world.config).unwrap();
    assert!(text.contains(find), "the config has no {find:?}:\n{text}");
    std::fs::write(&world.config, text.replacen(find, with, 1)).unwrap();
}

#[test]
fn reload_answers_with_the_verdict_and_sighup_takes_the_same_path() {
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let daemon = world.start_daemon();
    let g0 = generation(&world.status());
    assert!(world.blocked(EU2_ONLY));

    // A good file: in force by the time the command returns.
    world.write_config(&["eu1", "eu2"]);
    let out = world.cli(&["reload"]).ok();
    assert!(
        out.stdout.starts_with("reloaded: generation ") && out.stdout.contains("regions [eu1, eu2]"),
        "{out}"
    );
    let g1 = generation(&world.status());
    assert!(g1 > g0, "a new generation: {g0} -> {g1}");
    assert!(world.passes(EU2_ONLY), "eu2 is enforced when reload returns");
    assert!(daemon.log().contains("reloaded generation="), "{}", daemon.log());
    assert!(
        daemon.log().contains("uid=0"),
        "the log names who asked: {}",
        daemon.log()
    );

    // Refused files: exit 1, the reason in one line, nothing installed, the old policy
    // still in force; the journal (here the daemon's log) says the same.
    let good = std::fs::read_to_string(&world.config).unwrap();
    let config = world.config.display().to_string();
    let broken_allow = "\n[[allow]]\ncidr = \"198.51.100.0/24\"\n";
    for (n, (text, reason)) in [
        (format!("{good}{broken_allow}"), "missing field `direction`"),
        (
            good.replace("cidrs = [\"192.0.2.0/24\"]", "cidrs = []"),
            "would remove management access from 192.0.2.0/24",
        ),
        (good.replace("eu2", "eu9"), "eu9"),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&world.config, text).unwrap();
        let out = world
            .cli(&["reload"])
            .fails_saying(&["reload refused, the previous policy stays enforced", reason]);
        if n == 0 {
            assert!(out.stderr.contains(&config), "names the file: {out}");
        }
        assert!(
            daemon.wait_log_count("reload refused", n + 1, Duration::from_secs(5)),
            "{}",
            daemon.log()
        );
        let logged = daemon
            .log()
            .lines()
            .rfind(|l| l.contains("reload refused"))
            .unwrap()
            .to_string();
        let answered = out.stderr.trim().trim_start_matches("allowgate: ");
        assert!(
            logged.ends_with(answered),
            "the log says what the client heard:\n{logged}\n{answered}"
        );
        assert_eq!(generation(&world.status()), g1, "case {n}: nothing was installed");
        assert!(
            world.passes(EU2_ONLY) && world.blocked(UNLISTED),
            "case {n}: the old policy stays"
        );
    }

    // SIGHUP: the same verdicts, in the log only (there is no one to answer).
    let refused = daemon.log().matches("reload refused").count();
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_log_count("reload refused", refused + 1, Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    assert_eq!(generation(&world.status()), g1);
    world.write_config(&["eu1"]);
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_log_count("reloaded generation=", 2, Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    assert!(generation(&world.status()) > g1);
    assert!(world.blocked(EU2_ONLY), "the SIGHUP reload took eu2 away");
}

/// A member of socket_group may change policy, so may reload; anyone else is refused
/// and the file they wanted in force stays out. Root's reload of the same file is the
/// control: it does put it in force.
#[test]
fn only_who_may_change_policy_may_reload() {
    let group = TempGroup::new("agrld");
    let world = World::for_group(BIN, &group);
    let _servers = world.servers();
    let daemon = world.start_daemon();
    let g0 = generation(&world.status());
    open_up(&world);

    world.write_config(&["eu1", "eu2"]);
    let want = format!(
        "only root and members of group `{}` may use allowgate's socket",
        group.name
    );
    refused(&world, &daemon, &["reload"], None, &want);
    refused(&world, &daemon, &["reload"], Some(65534), &want);
    assert_eq!(generation(&world.status()), g0, "nobody's reload installed nothing");
    assert!(world.blocked(EU2_ONLY));
    assert!(!daemon.log().contains("reloaded"), "{}", daemon.log());

    let out = as_nobody(&world, &["reload"], Some(group.gid)).ok();
    assert!(out.stdout.contains("regions [eu1, eu2]"), "{out}");
    assert!(world.passes(EU2_ONLY), "the member's reload is in force");

    world.write_config(&["eu1"]);
    world.cli(&["reload"]).ok();
    assert!(world.blocked(EU2_ONLY), "root's reload is in force");
}

/// What a reload by the socket applies that the daemon keeps outside the policy: the
/// drop summary's interval. Before the reload (60 s) the same drops are not summed up
/// within seconds: the control.
#[test]
fn a_reload_by_the_socket_applies_the_drop_summary_interval() {
    let world = World::new(
        BIN,
        Setup {
            extra: "drop_log_interval = 60".to_string(),
            ..Setup::default()
        },
    );
    let _servers = world.servers();
    let daemon = world.start_daemon();
    let summary = "packets in the last 1 s";
    assert!(world.blocked(UNLISTED));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!daemon.log().contains(summary), "{}", daemon.log());

    edit(&world, "drop_log_interval = 60", "drop_log_interval = 1");
    world.cli(&["reload"]).ok();
    assert!(world.blocked(UNLISTED));
    assert!(
        daemon.wait_log(summary, Duration::from_secs(5)),
        "no summary a second after the reload:\n{}",
        daemon.log()
    );
}

#[test]
fn reload_without_a_daemon_fails_in_one_line() {
    let world = World::new(BIN, Setup::default());
    world.cli(&["reload"]).fails_saying(&["no allowgate daemon answers on"]);
    // Bad usage is 2, as for every verb.
    assert_eq!(world.cli(&["reload", "--bogus"]).code, 2);
    // A config that does not load is named as the likelier reason.
    edit(&world, "mode = \"enforce\"", "mode = \"sideways\"");
    let config = world.config.display().to_string();
    let out = world.cli(&["reload", "--config", &config]).fails_saying(&[
        "no allowgate daemon answers on",
        "the config does not load",
        "sideways",
    ]);
    assert!(out.stderr.contains(&config), "{out}");
}

/// A SIGHUP sent while the daemon starts (a reload right after `systemctl start`, a
/// configuration tool racing a boot) is a reload, not a kill: the daemon catches it
/// from before its first log line and reloads once its loop runs. Before, the handler
/// came after attaching, and SIGHUP's default action ended the daemon halfway through
/// its start (seen as a flaky catalog_guard test). The control is that code: this test
/// failed on it at the first signal.
#[test]
fn a_sighup_while_the_daemon_starts_is_a_reload_not_a_kill() {
    use std::time::Instant;
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let mut daemon = testkit::daemon::Daemon::spawn_env(
        world.host(),
        std::path::Path::new(BIN),
        &world.config,
        world.dir.path(),
        &[],
    );
    // From its first log line (the signal handlers are in place before it) until
    // 300 ms after it enforces, a SIGHUP every 5 ms.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut sent, mut enforcing) = (0, None::<Instant>);
    while enforcing.is_none_or(|t| t.elapsed() < Duration::from_millis(300)) {
        assert!(
            daemon.alive(),
            "the daemon died after {sent} SIGHUPs sent while it started:\n{}",
            daemon.log()
        );
        assert!(Instant::now() < deadline, "the daemon did not start:\n{}", daemon.log());
        let log = daemon.log();
        if enforcing.is_none() && log.contains("enforcing") {
            enforcing = Some(Instant::now());
        }
        if !log.is_empty() {
            daemon.signal(libc::SIGHUP);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sent > 10, "only {sent} SIGHUPs were sent");
    assert!(daemon.wait_log("reloaded", Duration::from_secs(10)), "{}", daemon.log());
    assert!(daemon.alive());
    assert!(world.passes(EU1_ONLY));
    assert!(world.blocked(UNLISTED));
}
