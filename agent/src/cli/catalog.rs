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
        service_tags::TagOptions,
        sources::{ImportOptions, SourceKind, import_bytes, read_source},
    },
    control::{
        client,
        protocol::{ChangeOptions, Request, Response},
    },
    daemon::{catalog_age, state::Shrink},
    fetch::{self, FetchRequest, Fetched},
    policy::{
        Config,
        config::{DEFAULT_MAX_CATALOG_AGE, DEFAULT_MAX_SHRINK},
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
    /// Download a catalog source into FILE when it changed: one Microsoft publishes
    /// (--source), or the document at URL.
    ///
    /// `--source service-tags-public` and `service-tags-usgov` read the download
    /// center's page of the weekly service tags file and fetch the file it links now;
    /// `--source page` fetches the "Network requirements" page from Learn. With a URL
    /// as well, the URL is where that source is read instead (a mirror).
    ///
    /// The download is checked as `catalog import` would read it and replaces FILE only
    /// when it is a catalog, in one rename, keeping FILE's mode and owner (a FILE that
    /// is a symbolic link is refused); FILE is the document itself, for the config's
    /// `catalog` key or `catalog apply`. The ETag and Last-Modified of the last download
    /// are kept in FILE.fetch.json and sent back (to the same origin only) while FILE is
    /// unchanged: when the server answers "not modified", FILE is left as it is. A FILE
    /// that lists more than max_shrink percent fewer addresses than the one it replaced
    /// is written with a warning (a reload or `catalog apply` then refuses it unless
    /// forced).
    ///
    /// Exit status: 0 written; 3 not modified (FILE is current); 1 failed, FILE
    /// untouched; 2 bad usage, FILE untouched; 4 written, but FILE.fetch.json could not
    /// be (the next fetch downloads again); 5 FILE (written or current) is older than
    /// max_catalog_age.
    Fetch(FetchArgs),
}

/// `catalog fetch`'s exit statuses besides 0, 1 and 2.
pub const EXIT_NOT_MODIFIED: u8 = 3;
pub const EXIT_STATE_NOT_SAVED: u8 = 4;
pub const EXIT_STALE: u8 = 5;

/// A source `catalog fetch --source` knows.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SourceArg {
    /// The public cloud's weekly service tags file (download center id 56519).
    ServiceTagsPublic,
    /// US Government's weekly service tags file (download center id 57063).
    #[value(name = "service-tags-usgov")]
    ServiceTagsUsGov,
    /// The "Network requirements" page on Learn.
    Page,
}

impl From<SourceArg> for fetch::Source {
    fn from(s: SourceArg) -> fetch::Source {
        match s {
            SourceArg::ServiceTagsPublic => fetch::Source::ServiceTagsPublic,
            SourceArg::ServiceTagsUsGov => fetch::Source::ServiceTagsUsGov,
            SourceArg::Page => fetch::Source::Page,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Where the document is (an https:// URL); with --source, where that source is
    /// read instead of Microsoft's location (a mirror).
    #[arg(required_unless_present = "source")]
    url: Option<String>,
    /// A source Microsoft publishes, by name.
    #[arg(long, value_enum, value_name = "SOURCE")]
    source: Option<SourceArg>,
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
    /// Give up when the whole exchange takes longer (`30s`, `2m`): a source's download
    /// page, every redirect and the body, together.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    timeout: Duration,
    /// The config whose max_shrink and max_catalog_age apply [default:
    /// /etc/allowgate/config.toml when it exists, else 25% and 30 days].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
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
    let source = args.source.map(fetch::Source::from);
    let url = match (&args.url, source) {
        (Some(url), _) => url.clone(),
        (None, Some(source)) => source.location().to_string(),
        (None, None) => unreachable!("clap requires a URL or --source"),
    };
    let (max_shrink, max_age) = fetch_limits(args.config.as_deref());
    let name = args
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = match source {
        Some(fetch::Source::Page) => Expected::Page,
        Some(_) => Expected::ServiceTags,
        None => Expected::Any,
    };
    // What FILE holds now, to tell how much a new one takes away (and, when it stays,
    // how old it is).
    let before = std::fs::symlink_metadata(&args.output)
        .ok()
        .filter(|m| m.is_file())
        .and_then(|_| read_source(&args.output).ok())
        .and_then(|bytes| read_fetched(&bytes, &name, Expected::Any).ok());
    let request = FetchRequest {
        url: url.clone(),
        source,
        output: args.output.clone(),
        ca_file: args.ca_file,
        allow_http: args.insecure_http,
        force: args.force,
        max_bytes: args.max_bytes,
        timeout: args.timeout,
    };
    let mut written: Option<Catalog> = None;
    let validate = Box::new(|bytes: &[u8]| {
        let catalog = read_fetched(bytes, &name, expected)?;
        let checked = checked_summary(&catalog);
        written = Some(catalog);
        Ok(checked)
    });
    let file = args.output.display();
    let (mut code, now_in_file) = match fetch::fetch(&request, validate) {
        Err(err) if err.is_usage() => {
            eprintln!("allowgate: {err}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        Err(err) => return Err(err.into()),
        Ok(Fetched::NotModified { document, saved, .. }) => {
            println!("{file}: not modified at {document}");
            if let Err(e) = saved {
                eprintln!(
                    "allowgate: warning: {}: the time of this check is not recorded",
                    crate::error_chain(&e)
                );
            }
            (EXIT_NOT_MODIFIED, before.as_ref())
        }
        Ok(Fetched::Written {
            url: from,
            bytes,
            summary,
            saved,
            ..
        }) => {
            println!("{file}: written from {from} ({bytes} bytes): {summary}");
            if let (Some(old), Some(new)) = (&before, &written) {
                let shrink = Shrink::between(&old.addresses(), &new.addresses());
                if shrink.exceeds(max_shrink) {
                    eprintln!(
                        "allowgate: warning: {file} lists {} catalog addresses, {} ({}%) fewer than the {} of the file it replaced, more than max_shrink ({max_shrink}%): a reload or `catalog apply` refuses it unless forced; check it with `allowgate catalog diff`",
                        shrink.after,
                        shrink.removed,
                        shrink.percent(),
                        shrink.before
                    );
                }
            }
            let code = match saved {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!(
                        "allowgate: {file} is written, but {}: the next fetch downloads it again",
                        crate::error_chain(&e)
                    );
                    EXIT_STATE_NOT_SAVED
                }
            };
            (code, written.as_ref())
        }
    };
    if let Some(catalog) = now_in_file {
        let now = crate::daemon::now();
        for s in catalog_age::sources(catalog, std::slice::from_ref(&args.output)) {
            if s.age(now).is_some_and(|age| catalog_age::is_stale(age, max_age)) {
                eprintln!(
                    "allowgate: {file}: {}, past max_catalog_age ({max_age} days){}",
                    catalog_age::describe(&s, now),
                    match source {
                        Some(s) if s != fetch::Source::Page => {
                            ": Microsoft publishes this file weekly; check that its download page still links a current one"
                        }
                        _ => ": check the source",
                    }
                );
                if code != EXIT_STATE_NOT_SAVED {
                    code = EXIT_STALE;
                }
            }
        }
    }
    Ok(ExitCode::from(code))
}

/// max_shrink and max_catalog_age from the config (`--config`, else the default one
/// when it exists), read leniently: a broken config must not stop the fetch that may
/// repair the catalog it names.
fn fetch_limits(config: Option<&Path>) -> (u8, u32) {
    let path = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::policy::config::DEFAULT_CONFIG_PATH));
    match std::fs::read_to_string(&path) {
        Ok(text) => Config::catalog_limits(&text),
        Err(e) => {
            if config.is_some() {
                eprintln!(
                    "allowgate: warning: cannot read {} ({e}): max_shrink 25%, max_catalog_age 30 days",
                    path.display()
                );
            }
            (DEFAULT_MAX_SHRINK, DEFAULT_MAX_CATALOG_AGE)
        }
    }
}

/// What a fetched document must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// Whatever `catalog import` reads (told apart by content).
    Any,
    /// The "Network requirements" page.
    Page,
    /// An Azure service tags file.
    ServiceTags,
}

/// Reads a download exactly as `catalog import` and the config's `catalog` key read a
/// file, and refuses one that lists nothing (an HTML error or login page can parse as
/// a page that lists nothing; installing it would empty the allow list).
fn read_fetched(bytes: &[u8], name: &str, expected: Expected) -> anyhow::Result<Catalog> {
    let detected = SourceKind::detect(bytes);
    let catalog = match (expected, detected) {
        (Expected::ServiceTags | Expected::Any, SourceKind::ServiceTags) | (Expected::Any, SourceKind::Catalog) => {
            read_as(bytes, name, detected)?
        }
        (Expected::ServiceTags, _) => bail!("the document is not an Azure service tags file"),
        (Expected::Page | Expected::Any, _) => read_fetched_page(bytes, name)?,
    };
    anyhow::ensure!(
        !catalog.entries.is_empty(),
        "the document lists no address or name: not the network requirements page"
    );
    Ok(catalog)
}

/// The one reader of a fetched page (`--source page`, or a URL whose document is not
/// JSON): the catalog's import entry point for pages, which reads every form of it
/// (the docs' Markdown, Learn's HTML, a Markdown mirror of Learn's rendering).
fn read_fetched_page(bytes: &[u8], name: &str) -> anyhow::Result<Catalog> {
    read_as(bytes, name, SourceKind::Page)
}

/// `bytes` imported as `kind`, the built-in catalog filling in what it leaves out.
fn read_as(bytes: &[u8], name: &str, kind: SourceKind) -> anyhow::Result<Catalog> {
    let builtin = Catalog::builtin();
    Ok(import_bytes(
        bytes,
        Path::new(name),
        kind,
        ImportOptions::with_fallback(&builtin),
    )?)
}

/// The line printed for a written catalog, and its version for the sidecar.
fn checked_summary(catalog: &Catalog) -> fetch::Checked {
    let regions: Vec<&str> = catalog.regions.iter().map(|r| r.id.as_str()).collect();
    let versions = catalog_age::sources(catalog, &[]);
    fetch::Checked {
        summary: format!("{} entries for regions {}", catalog.entries.len(), regions.join(", ")),
        // One file fetched, one source.
        version: versions.into_iter().next().map(|s| s.version),
    }
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
    fn downloads_are_read_as_import_reads_them() {
        let page = crate::catalog::BUILTIN_PAGE;
        let catalog = read_fetched(page.as_bytes(), "page.md", Expected::Any).unwrap();
        let summary = checked_summary(&catalog);
        assert!(summary.summary.contains("entries for regions"), "{summary:?}");
        assert_eq!(summary.version.as_deref(), Some("ms.date 11/01/2019"));
        assert_eq!(
            read_fetched(page.as_bytes(), "page.md", Expected::Page).unwrap(),
            catalog
        );
        let json = serde_json::to_string(&Catalog::builtin()).unwrap();
        let from_json = read_fetched(json.as_bytes(), "catalog.json", Expected::Any).unwrap();
        assert_eq!(checked_summary(&from_json).summary, summary.summary);
        // What the page parser says of an HTML page is its own business; that it refuses is ours.
        assert!(read_fetched(b"<html><body>Sign in</body></html>", "page.md", Expected::Any).is_err());
        for (bad, expected, why) in [
            (
                &br#"{"source": "x", "regions": [], "entries": []}"#[..],
                Expected::Any,
                "lists no address",
            ),
            (
                &b"{\"error\": \"not found\"}"[..],
                Expected::Any,
                "is not a catalog file",
            ),
            (&b"\xff\xfe"[..], Expected::Any, "not UTF-8 text"),
            // A source named for its service tags gives service tags, nothing else.
            (page.as_bytes(), Expected::ServiceTags, "not an Azure service tags file"),
        ] {
            let err = format!("{:#}", read_fetched(bad, "page.md", expected).unwrap_err());
            assert!(err.contains(why), "{err}");
        }
    }
}
