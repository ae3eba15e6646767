//! Catalog sources as files: a page (Markdown), an Azure service tags file, or a
//! catalog written by `allowgate catalog import` (JSON). Each is read whole, capped in
//! size, told apart by its content, and several are merged into one catalog.

use std::path::{Path, PathBuf};

use super::{
    Catalog, CatalogError, PageOptions, parse_page_with,
    service_tags::{self, ServiceTagError, TagOptions},
};

/// What a source file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Page,
    ServiceTags,
    /// A catalog written by `allowgate catalog import`.
    Catalog,
}

impl SourceKind {
    /// Tells the kinds apart by content: JSON with `values` and `cloud` near its start
    /// is a service tags file, other JSON a catalog, anything else a page.
    pub fn detect(bytes: &[u8]) -> SourceKind {
        let start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(bytes.len());
        if bytes.get(start) != Some(&b'{') {
            return SourceKind::Page;
        }
        let head = &bytes[start..bytes.len().min(start + 4096)];
        let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
        if has(b"\"values\"") && has(b"\"cloud\"") {
            SourceKind::ServiceTags
        } else {
            SourceKind::Catalog
        }
    }
}

/// How to read a source.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions<'a> {
    pub page: PageOptions<'a>,
    pub tags: TagOptions<'a>,
}

impl<'a> ImportOptions<'a> {
    /// Strict reading (nothing skipped), taking linked-only names from `fallback`.
    pub fn with_fallback(fallback: &'a Catalog) -> ImportOptions<'a> {
        ImportOptions {
            page: PageOptions {
                allow_partial: false,
                fallback: Some(fallback),
            },
            tags: TagOptions::default(),
        }
    }
}

/// The largest source file read (a service tags file is about 5 MB).
pub const MAX_SOURCE_BYTES: usize = service_tags::MAX_TAG_FILE_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read catalog {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("catalog {path} is {bytes} bytes, more than the {max} a catalog source can be")]
    TooLarge { path: PathBuf, bytes: u64, max: usize },

    #[error("catalog page {path} is not UTF-8 text")]
    NotText { path: PathBuf },

    #[error("catalog page {path}")]
    Page {
        path: PathBuf,
        #[source]
        source: CatalogError,
    },

    #[error("service tags {path}")]
    ServiceTags {
        path: PathBuf,
        #[source]
        source: ServiceTagError,
    },

    #[error("catalog {path} is not a catalog file (from `allowgate catalog import`)")]
    CatalogJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a source already in memory; `path` names it in errors and in the catalog.
pub fn import_bytes(
    bytes: &[u8],
    path: &Path,
    kind: SourceKind,
    options: ImportOptions<'_>,
) -> Result<Catalog, SourceError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    match kind {
        SourceKind::Page => {
            let text = std::str::from_utf8(bytes).map_err(|_| SourceError::NotText { path: path.into() })?;
            parse_page_with(text, &name, options.page).map_err(|source| SourceError::Page {
                path: path.into(),
                source,
            })
        }
        SourceKind::ServiceTags => {
            service_tags::parse_service_tags(bytes, &name, options.tags).map_err(|source| SourceError::ServiceTags {
                path: path.into(),
                source,
            })
        }
        SourceKind::Catalog => {
            let mut catalog: Catalog = serde_json::from_slice(bytes).map_err(|source| SourceError::CatalogJson {
                path: path.into(),
                source,
            })?;
            // Written before the region vocabulary: read it in Azure's spelling.
            catalog.normalize_regions();
            Ok(catalog)
        }
    }
}

/// Reads a source file, capped at `MAX_SOURCE_BYTES`.
pub fn read_source(path: &Path) -> Result<Vec<u8>, SourceError> {
    let file = std::fs::File::open(path).map_err(|source| SourceError::Read {
        path: path.into(),
        source,
    })?;
    read_opened(file, path)
}

/// Reads a source file already open (the daemon opens it itself, to check whose it
/// is on what it reads), capped at `MAX_SOURCE_BYTES`; `path` names it in errors.
pub fn read_opened(file: std::fs::File, path: &Path) -> Result<Vec<u8>, SourceError> {
    use std::io::Read as _;
    let size = file.metadata().map(|m| m.len()).ok();
    let mut bytes = Vec::new();
    // One byte more than the cap tells a file at the cap from a larger one.
    file.take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SourceError::Read {
            path: path.into(),
            source,
        })?;
    if bytes.len() > MAX_SOURCE_BYTES {
        return Err(SourceError::TooLarge {
            path: path.into(),
            bytes: size.unwrap_or(bytes.len() as u64),
            max: MAX_SOURCE_BYTES,
        });
    }
    Ok(bytes)
}

/// Reads one source file of any kind.
pub fn import_file(path: &Path, options: ImportOptions<'_>) -> Result<Catalog, SourceError> {
    let bytes = read_source(path)?;
    let kind = SourceKind::detect(&bytes);
    import_bytes(&bytes, path, kind, options)
}

/// The catalog of a config's `catalog` key: the built-in one when it names nothing,
/// else every file it names, merged. Pages that only link to some names keep the
/// built-in catalog's.
pub fn load(paths: &[PathBuf]) -> Result<Catalog, SourceError> {
    if paths.is_empty() {
        return Ok(Catalog::builtin());
    }
    let builtin = Catalog::builtin();
    let options = ImportOptions::with_fallback(&builtin);
    let catalogs = paths
        .iter()
        .map(|p| import_file(p, options))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if catalogs.len() == 1 {
        catalogs.into_iter().next().expect("one catalog")
    } else {
        Catalog::merge(catalogs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogEntry;

    #[test]
    fn kinds_are_told_by_content() {
        assert_eq!(SourceKind::detect(b"---\ntitle: x\n---\n# Network"), SourceKind::Page);
        assert_eq!(
            SourceKind::detect(b"  \n{\"changeNumber\": 1, \"cloud\": \"Public\", \"values\": []}"),
            SourceKind::ServiceTags
        );
        assert_eq!(
            SourceKind::detect(b"{\"source\": \"x\", \"regions\": []}"),
            SourceKind::Catalog
        );
        assert_eq!(SourceKind::detect(b""), SourceKind::Page);
    }

    #[test]
    fn a_missing_file_and_a_huge_one_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.md");
        let err = load(std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(err.to_string(), format!("cannot read catalog {}", missing.display()));

        let huge = dir.path().join("huge.json");
        let file = std::fs::File::create(&huge).unwrap();
        file.set_len(MAX_SOURCE_BYTES as u64 + 10).unwrap();
        let err = load(std::slice::from_ref(&huge)).unwrap_err();
        assert!(err.to_string().contains("more than the"), "{err}");
    }

    #[test]
    fn sources_merge_and_keep_their_origins() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("page.md");
        std::fs::write(&page, super::super::BUILTIN_PAGE).unwrap();
        let tags = dir.path().join("tags.json");
        std::fs::write(
            &tags,
            r#"{"changeNumber": 9, "cloud": "Public", "values": [{"name": "MicrosoftCloudAppSecurity.WestEurope",
               "properties": {"changeNumber": 3, "region": "westeurope", "addressPrefixes": ["13.80.125.22/32", "192.0.2.0/24"]}}]}"#,
        )
        .unwrap();
        let merged = load(&[page.clone(), tags.clone()]).unwrap();
        let builtin = Catalog::builtin();
        assert_eq!(merged.origins.len(), 2);
        assert!(merged.regions.iter().any(|r| r.id == "eu1"));
        assert!(merged.regions.iter().any(|r| r.id == "westeurope"));
        // Every page entry is still there, and the tag adds its own.
        assert_eq!(merged.entries.len(), builtin.entries.len() + 2 * 5);
        let from_tag = merged
            .entries
            .iter()
            .find(|e| e.region.as_deref() == Some("westeurope") && e.peer.to_string() == "192.0.2.0/24")
            .unwrap();
        assert_eq!(
            from_tag.cite(&merged),
            "service tag MicrosoftCloudAppSecurity.WestEurope changeNumber 3 (tags.json)"
        );
        let from_page = merged
            .entries
            .iter()
            .find(|e| e.region.as_deref() == Some("eu1"))
            .unwrap();
        assert!(
            from_page.cite(&merged).starts_with("page.md (ms.date "),
            "{}",
            from_page.cite(&merged)
        );
        assert!(merged.source.contains(" + "));
    }

    /// The page's "France Central" and the tag whose `region` says `centralfrance` are
    /// one region: selecting it by either spelling brings both sources' addresses. (Before
    /// the vocabulary they were two regions, and `francecentral` missed the tag's.)
    #[test]
    fn page_and_tag_entries_of_one_region_merge() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("page.md");
        let mut text = super::super::BUILTIN_PAGE.to_string();
        text.push_str(
            "\n## Access and session controls\n\nThe following IP addresses should be allowed for both inbound and outbound connections:\n\n\
             ||IP addresses|\n|---|---|\n|**Session controls**|France Central: 198.51.100.70<br /><br />Germany West Central: 198.51.100.71|\n",
        );
        std::fs::write(&page, text).unwrap();
        let tags = dir.path().join("tags.json");
        std::fs::write(
            &tags,
            r#"{"changeNumber": 9, "cloud": "Public", "values": [
               {"name": "MicrosoftCloudAppSecurity.FranceCentral", "properties": {"changeNumber": 3, "region": "centralfrance", "addressPrefixes": ["4.178.134.40/29"]}},
               {"name": "MicrosoftCloudAppSecurity.GermanyWestCentral", "properties": {"changeNumber": 3, "region": "germanywc", "addressPrefixes": ["198.51.100.128/28"]}}]}"#,
        )
        .unwrap();
        let merged = load(&[page, tags]).unwrap();
        let azure: Vec<(&str, &str)> = merged
            .regions
            .iter()
            .filter(|r| r.kind == super::super::RegionKind::AzureRegion)
            .map(|r| (r.id.as_str(), r.label.as_str()))
            .collect();
        assert_eq!(
            azure,
            [
                ("francecentral", "France Central"),
                ("germanywestcentral", "Germany West Central")
            ]
        );
        for spelling in ["francecentral", "centralfrance", "France Central", "FranceCentral"] {
            assert_eq!(merged.region(spelling).unwrap().id, "francecentral", "{spelling}");
            let listed: std::collections::BTreeSet<String> = merged
                .selected(spelling, super::super::Feature::Proxy, None)
                .filter(|(_, e)| e.region.is_some())
                .map(|(_, e)| e.peer.to_string())
                .collect();
            assert_eq!(
                listed,
                ["198.51.100.70/32", "4.178.134.40/29"].map(String::from).into(),
                "{spelling}"
            );
        }
    }

    /// A catalog file imported before the vocabulary names regions as the tags did;
    /// it is read in Azure's spelling, and two spellings of one region become one.
    #[test]
    fn catalogs_written_before_read_in_azures_spelling() {
        let mut old = Catalog::builtin();
        let entry = |region: &str, peer: &str| CatalogEntry {
            region: Some(region.into()),
            feature: super::super::Feature::Portal,
            peer: super::super::Peer::Net(peer.parse().unwrap()),
            direction: super::super::Direction::Egress,
            proto: super::super::Proto::Tcp,
            ports: vec![super::super::PortRange::single(443)],
            line: 0,
            offering: None,
            origin: 0,
        };
        for (id, label) in [("centralfrance", "FranceCentral"), ("francecentral", "France Central")] {
            old.regions.push(super::super::Region {
                id: id.into(),
                label: label.into(),
                kind: super::super::RegionKind::AzureRegion,
            });
        }
        old.entries.push(entry("centralfrance", "192.0.2.1/32"));
        old.entries.push(entry("francecentral", "192.0.2.1/32"));
        old.entries.push(entry("francecentral", "192.0.2.2/32"));
        let bytes = serde_json::to_vec(&old).unwrap();
        let read = import_bytes(
            &bytes,
            Path::new("old.json"),
            SourceKind::Catalog,
            ImportOptions::default(),
        )
        .unwrap();
        let france: Vec<&str> = read
            .regions
            .iter()
            .filter(|r| r.id.contains("france"))
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(france, ["francecentral"]);
        let entries: Vec<String> = read
            .entries
            .iter()
            .filter(|e| e.region.as_deref() == Some("francecentral"))
            .map(|e| e.peer.to_string())
            .collect();
        assert_eq!(entries, ["192.0.2.1/32", "192.0.2.2/32"]);
        assert!(
            read.entries
                .iter()
                .all(|e| e.region.as_deref() != Some("centralfrance"))
        );
    }
}
