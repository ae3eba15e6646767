//! A generated family of pages: random catalogs rendered in random layouts (section
//! order, quoted or plain tables, `<br />` or comma lists with irregular spacing,
//! duplicates, proxy tables by data center or by feature row with Azure regions, DLP
//! present or dropped) and in each of the page's three forms (the docs' Markdown,
//! Learn's rendering mirrored as Markdown with its glued labels, joined names, `-`
//! header cells and CRLF, and Learn's HTML) must read back as the catalog they were
//! made from.

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
const AZURE_LABELS: [&str; 5] = [
    "West Europe",
    "North Europe",
    "West US 2",
    "Australia Southeast",
    "East US",
];
/// portal, siem, app-connector, dlp in the data-center tables.
const TABLE_FEATURES: [Feature; 4] = [Feature::Portal, Feature::Siem, Feature::AppConnector, Feature::Dlp];
/// The proxy's names when it is listed by Azure region: in one cell, which Learn's
/// rendering joins into one word.
const PROXY_NAMES: [&str; 2] = ["*.proxy.example.com", "*.admin.proxy.example.com"];

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
    let proxies = proptest::sample::subsequence(AZURE_LABELS.to_vec(), 0..=5)
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

/// Which of the page's forms is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// The docs' Markdown source.
    Docs,
    /// A Markdown mirror of Learn's rendering.
    LearnMarkdown,
    /// Learn's HTML.
    Html,
}

/// One way of writing the page.
#[derive(Clone, Debug)]
struct Layout {
    form: Form,
    quoted: bool,
    breaks: bool,
    /// Spaces around separators, by position.
    spacing: Vec<u8>,
    duplicate: bool,
    order: Vec<usize>,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop_oneof![Just(Form::Docs), Just(Form::LearnMarkdown), Just(Form::Html)],
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(0u8..3, 8),
        any::<bool>(),
        Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
    )
        .prop_map(|(form, quoted, breaks, spacing, duplicate, order)| Layout {
            form,
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

/// What a table cell holds, before a form writes it.
#[derive(Clone, Debug)]
enum Cell {
    Text(String),
    /// Addresses, one list.
    List(Vec<String>),
    /// Azure regions, each with its addresses (`West Europe: a, b`).
    Groups(Vec<(String, Vec<String>)>),
    /// Names, one per line.
    Names(Vec<&'static str>),
}

/// The page, before a form writes it.
#[derive(Clone, Debug)]
enum Block {
    Heading(usize, String),
    Para(String),
    Table(Vec<&'static str>, Vec<Vec<Cell>>),
    Item(String),
}

fn blocks(m: &Model, l: &Layout) -> Vec<Block> {
    use Block::*;
    let rows = |fi: usize| -> Vec<Vec<Cell>> {
        m.centers
            .iter()
            .map(|(label, lists)| {
                let addrs = lists[fi].iter().map(|&h| addr(fi, h)).collect();
                vec![Cell::Text(label.clone()), Cell::List(addrs)]
            })
            .collect()
    };
    let mut sections: Vec<Vec<Block>> = Vec::new();
    sections.push(vec![
        Heading(2, "Portal access".into()),
        Para("Add **outbound port 443** for these:".into()),
        Table(vec!["Data center", "IP addresses"], rows(0)),
    ]);
    let mut proxy = vec![
        Heading(2, "Access and session controls".into()),
        Heading(3, "Commercial customers".into()),
        Para("The following IP addresses should be allowed for both inbound and outbound connections:".into()),
    ];
    if m.proxy_regions.is_empty() {
        let rows = m
            .centers
            .iter()
            .map(|(label, _)| {
                vec![
                    Cell::Text(label.clone()),
                    Cell::Text(format!("*.{}.proxy.example.com", region_key(label))),
                ]
            })
            .collect();
        proxy.push(Table(vec!["Data center", "DNS name"], rows));
    } else {
        let groups = m
            .proxy_regions
            .iter()
            .map(|(label, hosts)| (label.clone(), hosts.iter().map(|&h| format!("203.0.113.{h}")).collect()))
            .collect();
        proxy.push(Table(
            vec!["", "IP addresses", "DNS name"],
            vec![vec![
                Cell::Text("**Session controls**".into()),
                Cell::Groups(groups),
                Cell::Names(PROXY_NAMES.to_vec()),
            ]],
        ));
    }
    sections.push(proxy);
    sections.push(vec![
        Heading(2, "SIEM agent connection".into()),
        Para("Add **outbound port 443**:".into()),
        Table(vec!["Data center", "IP addresses"], rows(1)),
    ]);
    sections.push(vec![
        Heading(2, "App connector".into()),
        Para("Enable the service to connect from these IP addresses:".into()),
        Table(vec!["Data center", "IP addresses"], rows(2)),
    ]);
    sections.push(if m.with_dlp {
        vec![
            Heading(2, "Third-party DLP integration".into()),
            Para("Enable the service to connect from these IP addresses:".into()),
            Table(vec!["Data center", "IP addresses"], rows(3)),
        ]
    } else {
        Vec::new()
    });
    let mut page = vec![Heading(1, "Network requirements".into())];
    for &i in &l.order {
        page.extend(sections[i].iter().cloned());
    }
    page.extend([
        Heading(2, "Mail server".into()),
        Para("The dedicated email IP addresses are:".into()),
        Item("198.51.100.192/26".into()),
        Heading(2, "Log collector".into()),
        Item("Allow the log collector to initiate outbound traffic to the portal on port 443.".into()),
    ]);
    page
}

/// A list of addresses as the layout writes it: `<br />`s (not in Learn's rendering,
/// which would glue the addresses) or commas with irregular spacing, maybe a duplicate.
fn list(items: &[String], l: &Layout, breaks: bool) -> String {
    let mut items: Vec<String> = items.to_vec();
    if l.duplicate && !items.is_empty() {
        items.push(items[0].clone());
    }
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            let pad = " ".repeat(usize::from(l.spacing[i % l.spacing.len()]));
            out.push_str(&if breaks {
                if l.form == Form::Html { "<br>" } else { "<br />" }.to_string()
            } else {
                format!("{pad},{pad}")
            });
        }
        out.push_str(item);
    }
    out
}

fn cell(c: &Cell, l: &Layout) -> String {
    // Learn's rendering drops the `<br />`s: what they separated runs together.
    let (line_break, group_break) = match l.form {
        Form::Docs => ("<br />", "<br /><br />"),
        Form::LearnMarkdown => ("", ""),
        Form::Html => ("<br>", "<br><br>"),
    };
    match c {
        Cell::Text(t) => t.clone(),
        Cell::List(items) => list(items, l, l.breaks && l.form != Form::LearnMarkdown),
        Cell::Groups(groups) => groups
            .iter()
            .map(|(label, items)| format!("{label}: {}", list(items, l, false)))
            .collect::<Vec<_>>()
            .join(group_break),
        Cell::Names(names) => names.join(line_break),
    }
}

/// `**bold**` as HTML.
fn html_inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split("**").enumerate() {
        if i > 0 {
            out.push_str(if i % 2 == 1 { "<strong>" } else { "</strong>" });
        }
        out.push_str(part);
    }
    out
}

fn render_markdown(page: &[Block], l: &Layout) -> String {
    let q = if l.quoted && l.form == Form::Docs { "> " } else { "" };
    let mut out = String::new();
    if l.form == Form::Docs {
        out.push_str("---\nms.date: 01/02/2025\n---\n\n");
    } else {
        out.push_str("Title: Network requirements | Microsoft Learn\n\nURL Source: https://learn.example/network-requirements\n\nMarkdown Content:\n");
    }
    for block in page {
        match block {
            Block::Heading(level, text) => out.push_str(&format!("{} {text}\n\n", "#".repeat(*level))),
            Block::Para(text) => out.push_str(&format!("{text}\n\n")),
            Block::Item(text) => out.push_str(&format!("- {text}\n\n")),
            Block::Table(header, rows) => {
                let header: Vec<&str> = header
                    .iter()
                    .map(|h| {
                        if h.is_empty() && l.form == Form::LearnMarkdown {
                            "-"
                        } else {
                            h
                        }
                    })
                    .collect();
                out.push_str(&format!(
                    "{q}|{}|\n{q}|{}\n",
                    header.join("|"),
                    "----|".repeat(header.len())
                ));
                for row in rows {
                    let cells: Vec<String> = row.iter().map(|c| cell(c, l)).collect();
                    out.push_str(&format!("{q}|{}|\n", cells.join("|")));
                }
                out.push('\n');
            }
        }
    }
    if l.form == Form::LearnMarkdown {
        out = out.replace('\n', "\r\n");
    }
    out
}

fn render_html(page: &[Block], l: &Layout) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en-us\">\n<head>\n<meta name=\"ms.date\" content=\"01/02/2025\" />\n\
         <script>var probe = \"198.51.100.250\";</script>\n</head>\n<body>\n\
         <nav><ul><li><a href=\"/\">Learn</a></li></ul></nav>\n<main id=\"main\">\n",
    );
    let mut in_list = false;
    for block in page {
        if in_list && !matches!(block, Block::Item(_)) {
            out.push_str("</ul>\n");
            in_list = false;
        }
        match block {
            Block::Heading(level, text) => {
                out.push_str(&format!("<h{level} id=\"{}\">{text}</h{level}>\n", region_key(text)));
            }
            Block::Para(text) => out.push_str(&format!("<p>{}</p>\n", html_inline(text))),
            Block::Item(text) => {
                if !in_list {
                    out.push_str("<ul>\n");
                    in_list = true;
                }
                out.push_str(&format!("<li>{}</li>\n", html_inline(text)));
            }
            Block::Table(header, rows) => {
                out.push_str("<table>\n<thead>\n<tr>");
                for h in header {
                    out.push_str(&format!("<th>{h}</th>"));
                }
                out.push_str("</tr>\n</thead>\n<tbody>\n");
                for row in rows {
                    out.push_str("<tr>\n");
                    for c in row {
                        let text = match c {
                            Cell::Text(t) => html_inline(t),
                            other => cell(other, l),
                        };
                        out.push_str(&format!("<td>{text}</td>\n"));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
        }
    }
    if in_list {
        out.push_str("</ul>\n");
    }
    out.push_str("</main>\n<footer><p>Feedback</p></footer>\n</body>\n</html>\n");
    out
}

fn render(m: &Model, l: &Layout) -> String {
    let page = blocks(m, l);
    match l.form {
        Form::Html => render_html(&page, l),
        Form::Docs | Form::LearnMarkdown => render_markdown(&page, l),
    }
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
            for name in PROXY_NAMES {
                want.insert((id.clone(), Feature::Proxy, Direction::Egress, name.into()));
            }
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
    #![proptest_config(ProptestConfig::with_cases(300))]
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
        prop_assert_eq!(c.warnings.len(), usize::from(!m.with_dlp), "{:?}", c.warnings);
        let azure: BTreeSet<String> = c.regions.iter().filter(|r| r.kind == RegionKind::AzureRegion).map(|r| r.id.clone()).collect();
        let want: BTreeSet<String> = m.proxy_regions.iter().map(|(l, _)| region_key(l)).collect();
        prop_assert_eq!(azure, want);
        let date = if l.form == Form::LearnMarkdown { None } else { Some("01/02/2025") };
        prop_assert_eq!(c.origins[0].clone(), Origin::Page { file: "family.md".into(), date: date.map(String::from) });
    }

    /// One model in the three forms gives one catalog (all but the lines).
    #[test]
    fn the_three_forms_agree(m in model(), l in layout()) {
        let read = |form: Form| {
            let page = render(&m, &Layout { form, ..l.clone() });
            parse_page(&page, "family").map(|c| meaning(&c))
        };
        let docs = read(Form::Docs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(read(Form::LearnMarkdown), Ok(docs.clone()));
        prop_assert_eq!(read(Form::Html), Ok(docs));
    }
}
