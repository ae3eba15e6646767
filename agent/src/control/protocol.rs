//! What travels over the control socket. One request per connection: a JSON object on
//! one line; the answer is one JSON object per line (one, or a stream for `events`).
//! Unknown fields and versions are refused, not guessed at.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    catalog::{Direction, Proto},
    events::Decoded,
    policy::Mode,
};

/// Bumped when a request or response changes shape incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;
/// A request longer than this is refused: nothing legitimate comes close.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
}

/// The SSH session a command came from (`SSH_CONNECTION`), so a change that would cut
/// it off can be stopped first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSession {
    pub client: IpAddr,
    pub server_port: u16,
}

/// Options every change carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeOptions {
    /// Roll the change back unless `confirm` arrives within this many seconds.
    #[serde(default)]
    pub confirm_secs: Option<u64>,
    /// Apply even though it would cut off the caller's SSH session.
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub ssh: Option<SshSession>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    Enable {
        regions: Vec<String>,
        #[serde(default)]
        features: Vec<String>,
        #[serde(default)]
        options: ChangeOptions,
    },
    Disable {
        regions: Vec<String>,
        #[serde(default)]
        features: Vec<String>,
        #[serde(default)]
        options: ChangeOptions,
    },
    Mode {
        mode: Mode,
        #[serde(default)]
        options: ChangeOptions,
    },
    Confirm,
    Check {
        addr: IpAddr,
        #[serde(default)]
        port: Option<u16>,
        proto: Proto,
        direction: Direction,
    },
    Events,
    /// The addresses learned for the catalog's names.
    Learned,
    /// Install the catalog in this file (a page, a service tags file or a catalog)
    /// as one generation swap, and persist it.
    CatalogApply {
        path: std::path::PathBuf,
        #[serde(default)]
        options: ChangeOptions,
    },
    /// Put the catalog in force before the last `catalog-apply` back.
    CatalogRollback {
        #[serde(default)]
        options: ChangeOptions,
    },
    /// Read the config file again, as SIGHUP does, and answer with the verdict: the
    /// generation now in force, or why the config was refused (the old policy stays).
    Reload,
}

impl Request {
    /// Whether the request changes policy (and so is refused to read-only peers).
    pub fn changes_policy(&self) -> bool {
        matches!(
            self,
            Request::Enable { .. }
                | Request::Disable { .. }
                | Request::Mode { .. }
                | Request::Confirm
                | Request::CatalogApply { .. }
                | Request::CatalogRollback { .. }
                | Request::Reload
        )
    }
}

/// One address learned for a catalog name (`show --learned`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedEntry {
    pub address: IpAddr,
    /// The catalog name it was learned for (`*.cas.ms`).
    pub name: String,
    /// The name the answer was for (`tenant.eu1.cas.ms`).
    pub queried: String,
    pub features: Vec<String>,
    pub regions: Vec<String>,
    pub expires_in_secs: u64,
}

/// The result of a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub generation: u64,
    pub regions: Vec<String>,
    pub features: Vec<String>,
    pub mode: Mode,
    /// Seconds until an unconfirmed change is rolled back.
    pub rollback_in_secs: Option<u64>,
    /// How long compiling and swapping in the new generation took, in microseconds.
    pub apply_micros: u64,
    pub warnings: Vec<String>,
}

/// The result of `catalog apply` or `catalog rollback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogApplied {
    pub generation: u64,
    /// The catalog now in force (its sources and versions).
    pub source: String,
    /// Distinct catalog addresses enforced before and after, and how many came and went.
    pub enforced_before: usize,
    pub enforced_after: usize,
    pub added: usize,
    pub removed: usize,
    pub rollback_in_secs: Option<u64>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    /// `status --json`'s object.
    Status {
        status: Box<super::status::StatusReport>,
    },
    Changed(Changed),
    CatalogApplied(CatalogApplied),
    /// The change that waited for confirmation is kept.
    Confirmed {
        generation: u64,
    },
    Check {
        explanation: crate::policy::explain::Explanation,
    },
    Event(Decoded),
    Learned {
        entries: Vec<LearnedEntry>,
    },
    /// Events were dropped because this client read too slowly.
    Lagged {
        missed: u64,
    },
    Error {
        message: String,
    },
}

impl Response {
    pub fn error(message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
        }
    }
}

/// Parses one request line; every failure is a one-line reason for the client.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the request is not UTF-8".to_string())?;
    let envelope: Envelope = serde_json::from_str(text.trim()).map_err(|e| format!("malformed request: {e}"))?;
    if envelope.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not spoken here (this daemon speaks {PROTOCOL_VERSION}): use the allowgate that matches the daemon",
            envelope.version
        ));
    }
    Ok(envelope.request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Status,
            Request::Enable {
                regions: vec!["eu1".into()],
                features: vec![],
                options: ChangeOptions::default(),
            },
            Request::Disable {
                regions: vec![],
                features: vec!["dlp".into()],
                options: ChangeOptions {
                    confirm_secs: Some(30),
                    force: false,
                    ssh: Some(SshSession {
                        client: "192.0.2.9".parse().unwrap(),
                        server_port: 22,
                    }),
                },
            },
            Request::Mode {
                mode: Mode::Monitor,
                options: ChangeOptions::default(),
            },
            Request::Confirm,
            Request::Check {
                addr: "13.80.125.22".parse().unwrap(),
                port: Some(443),
                proto: Proto::Tcp,
                direction: Direction::Egress,
            },
            Request::Events,
            Request::Reload,
        ];
        for r in requests {
            let line = serde_json::to_string(&Envelope {
                version: PROTOCOL_VERSION,
                request: r.clone(),
            })
            .unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(parse_request(line.as_bytes()), Ok(r));
        }
    }

    /// A reload puts whatever the file now says in force: only who may change policy
    /// may ask for one. The read-only requests are the control.
    #[test]
    fn reload_changes_policy_and_status_does_not() {
        assert!(Request::Reload.changes_policy());
        assert!(parse_request(br#"{"version":1,"request":{"verb":"reload"}}"#).is_ok_and(|r| r.changes_policy()));
        for read_only in [Request::Status, Request::Events, Request::Learned] {
            assert!(!read_only.changes_policy(), "{read_only:?}");
        }
    }

    #[test]
    fn junk_is_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "malformed request"),
            (b"{", "malformed request"),
            (b"\xff\xfe", "not UTF-8"),
            (br#"{"version":1}"#, "malformed request: missing field `request`"),
            (
                br#"{"version":2,"request":{"verb":"status"}}"#,
                "protocol version 2 is not spoken here",
            ),
            (
                br#"{"version":1,"request":{"verb":"reboot"}}"#,
                "unknown variant `reboot`",
            ),
            (
                br#"{"version":1,"request":{"verb":"status"},"extra":1}"#,
                "unknown field `extra`",
            ),
            (
                br#"{"version":1,"request":{"verb":"mode","mode":"off"}}"#,
                "unknown variant `off`",
            ),
            (
                br#"{"version":1,"request":{"verb":"enable","regions":"eu1"}}"#,
                "invalid type",
            ),
        ];
        for (line, want) in cases {
            let err = parse_request(line).expect_err(&String::from_utf8_lossy(line));
            assert!(err.contains(want), "{err} does not say {want}");
            assert!(!err.contains('\n'));
        }
    }
}
