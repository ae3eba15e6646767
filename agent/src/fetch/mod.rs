//! `catalog fetch`: download a catalog source (the page, a service tags file, or a JSON
//! catalog) over HTTPS into a file, only when it changed, and never leave a
//! half-written or invalid document where the config or `catalog apply` will read it.
//!
//! - One deadline for the whole exchange: a details page, every redirect and the body.
//! - URLs are parsed (WHATWG, as browsers do): schemes compare case-insensitively,
//!   relative Locations resolve against the URL that answered, and no hop may go from
//!   https to http. What the server does wrong is a failure (exit 1), never bad usage.
//! - The sidecar `FILE.fetch.json` (see `sidecar`) makes the next fetch conditional
//!   while FILE is what was written; its validators go only to the origin (scheme,
//!   host, port) they came from.
//! - `microsoft` knows the real sources by name and finds a weekly file from its page.

mod microsoft;
mod output;
pub mod sidecar;
#[cfg(test)]
mod tests;

use std::{
    io::{self, Read as _},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub use microsoft::{Date, PAGE_URL, SERVICE_TAGS_PUBLIC_PAGE, SERVICE_TAGS_USGOV_PAGE, Source};
use ureq::{
    http::{StatusCode, header},
    tls::{Certificate, PemItem, RootCerts, TlsConfig},
};
use url::Url;

use self::{
    microsoft::Found,
    output::{Existing, TempFile},
    sidecar::Sidecar,
};

/// Refuse documents bigger than this unless told otherwise: the page is about 60 KB
/// (200 KB as HTML) and a service-tags file about 5 MB, so this is room to grow, not a
/// limit anyone should meet.
pub const DEFAULT_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// A details page is a few hundred KB; past this it is not one.
pub const MAX_DETAILS_PAGE_BYTES: u64 = 4 * 1024 * 1024;

/// The whole exchange, redirects and body included, must finish within this.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects followed per document before giving up: a CDN or a moved page needs one
/// or two.
pub const MAX_REDIRECTS: u32 = 5;

/// Why a fetch failed. In every case FILE is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{url}` is not an http(s) URL: give one such as https://host/path/page.md")]
    BadUrl { url: String },

    #[error("refusing plain http for {url}: use https://, or --insecure-http for a local mirror you trust")]
    PlainHttp { url: String },

    #[error("output path `{path}` names no file: give one such as /var/lib/allowgate/catalog/page.md")]
    BadOutput { path: PathBuf },

    #[error("{path} is a symbolic link (to {target}): refused, the link is not followed; give the file itself with -o")]
    OutputIsLink { path: PathBuf, target: PathBuf },

    #[error("{path} is not a regular file: give the path of a file with -o")]
    OutputNotFile { path: PathBuf },

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

    #[error("{page} links no {expected} file: the download page has changed; fetch the file by its URL meanwhile")]
    NoCurrentFile { page: String, expected: String },

    #[error("{page} links {link} as its current file, refused ({why}): fetch the file by its URL if you trust it")]
    UnusableLink {
        page: String,
        link: String,
        why: &'static str,
    },

    #[error("{url} did not give a catalog, {output} left as it was: check the URL")]
    Invalid {
        url: String,
        output: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "cannot give the new {path} the owner of the one it replaces (uid {uid}, gid {gid}): run as root or as that user"
    )]
    Owner {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },

    #[error("cannot write {path}: check that its directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// The command line was wrong (exit 2), rather than the network, the server or the
    /// disk (1). Only what the user typed can be bad usage: a server that redirects to
    /// a bad URL is the server's fault.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            FetchError::BadUrl { .. }
                | FetchError::PlainHttp { .. }
                | FetchError::BadOutput { .. }
                | FetchError::OutputIsLink { .. }
                | FetchError::OutputNotFile { .. }
        )
    }
}

/// What to fetch, where to, and how carefully.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The document, or with `source` the place that source is read from (its details
    /// page, or the page itself): Microsoft's, or a mirror of it.
    pub url: String,
    pub source: Option<Source>,
    pub output: PathBuf,
    /// Trust only the certificates in this PEM file, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Allow an `http://` URL (a local mirror). Redirects from https to http stay refused.
    pub allow_http: bool,
    /// Ignore the sidecar: fetch unconditionally.
    pub force: bool,
    pub max_bytes: u64,
    /// For the whole exchange.
    pub timeout: Duration,
}

/// What the validator says of a document it accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// One line for the operator.
    pub summary: String,
    /// Its version (`changeNumber 412`, `ms.date 12/17/2025`), kept in the sidecar.
    pub version: Option<String>,
}

pub type Validator<'a> = dyn FnOnce(&[u8]) -> Result<Checked, Box<dyn std::error::Error + Send + Sync>> + 'a;

/// What a successful fetch did.
#[derive(Debug)]
pub enum Fetched {
    /// The server had something newer (or nothing could be compared): it is in FILE
    /// now. `url` is where it came from after redirects; `saved` says whether the
    /// sidecar was written too (if not, the next fetch is unconditional).
    Written {
        url: String,
        document: String,
        bytes: u64,
        summary: String,
        published: Option<Date>,
        saved: Result<(), FetchError>,
    },
    /// The server said FILE is current; FILE was not touched. `saved`: whether the
    /// sidecar's time of this check was recorded.
    NotModified {
        document: String,
        published: Option<Date>,
        saved: Result<(), FetchError>,
    },
}

/// Downloads the document of `request` into FILE: to a temporary file in the same
/// directory, fsynced, checked by `validate`, then renamed over FILE with its mode and
/// owner. Nothing is written when the server answers 304 to the validators of the last
/// download, or when anything fails.
pub fn fetch(request: &FetchRequest, validate: Box<Validator<'_>>) -> Result<Fetched, FetchError> {
    let start = check_url(&request.url, request.allow_http)?;
    let existing = output::check(&request.output)?;
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
        // Statuses and redirects are handled here: 304 is an answer, not an error, and
        // every hop is checked for a downgrade to http.
        .http_status_as_error(false)
        .max_redirects(0)
        // A fresh connection per request: a fetch makes a handful, and a server that
        // closes a kept-alive connection between them must not fail the next one.
        .max_idle_connections(0)
        .user_agent(concat!("allowgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    let exchange = Exchange {
        agent,
        deadline: Instant::now() + request.timeout,
        timeout: humantime::format_duration(request.timeout).to_string(),
    };

    // A dated source: its page names the current file.
    let (document, published) = match request.source.and_then(Source::dated_prefix) {
        Some(prefix) => current_file(&exchange, &start, prefix, request.allow_http)?,
        None => (start, None),
    };
    // A document fetched by its URL may carry its date in its name as well.
    let published = published.or_else(|| Date::of_file_name(microsoft::file_name(&document)));

    let previous = if request.force {
        None
    } else {
        current_validators(request, &document)
    };
    let answer = exchange.get(&document, previous.as_ref(), request.max_bytes, true)?;
    let source = request.source.map(|s| s.name().to_string());
    let body = match answer {
        Answer::NotModified => {
            // Only ever answered with validators sent, so `previous` is Some.
            let saved = match previous {
                Some(mut v) => {
                    v.checked = Some(sidecar::now_rfc3339());
                    write_sidecar(request, &v, existing)
                }
                None => Ok(()),
            };
            return Ok(Fetched::NotModified {
                document: document.to_string(),
                published,
                saved,
            });
        }
        Answer::Body(body) => body,
    };

    let mut temp = TempFile::create(&request.output, existing)?;
    temp.write(&body.bytes)?;
    temp.sync()?;
    let checked = validate(&body.bytes).map_err(|source| FetchError::Invalid {
        url: body.url.clone(),
        output: request.output.clone(),
        source,
    })?;
    temp.persist()?;

    let now = sidecar::now_rfc3339();
    let record = Sidecar {
        url: document.to_string(),
        source,
        etag: body.etag,
        last_modified: body.last_modified,
        sha256: sidecar::sha256(&body.bytes),
        bytes: body.bytes.len() as u64,
        fetched: now.clone(),
        checked: Some(now),
        published: published.map(|d| d.to_string()),
        version: checked.version,
    };
    // The sidecar is written after FILE: a crash between the two costs one
    // unconditional download next time, never a 304 for a document not on disk.
    let saved = write_sidecar(request, &record, existing);
    Ok(Fetched::Written {
        url: body.url,
        document: document.to_string(),
        bytes: body.bytes.len() as u64,
        summary: checked.summary,
        published,
        saved,
    })
}

fn write_sidecar(request: &FetchRequest, record: &Sidecar, like: Option<Existing>) -> Result<(), FetchError> {
    let json = serde_json::to_vec_pretty(record).unwrap_or_default();
    output::write_whole(&sidecar::path(&request.output), &json, like)
}

/// The URL of `text` as given on the command line: http(s) with a host, http only with
/// `allow_http`.
fn check_url(text: &str, allow_http: bool) -> Result<Url, FetchError> {
    let bad = || FetchError::BadUrl { url: text.to_string() };
    let url = Url::parse(text.trim()).map_err(|_| bad())?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_http => Ok(url),
        "http" => Err(FetchError::PlainHttp { url: text.to_string() }),
        _ => Err(bad()),
    }
}

/// The validators to send for `document`: only when the sidecar is for that URL and
/// FILE is still byte for byte what it describes (a missing or edited FILE must be
/// fetched again, not kept because the server says "not modified").
fn current_validators(request: &FetchRequest, document: &Url) -> Option<Sidecar> {
    let v = sidecar::read(&request.output)?;
    let usable = v.url == document.as_str()
        && (v.etag.is_some() || v.last_modified.is_some())
        && !v.sha256.is_empty()
        && sidecar::sha256_of_file(&request.output, request.max_bytes).as_deref() == Some(v.sha256.as_str());
    usable.then_some(v)
}

/// Finds the current file of a dated source from its details page at `page`.
fn current_file(
    exchange: &Exchange,
    page: &Url,
    prefix: &str,
    allow_http: bool,
) -> Result<(Url, Option<Date>), FetchError> {
    let Answer::Body(body) = exchange.get(page, None, MAX_DETAILS_PAGE_BYTES, false)? else {
        return Err(FetchError::UnexpectedNotModified { url: page.to_string() });
    };
    let text = String::from_utf8_lossy(&body.bytes);
    // Links resolve against where the page really was, after redirects.
    let at = Url::parse(&body.url).unwrap_or_else(|_| page.clone());
    match microsoft::current_file(&text, &at, prefix, allow_http) {
        Found::Current(url, date) => Ok((url, Some(date))),
        Found::Nothing => Err(FetchError::NoCurrentFile {
            page: body.url,
            expected: format!("{prefix}YYYYMMDD.json"),
        }),
        Found::Refused { link, why } => Err(FetchError::UnusableLink {
            page: body.url,
            link,
            why,
        }),
    }
}

/// The HTTP side of one fetch: an agent, and the deadline every request shares.
struct Exchange {
    agent: ureq::Agent,
    deadline: Instant,
    timeout: String,
}

enum Answer {
    NotModified,
    Body(Body),
}

struct Body {
    /// Where it came from, after redirects.
    url: String,
    bytes: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Exchange {
    fn timed_out(&self, url: &Url) -> FetchError {
        FetchError::TimedOut {
            url: url.to_string(),
            timeout: self.timeout.clone(),
        }
    }

    /// `GET url`, following redirects, within the deadline, and its body read whole up
    /// to `max_bytes`. With `validators` (sent only to `url`'s origin, and only when
    /// `conditional_allowed`), a 304 is an answer.
    fn get(
        &self,
        url: &Url,
        validators: Option<&Sidecar>,
        max_bytes: u64,
        conditional_allowed: bool,
    ) -> Result<Answer, FetchError> {
        let mut at = url.clone();
        let mut redirects = 0;
        let response = loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timed_out(&at));
            }
            let mut get = self
                .agent
                .get(at.as_str())
                .config()
                .timeout_global(Some(remaining))
                .build();
            // Validators describe what `url` sent: another origin must not learn them.
            let conditional = conditional_allowed && at.origin() == url.origin();
            if let Some(v) = validators.filter(|_| conditional) {
                if let Some(etag) = &v.etag {
                    get = get.header(header::IF_NONE_MATCH, etag);
                }
                if let Some(date) = &v.last_modified {
                    get = get.header(header::IF_MODIFIED_SINCE, date);
                }
            }
            let response = get.call().map_err(|e| classify(&at, e, &self.timeout))?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| resolve_location(&at, l))
                    .ok_or_else(|| FetchError::BadRedirect {
                        url: at.to_string(),
                        status,
                    })?;
                if at.scheme() == "https" && location.scheme() != "https" {
                    return Err(FetchError::Downgrade {
                        from: at.to_string(),
                        to: location.to_string(),
                    });
                }
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(FetchError::TooManyRedirects {
                        url: url.to_string(),
                        max: MAX_REDIRECTS,
                    });
                }
                at = location;
                continue;
            }
            if status == StatusCode::NOT_MODIFIED {
                return if validators.is_some() && conditional {
                    Ok(Answer::NotModified)
                } else {
                    Err(FetchError::UnexpectedNotModified { url: at.to_string() })
                };
            }
            if status != StatusCode::OK {
                return Err(FetchError::Status {
                    url: at.to_string(),
                    status,
                });
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
            url: at.to_string(),
            max_bytes,
        };
        // A Content-Length over the cap saves reading the body; one under it proves
        // nothing, so the bytes are counted as they arrive as well.
        let announced = header_text(header::CONTENT_LENGTH).and_then(|n| n.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max_bytes) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        let mut reader = response.into_body().into_reader();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(match classify(&at, ureq::Error::from(e), &self.timeout) {
                        FetchError::Request { url, source } => FetchError::Receive { url, source },
                        other => other,
                    });
                }
            };
            if bytes.len() as u64 + n as u64 > max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        Ok(Answer::Body(Body {
            url: at.to_string(),
            bytes,
            etag,
            last_modified,
        }))
    }
}

/// The absolute URL a Location header points to, from the URL that answered with it:
/// any scheme's case, relative references (`/page?from=https://x`, `../b`), and
/// scheme-relative ones (`//host/x`); only http(s) results.
fn resolve_location(base: &Url, location: &str) -> Option<Url> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    let url = base.join(location).ok()?;
    (matches!(url.scheme(), "https" | "http") && url.host_str().is_some_and(|h| !h.is_empty())).then_some(url)
}

fn ca_file_roots(path: &std::path::Path) -> Result<Vec<Certificate<'static>>, FetchError> {
    let pem = std::fs::read(path).map_err(|source| FetchError::CaFileRead {
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
fn classify(url: &Url, err: ureq::Error, timeout: &str) -> FetchError {
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
        // Every hop's scheme is checked before it is asked, so this is a bug of ours or
        // of the agent's, and surely not the command line's.
        ureq::Error::RequireHttpsOnly(_) => FetchError::Request { url, source: err },
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
