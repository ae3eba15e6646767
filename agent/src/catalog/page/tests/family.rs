//! A generated family of pages: random catalogs rendered in random layouts (section
//! order, quoted or plain tables, `<br />` or comma lists with irregular spacing,
//! duplicates, proxy tables by data center or by feature row with Azure regions, DLP
//! present or dropped) must read back as the catalog they were made from.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

/// What a generated page lists: per data center, addresses per feature; per
/// commercial proxy region, addresses.
#[derive(Clone, Debug)]
struct Model {
    centers: Vec<(String, Vec<Vec<u8>>)>,
    proxy_regions: Vec<(String, Vec<u8>)>,
    with_dlp: bool,
}

const CENTER_LABELS: [&str; 4] = ["US1", "EU1", "EU2", "ANZ1"];
const AZURE_LABELS: [&str; 4] = ["West Europe", "North Europe", "West US 2", "Australia Southeast"];
/// portal, siem, app-connector, dlp in the data-center tables.
const TABLE_FEATURES: [Feature; 4] = [Feature::Portal, Feature::Siem, Feature::AppConnector, Feature::Dlp];

fn model() -> impl Strategy<Value = Model> {
    let hosts = || proptest::collection::vec(1u8..=254, 1..4);
    let centers = proptest::sample::subsequence(CENTER_LABELS.to_vec(), 1..=4)
        .prop_flat_map(move |labels| {
            let n = labels.len();
            (
                Just(labels),
                proptest::collection::vec(proptest::collection::vec(hosts(), 4), n),
            )
        })
        .prop_map(|(labels, lists)| labels.into_iter().map(String::from).zip(lists).collect());
    let proxies = proptest::sample::subsequence(AZURE_LABELS.to_vec(), 0..=4)
        .prop_flat_map(move |labels| {
            let n = labels.len();
            (Just(labels), proptest::collection::vec(hosts(), n))
        })
        .prop_map(|(labels, lists)| labels.into_iter().map(String::from).zip(lists).collect());
    (centers, proxies, any::<bool>()).prop_map(|(centers, proxy_regions, with_dlp)| Model {
        centers,
        proxy_regions,
        with_dlp,
    })
}

/// One way of writing the page.
#[derive(Clone, Debug)]
struct Layout {
    quoted: bool,
    breaks: bool,
    /// Spaces around separators, by position.
    spacing: Vec<u8>,
    duplicate: bool,
    order: Vec<usize>,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(0u8..3, 8),
        any::<bool>(),
        Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
    )
        .prop_map(|(quoted, breaks, spacing, duplicate, order)| Layout {
            quoted,
            breaks,
            spacing,
            duplicate,
            order,
        })
}

fn addr(feature_index: usize, host: u8) -> String {
    // One /24 of the documentation ranges per feature, so what lands where is checkable.
    let nets = ["192.0.2", "198.51.100", "203.0.113", "192.0.2"];
    let host = if feature_index == 3 { host / 2 + 127 } else { host };
    format!("{}.{host}", nets[feature_index])
}

fn list(items: &[String], layout: &Layout) -> String {
    let mut items: Vec<String> = items.to_vec();
    if layout.duplicate && !items.is_empty() {
        items.push(items[0].clone());
    }
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            let pad = " ".repeat(usize::from(layout.spacing[i % layout.spacing.len()]));
            out.push_str(&if layout.breaks {
                "<br />".to_string()
            } else {
                format!("{pad},{pad}")
            });
        }
        out.push_str(item);
    }
    out
}

fn table(rows: &[(String, String)], header: &[&str], layout: &Layout) -> String {
    let q = if layout.quoted { "> " } else { "" };
    let mut t = format!("{q}|{}|\n{q}|{}\n", header.join("|"), "----|".repeat(header.len()));
    for (first, rest) in rows {
        t.push_str(&format!("{q}|{first}|{rest}|\n"));
    }
    t
}

fn render(m: &Model, l: &Layout) -> String {
    let mut sections: Vec<String> = Vec::new();
    let rows = |fi: usize| -> Vec<(String, String)> {
        m.centers
            .iter()
            .map(|(label, lists)| {
                let addrs: Vec<String> = lists[fi].iter().map(|&h| addr(fi, h)).collect();
                (label.clone(), list(&addrs, l))
            })
            .collect()
    };
    sections.push(format!(
        "## Portal access\n\nAdd **outbound port 443** for these:\n\n{}",
        table(&rows(0), &["Data center", "IP addresses"], l)
    ));
    let mut proxy = String::from("## Access and session controls\n\n### Commercial customers\n\n");
    proxy.push_str("The following IP addresses should be allowed for both inbound and outbound connections:\n\n");
    let cell: Vec<String> = m
        .proxy_regions
        .iter()
        .map(|(label, hosts)| {
            let addrs: Vec<String> = hosts.iter().map(|&h| format!("203.0.113.{h}")).collect();
            format!(
                "{label}: {}",
                list(
                    &addrs,
                    &Layout {
                        breaks: false,
                        ..l.clone()
                    }
                )
            )
        })
        .collect();
    if cell.is_empty() {
        proxy.push_str("|Data center|DNS name|\n|---|---|\n");
        for (label, _) in &m.centers {
            proxy.push_str(&format!("|{label}|*.{}.proxy.example.com|\n", region_key(label)));
        }
    } else {
        proxy.push_str("||IP addresses|DNS name|\n|----|----|----|\n");
        proxy.push_str(&format!(
            "|**Session controls**|{}|*.proxy.example.com|\n",
            cell.join("<br /><br />")
        ));
    }
    sections.push(proxy);
    sections.push(format!(
        "## SIEM agent connection\n\nAdd **outbound port 443**:\n\n{}",
        table(&rows(1), &["Data center", "IP addresses"], l)
    ));
    sections.push(format!(
        "## App connector\n\nEnable the service to connect from these IP addresses:\n\n{}",
        table(&rows(2), &["Data center", "IP addresses"], l)
    ));
    if m.with_dlp {
        sections.push(format!(
            "## Third-party DLP integration\n\nEnable the service to connect from these IP addresses:\n\n{}",
            table(&rows(3), &["Data center", "IP addresses"], l)
        ));
    } else {
        sections.push(String::new());
    }
    let mut page = String::from("---\nms.date: 01/02/2025\n---\n\n# Network requirements\n\n");
    for &i in &l.order {
        page.push_str(&sections[i]);
        page.push('\n');
    }
    page.push_str("## Mail server\n\nThe dedicated email IP addresses are:\n\n- 198.51.100.192/26\n\n");
    page.push_str(
        "## Log collector\n\n- Allow the log collector to initiate outbound traffic to the portal on port 443.\n",
    );
    page
}

/// What the model says the catalog holds, as (region, feature, direction, peer).
fn expected(m: &Model) -> BTreeSet<(String, Feature, Direction, String)> {
    let mut want = BTreeSet::new();
    for (label, lists) in &m.centers {
        let id = region_key(label);
        for (fi, feature) in TABLE_FEATURES.iter().enumerate() {
            if *feature == Feature::Dlp && !m.with_dlp {
                continue;
            }
            for &h in &lists[fi] {
                let direction = feature.spec().directions[0];
                want.insert((id.clone(), *feature, direction, format!("{}/32", addr(fi, h))));
                if *feature == Feature::Portal {
                    want.insert((
                        id.clone(),
                        Feature::LogCollector,
                        Direction::Egress,
                        format!("{}/32", addr(fi, h)),
                    ));
                }
            }
        }
        if m.proxy_regions.is_empty() {
            want.insert((
                id.clone(),
                Feature::Proxy,
                Direction::Egress,
                format!("*.{id}.proxy.example.com"),
            ));
        } else {
            want.insert((
                id.clone(),
                Feature::Proxy,
                Direction::Egress,
                "*.proxy.example.com".into(),
            ));
        }
    }
    for (label, hosts) in &m.proxy_regions {
        for &h in hosts {
            for d in [Direction::Egress, Direction::Ingress] {
                want.insert((region_key(label), Feature::Proxy, d, format!("203.0.113.{h}/32")));
            }
        }
    }
    want.insert((
        "*".into(),
        Feature::Mail,
        Direction::Ingress,
        "198.51.100.192/26".into(),
    ));
    want
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn every_layout_reads_back_as_its_catalog(m in model(), l in layout()) {
        let page = render(&m, &l);
        let c = parse_page(&page, "family.md").map_err(|e| TestCaseError::fail(format!("{e}\n{page}")))?;
        let got: BTreeSet<(String, Feature, Direction, String)> = c
            .entries
            .iter()
            .map(|e| (e.region.clone().unwrap_or_else(|| "*".into()), e.feature, e.direction, e.peer.to_string()))
            .collect();
        prop_assert_eq!(got, expected(&m), "{}", page);
        prop_assert_eq!(c.warnings.iter().any(|w| w.contains("dlp")), !m.with_dlp);
        let azure: BTreeSet<String> = c.regions.iter().filter(|r| r.kind == RegionKind::AzureRegion).map(|r| r.id.clone()).collect();
        let want: BTreeSet<String> = m.proxy_regions.iter().map(|(l, _)| region_key(l)).collect();
        prop_assert_eq!(azure, want);
    }
}
