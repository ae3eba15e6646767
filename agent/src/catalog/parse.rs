//! Reads a "Network requirements" page of Microsoft Cloud App Security (the Markdown
//! source of the docs site) into a [`Catalog`].
//!
//! The page is read line by line. `##` headings pick the feature (by keywords, so a
//! renamed heading still matches while it keeps its words); inside a feature's
//! section four kinds of block list peers:
//!
//! - tables whose first column is the data center and whose other columns hold
//!   addresses or names (the header says which);
//! - code blocks (indented or fenced) of names, one per line: global, or for the
//!   government regions when the paragraph before them is about US Government;
//! - bullet lists whose items are addresses or CIDRs: global;
//! - two sentence shapes: "allow http connections to X and Y on port N" (names,
//!   egress on tcp/N) and "add this IP address ...: ADDRESS (label)".
//!
//! Everything else is prose and is read only to refuse it when it holds an address
//! literal the shapes above do not explain: a page this parser half understands must
//! fail to import with the line it could not read, not yield an allow list that is
//! silently short (the operator would find out from an outage).
//!
//! Quirks of the page family handled here (each has a test below):
//!
//! - Duplicates: an address repeated in one cell (104.46.116.211 in US2 app
//!   connector) or across the columns of one row (52.139.2.0 in US3 proxy). The
//!   catalog keeps one entry per (region, feature, peer, direction, proto, ports),
//!   with the line of the first occurrence.
//! - Escaped and unescaped wildcards side by side: `\*.us.portal...` in one row,
//!   `*.us3.portal...` in the next. Markdown backslash escapes are undone (`\*`,
//!   `\/`, `\_`, ...).
//! - A stray `<` after a name (`\*.eu.portal.cloudappsecurity.com<`, a `<br />` cut
//!   short): a trailing fragment of `<br />` is dropped from an item.
//! - `https:\//host/` URLs: the escape is undone, then the scheme and path are
//!   stripped, leaving the host.
//! - Empty list items (`...<br /><br />|`) are skipped, as are cells that only say
//!   "n/a" or "-".
//! - One `<br />` list split over several columns with empty headers
//!   (`|IP addresses|||DNS name|`): an empty header continues the kind of the
//!   column before it.
//! - Rows with fewer cells than the header (EU2 and Gov US1 in App connector): the
//!   missing cells are empty. More cells than the header is an error unless the
//!   extra ones are empty, because their content would otherwise be lost.
//! - A separator row whose cell count differs from the header (later versions):
//!   the header decides.
//! - Tables inside a blockquote (`> |...|`, `>` alone as a blank line), inside a list
//!   item (indented), or plain.
//! - List separators: `<br />`, `<br/>`, `<br>` (any case), commas (with or without
//!   spaces around them), semicolons, whitespace.
//! - Data center labels with a sub-region (`US1 (West US 2)`), bold (`**US1**`), a
//!   "Gov"/"Government" prefix (`gov-us1`), padded with spaces.
//! - Items wrapped in backticks, `<autolinks>` or `[text](url)` links (later versions
//!   put the blob storage URLs in backticks).
//! - Parenthesised labels after an address in a sentence (`198.2.134.139
//!   (mail1.cloudappsecurity.com)`) are labels, not names.
//! - YAML front matter (its `# ...` comment lines are not headings); `ms.date` goes
//!   into the catalog's source.

use std::{collections::HashSet, net::IpAddr, ops::Range};

use ipnet::IpNet;

use super::{
    Catalog, CatalogEntry, Direction, DnsName, FEATURE_SPECS, Feature, FeatureSpec, Offering, Origin, Peer, PortRange,
    Proto, Region, RegionKind, region_key,
};

/// The largest page `parse_page` reads: the real page is about 30 kB; anything near
/// this is not the page.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// How `parse_page_with` treats what the page does not say in a form it can read.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageOptions<'a> {
    /// Skip (and report as warnings) rows, items and sentences that cannot be read,
    /// instead of refusing the page.
    pub allow_partial: bool,
    /// The catalog to take names from where the page gives them only by a link to
    /// another page (the certificate-check hosts): usually the one in use.
    pub fallback: Option<&'a Catalog>,
}

/// Why a page could not be read into a catalog. Every message names the line, when
/// there is one, and what the parser expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("line {line}: expected an IP address or CIDR {place}, found \"{found}\"")]
    BadAddress { line: usize, place: String, found: String },

    #[error("line {line}: \"{found}\" has host bits set; write the network {network} or the address alone")]
    HostBitsSet { line: usize, found: String, network: IpNet },

    #[error("line {line}: expected a DNS name or URL {place}, found \"{found}\"")]
    BadName { line: usize, place: String, found: String },

    #[error("line {line}: table row has {cells} cells but the header has {header}")]
    RowCells { line: usize, cells: usize, header: usize },

    #[error("line {line}: data center label is empty")]
    EmptyDataCenter { line: usize },

    #[error("line {line}: data center label \"{found}\" has no letter or digit to name a region")]
    BadDataCenter { line: usize, found: String },

    #[error("line {line}: expected the first column of the table to be the data center, found \"{found}\"")]
    NotDataCenterTable { line: usize, found: String },

    #[error("line {line}: expected a column header naming IP addresses, DNS names or URLs, found \"{found}\"")]
    UnknownColumn { line: usize, found: String },

    #[error("line {line}: the table has no column after the data center")]
    NoDataColumns { line: usize },

    #[error("line {line}: column {column} of the table has an empty header and no column before it to continue")]
    NothingToContinue { line: usize, column: usize },

    #[error(
        "line {line}: found the address \"{found}\" in a sentence the parser does not read; expected addresses in a table, a bullet list or after \"add this IP address ...:\""
    )]
    AddressInProse { line: usize, found: String },

    #[error("line {line}: expected a port number after \"on port\", found \"{found}\"")]
    BadPort { line: usize, found: String },

    #[error("line {line}: the code block opened here is never closed")]
    UnclosedCodeBlock { line: usize },

    #[error("line {line}: names for {who} customers, but no table lists a data center of theirs{hint}")]
    NoOfferingDataCenter {
        line: usize,
        who: &'static str,
        hint: &'static str,
    },

    #[error("line {line}: the table row does not end with `|` as its header does: the page looks cut off here")]
    UnclosedRow { line: usize },

    #[error("line {line}: the table row ends mid-list (\"{found}\"): the page looks cut off here")]
    RowEndsMidList { line: usize, found: String },

    #[error("line {line}: the row has no label in its first cell (expected a feature such as **Session controls**)")]
    EmptyRowLabel { line: usize },

    #[error("the page is {bytes} bytes, more than the {max} a page can be: is this the Network requirements page?")]
    TooLarge { bytes: usize, max: usize },

    #[error("no section of the page lists any address or name (is this the Network requirements page?)")]
    NothingListed,

    #[error("the page has no section for the {feature} feature: expected a heading containing {expected}")]
    MissingSection { feature: Feature, expected: String },

    #[error("line {line}: section \"{heading}\" lists no address or name the parser can read")]
    EmptySection { line: usize, heading: String },

    #[error("no table of the page lists a data center")]
    NoRegions,
}

/// The portal's own rule, used for features whose section says to let traffic out
/// "to the portal".
const PORTAL_DIRECTION: Direction = Direction::Egress;
const PORTAL_PORT: u16 = 443;

/// Parse a "Network requirements" page into a catalog. `source_name` (usually the
/// file name) is recorded in the catalog, with the page's `ms.date` when it has one.
pub fn parse_page(text: &str, source_name: &str) -> Result<Catalog, CatalogError> {
    parse_page_with(text, source_name, PageOptions::default())
}

/// `parse_page`, with a fallback catalog for names the page only links to, and the
/// choice to skip what cannot be read (each skip is a warning in the catalog).
pub fn parse_page_with(text: &str, source_name: &str, options: PageOptions<'_>) -> Result<Catalog, CatalogError> {
    if text.len() > MAX_PAGE_BYTES {
        return Err(CatalogError::TooLarge {
            bytes: text.len(),
            max: MAX_PAGE_BYTES,
        });
    }
    let lines: Vec<&str> = text.lines().collect();
    let (body_start, page_date) = front_matter(&lines);
    let mut reader = Reader::new(options.allow_partial);
    reader.read(&lines, body_start)?;
    let origin = Origin::Page {
        file: source_name.to_string(),
        date: page_date,
    };
    reader.finish(origin, options.fallback)
}

/// Where the Markdown body starts (after YAML front matter) and the page's `ms.date`.
fn front_matter(lines: &[&str]) -> (usize, Option<String>) {
    if lines.first().map(|l| l.trim()) != Some("---") {
        return (0, None);
    }
    let Some(close) = lines.iter().skip(1).position(|l| l.trim() == "---") else {
        // Not front matter after all: read the whole text.
        return (0, None);
    };
    let date = lines[1..=close]
        .iter()
        .find_map(|l| l.trim().strip_prefix("ms.date:"))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    (close + 2, date)
}

/// Who a draft entry is for, before the page's regions are all known.
#[derive(Clone, Debug)]
enum Scope {
    /// Listed for every region.
    Global,
    /// Listed for the data centers of these offerings; `line` is what says so.
    Offerings { offerings: Vec<Offering>, line: usize },
    /// Listed for one data center (its id).
    Region(String),
    /// A proxy region of one offering's table (`West Europe: ...`).
    AzureRegion { id: String, offering: Offering },
}

#[derive(Clone, Debug)]
struct Draft {
    scope: Scope,
    feature: Feature,
    peer: Peer,
    direction: Direction,
    port: u16,
    line: usize,
    /// From a per-data-center table: the entries other sections refer to as "the
    /// portal" come from these.
    from_region_table: bool,
}

/// The `##` section being read.
#[derive(Clone, Debug)]
struct Section {
    rule: &'static FeatureSpec,
    heading: String,
    line: usize,
    /// The offerings the text is about now ("### US Government offerings", "For **US
    /// Government GCC** customers:"), and the line that said so; empty: every one.
    offerings: Vec<Offering>,
    offerings_line: usize,
    /// The section said to allow its addresses "for both inbound and outbound
    /// connections".
    both_ways: bool,
}

impl Section {
    fn direction(&self) -> Direction {
        self.rule.directions[0]
    }
}

/// Names the page gives only by a link to another page ("the URLs listed on the
/// [Azure TLS certificate changes](...) page").
#[derive(Clone, Debug)]
struct Linked {
    feature: Feature,
    port: u16,
    line: usize,
}

/// An open fenced code block.
#[derive(Clone, Copy, Debug)]
struct Fence {
    marker: char,
    len: usize,
    line: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColumnKind {
    Addresses,
    Names,
}

#[derive(Clone, Debug)]
struct Column {
    kind: ColumnKind,
    /// The header as the page prints it (for an empty header, the header of the
    /// column it continues), so errors name the column the reader sees.
    title: String,
    /// An empty header: the column continues the list of the one before it.
    continuation: bool,
}

impl Column {
    fn peer(&self, item: &str, line: usize) -> Result<Peer, CatalogError> {
        let place = || format!("in the \"{}\" column", self.title);
        match self.kind {
            ColumnKind::Addresses => {
                parse_address(item, line)?
                    .map(Peer::Net)
                    .ok_or_else(|| CatalogError::BadAddress {
                        line,
                        place: place(),
                        found: item.to_string(),
                    })
            }
            ColumnKind::Names => parse_host_or_address(item, line)?.ok_or_else(|| CatalogError::BadName {
                line,
                place: place(),
                found: item.to_string(),
            }),
        }
    }
}

/// The shape of a table, from its header.
#[derive(Clone, Debug)]
struct Table {
    /// Rows are named by a feature (`**Session controls**`), the first header cell is
    /// empty; otherwise rows are named by a data center.
    by_feature: bool,
    columns: Vec<Column>,
    /// Cells in the header.
    cells: usize,
    /// The header ends with `|`: so must every row (a row without is cut off).
    closed: bool,
}

struct Reader {
    regions: Vec<Region>,
    drafts: Vec<Draft>,
    /// Every feature section met, in page order (a feature may have several).
    sections: Vec<Section>,
    section: Option<Section>,
    fence: Option<Fence>,
    in_html_comment: bool,
    /// The previous line was blank: an indented line after it starts a code block.
    prev_blank: bool,
    in_indented_code: bool,
    /// Inside a list item: indented lines continue the item, they are not code.
    in_list: bool,
    /// Scope of the code block being read.
    code_scope: Scope,
    /// Features whose section says to let traffic out "to the portal".
    portal_followers: Vec<Feature>,
    linked: Vec<Linked>,
    warnings: Vec<String>,
    allow_partial: bool,
}

impl Reader {
    fn new(allow_partial: bool) -> Self {
        Reader {
            regions: Vec::new(),
            drafts: Vec::new(),
            sections: Vec::new(),
            section: None,
            fence: None,
            in_html_comment: false,
            prev_blank: true,
            in_indented_code: false,
            in_list: false,
            code_scope: Scope::Global,
            portal_followers: Vec::new(),
            linked: Vec::new(),
            warnings: Vec::new(),
            allow_partial,
        }
    }

    /// With `allow_partial`, a construct that cannot be read is skipped and reported;
    /// without, it refuses the page.
    fn tolerate(&mut self, result: Result<(), CatalogError>) -> Result<(), CatalogError> {
        match result {
            Err(e) if self.allow_partial => {
                self.warnings.push(format!("skipped: {e}"));
                Ok(())
            }
            other => other,
        }
    }

    fn read(&mut self, lines: &[&str], start: usize) -> Result<(), CatalogError> {
        let mut index = start;
        while index < lines.len() {
            let line = index + 1;
            let (quoted, body) = strip_quote(lines[index]);
            index += 1;

            if let Some(fence) = self.fence {
                // A fence left open swallows the rest of the page; stop at the next
                // section instead of complaining about its lines as names.
                if !quoted && indent_width(body) < 4 && heading(body).is_some_and(|(level, _)| level <= 2) {
                    return Err(CatalogError::UnclosedCodeBlock { line: fence.line });
                }
                if closes_fence(body, fence) {
                    self.fence = None;
                    self.prev_blank = true;
                } else if self.section.is_some() {
                    let read = self.read_code_line(line, body);
                    self.tolerate(read)?;
                }
                continue;
            }
            if self.in_html_comment {
                self.in_html_comment = !body.contains("-->");
                continue;
            }
            if body.trim_start().starts_with("<!--") {
                self.in_html_comment = !body.contains("-->");
                continue;
            }
            if body.trim().is_empty() {
                self.prev_blank = true;
                continue;
            }

            let indent = indent_width(body);
            let after_blank = std::mem::replace(&mut self.prev_blank, false);
            let continues_code = std::mem::replace(&mut self.in_indented_code, false);

            if indent >= 4 && !self.in_list && (after_blank || continues_code) {
                // An indented code block: cannot interrupt a paragraph, and inside a
                // list item indented lines continue the item instead.
                if !continues_code {
                    self.code_scope = self.scope_of_code_block();
                }
                self.in_indented_code = true;
                if self.section.is_some() {
                    let read = self.read_code_line(line, body);
                    self.tolerate(read)?;
                }
                continue;
            }
            if !quoted
                && indent < 4
                && let Some((level, title)) = heading(body)
            {
                self.enter_heading(level, title, line);
                self.prev_blank = true;
                continue;
            }
            if let Some(fence) = opens_fence(body, line) {
                self.fence = Some(fence);
                self.code_scope = self.scope_of_code_block();
                continue;
            }
            if body.contains('|')
                && let Some(next) = lines.get(index)
                && is_separator_row(strip_quote(next).1)
            {
                if indent < 2 {
                    self.in_list = false;
                }
                index = self.read_table(lines, index - 1)?;
                self.prev_blank = true;
                continue;
            }
            if let Some(item) = list_item(body) {
                self.in_list = true;
                if self.section.is_some() {
                    let read = self.read_list_item(line, item);
                    self.tolerate(read)?;
                }
                continue;
            }
            if indent < 2 {
                self.in_list = false;
            }
            if self.section.is_some() {
                let read = self.read_prose(line, body);
                self.tolerate(read)?;
            }
        }
        match self.fence {
            Some(fence) => Err(CatalogError::UnclosedCodeBlock { line: fence.line }),
            None => Ok(()),
        }
    }

    fn enter_heading(&mut self, level: usize, title: &str, line: usize) {
        self.in_list = false;
        self.in_indented_code = false;
        let lower = title.to_ascii_lowercase();
        let rule = FEATURE_SPECS
            .iter()
            .find(|r| r.keywords.iter().any(|k| lower.contains(k)));
        match (level, rule) {
            (level, _) if level >= 3 && self.section.is_some() => {
                // A sub-heading ("### Commercial customers", "### US Government
                // offerings") stays in its section and may say whose text follows.
                if let Some(section) = &mut self.section
                    && let Some(offerings) = offerings_named(&lower)
                {
                    section.offerings = offerings;
                    section.offerings_line = line;
                }
            }
            (_, Some(rule)) if level >= 2 => {
                let section = Section {
                    rule,
                    heading: title.to_string(),
                    line,
                    offerings: Vec::new(),
                    offerings_line: line,
                    both_ways: false,
                };
                self.sections.push(section.clone());
                self.section = Some(section);
            }
            (level, _) if level >= 3 => {}
            _ => self.section = None,
        }
    }

    /// Who the code block starting now lists names for: the offering the text is
    /// about ("For US Government GCC High customers, ..."), or everyone.
    fn scope_of_code_block(&self) -> Scope {
        match &self.section {
            Some(s) if !s.offerings.is_empty() => Scope::Offerings {
                offerings: s.offerings.clone(),
                line: s.offerings_line,
            },
            _ => Scope::Global,
        }
    }

    /// Adds what the section lists. Addresses on the section's own port go both ways
    /// when the section says so (the proxy's); names are only ever looked up and
    /// connected to.
    fn push(&mut self, scope: Scope, peer: Peer, direction: Direction, port: u16, line: usize) {
        let Some(section) = &self.section else { return };
        let both = section.both_ways
            && matches!(peer, Peer::Net(_))
            && direction == section.direction()
            && port == section.rule.port;
        let directions: &[Direction] = if both {
            &[Direction::Egress, Direction::Ingress]
        } else {
            std::slice::from_ref(&direction)
        };
        for &direction in directions {
            self.drafts.push(Draft {
                from_region_table: matches!(scope, Scope::Region(_)),
                scope: scope.clone(),
                feature: section.rule.feature,
                peer: peer.clone(),
                direction,
                port,
                line,
            });
        }
    }

    /// The section's own direction and port. Only asked inside a section; outside
    /// one `push` drops the entry anyway.
    fn defaults(&self) -> (Direction, u16) {
        match &self.section {
            Some(s) => (s.direction(), s.rule.port),
            None => (Direction::Egress, 0),
        }
    }

    /// The offerings the current text is about; a table of proxy regions outside any
    /// offering's text is the commercial one (the page's older layouts had no other).
    fn current_offerings(&self) -> Vec<Offering> {
        match &self.section {
            Some(s) if !s.offerings.is_empty() => s.offerings.clone(),
            _ => vec![Offering::Commercial],
        }
    }

    fn read_code_line(&mut self, line: usize, body: &str) -> Result<(), CatalogError> {
        let (direction, port) = self.defaults();
        for item in split_items(body) {
            let peer = parse_host_or_address(&item, line)?.ok_or_else(|| CatalogError::BadName {
                line,
                place: "in the code block".to_string(),
                found: item.clone(),
            })?;
            self.push(self.code_scope.clone(), peer, direction, port, line);
        }
        Ok(())
    }

    /// A list item lists addresses when all it holds is addresses; otherwise it is
    /// prose ("Allow the log collector to ...").
    fn read_list_item(&mut self, line: usize, item: &str) -> Result<(), CatalogError> {
        let without_labels = strip_parenthesised(item);
        let tokens = split_items(&without_labels);
        let nets: Vec<Option<IpNet>> = tokens
            .iter()
            .map(|t| parse_address(t, line))
            .collect::<Result<_, _>>()?;
        if !tokens.is_empty() && nets.iter().all(Option::is_some) {
            let (direction, port) = self.defaults();
            for net in nets.into_iter().flatten() {
                self.push(Scope::Global, Peer::Net(net), direction, port, line);
            }
            return Ok(());
        }
        // "- 13.64.26.x" is a broken address, not a sentence.
        if let [only] = tokens.as_slice()
            && only.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(CatalogError::BadAddress {
                line,
                place: "in the bullet list".to_string(),
                found: only.clone(),
            });
        }
        self.read_prose(line, item)
    }

    fn read_prose(&mut self, line: usize, text: &str) -> Result<(), CatalogError> {
        let lower = text.to_ascii_lowercase();
        if let Some(section) = &mut self.section {
            if (lower.contains("customer") || lower.contains("offering"))
                && let Some(offerings) = offerings_named(&lower)
            {
                section.offerings = offerings;
                section.offerings_line = line;
            }
            if lower.contains("both inbound and outbound") {
                section.both_ways = true;
            }
        }
        if let Some(section) = &self.section
            && section.rule.feature != Feature::Portal
            && mentions_traffic_to_portal(&lower)
        {
            self.portal_followers.push(section.rule.feature);
        }
        for example in example_names(text) {
            self.warnings.push(format!(
                "line {line}: `{example}` is only an example of a name, so it is not allowed as one; \
                 name your tenant's host in an [[allow]] entry if the catalog's entries do not cover it"
            ));
        }

        let mut read: Vec<Range<usize>> = Vec::new();
        if let Some(span) = self.read_linked_names(line, &lower)? {
            read.push(span);
        }
        if let Some(span) = self.read_connections_sentence(line, text, &lower)? {
            read.push(span);
        }
        if let Some(span) = self.read_address_sentence(line, text, &lower)? {
            read.push(span);
        }
        // Fail closed on any other address literal.
        let mut unread = String::with_capacity(text.len());
        let mut at = 0;
        let mut spans = read;
        spans.sort_by_key(|r| r.start);
        for span in spans {
            if span.start > at {
                unread.push_str(text.get(at..span.start).unwrap_or(""));
            }
            unread.push(' ');
            at = at.max(span.end);
        }
        unread.push_str(text.get(at..).unwrap_or(""));
        if let Some(found) = unread.split_whitespace().find_map(address_literal) {
            return Err(CatalogError::AddressInProse { line, found });
        }
        Ok(())
    }

    /// "you need to allow http connections on port 80 for the URLs listed on the
    /// [Azure TLS certificate changes](...) page": the names are on another page.
    /// Recorded, so the names the fallback catalog has are kept (with a warning).
    fn read_linked_names(&mut self, line: usize, lower: &str) -> Result<Option<Range<usize>>, CatalogError> {
        const PHRASE: &str = "connections on port";
        let Some(at) = lower.find(PHRASE) else {
            return Ok(None);
        };
        if !lower.contains("](") || !lower[at..].contains("listed") {
            return Ok(None);
        }
        let after = lower[at + PHRASE.len()..].trim_start();
        let port_text: String = after.chars().take_while(char::is_ascii_digit).collect();
        let port = port_text.parse::<u16>().map_err(|_| CatalogError::BadPort {
            line,
            found: after.split_whitespace().next().unwrap_or("").to_string(),
        })?;
        if let Some(section) = &self.section {
            self.linked.push(Linked {
                feature: section.rule.feature,
                port,
                line,
            });
        }
        Ok(Some(at..lower.len()))
    }

    /// "you need to allow http connections to http://ocsp.msocsp.com/ and
    /// ocsp.digicert.com on port 80": global names, egress on that port.
    fn read_connections_sentence(
        &mut self,
        line: usize,
        text: &str,
        lower: &str,
    ) -> Result<Option<Range<usize>>, CatalogError> {
        const OPENING: &str = "connections to ";
        const PORT: &str = " on port";
        let Some(at) = lower.find(OPENING) else {
            return Ok(None);
        };
        if !lower[..at].contains("allow") {
            return Ok(None);
        }
        let items_start = at + OPENING.len();
        let Some(items_len) = lower[items_start..].find(PORT) else {
            return Ok(None);
        };
        let items_end = items_start + items_len;
        let after_port = &text[items_end + PORT.len()..];
        let port_text: String = after_port
            .trim_start()
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '.' | ',' | ';' | ')'))
            .collect();
        let port = port_text.parse::<u16>().map_err(|_| CatalogError::BadPort {
            line,
            found: port_text.clone(),
        })?;
        let span_end =
            text.len() - after_port.len() + (after_port.len() - after_port.trim_start().len()) + port_text.len();
        for word in split_items(&text[items_start..items_end]) {
            if is_conjunction(&word) {
                continue;
            }
            let peer = parse_host_or_address(&word, line)?.ok_or_else(|| CatalogError::BadName {
                line,
                place: format!("in \"allow http connections to ... on port {port}\""),
                found: word.clone(),
            })?;
            self.push(Scope::Global, peer, Direction::Egress, port, line);
        }
        Ok(Some(at..span_end))
    }

    /// "add this IP address to your anti-spam allow list ...: 198.2.134.139
    /// (mail1.cloudappsecurity.com)": global addresses with the section's port. The
    /// parenthesised name is the address's label, not something to allow.
    fn read_address_sentence(
        &mut self,
        line: usize,
        text: &str,
        lower: &str,
    ) -> Result<Option<Range<usize>>, CatalogError> {
        const PHRASES: [&str; 4] = [
            "this ip address",
            "these ip addresses",
            "this address",
            "these addresses",
        ];
        let Some(at) = PHRASES.iter().filter_map(|p| lower.find(p)).min() else {
            return Ok(None);
        };
        // The colon that introduces the list: followed by a space or the line's end,
        // so the colons of an IPv6 address are not taken for it.
        let Some(colon) = lower[at..]
            .char_indices()
            .find(|&(i, c)| c == ':' && lower[at + i + 1..].chars().next().is_none_or(char::is_whitespace))
            .map(|(i, _)| at + i)
        else {
            return Ok(None);
        };
        let rest = strip_parenthesised(&text[colon + 1..]);
        let words: Vec<String> = split_items(&rest)
            .into_iter()
            .map(|w| w.trim_end_matches(['.', '!']).to_string())
            .filter(|w| !w.is_empty() && !is_conjunction(w))
            .collect();
        // "connect from these IP addresses: see the table" is not a list of addresses.
        if !words.iter().any(|w| address_literal(w).is_some()) {
            return Ok(None);
        }
        let (direction, port) = self.defaults();
        for word in &words {
            let net = parse_address(word, line)?.ok_or_else(|| CatalogError::BadAddress {
                line,
                place: "after \"add this IP address ...:\"".to_string(),
                found: word.clone(),
            })?;
            self.push(Scope::Global, Peer::Net(net), direction, port, line);
        }
        Ok(Some(at..text.len()))
    }

    /// Reads the table whose header is `lines[header]`; returns the index of the
    /// first line after it.
    fn read_table(&mut self, lines: &[&str], header: usize) -> Result<usize, CatalogError> {
        let header_line = header + 1;
        let header_body = strip_quote(lines[header]).1;
        let header_cells = split_row(header_body);
        let table = match self.section {
            Some(_) => {
                let shape = classify_columns(&header_cells, header_line).map(|(by_feature, columns)| Table {
                    by_feature,
                    columns,
                    cells: header_cells.len(),
                    closed: header_body.trim_end().ends_with('|'),
                });
                match shape {
                    Ok(table) => Some(table),
                    Err(e) => {
                        // Partly: skip the whole table, rows and all.
                        self.tolerate(Err(e))?;
                        None
                    }
                }
            }
            None => None,
        };
        let mut next = header + 2;
        while let Some(raw) = lines.get(next) {
            let body = strip_quote(raw).1;
            if body.trim().is_empty() || !body.contains('|') || heading(body).is_some() {
                break;
            }
            if let Some(table) = &table {
                let read = self.read_row(next + 1, body, table);
                self.tolerate(read)?;
            }
            next += 1;
        }
        Ok(next)
    }

    fn read_row(&mut self, line: usize, body: &str, table: &Table) -> Result<(), CatalogError> {
        let cells = split_row(body);
        if table.closed && !body.trim_end().ends_with('|') {
            return Err(CatalogError::UnclosedRow { line });
        }
        if cells.len() > table.cells && cells[table.cells..].iter().any(|c| !c.trim().is_empty()) {
            return Err(CatalogError::RowCells {
                line,
                cells: cells.len(),
                header: table.cells,
            });
        }
        // A short row may leave out only the columns that continue a list (the
        // page's `|IP addresses||` with rows of two cells), never a column of its own.
        if table
            .columns
            .iter()
            .skip(cells.len().saturating_sub(1))
            .any(|c| !c.continuation)
        {
            return Err(CatalogError::RowCells {
                line,
                cells: cells.len(),
                header: table.cells,
            });
        }
        if let Some(last) = cells.iter().rev().map(|c| c.trim()).find(|c| !c.is_empty())
            && (last.ends_with(',') || last.ends_with(';'))
        {
            let tail: String = last
                .chars()
                .rev()
                .take(24)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(CatalogError::RowEndsMidList { line, found: tail });
        }
        if table.by_feature {
            return self.read_feature_row(line, &cells, &table.columns);
        }
        let region = self.region_of(cells.first().map_or("", String::as_str), line)?;
        let (direction, port) = self.defaults();
        for (column, cell) in table.columns.iter().zip(cells.iter().skip(1)) {
            for item in split_items(cell) {
                let peer = column.peer(&item, line)?;
                self.push(Scope::Region(region.clone()), peer, direction, port, line);
            }
        }
        Ok(())
    }

    /// A row of a table whose rows are named by what they serve (`**Session
    /// controls**`) and whose address cells name Azure regions (`West Europe: a,
    /// b<br /><br />North Europe: c`), for the offering the text is about.
    fn read_feature_row(&mut self, line: usize, cells: &[String], columns: &[Column]) -> Result<(), CatalogError> {
        if clean_header(cells.first().map_or("", String::as_str)).is_empty() {
            return Err(CatalogError::EmptyRowLabel { line });
        }
        let offerings = self.current_offerings();
        let (direction, port) = self.defaults();
        for (column, cell) in columns.iter().zip(cells.iter().skip(1)) {
            let groups = match column.kind {
                ColumnKind::Addresses => region_groups(cell),
                ColumnKind::Names => vec![(None, cell.clone())],
            };
            for (label, text) in groups {
                let region = match &label {
                    Some(label) => Some(self.azure_region(label, line)?),
                    None => None,
                };
                for item in split_items(&text) {
                    let peer = column.peer(&item, line)?;
                    match &region {
                        Some(id) => {
                            for &offering in &offerings {
                                let scope = Scope::AzureRegion {
                                    id: id.clone(),
                                    offering,
                                };
                                self.push(scope, peer.clone(), direction, port, line);
                            }
                        }
                        None => {
                            let scope = Scope::Offerings {
                                offerings: offerings.clone(),
                                line,
                            };
                            self.push(scope, peer, direction, port, line);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The id of the Azure region a label names (`West US 2` -> `westus2`),
    /// registering it on first sight.
    fn azure_region(&mut self, label: &str, line: usize) -> Result<String, CatalogError> {
        let label = label.split_whitespace().collect::<Vec<_>>().join(" ");
        let id = region_key(&label);
        if id.is_empty() {
            return Err(CatalogError::BadDataCenter { line, found: label });
        }
        if !self.regions.iter().any(|r| region_key(&r.id) == id) {
            self.regions.push(Region {
                id: id.clone(),
                label,
                kind: RegionKind::AzureRegion,
            });
        }
        Ok(id)
    }

    /// The id of the region a data center cell names, registering it on first sight.
    fn region_of(&mut self, cell: &str, line: usize) -> Result<String, CatalogError> {
        let (label, id) = region_label_and_id(cell);
        if label.is_empty() {
            return Err(CatalogError::EmptyDataCenter { line });
        }
        if id.is_empty() {
            return Err(CatalogError::BadDataCenter { line, found: label });
        }
        let key = region_key(&id);
        if let Some(known) = self.regions.iter().find(|r| region_key(&r.id) == key) {
            return Ok(known.id.clone());
        }
        self.regions.push(Region::data_center(id.clone(), label));
        Ok(id)
    }

    fn finish(mut self, origin: Origin, fallback: Option<&Catalog>) -> Result<Catalog, CatalogError> {
        if self.drafts.is_empty() {
            return Err(CatalogError::NothingListed);
        }
        for spec in &FEATURE_SPECS {
            if self.sections.iter().any(|s| s.rule.feature == spec.feature) {
                continue;
            }
            let expected = spec
                .keywords
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(" or ");
            // Versions of the page drop sections (DLP went); the portal is what
            // makes it this page at all.
            if spec.feature == Feature::Portal {
                return Err(CatalogError::MissingSection {
                    feature: spec.feature,
                    expected,
                });
            }
            self.warnings.push(format!(
                "the page has no section for the {} feature (a heading containing {expected}): enabling it allows nothing from this page",
                spec.feature
            ));
        }
        self.follow_portal();
        self.keep_linked_names(fallback);
        for section in &self.sections {
            if !self.drafts.iter().any(|d| d.feature == section.rule.feature) {
                return Err(CatalogError::EmptySection {
                    line: section.line,
                    heading: section.heading.clone(),
                });
            }
        }
        if !self.regions.iter().any(|r| r.kind == RegionKind::DataCenter) {
            return Err(CatalogError::NoRegions);
        }

        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for draft in &self.drafts {
            let targets: Vec<(Option<String>, Option<Offering>)> = match &draft.scope {
                Scope::Global => vec![(None, None)],
                Scope::Region(id) => vec![(Some(id.clone()), None)],
                Scope::AzureRegion { id, offering } => vec![(Some(id.clone()), Some(*offering))],
                Scope::Offerings { offerings, line } => {
                    let centers: Vec<(Option<String>, Option<Offering>)> = self
                        .regions
                        .iter()
                        .filter(|r| r.offering().is_some_and(|o| offerings.contains(&o)))
                        .map(|r| (Some(r.id.clone()), None))
                        .collect();
                    if centers.is_empty() {
                        return Err(no_data_center_of(offerings, *line));
                    }
                    centers
                }
            };
            for (region, offering) in targets {
                let entry = CatalogEntry {
                    region,
                    feature: draft.feature,
                    peer: draft.peer.clone(),
                    direction: draft.direction,
                    proto: Proto::Tcp,
                    ports: vec![PortRange::single(draft.port)],
                    line: draft.line,
                    offering,
                    origin: 0,
                };
                if seen.insert(super::EntryKey::of(&entry)) {
                    entries.push(entry);
                }
            }
        }
        Ok(Catalog {
            source: origin.to_string(),
            origins: vec![origin],
            regions: self.regions,
            entries,
            warnings: self.warnings,
        })
    }

    /// Names the page only links to now (the certificate-check hosts): the ones the
    /// fallback catalog lists on the same port are kept, and a warning says so.
    /// Dropping them silently would break certificate checks after an update.
    fn keep_linked_names(&mut self, fallback: Option<&Catalog>) {
        for linked in std::mem::take(&mut self.linked) {
            let from_fallback = |same_feature: bool| -> Vec<Peer> {
                let mut names: Vec<Peer> = fallback
                    .into_iter()
                    .flat_map(|c| c.entries.iter())
                    .filter(|e| {
                        matches!(e.peer, Peer::Name(_))
                            && e.ports == [PortRange::single(linked.port)]
                            && (!same_feature || e.feature == linked.feature)
                    })
                    .map(|e| e.peer.clone())
                    .collect();
                names.sort();
                names.dedup();
                names
            };
            let mut names = from_fallback(true);
            if names.is_empty() {
                names = from_fallback(false);
            }
            if names.is_empty() {
                self.warnings.push(format!(
                    "line {}: the {} hosts on tcp/{} are given only by a link to another page and no previous catalog lists any: \
                     add them as [[allow]] entries or they stay blocked",
                    linked.line, linked.feature, linked.port
                ));
                continue;
            }
            let list: Vec<String> = names.iter().map(ToString::to_string).collect();
            self.warnings.push(format!(
                "line {}: the {} hosts on tcp/{} are given only by a link to another page: kept the {} the previous catalog lists ({})",
                linked.line,
                linked.feature,
                linked.port,
                list.len(),
                list.join(", ")
            ));
            for peer in names {
                self.drafts.push(Draft {
                    scope: Scope::Global,
                    feature: linked.feature,
                    peer,
                    direction: Direction::Egress,
                    port: linked.port,
                    line: linked.line,
                    from_region_table: false,
                });
            }
        }
    }

    /// The log collector section says "Allow the log collector to initiate outbound
    /// traffic to the portal" without listing the portal's addresses. Our reading:
    /// the portal is what the Portal access table lists for the region (its
    /// addresses and its wildcard name), not the global portal names, which serve
    /// browsers (CDNs, maps, telemetry). Those entries are copied to the feature, with
    /// the portal's direction and port and the line of the portal table row.
    fn follow_portal(&mut self) {
        let portal: Vec<Draft> = self
            .drafts
            .iter()
            .filter(|d| d.feature == Feature::Portal && d.from_region_table)
            .cloned()
            .collect();
        let mut followers = std::mem::take(&mut self.portal_followers);
        followers.sort();
        followers.dedup();
        for feature in followers {
            for draft in &portal {
                self.drafts.push(Draft {
                    feature,
                    direction: PORTAL_DIRECTION,
                    port: PORTAL_PORT,
                    from_region_table: false,
                    ..draft.clone()
                });
            }
        }
    }
}

fn no_data_center_of(offerings: &[Offering], line: usize) -> CatalogError {
    let (who, hint) = match offerings {
        [Offering::Commercial] => ("commercial", ""),
        [Offering::GccHigh] => ("US Government GCC High", " (a label starting with \"Gov\")"),
        [Offering::Gcc] => ("US Government GCC", " (a label starting with \"GCC\")"),
        _ => ("US Government", " (a label starting with \"Gov\" or \"GCC\")"),
    };
    CatalogError::NoOfferingDataCenter { line, who, hint }
}

/// "allow the log collector to initiate outbound traffic to the portal (for
/// example ...)" and "... outbound traffic to the Cloud App Security portal.", but
/// not "... outbound traffic to the [Microsoft Azure datacenter IP ranges](...)".
fn mentions_traffic_to_portal(lower: &str) -> bool {
    const OPENING: &str = "outbound traffic to the";
    lower.match_indices(OPENING).any(|(at, _)| {
        let rest = &lower[at + OPENING.len()..];
        let end = [rest.find('('), rest.find(". "), rest.find(" on port")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        rest[..end]
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == "portal" || w == "api" || w == "apis")
    })
}

fn is_conjunction(word: &str) -> bool {
    word.eq_ignore_ascii_case("and") || word.eq_ignore_ascii_case("or")
}

/// Strips blockquote markers (`> `, `>`, nested `> >`). The second value is the rest.
fn strip_quote(line: &str) -> (bool, &str) {
    let mut rest = line;
    let mut quoted = false;
    while let Some(after) = rest.trim_start().strip_prefix('>') {
        quoted = true;
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    (quoted, rest)
}

/// Leading indentation in columns (a tab counts as four).
fn indent_width(s: &str) -> usize {
    s.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

/// An ATX heading: its level and its text.
fn heading(body: &str) -> Option<(usize, &str)> {
    let t = body.trim_start();
    let level = t.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some((level, rest.trim().trim_end_matches('#').trim_end()))
}

fn opens_fence(body: &str, line: usize) -> Option<Fence> {
    let t = body.trim_start();
    let marker = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = t.chars().take_while(|c| *c == marker).count();
    (len >= 3).then_some(Fence { marker, len, line })
}

fn closes_fence(body: &str, fence: Fence) -> bool {
    let t = body.trim();
    t.chars().count() >= fence.len && t.chars().all(|c| c == fence.marker)
}

/// `- item`, `* item`, `+ item`, `1. item`, `1) item`: the item's text.
fn list_item(body: &str) -> Option<&str> {
    let t = body.trim_start();
    for marker in ["- ", "* ", "+ "] {
        if let Some(rest) = t.strip_prefix(marker) {
            return Some(rest);
        }
    }
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=9).contains(&digits) {
        let rest = &t[digits..];
        return rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") "));
    }
    None
}

/// `|----|:---:|`, with or without the outer pipes.
fn is_separator_row(body: &str) -> bool {
    let t = body.trim();
    t.contains('|') && t.contains('-') && t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' ' | '\t'))
}

/// The cells of a table row; `\|` is a pipe inside a cell.
fn split_row(body: &str) -> Vec<String> {
    let t = body.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = match t.strip_suffix('|') {
        Some(inner) if !inner.ends_with('\\') => inner,
        _ => t,
    };
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

/// What the header says each column after the first holds, and whether the rows
/// are named by a feature (an empty first header cell) rather than a data center.
fn classify_columns(header: &[String], line: usize) -> Result<(bool, Vec<Column>), CatalogError> {
    let first = header.first().map(|h| clean_header(h)).unwrap_or_default();
    let first_lower = first.to_ascii_lowercase();
    let by_feature = first.is_empty();
    if !by_feature
        && !["data center", "datacenter", "data centre", "region"]
            .iter()
            .any(|k| first_lower.contains(k))
    {
        return Err(CatalogError::NotDataCenterTable { line, found: first });
    }
    if header.len() < 2 {
        return Err(CatalogError::NoDataColumns { line });
    }
    let mut columns: Vec<Column> = Vec::with_capacity(header.len() - 1);
    for (index, cell) in header.iter().enumerate().skip(1) {
        let title = clean_header(cell);
        let column = if title.is_empty() {
            // The page splits one long list over several columns with empty headers.
            let before = columns.last().cloned().ok_or(CatalogError::NothingToContinue {
                line,
                column: index + 1,
            })?;
            Column {
                continuation: true,
                ..before
            }
        } else {
            let kind = column_kind(&title).ok_or_else(|| CatalogError::UnknownColumn {
                line,
                found: title.clone(),
            })?;
            Column {
                kind,
                title,
                continuation: false,
            }
        };
        columns.push(column);
    }
    Ok((by_feature, columns))
}

/// The offerings a heading or sentence names: "GCC High", "GCC", "US Government"
/// (both), "commercial".
fn offerings_named(lower: &str) -> Option<Vec<Offering>> {
    let plain = lower.replace(['*', '_'], "").replace('-', " ");
    let words: Vec<&str> = plain
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    let gcc_high = words.windows(2).any(|p| p == ["gcc", "high"]);
    if gcc_high {
        Some(vec![Offering::GccHigh])
    } else if has("gcc") {
        Some(vec![Offering::Gcc])
    } else if has("government") {
        Some(vec![Offering::GccHigh, Offering::Gcc])
    } else if has("commercial") {
        Some(vec![Offering::Commercial])
    } else {
        None
    }
}

/// Splits a cell of proxy addresses into Azure-region groups: `West Europe: a, b<br
/// /><br />North Europe: c` -> [(West Europe, "a, b"), (North Europe, "c")]. A label is
/// text starting with a letter before a colon that is followed by a space or ends the
/// line (an IPv6 address has neither); a line without one continues the group before.
fn region_groups(cell: &str) -> Vec<(Option<String>, String)> {
    let mut groups: Vec<(Option<String>, String)> = Vec::new();
    for segment in split_line_breaks(cell) {
        let segment = unescape(&segment);
        let label_end = segment
            .char_indices()
            .find(|&(i, c)| c == ':' && segment[i + 1..].chars().next().is_none_or(char::is_whitespace));
        let labelled = label_end.and_then(|(at, _)| {
            let label = segment[..at].replace(['*', '_'], " ");
            let label = label.trim();
            let is_label = label.starts_with(|c: char| c.is_ascii_alphabetic())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || " .()-".contains(c))
                && parse_address(label, 0).ok().flatten().is_none();
            is_label.then(|| (label.to_string(), segment[at + 1..].to_string()))
        });
        match (labelled, groups.last_mut()) {
            (Some((label, rest)), _) => groups.push((Some(label), rest)),
            (None, Some(last)) => {
                last.1.push(' ');
                last.1.push_str(&segment);
            }
            (None, None) => groups.push((None, segment)),
        }
    }
    groups
}

/// The pieces of a cell between its `<br />`s.
fn split_line_breaks(s: &str) -> Vec<String> {
    replace_line_breaks_with(s, '\n')
        .split('\n')
        .map(str::to_string)
        .collect()
}

/// Host names given only as an example: `<mytenant>.us2.cloudappsecurity.com`.
fn example_names(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| code.contains('<') && code.contains('>') && code.contains('.') && !code.contains(' '))
        .map(str::to_string)
        .collect()
}

fn column_kind(title: &str) -> Option<ColumnKind> {
    let lower = title.to_ascii_lowercase();
    if lower.contains("address") || lower.contains("cidr") || lower.contains("ip range") {
        Some(ColumnKind::Addresses)
    } else if ["dns", "name", "url", "host", "domain", "fqdn"]
        .iter()
        .any(|k| lower.contains(k))
    {
        Some(ColumnKind::Names)
    } else {
        None
    }
}

/// A header cell without Markdown emphasis or escapes, spaces collapsed.
fn clean_header(cell: &str) -> String {
    unescape(cell)
        .replace(['*', '_', '`'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The label a data center cell shows and the region id made from it: `US1` ->
/// `us1`, `Gov US1` -> `gov-us1`, `US1 (West US 2)` -> label `US1`, id `us1`.
fn region_label_and_id(cell: &str) -> (String, String) {
    let plain = unescape(cell).replace(['*', '_', '`'], " ");
    let label = strip_parenthesised(&plain)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let compact: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let government = ["government", "gov"]
        .iter()
        .find_map(|p| compact.strip_prefix(p))
        .map(|rest| rest.trim_start_matches('-'))
        .filter(|rest| !rest.is_empty());
    let id = match government {
        Some(rest) => format!("gov-{rest}"),
        None => compact.clone(),
    };
    (label, id.trim_matches('-').to_string())
}

/// Removes `(...)` groups: sub-region names and labels.
fn strip_parenthesised(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                out.push(' ');
            }
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Undoes Markdown backslash escapes (`\*`, `\/`, `\_`, ...).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && next.is_ascii_punctuation()
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

/// The items of a list cell or line, cleaned. Empty items and "n/a" placeholders are
/// dropped.
fn split_items(cell: &str) -> Vec<String> {
    replace_line_breaks(cell)
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .map(clean_item)
        .filter(|item| !item.is_empty() && !is_placeholder(item))
        .collect()
}

fn is_placeholder(item: &str) -> bool {
    matches!(item, "-" | "\u{2013}" | "\u{2014}") || item.eq_ignore_ascii_case("n/a")
}

/// Replaces every `<br>`, `<br/>`, `<br />` (any case) with a space.
fn replace_line_breaks(s: &str) -> String {
    replace_line_breaks_with(s, ' ')
}

fn replace_line_breaks_with(s: &str, with: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match line_break_len(after) {
            Some(len) => {
                out.push(with);
                rest = &after[len..];
            }
            None => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of `br />` (after its `<`) at the start of `s`, if it is one.
fn line_break_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() < 2 || !b[0].eq_ignore_ascii_case(&b'b') || !b[1].eq_ignore_ascii_case(&b'r') {
        return None;
    }
    let mut i = 2;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    if b.get(i) == Some(&b'/') {
        i += 1;
    }
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    (b.get(i) == Some(&b'>')).then_some(i + 1)
}

/// One item without escapes, backticks, link or autolink markup, or a trailing
/// fragment of a `<br />` (the stray `<` of the EU1 portal name).
fn clean_item(raw: &str) -> String {
    let unescaped = unescape(raw.trim());
    let mut s = unescaped.trim().trim_matches('`');
    if let Some(rest) = s.strip_prefix('[')
        && let Some(end) = rest.find("](")
    {
        s = &rest[..end];
    }
    if s.len() >= 2 && s.starts_with('<') && s.ends_with('>') {
        s = &s[1..s.len() - 1];
    }
    if let Some(at) = s.rfind('<') {
        let tail: String = s[at..]
            .chars()
            .filter(|c| *c != ' ')
            .collect::<String>()
            .to_ascii_lowercase();
        if "<br/>".starts_with(&tail) || "<br>".starts_with(&tail) {
            s = &s[..at];
        }
    }
    s.trim().to_string()
}

/// An address or CIDR: `Ok(None)` when `item` is neither, an error for a CIDR with
/// host bits set (the page would mean something it does not say).
fn parse_address(item: &str, line: usize) -> Result<Option<IpNet>, CatalogError> {
    if let Ok(addr) = item.parse::<IpAddr>() {
        return Ok(Some(IpNet::from(addr)));
    }
    match item.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Ok(Some(net)),
        Ok(net) => Err(CatalogError::HostBitsSet {
            line,
            found: item.to_string(),
            network: net.trunc(),
        }),
        Err(_) => Ok(None),
    }
}

/// An address or CIDR, or a DNS name given bare or as a URL; `Ok(None)` when the
/// item is none of these.
fn parse_host_or_address(item: &str, line: usize) -> Result<Option<Peer>, CatalogError> {
    if let Some(net) = parse_address(item, line)? {
        return Ok(Some(Peer::Net(net)));
    }
    let without_scheme = match item.find("://") {
        Some(at)
            if item[..at]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) =>
        {
            &item[at + 3..]
        }
        _ => item,
    };
    let host = without_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('.');
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(addr) = host.parse::<IpAddr>() {
        return Ok(Some(Peer::Net(IpNet::from(addr))));
    }
    let name = host.to_ascii_lowercase();
    Ok(is_dns_name(&name).then_some(Peer::Name(DnsName(name))))
}

/// A lowercase host name with at least two labels, optionally `*.` in front; the last
/// label is not all digits (that would be a broken address, not a name).
fn is_dns_name(name: &str) -> bool {
    let body = name.strip_prefix("*.").unwrap_or(name);
    let labels: Vec<&str> = body.split('.').collect();
    body.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
        && labels.last().is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// The address or CIDR a prose word is, if it is one (surrounding punctuation off).
fn address_literal(word: &str) -> Option<String> {
    let trimmed = word.trim_matches(|c: char| {
        matches!(
            c,
            ',' | ';' | '.' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | '"' | '\'' | '`' | '*' | '!' | '?'
        )
    });
    [trimmed, trimmed.trim_end_matches(':')]
        .into_iter()
        .find(|t| t.parse::<IpAddr>().is_ok() || t.parse::<IpNet>().is_ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        net::{Ipv4Addr, Ipv6Addr},
        str::FromStr,
    };

    use ipnet::{Ipv4Net, Ipv6Net};
    use proptest::prelude::*;

    use super::*;
    use crate::catalog::BUILTIN_PAGE;

    const LATER_LAYOUT: &str = include_str!("testdata/network-requirements-later-layout.md");

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
            format!(
                "line {line}: \"192.0.2.1/24\" has host bits set; write the network 192.0.2.0/24 or the address alone"
            )
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
    fn render_table(
        nets: &[IpNet],
        cuts: &[usize],
        separators: &[usize],
        quoted: bool,
        trailing_empty: bool,
    ) -> String {
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
}

/// The page's 2024 layout: offerings, proxy regions named inside cells, a dropped
/// section, names given only by a link or by example.
#[cfg(test)]
mod offerings_layout {
    use std::collections::BTreeSet;

    use super::*;

    const PAGE: &str = include_str!("testdata/network-requirements-offerings-layout.md");

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
}

/// A generated family of pages: random catalogs rendered in random layouts (section
/// order, quoted or plain tables, `<br />` or comma lists with irregular spacing,
/// duplicates, proxy tables by data center or by feature row with Azure regions, DLP
/// present or dropped) must read back as the catalog they were made from.
#[cfg(test)]
mod page_family {
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
}
