//! Where Microsoft publishes the catalog's sources, and how to find the current file of
//! a weekly one from its download page.
//!
//! - The service tags of the public cloud and of US Government are published weekly as
//!   `ServiceTags_Public_YYYYMMDD.json` and `ServiceTags_AzureGovernment_YYYYMMDD.json`
//!   on download.microsoft.com; each has a stable "details" page on the download
//!   center that links the current file (ids 56519 and 57063). The page is a script
//!   application: the link is in JSON embedded in it (`"url":"https://download...json"`,
//!   2024 on) or in an anchor (`href="https://download...json"`, before), either
//!   possibly with `\/` or `&amp;` escapes. Every link whose file name has the source's
//!   prefix counts, and the newest date wins.
//! - The "Network requirements" page is at a fixed Learn URL, as Learn renders it.

use std::fmt;

use url::Url;

/// The download center's details page for the public cloud's service tags.
pub const SERVICE_TAGS_PUBLIC_PAGE: &str = "https://www.microsoft.com/en-us/download/details.aspx?id=56519";
/// The download center's details page for US Government's service tags.
pub const SERVICE_TAGS_USGOV_PAGE: &str = "https://www.microsoft.com/en-us/download/details.aspx?id=57063";
/// The "Network requirements" page as Learn serves it.
pub const PAGE_URL: &str = "https://learn.microsoft.com/en-us/defender-cloud-apps/network-requirements";
/// Where the download center keeps its files; a details page's link may also stay on
/// the details page's own host (a mirror of both).
pub const DOWNLOAD_HOST: &str = "download.microsoft.com";

/// A source `catalog fetch --source` knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The public cloud's weekly service tags file, found from its download page.
    ServiceTagsPublic,
    /// US Government's weekly service tags file, found from its download page.
    ServiceTagsUsGov,
    /// The "Network requirements" page on Learn.
    Page,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::ServiceTagsPublic, Source::ServiceTagsUsGov, Source::Page];

    pub fn name(self) -> &'static str {
        match self {
            Source::ServiceTagsPublic => "service-tags-public",
            Source::ServiceTagsUsGov => "service-tags-usgov",
            Source::Page => "page",
        }
    }

    /// Where it is: a details page for the service tags, the page itself otherwise.
    pub fn location(self) -> &'static str {
        match self {
            Source::ServiceTagsPublic => SERVICE_TAGS_PUBLIC_PAGE,
            Source::ServiceTagsUsGov => SERVICE_TAGS_USGOV_PAGE,
            Source::Page => PAGE_URL,
        }
    }

    /// The file name before its date, for a source published under dated names.
    pub fn dated_prefix(self) -> Option<&'static str> {
        match self {
            Source::ServiceTagsPublic => Some("ServiceTags_Public_"),
            Source::ServiceTagsUsGov => Some("ServiceTags_AzureGovernment_"),
            Source::Page => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A calendar date as published in a file name (`20260928`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// `YYYYMMDD`, a real day of a year from 2000 on.
    pub fn from_digits(digits: &str) -> Option<Date> {
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year: u16 = digits[..4].parse().ok()?;
        let month: u8 = digits[4..6].parse().ok()?;
        let day: u8 = digits[6..].parse().ok()?;
        Date::new(year, month, day)
    }

    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        ((2000..=9999).contains(&year) && (1..=days).contains(&day)).then_some(Date { year, month, day })
    }

    /// Seconds since the Unix epoch at the start of the day (UTC).
    pub fn unix(self) -> u64 {
        // Days from the civil date (Howard Hinnant's algorithm), for years from 2000.
        let (y, m, d) = (i64::from(self.year), i64::from(self.month), i64::from(self.day));
        let y = if m <= 2 { y - 1 } else { y };
        let era = y / 400;
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        (days as u64) * 86_400
    }

    /// The date in a file name that ends `_YYYYMMDD.json` (`ServiceTags_Public_20260928.json`).
    pub fn of_file_name(name: &str) -> Option<Date> {
        let stem = name.strip_suffix(".json")?;
        let (_, digits) = stem.rsplit_once('_')?;
        Date::from_digits(digits)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The last segment of a URL's path.
pub fn file_name(url: &Url) -> &str {
    url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("")
}

/// What a details page links, and why a link was passed over.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// The newest file, and its date.
    Current(Url, Date),
    /// No link with the prefix at all.
    Nothing,
    /// Links with the prefix, none usable; the first one and why.
    Refused { link: String, why: &'static str },
}

/// The newest `PREFIX` + `YYYYMMDD.json` file that `page` (fetched from `page_url`)
/// links by a whole URL on download.microsoft.com or on the page's own host, over https
/// (or http when the page itself came over http and `allow_http`).
pub fn current_file(page: &str, page_url: &Url, prefix: &str, allow_http: bool) -> Found {
    // JSON in a script escapes slashes; HTML escapes ampersands.
    let text = page
        .replace("\\/", "/")
        .replace("\\u002F", "/")
        .replace("\\u002f", "/")
        .replace("&amp;", "&");
    let mut best: Option<(Url, Date)> = None;
    let mut refused: Option<(String, &'static str)> = None;
    let mut from = 0;
    while let Some(at) = text[from..].find(prefix).map(|i| i + from) {
        from = at + prefix.len();
        let rest = &text[from..];
        let Some(date) = rest.get(..8).and_then(Date::from_digits) else {
            continue;
        };
        if !rest[8..].starts_with(".json") {
            continue;
        }
        let end = from + 8 + ".json".len();
        // The link starts after the quote, space or bracket before it.
        let start = text[..at]
            .rfind(|c: char| matches!(c, '"' | '\'' | '<' | '>' | '(' | '=' | ',') || c.is_whitespace())
            .map_or(0, |i| i + 1);
        let link = &text[start..end];
        // The page names each file bare too (`"name":"ServiceTags_Public_....json"`):
        // only a whole URL is a link.
        if !is_whole_url(link) {
            continue;
        }
        match usable(link, page_url, prefix, allow_http) {
            Ok(url) => {
                if best.as_ref().is_none_or(|(_, d)| date > *d) {
                    best = Some((url, date));
                }
            }
            Err(why) => {
                refused.get_or_insert((link.to_string(), why));
            }
        }
    }
    match (best, refused) {
        (Some((url, date)), _) => Found::Current(url, date),
        (None, Some((link, why))) => Found::Refused { link, why },
        (None, None) => Found::Nothing,
    }
}

/// `scheme://...` or `//host/...`.
fn is_whole_url(link: &str) -> bool {
    link.starts_with("//")
        || link
            .split_once("://")
            .is_some_and(|(scheme, _)| !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic()))
}

fn usable(link: &str, page_url: &Url, prefix: &str, allow_http: bool) -> Result<Url, &'static str> {
    let url = page_url.join(link).map_err(|_| "not a URL")?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http && page_url.scheme() == "http" => {}
        "http" => return Err("plain http"),
        _ => return Err("not an http(s) URL"),
    }
    let host = url.host_str().unwrap_or("");
    if !host.eq_ignore_ascii_case(DOWNLOAD_HOST) && Some(host) != page_url.host_str() {
        return Err("on a host other than download.microsoft.com or the page's own");
    }
    let name = file_name(&url);
    let ok = name
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".json"))
        .is_some_and(|digits| Date::from_digits(digits).is_some());
    if !ok {
        return Err("not a file of this source");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The details page as the download center serves it since 2024: a script
    /// application whose state, JSON in a <script>, lists the files (`downloadFile`:
    /// name, url, size, version, datePublished), here with the slashes escaped as a
    /// JSON encoder may write them. Values made up, shape as recorded from the page.
    pub const DETAILS_2024: &str = r#"<!DOCTYPE html><html lang="en-US"><head><title>Azure IP Ranges and Service Tags - Public Cloud</title></head>
<body><div id="root"></div>
<script>{"downloadFile":[{"isPrimary":"False","name":"ServiceTags_Public_20260921.json","url":"https:\/\/download.microsoft.com\/download\/7\/1\/d\/71d86715-5596-4529-9b13-da13a5de5b63\/ServiceTags_Public_20260921.json","size":"4328742","version":"2026.09.21","datePublished":"9\/22\/2026 1:55:45 PM"},{"isPrimary":"True","name":"ServiceTags_Public_20260928.json","url":"https:\/\/download.microsoft.com\/download\/7\/1\/d\/71d86715-5596-4529-9b13-da13a5de5b63\/ServiceTags_Public_20260928.json","size":"4331020","version":"2026.09.28","datePublished":"9\/29\/2026 1:55:45 PM"}]}</script>
</body></html>"#;

    /// The page before (a "confirmation" page with the link in an anchor).
    pub const DETAILS_2020: &str = r#"<html><body><div class="start-download">
<a href="https://download.microsoft.com/download/7/1/D/71D86715-5596-4529-9B13-DA13A5DE5B63/ServiceTags_Public_20201207.json" class="mscom-link failoverLink" data-bi-cN="click here to download manually">click here to download manually</a>
</div></body></html>"#;

    fn page_url() -> Url {
        Url::parse(SERVICE_TAGS_PUBLIC_PAGE).unwrap()
    }

    #[test]
    fn the_newest_file_is_found_in_either_shape_of_the_page() {
        match current_file(DETAILS_2024, &page_url(), "ServiceTags_Public_", false) {
            Found::Current(url, date) => {
                assert_eq!(
                    url.as_str(),
                    "https://download.microsoft.com/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20260928.json"
                );
                assert_eq!(date.to_string(), "2026-09-28");
            }
            other => panic!("{other:?}"),
        }
        match current_file(DETAILS_2020, &page_url(), "ServiceTags_Public_", false) {
            Found::Current(url, _) => assert!(url.as_str().ends_with("/ServiceTags_Public_20201207.json")),
            other => panic!("{other:?}"),
        }
        // The US Government page has the other prefix: the public file is not its file.
        assert_eq!(
            current_file(DETAILS_2024, &page_url(), "ServiceTags_AzureGovernment_", false),
            Found::Nothing
        );
    }

    #[test]
    fn links_elsewhere_or_over_http_are_refused_and_named() {
        let cases = [
            (
                r#"href="https://download.example.net/ServiceTags_Public_20260928.json""#,
                "on a host other than",
            ),
            (
                r#""url":"http://download.microsoft.com/d/ServiceTags_Public_20260928.json""#,
                "plain http",
            ),
            (
                r#"href="ftp://download.microsoft.com/ServiceTags_Public_20260928.json""#,
                "not an http(s) URL",
            ),
        ];
        for (page, why) in cases {
            match current_file(page, &page_url(), "ServiceTags_Public_", true) {
                Found::Refused { link, why: said } => {
                    assert!(said.starts_with(why), "{page}: {said}");
                    assert!(link.ends_with("ServiceTags_Public_20260928.json"), "{link}");
                }
                other => panic!("{page}: {other:?}"),
            }
        }
        // A bad date is no file of the source; a link on the page's own host (a mirror)
        // is, and one without a scheme takes the page's.
        assert_eq!(
            current_file(
                "ServiceTags_Public_20261399.json",
                &page_url(),
                "ServiceTags_Public_",
                false
            ),
            Found::Nothing
        );
        let mirror = Url::parse("https://mirror.example/dl/details.html").unwrap();
        match current_file(
            r#"<a href="//mirror.example/dl/files/ServiceTags_Public_20260101.json">"#,
            &mirror,
            "ServiceTags_Public_",
            false,
        ) {
            Found::Current(url, _) => assert_eq!(
                url.as_str(),
                "https://mirror.example/dl/files/ServiceTags_Public_20260101.json"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dates_are_real_days() {
        assert_eq!(
            Date::from_digits("20240229").map(|d| d.to_string()).as_deref(),
            Some("2024-02-29")
        );
        for bad in ["20230229", "20261301", "20260100", "1999123", "2026010a", "19991231"] {
            assert_eq!(Date::from_digits(bad), None, "{bad}");
        }
        assert_eq!(Date::new(1970 + 30, 1, 1).unwrap().unix(), 946_684_800);
        assert_eq!(Date::new(2026, 9, 28).unwrap().unix(), 1_790_553_600);
        assert_eq!(
            Date::of_file_name("ServiceTags_AzureGovernment_20251006.json")
                .map(|d| d.to_string())
                .as_deref(),
            Some("2025-10-06")
        );
        assert_eq!(Date::of_file_name("tags.json"), None);
    }
}
