//! The page as Learn serves it: HTML, fetched or saved from a browser. The article's
//! elements become the blocks the Markdown reader gives (`meaning::Reader` reads
//! both): headings, the lines of `<pre>`, list items, paragraphs and tables, their
//! text as inline Markdown (`<strong>` as `**`, `<code>` as backticks, links as
//! `[text](href)`, `<br>` as `<br />`), so that what the page means is said once.
//! Site chrome (navigation, header, footer, scripts) is not read; the article is the
//! page's `<main>` when it has one.

use super::{
    CatalogError, TableBlock, TableRow,
    dom::{Dom, Kind},
    meaning::Reader,
};

/// Whether `text` is an HTML document rather than Markdown (which may hold a little
/// HTML, such as `<br />`, but is never a document).
pub(super) fn looks_like_html(text: &str) -> bool {
    let head: String = text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .chars()
        .take(4096)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with('<')
        && ["<!doctype html", "<html", "<body", "<head"]
            .iter()
            .any(|t| head.contains(t))
}

/// Reads the HTML page `text` into `reader`; returns the page's `ms.date`.
pub(super) fn read(text: &str, reader: &mut Reader) -> Result<Option<String>, CatalogError> {
    let dom = Dom::parse(text);
    let all = dom.descendants(Dom::ROOT);
    let root = ["main", "body"]
        .iter()
        .find_map(|name| all.iter().copied().find(|&n| dom.tag(n) == *name))
        .unwrap_or(Dom::ROOT);
    let mut html = Html { dom: &dom, reader };
    html.blocks(root)?;
    Ok(page_date(&dom, &all))
}

/// `<meta name="ms.date" content="...">`, else the date of the article's
/// `<time data-article-date datetime="...">`.
fn page_date(dom: &Dom, all: &[usize]) -> Option<String> {
    let meta = all.iter().find_map(|&n| {
        (dom.tag(n) == "meta" && dom.attr(n, "name").is_some_and(|v| v.eq_ignore_ascii_case("ms.date")))
            .then(|| dom.attr(n, "content"))
            .flatten()
    });
    let time = || {
        all.iter().find_map(|&n| {
            (dom.tag(n) == "time" && dom.attr(n, "data-article-date").is_some())
                .then(|| dom.attr(n, "datetime"))
                .flatten()
                .map(|d| d.split('T').next().unwrap_or(d))
        })
    };
    meta.or_else(time)
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
}

/// Elements whose contents are not the article's text.
const SKIPPED: [&str; 15] = [
    "head", "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "button", "svg", "form",
    "select", "iframe", "object",
];

/// Elements that start a block of their own (the rest is inline text).
const BLOCKS: [&str; 33] = [
    "address",
    "article",
    "blockquote",
    "body",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hgroup",
    "hr",
    "html",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "ul",
    "tr",
    "caption",
];

struct Html<'a> {
    dom: &'a Dom,
    reader: &'a mut Reader,
}

impl Html<'_> {
    fn is_block(&self, node: usize) -> bool {
        BLOCKS.contains(&self.dom.tag(node)) || SKIPPED.contains(&self.dom.tag(node))
    }

    /// The blocks of a container: its block children in order, and the inline text
    /// between them as prose.
    fn blocks(&mut self, node: usize) -> Result<(), CatalogError> {
        let dom = self.dom;
        self.blocks_of(&dom.nodes[node].children)
    }

    /// `nodes` in order: each block child, and the inline runs between them as prose.
    fn blocks_of(&mut self, nodes: &[usize]) -> Result<(), CatalogError> {
        let mut run: Vec<usize> = Vec::new();
        for &child in nodes {
            if self.is_block(child) {
                self.prose(&std::mem::take(&mut run))?;
                self.block(child)?;
            } else {
                run.push(child);
            }
        }
        self.prose(&run)
    }

    fn prose(&mut self, nodes: &[usize]) -> Result<(), CatalogError> {
        let Some(&first) = nodes.first() else { return Ok(()) };
        let text = self.inline_of(nodes, true);
        if text.is_empty() {
            return Ok(());
        }
        self.reader.prose(self.dom.nodes[first].line, &text)
    }

    fn block(&mut self, node: usize) -> Result<(), CatalogError> {
        let dom = self.dom;
        let line = dom.nodes[node].line;
        match dom.tag(node) {
            tag if SKIPPED.contains(&tag) => Ok(()),
            tag @ ("h1" | "h2" | "h3" | "h4" | "h5" | "h6") => {
                let level = usize::from(tag.as_bytes()[1] - b'0');
                let title = self.inline_of(&dom.nodes[node].children, false);
                self.reader.heading(level, &title, line);
                Ok(())
            }
            "p" | "dt" | "summary" | "caption" | "figcaption" => {
                let text = self.inline_of(&dom.nodes[node].children, true);
                if text.is_empty() {
                    return Ok(());
                }
                self.reader.prose(line, &text)
            }
            "pre" => self.code(node),
            "ul" | "ol" => {
                for &item in &dom.nodes[node].children {
                    if dom.tag(item) == "li" {
                        self.list_item(item)?;
                    } else if self.is_block(item) {
                        self.block(item)?;
                    }
                }
                Ok(())
            }
            "li" => self.list_item(node),
            "table" => self.table(node),
            "hr" => Ok(()),
            _ => self.blocks(node),
        }
    }

    /// A code block: each line of its text is a line of names.
    fn code(&mut self, node: usize) -> Result<(), CatalogError> {
        let mut text = String::new();
        self.raw_text(node, &mut text);
        self.reader.code_block();
        let first = self.dom.nodes[node].line;
        // The text after `<pre>` starts on the next line when a newline follows it, which
        // the parser drops; either way, counting from the element is close.
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                self.reader.code_line(first + i, &escape(line))?;
            }
        }
        Ok(())
    }

    /// A list item: its text up to its first block, with that block when it is a
    /// paragraph (`<li><p>Add ...</p><pre>...</pre></li>`), then its other blocks.
    fn list_item(&mut self, node: usize) -> Result<(), CatalogError> {
        let dom = self.dom;
        let children = &dom.nodes[node].children;
        let split = children
            .iter()
            .position(|&c| self.is_block(c))
            .unwrap_or(children.len());
        let mut text = self.inline_of(&children[..split], true);
        let mut rest = &children[split..];
        if let Some((&first, after)) = rest.split_first()
            && dom.tag(first) == "p"
        {
            let para = self.inline_of(&dom.nodes[first].children, true);
            if !text.is_empty() && !para.is_empty() {
                text.push(' ');
            }
            text.push_str(&para);
            rest = after;
        }
        if !text.is_empty() {
            self.reader.list_item(dom.nodes[node].line, &text)?;
        }
        self.blocks_of(rest)
    }

    /// A table: its first row is the header when it is in `<thead>` or of `<th>`
    /// cells (Learn's are both); the other rows follow with their lines.
    fn table(&mut self, node: usize) -> Result<(), CatalogError> {
        let dom = self.dom;
        let mut rows: Vec<(usize, bool)> = Vec::new();
        for &child in &dom.nodes[node].children {
            match dom.tag(child) {
                "tr" => rows.push((child, false)),
                section @ ("thead" | "tbody" | "tfoot") => {
                    for &row in &dom.nodes[child].children {
                        if dom.tag(row) == "tr" {
                            rows.push((row, section == "thead"));
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(&(header, in_head)) = rows.first() else {
            return Ok(());
        };
        let cells = |row: usize| -> Vec<usize> {
            dom.nodes[row]
                .children
                .iter()
                .copied()
                .filter(|&c| matches!(dom.tag(c), "td" | "th"))
                .collect()
        };
        let header_cells = cells(header);
        if !in_head && !header_cells.iter().all(|&c| dom.tag(c) == "th") {
            // No header row: not a table of the page's kind; read its text as prose.
            return self.blocks(node);
        }
        let block = TableBlock {
            header: header_cells.iter().map(|&c| self.cell(c)).collect(),
            line: dom.nodes[header].line,
            rows: rows[1..]
                .iter()
                .map(|&(row, _)| TableRow {
                    line: dom.nodes[row].line,
                    cells: cells(row).iter().map(|&c| self.cell(c)).collect(),
                    cell_lines: cells(row).iter().map(|&c| dom.nodes[c].line).collect(),
                    unclosed: false,
                })
                .collect(),
        };
        self.reader.table(block)
    }

    /// A cell's text as inline Markdown; blocks inside it are separated by line breaks.
    fn cell(&self, node: usize) -> String {
        self.inline_of(&self.dom.nodes[node].children, true)
    }

    /// The inline Markdown of `nodes`, whitespace collapsed as a browser shows it.
    /// Headings are read without their links (a saved page puts an anchor link in
    /// each).
    fn inline_of(&self, nodes: &[usize], links: bool) -> String {
        let mut out = String::new();
        for &n in nodes {
            self.inline(n, links, &mut out);
        }
        collapse(&out)
    }

    fn inline(&self, node: usize, links: bool, out: &mut String) {
        let dom = self.dom;
        let n = &dom.nodes[node];
        match &n.kind {
            Kind::Text(text) => out.push_str(&escape(text)),
            Kind::Other | Kind::Document => {}
            Kind::Element { .. } => {
                let tag = dom.tag(node);
                let children = |out: &mut String| {
                    for &c in &n.children {
                        self.inline(c, links, out);
                    }
                };
                match tag {
                    _ if SKIPPED.contains(&tag) => {}
                    "br" => out.push_str("<br />"),
                    "strong" | "b" => {
                        out.push_str("**");
                        children(out);
                        out.push_str("**");
                    }
                    "code" | "kbd" | "samp" => {
                        let mut text = String::new();
                        self.raw_text(node, &mut text);
                        out.push('`');
                        out.push_str(&escape(&text));
                        out.push('`');
                    }
                    "a" if links => {
                        let mut text = String::new();
                        for &c in &n.children {
                            self.inline(c, links, &mut text);
                        }
                        match dom.attr(node, "href") {
                            Some(href) if !text.trim().is_empty() => {
                                out.push('[');
                                out.push_str(text.trim());
                                out.push_str("](");
                                out.push_str(href);
                                out.push(')');
                            }
                            _ => out.push_str(&text),
                        }
                    }
                    "img" => {}
                    _ if BLOCKS.contains(&tag) || matches!(tag, "td" | "th") => {
                        out.push_str("<br />");
                        children(out);
                        out.push_str("<br />");
                    }
                    _ => children(out),
                }
            }
        }
    }

    /// The text of `node` and everything in it, as written.
    fn raw_text(&self, node: usize, out: &mut String) {
        let dom = self.dom;
        match &dom.nodes[node].kind {
            Kind::Text(text) => out.push_str(text),
            _ if dom.tag(node) == "br" => out.push('\n'),
            _ => {
                for &c in &dom.nodes[node].children {
                    self.raw_text(c, out);
                }
            }
        }
    }
}

/// Text as inline Markdown: a backslash is one, not the start of an escape.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
}

/// Runs of whitespace as one space, none at the ends; line breaks from `<br>` stay.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
