//! Network namespaces and veth pairs made by a test and removed when it ends, pass or
//! fail. Traffic only flows between addresses assigned here, from the documentation
//! ranges.

#![allow(dead_code)]

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// Runs a command and panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted (with its interfaces) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        super::require_root();
        let name = super::unique(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it makes live here.
    pub fn spawn<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid namespace fd; this thread alone moves into it.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    pub fn enter<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn(f).join().expect("the thread in the namespace panicked")
    }

    /// A command run inside the namespace with `nsenter --net`, which (unlike
    /// `ip netns exec`) keeps /sys/fs/bpf visible.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display())).arg("--").arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Two namespaces joined by a veth pair: `host` (where the agent runs, on `host_if`)
/// and `peer`, which holds the addresses the host talks to.
pub struct Pair {
    pub host: Netns,
    pub peer: Netns,
    pub host_if: String,
    pub peer_if: String,
}

pub const HOST_V4: &str = "192.0.2.1";
pub const PEER_V4: &str = "192.0.2.2";
pub const HOST_V6: &str = "2001:db8:1::1";
pub const PEER_V6: &str = "2001:db8:1::2";

impl Pair {
    /// `peer_addrs` are extra addresses of the peer (a /32 or /128 each), routed from
    /// the host over the veth.
    pub fn new(peer_addrs: &[&str]) -> Pair {
        let host = Netns::new("agh");
        let peer = Netns::new("agp");
        let host_if = super::unique("agv");
        let peer_if = format!("{host_if}p");
        let pair = Pair {
            host,
            peer,
            host_if,
            peer_if,
        };
        pair.link(peer_addrs);
        pair
    }

    /// Makes the veth pair and its addresses and routes (again, after a test deleted
    /// it: the same names, a new interface index).
    pub fn link(&self, peer_addrs: &[&str]) {
        let Pair {
            host,
            peer,
            host_if,
            peer_if,
        } = self;
        run(
            "ip",
            &[
                "link", "add", host_if, "netns", &host.name, "type", "veth", "peer", "name", peer_if, "netns",
                &peer.name,
            ],
        );
        host.ip(&["link", "set", host_if, "up"]);
        peer.ip(&["link", "set", peer_if, "up"]);
        host.ip(&["addr", "add", &format!("{HOST_V4}/24"), "dev", host_if]);
        peer.ip(&["addr", "add", &format!("{PEER_V4}/24"), "dev", peer_if]);
        host.ip(&["addr", "add", &format!("{HOST_V6}/64"), "dev", host_if, "nodad"]);
        peer.ip(&["addr", "add", &format!("{PEER_V6}/64"), "dev", peer_if, "nodad"]);
        for a in peer_addrs {
            let v6 = a.contains(':');
            let prefix = if v6 { "128" } else { "32" };
            let mut args = vec!["addr", "add"];
            let cidr = format!("{a}/{prefix}");
            args.push(&cidr);
            args.extend_from_slice(&["dev", peer_if]);
            if v6 {
                args.push("nodad");
            }
            peer.ip(&args);
            host.ip(&["route", "add", &cidr, "dev", host_if]);
        }
    }
}

/// Servers in a namespace: a TCP listener that answers "ok" and a UDP echo per
/// address, until dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(ns: &Netns, tcp: &[SocketAddr], udp: &[SocketAddr]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &addr in tcp {
            let stop = stop.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            threads.push(ns.spawn(move || {
                let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                listener.set_nonblocking(true).unwrap();
                tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.write_all(b"ok");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
            rx.recv().expect("the TCP server started");
        }
        for &addr in udp {
            let stop = stop.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            threads.push(ns.spawn(move || {
                let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                tx.send(()).unwrap();
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            }));
            rx.recv().expect("the UDP server started");
        }
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// From inside `ns`: does a TCP connection to `addr` complete and answer within
/// `timeout`?
pub fn tcp_connects(ns: &Netns, addr: SocketAddr, timeout: Duration) -> bool {
    ns.enter(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok"
    })
}

/// From inside `ns`: does a UDP datagram to `addr` come back within `timeout`?
pub fn udp_echoes(ns: &Netns, addr: SocketAddr, timeout: Duration) -> bool {
    ns.enter(move || {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(timeout)).unwrap();
        if sock.send_to(b"ping", addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(sock.recv_from(&mut buf), Ok((4, from)) if from == addr)
    })
}

pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// From the calling thread, which must already be in the namespace (a thread of
/// `Netns::spawn`): does a TCP connection to `addr` complete and answer "ok" within
/// `timeout`? For probers that loop without a thread per probe.
pub fn tcp_connects_here(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).is_ok() && &buf == b"ok"
}

/// From inside `ns`: `GET path` over HTTP/1.1 from `addr`, the whole response (head
/// and body) as text, or the error.
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(request.as_bytes())?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
}
