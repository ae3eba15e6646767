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
const LATER_PAGE: &str = include_str!("../catalog/testdata/network-requirements-later-layout.md");
const LEARN_HTML: &str = include_str!("../catalog/testdata/network-requirements-2025.html");

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
    /// A redirect sent only after `delay`.
    SlowRedirect(String, Duration),
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
        Reply::SlowRedirect(location, delay) => {
            thread::sleep(delay);
            out.extend_from_slice(
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            );
        }
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

/// An HTTPS server of `PAGE` with the ETag "v1" (and "not modified" to a client that
/// has it), its PKI, and a directory to fetch into.
fn tagged_page() -> (Pki, Server, Dir) {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, request| match request.header("if-none-match") {
        Some("\"v1\"") => Reply::NotModified,
        _ => ok(PAGE, &[("ETag", "\"v1\"")]),
    });
    (pki, server, Dir::new())
}

fn ca_file(dir: &Dir, pki: &Pki) -> PathBuf {
    let path = dir.path("ca.pem");
    fs::write(&path, &pki.ca_pem).unwrap();
    path
}

/// Runs `allowgate catalog fetch URL -o OUTPUT ARGS...` with no proxy and no
/// certificate store from the environment, so that only what the test gives counts.
fn fetch(url: &str, output: &Path, args: &[&str]) -> Output {
    let mut cmd = Cmd::cargo_bin("allowgate").expect("the allowgate binary");
    cmd.args(["catalog", "fetch"]);
    if !url.is_empty() {
        cmd.arg(url);
    }
    cmd.arg("-o").arg(output).args(args);
    // The machine's own config must not change what is tested.
    if !args.contains(&"--config") {
        cmd.args(["--config", "/dev/null"]);
    }
    cmd.env_remove("SSL_CERT_FILE")
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
    assert_eq!(
        out.status.code(),
        Some(3),
        "not modified is 3; stderr: {}",
        text(&out.stderr)
    );
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

// ---------------------------------------------------------------------------------------
// Issue 23: what broke under attack, each with the fix's test.

/// Finding 3: `--timeout` was per redirect hop (`--timeout 3s` with 5 redirects of
/// 2.5 s each gave up after 15.5 s). Now it bounds the whole exchange: 5 redirects of
/// 0.8 s each under `--timeout 2s` fail at about 2 s, while the same chain is followed
/// under a timeout it fits in, so the deadline is what stops it.
#[test]
fn the_timeout_bounds_the_whole_exchange_redirects_included() {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, request| {
        match request.path.strip_prefix("/hop").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) if n < 5 => Reply::SlowRedirect(format!("/hop{}", n + 1), Duration::from_millis(800)),
            _ => ok(PAGE, &[]),
        }
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    let url = server.url("/hop0");
    let started = Instant::now();
    let out = fetch(&url, &output, &["--ca-file", ca, "--timeout", "2s"]);
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("within 2s"), "{stderr}");
    assert!(
        took < Duration::from_millis(3500),
        "gave up after {took:?}, not about 2 s"
    );
    assert!(!output.exists());
    let out = fetch(&url, &output, &["--ca-file", ca, "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Finding 4: schemes were compared as text. An upper-case `HTTPS://` URL let an
/// https -> http redirect through with --insecure-http (and without it exited 2, "bad
/// usage", for the server's fault); a correct `Location: HTTPS://...` was refused as
/// plain http; a relative `Location: /page?from=https://x` was refused as unusable.
#[test]
fn schemes_are_compared_parsed_and_relative_locations_resolve() {
    let pki = Pki::new("allowgate test CA");
    let plain = Server::start(None, |_, _| ok(PAGE, &[]));
    let downgrade = plain.url("/page.md").replace("http://", "HTTP://");
    let server = Server::start(Some(&pki), move |_, request| {
        let host = request.header("host").unwrap_or("127.0.0.1").to_string();
        match request.path.as_str() {
            "/downgrade" => Reply::Redirect(downgrade.clone()),
            "/upper" => Reply::Redirect(format!("HTTPS://{host}/page.md")),
            "/relative" => Reply::Redirect("/page.md?from=https://x.example/".to_string()),
            _ => ok(PAGE, &[]),
        }
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    let upper = server.url("/downgrade").replace("https://", "HTTPS://");
    for extra in [&["--insecure-http"][..], &[][..]] {
        let mut args = vec!["--ca-file", ca];
        args.extend_from_slice(extra);
        let out = fetch(&upper, &output, &args);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "the server's fault is not bad usage: {stderr}"
        );
        assert!(stderr.contains("plain http"), "{stderr}");
        assert!(plain.requests().is_empty(), "the downgrade was followed ({extra:?})");
        assert!(!output.exists());
    }
    for path in ["/upper", "/relative"] {
        let out = fetch(&server.url(path), &output, &["--ca-file", ca]);
        assert_eq!(out.status.code(), Some(0), "{path}: {}", text(&out.stderr));
        assert_eq!(fs::read_to_string(&output).unwrap(), PAGE);
        fs::remove_file(&output).unwrap();
        fs::remove_file(dir.path("page.md.fetch.json")).unwrap();
    }
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path == "/page.md?from=https://x.example/"),
        "the relative Location was not followed as given"
    );
}

/// Finding 5: exit 1 though FILE was replaced when the sidecar could not be written.
/// Now: FILE written, the sidecar not, exit 4 and a line saying both; and the other
/// outcomes each have their code (0 written, 3 not modified, 1 failed).
#[test]
fn the_exit_status_says_what_happened_to_the_file() {
    let (pki, server, dir) = tagged_page();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    fs::write(&output, "old").unwrap();
    // A directory where the sidecar goes: FILE can be replaced, the sidecar cannot.
    fs::create_dir(dir.path("page.md.fetch.json")).unwrap();
    let url = server.url("/page.md");
    let out = fetch(&url, &output, &["--ca-file", ca]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(fs::read_to_string(&output).unwrap(), PAGE, "FILE is written");
    assert!(stderr.contains("is written, but"), "{stderr}");
    assert!(stderr.contains("page.md.fetch.json"), "{stderr}");
    fs::remove_dir(dir.path("page.md.fetch.json")).unwrap();
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = fetch(
        &server.url("/nope").replace("https", "ftp"),
        &output,
        &["--ca-file", ca],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Finding 7 (sidecar): it was read whole (a 2 GiB sparse file took 8.7 s) and kept
/// only FILE's size, so a same-length edit of FILE still got "not modified". Now a huge
/// sidecar is not read, and an edited FILE, same length or not, is fetched again.
#[test]
fn the_sidecar_is_bounded_and_bound_to_the_file_content() {
    let (pki, server, dir) = tagged_page();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    let url = server.url("/page.md");

    fs::File::create(dir.path("page.md.fetch.json"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let started = Instant::now();
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(fs::metadata(dir.path("page.md.fetch.json")).unwrap().len() < 4096);

    // The same length, one byte changed.
    let mut edited = PAGE.as_bytes().to_vec();
    let at = PAGE.find("13.64.26.88").unwrap();
    edited[at] = b'9';
    fs::write(&output, &edited).unwrap();
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last = server.requests().last().unwrap().clone();
    assert_eq!(last.header("if-none-match"), None, "validators sent for an edited FILE");
    assert_eq!(fs::read_to_string(&output).unwrap(), PAGE, "the edit was kept");
}

/// Finding 7 (the file): FILE's mode and owner were not kept, and a FILE that is a
/// symbolic link silently became a regular file. Now both are kept, and a link is
/// refused (exit 2), link and target untouched: `catalog fetch` runs as root, and
/// following a link planted where it writes would let someone else choose what root
/// replaces.
#[test]
fn the_file_keeps_its_mode_and_owner_and_a_link_is_refused() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, _| ok(PAGE, &[]));
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    fs::write(&output, "old").unwrap();
    fs::set_permissions(&output, fs::Permissions::from_mode(0o640)).unwrap();
    let root = fs::metadata(&output).unwrap().uid() == 0;
    if root {
        std::os::unix::fs::chown(&output, Some(65534), Some(65534)).unwrap();
    }
    let url = server.url("/page.md");
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let meta = fs::metadata(&output).unwrap();
    assert_eq!(fs::read_to_string(&output).unwrap(), PAGE);
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    if root {
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "the owner changed");
    } else {
        eprintln!("not root: the owner part of this test is skipped");
    }

    let target = dir.path("elsewhere.md");
    fs::write(&target, "target").unwrap();
    let link = dir.path("link.md");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = fetch(&url, &link, &["--ca-file", ca]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("symbolic link") && stderr.contains("elsewhere.md"),
        "{stderr}"
    );
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_to_string(&target).unwrap(), "target");
}

/// Finding 7 (validators): If-None-Match went to a redirect target on another host.
/// Now validators go only to the origin they came from.
#[test]
fn validators_go_only_to_their_own_origin() {
    let pki = Pki::new("allowgate test CA");
    let other = Server::start(Some(&pki), |_, _| ok(LATER_PAGE, &[("ETag", "\"other\"")]));
    let elsewhere = other.url("/page.md");
    let server = Server::start(Some(&pki), move |index, request| match index {
        0 => ok(
            PAGE,
            &[("ETag", "\"v1\""), ("Last-Modified", "Sun, 01 Nov 2026 10:00:00 GMT")],
        ),
        _ if request.path == "/page.md" => Reply::Redirect(elsewhere.clone()),
        _ => ok(PAGE, &[]),
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    let url = server.url("/page.md");
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = fetch(&url, &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        server.requests()[1].header("if-none-match"),
        Some("\"v1\""),
        "the URL's own origin is asked conditionally"
    );
    let asked = &other.requests()[0];
    assert_eq!(asked.header("if-none-match"), None, "the ETag went to another origin");
    assert_eq!(asked.header("if-modified-since"), None);
    assert_eq!(fs::read_to_string(&output).unwrap(), LATER_PAGE);
}

/// Finding 6: a page with the rows of every commercial data center but US1 removed was
/// written with exit 0 and no word. It is still written (the guard that refuses it is on the daemon's side: reload,
/// start and `catalog apply`), with a warning that says how much smaller it is.
#[test]
fn a_much_smaller_catalog_is_written_with_a_warning() {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, request| match request.path.as_str() {
        "/partial.md" => ok(&us1_only(PAGE), &[]),
        _ => ok(PAGE, &[]),
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("page.md");
    let out = fetch(&server.url("/page.md"), &output, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let out = fetch(&server.url("/partial.md"), &output, &["--ca-file", ca]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("more than max_shrink (25%)"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&output).unwrap(), us1_only(PAGE));
    // Under a max_shrink it stays within, no warning.
    let config = dir.path("config.toml");
    fs::write(&config, "max_shrink = 100\n").unwrap();
    fs::write(&output, PAGE).unwrap();
    let out = fetch(
        &server.url("/partial.md"),
        &output,
        &["--ca-file", ca, "--force", "--config", config.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("warning"), "{}", text(&out.stderr));
}

/// The page with the rows of US2, US3, EU1 and EU2 removed (Gov US1's stay: the page
/// names GCC High's hosts, which need a data center of theirs).
fn us1_only(page: &str) -> String {
    page.lines()
        .filter(|l| {
            let cell = l.trim_start_matches(['>', ' ']);
            let Some(rest) = cell.strip_prefix('|') else {
                return true;
            };
            let first = rest.split('|').next().unwrap_or("").trim();
            !["US2", "US3", "EU1", "EU2"].contains(&first)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Microsoft's sources by name, against recorded shapes of their pages served here.

/// A service tags file in the shape Azure publishes (trimmed to the service's tags).
fn tags_file(cloud: &str, change: u64) -> String {
    format!(
        r#"{{"changeNumber": {change}, "cloud": "{cloud}", "values": [
  {{"name": "MicrosoftCloudAppSecurity", "id": "MicrosoftCloudAppSecurity",
    "properties": {{"changeNumber": 31, "region": "", "regionId": 0, "platform": "Azure",
      "systemService": "MicrosoftCloudAppSecurity",
      "addressPrefixes": ["192.0.2.0/28", "198.51.100.7/32", "2001:db8:10::/48"], "networkFeatures": ["API", "NSG"]}}}},
  {{"name": "MicrosoftCloudAppSecurity.WestEurope", "id": "MicrosoftCloudAppSecurity.WestEurope",
    "properties": {{"changeNumber": 7, "region": "westeurope", "regionId": 18, "platform": "Azure",
      "systemService": "MicrosoftCloudAppSecurity", "addressPrefixes": ["192.0.2.0/28"], "networkFeatures": ["API"]}}}}
]}}"#
    )
}

/// The download center's details page as it is served since 2024 (a script application
/// whose state, JSON in the page, lists the file: name, url, size, version,
/// datePublished), linking `file` at `base` (the "download.microsoft.com" of the test).
fn details_page(base: &str, file: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html lang="en-US"><head><title>Azure IP Ranges and Service Tags</title></head>
<body><div id="root"></div>
<script>{{"downloadFile":[{{"isPrimary":"True","name":"{file}","url":"{base}/download/7/1/d/71d86715/{file}","size":"4328742","version":"1","datePublished":"1/1/2026 1:55:45 PM"}}]}}</script>
</body></html>"#
    )
}

/// `YYYYMMDD` of `days_ago` days before now (UTC).
fn date_days_ago(days_ago: u64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - days_ago * 86_400;
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()[..10]
        .replace('-', "")
}

/// `--source service-tags-public` reads the details page, finds the current weekly
/// file it links, fetches, validates and writes it; asks again conditionally while the
/// page links the same file, unconditionally when it links a new one; and exits 5 when
/// the newest file the page links is older than max_catalog_age.
#[test]
fn a_weekly_source_is_found_from_its_details_page() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let pki = Pki::new("allowgate test CA");
    // Days before today of the file the page links now.
    let linked = Arc::new(AtomicU64::new(3));
    let page_links = linked.clone();
    let server = Server::start(Some(&pki), move |_, request| {
        let base = format!("https://{}", request.header("host").unwrap_or("127.0.0.1"));
        let file = format!(
            "ServiceTags_Public_{}.json",
            date_days_ago(page_links.load(Ordering::SeqCst))
        );
        if request.path == "/details" {
            return ok(&details_page(&base, &file), &[]);
        }
        let etag = format!("\"{file}\"");
        if request.header("if-none-match") == Some(etag.as_str()) {
            return Reply::NotModified;
        }
        if request.path.ends_with(&file) {
            ok(&tags_file("Public", 412), &[("ETag", &etag)])
        } else {
            Reply::Ok {
                body: b"not found".to_vec(),
                headers: Vec::new(),
                content_length: true,
            }
        }
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("service-tags-public.json");
    let details = server.url("/details");
    let args = ["--source", "service-tags-public", "--ca-file", ca];

    let out = fetch(&details, &output, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&output).unwrap(), tags_file("Public", 412));
    let sidecar = fs::read_to_string(dir.path("service-tags-public.json.fetch.json")).unwrap();
    let first = date_days_ago(3);
    assert!(
        sidecar.contains(&format!("ServiceTags_Public_{first}.json")),
        "{sidecar}"
    );
    assert!(sidecar.contains("\"source\": \"service-tags-public\""), "{sidecar}");
    assert!(sidecar.contains("\"version\": \"changeNumber 412\""), "{sidecar}");
    let requested: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(requested[0], "/details");
    assert!(requested[1].starts_with("/download/"), "{requested:?}");

    // The same file linked: a conditional request, 304, exit 3.
    let out = fetch(&details, &output, &args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(server.requests().last().unwrap().header("if-none-match").is_some());

    // A week later the page links a new file: fetched without validators.
    linked.store(0, Ordering::SeqCst);
    let out = fetch(&details, &output, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(server.requests().last().unwrap().header("if-none-match"), None);

    // The page stuck on a file 60 days old: written, and exit 5 says it is stale.
    linked.store(60, Ordering::SeqCst);
    let out = fetch(&details, &output, &args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("60 days old") && stderr.contains("max_catalog_age (30 days)"),
        "{stderr}"
    );
    // With max_catalog_age = 0 (never), the same is not stale: 3, not modified.
    let config = dir.path("config.toml");
    fs::write(&config, "max_catalog_age = 0\n").unwrap();
    let mut never = args.to_vec();
    never.extend(["--config", config.to_str().unwrap()]);
    let out = fetch(&details, &output, &never);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // The same file fetched by its URL, without --source: its name dates it too.
    let by_url = server.url(&format!(
        "/download/7/1/d/71d86715/ServiceTags_Public_{}.json",
        date_days_ago(60)
    ));
    let out = fetch(&by_url, &dir.path("by-url.json"), &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

/// US Government's page links its own file name; a page that links none, or links one
/// elsewhere, fails (exit 1) naming what it expected, and FILE stays as it was.
#[test]
fn a_details_page_without_a_usable_link_fails_and_says_so() {
    let pki = Pki::new("allowgate test CA");
    let today = date_days_ago(1);
    let server = Server::start(Some(&pki), move |_, request| {
        let base = format!("https://{}", request.header("host").unwrap_or("127.0.0.1"));
        match request.path.as_str() {
            "/usgov" => ok(
                &details_page(&base, &format!("ServiceTags_AzureGovernment_{today}.json")),
                &[],
            ),
            "/public-only" => ok(&details_page(&base, &format!("ServiceTags_Public_{today}.json")), &[]),
            "/elsewhere" => ok(
                &details_page(
                    "https://download.example.net",
                    &format!("ServiceTags_AzureGovernment_{today}.json"),
                ),
                &[],
            ),
            p if p.ends_with(".json") => ok(&tags_file("AzureGovernment", 77), &[]),
            _ => ok("not found", &[]),
        }
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("service-tags-usgov.json");
    let args = ["--source", "service-tags-usgov", "--ca-file", ca];
    let out = fetch(&server.url("/usgov"), &output, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&output).unwrap(), tags_file("AzureGovernment", 77));

    let url = server.url("/public-only");
    let out = fetch(&url, &output, &args);
    assert_fails(&out, &url, "links no ServiceTags_AzureGovernment_YYYYMMDD.json file");
    let url = server.url("/elsewhere");
    let out = fetch(&url, &output, &args);
    assert_fails(&out, &url, "on a host other than download.microsoft.com");
    assert_eq!(fs::read_to_string(&output).unwrap(), tags_file("AzureGovernment", 77));
}

/// `--source page` reads the page as Learn serves it (HTML, from the catalog's own test
/// page: the 2025 revision as Learn renders it) through the page reader, and records
/// its ms.date.
#[test]
fn the_page_source_reads_learns_html() {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, _| ok(LEARN_HTML, &[("ETag", "\"learn\"")]));
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let output = dir.path("network-requirements.html");
    let url = server.url("/en-us/defender-cloud-apps/network-requirements");
    let out = fetch(&url, &output, &["--source", "page", "--ca-file", ca.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("written"), "{}", text(&out.stdout));
    assert_eq!(fs::read_to_string(&output).unwrap(), LEARN_HTML);
    let sidecar = fs::read_to_string(dir.path("network-requirements.html.fetch.json")).unwrap();
    assert!(sidecar.contains("\"version\": \"ms.date 04/04/2024\""), "{sidecar}");
    assert!(sidecar.contains("\"source\": \"page\""), "{sidecar}");
}

/// `--source page` reads the page (here its Markdown at a mirror URL) through the
/// page reader; a service tags file there is refused as not the page, and a page
/// where a service tags source is named is refused as not a tags file.
#[test]
fn the_page_source_reads_a_page_and_only_a_page() {
    let pki = Pki::new("allowgate test CA");
    let server = Server::start(Some(&pki), |_, request| match request.path.as_str() {
        "/tags.json" => ok(&tags_file("Public", 1), &[]),
        _ if request.header("if-none-match") == Some("\"p\"") => Reply::NotModified,
        _ => ok(LATER_PAGE, &[("ETag", "\"p\"")]),
    });
    let dir = Dir::new();
    let ca = ca_file(&dir, &pki);
    let ca = ca.to_str().unwrap();
    let output = dir.path("network-requirements.md");
    let out = fetch(
        &server.url("/network-requirements"),
        &output,
        &["--source", "page", "--ca-file", ca],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&output).unwrap(), LATER_PAGE);
    // A page found current is current, whatever its ms.date: not stale.
    let out = fetch(
        &server.url("/network-requirements"),
        &output,
        &["--source", "page", "--ca-file", ca],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    let url = server.url("/tags.json");
    let out = fetch(&url, &output, &["--source", "page", "--ca-file", ca, "--force"]);
    assert_fails(&out, &url, "did not give a catalog");
    let url = server.url("/network-requirements");
    let out = fetch(
        &url,
        &dir.path("t.json"),
        &["--source", "service-tags-public", "--ca-file", ca],
    );
    assert_fails(&out, &url, "links no ServiceTags_Public_YYYYMMDD.json file");
}

/// `--source` names Microsoft's locations (the download center's details pages, the
/// page on Learn; checked here as constants, since no test reaches the internet), and
/// `--help` names the sources and documents every exit status.
#[test]
fn sources_name_microsofts_locations() {
    let out = Cmd::cargo_bin("allowgate")
        .unwrap()
        .args(["catalog", "fetch", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    for name in ["service-tags-public", "service-tags-usgov", "page"] {
        assert!(help.contains(name), "--help does not name {name}");
    }
    for code in ["3 not modified", "4 written, but", "5 FILE"] {
        assert!(help.contains(code), "--help does not document exit {code}:\n{help}");
    }
    assert_eq!(
        allowgate::fetch::SERVICE_TAGS_PUBLIC_PAGE,
        "https://www.microsoft.com/en-us/download/details.aspx?id=56519"
    );
    assert_eq!(
        allowgate::fetch::SERVICE_TAGS_USGOV_PAGE,
        "https://www.microsoft.com/en-us/download/details.aspx?id=57063"
    );
    assert_eq!(
        allowgate::fetch::PAGE_URL,
        "https://learn.microsoft.com/en-us/defender-cloud-apps/network-requirements"
    );
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

/// The example timer fetches Microsoft's sources by name (no URL to edit) into its
/// writable StateDirectory with fetch lines this binary accepts, counts "not modified"
/// (3) as success, then has the daemon reload them; weekly, spread out, and catching up
/// after downtime; and systemd accepts both units.
#[test]
fn the_update_timer_fetches_the_sources_and_reloads() {
    use clap::Parser as _;

    let settings = unit_settings(UPDATE_SERVICE);
    let exec: Vec<&str> = settings
        .iter()
        .filter(|(k, _)| *k == "ExecStart")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(exec.len(), 3, "expected two fetches and a reload: {exec:?}");
    let state = settings
        .iter()
        .find(|(k, _)| *k == "StateDirectory")
        .expect("StateDirectory");
    let mut sources = Vec::new();
    for line in &exec[..2] {
        let fetch: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fetch[0], "/usr/local/bin/allowgate");
        assert_eq!(fetch[1..3], ["catalog", "fetch"], "{fetch:?}");
        if let Err(e) = allowgate::cli::Cli::try_parse_from(&fetch) {
            panic!("the unit's fetch line does not parse: {e}");
        }
        assert!(!line.contains("://"), "a URL to edit: {line}");
        let source = fetch[fetch.iter().position(|w| *w == "--source").expect("--source NAME") + 1];
        sources.push(source);
        let output = fetch[fetch.iter().position(|w| *w == "-o").expect("fetch -o FILE") + 1];
        assert!(
            Path::new(output).starts_with(Path::new("/var/lib").join(state.1)),
            "{output} is not in the writable StateDirectory={}",
            state.1
        );
    }
    assert_eq!(sources, ["service-tags-public", "page"]);
    assert_eq!(exec[2], "+/usr/bin/systemctl try-reload-or-restart allowgate.service");
    assert!(
        settings.contains(&("SuccessExitStatus", "3")),
        "\"not modified\" (3) fails the unit"
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
