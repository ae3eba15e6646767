//! Probes from the peer namespace: does an address reach the container's :22, once or
//! in a loop through an upgrade or a restart.

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::FromRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{HOST_V4, PEER_V4, UNLISTED_V4};
use crate::common::netns::{Netns, sa};

pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// A TCP connection from `src` (an address of the calling thread's namespace) to `dst`
/// that completes and answers "ok" within `timeout`. std cannot bind before connecting.
fn connects_from(src: Ipv4Addr, dst: SocketAddr, timeout: Duration) -> bool {
    let SocketAddr::V4(dst) = dst else {
        return false;
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on an fd owned here; the addresses outlive the calls.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return false;
        }
        let stream = TcpStream::from_raw_fd(fd);
        let from = sockaddr(src, 0);
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) != 0 {
            return false;
        }
        let to = sockaddr(*dst.ip(), dst.port());
        let rc = libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len);
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, timeout.as_millis() as i32) != 1 {
            return false;
        }
        if !matches!(stream.take_error(), Ok(None)) || stream.set_nonblocking(false).is_err() {
            return false;
        }
        let mut stream = stream;
        let _ = stream.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).is_ok() && &buf == b"ok"
    }
}

/// The peer's view: does `src` reach the container's :22?
pub fn probe(peer: &Netns, src: &str) -> bool {
    let src: Ipv4Addr = src.parse().expect("an IPv4 address");
    peer.enter(move || connects_from(src, sa(HOST_V4, 22), PROBE_TIMEOUT))
}

/// Probes from the peer in a loop until dropped, one thread per source address (a
/// refused probe waits out its timeout): (tries, connected) per source.
pub struct Prober {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 4]>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Prober {
    pub fn start(peer: &Netns) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        let threads = [PEER_V4, UNLISTED_V4]
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let (stop, counts) = (stop.clone(), counts.clone());
                let src: Ipv4Addr = src.parse().expect("an IPv4 address");
                peer.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let ok = connects_from(src, sa(HOST_V4, 22), Duration::from_millis(200));
                        counts[i * 2].fetch_add(1, Ordering::Relaxed);
                        counts[i * 2 + 1].fetch_add(ok as u64, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Prober { stop, counts, threads }
    }

    /// ((tries, connected) from the management address, (tries, connected) from the
    /// unlisted one).
    pub fn finish(mut self) -> ((u64, u64), (u64, u64)) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        ((c(0), c(1)), (c(2), c(3)))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
