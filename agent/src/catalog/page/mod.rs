//! Reads a "Network requirements" page of Microsoft Cloud App Security (the Markdown
//! source of the docs site) into a [`Catalog`].
//!
//! This file is the room's map: the entry points, the options and the errors. The
//! page comes as the docs' Markdown, as Markdown mirrors of Learn's rendering, or as
//! the HTML Learn serves; `markdown` (Markdown) or `html` with `dom` (HTML) reads its
//! syntax into blocks (headings, code lines, list items, prose, tables with their
//! cells as inline Markdown);
//! `meaning` says what those blocks list (sections, features, offerings, sentences)
//! and `table` what a table's rows list (data centers, Azure regions, columns);
//! `tokens` reads the items of a cell or line (addresses, CIDRs, names, URLs).
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
//! Quirks of the page family handled here (each has a test in `tests.rs`):
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

mod dom;
mod html;
mod markdown;
mod meaning;
mod table;
mod tokens;

#[cfg(test)]
mod tests;

use ipnet::IpNet;

use self::meaning::Reader;
use super::{Catalog, Feature, Origin};

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

/// A table as the page's syntax gives it: the header's cells and each row's, as
/// inline Markdown (`**bold**`, `` `code` ``, `\*` escapes, `<br />` line breaks),
/// with the line each is on.
#[derive(Clone, Debug)]
pub(super) struct TableBlock {
    pub header: Vec<String>,
    pub line: usize,
    pub rows: Vec<TableRow>,
}

#[derive(Clone, Debug)]
pub(super) struct TableRow {
    pub line: usize,
    pub cells: Vec<String>,
    /// The line of each cell, where a cell can start on a line of its own (HTML);
    /// empty: every cell is on the row's line.
    pub cell_lines: Vec<usize>,
    /// The header ends with `|` and this row does not: the page looks cut off here.
    pub unclosed: bool,
}

impl TableRow {
    pub fn cell_line(&self, index: usize) -> usize {
        self.cell_lines.get(index).copied().unwrap_or(self.line)
    }
}

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
    let mut reader = Reader::new(options.allow_partial);
    let page_date = if html::looks_like_html(text) {
        html::read(text, &mut reader)?
    } else {
        markdown::read(text, &mut reader)?
    };
    let origin = Origin::Page {
        file: source_name.to_string(),
        date: page_date,
    };
    reader.finish(origin, options.fallback)
}
