//! The page's 2025 revision in the three forms operators can get it in: the docs'
//! Markdown, Learn's HTML and a Markdown mirror of Learn's rendering (both made from
//! the first by `testdata/learn-render.py`). Each reads back to the same catalog; the
//! constructs Learn's rendering adds are tested one by one below.

use proptest::prelude::*;

use super::*;
use crate::catalog::page::{html::looks_like_html, table::region_groups};

const DOCS: &str = include_str!("../../testdata/network-requirements-2025.md");
const LEARN_MD: &str = include_str!("../../testdata/network-requirements-2025-learn.md");
const LEARN_HTML: &str = include_str!("../../testdata/network-requirements-2025.html");

fn read(text: &str, name: &str) -> Catalog {
    let builtin = Catalog::builtin();
    let options = PageOptions {
        allow_partial: false,
        fallback: Some(&builtin),
    };
    parse_page_with(text, name, options).unwrap_or_else(|e| panic!("{name} parses: {e}"))
}

/// A warning without its line number (the forms put things on different lines).
fn without_lines(warnings: &[String]) -> Vec<String> {
    warnings
        .iter()
        .map(|w| match w.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
            Some((_, rest)) => rest.to_string(),
            None => w.clone(),
        })
        .collect()
}

#[test]
fn the_three_forms_read_back_the_same_catalog() {
    let docs = read(DOCS, "network-requirements-2025.md");
    assert_eq!(docs.addresses().len(), 854, "the revision's distinct addresses");
    assert_eq!(docs.entries.len(), 1506);
    for (text, name) in [
        (LEARN_MD, "network-requirements-2025-learn.md"),
        (LEARN_HTML, "network-requirements-2025.html"),
    ] {
        let other = read(text, name);
        assert_eq!(meaning(&other), meaning(&docs), "{name}");
        assert_eq!(other.regions, docs.regions, "{name}");
        assert_eq!(without_lines(&other.warnings), without_lines(&docs.warnings), "{name}");
    }
    // The proxy's commercial and government regions, all in Azure's spelling.
    let azure: Vec<&str> = docs
        .regions
        .iter()
        .filter(|r| r.kind == RegionKind::AzureRegion)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        azure,
        [
            "australiasoutheast",
            "brazilsouth",
            "canadacentral",
            "centralindia",
            "northeurope",
            "southeastasia",
            "westeurope",
            "ukwest",
            "eastus",
            "westus2",
            "westus3",
            "eastasia",
            "francecentral",
            "usgovarizona",
            "usgovvirginia"
        ]
    );
}

/// Where Learn's rendering glues things together, each lands where the docs put it.
#[test]
fn glued_labels_and_joined_names_land_where_the_docs_put_them() {
    assert!(LEARN_MD.contains("4.198.154.86Brazil South: 191.235.123.114"));
    assert!(LEARN_MD.contains("52.126.55.65US Gov Virginia: 52.227.216.80"));
    assert!(LEARN_MD.contains("52.126.55.65 US Gov Virginia: 13.72.27.223"));
    assert!(LEARN_MD.contains("\\*.mcas.ms\\*.admin-mcas.ms"));
    assert!(LEARN_MD.contains("| - | **IP Addresses** | **DNS Name** |\r\n"));
    let c = read(LEARN_MD, "learn.md");
    let proxy = |region: &str, offering: Offering| -> BTreeSet<String> {
        c.entries
            .iter()
            .filter(|e| {
                e.region.as_deref() == Some(region) && e.offering == Some(offering) && e.direction == Direction::Ingress
            })
            .map(|e| e.peer.to_string())
            .collect()
    };
    let australia = proxy("australiasoutheast", Offering::Commercial);
    assert!(australia.contains("4.198.154.86/32"), "the address a label is glued to");
    assert!(!proxy("brazilsouth", Offering::Commercial).contains("4.198.154.86/32"));
    assert!(proxy("brazilsouth", Offering::Commercial).contains("191.235.123.114/32"));
    assert!(proxy("usgovarizona", Offering::GccHigh).contains("52.126.55.65/32"));
    assert!(proxy("usgovvirginia", Offering::GccHigh).contains("13.72.27.223/32"));
    assert!(proxy("usgovvirginia", Offering::GccHigh).contains("52.227.216.80/32"));
    assert_eq!(
        names(&c, Some("us1"), Feature::Proxy),
        set(&[
            "*.cas.ms",
            "*.mcas.ms",
            "*.admin-mcas.ms",
            "*.access.mcas.ms",
            "*.us.saml.cas.ms",
            "*.us2.saml.cas.ms",
            "*.us3.saml.cas.ms",
            "*.eu.saml.cas.ms",
            "*.eu2.saml.cas.ms"
        ])
    );
}

/// The HTML page: its date from `<meta name="ms.date">`, its lines those of the HTML
/// file, and nothing from outside the article (its scripts hold addresses).
#[test]
fn the_html_page_is_read_as_a_browser_shows_its_article() {
    let c = read(LEARN_HTML, "page.html");
    assert_eq!(c.source, "page.html (ms.date 04/04/2024)");
    for script_address in ["192.0.2.77/32", "198.51.100.250/32"] {
        assert!(c.entries.iter().all(|e| e.peer.to_string() != script_address));
    }
    for e in c.entries.iter().filter(|e| e.line > 0) {
        let Peer::Net(net) = &e.peer else { continue };
        let shown = net.to_string();
        let shown = shown.trim_end_matches("/32");
        let text = LEARN_HTML.lines().nth(e.line - 1).unwrap_or("");
        let near =
            (e.line.saturating_sub(1)..e.line + 3).any(|l| LEARN_HTML.lines().nth(l).unwrap_or("").contains(shown));
        assert!(near, "line {} ({text:.60}) or the next show {shown}", e.line);
    }
    // An address in a paragraph the reader cannot explain still refuses the page: the
    // HTML form is held to what the Markdown form is.
    let prose = LEARN_HTML.replace(
        "<p>To connect to third-party apps",
        "<p>Also allow 203.0.113.9 somehow.</p>\n<p>To connect to third-party apps",
    );
    assert_ne!(prose, LEARN_HTML);
    let err = parse_page(&prose, "page.html").unwrap_err().to_string();
    assert!(err.contains("found the address \"203.0.113.9\" in a sentence"), "{err}");
}

/// The real page's typo, in each form: refused naming the token, or with
/// --allow-partial every other address of the row kept.
#[test]
fn the_typo_costs_one_address_in_every_form() {
    let docs = read(DOCS, "docs.md");
    let us1 = nets(&docs, Some("us1"), Feature::AppConnector);
    assert_eq!(us1.len(), 96);
    for (text, name) in [(DOCS, "docs.md"), (LEARN_MD, "learn.md"), (LEARN_HTML, "page.html")] {
        let typo = text.replacen("13.64.16.132, ", "13.64.16.132m, ", 1);
        assert_ne!(typo, text, "{name}");
        let err = parse_page(&typo, name).unwrap_err().to_string();
        let line = typo
            .lines()
            .position(|l| l.contains("13.64.16.132m"))
            .map(|i| i + 1)
            .unwrap_or(0);
        assert_eq!(
            err,
            format!(
                "line {line}: expected an IP address or CIDR in the \"IP addresses\" column, found \"13.64.16.132m\""
            ),
            "{name}"
        );
        let options = PageOptions {
            allow_partial: true,
            fallback: None,
        };
        let partial = parse_page_with(&typo, name, options).unwrap();
        let kept = nets(&partial, Some("us1"), Feature::AppConnector);
        let mut want = us1.clone();
        want.remove(&net("13.64.16.132"));
        assert_eq!(kept, want, "{name}");
        assert!(
            partial
                .warnings
                .iter()
                .any(|w| w
                    .contains("found \"13.64.16.132m\": that item is not allowed; the row's 95 other items are kept")),
            "{name}: {:?}",
            partial.warnings
        );
    }
}

// ---- one construct at a time ----------------------------------------------------

#[test]
fn region_labels_glued_or_not() {
    let groups = |cell: &str| -> Vec<(Option<String>, Vec<String>)> {
        region_groups(cell)
            .into_iter()
            .map(|(label, text)| (label, split_items(&text)))
            .collect()
    };
    let g = |label: &str, items: &[&str]| (Some(label.to_string()), items.iter().map(|s| s.to_string()).collect());
    let expected = vec![
        g("West Europe", &["192.0.2.1", "192.0.2.2"]),
        g("Brazil South", &["192.0.2.3"]),
    ];
    for cell in [
        "West Europe: 192.0.2.1, 192.0.2.2<br /><br />Brazil South: 192.0.2.3",
        "West Europe: 192.0.2.1, 192.0.2.2Brazil South: 192.0.2.3",
        "West Europe: 192.0.2.1, 192.0.2.2 Brazil South: 192.0.2.3",
        "**West Europe**: 192.0.2.1,192.0.2.2<br>Brazil South: 192.0.2.3",
        "West Europe: 192.0.2.1, 192.0.2.2<br /><br /> Brazil South: 192.0.2.3",
    ] {
        assert_eq!(groups(cell), expected, "{cell}");
    }
    // A known region wins where a hex digit could start the label, then a capital.
    assert_eq!(
        groups("West US: 2001:db8::1East US: 2001:db8::2"),
        vec![g("West US", &["2001:db8::1"]), g("East US", &["2001:db8::2"])]
    );
    assert_eq!(
        groups("West US: 2001:db8::aAtlantis North: 192.0.2.9"),
        vec![g("West US", &["2001:db8::a"]), g("Atlantis North", &["192.0.2.9"])]
    );
    // IPv6 addresses are never labels; text before the first label has none.
    assert_eq!(
        groups("2001:db8::5, 192.0.2.7 West US 2: 192.0.2.8"),
        vec![
            (None, vec!["2001:db8::5".to_string(), "192.0.2.7".into()]),
            g("West US 2", &["192.0.2.8"])
        ]
    );
}

#[test]
fn joined_wildcard_names_come_apart() {
    assert_eq!(
        split_items("\\*.mcas.ms\\*.admin-mcas.ms *.access.mcas.ms<br/>"),
        ["*.mcas.ms", "*.admin-mcas.ms", "*.access.mcas.ms"]
    );
    assert_eq!(
        split_items("a.example.com*.b.example.com"),
        ["a.example.com", "*.b.example.com"]
    );
}

#[test]
fn a_dash_header_cell_is_an_empty_one() {
    let body = "Allowed for both inbound and outbound connections:\n\n\
                | - | IP addresses | - | DNS name |\n| --- | --- | --- | --- |\n\
                | **Session controls** | West Europe: 192.0.2.1 | North Europe: 192.0.2.2 | *.proxy.example.com |\n";
    let c = parse(&page_with(Feature::Proxy, body));
    let listed = |region: &str| -> BTreeSet<String> {
        c.entries
            .iter()
            .filter(|e| e.region.as_deref() == Some(region))
            .map(|e| e.peer.to_string())
            .collect()
    };
    // The first `-` names rows by feature, the second continues the addresses.
    assert_eq!(listed("westeurope"), set(&["192.0.2.1/32"]));
    assert_eq!(listed("northeurope"), set(&["192.0.2.2/32"]));
    assert!(listed("us1").contains("*.proxy.example.com"));
}

#[test]
fn crlf_line_ends_read_as_lf() {
    let page = page_with(
        Feature::Siem,
        "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.9|\n",
    );
    let crlf = page.replace('\n', "\r\n");
    assert_eq!(parse(&crlf).entries, parse(&page).entries);
}

#[test]
fn html_is_told_from_markdown() {
    for html in [
        "<!DOCTYPE html>\n<html>",
        "  <!doctype HTML><html lang=en>",
        "<!-- saved from url=(0071)https://learn.example/ -->\n<html>",
        "\u{feff}<html><body>",
    ] {
        assert!(looks_like_html(html), "{html}");
    }
    for markdown in [
        BUILTIN_PAGE,
        DOCS,
        LEARN_MD,
        "<!-- a comment -->\n# Network requirements\n|a|<br />|",
    ] {
        assert!(!looks_like_html(markdown), "{markdown:.40}");
    }
}

/// The HTML reader hands the meaning what the Markdown reader would: bold, code,
/// links and line breaks as inline Markdown, list items with their first paragraph,
/// tables with `<th>` headers, `<pre>` lines, and nothing of scripts or navigation.
#[test]
fn html_constructs_read_as_their_markdown() {
    let html = "<!DOCTYPE html><html><head><title>x</title></head><body>\
        <nav><p>Portal access 192.0.2.200</p></nav><main>\
        <h1>Network requirements</h1>\
        <h2 id=\"portal-access\"><a class=\"anchor-link\" href=\"#portal-access\"></a>Portal access</h2>\
        <ol><li><p>Add <strong>outbound port 443</strong> for these:</p>\
        <pre><code class=\"lang-ini\">cdn.example.com\n*.static.example.net\n</code></pre></li></ol>\
        <table><thead><tr><th>Data center</th><th>IP addresses</th><th>DNS name</th></tr></thead>\
        <tbody><tr><td><strong>US1</strong></td><td>192.0.2.1<br>192.0.2.2</td><td><code>*.us.portal.example.com</code></td></tr>\
        <tr><td>Gov US1</td><td>192.0.2.3, 192.0.2.4</td><td>*.gov.portal.example.us</td></tr></tbody></table>\
        <script>var x = '192.0.2.250';</script>\
        <h2>Mail server</h2><p>The addresses are:</p><ul><li>198.51.100.0/24</li><li><p>198.51.100.7</p></li></ul>\
        <p>To work with MailChimp, add this IP address to your anti-spam allow list: 198.51.100.9 (mail1.example.com)</p>\
        <h2>Log collector</h2><ul><li>Allow the log collector to initiate outbound traffic to the portal on port 443.</li>\
        <li>If you didn't specify a proxy, you need to allow http connections on port 80 for the URLs listed on the \
        <a href=\"/azure/tls\">certificate changes</a> page.</li></ul>\
        </main><footer><p>192.0.2.251</p></footer></body></html>";
    let c = parse_page(html, "page.html").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        nets(&c, Some("us1"), Feature::Portal),
        net_set(&["192.0.2.1", "192.0.2.2"])
    );
    assert_eq!(
        nets(&c, Some("gov-us1"), Feature::Portal),
        net_set(&["192.0.2.3", "192.0.2.4"])
    );
    assert_eq!(
        names(&c, Some("us1"), Feature::Portal),
        set(&["*.us.portal.example.com"])
    );
    assert_eq!(
        names(&c, None, Feature::Portal),
        set(&["cdn.example.com", "*.static.example.net"])
    );
    assert_eq!(
        nets(&c, None, Feature::Mail),
        net_set(&["198.51.100.0/24", "198.51.100.7", "198.51.100.9"])
    );
    assert_eq!(
        nets(&c, Some("us1"), Feature::LogCollector),
        net_set(&["192.0.2.1", "192.0.2.2"])
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("given only by a link")),
        "{:?}",
        c.warnings
    );
    let all: BTreeSet<String> = c.entries.iter().map(|e| e.peer.to_string()).collect();
    for outside in ["192.0.2.200/32", "192.0.2.250/32", "192.0.2.251/32"] {
        assert!(!all.contains(outside), "{outside} is outside the article");
    }
    assert_eq!(c.regions[1], Region::data_center("gov-us1", "Gov US1"));
}

proptest! {
    // Each case parses the whole 38 kB page.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn mangled_html_never_panics(
        cut in 0usize..LEARN_HTML.len(),
        insert in "[<>/=\"' a-z!-]{0,12}|</td>|<table>|<br>|</tr><tr>|\u{00e9}\u{1F600}",
    ) {
        let mut page = LEARN_HTML.to_string();
        let at = (0..=cut).rev().find(|i| page.is_char_boundary(*i)).unwrap_or(0);
        page.insert_str(at, &insert);
        let _ = parse_page(&page, "mangled.html");
    }

    #[test]
    fn arbitrary_html_never_panics(body in "(?s).{0,300}") {
        let _ = parse_page(&format!("<!DOCTYPE html><html><body><main><h2>Portal access</h2>{body}"), "fuzz.html");
    }
}
