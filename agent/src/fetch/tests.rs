//! URL handling of the fetch client; the exchange itself is tested end to end against
//! a local HTTPS server in tests/fetch.rs.

use super::*;

#[test]
fn urls_other_than_https_are_refused_unless_http_is_allowed() {
    assert!(check_url("https://example.com/page.md", false).is_ok());
    // The scheme and host are case-insensitive, as everywhere else.
    assert_eq!(
        check_url("HTTPS://Example.COM/page.md", false).unwrap().as_str(),
        "https://example.com/page.md"
    );
    assert!(matches!(
        check_url("http://127.0.0.1:8080/page.md", false),
        Err(FetchError::PlainHttp { .. })
    ));
    assert!(matches!(
        check_url("HTTP://127.0.0.1:8080/page.md", false),
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
    let base = Url::parse("https://mirror.example/docs/catalog/page.md?x=1").unwrap();
    let cases = [
        ("https://other.example/a.md", Some("https://other.example/a.md")),
        ("HTTPS://Other.Example/a.md", Some("https://other.example/a.md")),
        ("http://other.example/a.md", Some("http://other.example/a.md")),
        ("//cdn.example/a.md", Some("https://cdn.example/a.md")),
        ("/b.md", Some("https://mirror.example/b.md")),
        // A query that holds a URL is still a relative reference (issue 23).
        (
            "/page?from=https://x.example/",
            Some("https://mirror.example/page?from=https://x.example/"),
        ),
        ("c.md", Some("https://mirror.example/docs/catalog/c.md")),
        ("../c.md", Some("https://mirror.example/docs/c.md")),
        ("ftp://other.example/a.md", None),
        ("javascript:alert(1)", None),
        ("", None),
    ];
    for (location, expected) in cases {
        assert_eq!(
            resolve_location(&base, location).as_ref().map(Url::as_str),
            expected,
            "Location: {location:?}"
        );
    }
}

#[test]
fn usage_is_only_what_the_command_line_said() {
    let usage = [
        FetchError::BadUrl { url: "x".into() },
        FetchError::PlainHttp { url: "x".into() },
        FetchError::BadOutput { path: "/".into() },
        FetchError::OutputIsLink {
            path: "a".into(),
            target: "b".into(),
        },
        FetchError::OutputNotFile { path: "d".into() },
    ];
    assert!(usage.iter().all(FetchError::is_usage));
    let server = [
        FetchError::Downgrade {
            from: "https://a/".into(),
            to: "http://a/".into(),
        },
        FetchError::BadRedirect {
            url: "https://a/".into(),
            status: StatusCode::FOUND,
        },
        FetchError::NoCurrentFile {
            page: "https://a/".into(),
            expected: "x".into(),
        },
    ];
    assert!(!server.iter().any(FetchError::is_usage));
}
