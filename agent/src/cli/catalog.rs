//! `allowgate catalog`: import a page or a service tags file into a catalog file,
//! compare two catalogs, and put a new one in force in a running daemon.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{EXIT_FAILURE, EXIT_USAGE};
use crate::{
    catalog::{
        Catalog, Feature, PageOptions,
        diff::diff,
        fetch::{self, FetchRequest, Fetched},
        service_tags::TagOptions,
        sources::{ImportOptions, SourceKind, import_bytes, read_source},
    },
    control::{
        client,
        protocol::{ChangeOptions, Request, Response},
    },
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read a "Network requirements" page (the docs' Markdown, Learn's HTML, or a
    /// Markdown mirror of Learn's rendering) or an Azure service tags file (JSON) into
    /// a catalog file that the config's `catalog` key can name.
    Import(ImportArgs),
    /// What changed from one catalog to another, per region and feature (exit 0: no
    /// difference, 1: differences, 2: error, as diff(1)).
    Diff {
        /// The old catalog: a page, a service tags file or a catalog file.
        old: PathBuf,
        /// The new one.
        new: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Put a new catalog (page, service tags or catalog file) in force in the running
    /// daemon, as one generation swap; refused when it would remove more than
    /// `max_shrink` percent of the catalog addresses enforced now, unless --force. The
    /// daemon reads FILE itself: a regular file (not a link) that belongs to the caller,
    /// unless the caller is root.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        change: ApplyArgs,
    },
    /// Put the catalog in force before the last `catalog apply` back. Never refused
    /// by max_shrink (the way back may remove what the apply added); refused, like any
    /// change, when it would cut off this SSH session, unless --confirm or --force.
    Rollback {
        #[command(flatten)]
        change: ApplyArgs,
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

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The page (Markdown or HTML, told apart by content), or with --service-tags the
    /// service tags file (ServiceTags_Public_*.json).
    file: PathBuf,
    /// Read FILE as an Azure "IP Ranges and Service Tags" file.
    #[arg(long)]
    service_tags: bool,
    /// Read only this tag (and its regional tags NAME.Region); repeat for more
    /// [default: the service's tags, MicrosoftCloudAppSecurity and its regional tags,
    /// and AzureFrontDoor.MicrosoftSecurity].
    #[arg(long = "tag", value_name = "NAME", requires = "service_tags")]
    tags: Vec<String>,
    /// The features the tags' prefixes serve [default: portal, proxy, siem,
    /// app-connector; AzureFrontDoor.MicrosoftSecurity serves only portal and siem, as
    /// the page says].
    #[arg(long = "feature", short = 'f', value_name = "FEATURE", requires = "service_tags")]
    features: Vec<String>,
    /// Import a page even where parts of it cannot be read, printing what was skipped:
    /// a table or row it cannot read, or one item of a row (the row's others are kept).
    #[arg(long)]
    allow_partial: bool,
    /// Where to write the catalog [default: standard output].
    #[arg(long, short, value_name = "PATH")]
    output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Roll the catalog back unless `allowgate confirm` follows within SECONDS.
    #[arg(long, value_name = "SECONDS")]
    confirm: Option<u64>,
    /// Apply even though it removes more than max_shrink, or cuts off this SSH session.
    #[arg(long)]
    force: bool,
    /// The config whose `socket` names the daemon to ask.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

impl Command {
    /// The config that names the daemon's socket, for the verbs that ask it.
    pub fn config(&self) -> Option<&Path> {
        match self {
            Command::Apply { change, .. } | Command::Rollback { change } => change.config.as_deref(),
            _ => None,
        }
    }
}

pub fn execute(cmd: Command, socket: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Import(args) => import(args),
        Command::Diff { old, new, json } => match compare(&old, &new, json) {
            Ok(code) => Ok(code),
            Err(err) => {
                // As diff(1): 2 is trouble, 1 is "they differ".
                eprintln!("allowgate: {err:#}");
                Ok(ExitCode::from(EXIT_USAGE))
            }
        },
        Command::Apply { file, change } => {
            let path = std::fs::canonicalize(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let options = change.options();
            send(socket, Request::CatalogApply { path, options })
        }
        Command::Rollback { change } => send(
            socket,
            Request::CatalogRollback {
                options: change.options(),
            },
        ),
        Command::Fetch(args) => fetch_url(args),
    }
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
/// `catalog` key read a file (a page, a service tags file or a catalog, told apart by
/// content). Returns the summary line.
fn validate_download(bytes: &[u8], name: &str) -> anyhow::Result<String> {
    let builtin = Catalog::builtin();
    let options = ImportOptions::with_fallback(&builtin);
    let catalog = import_bytes(bytes, Path::new(name), SourceKind::detect(bytes), options)?;
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

impl ApplyArgs {
    fn options(&self) -> ChangeOptions {
        ChangeOptions {
            confirm_secs: self.confirm,
            force: self.force,
            ssh: super::change::ssh_session(),
        }
    }
}

fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let features = args
        .features
        .iter()
        .map(|f| f.parse::<Feature>())
        .collect::<Result<Vec<_>, _>>()?;
    let builtin = Catalog::builtin();
    let options = ImportOptions {
        page: PageOptions {
            allow_partial: args.allow_partial,
            fallback: Some(&builtin),
        },
        tags: TagOptions {
            tags: &args.tags,
            features: &features,
        },
    };
    let bytes = read_source(&args.file)?;
    let kind = if args.service_tags {
        SourceKind::ServiceTags
    } else {
        match SourceKind::detect(&bytes) {
            SourceKind::ServiceTags => bail!(
                "{} is a service tags file: import it with --service-tags",
                args.file.display()
            ),
            kind => kind,
        }
    };
    let catalog = import_bytes(&bytes, &args.file, kind, options)?;
    let json = serde_json::to_string_pretty(&catalog)?;
    match &args.output {
        Some(path) => write_atomically(path, (json + "\n").as_bytes())?,
        None => writeln!(std::io::stdout().lock(), "{json}")?,
    }
    for w in &catalog.warnings {
        eprintln!("allowgate: warning: {w}");
    }
    let regions: Vec<&str> = catalog.regions.iter().map(|r| r.id.as_str()).collect();
    eprintln!(
        "allowgate: {}: {} entries, {} addresses, for regions {}",
        args.file.display(),
        catalog.entries.len(),
        catalog.addresses().len(),
        regions.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Write whole or not at all: a half-written catalog must not replace a good one.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn load_any(path: &Path) -> anyhow::Result<Catalog> {
    let builtin = Catalog::builtin();
    let options = ImportOptions::with_fallback(&builtin);
    Ok(crate::catalog::sources::import_file(path, options)?)
}

fn compare(old: &Path, new: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (a, b) = (load_any(old)?, load_any(new)?);
    let d = diff(&a, &b);
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "--- {}\n+++ {}", d.old_source, d.new_source)?;
        for r in &d.regions_removed {
            writeln!(out, "- region {r}")?;
        }
        for r in &d.regions_added {
            writeln!(out, "+ region {r}")?;
        }
        for l in &d.removed {
            writeln!(out, "- {l}")?;
        }
        for l in &d.added {
            writeln!(out, "+ {l}")?;
        }
        writeln!(
            out,
            "{} added, {} removed; addresses {} -> {}",
            d.added.len(),
            d.removed.len(),
            a.addresses().len(),
            b.addresses().len()
        )?;
    }
    Ok(if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

fn send(socket: &Path, request: Request) -> anyhow::Result<ExitCode> {
    match client::call(socket, &request)? {
        Response::CatalogApplied(a) => {
            for w in &a.warnings {
                eprintln!("allowgate: warning: {w}");
            }
            println!(
                "generation {}: catalog {}; catalog addresses {} -> {} ({} added, {} removed)",
                a.generation, a.source, a.enforced_before, a.enforced_after, a.added, a.removed
            );
            if let Some(secs) = a.rollback_in_secs {
                println!("rolls back in {secs} s unless `allowgate confirm` follows");
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
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
            (&b"{\"error\": \"not found\"}"[..], "is not a catalog file"),
            (&b"\xff\xfe"[..], "not UTF-8 text"),
        ] {
            let err = format!("{:#}", validate_download(bad, "page.md").unwrap_err());
            assert!(err.contains(why), "{err}");
        }
    }
}
