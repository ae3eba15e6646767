//! `allowgate catalog fetch` end to end: the real binary against an HTTPS server on
//! 127.0.0.1 (an ephemeral port) whose CA is made here, at test time.
//!
//! The server is a few lines of HTTP/1.1 over rustls on a std listener, one thread per
//! connection; each test says what it answers and reads back what it was asked.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use assert_cmd::Command as Cmd;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const PAGE: &str = include_str!("../catalog/network-requirements-2019-11.md");
const LATER_PAGE: &str = include_str!("../agent/src/catalog/testdata/network-requirements-later-layout.md");

/// A CA and a server certificate for 127.0.0.1 that it signed.
struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            server_chain: vec![leaf_cert.der().clone()],
            server_key: leaf_key.serialize_der(),
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .unwrap();
        Arc::new(config)
    }
}

/// What the server received: the request line and the headers (names lowercased).
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
enum Reply {
    Ok {
        body: Vec<u8>,
        headers: Vec<(&'static str, String)>,
        /// Without it the body ends when the connection closes.
        content_length: bool,
    },
    NotModified,
    Redirect(String),
    /// Headers and the first bytes of a longer body, then nothing for `stall`; or, with
    /// `headers: false`, nothing at all after the request.
    Stall {
        headers: bool,
        stall: Duration,
    },
}

fn ok(body: &str, headers: &[(&'static str, &str)]) -> Reply {
    Reply::Ok {
        body: body.as_bytes().to_vec(),
        headers: headers.iter().map(|(n, v)| (*n, v.to_string())).collect(),
        content_length: true,
    }
}

type Handler = dyn Fn(usize, &Request) -> Reply + Send + Sync;

/// A server on 127.0.0.1: HTTPS with `pki`'s certificate, or plain HTTP without.
struct Server {
    port: u16,
    tls: bool,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(pki: Option<&Pki>, handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let config = pki.map(Pki::server_config);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        // Accepts until the test process exits; every connection gets its own thread so
        // a stalling answer holds up nothing else.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, handler, seen) = (config.clone(), handler.clone(), seen.clone());
                thread::spawn(move || serve(stream, config, &*handler, &seen));
            }
        });
        Server {
            port,
            tls: pki.is_some(),
            requests,
        }
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, config: Option<Arc<rustls::ServerConfig>>, handler: &Handler, seen: &Mutex<Vec<Request>>) {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    match config {
        Some(config) => {
            let conn = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            if answer(&mut tls, handler, seen) {
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
        None => {
            let mut plain = stream;
            answer(&mut plain, handler, seen);
        }
    }
}

/// Reads one request and answers it; false when there was no request to answer.
fn answer(stream: &mut (impl Read + Write), handler: &Handler, seen: &Mutex<Vec<Request>>) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            // A client that refused the certificate, or went away.
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let request = Request { path, headers };
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.push(request.clone());
        seen.len() - 1
    };
    let reply = handler(index, &request);
    let mut out = Vec::new();
    match reply {
        Reply::Ok {
            body,
            headers,
            content_length,
        } => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nConnection: close\r\n");
            for (name, value) in headers {
                out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            if content_length {
                out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
        }
        Reply::NotModified => out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n"),
        Reply::Redirect(location) => out.extend_from_slice(
            format!("HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        ),
        Reply::Stall { headers, stall } => {
            if headers {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n---\ntitle: Net");
                let _ = stream.flush();
            }
            thread::sleep(stall);
            return false;
        }
    }
    let _ = stream.write_all(&out);
    let _ = stream.flush();
    true
}

/// A directory for FILE and its sidecar; `files()` lists what is in it.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.0.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn ca_file(dir: &Dir, pki: &Pki) -> PathBuf {
    let path = dir.path("ca.pem");
    fs::write(&path, &pki.ca_pem).unwrap();
    path
}

/// Runs `allowgate catalog fetch URL -o OUTPUT ARGS...` with no proxy and no
/// certificate store from the environment, so that only what the test gives counts.
fn fetch(url: &str, output: &Path, args: &[&str]) -> Output {
    Cmd::cargo_bin("allowgate")
        .expect("the allowgate binary")
        .args(["catalog", "fetch", url, "-o"])
        .arg(output)
        .args(args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit 1, and stderr is one line that names the URL and says `what`.
#[track_caller]
fn assert_fails(out: &Output, url: &str, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "expected one line: {stderr}");
    assert!(stderr.contains(url), "the error does not name {url}: {stderr}");
    assert!(stderr.contains(what), "the error does not say `{what}`: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_page_is_written_then_kept_while_the_server_says_not_modified() {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |index, request| {
        let current = request.header("if-none-match") == Some("\"v1\"");
        match index {
            0 => ok(
                PAGE,
                &[("ETag", "\"v1\""), ("Last-Modified", "Sun, 01 Nov 2026 10:00:00 GMT")],
            ),
            // The conditional request: answered 304 only when it names what was sent;
            // a client that forgot its ETag would be sent the other page.
            _ if current => Reply::NotModified,
            _ => ok(LATER_PAGE, &[("ETag", "\"v2\"")]),
        }
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    let url = server.url("/network-requirements.md");

    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("written"), "{}", text(&out.stdout));
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        PAGE,
        "FILE is not the document fetched"
    );
    assert_eq!(dir.files(), ["ca.pem", "page.md", "page.md.fetch.json"], "leftovers");
    let first = &server.requests()[0];
    assert_eq!(first.path, "/network-requirements.md");
    assert_eq!(
        first.header("if-none-match"),
        None,
        "the first fetch has nothing to compare"
    );

    let written = fs::metadata(&output).unwrap().modified().unwrap();
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("not modified"), "{}", text(&out.stdout));
    let second = &server.requests()[1];
    assert_eq!(second.header("if-none-match"), Some("\"v1\""));
    assert_eq!(
        second.header("if-modified-since"),
        Some("Sun, 01 Nov 2026 10:00:00 GMT")
    );
    assert_eq!(fs::read_to_string(&output).unwrap(), PAGE);
    assert_eq!(
        fs::metadata(&output).unwrap().modified().unwrap(),
        written,
        "FILE was rewritten"
    );

    // --force asks unconditionally and takes what comes.
    let out = fetch(&url, &output, &["--ca-file", ca, "--force"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        server.requests()[2].header("if-none-match"),
        None,
        "--force sent validators"
    );
    assert_eq!(fs::read_to_string(&output).unwrap(), LATER_PAGE);
    let sidecar = fs::read_to_string(dir.path("page.md.fetch.json")).unwrap();
    assert!(
        sidecar.contains(r#""\"v2\"""#),
        "the sidecar keeps the new ETag: {sidecar}"
    );

    // The validators belong to the file: without it, a 304 would leave nothing.
    fs::remove_file(&output).unwrap();
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(server.requests()[3].header("if-none-match"), None);
    assert!(output.exists());
}

#[test]
fn a_body_that_is_not_a_catalog_leaves_the_file_as_it_was() {
    let pki = Pki::new("allowgate test CA");
    let bodies = [
        "<html><body>Sign in to continue</body></html>",
        "{\"error\": \"not found\"}",
        // A page cut short inside an address of the portal table: the parser names the line.
        &PAGE[..PAGE.find("|US1|13.64.26.88").expect("the page has its US1 row") + 12],
    ];
    let server = Server::start(Some(&pki), move |index, _| {
        ok(bodies[index % bodies.len()], &[("ETag", "\"bad\"")])
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let output = dir.path("page.md");
    fs::write(&output, PAGE).unwrap();
    let url = server.url("/page.md");
    for body in bodies {
        let out = fetch(&url, &output, &["--ca-file", ca.to_str().unwrap()]);
        assert_fails(&out, &url, "did not give a catalog");
        assert_eq!(
            fs::read_to_string(&output).unwrap(),
            PAGE,
            "FILE changed after {body:?}"
        );
        assert_eq!(dir.files(), ["ca.pem", "page.md"], "leftovers after {body:?}");
    }
}

#[test]
fn a_body_over_the_cap_is_refused_with_or_without_content_length() {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, request| Reply::Ok {
        body: PAGE.as_bytes().to_vec(),
        headers: Vec::new(),
        content_length: request.path == "/announced",
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    fs::write(&output, "old").unwrap();
    for path in ["/announced", "/unannounced"] {
        let url = server.url(path);
        let out = fetch(&url, &output, &["--ca-file", ca, "--max-bytes", "10KiB"]);
        assert_fails(&out, &url, "more than 10240 bytes");
        assert_eq!(fs::read_to_string(&output).unwrap(), "old");
        assert_eq!(dir.files(), ["ca.pem", "page.md"], "leftovers for {path}");
        // The same document under a cap it fits is taken, so the cap is what refused.
        let out = fetch(
            &url,
            &output,
            &["--ca-file", ca, "--max-bytes", &PAGE.len().to_string()],
        );
        assert_eq!(out.status.code(), Some(0), "{path}: {}", text(&out.stderr));
        fs::write(&output, "old").unwrap();
        fs::remove_file(dir.path("page.md.fetch.json")).unwrap();
    }
}

#[test]
fn a_server_that_stalls_fails_within_the_timeout() {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, request| Reply::Stall {
        headers: request.path == "/mid-body",
        stall: Duration::from_secs(15),
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let output = dir.path("page.md");
    for path in ["/before-headers", "/mid-body"] {
        let url = server.url(path);
        let started = Instant::now();
        let out = fetch(&url, &output, &["--ca-file", ca.to_str().unwrap(), "--timeout", "1s"]);
        let took = started.elapsed();
        assert_fails(&out, &url, "within 1s");
        assert!(
            took < Duration::from_secs(5),
            "{path}: gave up after {took:?}, not about 1 s"
        );
        assert!(!output.exists());
        assert_eq!(dir.files(), ["ca.pem"], "leftovers for {path}");
    }
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused() {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, _| ok(PAGE, &[]));
    let dir = Dir::new();
    let output = dir.path("page.md");
    let url = server.url("/page.md");

    // The system's roots do not know the test CA.
    let out = fetch(&url, &output, &[]);
    assert_fails(&out, &url, "--ca-file");
    // Nor does a bundle with another CA in it: --ca-file replaces, it does not add.
    let other = ca_file(&dir, &Pki::new("another CA"));
    let out = fetch(&url, &output, &["--ca-file", other.to_str().unwrap()]);
    assert_fails(&out, &url, "--ca-file");
    assert!(!output.exists());
    assert!(
        server.requests().is_empty(),
        "a request went out over an untrusted connection"
    );

    // The right CA, and the same server is fine.
    fs::write(&other, &pki.ca_pem).unwrap();
    let out = fetch(&url, &output, &["--ca-file", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn plain_http_is_refused_unless_asked_for() {
    let server = Server::start(None, |_, _| ok(PAGE, &[]));
    let dir = Dir::new();
    let output = dir.path("page.md");
    let url = server.url("/page.md");

    let out = fetch(&url, &output, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "plain http is bad usage: {stderr}");
    assert!(stderr.contains("--insecure-http"), "{stderr}");
    assert!(server.requests().is_empty(), "a request went out over plain http");
    assert!(!output.exists());

    let out = fetch(&url, &output, &["--insecure-http"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&output).unwrap(), PAGE);
}

#[test]
fn redirects_are_followed_but_never_from_https_to_http() {
    let pki = Pki::new("allowgate test CA");
    let plain = Server::start(None, |_, _| ok(PAGE, &[]));
    let downgrade = plain.url("/page.md");
    let server = Server::start(Some(&pki), move |_, request| match request.path.as_str() {
        "/moved" => Reply::Redirect("/page.md".to_string()),
        "/downgrade" => Reply::Redirect(downgrade.clone()),
        "/loop" => Reply::Redirect("/loop".to_string()),
        _ => ok(PAGE, &[]),
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");

    let out = fetch(&server.url("/moved"), &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&output).unwrap(), PAGE);
    fs::remove_file(&output).unwrap();

    // Not even for a mirror that is allowed plain http itself.
    let url = server.url("/downgrade");
    let out = fetch(&url, &output, &["--ca-file", ca, "--insecure-http"]);
    assert_fails(&out, &url, "plain http");
    assert!(plain.requests().is_empty(), "the downgrade was followed");
    assert!(!output.exists());

    let url = server.url("/loop");
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_fails(&out, &url, "redirects");
    assert!(!output.exists());
}

const UPDATE_SERVICE: &str = include_str!("../packaging/allowgate-catalog-update.service");
const UPDATE_TIMER: &str = include_str!("../packaging/allowgate-catalog-update.timer");

/// `Key=value` lines of a unit, comments and section headers left out.
fn unit_settings(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            l.split_once('=')
                .unwrap_or_else(|| panic!("unit line without `=`: {l}"))
        })
        .collect()
}

/// The example timer runs a fetch this binary accepts, into the file it then applies,
/// weekly, spread out, and catching up after downtime; and systemd accepts both units.
#[test]
fn the_update_timer_fetches_the_file_it_applies() {
    use clap::Parser as _;

    let settings = unit_settings(UPDATE_SERVICE);
    let exec: Vec<&str> = settings
        .iter()
        .filter(|(k, _)| *k == "ExecStart")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(exec.len(), 2, "expected a fetch and an apply: {exec:?}");
    let fetch: Vec<&str> = exec[0]
        .split_whitespace()
        .map(|w| {
            if w == "${ALLOWGATE_CATALOG_URL}" {
                "https://mirror.example/page.md"
            } else {
                w
            }
        })
        .collect();
    assert_eq!(fetch[0], "/usr/local/bin/allowgate");
    assert_eq!(fetch[1..3], ["catalog", "fetch"], "{fetch:?}");
    if let Err(e) = allowgate::cli::Cli::try_parse_from(&fetch) {
        panic!("the unit's fetch line does not parse: {e}");
    }
    let output = fetch[fetch.iter().position(|w| *w == "-o").expect("fetch -o FILE") + 1];
    let apply: Vec<&str> = exec[1].split_whitespace().collect();
    assert_eq!(apply, ["/usr/local/bin/allowgate", "catalog", "apply", output]);
    let state = settings
        .iter()
        .find(|(k, _)| *k == "StateDirectory")
        .expect("StateDirectory");
    assert!(
        Path::new(output).starts_with(Path::new("/var/lib").join(state.1)),
        "{output} is not in the writable StateDirectory={}",
        state.1
    );

    let timer = unit_settings(UPDATE_TIMER);
    for (key, value) in [
        ("OnCalendar", "weekly"),
        ("Persistent", "true"),
        ("WantedBy", "timers.target"),
    ] {
        assert!(timer.contains(&(key, value)), "the timer lacks {key}={value}");
    }
    assert!(timer.iter().any(|(k, _)| *k == "RandomizedDelaySec"));

    // systemd's own check, with the binary this test run built where the unit expects one.
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: unit verification skipped");
        return;
    }
    let dir = Dir::new();
    let binary = assert_cmd::cargo::cargo_bin("allowgate");
    let service = UPDATE_SERVICE.replace("/usr/local/bin/allowgate", binary.to_str().unwrap());
    fs::write(dir.path("allowgate-catalog-update.service"), service).unwrap();
    fs::write(dir.path("allowgate-catalog-update.timer"), UPDATE_TIMER).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path("allowgate-catalog-update.service"))
        .arg(dir.path("allowgate-catalog-update.timer"))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
