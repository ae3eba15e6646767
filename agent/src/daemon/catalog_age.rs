//! How old each source of the catalog in force is, for `status`, `/metrics`
//! (`allowgate_catalog_age_seconds{source}`), the daemon's daily warning past
//! `max_catalog_age`, and `catalog fetch`'s own exit code.
//!
//! A source's age counts from:
//! - for a service tags file, the date in its name (`ServiceTags_Public_20260928.json`),
//!   or in the name of the file `catalog fetch` found for it (kept in FILE.fetch.json).
//!   Microsoft publishes a new file every week: an old date means updates stopped
//!   arriving, even when every fetch "succeeds".
//! - for a page, the last time it was found current at its source (`catalog fetch`
//!   wrote it or was told "not modified"), else its `ms.date`. The page changes when its
//!   content does, not on a schedule: a page edited months ago and fetched today is
//!   current, one nobody fetched since its `ms.date` may not be.
//!
//! A sidecar counts only while it describes the version in force (a FILE fetched anew
//! whose catalog was refused says nothing of the catalog still enforced).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    catalog::{Catalog, Origin},
    fetch::{Date, sidecar},
};

/// One source of the catalog in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogSource {
    /// The file it was read from, as the catalog names it.
    pub source: String,
    /// `page` or `service-tags`.
    pub kind: String,
    /// `ms.date 12/17/2025`, or `changeNumber 412` (the file's).
    pub version: String,
    /// When it was published (YYYY-MM-DD): the page's `ms.date`, the tags file's name.
    pub date: Option<String>,
    /// Seconds since the epoch the age counts from, as found when it was put in force.
    pub since: Option<u64>,
    /// Where its file is, to read its sidecar again (a page's age restarts with each
    /// fetch that finds it current).
    pub path: Option<PathBuf>,
}

impl CatalogSource {
    /// Seconds since the epoch the age counts from now.
    pub fn since_now(&self) -> Option<u64> {
        if self.kind != "page" {
            return self.since;
        }
        let checked = self
            .path
            .as_deref()
            .and_then(sidecar::read)
            .filter(|s| s.version.as_deref() == Some(self.version.as_str()))
            .and_then(|s| s.checked_at());
        self.since.max(checked)
    }

    /// Seconds old at `now` (seconds since the epoch); `None` when nothing dates it.
    pub fn age(&self, now: u64) -> Option<u64> {
        self.since_now().map(|since| now.saturating_sub(since))
    }
}

/// Past `max_days` (0: never stale).
pub fn is_stale(age_secs: u64, max_days: u32) -> bool {
    max_days > 0 && age_secs > u64::from(max_days) * 86_400
}

/// Days, rounded down, for people.
pub fn days(secs: u64) -> u64 {
    secs / 86_400
}

/// The sources of `catalog`, one per file (a service tags file gives one origin per
/// tag), with the sidecars of the files in `paths` whose names they carry.
pub fn sources(catalog: &Catalog, paths: &[PathBuf]) -> Vec<CatalogSource> {
    let mut by_file: BTreeMap<&str, CatalogSource> = BTreeMap::new();
    for origin in &catalog.origins {
        let (file, kind, version, published) = match origin {
            Origin::Page { file, date } => (
                file.as_str(),
                "page",
                date.as_ref()
                    .map_or_else(|| "no ms.date".to_string(), |d| format!("ms.date {d}")),
                date.as_deref().and_then(ms_date),
            ),
            Origin::ServiceTag { file, file_change, .. } => (
                file.as_str(),
                "service-tags",
                format!("changeNumber {file_change}"),
                Date::of_file_name(file),
            ),
        };
        if by_file.contains_key(file) {
            continue;
        }
        let path = paths.iter().find(|p| p.file_name().is_some_and(|n| n == file)).cloned();
        let side = path
            .as_deref()
            .and_then(sidecar::read)
            .filter(|s| s.version.as_deref() == Some(version.as_str()));
        let (date, since) = match kind {
            "page" => {
                let checked = side.as_ref().and_then(|s| s.checked_at());
                (published, published.map(Date::unix).max(checked))
            }
            _ => {
                let named = side
                    .as_ref()
                    .and_then(|s| s.published.as_deref())
                    .and_then(|d| Date::from_digits(&d.replace('-', "")));
                let date = published.max(named);
                (date, date.map(Date::unix))
            }
        };
        by_file.insert(
            file,
            CatalogSource {
                source: file.to_string(),
                kind: kind.to_string(),
                version,
                date: date.map(|d| d.to_string()),
                since,
                path,
            },
        );
    }
    by_file.into_values().collect()
}

/// The day an `ms.date` names: `MM/DD/YYYY` as the docs write it (also `M/D/YYYY`), or
/// `YYYY-MM-DD`.
pub fn ms_date(text: &str) -> Option<Date> {
    let text = text.trim();
    if let Some((m, rest)) = text.split_once('/') {
        let (d, y) = rest.split_once('/')?;
        return Date::new(y.trim().parse().ok()?, m.trim().parse().ok()?, d.trim().parse().ok()?);
    }
    let mut parts = text.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// One line on a source, for logs and the CLI: `ServiceTags_Public_20260101.json
/// (changeNumber 412, published 2026-01-01) is 45 days old`.
pub fn describe(source: &CatalogSource, now: u64) -> String {
    let published = source
        .date
        .as_deref()
        .map(|d| format!(", published {d}"))
        .unwrap_or_default();
    match source.age(now) {
        Some(age) => format!(
            "{} ({}{published}) is {} days old",
            source.source,
            source.version,
            days(age)
        ),
        None => format!("{} ({}{published}): its age is unknown", source.source, source.version),
    }
}

/// Where a catalog's files are, for `sources`: the applied file while the applied
/// catalog is in force, else the config's.
pub fn paths_of(applied_from: Option<&Path>, config_paths: &[PathBuf]) -> Vec<PathBuf> {
    match applied_from {
        Some(from) => vec![from.to_path_buf()],
        None => config_paths.to_vec(),
    }
}

impl super::Daemon {
    /// Once a day (the first time at start): a warning for each source of the catalog in
    /// force older than `max_catalog_age`.
    pub(super) fn warn_if_stale(&self) {
        let max = self.config.max_catalog_age;
        let now = super::now();
        for s in &self.catalog_sources {
            if s.age(now).is_some_and(|age| is_stale(age, max)) {
                tracing::warn!(
                    source = %s.source,
                    "catalog source {}, past max_catalog_age ({max} days): fetch it again (`allowgate catalog fetch`, the allowgate-catalog-update timer), or raise max_catalog_age",
                    describe(s, now)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::sidecar::Sidecar;

    fn catalog(origins: Vec<Origin>) -> Catalog {
        Catalog {
            source: "test".into(),
            origins,
            regions: Vec::new(),
            entries: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn tag(file: &str, tag: &str) -> Origin {
        Origin::ServiceTag {
            file: file.into(),
            tag: tag.into(),
            change: 3,
            file_change: 412,
            cloud: "Public".into(),
        }
    }

    #[test]
    fn ms_dates_in_either_form() {
        assert_eq!(
            ms_date("12/17/2025").map(|d| d.to_string()).as_deref(),
            Some("2025-12-17")
        );
        assert_eq!(
            ms_date(" 1/2/2025").map(|d| d.to_string()).as_deref(),
            Some("2025-01-02")
        );
        assert_eq!(
            ms_date("2024-04-04").map(|d| d.to_string()).as_deref(),
            Some("2024-04-04")
        );
        for bad in ["13/01/2025", "soon", "", "02/30/2024"] {
            assert_eq!(ms_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_tags_file_is_as_old_as_its_date_and_one_file_is_one_source() {
        let dated = "ServiceTags_Public_20260101.json";
        let c = catalog(vec![
            tag(dated, "MicrosoftCloudAppSecurity"),
            tag(dated, "MicrosoftCloudAppSecurity.WestEurope"),
            Origin::Page {
                file: "page.md".into(),
                date: Some("12/17/2025".into()),
            },
        ]);
        let s = sources(&c, &[]);
        assert_eq!(s.len(), 2, "{s:?}");
        let tags = s.iter().find(|s| s.kind == "service-tags").unwrap();
        assert_eq!(tags.version, "changeNumber 412");
        assert_eq!(tags.date.as_deref(), Some("2026-01-01"));
        let jan1 = Date::new(2026, 1, 1).unwrap().unix();
        assert_eq!(tags.age(jan1 + 45 * 86_400), Some(45 * 86_400));
        assert!(is_stale(tags.age(jan1 + 45 * 86_400).unwrap(), 30));
        assert!(!is_stale(tags.age(jan1 + 45 * 86_400).unwrap(), 0), "0 is never");
        assert!(!is_stale(tags.age(jan1 + 29 * 86_400).unwrap(), 30));
        let page = s.iter().find(|s| s.kind == "page").unwrap();
        assert_eq!(page.date.as_deref(), Some("2025-12-17"));
        assert_eq!(page.since, Some(Date::new(2025, 12, 17).unwrap().unix()));
        // A tags file named without a date has no age, unless its sidecar names one.
        let undated = catalog(vec![tag("tags.json", "MicrosoftCloudAppSecurity")]);
        assert_eq!(sources(&undated, &[])[0].age(jan1), None);
    }

    #[test]
    fn sidecars_date_fetched_files_while_they_describe_what_is_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let tags_path = dir.path().join("service-tags-public.json");
        let page_path = dir.path().join("page.html");
        let write = |path: &Path, version: &str, published: Option<&str>, checked: &str| {
            std::fs::write(path, "x").unwrap();
            let s = Sidecar {
                url: "https://download.example/x".into(),
                source: None,
                etag: None,
                last_modified: None,
                sha256: String::new(),
                bytes: 1,
                fetched: checked.into(),
                checked: Some(checked.into()),
                published: published.map(str::to_string),
                version: Some(version.into()),
            };
            std::fs::write(sidecar::path(path), serde_json::to_vec(&s).unwrap()).unwrap();
        };
        write(
            &tags_path,
            "changeNumber 412",
            Some("2026-03-02"),
            "2026-03-03T00:00:00Z",
        );
        write(&page_path, "ms.date 12/17/2025", None, "2026-03-04T00:00:00Z");
        let c = catalog(vec![
            tag("service-tags-public.json", "MicrosoftCloudAppSecurity"),
            Origin::Page {
                file: "page.html".into(),
                date: Some("12/17/2025".into()),
            },
        ]);
        let paths = [tags_path.clone(), page_path.clone()];
        let s = sources(&c, &paths);
        let tags = s.iter().find(|s| s.kind == "service-tags").unwrap();
        assert_eq!(tags.date.as_deref(), Some("2026-03-02"), "the name the fetch found");
        assert_eq!(
            tags.since,
            Some(Date::new(2026, 3, 2).unwrap().unix()),
            "not when it was checked"
        );
        let page = s.iter().find(|s| s.kind == "page").unwrap();
        let checked = Date::new(2026, 3, 4).unwrap().unix();
        assert_eq!(page.since_now(), Some(checked), "a page is as old as its last check");
        // A later check moves a page's age; the record in force is read again.
        write(&page_path, "ms.date 12/17/2025", None, "2026-04-01T00:00:00Z");
        assert_eq!(page.since_now(), Some(Date::new(2026, 4, 1).unwrap().unix()));
        // A sidecar of another version (a newer FILE not in force) is ignored.
        write(
            &tags_path,
            "changeNumber 999",
            Some("2026-05-04"),
            "2026-05-05T00:00:00Z",
        );
        write(&page_path, "ms.date 05/01/2026", None, "2026-05-05T00:00:00Z");
        let s = sources(&c, &paths);
        let tags = s.iter().find(|s| s.kind == "service-tags").unwrap();
        assert_eq!(tags.since, None);
        let page = s.iter().find(|s| s.kind == "page").unwrap();
        assert_eq!(page.since_now(), Some(Date::new(2025, 12, 17).unwrap().unix()));
    }
}
