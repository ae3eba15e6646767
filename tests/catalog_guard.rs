//! The shrink guard where the config's catalog reaches the kernel (reload, start, also
//! after `allowgate down`), and the age of each catalog source in `status` and
//! `/metrics`: the real daemon in a test namespace.

use std::{net::SocketAddr, time::Duration};

use testkit::{
    exposition::{self, labels},
    netns::http_get,
    world::*,
};

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");

/// EU1's portal row of the world's page, and the same row with one of its two
/// addresses gone: half of what the selection (eu1, portal) enforces.
const EU1_ROW: &str = "|EU1 (West Europe)|198.51.100.10, 198.51.100.20|";
const EU1_ROW_CUT: &str = "|EU1 (West Europe)|198.51.100.10|";

/// Issue 23, finding 6: a catalog file the config names, replaced by one that lists
/// far less (a page cut short), reached the kernel on reload or restart without the
/// `max_shrink` guard that `catalog apply` has. Now a reload refuses it, a start (also
/// after `allowgate down` emptied the kernel) keeps the catalog in force, and the
/// documented way to accept it on purpose (max_shrink = 100 for one reload) works:
/// that one is the control, the same change let through.
#[test]
fn a_shrunken_catalog_reaches_the_kernel_by_no_path_unforced() {
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let daemon = world.start_daemon();
    assert!(world.passes(EU1_ONLY));
    let g0 = generation(&world.status());

    let page = world.dir.path().join("page.md");
    assert!(PAGE.contains(EU1_ROW));
    std::fs::write(&page, PAGE.replace(EU1_ROW, EU1_ROW_CUT)).unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_log("reload refused", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("would remove 1 of the 2 catalog addresses enforced now (50%), more than max_shrink (25%)"),
        "{log}"
    );
    assert!(
        log.contains("the catalog in force (page.md (ms.date 01/01/2024)) stays"),
        "{log}"
    );
    assert_eq!(generation(&world.status()), g0, "a refused reload installs nothing");
    assert!(world.passes(EU1_ONLY), "the refused catalog is not enforced");

    // A restart, and a start after `down` (as after a reboot: nothing in the kernel),
    // keep the catalog in force.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_log("exiting", Duration::from_secs(5)), "{}", daemon.log());
    drop(daemon);
    for down in [false, true] {
        if down {
            world.cli(&["down", "--config", world.config.to_str().unwrap()]).ok();
        }
        let daemon = world.start_daemon();
        assert!(
            daemon
                .log()
                .contains("the config's catalog (page.md (ms.date 01/01/2024)) is refused"),
            "down: {down}\n{}",
            daemon.log()
        );
        assert!(
            world.passes(EU1_ONLY),
            "the refused catalog was enforced at start (down: {down})"
        );
        daemon.signal(libc::SIGTERM);
        assert!(daemon.wait_log("exiting", Duration::from_secs(5)), "{}", daemon.log());
    }

    // Forced the documented way: max_shrink = 100 for one reload.
    let daemon = world.start_daemon();
    let config = std::fs::read_to_string(&world.config).unwrap();
    std::fs::write(&world.config, format!("max_shrink = 100\n{config}")).unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(daemon.wait_log("reloaded", Duration::from_secs(10)), "{}", daemon.log());
    assert!(world.blocked(EU1_ONLY), "forced, the smaller catalog is enforced");
    assert!(world.passes(SHARED));
}

/// A service tags file in the shape Azure publishes, of the public cloud, listing
/// documentation addresses only.
fn tags_file() -> String {
    r#"{"changeNumber": 412, "cloud": "Public", "values": [
  {"name": "MicrosoftCloudAppSecurity.WestEurope", "id": "MicrosoftCloudAppSecurity.WestEurope",
   "properties": {"changeNumber": 7, "region": "westeurope", "regionId": 18, "platform": "Azure",
     "systemService": "MicrosoftCloudAppSecurity", "addressPrefixes": ["203.0.113.96/28"], "networkFeatures": ["API"]}}
]}"#
    .to_string()
}

/// `YYYYMMDD` and RFC 3339 of `days_ago` days before now.
fn days_ago(days: u64) -> (String, String) {
    let t = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
    let rfc = humantime::format_rfc3339_seconds(t).to_string();
    (rfc[..10].replace('-', ""), rfc)
}

/// `status` (table and JSON) and `/metrics` give each source's version and age: a
/// service tags file is as old as the date in its name (here 45 days: stale past the
/// default 30), a page as old as its last fetch that found it current (its sidecar; here
/// an hour), whatever its ms.date; and the daemon warns of the stale one.
#[test]
fn status_and_metrics_give_each_sources_age() {
    let world = World::new(BIN, Setup::default());
    let port = world.host().enter(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    world.edit_config(|c| c.key("metrics", addr.to_string()));
    let (dated, _) = days_ago(45);
    let tags_name = format!("ServiceTags_Public_{dated}.json");
    let tags = world.dir.path().join(&tags_name);
    std::fs::write(&tags, tags_file()).unwrap();
    let page = world.dir.path().join("page.md");
    let (_, an_hour_ago) = days_ago(0);
    let sidecar = serde_json::json!({
        "url": "https://learn.example/network-requirements", "etag": "\"p\"", "last_modified": null,
        "sha256": "", "bytes": PAGE.len(), "fetched": an_hour_ago, "checked": an_hour_ago,
        "version": "ms.date 01/01/2024",
    });
    std::fs::write(
        world.dir.path().join("page.md.fetch.json"),
        serde_json::to_vec(&sidecar).unwrap(),
    )
    .unwrap();
    let config = std::fs::read_to_string(&world.config).unwrap().replace(
        &format!("catalog = \"{}\"", page.display()),
        &format!("catalog = [\"{}\", \"{}\"]", page.display(), tags.display()),
    );
    assert!(config.contains(&tags_name), "the config names both sources");
    std::fs::write(&world.config, config).unwrap();
    let daemon = world.start_daemon();

    let status = world.status();
    let sources = status["catalog_sources"].as_array().expect("catalog_sources");
    assert_eq!(sources.len(), 2, "{status}");
    let by_name = |name: &str| {
        sources
            .iter()
            .find(|s| s["source"] == name)
            .unwrap_or_else(|| panic!("no source {name} in {status}"))
    };
    let t = by_name(&tags_name);
    assert_eq!(t["kind"], "service-tags");
    assert_eq!(t["version"], "changeNumber 412");
    let age = t["age_seconds"].as_u64().unwrap();
    assert!((45 * 86_400..46 * 86_400).contains(&age), "{t}");
    assert_eq!(t["stale"], true);
    let p = by_name("page.md");
    assert_eq!(p["version"], "ms.date 01/01/2024");
    assert_eq!(p["date"], "2024-01-01");
    assert!(
        p["age_seconds"].as_u64().unwrap() < 3600,
        "a page fetched now is current: {p}"
    );
    assert_eq!(p["stale"], false);
    assert_eq!(status["max_catalog_age_days"], 30);

    let table = world.cli(&["status"]).ok();
    assert!(
        table.stdout.contains(&format!(
            "source:      {tags_name} (changeNumber 412, published {}-{}-{}), 45 days old: STALE, past max_catalog_age (30 days)",
            &dated[..4],
            &dated[4..6],
            &dated[6..]
        )),
        "{table}"
    );
    assert!(
        daemon.wait_log("past max_catalog_age (30 days)", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    assert_eq!(
        daemon.log().matches("past max_catalog_age").count(),
        1,
        "one warning (a day), for the one stale source:\n{}",
        daemon.log()
    );

    let response = http_get(world.host(), addr, "/metrics", Duration::from_secs(5)).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    let m = exposition::parse(body);
    let series = |name: &str, l: &[(&str, &str)]| m.get(&(name.to_string(), labels(l))).copied();
    let scraped = series("allowgate_catalog_age_seconds", &[("source", &tags_name)]).expect("the tags file's age");
    assert!((45.0 * 86_400.0..46.0 * 86_400.0).contains(&scraped), "{scraped}");
    assert!(series("allowgate_catalog_age_seconds", &[("source", "page.md")]).unwrap() < 3600.0);
    assert_eq!(series("allowgate_catalog_max_age_seconds", &[]), Some(30.0 * 86_400.0));
    assert_eq!(
        series(
            "allowgate_catalog_source_info",
            &[
                ("source", "page.md"),
                ("kind", "page"),
                ("version", "ms.date 01/01/2024")
            ]
        ),
        Some(1.0)
    );
}
