//! The daemon's side of the socket: who may connect, reading one bounded request,
//! handing it to the daemon's loop, writing the answers back.
//!
//! No client can stall or crash the daemon: every connection is its own task with
//! read and write deadlines, requests are size-capped, and everything a client sends
//! is parsed into a typed request or refused with a one-line error.

use std::{
    ffi::CString,
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::mpsc,
    time::timeout,
};
use tracing::{debug, warn};

use super::protocol::{MAX_REQUEST_BYTES, Request, Response, parse_request};

/// How long a client may take to send its request, and to take each answer.
const IO_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another allowgate daemon answers on {path}: stop it first")]
    InUse { path: PathBuf },
    #[error("cannot set up the control socket {path}: {source}")]
    Setup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("socket_group `{group}` does not exist")]
    NoGroup { group: String },
}

/// Who may use the socket besides root: the daemon's own user, and the members of the
/// configured group.
#[derive(Clone, Debug)]
pub struct Access {
    pub group: Option<(String, u32)>,
}

/// The credentials the kernel vouches for, as they were when the peer connected
/// (SO_PEERCRED, SO_PEERGROUPS).
#[derive(Clone, Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Access {
    pub fn new(group: Option<&str>) -> Result<Access, ServerError> {
        let group = match group {
            None => None,
            Some(name) => Some((
                name.to_string(),
                group_id(name).ok_or_else(|| ServerError::NoGroup { group: name.into() })?,
            )),
        };
        Ok(Access { group })
    }

    pub fn allows(&self, peer: &Peer) -> bool {
        if peer.uid == 0 || peer.uid == rustix::process::geteuid().as_raw() {
            return true;
        }
        let Some((_, gid)) = &self.group else { return false };
        peer.gid == *gid || peer.groups.contains(gid)
    }

    fn refusal(&self) -> String {
        match &self.group {
            Some((name, _)) => {
                format!("permission denied: only root and members of group `{name}` may use allowgate's socket")
            }
            None => "permission denied: only root may use allowgate's socket".to_string(),
        }
    }
}

fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getgrnam_r writes only into `grp`
    // and `buf`, whose length it is told.
    let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// The peer's supplementary groups, which the kernel recorded when it connected
/// (SO_PEERGROUPS, Linux 4.13). Not read from /proc/PID/status: the unit hides other
/// users' processes from the daemon (ProtectProc=invisible), and by the time it looked
/// the PID could be another process's. A failure gives no groups: fewer rights, never more.
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd as _;
    let mut groups = vec![0u32; 32];
    loop {
        let mut len = std::mem::size_of_val(groups.as_slice()) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `groups`, which holds that
        // many, and says in `len` how many it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let wanted = len as usize / std::mem::size_of::<u32>();
        if rc == 0 {
            groups.truncate(wanted);
            return groups;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && wanted > groups.len() {
            groups.resize(wanted, 0);
            continue;
        }
        debug!("control socket: cannot read the peer's groups: {e}");
        return Vec::new();
    }
}

/// Binds the control socket at `path`: mode 0600, or 0660 owned by the group. A stale
/// socket file (no daemon answers) is replaced; a live one is not.
pub fn bind(path: &Path, access: &Access) -> Result<UnixListener, ServerError> {
    let setup = |source| ServerError::Setup {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(setup)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(setup)?;
    }
    // Bind under a umask that leaves no window in which others could connect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener.map_err(setup)?;
    if let Some((_, gid)) = &access.group {
        chown(path, None, Some(*gid)).map_err(setup)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(setup)?;
    }
    Ok(listener)
}

/// A request from a connection, and where its answers go.
pub struct Incoming {
    pub request: Request,
    pub peer: Peer,
    pub reply: mpsc::Sender<Response>,
}

/// Accepts connections until the daemon drops `commands`' receiver.
pub async fn serve(listener: UnixListener, access: Access, commands: mpsc::Sender<Incoming>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if commands.is_closed() {
            return;
        }
        let (access, commands) = (access.clone(), commands.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &access, commands).await {
                debug!("control socket: connection ended: {e}");
            }
        });
    }
}

async fn write_line(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    match timeout(IO_DEADLINE, stream.write_all(&line)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client does not read",
        )),
    }
}

async fn connection(mut stream: UnixStream, access: &Access, commands: mpsc::Sender<Incoming>) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        groups: peer_groups(&stream),
    };

    // One line, at most MAX_REQUEST_BYTES, within the deadline. Read even from a
    // client about to be refused: closing on unread data would reset the connection
    // and lose the refusal.
    let mut line = Vec::new();
    let read = {
        let mut reader = BufReader::new((&mut stream).take(MAX_REQUEST_BYTES as u64 + 1));
        timeout(IO_DEADLINE, reader.read_until(b'\n', &mut line)).await
    };
    let request = match read {
        Err(_) => Err("timed out waiting for the request".to_string()),
        Ok(Err(e)) => Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => Err(format!("request larger than {MAX_REQUEST_BYTES} bytes")),
        Ok(Ok(_)) => parse_request(&line),
    };
    if !access.allows(&peer) {
        warn!(uid = peer.uid, pid = ?peer.pid, "control socket: refused an unprivileged client");
        return write_line(&mut stream, &Response::error(access.refusal())).await;
    }
    let request = match request {
        Ok(r) => r,
        Err(message) => return write_line(&mut stream, &Response::error(message)).await,
    };

    let (reply, mut answers) = mpsc::channel(64);
    if commands.send(Incoming { request, peer, reply }).await.is_err() {
        return write_line(&mut stream, &Response::error("the daemon is shutting down")).await;
    }
    while let Some(answer) = answers.recv().await {
        write_line(&mut stream, &answer).await?;
    }
    stream.shutdown().await
}
