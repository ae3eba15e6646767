//! Who may use the control socket, what junk on it does, and the event stream: the
//! real daemon in a test world (`testkit::world`), asked by hand and as `nobody`.

use std::{
    collections::BTreeMap,
    io::Write as _,
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{TempGroup, world::*};

const BIN: &str = env!("CARGO_BIN_EXE_allowgate");

// ---------------------------------------------------------------------------------------
// 6. Who may use the socket

#[test]
fn an_unprivileged_client_is_refused() {
    let world = World::new(BIN, Setup::default());
    let daemon = world.start_daemon();
    let mode = std::fs::metadata(&world.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is root's alone");
    let g0 = generation(&world.status());
    open_up(&world);

    let want = "permission denied: only root may use allowgate's socket";
    for args in [
        &["enable", "eu2"][..],
        &["disable", "eu1"],
        &["mode", "monitor"],
        &["confirm"],
        &["status", "--json"],
        &["events"],
    ] {
        refused(&world, &daemon, args, None, want);
    }
    let status = world.status();
    assert_eq!(generation(&status), g0, "nothing changed: {status}");
    assert_eq!(regions(&status), strings(&["eu1"]));
    assert_eq!(status["mode"], "enforce");
}

/// The refusal must reach the client however quickly the daemon sends it: a client
/// that writes its request after the daemon has answered and closed still gets told
/// why, not "broken pipe".
#[test]
fn the_refusal_reaches_an_unprivileged_client_however_the_race_goes() {
    let world = World::new(BIN, Setup::default());
    let _daemon = world.start_daemon();
    open_up(&world);
    let mut said = BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        let out = as_nobody(&world, &["status"], None);
        assert_eq!(out.code, 1, "{out}");
        *said.entry(out.stderr.trim().to_string()).or_default() += 1;
    }
    assert!(
        said.keys().all(|m| m.contains("permission denied: only root")),
        "30 unprivileged `status` calls were told: {said:#?}"
    );
}

#[test]
fn a_member_of_socket_group_may_use_the_socket_and_others_may_not() {
    let group = TempGroup::new("agctl");
    let world = World::for_group(BIN, &group);
    let _servers = world.servers();
    let daemon = world.start_daemon();
    let meta = std::fs::metadata(&world.socket).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(meta.mode() & 0o777, 0o660, "group-accessible socket");
    assert_eq!(meta.gid(), group.gid, "owned by socket_group");
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // A member (by a supplementary group) changes the policy.
    let out = as_nobody(&world, &["enable", "eu2"], Some(group.gid)).ok();
    assert!(out.stdout.contains("regions [eu1, eu2]"), "{out}");
    assert!(world.passes(EU2_ONLY));
    let out = as_nobody(&world, &["status", "--json"], Some(group.gid)).ok();
    assert!(out.stdout.contains("\"eu2\""), "{out}");

    // A non-member who gets past the file mode is refused by the daemon, which names
    // the group.
    std::fs::set_permissions(&world.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let want = format!(
        "only root and members of group `{}` may use allowgate's socket",
        group.name
    );
    refused(&world, &daemon, &["disable", "eu2"], None, &want);
    // Nor does membership of another group.
    refused(&world, &daemon, &["disable", "eu2"], Some(65534), &want);
    assert_eq!(regions(&world.status()), strings(&["eu1", "eu2"]));
}

// ---------------------------------------------------------------------------------------
// 7. Junk on the socket

#[test]
fn junk_huge_and_half_written_requests_are_answered_and_change_nothing() {
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let _daemon = world.start_daemon();
    let before = world.status();
    let socket = &world.socket;
    let t = Duration::from_secs(10);

    let mut huge = vec![b'a'; 200 * 1024];
    huge.push(b'\n');
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"GET / HTTP/1.0\r\n\r\n".to_vec(), "malformed request"),
        ("an open brace", b"{\n".to_vec(), "malformed request"),
        ("nothing at all", Vec::new(), "malformed request"),
        ("a 200 KiB line", huge, "larger than"),
        (
            "a huge line of JSON whitespace",
            [
                vec![b' '; 100 * 1024],
                b"{\"version\":1,\"request\":{\"verb\":\"status\"}}\n".to_vec(),
            ]
            .concat(),
            "larger than",
        ),
        (
            "invalid UTF-8",
            b"{\"version\":1,\"request\":{\"verb\":\"\xff\xfe\"}}\n".to_vec(),
            "not UTF-8",
        ),
        ("NUL bytes", b"\0\0\0\0\n".to_vec(), "malformed request"),
        (
            "the wrong version",
            br#"{"version":2,"request":{"verb":"status"}}"#.iter().chain(b"\n").copied().collect(),
            "protocol version 2",
        ),
        (
            "no version",
            br#"{"request":{"verb":"status"}}"#.iter().chain(b"\n").copied().collect(),
            "missing field `version`",
        ),
        (
            "an unknown verb",
            br#"{"version":1,"request":{"verb":"reboot"}}"#.iter().chain(b"\n").copied().collect(),
            "unknown variant `reboot`",
        ),
        (
            "an extra top-level field",
            br#"{"version":1,"request":{"verb":"status"},"extra":1}"#.iter().chain(b"\n").copied().collect(),
            "unknown field `extra`",
        ),
        (
            "a change with an extra field",
            br#"{"version":1,"request":{"verb":"enable","regions":["eu2"],"sudo":true}}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect(),
            "unknown field `sudo`",
        ),
        (
            "a change with an extra option",
            br#"{"version":1,"request":{"verb":"enable","regions":["eu2"],"options":{"force":true,"yolo":1}}}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect(),
            "unknown field `yolo`",
        ),
        (
            "a region of the wrong type",
            br#"{"version":1,"request":{"verb":"enable","regions":"eu2"}}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect(),
            "invalid type",
        ),
        (
            "an unknown region",
            br#"{"version":1,"request":{"verb":"enable","regions":["eu2","../../etc"]}}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect(),
            "../../etc",
        ),
        (
            "a negative rollback",
            br#"{"version":1,"request":{"verb":"enable","regions":["eu2"],"options":{"confirm_secs":-1}}}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect(),
            "malformed request",
        ),
        ("a JSON array", b"[1,2,3]\n".to_vec(), "malformed request"),
    ];
    for (what, bytes, want) in &cases {
        let lines = raw(socket, bytes, true, t);
        assert_eq!(lines.len(), 1, "{what}: one answer line, got {lines:?}");
        let answer: Value = serde_json::from_str(&lines[0])
            .unwrap_or_else(|e| panic!("{what}: the answer is not JSON ({e}): {lines:?}"));
        assert_eq!(answer["response"], "error", "{what}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(want), "{what}: {message:?} does not say {want:?}");
        assert!(!message.contains('\n'), "{what}: {message:?}");
    }

    // A valid request without its newline, then the end of the stream: answered.
    let lines = raw(socket, br#"{"version":1,"request":{"verb":"status"}}"#, true, t);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(r#""response":"status""#), "{lines:?}");

    // Two requests on one connection: the first is answered, the second never read.
    let lines = raw(
        socket,
        b"{\"version\":1,\"request\":{\"verb\":\"status\"}}\n{\"version\":1,\"request\":{\"verb\":\"enable\",\"regions\":[\"eu2\"]}}\n",
        true,
        t,
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(r#""response":"status""#), "{lines:?}");

    // Half a request, then silence, on many connections at once: each is closed after
    // the daemon's deadline, and meanwhile everyone else is served at once.
    let stalled: Vec<UnixStream> = (0..20)
        .map(|_| {
            let mut s = UnixStream::connect(socket).unwrap();
            s.write_all(br#"{"version":1,"requ"#).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            s
        })
        .collect();
    let opened = Instant::now();
    for _ in 0..3 {
        let out = world.cli(&["status"]).ok();
        assert!(
            out.elapsed < Duration::from_secs(2),
            "status took {:?} while connections stall",
            out.elapsed
        );
    }
    let out = world.cli(&["enable", "us1"]).ok();
    assert!(
        out.elapsed < Duration::from_secs(2),
        "a change took {:?} while connections stall",
        out.elapsed
    );
    world.cli(&["disable", "us1"]).ok();
    assert!(
        opened.elapsed() < Duration::from_secs(4),
        "the checks above must run while the connections stall"
    );
    for mut s in stalled {
        let lines = read_lines(&mut s);
        let waited = opened.elapsed();
        assert!(
            waited < Duration::from_secs(8),
            "a stalled connection was held {waited:?}"
        );
        assert!(lines.len() <= 1, "{lines:?}");
        if let Some(line) = lines.first() {
            assert!(line.contains("timed out waiting for the request"), "{line}");
        }
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(4),
        "the deadline is about 5 s, not {:?}",
        opened.elapsed()
    );

    // A client that sends a request and never reads the answer.
    {
        let mut s = UnixStream::connect(socket).unwrap();
        s.write_all(b"{\"version\":1,\"request\":{\"verb\":\"status\"}}\n")
            .unwrap();
        drop(s);
    }

    // Nothing changed but the two generations of enable/disable us1 above.
    let after = world.status();
    assert_eq!(generation(&after), generation(&before) + 2, "{after}");
    assert_eq!(regions(&after), strings(&["eu1"]), "{after}");
    assert_eq!(after["mode"], "enforce");
    assert!(world.blocked(EU2_ONLY), "no junk enabled eu2");
    assert!(world.passes(EU1_ONLY));
}

// ---------------------------------------------------------------------------------------
// 9. Events

#[test]
fn events_stream_names_the_blocked_destination() {
    let world = World::new(BIN, Setup::default());
    let _servers = world.servers();
    let _daemon = world.start_daemon();
    let mut events = Events::follow(&world);

    // The subscription starts when the daemon reads the request: probe until an event
    // about our destination arrives.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let event = 'found: loop {
        assert!(Instant::now() < deadline, "no event named {UNLISTED}; saw {seen:#?}");
        assert!(world.blocked(UNLISTED));
        for e in events.drain(Duration::from_millis(300)) {
            if e["dst"] == UNLISTED {
                break 'found e;
            }
            seen.push(e);
        }
    };
    assert_eq!(event["reason"], "policy", "{event}");
    assert_eq!(event["direction"], "egress", "{event}");
    assert_eq!(event["enforced"], true, "{event}");
    assert_eq!(event["dport"], 443, "{event}");
    assert_eq!(event["proto"], 6, "{event}");
    assert_eq!(event["interface"], world.pair.host_if.as_str(), "{event}");
    assert_eq!(event["generation"], generation(&world.status()), "{event}");
    assert!(events.child.try_wait().unwrap().is_none(), "events keeps following");
}
