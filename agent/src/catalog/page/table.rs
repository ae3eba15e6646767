//! What a table of the page lists: rows named by a data center (`|US1|a, b|name|`)
//! or by what they serve (`|**Session controls**|West Europe: a, b<br />...|name|`),
//! columns of addresses or of names (the header says which; an empty header
//! continues the column before it), and the regions their labels name.

use super::{
    CatalogError, TableBlock, TableRow,
    markdown::{replace_line_breaks_with, unescape},
    meaning::{Reader, Scope},
    tokens::{is_placeholder, parse_address, parse_host_or_address, split_items, strip_parenthesised},
};
use crate::catalog::{Peer, Region, RegionKind, azure::azure_region, region_key};

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

/// What a row's cells held: the items read, and those that were not what their
/// column holds.
#[derive(Default)]
struct RowItems {
    read: usize,
    bad: Vec<CatalogError>,
}

impl RowItems {
    /// The peers `text` lists in `column`; the items that are not are kept aside.
    fn peers(&mut self, column: &Column, text: &str, line: usize) -> Vec<Peer> {
        let mut peers = Vec::new();
        for item in split_items(text) {
            match column.peer(&item, line) {
                Ok(peer) => peers.push(peer),
                Err(e) => self.bad.push(e),
            }
        }
        self.read += peers.len();
        peers
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
}

impl Reader {
    /// A table: its header says what its columns hold (skipped whole, when
    /// partial reading is asked, if it says nothing this reader knows), then each row.
    pub(super) fn table(&mut self, block: TableBlock) -> Result<(), CatalogError> {
        if self.section.is_none() {
            return Ok(());
        }
        let shape = classify_columns(&block.header, block.line).map(|(by_feature, columns)| Table {
            by_feature,
            columns,
            cells: block.header.len(),
        });
        let table = match shape {
            Ok(table) => table,
            Err(e) => return self.tolerate(Err(e)),
        };
        for row in &block.rows {
            let read = self.read_row(row, &table);
            self.tolerate(read)?;
        }
        Ok(())
    }

    fn read_row(&mut self, row: &TableRow, table: &Table) -> Result<(), CatalogError> {
        let (line, cells) = (row.line, &row.cells);
        if row.unclosed {
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
            return self.read_feature_row(row, &table.columns);
        }
        let region = self.region_of(cells.first().map_or("", String::as_str), row.cell_line(0))?;
        let (direction, port) = self.defaults();
        let mut items = RowItems::default();
        for (index, (column, cell)) in table.columns.iter().zip(cells.iter().skip(1)).enumerate() {
            let line = row.cell_line(index + 1);
            for peer in items.peers(column, cell, line) {
                self.push(Scope::Region(region.clone()), peer, direction, port, line);
            }
        }
        self.bad_items(items)
    }

    /// A row's items that are not what their column holds: without partial reading
    /// the first refuses the page; with it, each is named in a warning and the row's
    /// other items stay (a typo in one address must not cost its neighbours).
    fn bad_items(&mut self, row: RowItems) -> Result<(), CatalogError> {
        let mut bad = row.bad.into_iter();
        let Some(first) = bad.next() else { return Ok(()) };
        if !self.allow_partial {
            return Err(first);
        }
        let others = row.read;
        for e in std::iter::once(first).chain(bad) {
            self.warnings.push(format!(
                "skipped: {e}: that item is not allowed; the row's {others} other item{} {} kept",
                if others == 1 { "" } else { "s" },
                if others == 1 { "is" } else { "are" },
            ));
        }
        Ok(())
    }

    /// A row of a table whose rows are named by what they serve (`**Session
    /// controls**`) and whose address cells name Azure regions (`West Europe: a,
    /// b<br /><br />North Europe: c`), for the offering the text is about.
    fn read_feature_row(&mut self, row: &TableRow, columns: &[Column]) -> Result<(), CatalogError> {
        let (line, cells) = (row.line, &row.cells);
        if clean_header(cells.first().map_or("", String::as_str)).is_empty() {
            return Err(CatalogError::EmptyRowLabel { line });
        }
        let offerings = self.current_offerings();
        let (direction, port) = self.defaults();
        let mut items = RowItems::default();
        for (index, (column, cell)) in columns.iter().zip(cells.iter().skip(1)).enumerate() {
            let line = row.cell_line(index + 1);
            let groups = match column.kind {
                ColumnKind::Addresses => region_groups(cell),
                ColumnKind::Names => vec![(None, cell.clone())],
            };
            for (label, text) in groups {
                let region = match &label {
                    Some(label) => Some(self.azure_region(label, line)?),
                    None => None,
                };
                for peer in items.peers(column, &text, line) {
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
        self.bad_items(items)
    }

    /// The id of the Azure region a label names (`West US 2` -> `westus2`, in
    /// Azure's spelling), registering it on first sight. A region the vocabulary does
    /// not know is kept under its label, with a warning.
    fn azure_region(&mut self, label: &str, line: usize) -> Result<String, CatalogError> {
        let label = label.split_whitespace().collect::<Vec<_>>().join(" ");
        let known = azure_region(&label);
        let id = known.map_or_else(|| region_key(&label), |k| k.name.to_string());
        if id.is_empty() {
            return Err(CatalogError::BadDataCenter { line, found: label });
        }
        if !self.regions.iter().any(|r| region_key(&r.id) == id) {
            if known.is_none() {
                self.warnings.push(format!(
                    "line {line}: \"{label}\" is not an Azure region allowgate knows: read as the region `{id}`; \
                     a service tag may spell it otherwise"
                ));
            }
            self.regions.push(Region {
                id: id.clone(),
                label: known.map_or(label, |k| k.display.to_string()),
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
}

/// What the header says each column after the first holds, and whether the rows
/// are named by a feature (an empty first header cell) rather than a data center.
fn classify_columns(header: &[String], line: usize) -> Result<(bool, Vec<Column>), CatalogError> {
    let first = header.first().map(|h| clean_header(h)).unwrap_or_default();
    let first_lower = first.to_ascii_lowercase();
    // Learn's rendering writes `-` where the docs left a header cell empty.
    let by_feature = first.is_empty() || is_placeholder(&first);
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
        let column = if title.is_empty() || is_placeholder(&title) {
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

/// Splits a cell of proxy addresses into Azure-region groups: `West Europe: a, b<br
/// /><br />North Europe: c` -> [(West Europe, "a, b"), (North Europe, "c")]. A label is
/// text starting with a letter before a colon that is followed by a space or ends the
/// cell (an IPv6 address has neither). It may follow the group before on the same
/// line: Learn's rendering drops the `<br />`s, gluing a label to the address before
/// it (`4.198.154.86Brazil South: ...`); text between two labels is the first's group.
pub(super) fn region_groups(cell: &str) -> Vec<(Option<String>, String)> {
    let text = unescape(&replace_line_breaks_with(cell, '\n'));
    let mut groups: Vec<(Option<String>, String)> = Vec::new();
    let mut label: Option<String> = None;
    let mut start = 0;
    for (colon, _) in text.match_indices(':') {
        if colon < start || !text[colon + 1..].chars().next().is_none_or(char::is_whitespace) {
            continue;
        }
        // The label runs back from the colon to the separator before it.
        let from = text[start..colon]
            .rfind([',', ';', '\n'])
            .map_or(start, |i| start + i + 1);
        let Some((at, found)) = split_label(&text[from..colon]) else {
            continue;
        };
        groups.push((label.take(), text[start..from + at].to_string()));
        label = Some(found);
        start = colon + 1;
    }
    groups.push((label, text[start..].to_string()));
    groups.retain(|(label, text)| label.is_some() || !text.replace(['*', '_'], "").trim().is_empty());
    groups
}

/// Where the region label in `text` (what precedes a label's colon) starts, and the
/// label: `West Europe`, or after the group's last address, glued to it or not
/// (`4.198.154.86Brazil South`, `52.126.55.65 US Gov Virginia`). An Azure region the
/// vocabulary knows wins (so `2001:db8::1East US` is `East US`, not `ast US`), then
/// the longest label that starts with a capital, then the longest at all.
fn split_label(text: &str) -> Option<(usize, String)> {
    let plain = |s: &str| s.replace(['*', '_'], " ").trim().to_string();
    let is_label = |label: &str| {
        label.starts_with(|c: char| c.is_ascii_alphabetic())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || " .()-".contains(c))
            && parse_address(label, 0).ok().flatten().is_none()
    };
    let addresses_only = |before: &str| {
        before
            .split_whitespace()
            .all(|t| parse_address(t, 0).ok().flatten().is_some())
    };
    let candidates: Vec<(usize, String)> = text
        .char_indices()
        .filter(|(_, c)| c.is_ascii_alphabetic())
        .map(|(at, _)| (at, plain(&text[at..])))
        .filter(|(at, label)| is_label(label) && addresses_only(&plain(&text[..*at])))
        .collect();
    candidates
        .iter()
        .find(|(_, label)| azure_region(label).is_some())
        .or_else(|| {
            candidates
                .iter()
                .find(|(_, label)| label.starts_with(|c: char| c.is_ascii_uppercase()))
        })
        .or_else(|| candidates.first())
        .cloned()
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
pub(super) fn clean_header(cell: &str) -> String {
    unescape(cell)
        .replace(['*', '_', '`'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The label a data center cell shows and the region id made from it: `US1` ->
/// `us1`, `Gov US1` -> `gov-us1`, `US1 (West US 2)` -> label `US1`, id `us1`.
pub(super) fn region_label_and_id(cell: &str) -> (String, String) {
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
