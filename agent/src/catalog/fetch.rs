//! `catalog fetch`: download a catalog source (the page, or a JSON catalog) over HTTPS
//! into a file, only when it changed, and never leave a half-written or invalid
//! document where the config or `catalog apply` will read it.
//!
//! The ETag and Last-Modified of the last download are kept in a sidecar file next to
//! the output (`FILE.fetch.json`) and sent back as If-None-Match / If-Modified-Since,
//! so a weekly timer costs the server one 304 when nothing changed.

use std::{
    fs::{self, File},
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use ureq::{
    http::{StatusCode, Uri, header},
    tls::{Certificate, PemItem, RootCerts, TlsConfig},
};

/// Refuse documents bigger than this unless told otherwise: the page is about 60 KB
/// and a service-tags file about 5 MB, so this is room to grow, not a limit anyone
/// should meet.
pub const DEFAULT_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// The whole exchange, redirects and body included, must finish within this.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects followed before giving up: a CDN or a moved page needs one or two.
pub const MAX_REDIRECTS: u32 = 5;

/// Why a fetch failed. In every case the output file is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{url}` is not an http(s) URL: give one such as https://host/path/page.md")]
    BadUrl { url: String },

    #[error("refusing plain http for {url}: use https://, or --insecure-http for a local mirror you trust")]
    PlainHttp { url: String },

    #[error("output path `{path}` names no file: give one such as /var/lib/allowgate/catalog/page.md")]
    BadOutput { path: PathBuf },

    #[error("cannot read the CA bundle {path}: check the path")]
    CaFileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the CA bundle {path} is not PEM: give the CA certificate(s) as -----BEGIN CERTIFICATE----- blocks")]
    CaFilePem {
        path: PathBuf,
        #[source]
        source: ureq::Error,
    },

    #[error("the CA bundle {path} holds no certificate: give the CA certificate(s) in PEM")]
    CaFileEmpty { path: PathBuf },

    #[error("no trusted root certificates on this system: install ca-certificates, or pass --ca-file")]
    NoSystemRoots,

    #[error("no complete answer from {url} within {timeout}: check the network and any proxy, or raise --timeout")]
    TimedOut { url: String, timeout: String },

    #[error("TLS with {url} failed: if the server's certificate comes from a private CA, pass --ca-file with that CA")]
    Tls {
        url: String,
        #[source]
        source: ureq::Error,
    },

    #[error("cannot reach {url}: check the URL, DNS, the network and any proxy (HTTPS_PROXY, NO_PROXY)")]
    Connect {
        url: String,
        #[source]
        source: ureq::Error,
    },

    #[error("the request to {url} failed: check the URL and try again")]
    Request {
        url: String,
        #[source]
        source: ureq::Error,
    },

    #[error("{url} answered HTTP {status}: check the URL")]
    Status { url: String, status: StatusCode },

    #[error("{url} answered 304 Not Modified to a request that was not conditional: check the server")]
    UnexpectedNotModified { url: String },

    #[error("{url} redirects ({status}) without a usable Location: check the URL")]
    BadRedirect { url: String, status: StatusCode },

    #[error("{from} redirects to plain http ({to}): refused; fetch from an https URL that stays https")]
    Downgrade { from: String, to: String },

    #[error("{url}: more than {max} redirects: check the URL")]
    TooManyRedirects { url: String, max: u32 },

    #[error("{url} sends more than {max_bytes} bytes: refused; raise --max-bytes if the document really is that big")]
    TooLarge { url: String, max_bytes: u64 },

    #[error("the download from {url} broke off: try again")]
    Receive {
        url: String,
        #[source]
        source: ureq::Error,
    },

    #[error("{url} did not give a catalog, {output} left as it was: check the URL")]
    Invalid {
        url: String,
        output: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("cannot write {path}: check that its directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// The command line was wrong (exit 2), rather than the network or the server (1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            FetchError::BadUrl { .. } | FetchError::PlainHttp { .. } | FetchError::BadOutput { .. }
        )
    }
}

/// What to fetch, where to, and how carefully.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub url: String,
    pub output: PathBuf,
    /// Trust only the certificates in this PEM file, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Allow an `http://` URL (a local mirror). Redirects from https to http stay refused.
    pub allow_http: bool,
    /// Ignore the sidecar: fetch unconditionally.
    pub force: bool,
    pub max_bytes: u64,
    pub timeout: Duration,
}

/// What a successful fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The server had something newer (or nothing could be compared): it is in the
    /// output now. `url` is where it came from after redirects.
    Written { url: String, bytes: u64, summary: String },
    /// The server said the output is current; the output was not touched.
    NotModified,
}

/// The validators of the last successful download, kept next to the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The URL asked for (before redirects): validators of another URL mean nothing.
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The size of what was written, to notice an output changed or truncated since.
    pub bytes: u64,
    pub fetched: String,
}

/// Where the validators of `output` are kept: `FILE.fetch.json` next to it.
pub fn sidecar_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".fetch.json");
    output.with_file_name(name)
}

/// Downloads `request.url` into `request.output`: to a temporary file in the same
/// directory, fsynced, checked by `validate` (which returns a one-line summary), then
/// renamed over the output. Nothing is written when the server answers 304 to the
/// validators of the last download, or when anything fails.
pub fn fetch(
    request: &FetchRequest,
    validate: impl FnOnce(&[u8]) -> Result<String, Box<dyn std::error::Error + Send + Sync>>,
) -> Result<Fetched, FetchError> {
    let url = &request.url;
    check_url(url, request.allow_http)?;
    if request.output.file_name().is_none() {
        return Err(FetchError::BadOutput {
            path: request.output.clone(),
        });
    }
    let roots = match &request.ca_file {
        Some(path) => ca_file_roots(path)?,
        None => system_roots()?,
    };
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .https_only(!request.allow_http)
        // Statuses and redirects are handled below: 304 is an answer, not an error, and
        // every hop is checked for a downgrade to http.
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(request.timeout))
        .user_agent(concat!("allowgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();

    let previous = if request.force {
        None
    } else {
        current_validators(&request.output, url)
    };
    let timeout = humantime::format_duration(request.timeout).to_string();
    let sort_error = |at: &str, err: ureq::Error| classify(at, err, &timeout);

    let mut at = url.clone();
    let mut redirects = 0;
    let response = loop {
        let mut get = agent.get(&at);
        if let Some(v) = &previous {
            if let Some(etag) = &v.etag {
                get = get.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = &v.last_modified {
                get = get.header(header::IF_MODIFIED_SINCE, date);
            }
        }
        let response = get.call().map_err(|e| sort_error(&at, e))?;
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| resolve_location(&at, l))
                .ok_or_else(|| FetchError::BadRedirect {
                    url: at.clone(),
                    status,
                })?;
            if at.starts_with("https:") && !location.starts_with("https:") {
                return Err(FetchError::Downgrade { from: at, to: location });
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(FetchError::TooManyRedirects {
                    url: url.clone(),
                    max: MAX_REDIRECTS,
                });
            }
            at = location;
            continue;
        }
        if status == StatusCode::NOT_MODIFIED {
            return match previous {
                Some(_) => Ok(Fetched::NotModified),
                None => Err(FetchError::UnexpectedNotModified { url: at }),
            };
        }
        if status != StatusCode::OK {
            return Err(FetchError::Status { url: at, status });
        }
        break response;
    };

    let header_text = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &ureq::http::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header_text(header::ETAG);
    let last_modified = header_text(header::LAST_MODIFIED);
    let too_large = || FetchError::TooLarge {
        url: at.clone(),
        max_bytes: request.max_bytes,
    };
    // A Content-Length over the cap saves reading the body; one under it proves
    // nothing, so the bytes are counted as they arrive as well.
    let announced = header_text(header::CONTENT_LENGTH).and_then(|n| n.parse::<u64>().ok());
    if announced.is_some_and(|n| n > request.max_bytes) {
        return Err(too_large());
    }

    let mut temp = TempFile::create(&request.output)?;
    let mut body = Vec::new();
    let mut reader = response.into_body().into_reader();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(match sort_error(&at, ureq::Error::from(e)) {
                    FetchError::Request { url, source } => FetchError::Receive { url, source },
                    other => other,
                });
            }
        };
        if body.len() as u64 + n as u64 > request.max_bytes {
            return Err(too_large());
        }
        temp.write(&chunk[..n])?;
        body.extend_from_slice(&chunk[..n]);
    }
    temp.sync()?;
    let summary = validate(&body).map_err(|source| FetchError::Invalid {
        url: at.clone(),
        output: request.output.clone(),
        source,
    })?;
    temp.persist()?;

    let validators = Validators {
        url: url.clone(),
        etag,
        last_modified,
        bytes: body.len() as u64,
        fetched: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let sidecar = sidecar_path(&request.output);
    // The sidecar is written after the output: a crash between the two costs one
    // unconditional download next time, never a 304 for a document not on disk.
    let json = serde_json::to_vec_pretty(&validators).unwrap_or_default();
    let mut temp = TempFile::create(&sidecar)?;
    temp.write(&json)?;
    temp.sync()?;
    temp.persist()?;

    Ok(Fetched::Written {
        url: at,
        bytes: body.len() as u64,
        summary,
    })
}

fn check_url(url: &str, allow_http: bool) -> Result<(), FetchError> {
    let bad = || FetchError::BadUrl { url: url.to_string() };
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if allow_http => Ok(()),
        Some("http") => Err(FetchError::PlainHttp { url: url.to_string() }),
        _ => Err(bad()),
    }
}

/// The validators to send: only when they are for this URL and the output still is
/// what they describe (a missing or edited output must be fetched again, not kept
/// because the server says "not modified"). An unreadable sidecar counts as none.
fn current_validators(output: &Path, url: &str) -> Option<Validators> {
    let text = fs::read(sidecar_path(output)).ok()?;
    let validators: Validators = serde_json::from_slice(&text).ok()?;
    let on_disk = fs::metadata(output).ok()?;
    let usable = validators.url == url
        && on_disk.is_file()
        && on_disk.len() == validators.bytes
        && (validators.etag.is_some() || validators.last_modified.is_some());
    usable.then_some(validators)
}

fn ca_file_roots(path: &Path) -> Result<Vec<Certificate<'static>>, FetchError> {
    let pem = fs::read(path).map_err(|source| FetchError::CaFileRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(source) => {
                return Err(FetchError::CaFilePem {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(FetchError::CaFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The roots the system trusts (/etc/ssl/certs, or SSL_CERT_FILE / SSL_CERT_DIR), so
/// that the host's own trust store, kept current by its package manager, decides.
fn system_roots() -> Result<Vec<Certificate<'static>>, FetchError> {
    // Certificates the store holds but cannot parse are skipped, as a browser would;
    // only a store with nothing usable is an error.
    let found = rustls_native_certs::load_native_certs();
    let certs: Vec<Certificate<'static>> = found
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        return Err(FetchError::NoSystemRoots);
    }
    Ok(certs)
}

/// Sorts a failed exchange into what the operator can act on.
fn classify(url: &str, err: ureq::Error, timeout: &str) -> FetchError {
    let url = url.to_string();
    // rustls reports a refused certificate as an io::Error around a rustls::Error.
    let is_tls = |e: &io::Error| e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    match err {
        ureq::Error::Timeout(_) => FetchError::TimedOut {
            url,
            timeout: timeout.to_string(),
        },
        ureq::Error::Io(ref e) if e.kind() == io::ErrorKind::TimedOut => FetchError::TimedOut {
            url,
            timeout: timeout.to_string(),
        },
        ureq::Error::RequireHttpsOnly(_) => FetchError::PlainHttp { url },
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::TlsRequired => FetchError::Tls { url, source: err },
        ureq::Error::Io(ref e) if is_tls(e) => FetchError::Tls { url, source: err },
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::ConnectProxyFailed(_) => {
            FetchError::Connect { url, source: err }
        }
        ureq::Error::Io(ref e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
            ) =>
        {
            FetchError::Connect { url, source: err }
        }
        _ => FetchError::Request { url, source: err },
    }
}

/// The absolute URL a Location header points to, from the URL that answered with it.
fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    let absolute = if location.contains("://") {
        location.to_string()
    } else {
        let uri: Uri = base.parse().ok()?;
        let scheme = uri.scheme_str()?;
        let authority = uri.authority()?.as_str();
        if let Some(rest) = location.strip_prefix("//") {
            format!("{scheme}://{rest}")
        } else if location.starts_with('/') {
            format!("{scheme}://{authority}{location}")
        } else {
            let path = uri.path();
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            let dir = if dir.is_empty() { "/" } else { dir };
            format!("{scheme}://{authority}{dir}{location}")
        }
    };
    let uri: Uri = absolute.parse().ok()?;
    matches!(uri.scheme_str(), Some("https" | "http")).then_some(absolute)
}

/// A file next to its final place, removed unless it is renamed there: a failure at
/// any point leaves the final file as it was.
struct TempFile {
    path: PathBuf,
    target: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    fn create(target: &Path) -> Result<TempFile, FetchError> {
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let path = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        // A leftover of a process with the same id that died is stale; create_new then
        // refuses to follow anything planted at the name in the meantime.
        let _ = fs::remove_file(&path);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| FetchError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(TempFile {
            path,
            target: target.to_path_buf(),
            file,
            persisted: false,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.file.write_all(bytes).map_err(|source| FetchError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn sync(&self) -> Result<(), FetchError> {
        self.file.sync_all().map_err(|source| FetchError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn persist(mut self) -> Result<(), FetchError> {
        fs::rename(&self.path, &self.target).map_err(|source| FetchError::Write {
            path: self.target.clone(),
            source,
        })?;
        self.persisted = true;
        // The rename is durable only once the directory is: sync it, best effort
        // (some file systems refuse to sync a directory, and the data is safe anyway).
        let dir = match self.target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_other_than_https_are_refused_unless_http_is_allowed() {
        assert!(check_url("https://example.com/page.md", false).is_ok());
        assert!(matches!(
            check_url("http://127.0.0.1:8080/page.md", false),
            Err(FetchError::PlainHttp { .. })
        ));
        assert!(check_url("http://127.0.0.1:8080/page.md", true).is_ok());
        for bad in [
            "ftp://example.com/x",
            "example.com/page.md",
            "https://",
            "file:///etc/passwd",
            "",
        ] {
            assert!(
                matches!(check_url(bad, true), Err(FetchError::BadUrl { .. })),
                "{bad:?} was not refused as a bad URL"
            );
        }
    }

    #[test]
    fn locations_resolve_against_the_url_that_redirected() {
        let base = "https://mirror.example/docs/catalog/page.md?x=1";
        let cases = [
            ("https://other.example/a.md", Some("https://other.example/a.md")),
            ("http://other.example/a.md", Some("http://other.example/a.md")),
            ("//cdn.example/a.md", Some("https://cdn.example/a.md")),
            ("/b.md", Some("https://mirror.example/b.md")),
            ("c.md", Some("https://mirror.example/docs/catalog/c.md")),
            ("ftp://other.example/a.md", None),
            ("", None),
        ];
        for (location, expected) in cases {
            assert_eq!(
                resolve_location(base, location).as_deref(),
                expected,
                "Location: {location:?}"
            );
        }
    }

    #[test]
    fn the_sidecar_sits_next_to_the_output() {
        assert_eq!(
            sidecar_path(Path::new("/var/lib/allowgate/catalog/page.md")),
            Path::new("/var/lib/allowgate/catalog/page.md.fetch.json")
        );
        assert_eq!(sidecar_path(Path::new("page.md")), Path::new("page.md.fetch.json"));
    }

    #[test]
    fn validators_are_sent_only_for_the_same_url_and_an_intact_output() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("page.md");
        let url = "https://mirror.example/page.md";
        let validators = Validators {
            url: url.to_string(),
            etag: Some("\"v1\"".to_string()),
            last_modified: None,
            bytes: 5,
            fetched: "2026-01-01T00:00:00Z".to_string(),
        };
        fs::write(sidecar_path(&output), serde_json::to_vec(&validators).unwrap()).unwrap();
        assert_eq!(current_validators(&output, url), None, "no output on disk");
        fs::write(&output, "hello").unwrap();
        assert_eq!(current_validators(&output, url), Some(validators));
        assert_eq!(current_validators(&output, "https://other.example/page.md"), None);
        fs::write(&output, "hello, edited").unwrap();
        assert_eq!(current_validators(&output, url), None, "output changed since");
        fs::write(sidecar_path(&output), "{not json").unwrap();
        assert_eq!(current_validators(&output, url), None, "unreadable sidecar");
    }
}
