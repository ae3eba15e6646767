//! The page parser's tests: the shipped page entry by entry, small pages per quirk
//! and per error, the later layouts, properties; `offerings` reads the 2024 layout and
//! `family` a generated family of pages.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::{
    markdown::unescape,
    table::region_label_and_id,
    tokens::{clean_item, parse_address, parse_host_or_address, split_items},
    *,
};
use crate::catalog::{
    BUILTIN_PAGE, CatalogEntry, Direction, Feature, Offering, Peer, PortRange, Proto, Region, RegionKind, region_key,
};

mod family;
mod learn;
mod offerings;
mod quirks;

const LATER_LAYOUT: &str = include_str!("../../../../catalog/testdata/network-requirements-later-layout.md");

/// What a catalog allows and where, without the lines that list it (a page's forms
/// put the same thing on different lines).
type Meaning = BTreeSet<(
    Option<String>,
    Feature,
    String,
    Direction,
    Vec<PortRange>,
    Option<Offering>,
)>;

fn meaning(c: &Catalog) -> Meaning {
    c.entries
        .iter()
        .map(|e| {
            (
                e.region.clone(),
                e.feature,
                e.peer.to_string(),
                e.direction,
                e.ports.clone(),
                e.offering,
            )
        })
        .collect()
}

fn builtin() -> Catalog {
    parse_page(BUILTIN_PAGE, "network-requirements-2019-11.md")
        .unwrap_or_else(|e| panic!("the shipped page must parse: {e}"))
}

fn net(s: &str) -> IpNet {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .unwrap_or_else(|_| panic!("test address {s} is valid"))
}

fn nets(c: &Catalog, region: Option<&str>, feature: Feature) -> BTreeSet<IpNet> {
    c.entries
        .iter()
        .filter(|e| e.region.as_deref() == region && e.feature == feature)
        .filter_map(|e| match &e.peer {
            Peer::Net(n) => Some(*n),
            Peer::Name(_) => None,
        })
        .collect()
}

fn names(c: &Catalog, region: Option<&str>, feature: Feature) -> BTreeSet<String> {
    c.entries
        .iter()
        .filter(|e| e.region.as_deref() == region && e.feature == feature)
        .filter_map(|e| match &e.peer {
            Peer::Name(n) => Some(n.0.clone()),
            Peer::Net(_) => None,
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn net_set(items: &[&str]) -> BTreeSet<IpNet> {
    items.iter().map(|s| net(s)).collect()
}

/// The 1-based line of `page` that first contains `needle`.
fn line_of(page: &str, needle: &str) -> usize {
    page.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} is on a line of the test page"))
}

fn entry<'a>(c: &'a Catalog, region: Option<&str>, feature: Feature, peer: &str) -> &'a CatalogEntry {
    c.entries
        .iter()
        .find(|e| e.region.as_deref() == region && e.feature == feature && e.peer.to_string() == peer)
        .unwrap_or_else(|| panic!("{region:?} {feature} lists {peer}"))
}

// ---- the shipped page -------------------------------------------------------

const US: [&str; 6] = ["us1", "us2", "us3", "eu1", "eu2", "gov-us1"];

/// (region, feature, addresses, names), counted by reading the page; duplicates
/// within a row collapse. Region `None` is what the page lists for every region.
#[rustfmt::skip]
const COUNTS: &[(Option<&str>, Feature, usize, usize)] = &[
    (Some("us1"), Feature::Portal, 9, 1),
    (Some("us2"), Feature::Portal, 9, 1),
    (Some("us3"), Feature::Portal, 8, 1),
    (Some("eu1"), Feature::Portal, 9, 1),
    (Some("eu2"), Feature::Portal, 8, 1),
    (Some("gov-us1"), Feature::Portal, 2, 4),
    (None, Feature::Portal, 0, 12),
    (Some("us1"), Feature::Proxy, 70, 3),
    (Some("us2"), Feature::Proxy, 70, 3),
    (Some("us3"), Feature::Proxy, 82, 3), // 90 in the row, 8 repeated
    (Some("eu1"), Feature::Proxy, 70, 3),
    (Some("eu2"), Feature::Proxy, 60, 3),
    (Some("gov-us1"), Feature::Proxy, 0, 0),
    (None, Feature::Proxy, 0, 1),
    (Some("us1"), Feature::Siem, 9, 0),
    (Some("us2"), Feature::Siem, 9, 0),
    (Some("us3"), Feature::Siem, 8, 0),
    (Some("eu1"), Feature::Siem, 9, 0),
    (Some("eu2"), Feature::Siem, 8, 0),
    (Some("gov-us1"), Feature::Siem, 2, 0),
    (None, Feature::Siem, 0, 2),
    (Some("us1"), Feature::AppConnector, 21, 0),
    (Some("us2"), Feature::AppConnector, 17, 0), // 20 in the row, 3 repeated
    (Some("us3"), Feature::AppConnector, 10, 0),
    (Some("eu1"), Feature::AppConnector, 17, 0), // 20 in the row, 3 repeated
    (Some("eu2"), Feature::AppConnector, 10, 0),
    (Some("gov-us1"), Feature::AppConnector, 3, 0),
    (None, Feature::AppConnector, 0, 0),
    (Some("us1"), Feature::Dlp, 19, 0),
    (Some("us2"), Feature::Dlp, 15, 0), // 18 in the row, 3 repeated
    (Some("us3"), Feature::Dlp, 8, 0),
    (Some("eu1"), Feature::Dlp, 15, 0), // 17 in the row, 2 repeated
    (Some("eu2"), Feature::Dlp, 8, 0),
    (Some("gov-us1"), Feature::Dlp, 0, 0),
    (None, Feature::Dlp, 0, 0),
    (Some("us1"), Feature::Mail, 0, 0),
    (Some("us2"), Feature::Mail, 0, 0),
    (Some("us3"), Feature::Mail, 0, 0),
    (Some("eu1"), Feature::Mail, 0, 0),
    (Some("eu2"), Feature::Mail, 0, 0),
    (Some("gov-us1"), Feature::Mail, 0, 0),
    (None, Feature::Mail, 7, 0),
    // Blob storage host + the portal table's addresses and wildcard name.
    (Some("us1"), Feature::LogCollector, 9, 2),
    (Some("us2"), Feature::LogCollector, 9, 2),
    (Some("us3"), Feature::LogCollector, 8, 2),
    (Some("eu1"), Feature::LogCollector, 9, 2),
    (Some("eu2"), Feature::LogCollector, 8, 2),
    (Some("gov-us1"), Feature::LogCollector, 2, 2),
    (None, Feature::LogCollector, 0, 2),
];

#[test]
fn shipped_page_counts_per_region_and_feature() {
    let c = builtin();
    assert_eq!(
        COUNTS.len(),
        (US.len() + 1) * Feature::ALL.len(),
        "the table covers every pair"
    );
    for &(region, feature, addresses, dns_names) in COUNTS {
        assert_eq!(
            nets(&c, region, feature).len(),
            addresses,
            "addresses of {region:?} {feature}"
        );
        assert_eq!(
            names(&c, region, feature).len(),
            dns_names,
            "names of {region:?} {feature}"
        );
    }
    let total: usize = COUNTS.iter().map(|&(_, _, a, n)| a + n).sum();
    assert_eq!(c.entries.len(), total, "no entry outside the table, none twice");
}

#[test]
fn shipped_page_regions_and_source() {
    let c = builtin();
    let regions: Vec<(&str, &str)> = c.regions.iter().map(|r| (r.id.as_str(), r.label.as_str())).collect();
    assert_eq!(
        regions,
        [
            ("us1", "US1"),
            ("us2", "US2"),
            ("us3", "US3"),
            ("eu1", "EU1"),
            ("eu2", "EU2"),
            ("gov-us1", "Gov US1")
        ]
    );
    assert_eq!(c.source, "network-requirements-2019-11.md (ms.date 11/01/2019)");
    assert_eq!(c, Catalog::builtin(), "builtin() is this page");
}

/// First and last address of cells of the page, and some from the middle.
#[rustfmt::skip]
const SPOT_ADDRESSES: &[(&str, Feature, &[&str])] = &[
    ("us1", Feature::Portal, &["13.64.26.88", "52.183.75.62"]),
    ("us1", Feature::Proxy, &["40.81.63.1", "51.105.165.116", "51.105.165.37", "51.105.164.8", "40.66.60.180", "40.90.220.37", "40.91.126.157", "52.142.116.174"]),
    ("us2", Feature::Proxy, &["40.81.63.7", "20.40.132.195", "40.65.170.125", "104.45.170.194", "20.40.161.141", "191.235.121.69"]),
    ("us3", Feature::Proxy, &["40.81.62.224", "40.66.59.193", "40.66.61.193", "40.81.123.157", "104.45.170.186", "52.139.9.198", "52.139.2.0"]),
    ("eu1", Feature::Proxy, &["40.81.57.138", "52.157.234.160", "51.145.181.214", "52.157.237.107", "40.119.207.182", "52.249.25.160"]),
    ("eu2", Feature::Proxy, &["40.81.62.222", "52.142.124.23", "52.157.233.49", "52.155.182.50", "52.157.237.255", "52.190.26.220"]),
    ("us1", Feature::AppConnector, &["13.64.196.27", "13.68.76.47", "13.86.176.189", "104.209.35.177"]),
    ("us2", Feature::AppConnector, &["13.68.76.47", "40.84.4.93", "52.184.165.82", "104.46.116.211", "104.42.54.148", "104.46.122.189"]),
    ("us3", Feature::AppConnector, &["13.68.76.47", "104.42.54.148"]),
    ("eu1", Feature::AppConnector, &["13.80.22.71", "40.119.154.72", "40.67.219.133", "52.174.56.180"]),
    ("eu2", Feature::AppConnector, &["40.81.152.171", "51.145.108.250"]),
    ("gov-us1", Feature::AppConnector, &["52.227.138.248", "52.227.143.223"]),
    ("us1", Feature::Dlp, &["13.64.196.27", "13.64.31.116", "13.86.176.189", "104.209.35.177"]),
    ("us2", Feature::Dlp, &["20.36.222.59", "40.84.4.93", "52.184.165.82", "104.46.122.189"]),
    ("us3", Feature::Dlp, &["40.90.218.196", "51.143.120.242"]),
    ("eu1", Feature::Dlp, &["13.80.22.71", "40.115.25.50", "40.119.154.72", "52.174.56.180"]),
    ("eu2", Feature::Dlp, &["40.81.152.171", "51.145.108.250"]),
    ("us2", Feature::Siem, &["13.80.125.22", "52.184.165.82"]),
    ("eu2", Feature::Siem, &["13.80.125.22", "52.183.75.62"]),
];

#[test]
fn shipped_page_spot_values() {
    let c = builtin();
    let has = |region: Option<&str>, feature: Feature, addr: &str| {
        assert!(
            nets(&c, region, feature).contains(&net(addr)),
            "{region:?} {feature} lists {addr}"
        );
    };
    for &(region, feature, addresses) in SPOT_ADDRESSES {
        for a in addresses {
            has(Some(region), feature, a);
        }
    }
    assert!(
        !nets(&c, Some("us1"), Feature::Dlp).contains(&net("13.68.76.47")),
        "DLP US1 omits 13.68.76.47"
    );

    assert_eq!(
        nets(&c, Some("gov-us1"), Feature::Portal),
        net_set(&["13.72.19.4", "52.227.143.223"])
    );
    assert_eq!(
        nets(&c, Some("gov-us1"), Feature::Siem),
        net_set(&["13.72.19.4", "52.227.143.223"])
    );
    assert_eq!(
        nets(&c, Some("eu1"), Feature::Portal),
        net_set(&[
            "13.80.125.22",
            "40.119.154.72",
            "40.74.1.235",
            "40.74.6.204",
            "51.143.58.207",
            "52.137.89.147",
            "52.157.238.58",
            "52.174.56.180",
            "52.183.75.62",
        ])
    );
    assert_eq!(
        nets(&c, None, Feature::Mail),
        net_set(&[
            "65.55.234.192/26",
            "207.46.200.0/27",
            "65.55.52.224/27",
            "94.245.112.0/27",
            "111.221.26.0/27",
            "207.46.50.192/26",
            "198.2.134.139/32",
        ])
    );
    // The shared address stays listed for every region that lists it.
    for region in ["us1", "us2", "us3", "eu1", "eu2"] {
        has(Some(region), Feature::Portal, "13.80.125.22");
    }
    // The log collector reaches the portal's addresses of its region only.
    assert_eq!(
        nets(&c, Some("eu2"), Feature::LogCollector),
        nets(&c, Some("eu2"), Feature::Portal)
    );
    assert_eq!(
        nets(&c, Some("gov-us1"), Feature::LogCollector),
        nets(&c, Some("gov-us1"), Feature::Portal)
    );
}

#[test]
fn shipped_page_names_in_the_right_place() {
    let c = builtin();
    assert_eq!(
        names(&c, None, Feature::Portal),
        set(&[
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
        ])
    );
    let portal_wildcards = [
        ("us1", "*.us.portal.cloudappsecurity.com"),
        ("us2", "*.us2.portal.cloudappsecurity.com"),
        ("us3", "*.us3.portal.cloudappsecurity.com"),
        ("eu1", "*.eu.portal.cloudappsecurity.com"),
        ("eu2", "*.eu2.portal.cloudappsecurity.com"),
    ];
    for (region, name) in portal_wildcards {
        assert_eq!(
            names(&c, Some(region), Feature::Portal),
            set(&[name]),
            "{region} portal"
        );
    }
    assert_eq!(
        names(&c, Some("gov-us1"), Feature::Portal),
        set(&[
            "portal.cloudappsecurity.us",
            "*.portal.cloudappsecurity.us",
            "cdn.cloudappsecurity.com",
            "*.us1.portal.cloudappsecurity.us",
        ])
    );
    assert_eq!(names(&c, None, Feature::Proxy), set(&["*.cas.ms"]));
    for region in ["us1", "us2", "us3", "eu1", "eu2"] {
        let expected = [
            format!("*.{region}.cas.ms"),
            format!("*.{region}.access-control.cas.ms"),
            format!("*.{region}.saml.cas.ms"),
        ];
        assert_eq!(
            names(&c, Some(region), Feature::Proxy),
            expected.into_iter().collect(),
            "{region} proxy"
        );
    }
    let ocsp = set(&["ocsp.msocsp.com", "ocsp.digicert.com"]);
    assert_eq!(names(&c, None, Feature::Siem), ocsp);
    assert_eq!(names(&c, None, Feature::LogCollector), ocsp);
    let blobs = [
        ("us1", "adaprodconsole.blob.core.windows.net"),
        ("us2", "prod03use2console1.blob.core.windows.net"),
        ("us3", "prod5usw2console1.blob.core.windows.net"),
        ("eu1", "prod02euwconsole1.blob.core.windows.net"),
        ("eu2", "prod4uksconsole1.blob.core.windows.net"),
        ("gov-us1", "gprd1usgvconsole1.blob.core.usgovcloudapi.net"),
    ];
    for (region, blob) in blobs {
        let portal = names(&c, Some(region), Feature::Portal);
        let wildcard = portal
            .iter()
            .find(|n| n.contains(".portal."))
            .filter(|_| region != "gov-us1");
        let mut expected = set(&[blob]);
        expected.insert(
            wildcard
                .cloned()
                .unwrap_or_else(|| "*.us1.portal.cloudappsecurity.us".to_string()),
        );
        assert_eq!(
            names(&c, Some(region), Feature::LogCollector),
            expected,
            "{region} log collector"
        );
    }
    // Examples in prose and labels are not items.
    let all: BTreeSet<String> = c.entries.iter().map(|e| e.peer.to_string()).collect();
    for example in [
        "contoso.cloudappsecurity.com",
        "mod244533.us.portal.cloudappsecurity.com",
        "mail1.cloudappsecurity.com",
        "www.microsoft.com",
    ] {
        assert!(!all.contains(example), "{example} is an example, not an item");
    }
}

#[test]
fn shipped_page_directions_ports_and_lines() {
    let c = builtin();
    for e in &c.entries {
        let is_name = matches!(e.peer, Peer::Name(_));
        let (direction, port) = match e.feature {
            Feature::Siem | Feature::LogCollector if is_name && e.region.is_none() => (Direction::Egress, 80),
            Feature::Portal | Feature::Proxy | Feature::Siem | Feature::LogCollector => (Direction::Egress, 443),
            Feature::AppConnector => (Direction::Ingress, 443),
            Feature::Dlp => (Direction::Ingress, 11344),
            Feature::Mail => (Direction::Ingress, 25),
        };
        assert_eq!(
            (e.direction, e.proto, e.ports.as_slice()),
            (direction, Proto::Tcp, &[PortRange::single(port)][..]),
            "{e:?}"
        );
        // The entry's line shows its peer (names without the `*.` and escapes).
        let shown = e.peer.to_string();
        let shown = shown.trim_start_matches("*.").trim_end_matches("/32");
        let text = BUILTIN_PAGE.lines().nth(e.line - 1).unwrap_or("").to_ascii_lowercase();
        assert!(text.contains(shown), "line {} shows {shown}: {e:?}", e.line);
    }
    // Lines of first occurrence.
    assert_eq!(entry(&c, Some("us1"), Feature::Portal, "13.64.26.88/32").line, 73);
    assert_eq!(entry(&c, Some("us1"), Feature::Siem, "13.64.26.88/32").line, 109);
    assert_eq!(entry(&c, Some("us1"), Feature::LogCollector, "13.64.26.88/32").line, 73);
    assert_eq!(
        entry(
            &c,
            Some("us1"),
            Feature::LogCollector,
            "adaprodconsole.blob.core.windows.net"
        )
        .line,
        192
    );
    assert_eq!(entry(&c, None, Feature::Proxy, "*.cas.ms").line, 87);
    assert_eq!(entry(&c, None, Feature::Siem, "ocsp.msocsp.com").line, 117);
    assert_eq!(entry(&c, None, Feature::LogCollector, "ocsp.digicert.com").line, 203);
    assert_eq!(entry(&c, None, Feature::Mail, "198.2.134.139/32").line, 180);
    assert_eq!(
        entry(&c, Some("gov-us1"), Feature::Portal, "portal.cloudappsecurity.us").line,
        64
    );
    assert_eq!(entry(&c, Some("us3"), Feature::Proxy, "52.139.2.0/32").line, 97);
}

/// Independent of the parser: split the raw page on anything but digits, dots and
/// slashes, keep what parses as an IPv4 address or network, and check it is in
/// the catalog for the section's feature and the row's data center.
#[test]
fn shipped_page_every_address_token_is_in_the_catalog() {
    let c = builtin();
    let feature_of_heading: BTreeMap<&str, Feature> = [
        ("Portal access", Feature::Portal),
        ("Access and session controls", Feature::Proxy),
        ("SIEM agent connection", Feature::Siem),
        ("App connector", Feature::AppConnector),
        ("Third-party DLP integration", Feature::Dlp),
        ("Mail server", Feature::Mail),
        ("Log collector", Feature::LogCollector),
    ]
    .into_iter()
    .collect();
    let region_of_label: BTreeMap<&str, &str> = [
        ("US1", "us1"),
        ("US2", "us2"),
        ("US3", "us3"),
        ("EU1", "eu1"),
        ("EU2", "eu2"),
        ("Gov US1", "gov-us1"),
    ]
    .into_iter()
    .collect();
    let mut feature = None;
    let mut page_tokens = BTreeSet::new();
    let mut checked = 0;
    for line in BUILTIN_PAGE.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            feature = feature_of_heading.get(h.trim()).copied();
            continue;
        }
        // The data center of a table row is its first cell.
        let region = line
            .split('|')
            .nth(1)
            .and_then(|cell| region_of_label.get(cell.trim()).copied());
        for token in line.split(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == '/')) {
            let token = token.trim_matches(|ch| ch == '.' || ch == '/');
            let found = token
                .parse::<Ipv4Addr>()
                .map(|a| IpNet::from(IpAddr::V4(a)))
                .or_else(|_| token.parse::<Ipv4Net>().map(IpNet::V4));
            let Ok(found) = found else { continue };
            page_tokens.insert(found);
            let Some(feature) = feature else { continue };
            assert!(
                nets(&c, region, feature).contains(&found),
                "{found} ({line:.40}...) is in the catalog for {region:?} {feature}"
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked, 611,
        "the scan sees every address token of the feature sections"
    );
    for e in &c.entries {
        if let Peer::Net(n) = e.peer {
            assert!(page_tokens.contains(&n), "{n} of the catalog is on the page");
        }
    }
    let page_lower = unescape(BUILTIN_PAGE).to_ascii_lowercase();
    for e in &c.entries {
        if let Peer::Name(n) = &e.peer {
            assert!(page_lower.contains(n.as_str()), "{n} of the catalog is on the page");
        }
    }
}

// ---- small pages --------------------------------------------------------------

const HEADINGS: [(Feature, &str); 7] = [
    (Feature::Portal, "## Portal access"),
    (Feature::Proxy, "## Access and session controls"),
    (Feature::Siem, "## SIEM agent connection"),
    (Feature::AppConnector, "## App connector"),
    (Feature::Dlp, "## Third-party DLP integration"),
    (Feature::Mail, "## Mail server"),
    (Feature::LogCollector, "## Log collector"),
];

fn filler(feature: Feature) -> &'static str {
    match feature {
        Feature::Portal => {
            "|Data center|IP addresses|DNS name|\n|---|---|---|\n|US1|192.0.2.1|*.us1.portal.example.com|\n"
        }
        Feature::Proxy => "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.2|\n",
        Feature::Siem => "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.3|\n",
        Feature::AppConnector => "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.4|\n",
        Feature::Dlp => "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.5|\n",
        Feature::Mail => "- 192.0.2.6\n",
        Feature::LogCollector => "|Data center|URL|\n|---|---|\n|US1|https://blob.example.net/|\n",
    }
}

/// A page with every feature section, each listing a little for US1, where the
/// section of `feature` has `body` instead.
fn page_with(feature: Feature, body: &str) -> String {
    let mut page = String::from("# Network requirements\n\nIntro.\n\n");
    for (f, heading) in HEADINGS {
        page.push_str(heading);
        page.push_str("\n\n");
        page.push_str(if f == feature { body } else { filler(f) });
        page.push('\n');
    }
    page.push_str("## Next steps\n\nRead on.\n");
    page
}

fn parse(page: &str) -> Catalog {
    parse_page(page, "test.md").unwrap_or_else(|e| panic!("test page parses: {e}\n{page}"))
}

fn parse_err(page: &str) -> String {
    match parse_page(page, "test.md") {
        Ok(c) => panic!("test page must not parse, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

// ---- a later layout of the page ---------------------------------------------

fn describe(e: &CatalogEntry) -> String {
    let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
    format!(
        "{} {} {} {}/{} {}",
        e.region.as_deref().unwrap_or("*"),
        e.feature,
        e.direction,
        e.proto,
        ports.join(","),
        e.peer
    )
}

#[test]
fn later_layout_parses_into_the_expected_catalog() {
    let c = parse_page(LATER_LAYOUT, "network-requirements-later-layout.md")
        .unwrap_or_else(|e| panic!("the later layout parses: {e}"));
    assert_eq!(c.source, "network-requirements-later-layout.md (ms.date 03/15/2023)");
    let regions: Vec<(&str, &str)> = c.regions.iter().map(|r| (r.id.as_str(), r.label.as_str())).collect();
    assert_eq!(
        regions,
        [
            ("us1", "US1"),
            ("eu3", "EU3"),
            ("anz1", "ANZ1"),
            ("gov-us1", "Gov US1"),
            ("gov-us2", "Gov US2")
        ]
    );
    let mut expected: Vec<String> = [
        "* portal egress tcp/443 portal.example.com",
        "* portal egress tcp/443 *.portal.example.com",
        "* portal egress tcp/443 cdn.example.net",
        "* portal egress tcp/443 *.static.example.org",
        "gov-us1 portal egress tcp/443 portal.example.us",
        "gov-us1 portal egress tcp/443 *.portal.example.us",
        "gov-us2 portal egress tcp/443 portal.example.us",
        "gov-us2 portal egress tcp/443 *.portal.example.us",
        "us1 portal egress tcp/443 192.0.2.10/32",
        "us1 portal egress tcp/443 192.0.2.11/32",
        "us1 portal egress tcp/443 2001:db8:10::1/128",
        "us1 portal egress tcp/443 *.us.portal.example.com",
        "eu3 portal egress tcp/443 198.51.100.10/32",
        "eu3 portal egress tcp/443 198.51.100.11/32",
        "eu3 portal egress tcp/443 198.51.100.0/28",
        "eu3 portal egress tcp/443 *.eu3.portal.example.com",
        "anz1 portal egress tcp/443 203.0.113.10/32",
        "anz1 portal egress tcp/443 203.0.113.11/32",
        "anz1 portal egress tcp/443 *.anz1.portal.example.com",
        "gov-us1 portal egress tcp/443 192.0.2.20/32",
        "gov-us1 portal egress tcp/443 2001:db8:20::/48",
        "gov-us1 portal egress tcp/443 *.us1.portal.example.us",
        "gov-us2 portal egress tcp/443 192.0.2.21/32",
        "gov-us2 portal egress tcp/443 *.us2.portal.example.us",
        // Under "### Commercial customers": the commercial data centers only.
        "us1 proxy egress tcp/443 *.proxy.example.com",
        "us1 proxy egress tcp/443 *.admin-proxy.example.com",
        "eu3 proxy egress tcp/443 *.proxy.example.com",
        "eu3 proxy egress tcp/443 *.admin-proxy.example.com",
        "anz1 proxy egress tcp/443 *.proxy.example.com",
        "anz1 proxy egress tcp/443 *.admin-proxy.example.com",
        "us1 proxy egress tcp/443 192.0.2.30/32",
        "us1 proxy egress tcp/443 192.0.2.31/32",
        "us1 proxy egress tcp/443 192.0.2.32/32",
        "us1 proxy egress tcp/443 2001:db8:30::1/128",
        "us1 proxy egress tcp/443 *.us1.proxy.example.com",
        "us1 proxy egress tcp/443 *.us1.access.proxy.example.com",
        "eu3 proxy egress tcp/443 198.51.100.30/32",
        "eu3 proxy egress tcp/443 *.eu3.proxy.example.com",
        "anz1 proxy egress tcp/443 203.0.113.30/32",
        "anz1 proxy egress tcp/443 203.0.113.31/32",
        "us1 siem egress tcp/443 192.0.2.40/32",
        "us1 siem egress tcp/443 192.0.2.41/32",
        "eu3 siem egress tcp/443 198.51.100.40/32",
        "anz1 siem egress tcp/443 203.0.113.40/32",
        "gov-us1 siem egress tcp/443 192.0.2.42/32",
        "gov-us2 siem egress tcp/443 2001:db8:40::/64",
        "* siem egress tcp/80 ocsp.example.com",
        "* siem egress tcp/80 crl.example.net",
        "us1 app-connector ingress tcp/443 192.0.2.50/32",
        "us1 app-connector ingress tcp/443 192.0.2.51/32",
        "us1 app-connector ingress tcp/443 192.0.2.64/27",
        "eu3 app-connector ingress tcp/443 198.51.100.50/32",
        "gov-us2 app-connector ingress tcp/443 192.0.2.52/32",
        "us1 dlp ingress tcp/11344 192.0.2.60/32",
        "anz1 dlp ingress tcp/11344 203.0.113.60/32",
        "anz1 dlp ingress tcp/11344 2001:db8:60::1/128",
        "* mail ingress tcp/25 198.51.100.128/25",
        "* mail ingress tcp/25 2001:db8:25::/48",
        "* mail ingress tcp/25 203.0.113.25/32",
        "us1 log-collector egress tcp/443 us1console.blob.example.net",
        "eu3 log-collector egress tcp/443 eu3console.blob.example.net",
        "anz1 log-collector egress tcp/443 anz1console.blob.example.net",
        "gov-us1 log-collector egress tcp/443 gov1console.blob.example.us",
        "gov-us2 log-collector egress tcp/443 gov2console.blob.example.us",
        "* log-collector egress tcp/80 ocsp.example.com",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // "initiate outbound traffic to the portal": the portal table, per region.
    expected.extend(
        [
            "us1 log-collector egress tcp/443 192.0.2.10/32",
            "us1 log-collector egress tcp/443 192.0.2.11/32",
            "us1 log-collector egress tcp/443 2001:db8:10::1/128",
            "us1 log-collector egress tcp/443 *.us.portal.example.com",
            "eu3 log-collector egress tcp/443 198.51.100.10/32",
            "eu3 log-collector egress tcp/443 198.51.100.11/32",
            "eu3 log-collector egress tcp/443 198.51.100.0/28",
            "eu3 log-collector egress tcp/443 *.eu3.portal.example.com",
            "anz1 log-collector egress tcp/443 203.0.113.10/32",
            "anz1 log-collector egress tcp/443 203.0.113.11/32",
            "anz1 log-collector egress tcp/443 *.anz1.portal.example.com",
            "gov-us1 log-collector egress tcp/443 192.0.2.20/32",
            "gov-us1 log-collector egress tcp/443 2001:db8:20::/48",
            "gov-us1 log-collector egress tcp/443 *.us1.portal.example.us",
            "gov-us2 log-collector egress tcp/443 192.0.2.21/32",
            "gov-us2 log-collector egress tcp/443 *.us2.portal.example.us",
        ]
        .map(String::from),
    );
    let mut got: Vec<String> = c.entries.iter().map(describe).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

// ---- properties -------------------------------------------------------------

fn documentation_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (0usize..3, any::<u8>(), 24u8..=32).prop_map(|(range, host, len)| {
            let [a, b, c] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]][range];
            let net = Ipv4Net::new(Ipv4Addr::new(a, b, c, host), len).unwrap_or_default();
            IpNet::V4(net.trunc())
        }),
        (any::<u16>(), any::<u16>(), 32u8..=128).prop_map(|(group, host, len)| {
            let addr = Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, host);
            IpNet::V6(Ipv6Net::new(addr, len).unwrap_or_default().trunc())
        }),
    ]
}

const SEPARATORS: [&str; 9] = ["<br />", "<br/>", "<br>", "<BR />", ", ", ",", " , ", "; ", " "];

/// Renders `nets` into one US1 row split over `columns` address columns.
fn render_table(nets: &[IpNet], cuts: &[usize], separators: &[usize], quoted: bool, trailing_empty: bool) -> String {
    let mut cells: Vec<String> = Vec::new();
    let mut cell = String::new();
    for (i, n) in nets.iter().enumerate() {
        if cuts.contains(&i) && i > 0 {
            cells.push(std::mem::take(&mut cell));
        } else if i > 0 {
            cell.push_str(SEPARATORS[separators[i % separators.len()] % SEPARATORS.len()]);
        }
        // A host is written bare as often as not; the parser makes it a /32 or /128.
        if n.prefix_len() == n.max_prefix_len() && i % 2 == 0 {
            cell.push_str(&n.addr().to_string());
        } else {
            cell.push_str(&n.to_string());
        }
    }
    if trailing_empty {
        cell.push_str("<br /><br />");
    }
    cells.push(cell);
    let prefix = if quoted { "> " } else { "" };
    let mut header = String::from("|Data center|IP addresses|");
    let mut rule = String::from("|----|----|");
    for _ in 1..cells.len() {
        header.push('|');
        rule.push_str("----|");
    }
    format!("{prefix}{header}\n{prefix}{rule}\n{prefix}|US1|{}|\n", cells.join("|"))
}

proptest! {
    #[test]
    fn table_cells_give_back_exactly_their_addresses(
        wanted in prop::collection::btree_set(documentation_net(), 1..40),
        cuts in prop::collection::vec(0usize..40, 0..3),
        separators in prop::collection::vec(0usize..SEPARATORS.len(), 1..8),
        quoted in any::<bool>(),
        trailing_empty in any::<bool>(),
    ) {
        let list: Vec<IpNet> = wanted.iter().copied().collect();
        let table = render_table(&list, &cuts, &separators, quoted, trailing_empty);
        let c = parse_page(&page_with(Feature::Proxy, &table), "prop.md")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{table}")))?;
        prop_assert_eq!(nets(&c, Some("us1"), Feature::Proxy), wanted);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        let _ = parse_page(&text, "fuzz.md");
    }

    #[test]
    fn mangled_shipped_page_never_panics(
        cut in 0usize..BUILTIN_PAGE.len(),
        insert in "[|<>\\\\*/ \n#`>-]{0,6}|\u{00e9}\u{2014}|\u{1F600}",
        drop_line in 0usize..210,
    ) {
        let mut page: String = BUILTIN_PAGE
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != drop_line)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let at = (0..=cut.min(page.len())).rev().find(|i| page.is_char_boundary(*i)).unwrap_or(0);
        page.insert_str(at, &insert);
        let _ = parse_page(&page, "mangled.md");
    }
}

#[test]
fn items_are_cleaned() {
    for (raw, clean) in [
        ("`https://blob.example.net/`", "https://blob.example.net/"),
        ("<https://blob.example.net/>", "https://blob.example.net/"),
        ("[portal.example.com](https://portal.example.com)", "portal.example.com"),
        ("\\*.example.com<", "*.example.com"),
        ("*.example.com<br /", "*.example.com"),
        ("https:\\//x.example.com/", "https://x.example.com/"),
    ] {
        assert_eq!(clean_item(raw), clean, "{raw}");
    }
    assert_eq!(
        split_items("a.example.com<br />b.example.com<br/><br>c.example.com,d.example.com ;e.example.com"),
        [
            "a.example.com",
            "b.example.com",
            "c.example.com",
            "d.example.com",
            "e.example.com"
        ]
    );
    assert_eq!(
        parse_host_or_address("HTTPS://[2001:db8::1]:443/x", 1).ok().flatten(),
        None,
        "a port is not part of a name"
    );
    assert_eq!(
        parse_host_or_address("https://[2001:db8::1]/x", 1).ok().flatten(),
        Some(Peer::Net(net("2001:db8::1")))
    );
    assert_eq!(
        IpNet::from_str("192.0.2.0/24").ok(),
        parse_address("192.0.2.0/24", 1).ok().flatten()
    );
}
