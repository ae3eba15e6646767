//! Small pages, one per quirk of the real page and one per error: what each reads as,
//! and that a typo costs its own item only.

use super::*;

#[test]
fn quirk_escaped_and_unescaped_wildcards() {
    let body = "|Data center|IP addresses|DNS name|\n|---|---|---|\n\
                |US1|192.0.2.1|\\*.a.example.com<br />*.b.example.com<br />\\*.c\\_d.example.com|\n";
    let c = parse(&page_with(Feature::Portal, body));
    assert_eq!(
        names(&c, Some("us1"), Feature::Portal),
        set(&["*.a.example.com", "*.b.example.com", "*.c_d.example.com"])
    );
}

#[test]
fn quirk_stray_angle_bracket_after_a_name() {
    let body = "|Data center|IP addresses|DNS name|\n|---|---|---|\n\
                |EU1|192.0.2.1|\\*.eu.portal.example.com<|\n\
                |EU2|192.0.2.2|*.eu2.portal.example.com<br|\n";
    let c = parse(&page_with(Feature::Portal, body));
    assert_eq!(
        names(&c, Some("eu1"), Feature::Portal),
        set(&["*.eu.portal.example.com"])
    );
    assert_eq!(
        names(&c, Some("eu2"), Feature::Portal),
        set(&["*.eu2.portal.example.com"])
    );
}

#[test]
fn quirk_escaped_slash_in_urls() {
    let body = "  | Data center |   URL    |\n  |-------------|----------|\n\
                \x20 |     US1     | https:\\//blob1.example.net/             |\n\
                \x20 |   Gov US1   | HTTPS://Blob2.Example.US/path?x=1 |\n";
    let c = parse(&page_with(Feature::LogCollector, body));
    assert_eq!(
        names(&c, Some("us1"), Feature::LogCollector),
        set(&["blob1.example.net"])
    );
    assert_eq!(
        names(&c, Some("gov-us1"), Feature::LogCollector),
        set(&["blob2.example.us"])
    );
}

#[test]
fn quirk_empty_items_and_short_rows() {
    let body = "|Data center|IP addresses||\n|----|----|----|\n\
                |US1|192.0.2.1<br /><br />192.0.2.2<br />|192.0.2.3<br /><br />|\n\
                |US2|192.0.2.4||\n\
                |US3|192.0.2.5|\n\
                |EU1|n/a|-|\n";
    let c = parse(&page_with(Feature::AppConnector, body));
    assert_eq!(
        nets(&c, Some("us1"), Feature::AppConnector),
        net_set(&["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    );
    assert_eq!(nets(&c, Some("us2"), Feature::AppConnector), net_set(&["192.0.2.4"]));
    assert_eq!(nets(&c, Some("us3"), Feature::AppConnector), net_set(&["192.0.2.5"]));
    assert!(nets(&c, Some("eu1"), Feature::AppConnector).is_empty());
}

#[test]
fn quirk_duplicates_collapse_keeping_the_first_line() {
    let body = "|Data center|IP addresses||\n|----|----|----|\n\
                |US3|192.0.2.7<br />192.0.2.7|192.0.2.8<br />192.0.2.7|\n\
                |US3|192.0.2.7|\n";
    let page = page_with(Feature::Proxy, body);
    let c = parse(&page);
    let listed: Vec<_> = c
        .entries
        .iter()
        .filter(|e| e.feature == Feature::Proxy && e.region.as_deref() == Some("us3"))
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        entry(&c, Some("us3"), Feature::Proxy, "192.0.2.7/32").line,
        line_of(&page, "|US3|")
    );
}

#[test]
fn quirk_one_list_split_over_columns() {
    let body = "> [!div class=\"mx-tableFixed\"]\n>\n\
                > |Data center|IP addresses|||DNS name|\n> |----|----|----|----|----|\n\
                > |US1|192.0.2.1<br />192.0.2.2|192.0.2.3|192.0.2.4<br />192.0.2.5|\\*.us1.example.com<br />\\*.us1.saml.example.com|\n";
    let c = parse(&page_with(Feature::Proxy, body));
    assert_eq!(
        nets(&c, Some("us1"), Feature::Proxy),
        net_set(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"])
    );
    assert_eq!(
        names(&c, Some("us1"), Feature::Proxy),
        set(&["*.us1.example.com", "*.us1.saml.example.com"])
    );
}

#[test]
fn quirk_quoted_and_plain_tables_read_alike() {
    let plain = "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.9<br/>192.0.2.10|\n";
    let quoted = "> |Data center|IP addresses|\n> |---|---|\n> |US1|192.0.2.9<BR>192.0.2.10|\n";
    let bare = "Data center | IP addresses\n--- | ---\nUS1 | 192.0.2.9 , 192.0.2.10\n";
    let expected = net_set(&["192.0.2.9", "192.0.2.10"]);
    for body in [plain, quoted, bare] {
        let c = parse(&page_with(Feature::Siem, body));
        assert_eq!(nets(&c, Some("us1"), Feature::Siem), expected, "{body}");
    }
}

#[test]
fn quirk_sentences_list_ocsp_names_and_the_mail_address() {
    let body = "- 192.0.2.128/25\n\nTo work with MailChimp, add this IP address to your anti-spam allow list to enable \
                notifications to be sent: 192.0.2.25 (mail1.example.com)\n\n> [!NOTE]\n> If you didn't specify a proxy, \
                you need to allow http connections to http://ocsp.example.com/ and ocsp.example.net on port 8080.\n";
    let page = page_with(Feature::Mail, body);
    let c = parse(&page);
    assert_eq!(
        nets(&c, None, Feature::Mail),
        net_set(&["192.0.2.128/25", "192.0.2.25"])
    );
    let ocsp = entry(&c, None, Feature::Mail, "ocsp.example.net");
    assert_eq!(
        (ocsp.direction, ocsp.ports.as_slice()),
        (Direction::Egress, &[PortRange::single(8080)][..])
    );
    assert_eq!(
        names(&c, None, Feature::Mail),
        set(&["ocsp.example.com", "ocsp.example.net"])
    );
    assert!(entry(&c, None, Feature::Mail, "192.0.2.25/32").direction == Direction::Ingress);
}

#[test]
fn government_names_go_to_government_regions_only() {
    let body = "For access, add these names:\n\n    portal.example.com\n\n\
                For US Government GCC High customers, also add:\n\n    portal.example.us\n    *.portal.example.us\n\n\
                Then, by data center:\n\n\
                |Data center|IP addresses|\n|---|---|\n|US1|192.0.2.1|\n|Gov US1|192.0.2.2|\n|Government US2 (Virginia)|192.0.2.3|\n";
    let c = parse(&page_with(Feature::Portal, body));
    assert_eq!(names(&c, None, Feature::Portal), set(&["portal.example.com"]));
    assert!(names(&c, Some("us1"), Feature::Portal).is_empty());
    for gov in ["gov-us1", "gov-us2"] {
        assert_eq!(
            names(&c, Some(gov), Feature::Portal),
            set(&["portal.example.us", "*.portal.example.us"])
        );
    }
    assert_eq!(c.regions[2], Region::data_center("gov-us2", "Government US2"));
}

#[test]
fn log_collector_follows_the_portal_table_when_the_page_says_so() {
    let says = "- Allow the log collector to initiate outbound traffic to the portal on port 443.\n\n\
                |Data center|URL|\n|---|---|\n|US1|https://blob.example.net/|\n";
    let c = parse(&page_with(Feature::LogCollector, says));
    assert_eq!(nets(&c, Some("us1"), Feature::LogCollector), net_set(&["192.0.2.1"]));
    assert_eq!(
        names(&c, Some("us1"), Feature::LogCollector),
        set(&["blob.example.net", "*.us1.portal.example.com"])
    );
    let silent = "- Allow the log collector to initiate outbound traffic to the [Azure ranges](https://example.com/) on port 443.\n\n\
                  |Data center|URL|\n|---|---|\n|US1|https://blob.example.net/|\n";
    let c = parse(&page_with(Feature::LogCollector, silent));
    assert!(nets(&c, Some("us1"), Feature::LogCollector).is_empty());
}

#[test]
fn region_ids_from_labels() {
    for (cell, label, id) in [
        ("US1", "US1", "us1"),
        ("  Gov US1  ", "Gov US1", "gov-us1"),
        ("Government US2", "Government US2", "gov-us2"),
        ("GovUS1", "GovUS1", "gov-us1"),
        ("US1 (West US 2)", "US1", "us1"),
        ("**EU3**", "EU3", "eu3"),
        ("ANZ1", "ANZ1", "anz1"),
        ("GCC", "GCC", "gcc"),
        ("EU 2", "EU 2", "eu2"),
    ] {
        assert_eq!(
            region_label_and_id(cell),
            (label.to_string(), id.to_string()),
            "{cell:?}"
        );
    }
}

// ---- a bad item in a row ------------------------------------------------------

fn partial(page: &str) -> Catalog {
    let options = PageOptions {
        allow_partial: true,
        fallback: None,
    };
    parse_page_with(page, "partial.md", options).unwrap_or_else(|e| panic!("a partial read parses: {e}\n{page}"))
}

/// The real page carried `13.64.16.132m` in US1's app connector row for 15 months. The
/// import refuses it naming the token and its line; with --allow-partial every other
/// address of the row is kept, those after the typo too, and the warning names it.
#[test]
fn a_typo_costs_its_own_item_only() {
    let body = "|Data center|IP addresses||\n|---|---|---|\n\
                |US1|192.0.2.1, 192.0.2.2, 13.64.16.132m, 192.0.2.3|192.0.2.4<br />192.0.2.5/33<br />192.0.2.6|\n\
                |US2|198.51.100.1|\n";
    let page = page_with(Feature::AppConnector, body);
    let line = line_of(&page, "13.64.16.132m");
    assert_eq!(
        parse_err(&page),
        format!("line {line}: expected an IP address or CIDR in the \"IP addresses\" column, found \"13.64.16.132m\"")
    );
    let c = partial(&page);
    assert_eq!(
        nets(&c, Some("us1"), Feature::AppConnector),
        net_set(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.6"])
    );
    assert_eq!(nets(&c, Some("us2"), Feature::AppConnector), net_set(&["198.51.100.1"]));
    let skipped: Vec<&String> = c.warnings.iter().filter(|w| w.starts_with("skipped")).collect();
    assert_eq!(
        skipped,
        [
            &format!(
                "skipped: line {line}: expected an IP address or CIDR in the \"IP addresses\" column, found \"13.64.16.132m\": \
                 that item is not allowed; the row's 5 other items are kept"
            ),
            &format!(
                "skipped: line {line}: expected an IP address or CIDR in the \"IP addresses\" column, found \"192.0.2.5/33\": \
                 that item is not allowed; the row's 5 other items are kept"
            ),
        ]
    );
}

/// The same in a proxy table, inside one Azure region's group and in the names column.
#[test]
fn a_typo_in_a_proxy_region_costs_its_own_item_only() {
    let body = "The following IP addresses should be allowed for both inbound and outbound connections:\n\n\
                ||IP addresses|DNS name|\n|---|---|---|\n\
                |**Session controls**|West Europe: 192.0.2.1, 192.0.2.2x, 192.0.2.3<br /><br />North Europe: 192.0.2.4|*.proxy.example.com<br />bad_name!|\n";
    let page = page_with(Feature::Proxy, body);
    assert!(parse_err(&page).contains("found \"192.0.2.2x\""));
    let c = partial(&page);
    let listed = |region: &str| -> BTreeSet<String> {
        c.entries
            .iter()
            .filter(|e| e.region.as_deref() == Some(region) && e.direction == Direction::Ingress)
            .map(|e| e.peer.to_string())
            .collect()
    };
    assert_eq!(listed("westeurope"), set(&["192.0.2.1/32", "192.0.2.3/32"]));
    assert_eq!(listed("northeurope"), set(&["192.0.2.4/32"]));
    assert!(names(&c, Some("us1"), Feature::Proxy).contains("*.proxy.example.com"));
    let skipped = c.warnings.iter().filter(|w| w.starts_with("skipped")).count();
    assert_eq!(skipped, 2, "{:?}", c.warnings);
    assert!(
        c.warnings.iter().any(|w| w.contains("found \"bad_name!\"")),
        "{:?}",
        c.warnings
    );
}

// ---- errors ---------------------------------------------------------------

#[test]
fn error_bad_address_in_an_address_column() {
    let body = "|Data center|IP addresses||\n|---|---|---|\n|US1|192.0.2.1|192.0.2.2<br />13.64.26.x|\n";
    let page = page_with(Feature::Proxy, body);
    let line = line_of(&page, "13.64.26.x");
    assert_eq!(
        parse_err(&page),
        format!("line {line}: expected an IP address or CIDR in the \"IP addresses\" column, found \"13.64.26.x\"")
    );
    let page = page_with(
        Feature::Proxy,
        "|Data center|IP addresses|\n|---|---|\n|US1|*.cas.example.com|\n",
    );
    let line = line_of(&page, "*.cas");
    assert_eq!(
        parse_err(&page),
        format!(
            "line {line}: expected an IP address or CIDR in the \"IP addresses\" column, found \"*.cas.example.com\""
        )
    );
}

#[test]
fn error_table_shapes() {
    let cases: [(&str, &str, String); 6] = [
        (
            "|192.0.2.2|192.0.2.3|",
            "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.1|192.0.2.2|192.0.2.3|\n",
            "table row has 4 cells but the header has 2".into(),
        ),
        (
            "| |192.0.2.9|",
            "|Data center|IP addresses|\n|---|---|\n| |192.0.2.9|\n",
            "data center label is empty".into(),
        ),
        (
            "|\u{2014}|",
            "|Data center|IP addresses|\n|---|---|\n|\u{2014}|192.0.2.1|\n",
            "data center label \"\u{2014}\" has no letter or digit to name a region".into(),
        ),
        (
            "|Purpose|",
            "|Purpose|IP addresses|\n|---|---|\n|US1|192.0.2.1|\n",
            "expected the first column of the table to be the data center, found \"Purpose\"".into(),
        ),
        (
            "|Ports|",
            "|Data center|Ports|\n|---|---|\n|US1|443|\n",
            "expected a column header naming IP addresses, DNS names or URLs, found \"Ports\"".into(),
        ),
        (
            "|Data center||",
            "|Data center||IP addresses|\n|---|---|---|\n|US1||192.0.2.1|\n",
            "column 2 of the table has an empty header and no column before it to continue".into(),
        ),
    ];
    for (marker, body, message) in cases {
        let page = page_with(Feature::Siem, body);
        let line = line_of(&page, marker);
        assert_eq!(parse_err(&page), format!("line {line}: {message}"), "{body}");
    }
    let page = page_with(Feature::Siem, "|Data center|\n|---|\n|US1|\n");
    let line = page.lines().position(|l| l == "|Data center|").map_or(0, |i| i + 1);
    assert_eq!(
        parse_err(&page),
        format!("line {line}: the table has no column after the data center")
    );
}

#[test]
fn error_host_bits_set() {
    let page = page_with(
        Feature::Dlp,
        "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.1/24|\n",
    );
    let line = line_of(&page, "192.0.2.1/24");
    assert_eq!(
        parse_err(&page),
        format!("line {line}: \"192.0.2.1/24\" has host bits set; write the network 192.0.2.0/24 or the address alone")
    );
}

#[test]
fn error_unreadable_lists_and_sentences() {
    let cases: [(Feature, &str, &str, &str); 6] = [
        (
            Feature::Mail,
            "- 192.0.2.6\n- 13.64.26.x\n",
            "13.64.26.x",
            "expected an IP address or CIDR in the bullet list, found \"13.64.26.x\"",
        ),
        (
            Feature::Mail,
            "- 192.0.2.6\n\nAlso allow 192.0.2.77 for bounces.\n",
            "192.0.2.77",
            "found the address \"192.0.2.77\" in a sentence the parser does not read; expected addresses in a table, a bullet list or after \"add this IP address ...:\"",
        ),
        (
            Feature::Mail,
            "- 192.0.2.6\n\nTo use it, add this IP address to your list: 192.0.2.9 and bogus\n",
            "bogus",
            "expected an IP address or CIDR after \"add this IP address ...:\", found \"bogus\"",
        ),
        (
            Feature::Siem,
            "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.3|\n\n> you need to allow http connections to ocsp.example.com on port eighty.\n",
            "eighty",
            "expected a port number after \"on port\", found \"eighty\"",
        ),
        (
            Feature::Siem,
            "|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.3|\n\n> you need to allow http connections to ocsp and crl on port 80.\n",
            "ocsp and crl",
            "expected a DNS name or URL in \"allow http connections to ... on port 80\", found \"ocsp\"",
        ),
        (
            Feature::Proxy,
            "Add these names:\n\n    *.proxy.example.com\n    example\n\n|Data center|IP addresses|\n|---|---|\n|US1|192.0.2.2|\n",
            "    example",
            "expected a DNS name or URL in the code block, found \"example\"",
        ),
    ];
    for (feature, body, marker, message) in cases {
        let page = page_with(feature, body);
        let line = line_of(&page, marker);
        assert_eq!(parse_err(&page), format!("line {line}: {message}"), "{body}");
    }
}

#[test]
fn error_unclosed_code_block() {
    let page = page_with(Feature::Proxy, "Names:\n\n```ini\n*.proxy.example.com\n");
    let line = line_of(&page, "```ini");
    assert_eq!(
        parse_err(&page),
        format!("line {line}: the code block opened here is never closed")
    );
    // Open at the end of the page.
    let body = format!("{}\nNames:\n\n~~~\nblob.example.net\n", filler(Feature::LogCollector));
    let page = page_with(Feature::LogCollector, &body);
    let page = page.split("## Next steps").next().unwrap_or_default();
    let line = line_of(page, "~~~");
    assert_eq!(
        parse_err(page),
        format!("line {line}: the code block opened here is never closed")
    );
}

#[test]
fn error_government_names_without_a_government_region() {
    let body = "For US Government GCC High customers, add:\n\n    portal.example.us\n\n\
                |Data center|IP addresses|\n|---|---|\n|US1|192.0.2.1|\n";
    let page = page_with(Feature::Portal, body);
    let line = line_of(&page, "For US Government");
    assert_eq!(
        parse_err(&page),
        format!(
            "line {line}: names for US Government GCC High customers, but no table lists a data center of theirs (a label starting with \"Gov\")"
        )
    );
}

#[test]
fn error_whole_page_problems() {
    assert_eq!(
        parse_err("# Hello\n\nNothing to see here.\n"),
        "no section of the page lists any address or name (is this the Network requirements page?)"
    );
    // A version of the page may drop a section (DLP went): a warning, not a refusal.
    let without_mail = page_with(Feature::Mail, "").replace("## Mail server", "## Post office");
    let c = parse(&without_mail);
    assert_eq!(
        c.warnings,
        [
            "the page has no section for the mail feature (a heading containing \"mail server\"): enabling it allows nothing from this page"
        ]
    );
    assert!(c.entries.iter().all(|e| e.feature != Feature::Mail));
    // Without a portal section it is not this page.
    let without_portal = page_with(Feature::Proxy, "").replace("## Portal access", "## Something else");
    assert_eq!(
        parse_err(&without_portal),
        "the page has no section for the portal feature: expected a heading containing \"portal access\""
    );
    let page = page_with(Feature::Mail, "Send mail from the [service](https://example.com/).\n");
    assert_eq!(
        parse_err(&page),
        format!(
            "line {}: section \"Mail server\" lists no address or name the parser can read",
            line_of(&page, "## Mail")
        )
    );
    let mut no_tables = String::new();
    for (_, heading) in HEADINGS {
        no_tables.push_str(&format!("{heading}\n\n- 192.0.2.1\n\n"));
    }
    assert_eq!(parse_err(&no_tables), "no table of the page lists a data center");
}

#[test]
fn sections_outside_the_features_are_not_read() {
    let mut page = page_with(Feature::Portal, filler(Feature::Portal));
    page.push_str("\n## Troubleshooting\n\n|Host|Address|\n|---|---|\n|x|13.64.26.x|\n\nPing 192.0.2.200 to test.\n\n```\nnot a name\n```\n");
    let c = parse(&page);
    assert!(c.entries.iter().all(|e| e.peer.to_string() != "192.0.2.200/32"));
}
