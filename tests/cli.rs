//! The offline verbs end to end: the real binary, its output and its exit codes.

use std::{collections::BTreeSet, io::Write as _, process::Command};

use assert_cmd::Command as Cmd;
use predicates::prelude::*;
use testkit::config::{Allow, ConfigBuilder};

fn allowgate() -> Cmd {
    Cmd::cargo_bin("allowgate").expect("the allowgate binary")
}

/// A config file in a temp dir; resolvers pinned so the host's resolv.conf does not
/// leak into the output.
fn config(body: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    writeln!(f, "{body}\n[essentials]\ndns_servers = [\"192.0.2.53\"]").unwrap();
    f
}

/// The EU1 row of the page's "Portal access" table and the names above it, copied by
/// hand from catalog/network-requirements-2019-11.md.
const EU1_PORTAL_ADDRESSES: [&str; 9] = [
    "13.80.125.22/32",
    "40.119.154.72/32",
    "40.74.1.235/32",
    "40.74.6.204/32",
    "51.143.58.207/32",
    "52.137.89.147/32",
    "52.157.238.58/32",
    "52.174.56.180/32",
    "52.183.75.62/32",
];
const EU1_PORTAL_NAMES: [&str; 13] = [
    "portal.cloudappsecurity.com",
    "*.portal.cloudappsecurity.com",
    "cdn.cloudappsecurity.com",
    "adaproddiscovery.azureedge.net",
    "*.s-microsoft.com",
    "*.msecnd.net",
    "dev.virtualearth.net",
    "*.cloudappsecurity.com",
    "flow.microsoft.com",
    "static2.sharepointonline.com",
    "dc.services.visualstudio.com",
    "*.blob.core.windows.net",
    "*.eu.portal.cloudappsecurity.com",
];

#[test]
fn show_json_lists_exactly_the_eu1_portal_entries() {
    let cfg = config("");
    let out = allowgate()
        .args([
            "show",
            "--region",
            "eu1",
            "--feature",
            "portal",
            "--format",
            "json",
            "--config",
        ])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let catalog: Vec<&serde_json::Value> = entries.iter().filter(|e| e["source"] == "catalog").collect();
    let cidrs: BTreeSet<&str> = catalog.iter().filter_map(|e| e["cidr"].as_str()).collect();
    let names: BTreeSet<&str> = catalog.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(cidrs, EU1_PORTAL_ADDRESSES.into_iter().collect());
    assert_eq!(names, EU1_PORTAL_NAMES.into_iter().collect());
    for e in &catalog {
        assert_eq!(e["direction"], "egress", "{e}");
        assert_eq!(e["proto"], "tcp", "{e}");
        assert_eq!(e["ports"], serde_json::json!([443]), "{e}");
        assert_eq!(e["regions"], serde_json::json!(["eu1"]), "{e}");
        assert_eq!(e["features"], serde_json::json!(["portal"]), "{e}");
    }
    // The rest is the essentials' DNS, marked as such.
    let rest: Vec<_> = entries.iter().filter(|e| e["source"] != "catalog").collect();
    assert_eq!(rest.len(), 2);
    assert!(
        rest.iter()
            .all(|e| e["source"] == "essentials" && e["regions"] == serde_json::json!([]))
    );
}

#[test]
fn check_answers_like_grep() {
    let cfg = config("[management]\ncidrs = [\"192.0.2.0/24\"]\n");
    let check = |args: &[&str]| {
        let mut c = allowgate();
        c.arg("check").args(args).arg("--config").arg(cfg.path());
        c
    };
    check(&["13.80.125.22", "--port", "443", "--region", "eu1"])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("allowed: egress tcp 13.80.125.22 port 443"))
        .stdout(predicate::str::contains(
            "eu1 portal: network-requirements-2019-11.md (ms.date",
        ));
    check(&["13.80.125.22", "--port", "80", "--region", "eu1"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "rules cover 13.80.125.22 but none allows this",
        ));
    check(&["8.8.8.8", "--region", "eu1"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("no rule covers 8.8.8.8"));
    // SIEM's OCSP names need DNS; the address tables allow tcp/443 only.
    check(&["13.80.125.22", "--port", "443", "--direction", "in", "--region", "eu1"])
        .assert()
        .code(1);
    check(&["192.0.2.9", "--port", "22", "--direction", "in"])
        .assert()
        .code(0);
    check(&[
        "65.55.234.200",
        "--port",
        "25",
        "--direction",
        "in",
        "--region",
        "us2",
        "--feature",
        "mail",
    ])
    .assert()
    .code(0);
    check(&["not-an-address"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not an IP address"));
    check(&["13.80.125.22", "--region", "eu9"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown region `eu9`: did you mean `eu1`?"));
}

#[test]
fn bad_configs_get_one_line_naming_the_line() {
    let cfg = config("[[allow]]\ncidr = \"198.51.100.1/24\"\ndirection = \"egress\"\n");
    let out = allowgate().args(["show", "--config"]).arg(cfg.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(":2: allow[0].cidr: `198.51.100.1/24` has host bits set: did you mean 198.51.100.0/24?"),
        "{err}"
    );
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn regions_lists_the_data_centers() {
    let cfg = config("regions = [\"EU1\"]\n");
    allowgate()
        .args(["regions", "--config"])
        .arg(cfg.path())
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^eu1\s+EU1\s+data center \(commercial\)\s+yes\s+9\+13\s+70\+4").unwrap())
        .stdout(predicate::str::is_match(r"(?m)^gov-us1\s+Gov US1\s+data center \(gcc-high\)\s+no").unwrap());
}

#[test]
fn every_verb_has_help() {
    for verb in ["regions", "show", "check", "daemon", "status", "down", "catalog"] {
        allowgate()
            .args([verb, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: allowgate"));
    }
    allowgate().arg("frobnicate").assert().code(2);
}

#[test]
fn the_nft_script_passes_nft_check() {
    let cfg = config(
        &ConfigBuilder::new(&["eth9"])
            .regions(&["eu1", "us2"])
            .features(&["portal", "proxy", "siem", "app-connector", "dlp", "mail"])
            .management(&["192.0.2.0/24", "2001:db8::/48"])
            .allow(Allow::egress("198.51.100.0/24", "any"))
            .allow(Allow::ingress("203.0.113.0/24", "icmp"))
            .render(),
    );
    let out = allowgate()
        .args(["show", "--format", "nft", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("policy drop;"));
    assert!(script.contains("13.80.125.22"));
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(script.as_bytes()).unwrap();
    let nft = Command::new("nft")
        .arg("-c")
        .arg("-f")
        .arg(file.path())
        .output()
        .expect("nft is installed (scripts/bootstrap)");
    assert!(
        nft.status.success(),
        "nft -c rejected the script: {}\n{script}",
        String::from_utf8_lossy(&nft.stderr)
    );
}

#[test]
fn catalog_import_reads_a_later_page_and_names_the_bad_line() {
    let page = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../catalog/testdata/network-requirements-later-layout.md"
    );
    let out = allowgate().args(["catalog", "import", page]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let catalog: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The imported catalog is one the agent can use: a config names it.
    let dir = tempfile::tempdir().unwrap();
    let imported = dir.path().join("catalog.json");
    allowgate()
        .args(["catalog", "import", page, "--output"])
        .arg(&imported)
        .assert()
        .success();
    let cfg = config(&format!(
        "catalog = \"{}\"\nregions = [\"EU3\"]\nfeatures = [\"portal\"]",
        imported.display()
    ));
    allowgate()
        .args(["check", "198.51.100.10", "--port", "443", "--config"])
        .arg(cfg.path())
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "eu3 portal: network-requirements-later-layout.md (ms.date 03/15/2023) line",
        ));
    allowgate()
        .args(["check", "192.0.2.10", "--port", "443", "--config"])
        .arg(cfg.path())
        .assert()
        .code(1);
    let regions: Vec<&str> = catalog["regions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(regions.contains(&"eu3") && regions.contains(&"anz1"), "{regions:?}");

    let mut bad = tempfile::Builder::new().suffix(".md").tempfile().unwrap();
    let text = include_str!("../catalog/network-requirements-2019-11.md").replacen("13.64.26.88", "13.64.26.x", 1);
    bad.write_all(text.as_bytes()).unwrap();
    let out = allowgate()
        .args(["catalog", "import"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("line 73") && err.contains("13.64.26.x"), "{err}");
}
