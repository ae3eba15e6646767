//! What the page's blocks mean: `##` sections name features (by keywords), `###`
//! headings and sentences name offerings, code lines and list items list peers, and
//! the page's few sentence shapes list names and addresses; everything else is prose,
//! refused when it holds an address it does not explain. `finish` turns what was read
//! into the catalog's entries. Tables are read in `table.rs`.

use std::{collections::HashSet, ops::Range};

use ipnet::IpNet;

use super::{
    CatalogError,
    tokens::{address_literal, parse_address, parse_host_or_address, split_items, strip_parenthesised},
};
use crate::catalog::{
    Catalog, CatalogEntry, Direction, FEATURE_SPECS, Feature, FeatureSpec, Offering, Origin, Peer, PortRange, Proto,
    Region, RegionKind,
};

/// The portal's own rule, used for features whose section says to let traffic out
/// "to the portal".
const PORTAL_DIRECTION: Direction = Direction::Egress;
const PORTAL_PORT: u16 = 443;

/// Who a draft entry is for, before the page's regions are all known.
#[derive(Clone, Debug)]
pub(super) enum Scope {
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
pub(super) struct Draft {
    pub(super) scope: Scope,
    pub(super) feature: Feature,
    pub(super) peer: Peer,
    pub(super) direction: Direction,
    pub(super) port: u16,
    pub(super) line: usize,
    /// From a per-data-center table: the entries other sections refer to as "the
    /// portal" come from these.
    pub(super) from_region_table: bool,
}

/// The `##` section being read.
#[derive(Clone, Debug)]
pub(super) struct Section {
    pub(super) rule: &'static FeatureSpec,
    pub(super) heading: String,
    pub(super) line: usize,
    /// The offerings the text is about now ("### US Government offerings", "For **US
    /// Government GCC** customers:"), and the line that said so; empty: every one.
    pub(super) offerings: Vec<Offering>,
    pub(super) offerings_line: usize,
    /// The section said to allow its addresses "for both inbound and outbound
    /// connections".
    pub(super) both_ways: bool,
}

impl Section {
    fn direction(&self) -> Direction {
        self.rule.directions[0]
    }
}

/// Names the page gives only by a link to another page ("the URLs listed on the
/// [Azure TLS certificate changes](...) page").
#[derive(Clone, Debug)]
pub(super) struct Linked {
    pub(super) feature: Feature,
    pub(super) port: u16,
    pub(super) line: usize,
}

/// What the page lists, as its blocks are read (from Markdown or HTML).
pub(super) struct Reader {
    pub(super) regions: Vec<Region>,
    pub(super) drafts: Vec<Draft>,
    /// Every feature section met, in page order (a feature may have several).
    pub(super) sections: Vec<Section>,
    pub(super) section: Option<Section>,
    /// Scope of the code block being read.
    pub(super) code_scope: Scope,
    /// Features whose section says to let traffic out "to the portal".
    pub(super) portal_followers: Vec<Feature>,
    pub(super) linked: Vec<Linked>,
    pub(super) warnings: Vec<String>,
    pub(super) allow_partial: bool,
}

impl Reader {
    pub(super) fn new(allow_partial: bool) -> Self {
        Reader {
            regions: Vec::new(),
            drafts: Vec::new(),
            sections: Vec::new(),
            section: None,
            code_scope: Scope::Global,
            portal_followers: Vec::new(),
            linked: Vec::new(),
            warnings: Vec::new(),
            allow_partial,
        }
    }

    /// With `allow_partial`, a construct that cannot be read is skipped and reported;
    /// without, it refuses the page.
    pub(super) fn tolerate(&mut self, result: Result<(), CatalogError>) -> Result<(), CatalogError> {
        match result {
            Err(e) if self.allow_partial => {
                self.warnings.push(format!("skipped: {e}"));
                Ok(())
            }
            other => other,
        }
    }

    // ---- the blocks of the page, in order -----------------------------------------

    /// A heading: a feature's section starts, or ends, or says whose text follows.
    pub(super) fn heading(&mut self, level: usize, title: &str, line: usize) {
        self.enter_heading(level, title, line);
    }

    /// A code block starts: its lines are names for whom the text before it is about.
    pub(super) fn code_block(&mut self) {
        self.code_scope = self.scope_of_code_block();
    }

    /// One line of a code block.
    pub(super) fn code_line(&mut self, line: usize, text: &str) -> Result<(), CatalogError> {
        if self.section.is_none() {
            return Ok(());
        }
        let read = self.read_code_line(line, text);
        self.tolerate(read)
    }

    /// The text of a list item (the blocks nested in it come as blocks of their own).
    pub(super) fn list_item(&mut self, line: usize, text: &str) -> Result<(), CatalogError> {
        if self.section.is_none() {
            return Ok(());
        }
        let read = self.read_list_item(line, text);
        self.tolerate(read)
    }

    /// A paragraph's line, or other text outside the blocks above.
    pub(super) fn prose(&mut self, line: usize, text: &str) -> Result<(), CatalogError> {
        if self.section.is_none() {
            return Ok(());
        }
        let read = self.read_prose(line, text);
        self.tolerate(read)
    }

    // ---- what they mean -----------------------------------------------------------

    fn enter_heading(&mut self, level: usize, title: &str, line: usize) {
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
    pub(super) fn push(&mut self, scope: Scope, peer: Peer, direction: Direction, port: u16, line: usize) {
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
    pub(super) fn defaults(&self) -> (Direction, u16) {
        match &self.section {
            Some(s) => (s.direction(), s.rule.port),
            None => (Direction::Egress, 0),
        }
    }

    /// The offerings the current text is about; a table of proxy regions outside any
    /// offering's text is the commercial one (the page's older layouts had no other).
    pub(super) fn current_offerings(&self) -> Vec<Offering> {
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

    pub(super) fn finish(mut self, origin: Origin, fallback: Option<&Catalog>) -> Result<Catalog, CatalogError> {
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
                if seen.insert(crate::catalog::EntryKey::of(&entry)) {
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

pub(super) fn no_data_center_of(offerings: &[Offering], line: usize) -> CatalogError {
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

pub(super) fn is_conjunction(word: &str) -> bool {
    word.eq_ignore_ascii_case("and") || word.eq_ignore_ascii_case("or")
}

/// The offerings a heading or sentence names: "GCC High", "GCC", "US Government"
/// (both), "commercial".
pub(super) fn offerings_named(lower: &str) -> Option<Vec<Offering>> {
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

/// Host names given only as an example: `<mytenant>.us2.cloudappsecurity.com`.
fn example_names(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| code.contains('<') && code.contains('>') && code.contains('.') && !code.contains(' '))
        .map(str::to_string)
        .collect()
}
