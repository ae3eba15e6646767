//! A real TCP connection between a test's two namespaces, both ends held by the test,
//! carrying numbered messages either way: to show that a connection lives through
//! something (no message lost, late or out of turn, no segment retransmitted) or that
//! something cuts it at the next packet.

use std::{
    io::{self, Read as _, Write as _},
    mem::size_of,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// Which end of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Host,
    Peer,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Host => Side::Peer,
            Side::Peer => Side::Host,
        }
    }
}

/// How long a connection may take to open.
pub const OPEN_WAIT: Duration = Duration::from_secs(5);

pub struct Conversation {
    pub host: TcpStream,
    pub peer: TcpStream,
    next: u32,
}

impl Conversation {
    /// The host connects to `to`, where the peer listens (on an address of its own).
    pub fn host_opens(host: &Netns, peer: &Netns, to: SocketAddr) -> Conversation {
        let listener = listen(peer, to);
        let host_end = connect(host, to);
        let (peer_end, _) = accept(&listener, to);
        Conversation::of(host_end, peer_end)
    }

    /// The peer connects to `to`, where the host listens.
    pub fn peer_opens(host: &Netns, peer: &Netns, to: SocketAddr) -> Conversation {
        let listener = listen(host, to);
        let peer_end = connect(peer, to);
        let (host_end, _) = accept(&listener, to);
        Conversation::of(host_end, peer_end)
    }

    fn of(host: TcpStream, peer: TcpStream) -> Conversation {
        for s in [&host, &peer] {
            s.set_nodelay(true).expect("TCP_NODELAY");
        }
        Conversation { host, peer, next: 0 }
    }

    fn end(&self, side: Side) -> &TcpStream {
        match side {
            Side::Host => &self.host,
            Side::Peer => &self.peer,
        }
    }

    /// A number not yet said on this conversation.
    pub fn fresh(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    /// `from` sends message `n` (four bytes, one segment).
    pub fn say(&self, from: Side, n: u32) -> io::Result<()> {
        let mut s = self.end(from);
        s.write_all(&n.to_be_bytes())
    }

    /// The next message `at` receives within `within`; a timeout is an error of kind
    /// WouldBlock or TimedOut, a closed connection one of kind UnexpectedEof.
    pub fn hear(&self, at: Side, within: Duration) -> io::Result<u32> {
        let mut s = self.end(at);
        s.set_read_timeout(Some(within))?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(u32::from_be_bytes(buf))
    }

    /// Whether `at` receives exactly message `n` within `within`, as a sentence for a
    /// failure message otherwise.
    pub fn heard(&self, at: Side, n: u32, within: Duration) -> Result<(), String> {
        match self.hear(at, within) {
            Ok(m) if m == n => Ok(()),
            Ok(m) => Err(format!("the {at:?} side heard message {m} where {n} was due")),
            Err(e) => Err(format!(
                "the {at:?} side did not hear message {n} within {within:?}: {e}"
            )),
        }
    }

    /// One round: `first` says a fresh number, the other end hears it and says it back,
    /// `first` hears it back. How long the round took, or what went wrong.
    pub fn exchange(&mut self, first: Side, within: Duration) -> Result<Duration, String> {
        let n = self.fresh();
        let started = Instant::now();
        self.say(first, n)
            .map_err(|e| format!("the {first:?} side could not send message {n}: {e}"))?;
        self.heard(first.other(), n, within)?;
        self.say(first.other(), n)
            .map_err(|e| format!("the {:?} side could not answer message {n}: {e}", first.other()))?;
        self.heard(first, n, within)?;
        Ok(started.elapsed())
    }

    /// Segments each end has retransmitted so far (TCP_INFO's total_retrans): any
    /// packet of the conversation that was dropped shows here as one.
    pub fn retransmissions(&self) -> (u32, u32) {
        (total_retrans(&self.host), total_retrans(&self.peer))
    }

    /// Rounds every `every` until `stop` is set or a round fails: what a test runs on
    /// a thread of its own while it restarts, kills and toggles.
    pub fn chat_until(&mut self, first: Side, every: Duration, within: Duration, stop: &AtomicBool) -> Chat {
        let mut chat = Chat::default();
        while !stop.load(Ordering::Relaxed) {
            match self.exchange(first, within) {
                Ok(took) => {
                    chat.rounds += 1;
                    chat.slowest = chat.slowest.max(took);
                }
                Err(why) => {
                    chat.failure = Some(format!("round {}: {why}", chat.rounds + 1));
                    break;
                }
            }
            std::thread::sleep(every);
        }
        chat.retransmissions = self.retransmissions();
        chat
    }
}

/// What `chat_until` saw.
#[derive(Debug, Default)]
pub struct Chat {
    pub rounds: u32,
    pub slowest: Duration,
    /// The first round that failed (the chat stops there).
    pub failure: Option<String>,
    /// (host, peer) at the end.
    pub retransmissions: (u32, u32),
}

fn listen(ns: &Netns, at: SocketAddr) -> TcpListener {
    ns.enter(move || TcpListener::bind(at))
        .unwrap_or_else(|e| panic!("listen on {at} in {}: {e}", ns.name))
}

fn connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    ns.enter(move || TcpStream::connect_timeout(&to, OPEN_WAIT))
        .unwrap_or_else(|e| panic!("connect to {to} from {}: {e}", ns.name))
}

/// The connection is in the listener's queue once `connect` returned.
fn accept(listener: &TcpListener, at: SocketAddr) -> (TcpStream, SocketAddr) {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + OPEN_WAIT;
    loop {
        match listener.accept() {
            Ok((s, from)) => {
                s.set_nonblocking(false).unwrap();
                return (s, from);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept on {at}: {e}"),
        }
    }
}

fn total_retrans(s: &TcpStream) -> u32 {
    // SAFETY: tcp_info is plain data; zeroes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info is valid for `len` bytes; the kernel writes at most that.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info.tcpi_total_retrans
}
