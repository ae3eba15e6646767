//! The items of a cell, a code line or a sentence: list separators, Markdown and
//! link markup off, and what each is (an address or CIDR, a DNS name, a URL's host).

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    CatalogError,
    markdown::{replace_line_breaks, unescape},
};
use crate::catalog::{DnsName, Peer};

/// Removes `(...)` groups: sub-region names and labels.
pub(super) fn strip_parenthesised(s: &str) -> String {
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

/// The items of a list cell or line, cleaned. Empty items and "n/a" placeholders are
/// dropped.
pub(super) fn split_items(cell: &str) -> Vec<String> {
    replace_line_breaks(cell)
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .map(clean_item)
        .flat_map(|item| split_joined_wildcards(&item))
        .filter(|item| !item.is_empty() && !is_placeholder(item))
        .collect()
}

/// Learn's rendering drops the `<br />` between names: `*.mcas.ms*.admin-mcas.ms` is
/// two wildcard names (a `*.` inside a name starts the next one).
fn split_joined_wildcards(item: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (at, _) in item.match_indices("*.") {
        if at > start {
            parts.push(item[start..at].to_string());
            start = at;
        }
    }
    parts.push(item[start..].to_string());
    parts
}

pub(super) fn is_placeholder(item: &str) -> bool {
    matches!(item, "-" | "\u{2013}" | "\u{2014}") || item.eq_ignore_ascii_case("n/a")
}

/// One item without escapes, backticks, link or autolink markup, or a trailing
/// fragment of a `<br />` (the stray `<` of the EU1 portal name).
pub(super) fn clean_item(raw: &str) -> String {
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
pub(super) fn parse_address(item: &str, line: usize) -> Result<Option<IpNet>, CatalogError> {
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
pub(super) fn parse_host_or_address(item: &str, line: usize) -> Result<Option<Peer>, CatalogError> {
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
pub(super) fn is_dns_name(name: &str) -> bool {
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
pub(super) fn address_literal(word: &str) -> Option<String> {
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
