//! The daemon tells the truth and guards every path: status from the kernel,
//! repairs of detached links and re-created interfaces, refused reloads, one daemon per
//! pins, a failed start that changes nothing, and plain answers.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::world::*;

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");

// ---------------------------------------------------------------------------------------
// The daemon tells the truth and guards every path (issue 10)

/// The link pins of `world`'s interface.
fn link_pins(world: &World) -> Vec<PathBuf> {
    let mut pins: Vec<PathBuf> = std::fs::read_dir(world.pins.0.join("links"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    pins.sort();
    pins
}

/// `bpftool link detach pinned PIN`: what an operator (or an attacker with root) does.
fn bpftool_detach(pin: &Path) {
    let out = Command::new("bpftool")
        .args(["link", "detach", "pinned"])
        .arg(pin)
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool link detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn status_is_the_kernels_word_and_the_daemon_repairs_what_it_can() {
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let mut daemon = world.start_daemon();
    assert!(world.blocked(UNLISTED));
    let status = world.status();
    assert_eq!(status["enforcing"], true, "{status}");
    assert_eq!(status["interfaces"][0]["attached"], true, "{status}");
    let pins = link_pins(&world);
    assert_eq!(pins.len(), 2, "an XDP and a tcx link: {pins:?}");

    // Pins removed: the daemon holds the links, so they still filter, and pins them again.
    for pin in &pins {
        std::fs::remove_file(pin).unwrap();
    }
    assert!(
        daemon.wait_log("pinned it again", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    assert_eq!(link_pins(&world), pins);
    assert!(world.blocked(UNLISTED), "the links stayed attached");

    // A link detached by hand: found within a second or two, attached again, logged.
    let xdp_pin = pins
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("xdp-"))
        .unwrap();
    bpftool_detach(xdp_pin);
    assert!(
        daemon.wait_log("was not protected: attached again", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    assert!(world.blocked(UNLISTED), "filtered again after the repair");
    assert_eq!(world.status()["enforcing"], true);

    // With no daemon to repair it, status says what the kernel says: not enforcing.
    daemon.kill9();
    let tc_pin = pins
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("tc-"))
        .unwrap();
    bpftool_detach(tc_pin);
    let out = world.cli(&["status", "--json", "--config", world.config.to_str().unwrap()]);
    assert_eq!(out.code, 1, "status exits 1 when an interface filters nothing: {out}");
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["enforcing"], false, "{status}");
    assert_eq!(status["interfaces"][0]["attached"], false, "{status}");
    assert!(
        status["interfaces"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("TC egress link was detached"),
        "{status}"
    );
    let table = world.cli(&["status", "--config", world.config.to_str().unwrap()]);
    assert!(table.stdout.contains("NOT PROTECTED"), "{table}");
    // A restart attaches it again.
    let _daemon = world.start_daemon();
    assert_eq!(world.status()["enforcing"], true);
}

#[test]
fn reloads_refuse_what_start_refuses_and_what_locks_out() {
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let daemon = world.start_daemon();
    let g = generation(&world.status());
    let good = std::fs::read_to_string(&world.config).unwrap();
    let cases: [(&str, String); 5] = [
        (
            "`interfaces` is empty",
            good.replace(&format!("interfaces = [\"{}\"]", world.pair.host_if), "interfaces = []"),
        ),
        (
            "`socket` changes only on restart",
            good.replace("control.sock", "other.sock"),
        ),
        (
            "`state_dir` changes only on restart",
            good.replace("state_dir = \"", "state_dir = \"/tmp/elsewhere-"),
        ),
        (
            "remove management access from 192.0.2.0/24",
            good.replace("cidrs = [\"192.0.2.0/24\"]", "cidrs = []"),
        ),
        // A file cut after a few lines: no interfaces, no management.
        (
            "`interfaces` is empty",
            good.lines().skip(1).take(3).collect::<Vec<_>>().join("\n"),
        ),
    ];
    for (n, (reason, text)) in cases.iter().enumerate() {
        std::fs::write(&world.config, text).unwrap();
        daemon.signal(libc::SIGHUP);
        assert!(
            daemon.wait_log_count("reload refused", n + 1, Duration::from_secs(5)),
            "case {n}: {}",
            daemon.log()
        );
        assert!(
            daemon.log().contains(reason),
            "case {n} names its reason ({reason}): {}",
            daemon.log()
        );
        std::fs::write(&world.config, &good).unwrap();
        let status = world.status();
        assert_eq!(generation(&status), g, "case {n}: nothing was installed");
    }
    assert!(world.socket.exists(), "the socket stays where it was");
    assert!(world.passes(EU1_ONLY));
    assert!(world.blocked(UNLISTED));
}

#[test]
fn a_second_daemon_on_the_same_pins_and_a_failed_start_change_nothing() {
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let _daemon = world.start_daemon();
    let g = generation(&world.status());

    // Another socket, the same bpffs_dir: refused before it touches the kernel.
    let other = world.dir.path().join("second.toml");
    let text = std::fs::read_to_string(&world.config).unwrap();
    std::fs::write(
        &other,
        text.replace("control.sock", "second.sock")
            .replace("\"eu1\"", "\"eu2\""),
    )
    .unwrap();
    let out = Out::of({
        let mut c = world.host().command(BIN);
        c.args(["daemon", "--config", other.to_str().unwrap()]);
        c
    });
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("another allowgate daemon enforces from"), "{out}");
    assert!(!world.dir.path().join("second.sock").exists(), "its socket is gone");
    assert_eq!(generation(&world.status()), g);
    assert!(world.blocked(EU2_ONLY), "the second daemon's policy is not enforced");

    // A config naming one good and one missing interface, with the first daemon gone:
    // refused before the kernel is touched, the pinned policy stays as it was.
    drop(_daemon);
    let missing = text.replace(
        &format!("interfaces = [\"{}\"]", world.pair.host_if),
        &format!("interfaces = [\"{}\", \"agmissing0\"]", world.pair.host_if),
    );
    let bad = world.dir.path().join("missing.toml");
    std::fs::write(&bad, missing.replace("\"eu1\"", "\"eu2\"")).unwrap();
    let out = Out::of({
        let mut c = world.host().command(BIN);
        c.args(["daemon", "--config", bad.to_str().unwrap()]);
        c
    });
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no interface agmissing0 here"), "{out}");
    let status = world.cli(&["status", "--json", "--config", world.config.to_str().unwrap()]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(generation(&status), g, "{status}");
    assert!(world.passes(EU1_ONLY), "the old policy is still the one enforced");
    assert!(world.blocked(EU2_ONLY));
}

#[test]
fn a_deleted_recreated_or_renamed_interface_is_noticed_at_once() {
    let world = World::new(BIN, Setup::default());
    let servers = world.servers();
    let daemon = world.start_daemon();
    assert!(world.blocked(UNLISTED));
    let host_if = world.pair.host_if.clone();

    // Deleted and made again with the same name: a new interface, filtered again.
    world.host().ip(&["link", "del", &host_if]);
    drop(servers);
    world.pair.link(&PEER_ADDRS);
    let _servers = world.servers();
    assert!(
        daemon.wait_log("was not protected: attached again", Duration::from_secs(3)),
        "{}",
        daemon.log()
    );
    assert!(world.passes(EU1_ONLY));
    assert!(world.blocked(UNLISTED), "the new interface is filtered");
    assert_eq!(world.status()["enforcing"], true);

    // Renamed away: the configured name is gone, and status says so.
    world.host().ip(&["link", "set", &host_if, "name", "agrenamed0"]);
    assert!(
        daemon.wait_log("NOT PROTECTED", Duration::from_secs(3)),
        "{}",
        daemon.log()
    );
    let out = world.cli(&["status", "--json"]);
    assert_eq!(out.code, 1, "{out}");
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["enforcing"], false, "{status}");
    assert!(
        status["interfaces"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("no interface"),
        "{status}"
    );
    // Named back: protected again.
    world.host().ip(&["link", "set", "agrenamed0", "name", &host_if]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while world.cli(&["status", "--json"]).code != 0 {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(world.blocked(UNLISTED));
}

#[test]
fn misleading_answers_are_now_plain() {
    let world = World::new(BIN, Setup::default());
    let daemon = world.start_daemon();
    // The socket's file is not reachable for nobody (0600 in a 0700 directory).
    let out = as_nobody(&world, &["status", "--config", world.config.to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        !out.stderr.contains("start the daemon") && out.stderr.contains("run as root"),
        "non-root status says it lacks permission, not that nothing runs: {out}"
    );
    let out = as_nobody(&world, &["check", EU1_ONLY, "--port", "443"], None);
    assert_eq!(
        out.code, 2,
        "non-root check does not answer from the default config: {out}"
    );
    assert!(out.stderr.contains("the live selection cannot be asked"), "{out}");

    // `down` leaves pins that are not allowgate's.
    let foreign = world.pins.0.join("maps").join("not_ours");
    let made = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&foreign)
        .args([
            "type", "array", "key", "4", "value", "4", "entries", "1", "name", "not_ours",
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    drop(daemon);
    let out = world.cli(&["down", "--config", world.config.to_str().unwrap()]);
    assert!(foreign.exists(), "down removed a pin that is not allowgate's: {out}");
    assert!(
        !world.pins.0.join("maps").join("ag_stats").exists(),
        "down removed allowgate's own: {out}"
    );
    std::fs::remove_file(&foreign).unwrap();

    // A bpffs_dir outside bpffs is named as such, not blamed on BTF.
    let text = std::fs::read_to_string(&world.config).unwrap();
    let elsewhere = world.dir.path().join("outside.toml");
    let pins = world.pins.0.display().to_string();
    std::fs::write(&elsewhere, text.replace(&pins, "/tmp/allowgate-not-bpffs")).unwrap();
    let out = Out::of({
        let mut c = world.host().command(BIN);
        c.args(["daemon", "--config", elsewhere.to_str().unwrap()]);
        c
    });
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("is not on a bpf filesystem") && !out.stderr.contains("Some("),
        "{out}"
    );
    // [[allow]] in the v4-mapped form: refused with the IPv4 form to write.
    let mapped = world.dir.path().join("mapped.toml");
    std::fs::write(
        &mapped,
        format!("{text}\n[[allow]]\ncidr = \"::ffff:198.51.100.0/120\"\ndirection = \"egress\"\n"),
    )
    .unwrap();
    let out = world.cli(&["show", "--config", mapped.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("write the IPv4 form, 198.51.100.0/24"), "{out}");
}
