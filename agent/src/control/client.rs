//! The CLI's side of the socket: one request, then its answers.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{Envelope, PROTOCOL_VERSION, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no allowgate daemon answers on {path}: is `allowgate daemon` running? (--socket names another socket)")]
    NotRunning { path: PathBuf },
    #[error("permission denied on {path}: run as root, or as a member of the config's socket_group")]
    PermissionDenied { path: PathBuf },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon's answer is not understood ({detail}): use the allowgate that matches the daemon")]
    Protocol { detail: String },
}

/// An open request: read its answers with `next`.
pub struct Connection {
    reader: BufReader<UnixStream>,
    path: PathBuf,
}

/// Sends `request` to the daemon at `path`. `read_timeout` bounds each answer's wait
/// (`None` for streams such as `events`).
pub fn send(path: &Path, request: &Request, read_timeout: Option<Duration>) -> Result<Connection, ClientError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            path: path.to_path_buf(),
        },
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => ClientError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(read_timeout).map_err(io)?;
    let mut line = serde_json::to_vec(&Envelope {
        version: PROTOCOL_VERSION,
        request: request.clone(),
    })
    .map_err(|e| ClientError::Protocol { detail: e.to_string() })?;
    line.push(b'\n');
    // A daemon that refuses this client may close before reading all of it: the
    // refusal is still there to read, and says more than a broken pipe.
    if let Err(e) = stream.write_all(&line)
        && e.kind() != std::io::ErrorKind::BrokenPipe
        && e.kind() != std::io::ErrorKind::ConnectionReset
    {
        return Err(io(e));
    }
    Ok(Connection {
        reader: BufReader::new(stream),
        path: path.to_path_buf(),
    })
}

impl Connection {
    /// The next answer; `None` when the daemon has said all it will.
    pub fn next_response(&mut self) -> Result<Option<Response>, ClientError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|source| ClientError::Io {
            path: self.path.clone(),
            source,
        })?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::Protocol { detail: e.to_string() })
    }
}

/// One request, one answer.
pub fn call(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let mut conn = send(path, request, Some(Duration::from_secs(30)))?;
    conn.next_response()?.ok_or_else(|| ClientError::Protocol {
        detail: "the daemon closed without answering".into(),
    })
}
