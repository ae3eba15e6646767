//! The page's Markdown: YAML front matter, ATX headings, fenced and indented code
//! blocks, list items, blockquotes, HTML comments and pipe tables, read line by line
//! into the blocks the page's meaning reads (`meaning::Reader`). Inline Markdown
//! (`\*` escapes, `<br />` line breaks) is undone here too, for whoever reads a
//! cell's text.

use super::{CatalogError, TableBlock, TableRow, meaning::Reader};

/// Reads the Markdown page `text` into `reader`; returns the page's `ms.date`.
pub(super) fn read(text: &str, reader: &mut Reader) -> Result<Option<String>, CatalogError> {
    let lines: Vec<&str> = text.lines().collect();
    let (body_start, page_date) = front_matter(&lines);
    Markdown::default().read(reader, &lines, body_start)?;
    Ok(page_date)
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

/// An open fenced code block.
#[derive(Clone, Copy, Debug)]
struct Fence {
    marker: char,
    len: usize,
    line: usize,
}

/// Where the reader is in the page's block structure.
struct Markdown {
    fence: Option<Fence>,
    in_html_comment: bool,
    /// The previous line was blank: an indented line after it starts a code block.
    prev_blank: bool,
    in_indented_code: bool,
    /// Inside a list item: indented lines continue the item, they are not code.
    in_list: bool,
}

impl Default for Markdown {
    fn default() -> Self {
        Markdown {
            fence: None,
            in_html_comment: false,
            prev_blank: true,
            in_indented_code: false,
            in_list: false,
        }
    }
}

impl Markdown {
    fn read(&mut self, reader: &mut Reader, lines: &[&str], start: usize) -> Result<(), CatalogError> {
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
                } else {
                    reader.code_line(line, body)?;
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
                    reader.code_block();
                }
                self.in_indented_code = true;
                reader.code_line(line, body)?;
                continue;
            }
            if !quoted
                && indent < 4
                && let Some((level, title)) = heading(body)
            {
                self.in_list = false;
                self.in_indented_code = false;
                reader.heading(level, title, line);
                self.prev_blank = true;
                continue;
            }
            if let Some(fence) = opens_fence(body, line) {
                self.fence = Some(fence);
                reader.code_block();
                continue;
            }
            if body.contains('|')
                && let Some(next) = lines.get(index)
                && is_separator_row(strip_quote(next).1)
            {
                if indent < 2 {
                    self.in_list = false;
                }
                let (table, next) = table_at(lines, index - 1);
                reader.table(table)?;
                index = next;
                self.prev_blank = true;
                continue;
            }
            if let Some(item) = list_item(body) {
                self.in_list = true;
                reader.list_item(line, item)?;
                continue;
            }
            if indent < 2 {
                self.in_list = false;
            }
            reader.prose(line, body)?;
        }
        match self.fence {
            Some(fence) => Err(CatalogError::UnclosedCodeBlock { line: fence.line }),
            None => Ok(()),
        }
    }
}

/// The table whose header is `lines[header]`, and the index of the first line after it.
fn table_at(lines: &[&str], header: usize) -> (TableBlock, usize) {
    let header_body = strip_quote(lines[header]).1;
    let closed = header_body.trim_end().ends_with('|');
    let mut table = TableBlock {
        header: split_row(header_body),
        line: header + 1,
        rows: Vec::new(),
    };
    let mut next = header + 2;
    while let Some(raw) = lines.get(next) {
        let body = strip_quote(raw).1;
        if body.trim().is_empty() || !body.contains('|') || heading(body).is_some() {
            break;
        }
        table.rows.push(TableRow {
            line: next + 1,
            cells: split_row(body),
            cell_lines: Vec::new(),
            unclosed: closed && !body.trim_end().ends_with('|'),
        });
        next += 1;
    }
    (table, next)
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

/// Undoes Markdown backslash escapes (`\*`, `\/`, `\_`, ...).
pub(super) fn unescape(s: &str) -> String {
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

/// Replaces every `<br>`, `<br/>`, `<br />` (any case) with a space.
pub(super) fn replace_line_breaks(s: &str) -> String {
    replace_line_breaks_with(s, ' ')
}

pub(super) fn replace_line_breaks_with(s: &str, with: char) -> String {
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
