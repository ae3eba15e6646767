//! The layers of docs/architecture.md, checked: every `crate::` path in agent/src names
//! a module its own layer may use, aya is used by the data plane alone, and the pure
//! layers (catalog, policy) do no I/O of their own. An import across the drawing fails
//! here with the file that made it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Each layer and what it may import (besides itself and the crate root's helpers).
/// `events` is a leaf every layer may use; `cli` is the top and may use anything.
const LAYERS: &[(&str, &[&str])] = &[
    ("events", &[]),
    ("catalog", &["events"]),
    // Downloading a source: HTTPS and files, nothing of the product's rules.
    ("fetch", &[]),
    ("policy", &["catalog", "events"]),
    ("dataplane", &["policy", "catalog", "events"]),
    ("control", &["policy", "catalog", "events"]),
    ("dns", &["dataplane", "policy", "catalog", "events"]),
    (
        "daemon",
        &["control", "dns", "dataplane", "policy", "catalog", "fetch", "events"],
    ),
    (
        "cli",
        &[
            "daemon",
            "control",
            "dns",
            "dataplane",
            "policy",
            "catalog",
            "fetch",
            "events",
        ],
    ),
];

/// Items of the crate root (lib.rs) every layer may use.
const ROOT_ITEMS: &[&str] = &["error_chain"];

/// External crates only some layers may name: the kernel's (aya) in the data plane alone,
/// and nothing that does I/O in the pure layers.
const CRATES: &[(&str, &[&str])] = &[
    ("aya", &["dataplane"]),
    ("aya_obj", &["dataplane"]),
    ("tokio", &["daemon", "control", "cli", "dns"]),
    ("hyper", &["daemon"]),
    ("netlink_sys", &["dataplane", "daemon"]),
    ("ureq", &["fetch"]),
    ("rustls", &["fetch"]),
];

/// The modules a source text names through `crate::`: `crate::a::b`, and each top-level
/// item of `crate::{a::b, c::{d, e}}`, however the braces are spread over lines.
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> Option<String> {
        let s = s.trim_start();
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        (end > 0).then(|| s[..end].to_string())
    };
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let (mut depth, mut item_start, mut end) = (1usize, 0usize, group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        out.extend(ident(&group[item_start..i]));
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            out.extend(ident(&group[item_start..end]));
            rest = &group[end..];
        } else {
            out.extend(ident(after));
            rest = after;
        }
    }
    out
}

/// Whether the text names an external crate in a path (`aya::`, `use aya`).
fn names_crate(text: &str, krate: &str) -> bool {
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).any(|l| {
        l.match_indices(&format!("{krate}::")).any(|(i, _)| {
            !l[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        })
    })
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read agent/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer of a file: its top module under agent/src (`daemon/mod.rs` -> daemon).
fn layer_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under agent/src");
    let first = rel.components().next().expect("a path").as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn the_scanner_reads_every_form_of_import() {
    let text = "use crate::{\n    catalog::{Catalog, Feature},\n    dataplane::Counters,\n    error_chain,\n};\nfn f() { crate::policy::model::judge(); }\n// a comment about crate::cli is read too: better strict than blind\n";
    let got: Vec<String> = crate_imports(text).into_iter().collect();
    assert_eq!(got, ["catalog", "cli", "dataplane", "error_chain", "policy"]);
    assert!(names_crate("    let m: aya::maps::Map = x;", "aya"));
    assert!(!names_crate("    let m = my_aya::x; // aya::y", "aya"));
}

#[test]
fn no_module_imports_across_the_drawn_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let layer = layer_of(&src, file);
        if layer == "main" || layer == "lib" {
            continue;
        }
        let may = allowed
            .get(layer.as_str())
            .unwrap_or_else(|| panic!("{}: module `{layer}` is in no layer of this test", file.display()));
        let text = std::fs::read_to_string(file).expect("read a source file");
        for module in crate_imports(&text) {
            seen.insert((layer.clone(), module.clone()));
            if module != layer && !may.contains(&module.as_str()) && !ROOT_ITEMS.contains(&module.as_str()) {
                wrong.push(format!("{}: `{layer}` imports `{module}`", file.display()));
            }
        }
        for (krate, users) in CRATES {
            if names_crate(&text, krate) && !users.contains(&layer.as_str()) {
                wrong.push(format!("{}: `{layer}` uses the `{krate}` crate", file.display()));
            }
        }
    }
    // The scanner sees the edges the daemon is known to have: it is not blind.
    for edge in [
        ("daemon", "dataplane"),
        ("daemon", "control"),
        ("cli", "daemon"),
        ("policy", "catalog"),
    ] {
        assert!(
            seen.contains(&(edge.0.to_string(), edge.1.to_string())),
            "the scanner missed {edge:?}: it is broken"
        );
    }
    assert!(
        wrong.is_empty(),
        "imports against docs/architecture.md:\n{}",
        wrong.join("\n")
    );
}
