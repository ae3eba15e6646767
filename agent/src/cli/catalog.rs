//! `allowgate catalog import`: read a (newer) version of the page into a catalog file.
//! `allowgate catalog fetch`: download the page (or a catalog) when it changed.

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;

use crate::catalog::{
    Catalog,
    fetch::{self, FetchRequest, Fetched},
    parse_page,
};

use super::EXIT_USAGE;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Parse a "Network requirements" page (Markdown) into a catalog file (JSON) that
    /// the config's `catalog` key can name.
    Import {
        /// The page, in the Markdown of the docs repository.
        file: PathBuf,
        /// Where to write the catalog [default: standard output].
        #[arg(long, short, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Download the page (or a catalog file) from URL into FILE when it changed.
    ///
    /// The download is checked as `catalog import` would read it and replaces FILE only
    /// when it is a catalog, in one rename; FILE is the document itself, for the
    /// config's `catalog` key or `catalog apply`. The ETag and Last-Modified of the last
    /// download are kept in FILE.fetch.json and sent back: when the server answers
    /// "not modified", FILE is left as it is.
    ///
    /// Exit status: 0 written or not modified, 1 failed (FILE untouched), 2 bad usage.
    Fetch(FetchArgs),
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Where the document is: an https:// URL.
    url: String,
    /// The file to keep it in (its directory must exist).
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
    /// Trust only the CA certificates in this PEM file (an internal mirror's CA)
    /// instead of the system's roots.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Allow an http:// URL, for a local mirror you trust: nothing then proves where the
    /// document came from. Redirects from https to http are refused even so.
    #[arg(long)]
    insecure_http: bool,
    /// Download even if the server says FILE is current (ignore FILE.fetch.json).
    #[arg(long)]
    force: bool,
    /// Refuse a document bigger than this many bytes (suffixes KiB, MiB: `32MiB`).
    #[arg(long, value_name = "BYTES", default_value = "32MiB", value_parser = parse_size)]
    max_bytes: u64,
    /// Give up when the whole download, redirects included, takes longer (`30s`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    timeout: Duration,
}

pub fn execute(cmd: Command) -> anyhow::Result<ExitCode> {
    let (file, output) = match cmd {
        Command::Import { file, output } => (file, output),
        Command::Fetch(args) => return fetch_url(args),
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let catalog = parse_page(&text, &name).with_context(|| format!("{}", file.display()))?;
    let json = serde_json::to_string_pretty(&catalog)?;
    match &output {
        Some(path) => {
            // Write whole or not at all: a half-written catalog must not replace a good one.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}")?;
        }
    }
    let regions: Vec<&str> = catalog.regions.iter().map(|r| r.id.as_str()).collect();
    eprintln!(
        "allowgate: {}: {} entries for regions {}",
        file.display(),
        catalog.entries.len(),
        regions.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn fetch_url(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let request = FetchRequest {
        url: args.url.clone(),
        output: args.output.clone(),
        ca_file: args.ca_file,
        allow_http: args.insecure_http,
        force: args.force,
        max_bytes: args.max_bytes,
        timeout: args.timeout,
    };
    match fetch::fetch(&request, |bytes| Ok(validate_download(bytes, &name)?)) {
        Ok(Fetched::NotModified) => {
            println!("{}: not modified at {}", args.output.display(), args.url);
            Ok(ExitCode::SUCCESS)
        }
        Ok(Fetched::Written { url, bytes, summary }) => {
            println!(
                "{}: written from {url} ({bytes} bytes): {summary}",
                args.output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) if err.is_usage() => {
            eprintln!("allowgate: {err}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
        Err(err) => Err(err.into()),
    }
}

/// Whether a download is a catalog, read exactly as `catalog import` and the config's
/// `catalog` key read a file: JSON when it starts with `{`, else the page's Markdown.
/// Returns the summary line.
// TODO(#8): one call into the importer once it reads Azure service tags as well.
fn validate_download(bytes: &[u8], name: &str) -> anyhow::Result<String> {
    let text = std::str::from_utf8(bytes).context("the document is not UTF-8 text")?;
    let catalog: Catalog = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).context("the document is JSON but not a catalog file")?
    } else {
        parse_page(text, name)?
    };
    // An HTML error or login page can parse as a page that lists nothing; installing it
    // would empty the allow list.
    anyhow::ensure!(
        !catalog.entries.is_empty(),
        "the document lists no address or name: not the network requirements page"
    );
    let regions: Vec<&str> = catalog.regions.iter().map(|r| r.id.as_str()).collect();
    Ok(format!(
        "{} entries for regions {}",
        catalog.entries.len(),
        regions.join(", ")
    ))
}

/// A size in bytes, with an optional binary suffix: `1048576`, `512KiB`, `32MiB`, `1GiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => return Err(format!("unknown unit `{other}`: use bytes, KiB, MiB or GiB")),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: give bytes, or a number with KiB, MiB or GiB"))?;
    match number.checked_mul(scale) {
        Some(0) | None => Err(format!(
            "`{text}` is not a usable size: give a positive size up to 16 EiB"
        )),
        Some(n) => Ok(n),
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("a timeout of zero would fail every download: give one such as 30s".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}: give a duration such as 30s or 2m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "0", "MiB", "12 parsecs", "-1", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was taken as a size");
        }
    }

    #[test]
    fn downloads_are_validated_as_import_reads_them() {
        let page = crate::catalog::BUILTIN_PAGE;
        let summary = validate_download(page.as_bytes(), "page.md").unwrap();
        assert!(summary.contains("entries for regions"), "{summary}");
        let json = serde_json::to_string(&Catalog::builtin()).unwrap();
        assert_eq!(validate_download(json.as_bytes(), "catalog.json").unwrap(), summary);
        // What the page parser says of an HTML page is its own business; that it refuses is ours.
        assert!(validate_download(b"<html><body>Sign in</body></html>", "page.md").is_err());
        for (bad, why) in [
            (
                &br#"{"source": "x", "regions": [], "entries": []}"#[..],
                "lists no address",
            ),
            (&b"{\"error\": \"not found\"}"[..], "JSON but not a catalog"),
            (&b"\xff\xfe"[..], "not UTF-8"),
        ] {
            let err = format!("{:#}", validate_download(bad, "page.md").unwrap_err());
            assert!(err.contains(why), "{err}");
        }
    }
}
