//! The page's 2024 layout: offerings, proxy regions named inside cells, a dropped
//! section, names given only by a link or by example.

use std::collections::BTreeSet;

use super::*;

const PAGE: &str = include_str!("../../testdata/network-requirements-offerings-layout.md");

fn parse(fallback: Option<&Catalog>) -> Catalog {
    let options = PageOptions {
        allow_partial: false,
        fallback,
    };
    parse_page_with(PAGE, "offerings.md", options).unwrap_or_else(|e| panic!("the fixture parses: {e}"))
}

fn peers(
    c: &Catalog,
    region: &str,
    feature: Feature,
    direction: Direction,
    offering: Option<Offering>,
) -> BTreeSet<String> {
    c.entries
        .iter()
        .filter(|e| {
            e.region.as_deref() == Some(region)
                && e.feature == feature
                && e.direction == direction
                && e.offering == offering
        })
        .map(|e| e.peer.to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn regions_are_data_centers_and_azure_regions() {
    let c = parse(None);
    let regions: Vec<(&str, &str, RegionKind)> = c
        .regions
        .iter()
        .map(|r| (r.id.as_str(), r.label.as_str(), r.kind))
        .collect();
    use RegionKind::{AzureRegion as Az, DataCenter as Dc};
    assert_eq!(
        regions,
        [
            ("us1", "US1", Dc),
            ("eu1", "EU1", Dc),
            ("gov-us1", "Gov US1", Dc),
            ("gcc", "GCC", Dc),
            ("westeurope", "West Europe", Az),
            ("northeurope", "North Europe", Az),
            ("westus2", "West US 2", Az),
            ("australiasoutheast", "Australia Southeast", Az),
            ("usgovarizona", "US Gov Arizona", Az),
            ("usgovvirginia", "US Gov Virginia", Az),
        ]
    );
    let offerings: Vec<Option<Offering>> = c.regions.iter().map(Region::offering).collect();
    assert_eq!(
        &offerings[..4],
        [
            Some(Offering::Commercial),
            Some(Offering::Commercial),
            Some(Offering::GccHigh),
            Some(Offering::Gcc)
        ]
    );
}

#[test]
fn proxy_regions_belong_to_their_offering_and_go_both_ways() {
    let c = parse(None);
    let we = set(&["198.51.100.30/32", "198.51.100.31/32", "198.51.100.34/32"]);
    for direction in [Direction::Egress, Direction::Ingress] {
        assert_eq!(
            peers(&c, "westeurope", Feature::Proxy, direction, Some(Offering::Commercial)),
            we
        );
    }
    assert_eq!(
        peers(
            &c,
            "westus2",
            Feature::Proxy,
            Direction::Ingress,
            Some(Offering::Commercial)
        ),
        set(&["192.0.2.30/32", "2001:db8:30::1/128", "192.0.2.35/32", "192.0.2.36/32"])
    );
    // US Gov Virginia is in both government tables: each offering keeps its own.
    assert_eq!(
        peers(
            &c,
            "usgovvirginia",
            Feature::Proxy,
            Direction::Egress,
            Some(Offering::GccHigh)
        ),
        set(&["203.0.113.42/32", "203.0.113.43/32"])
    );
    assert_eq!(
        peers(
            &c,
            "usgovvirginia",
            Feature::Proxy,
            Direction::Egress,
            Some(Offering::Gcc)
        ),
        set(&["203.0.113.51/32", "203.0.113.42/32"])
    );
    assert_eq!(
        peers(
            &c,
            "usgovarizona",
            Feature::Proxy,
            Direction::Ingress,
            Some(Offering::Gcc)
        ),
        set(&["203.0.113.50/32"])
    );
    assert_eq!(c.proxy_regions(Offering::GccHigh), ["usgovarizona", "usgovvirginia"]);
    assert_eq!(
        c.proxy_regions(Offering::Commercial),
        ["australiasoutheast", "northeurope", "westeurope", "westus2"]
    );
    // Names are connected to, never connected from.
    assert!(
        c.entries
            .iter()
            .all(|e| e.direction == Direction::Egress || matches!(e.peer, Peer::Net(_)))
    );
}

#[test]
fn proxy_names_go_to_the_data_centers_of_their_offering() {
    let c = parse(None);
    let egress = |region| peers(&c, region, Feature::Proxy, Direction::Egress, None);
    let commercial = set(&[
        "*.proxy.example.com",
        "*.admin-proxy.example.com",
        "*.access.proxy.example.com",
        "*.us.saml.proxy.example.com",
        "*.eu.saml.proxy.example.com",
    ]);
    assert_eq!(egress("us1"), commercial);
    assert_eq!(egress("eu1"), commercial);
    assert_eq!(egress("gov-us1"), set(&["*.proxy-gov.example.us", "*.saml.example.us"]));
    assert_eq!(egress("gcc"), set(&["*.proxy-gov.example.ms"]));
    // Selecting a data center's proxy brings its offering's proxy regions.
    let us1: BTreeSet<(String, String)> = c
        .selected("us1", Feature::Proxy, None)
        .filter(|(_, e)| e.direction == Direction::Ingress)
        .map(|(r, e)| (r.to_string(), e.peer.to_string()))
        .collect();
    assert!(us1.contains(&("westeurope".into(), "198.51.100.30/32".into())));
    assert!(
        us1.iter().all(|(_, p)| !p.starts_with("203.0.113.")),
        "no government address: {us1:?}"
    );
    let narrowed = ["northeurope".to_string()];
    let only: BTreeSet<String> = c
        .selected("us1", Feature::Proxy, Some(&narrowed))
        .filter(|(_, e)| e.direction == Direction::Ingress)
        .map(|(r, _)| r.to_string())
        .collect();
    assert_eq!(only, set(&["northeurope"]));
}

#[test]
fn tables_with_irregular_lists_and_duplicates() {
    let c = parse(None);
    assert_eq!(
        peers(&c, "us1", Feature::Portal, Direction::Egress, None),
        set(&[
            "192.0.2.0/28",
            "192.0.2.10/32",
            "192.0.2.11/32",
            "*.us.portal.example.com"
        ])
    );
    assert_eq!(
        peers(&c, "gcc", Feature::Portal, Direction::Egress, None),
        set(&["203.0.113.20/32", "2001:db8:20::1/128", "*.us1.portal.examplegov.com"])
    );
    assert_eq!(
        peers(&c, "us1", Feature::AppConnector, Direction::Ingress, None),
        set(&["192.0.2.50/32", "192.0.2.51/32"])
    );
    assert_eq!(
        peers(&c, "gov-us1", Feature::LogCollector, Direction::Egress, None),
        set(&[
            "203.0.113.10/32",
            "203.0.113.11/32",
            "*.us1.portal.example.us",
            "gov1console.blob.example.us"
        ])
    );
}

#[test]
fn what_the_page_no_longer_says_is_kept_or_reported() {
    let builtin = Catalog::builtin();
    let c = parse(Some(&builtin));
    assert!(c.entries.iter().all(|e| e.feature != Feature::Dlp));
    let warnings = c.warnings.join("\n");
    assert!(warnings.contains("no section for the dlp feature"), "{warnings}");
    assert!(
        warnings.contains("`<mytenant>.us2.example.com` is only an example"),
        "{warnings}"
    );
    // The certificate-check hosts are kept from the previous catalog, for both
    // features that link to them.
    let ocsp = set(&["ocsp.digicert.com", "ocsp.msocsp.com"]);
    for feature in [Feature::Siem, Feature::LogCollector] {
        let kept: BTreeSet<String> = c
            .entries
            .iter()
            .filter(|e| e.feature == feature && e.ports == [PortRange::single(80)])
            .map(|e| e.peer.to_string())
            .collect();
        assert_eq!(kept, ocsp, "{feature}");
    }
    assert!(
        warnings.contains("kept the 2 the previous catalog lists (ocsp.digicert.com, ocsp.msocsp.com)"),
        "{warnings}"
    );

    let without = parse(None);
    assert!(without.entries.iter().all(|e| e.ports != [PortRange::single(80)]));
    assert!(without.warnings.join("\n").contains("no previous catalog lists any"));
}

#[test]
fn cut_off_rows_are_refused_and_partial_reads_say_what_they_skipped() {
    let cut = PAGE.replace("|EU1|198.51.100.50|\n", "|EU1|198.51.100.50, 198.51\n");
    let err = parse_page(&cut, "cut.md").unwrap_err().to_string();
    assert!(
        err.ends_with("the table row does not end with `|` as its header does: the page looks cut off here"),
        "{err}"
    );
    let mid_list = PAGE.replace("|EU1|198.51.100.50|\n", "|EU1|198.51.100.50,|\n");
    let err = parse_page(&mid_list, "cut.md").unwrap_err().to_string();
    assert!(err.contains("the table row ends mid-list"), "{err}");
    let missing_column = PAGE.replace(
        "|GCC| 203.0.113.20, 2001:db8:20::1| *.us1.portal.examplegov.com |",
        "|GCC| 203.0.113.20|",
    );
    let err = parse_page(&missing_column, "cut.md").unwrap_err().to_string();
    assert!(err.contains("table row has 2 cells but the header has 3"), "{err}");

    let options = PageOptions {
        allow_partial: true,
        fallback: None,
    };
    let partial = parse_page_with(&cut, "cut.md", options).unwrap();
    assert!(
        partial.warnings.iter().any(|w| w.starts_with("skipped: line ")),
        "{:?}",
        partial.warnings
    );
    assert!(peers(&partial, "eu1", Feature::AppConnector, Direction::Ingress, None).is_empty());
    assert_eq!(
        peers(&partial, "us1", Feature::AppConnector, Direction::Ingress, None).len(),
        2
    );
}
