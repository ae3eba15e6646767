//! Catalog updates end to end: `catalog apply` under traffic, a shrinking catalog
//! refused, restart, rollback.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use testkit::{
    netns::{sa, tcp_connects},
    world::*,
};

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");

// ---------------------------------------------------------------------------------------
// Catalog updates

/// `catalog apply` swaps catalogs under traffic: what only the new one lists passes,
/// what only the old one listed drops, what both list never drops; a catalog that
/// shrinks too much is refused; `catalog rollback` brings the old one back; a restart
/// keeps the applied one.
#[test]
fn a_new_catalog_goes_in_as_one_swap_and_rolls_back() {
    let world = World::new(
        BIN,
        Setup {
            // B below drops one of eu1's two portal addresses: 50%.
            extra: "max_shrink = 50".into(),
            ..Setup::default()
        },
    );
    let _servers = world.servers();
    let daemon = world.start_daemon();
    assert!(world.passes(EU1_ONLY));
    assert!(world.blocked(EU2_ONLY));

    // B: eu1's portal lists the shared address and EU2_ONLY instead of EU1_ONLY.
    let b = world.dir.path().join("page-b.md");
    let eu1_row = "|EU1 (West Europe)|198.51.100.10, 198.51.100.20|";
    assert!(PAGE.contains(eu1_row));
    std::fs::write(
        &b,
        PAGE.replace(eu1_row, "|EU1 (West Europe)|198.51.100.10, 198.51.100.30|"),
    )
    .unwrap();
    // C: eu1's portal keeps nothing of A's: refused (100% > 50%).
    let c = world.dir.path().join("page-c.md");
    std::fs::write(&c, PAGE.replace(eu1_row, "|EU1 (West Europe)|198.51.100.30|")).unwrap();

    let diff = world.cli(&[
        "catalog",
        "diff",
        world.dir.path().join("page.md").to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(diff.code, 1, "the catalogs differ: {diff}");
    assert!(
        diff.stdout.contains("+ eu1 portal egress 198.51.100.30/32 tcp/443"),
        "{diff}"
    );
    assert!(
        diff.stdout.contains("- eu1 portal egress 198.51.100.20/32 tcp/443"),
        "{diff}"
    );

    let g0 = generation(&world.status());
    let refused = world.cli(&["catalog", "apply", c.to_str().unwrap()]);
    refused.fails_saying(&["max_shrink (50%)", "--force"]);
    assert_eq!(generation(&world.status()), g0, "a refused catalog installs nothing");
    assert!(world.passes(EU1_ONLY));

    // Probe the shared address without pause while B goes in.
    let stop = AtomicBool::new(false);
    let (probes, failures) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                probes.fetch_add(1, Ordering::Relaxed);
                if !tcp_connects(world.host(), sa(SHARED, 443), PASS_WAIT) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let out = world.cli(&["catalog", "apply", b.to_str().unwrap()]).ok();
        assert!(out.stdout.contains(&format!("generation {}", g0 + 1)), "{out}");
        assert!(out.stdout.contains("(1 added, 1 removed)"), "{out}");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let (probes, failures) = (probes.into_inner(), failures.into_inner());
    assert!(probes > 10, "the prober ran ({probes} probes)");
    assert_eq!(
        failures, 0,
        "{failures} of {probes} probes to the shared address failed during the swap"
    );
    assert!(world.passes(EU2_ONLY), "an address only B lists passes");
    assert!(world.blocked(EU1_ONLY), "an address only A listed drops");
    let check = world.cli(&["check", EU2_ONLY, "--port", "443"]);
    assert!(
        check.stdout.contains("page-b.md (ms.date 01/01/2024) line"),
        "check names the new source: {check}"
    );

    // A restart keeps the applied catalog.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_log("exiting", Duration::from_secs(5)), "{}", daemon.log());
    drop(daemon);
    let _daemon = world.start_daemon();
    assert!(
        world.passes(EU2_ONLY),
        "after a restart the applied catalog is in force"
    );
    assert!(world.blocked(EU1_ONLY));

    world.cli(&["catalog", "rollback"]).ok();
    assert!(world.passes(EU1_ONLY), "rollback restores A");
    assert!(world.blocked(EU2_ONLY));
    assert!(world.passes(SHARED));

    // A page that does not parse changes nothing and says where.
    let broken = world.dir.path().join("broken.md");
    let cut = PAGE.find(eu1_row).unwrap() + "|EU1 (West Europe)|198.51.100.10, 198.51".len();
    std::fs::write(&broken, &PAGE[..cut]).unwrap();
    let g = generation(&world.status());
    world
        .cli(&["catalog", "apply", broken.to_str().unwrap()])
        .fails_saying(&["broken.md", "cut off"]);
    assert_eq!(generation(&world.status()), g);
}

/// `catalog rollback` puts back what was in force, however much that removes: after a
/// catalog that only adds went in, the way back removes most of what is enforced now,
/// which max_shrink (25% here, the default) refused before. Traffic shows the first
/// catalog enforced again.
#[test]
fn rollback_after_a_bigger_catalog_restores_the_first() {
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let _daemon = world.start_daemon();
    assert!(world.passes(EU1_ONLY));
    assert!(world.blocked(EU2_ONLY));

    // B: eu1's portal lists what A lists, EU2_ONLY and six more: 8 addresses for 2.
    let eu1_row = "|EU1 (West Europe)|198.51.100.10, 198.51.100.20|";
    assert!(PAGE.contains(eu1_row));
    let bigger = world.dir.path().join("page-bigger.md");
    std::fs::write(
        &bigger,
        PAGE.replace(
            eu1_row,
            "|EU1 (West Europe)|198.51.100.10, 198.51.100.20, 198.51.100.30, 198.51.100.100, 198.51.100.101, 198.51.100.102, 198.51.100.103, 198.51.100.104, 198.51.100.105|",
        ),
    )
    .unwrap();
    let out = world.cli(&["catalog", "apply", bigger.to_str().unwrap()]).ok();
    assert!(
        out.stdout.contains("catalog addresses 2 -> 9 (7 added, 0 removed)"),
        "{out}"
    );
    assert!(world.passes(EU2_ONLY), "B is in force");
    let g = generation(&world.status());

    // The way back removes 7 of the 9 addresses enforced now (78% > 25%).
    let out = world.cli(&["catalog", "rollback"]).ok();
    assert!(
        out.stdout.contains("catalog addresses 9 -> 2 (0 added, 7 removed)"),
        "{out}"
    );
    assert_eq!(generation(&world.status()), g + 1);
    assert!(world.blocked(EU2_ONLY), "rollback restores A: B's address drops");
    assert!(world.passes(EU1_ONLY));
    assert!(world.passes(SHARED));

    // Applying a catalog that shrinks as much is still refused: the guard is for
    // catalogs that go forward.
    let out = world.cli(&["catalog", "apply", bigger.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("(7 added, 0 removed)"), "{out}");
    let a = world.dir.path().join("page.md");
    world
        .cli(&["catalog", "apply", a.to_str().unwrap()])
        .fails_saying(&["would remove 7 of the 9 catalog addresses", "max_shrink (25%)"]);
}

/// A member of socket_group who names a FIFO of their own is refused at once, and the
/// daemon goes on answering: before, the daemon checked the owner by path and then
/// opened the path, blocking in open(2) until someone wrote to the FIFO.
#[test]
fn apply_of_a_fifo_is_refused_without_stalling_the_daemon() {
    let group = testkit::TempGroup::new("agcat");
    let world = World::for_group(BIN, &group);
    let _servers = world.servers();
    let _daemon = world.start_daemon();
    open_up(&world);
    let theirs = world.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let fifo = theirs.join("catalog.md");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    for path in [&theirs, &fifo] {
        let status = std::process::Command::new("chown")
            .arg("nobody")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["10", "setpriv", "--reuid=nobody", "--regid=nogroup"])
        .arg(format!("--groups={}", group.gid))
        .arg(BIN)
        .args(["catalog", "apply", fifo.to_str().unwrap(), "--socket"])
        .arg(&world.socket)
        .env_remove("SSH_CONNECTION");
    let out = testkit::world::Out::of(cmd);
    assert!(
        out.elapsed < Duration::from_secs(5),
        "the daemon answered at once: {out}"
    );
    out.fails_saying(&["catalog.md is not a regular file"]);
    assert!(world.passes(EU1_ONLY));
    assert_eq!(generation(&world.status()), 1, "nothing changed");
}
