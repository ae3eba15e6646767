//! `catalog import` and the region vocabulary through the real binary: the page's three
//! forms give one catalog file, a typo costs one address with --allow-partial, service
//! tags bring the service's tags by default, and an Azure region answers to every
//! spelling in `check -r`.

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");
const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/catalog/testdata");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SSH_CONNECTION")
        .output()
        .unwrap_or_else(|e| panic!("cannot run allowgate: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a catalog file allows, without lines and sources.
fn allowed(catalog: &Value) -> BTreeSet<String> {
    catalog["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {} {}",
                e["region"], e["feature"], e["peer"], e["direction"], e["ports"], e["offering"]
            )
        })
        .collect()
}

fn import(dir: &Path, page: &str, extra: &[&str]) -> (Run, Value) {
    let out = dir.join(format!("{page}.json"));
    let mut args = vec!["catalog", "import"];
    let source = format!("{TESTDATA}/{page}");
    args.push(&source);
    args.extend_from_slice(extra);
    let out_arg = out.to_str().unwrap().to_string();
    args.extend_from_slice(&["-o", &out_arg]);
    let run = run(&args);
    let catalog = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (run, catalog)
}

#[test]
fn the_page_imports_alike_from_markdown_learns_html_and_a_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let (docs_run, docs) = import(dir.path(), "network-requirements-2025.md", &[]);
    assert_eq!(docs_run.code, 0, "{}", docs_run.stderr);
    assert!(
        docs_run.stderr.contains("1506 entries, 854 addresses"),
        "{}",
        docs_run.stderr
    );
    for page in ["network-requirements-2025-learn.md", "network-requirements-2025.html"] {
        let (r, catalog) = import(dir.path(), page, &[]);
        assert_eq!(r.code, 0, "{page}: {}", r.stderr);
        assert!(r.stderr.contains("1506 entries, 854 addresses"), "{page}: {}", r.stderr);
        assert_eq!(allowed(&catalog), allowed(&docs), "{page}");
        assert_eq!(catalog["regions"], docs["regions"], "{page}");
    }
}

#[test]
fn a_typo_refuses_the_page_or_costs_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let page = std::fs::read_to_string(format!("{TESTDATA}/network-requirements-2025.html")).unwrap();
    let typo = dir.path().join("typo.html");
    std::fs::write(&typo, page.replacen("13.64.16.132, ", "13.64.16.132m, ", 1)).unwrap();
    let strict = run(&["catalog", "import", typo.to_str().unwrap()]);
    assert_eq!(strict.code, 1);
    assert!(
        strict
            .stderr
            .contains("expected an IP address or CIDR in the \"IP addresses\" column, found \"13.64.16.132m\""),
        "{}",
        strict.stderr
    );
    let out = dir.path().join("typo.json");
    let partial = run(&[
        "catalog",
        "import",
        typo.to_str().unwrap(),
        "--allow-partial",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(partial.code, 0, "{}", partial.stderr);
    assert!(
        partial.stderr.contains("1505 entries, 853 addresses"),
        "{}",
        partial.stderr
    );
    assert!(
        partial
            .stderr
            .contains("found \"13.64.16.132m\": that item is not allowed; the row's 95 other items are kept"),
        "{}",
        partial.stderr
    );
}

/// A small tags file: the service's tag for France Central (its `region` the older
/// `centralfrance`) and Front Door's security tag.
const TAGS: &str = r#"{"changeNumber": 9, "cloud": "Public", "values": [
  {"name": "MicrosoftCloudAppSecurity.FranceCentral", "properties": {"changeNumber": 3, "region": "centralfrance", "addressPrefixes": ["198.51.100.64/29"]}},
  {"name": "AzureFrontDoor.MicrosoftSecurity", "properties": {"changeNumber": 2, "region": "", "addressPrefixes": ["203.0.113.0/25", "2001:db8:afd::/48"]}},
  {"name": "AzureFrontDoor.Frontend", "properties": {"changeNumber": 2, "region": "", "addressPrefixes": ["203.0.113.128/25"]}}
]}"#;

#[test]
fn service_tags_bring_the_services_tags_and_azures_region_names() {
    let dir = tempfile::tempdir().unwrap();
    let tags = dir.path().join("ServiceTags_Public_20260601.json");
    std::fs::write(&tags, TAGS).unwrap();
    let out = dir.path().join("tags.json");
    let r = run(&[
        "catalog",
        "import",
        "--service-tags",
        tags.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("for regions francecentral, all"), "{}", r.stderr);
    let catalog: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let afd: BTreeSet<String> = catalog["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["peer"]["net"] == "2001:db8:afd::/48")
        .map(|e| e["feature"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(afd, BTreeSet::from(["portal".to_string(), "siem".into()]));
    assert!(!std::fs::read_to_string(&out).unwrap().contains("203.0.113.128/25"));
    // --tag narrows to the tag named.
    let r = run(&[
        "catalog",
        "import",
        "--service-tags",
        tags.to_str().unwrap(),
        "--tag",
        "MicrosoftCloudAppSecurity",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("2001:db8:afd::/48"));

    // One region for both spellings: `check -r` finds the tag's prefix by either, and
    // the page's France Central merges with it.
    let page = dir.path().join("page.md");
    let mut text = allowgate::catalog::BUILTIN_PAGE.to_string();
    text.push_str(
        "\n## Access and session controls\n\nThe following IP addresses should be allowed for both inbound and outbound connections:\n\n\
         ||IP addresses|\n|---|---|\n|**Session controls**|France Central: 192.0.2.70|\n",
    );
    std::fs::write(&page, text).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "catalog = [\"{}\", \"{}\"]\nregions = [\"eu1\"]\n[essentials]\ndns_servers = [\"192.0.2.53\"]\n",
            page.display(),
            tags.display()
        ),
    )
    .unwrap();
    for spelling in ["francecentral", "centralfrance", "France Central"] {
        for address in ["198.51.100.66", "192.0.2.70"] {
            let r = run(&[
                "check",
                address,
                "--port",
                "443",
                "-r",
                spelling,
                "-f",
                "proxy",
                "--config",
                config.to_str().unwrap(),
            ]);
            assert_eq!(r.code, 0, "{address} by -r {spelling}: {}{}", r.stdout, r.stderr);
            assert!(r.stdout.contains("francecentral proxy"), "{}", r.stdout);
        }
    }
    let regions = run(&["regions", "--names", "--config", config.to_str().unwrap()]);
    let france: Vec<&str> = regions.stdout.lines().filter(|l| l.contains("france")).collect();
    assert_eq!(france, ["francecentral"], "{}", regions.stdout);
}
