//! The exposition and the listener, against a fixed source on 127.0.0.1.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::watch,
};

use super::*;
use crate::dataplane::Counters;

fn live() -> LiveState {
    let mut counters = Counters {
        events_suppressed: 7,
        events_lost: 3,
        ..Counters::default()
    };
    let counter = |packets, bytes| abi::Counter { packets, bytes };
    counters.by_key.insert(
        (abi::DIR_INGRESS, abi::VERDICT_PASS, Reason::Policy),
        counter(100, 64_000),
    );
    counters
        .by_key
        .insert((abi::DIR_INGRESS, abi::VERDICT_DROP, Reason::NoPolicy), counter(5, 300));
    counters
        .by_key
        .insert((abi::DIR_EGRESS, abi::VERDICT_DROP, Reason::V4Mapped), counter(2, 180));
    counters
        .by_key
        .insert((abi::DIR_EGRESS, abi::VERDICT_PASS, Reason::Arp), counter(u64::MAX, 1));
    LiveState {
        slot: 1,
        config: abi::GenConfig {
            generation: 42,
            flags: abi::F_ENFORCE | abi::F_ARP,
            ..Default::default()
        },
        v4_entries: 123,
        v6_entries: 45,
        counters,
        flows: Some(crate::dataplane::flows::FlowStats {
            v4: 7,
            v6: 2,
            assured_v4: 4,
            assured_v6: 1,
            capacity: u64::from(abi::FLOW_MAX),
            unassured_capacity: 32_768,
            inserts: 12,
            unassured_inserts: 40,
            seeded: 3,
            migrated: 0,
            expired: 1,
            evictions: 5,
            unassured_evictions: 6,
            fragments_noted: 8,
        }),
        links: vec!["xdp-native-veth0".into(), "tc-tcx-veth0".into()],
        dns: Some(crate::dataplane::DnsLive {
            path: GiveBackPath::Loopback,
            learning: true,
            given_back: 9,
            failed: 1,
        }),
    }
}

/// Built from JSON, as the daemon writes it, so that fields the state file gains
/// later (with defaults) do not break this test.
fn state() -> Record {
    serde_json::from_value(serde_json::json!({
        // Out of order and repeated: the output sorts and dedups.
        "regions": ["eu2", "eu1", "eu2"],
        "features": ["siem", "portal"],
        "mode": "enforce",
        "interfaces": [{"name": "ag\"weird\\name\n", "xdp_mode": "native", "tc_mode": "tcx"}],
        "generation": 42,
        "last_change": 1_700_000_000u64,
        "bpffs_dir": "/sys/fs/bpf/allowgate",
        "pid": 1,
        "catalog_sources": [
            {"source": "ServiceTags_Public_20260101.json", "kind": "service-tags", "version": "changeNumber 412",
             "date": "2026-01-01", "since": 1_767_225_600u64, "path": null},
            {"source": "tags.json", "kind": "service-tags", "version": "changeNumber 9",
             "date": null, "since": null, "path": null},
        ],
        "max_catalog_age": 30,
    }))
    .expect("a state file")
}

/// The exposition holds `line` (a whole sample line).
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// `prometheus-client` writes the format; these check what it is given: names,
/// labels, values, which families appear, and that label values are escaped.
#[test]
fn render_gives_the_values_under_their_names() {
    let now = 1_767_225_600 + 45 * 86_400;
    let text = render_at(&live(), Some(&state()), now);
    let by = |d: &str, v: &str, r: &str| format!("{{direction=\"{d}\",verdict=\"{v}\",reason=\"{r}\"}}");
    let lines = [
        format!("allowgate_packets_total{} 100", by("ingress", "pass", "policy")),
        format!("allowgate_bytes_total{} 64000", by("ingress", "pass", "policy")),
        format!("allowgate_packets_total{} 5", by("ingress", "drop", "no-policy")),
        format!("allowgate_bytes_total{} 180", by("egress", "drop", "ipv4-mapped")),
        format!("allowgate_packets_total{} {}", by("egress", "pass", "arp"), u64::MAX),
        format!("allowgate_packets_total{} 0", by("egress", "drop", "malformed")),
        format!("allowgate_bytes_total{} 0", by("ingress", "drop", "vlan-depth")),
        "allowgate_table_entries{family=\"ipv4\"} 123".into(),
        "allowgate_table_entries{family=\"ipv6\"} 45".into(),
        "allowgate_generation 42".into(),
        "allowgate_enforcing 1".into(),
        "allowgate_events_suppressed_total 7".into(),
        "allowgate_events_lost_total 3".into(),
        "allowgate_last_change_timestamp_seconds 1700000000".into(),
        "allowgate_dns_give_back{path=\"loopback\"} 1".into(),
        "allowgate_dns_give_back{path=\"live-frames\"} 0".into(),
        "allowgate_dns_give_back{path=\"none\"} 0".into(),
        "allowgate_dns_answers_total{outcome=\"given_back\"} 9".into(),
        "allowgate_dns_answers_total{outcome=\"failed\"} 1".into(),
        r#"allowgate_catalog_source_info{source="ServiceTags_Public_20260101.json",kind="service-tags",version="changeNumber 412"} 1"#.into(),
        // 45 days after 2026-01-01 (`render_at` above).
        r#"allowgate_catalog_age_seconds{source="ServiceTags_Public_20260101.json"} 3888000"#.into(),
        "allowgate_catalog_max_age_seconds 2592000".into(),
        "allowgate_region_enabled{region=\"eu1\"} 1".into(),
        "allowgate_region_enabled{region=\"eu2\"} 1".into(),
        "allowgate_feature_enabled{feature=\"siem\"} 1".into(),
        r#"allowgate_interface_info{interface="ag\"weird\\name\n",xdp_mode="native",tc_mode="tcx"} 1"#.into(),
    ];
    for line in &lines {
        assert!(has_line(&text, line), "no line {line:?} in\n{text}");
    }
    let help_and_type = [
        ("allowgate_packets_total", "counter"),
        ("allowgate_bytes_total", "counter"),
        ("allowgate_dns_answers_unsolicited_total", "counter"),
        ("allowgate_enforcing", "gauge"),
        ("allowgate_interface_info", "gauge"),
        ("allowgate_catalog_age_seconds", "gauge"),
    ];
    for (name, kind) in help_and_type {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# HELP {name} "))),
            "{name} has HELP"
        );
        assert!(has_line(&text, &format!("# TYPE {name} {kind}")), "{name} is a {kind}");
    }

    // Every combination, zeros included, so series never appear or vanish.
    for name in ["allowgate_packets_total{", "allowgate_bytes_total{"] {
        let n = text.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(n, abi::DIR_MAX * abi::VERDICT_MAX * Reason::ALL.len(), "{name}");
    }
    let regions = text
        .lines()
        .filter(|l| l.starts_with("allowgate_region_enabled{"))
        .count();
    assert_eq!(regions, 2, "sorted and deduplicated");
    assert!(text.ends_with('\n'));
    assert_eq!(
        render_at(&live(), Some(&state()), now),
        text,
        "the output is deterministic"
    );
    // A source nothing dates has no age series (rather than a made-up one).
    assert!(
        !text.contains(r#"allowgate_catalog_age_seconds{source="tags.json"}"#),
        "{text}"
    );
}

#[test]
fn monitor_mode_and_no_state_file() {
    let mut live = live();
    live.config.flags = abi::F_ARP;
    let text = render(&live, None);
    assert!(has_line(&text, "allowgate_enforcing 0"), "{text}");
    assert!(
        !text.contains("allowgate_region_enabled"),
        "no state, no regions:\n{text}"
    );
    assert!(!text.contains("allowgate_last_change_timestamp_seconds"));
    assert!(
        !text.contains("allowgate_catalog"),
        "no state, no catalog ages:\n{text}"
    );
    assert!(has_line(&text, "allowgate_generation 42"));
}

/// A server on 127.0.0.1:0 with a fixed body (or a failing source), a short
/// timeout, and the sender that stops it.
type Running = (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>);

async fn start(source: impl Source, timeout: Duration) -> Running {
    start_with(
        source,
        Limits {
            timeout,
            ..Limits::default()
        },
    )
    .await
}

/// Sends `request` raw and reads the whole response (the server closes), failing
/// rather than hanging. A server that closes with part of the request unread may
/// reset the connection after its response: what was read by then is the response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let io = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // A request the server refuses part way may not be taken in full.
        let _ = stream.write_all(request).await;
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            response.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(response).expect("a text response")
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .expect("the server answers in time")
}

/// The response head, lowercase, to look headers up in.
fn head_of(response: &str) -> String {
    response
        .split_once("\r\n\r\n")
        .map_or(response, |(h, _)| h)
        .to_ascii_lowercase()
}

fn status_of(response: &str) -> &str {
    response.split("\r\n").next().unwrap_or("")
}

fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

#[tokio::test]
async fn serves_metrics_and_refuses_the_rest() {
    let body = render(&live(), Some(&state()));
    let expected = body.clone();
    let (addr, stop, task) = start(move || Ok(body.clone()), Duration::from_secs(5)).await;

    let ok = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&ok), "HTTP/1.1 200 OK", "{ok}");
    let head = head_of(&ok);
    assert!(head.contains("\r\ncontent-type: text/plain; version=0.0.4"), "{ok}");
    assert!(head.contains("\r\nconnection: close"), "{ok}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", expected.len())),
        "{ok}"
    );
    assert_eq!(body_of(&ok), expected);

    let with_query = exchange(addr, b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n").await;
    assert_eq!(
        status_of(&with_query),
        "HTTP/1.0 200 OK",
        "answered in the client's version"
    );

    let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&head), "HTTP/1.1 200 OK");
    assert_eq!(body_of(&head), "", "HEAD has no body");

    let cases: &[(&[u8], &str)] = &[
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\nabc",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (b"GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"hello there\r\n", "HTTP/1.1 400 Bad Request"),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            "HTTP/1.1 400 Bad Request",
        ),
        (b"GET /metrics HTTP/9.9\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (
            b"GET /metrics HTTP/1.1\r\nbroken header\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
    ];
    for (request, want) in cases {
        let response = exchange(addr, request).await;
        assert_eq!(
            status_of(&response),
            *want,
            "request {:?}",
            String::from_utf8_lossy(request)
        );
    }
    let refused = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head_of(&refused).contains("\r\nallow: get, head"), "{refused}");

    // A head past the limit gets 431 at once, without the server waiting for more.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    huge.resize(4 * MAX_REQUEST, b'a');
    let response = exchange(addr, &huge).await;
    assert_eq!(
        status_of(&response),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{response}"
    );

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server stops when told")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn a_slow_client_stalls_no_one_and_is_cut_off() {
    let (addr, stop, task) = start(
        || Ok("allowgate_generation 1\n".to_string()),
        Duration::from_millis(500),
    )
    .await;
    // Connects, sends half a request line, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /met").await.unwrap();
    // Another client is served meanwhile.
    let started = std::time::Instant::now();
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_of(&response), "HTTP/1.1 200 OK");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the fast client waited for the slow one"
    );
    // The slow one is closed, unanswered, once its time is up.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("cut off")
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"),
        "an incomplete request is not served"
    );
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("a dropped sender stops the server")
        .unwrap();
}

/// A server like `start`'s, with other limits.
async fn start_with(source: impl Source, limits: Limits) -> Running {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), source)
        .await
        .expect("bind 127.0.0.1:0")
        .with_limits(limits);
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(server.run(stopped));
    (addr, stop, task)
}

/// Opens `n` connections that send half a request line and wait.
async fn idle_clients(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /met").await.unwrap();
        idle.push(s);
    }
    // Give the server time to take them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    idle
}

/// Past `MAX_PER_PEER` connections from one address, and past the total bound, a new
/// connection is closed at once (it cannot take a place from its own address); those
/// within the bounds are served.
#[tokio::test]
async fn connections_past_the_bounds_are_closed() {
    let per_peer = Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    closed_past(per_peer, MAX_PER_PEER, "the per-address bound").await;
    let total = Limits {
        max_connections: 6,
        max_per_peer: 100,
        ..Limits::default()
    };
    closed_past(total, 6, "the total bound").await;
}

/// With `held` connections idle under `limits`, one more is closed unanswered; once
/// they go, a request is served.
async fn closed_past(limits: Limits, held: usize, bound: &str) {
    let body = || Ok("allowgate_generation 1\n".to_string());
    let (addr, stop, task) = start_with(body, limits).await;
    let idle = idle_clients(addr, held).await;
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(response, "", "a connection past {bound} is closed unanswered");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_of(&response), "HTTP/1.1 200 OK", "served once places are free");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A source that takes `delay` and counts how many of it run at once.
#[derive(Clone, Default)]
struct Slow {
    running: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    started: Arc<std::sync::atomic::AtomicUsize>,
}

impl Slow {
    fn source(&self, delay: Duration) -> impl Source {
        let me = self.clone();
        move || {
            use std::sync::atomic::Ordering::SeqCst;
            me.started.fetch_add(1, SeqCst);
            let now = me.running.fetch_add(1, SeqCst) + 1;
            me.most.fetch_max(now, SeqCst);
            std::thread::sleep(delay);
            me.running.fetch_sub(1, SeqCst);
            Ok("allowgate_generation 1\n".to_string())
        }
    }
}

/// Clients that send a whole request and reset before the answer (finding 2 of issue
/// 23: 100-400 of them drove the daemon to 161 threads, one per scrape left running)
/// run one scrape at a time, however many they are: scrapes are shared and never run
/// beside each other.
#[tokio::test]
async fn clients_that_reset_run_no_more_scrapes_than_the_bound() {
    let slow = Slow::default();
    let (addr, stop, task) = start(slow.source(Duration::from_millis(200)), Duration::from_secs(5)).await;
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..200 {
        clients.spawn(async move {
            while std::time::Instant::now() < until {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
                // Long enough for the server to read the request and start the scrape.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = s.set_zero_linger();
                drop(s);
            }
        });
    }
    while clients.join_next().await.is_some() {}
    use std::sync::atomic::Ordering::SeqCst;
    let (most, started) = (slow.most.load(SeqCst), slow.started.load(SeqCst));
    assert!(started > 0, "no scrape started: the test tested nothing");
    assert!(
        most <= MAX_SCRAPES,
        "{most} scrapes ran at once (of {started} started); the bound is {MAX_SCRAPES}"
    );
    assert!(
        started < 200,
        "{started} scrapes for 2 s of 200 ms scrapes: they are not shared"
    );
    // And the endpoint still answers.
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_of(&response), "HTTP/1.1 200 OK", "{response}");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Requests that come in while a scrape runs share the next one, which starts after they
/// came in: each sees what happened before it asked, and twenty at once cost two scrapes.
#[tokio::test]
async fn waiting_requests_share_the_next_scrape() {
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = count.clone();
    let source = move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        std::thread::sleep(Duration::from_millis(300));
        Ok(format!("allowgate_generation {n}\n"))
    };
    // All from 127.0.0.1: room for them from one address.
    let limits = Limits {
        max_per_peer: 32,
        ..Limits::default()
    };
    let (addr, stop, task) = start_with(source, limits).await;
    let first = tokio::spawn(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"));
    // Scrape 1 is running by now: these come in after it started.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later: Vec<_> = (0..20)
        .map(|_| tokio::spawn(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n")))
        .collect();
    assert_eq!(body_of(&first.await.unwrap()), "allowgate_generation 1\n");
    for r in later {
        let r = r.await.unwrap();
        assert_eq!(
            body_of(&r),
            "allowgate_generation 2\n",
            "a request saw a scrape older than itself, or its own"
        );
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "twenty waiting requests, one scrape"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A client that trickles its head a byte at a time is cut off when the head deadline
/// passes, counted from its first byte: arriving bytes do not move it.
#[tokio::test]
async fn a_trickling_client_cannot_hold_its_place_past_the_deadline() {
    let timeout = Duration::from_millis(800);
    let (addr, stop, task) = start(|| Ok("allowgate_generation 1\n".to_string()), timeout).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let request = b"GET /metrics HTTP/1.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = None;
    for byte in request.chunks(1) {
        if s.write_all(byte).await.is_err() {
            closed = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let closed = closed.unwrap_or_else(|| started.elapsed());
    assert!(
        !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"),
        "the trickled request was served"
    );
    assert!(
        closed < timeout + Duration::from_millis(700),
        "held for {closed:?}, past the deadline of {timeout:?}"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_failed_read_is_a_503_with_one_line() {
    let dir = PathBuf::from("/nonexistent/allowgate-metrics-test");
    let failing = Pinned {
        bpffs_dir: dir.clone(),
        state_dir: dir,
    };
    let (addr, stop, task) = start(failing, Duration::from_secs(5)).await;
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_of(&response), "HTTP/1.1 503 Service Unavailable", "{response}");
    let body = body_of(&response);
    assert!(
        body.starts_with("cannot read the pinned maps under /nonexistent/allowgate-metrics-test"),
        "{body}"
    );
    assert_eq!(body.matches('\n').count(), 1, "one line: {body:?}");
    assert!(body.ends_with('\n'));
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[test]
fn spawn_reports_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_stop, stopped) = watch::channel(false);
    let source = Pinned {
        bpffs_dir: "/nonexistent".into(),
        state_dir: "/nonexistent".into(),
    };
    let err = spawn(addr, source, stopped).expect_err("port in use");
    assert!(matches!(err, MetricsError::Bind { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// The daemon's way: a thread of its own, stopped by the watch.
#[test]
fn spawn_serves_until_told_to_stop() {
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let (stop, stopped) = watch::channel(false);
    let thread = spawn(addr, || Ok("allowgate_generation 1\n".to_string()), stopped).expect("bind");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = rt.block_on(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"));
    assert_eq!(status_of(&response), "HTTP/1.1 200 OK", "{response}");
    stop.send(true).unwrap();
    thread.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}

/// Every series the shipped alert rules name is one the exposition writes: a renamed
/// metric would silence its alert without a word.
#[test]
fn the_alert_rules_name_series_the_exposition_writes() {
    const RULES: &str = include_str!("../../../../packaging/allowgate.rules.yml");
    let text = encode(Snapshot {
        live: live(),
        state: Some(state()),
        now: 1_767_225_600,
        protected: Some(vec![("eth0".into(), true)]),
    });
    let rules: String = RULES.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let mut named: Vec<&str> = rules
        .match_indices("allowgate_")
        .map(|(at, _)| {
            let rest = &rules[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 5, "{named:?}");
    for name in named {
        let written = text
            .lines()
            .any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(['{', ' '])));
        assert!(written, "the rules name {name}, which the exposition does not write");
    }
}
