//! Giving a held DNS answer back to the stack (docs/dns-names.md), by a path proved to
//! work on this kernel before anything is held.
//!
//! - **live frames**: BPF_PROG_TEST_RUN of a do-nothing XDP program with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES`: the frame enters the stack at the interface it came
//!   in on, as if just received. Hardened kernels and sandboxes refuse that run (EPERM,
//!   even to root) while they load the program.
//! - **loopback**: a raw IP socket (`IPPROTO_RAW`, CAP_NET_RAW) sends the answer's IP
//!   packet, unchanged, to this host's own address. The kernel routes a packet for a
//!   local address through the loopback device and delivers it with the route it chose
//!   on the way out, so the resolver's source address is no martian and rp_filter does
//!   not apply; the socket that asked receives it like any answer (tests/dns.rs). It
//!   arrives on `lo`, not on the interface: a socket bound to the interface with
//!   SO_BINDTODEVICE would not see it (`give_back = "none"` avoids that). A destination
//!   that is not an address of this host is never sent (it would leave the host with the
//!   resolver's address), nor is anything sent but the held packet itself.
//! - **none**: nothing is held; answers pass at once and the learner reads a copy, so
//!   an application's first connection to a just-learned address may race the learner
//!   and wait for one retransmit.
//!
//! `auto` proves live frames, then loopback, and takes the first that works. A path
//! that fails at run time hands the answer to the next one (auto) or to none: holding
//! stops in the data plane at once, so the resolver's retry passes, and the log says so
//! once. The next reload or restart proves the paths again.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use tracing::{debug, error, info, warn};

use super::frame::{FrameError, ip_packet};
use crate::{
    dataplane::{Dataplane, DataplaneError, errno_name, kernel::if_index},
    policy::config::{GiveBack as Choice, GiveBackPath},
};

/// How long the loopback probe waits for its own datagram.
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// The probe's source when no IPv4 resolver is configured (TEST-NET-1): the datagram
/// never leaves the host either way.
const PROBE_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

#[derive(Debug, thiserror::Error)]
pub enum GiveBackError {
    #[error(transparent)]
    LiveFrames(DataplaneError),
    #[error("the kernel has no loopback interface here")]
    NoLoopback,
    #[error("cannot open a raw ipv{family} socket ({}; it needs CAP_NET_RAW): {source}", errno_name(source.raw_os_error()))]
    RawSocket {
        family: u8,
        #[source]
        source: io::Error,
    },
    #[error("the kernel refused to send the answer through loopback ({}): {source}", errno_name(source.raw_os_error()))]
    Send {
        #[source]
        source: io::Error,
    },
    #[error("{destination} is not an address of this host: the answer would leave it with the resolver's address")]
    NotLocal { destination: IpAddr },
    #[error("cannot open the probe's socket: {source}")]
    ProbeSocket {
        #[source]
        source: io::Error,
    },
    #[error("the probe datagram sent through loopback did not arrive within {} ms", PROBE_WAIT.as_millis())]
    ProbeLost,
    #[error("the held frame carries no ip packet: {source}")]
    Frame {
        #[source]
        source: FrameError,
    },
    #[error("no give-back path is in force")]
    NoPath,
}

impl GiveBackError {
    /// The frame, not the path, is at fault: another path would fail on it too.
    fn is_the_frames(&self) -> bool {
        matches!(self, GiveBackError::Frame { .. } | GiveBackError::NotLocal { .. })
    }
}

/// The raw IP sockets of the loopback path (IPv6 only where the host has IPv6).
struct Loopback {
    v4: OwnedFd,
    v6: Option<OwnedFd>,
}

impl Loopback {
    fn open() -> Result<Loopback, GiveBackError> {
        use rustix::net::{AddressFamily, SocketType, ipproto, socket};
        let v4 =
            socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::RAW)).map_err(|e| GiveBackError::RawSocket {
                family: 4,
                source: e.into(),
            })?;
        // IPPROTO_RAW over IPv6 implies IPV6_HDRINCL (Linux 4.5+): the packet goes as given.
        let v6 = socket(AddressFamily::INET6, SocketType::RAW, Some(ipproto::RAW)).ok();
        Ok(Loopback { v4, v6 })
    }

    /// Sends `packet` (a whole IP packet, headers included) to `destination`, which the
    /// caller checked is this host's (`scope`: the interface of a link-local one).
    fn send(&self, packet: &[u8], destination: IpAddr, scope: u32) -> Result<(), GiveBackError> {
        use rustix::net::{SendFlags, sendto};
        let sent = match destination {
            IpAddr::V4(a) => sendto(&self.v4, packet, SendFlags::empty(), &SocketAddrV4::new(a, 0)),
            IpAddr::V6(a) => {
                let Some(v6) = &self.v6 else {
                    return Err(GiveBackError::RawSocket {
                        family: 6,
                        source: io::Error::from_raw_os_error(libc::EAFNOSUPPORT),
                    });
                };
                sendto(v6, packet, SendFlags::empty(), &SocketAddrV6::new(a, 0, 0, scope))
            }
        };
        sent.map(|_| ()).map_err(|e| GiveBackError::Send { source: e.into() })
    }
}

/// Whether `addr` is an address of this host (in this network namespace), as the
/// kernel's own routing says: a socket connected to a local address gets that very
/// address as its source, any other destination one of the host's own.
fn is_local(addr: IpAddr, scope: u32) -> bool {
    let (bind, to): (SocketAddr, SocketAddr) = match addr {
        IpAddr::V4(a) => ((Ipv4Addr::UNSPECIFIED, 0).into(), SocketAddrV4::new(a, 9).into()),
        IpAddr::V6(a) => (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            SocketAddrV6::new(a, 9, 0, scope).into(),
        ),
    };
    UdpSocket::bind(bind)
        .and_then(|s| s.connect(to).and_then(|()| s.local_addr()))
        .is_ok_and(|local| local.ip() == addr)
}

/// The interface scope a destination needs: its interface for a link-local IPv6
/// address, none otherwise.
fn scope_of(destination: IpAddr, ifindex: u32) -> u32 {
    match destination {
        IpAddr::V6(a) if a.is_unicast_link_local() => ifindex,
        _ => 0,
    }
}

/// Sends a datagram from `source`:53 to a socket of ours on the loopback address of
/// its family, through `loopback`, and waits for it: the path works end to end (raw
/// socket allowed, the foreign source accepted, delivered to a socket).
fn probe_loopback(loopback: &Loopback, source: IpAddr) -> Result<(), GiveBackError> {
    let local: IpAddr = if source.is_ipv4() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        Ipv6Addr::LOCALHOST.into()
    };
    let socket = UdpSocket::bind((local, 0)).map_err(|source| GiveBackError::ProbeSocket { source })?;
    let port = socket
        .local_addr()
        .map_err(|source| GiveBackError::ProbeSocket { source })?
        .port();
    let nonce = crate::dataplane::monotonic_ns().to_be_bytes();
    let mut packet = Vec::new();
    let builder = match (source, local) {
        (IpAddr::V4(s), IpAddr::V4(d)) => etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("one family"),
    };
    builder
        .udp(53, port)
        .write(&mut packet, &nonce)
        .map_err(|e| GiveBackError::ProbeSocket {
            source: io::Error::other(e),
        })?;
    loopback.send(&packet, local, 0)?;
    let deadline = Instant::now() + PROBE_WAIT;
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(GiveBackError::ProbeLost);
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|source| GiveBackError::ProbeSocket { source })?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if buf[..n] == nonce && from == SocketAddr::new(source, 53) => return Ok(()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(GiveBackError::ProbeLost);
            }
            Err(source) => return Err(GiveBackError::ProbeSocket { source }),
        }
    }
}

/// The learner's way of giving held answers back, and what it did so far.
pub struct GiveBack {
    choice: Choice,
    path: GiveBackPath,
    /// Why the path in force is not the first choice, or what ended holding.
    reason: Option<String>,
    loopback: Option<Loopback>,
    /// The resolvers, for the loopback probe's source addresses.
    servers: Vec<IpAddr>,
    /// Held answers given back and lost, from the data plane's count of earlier daemons.
    pub given_back: u64,
    pub failed: u64,
}

impl GiveBack {
    /// Proves the paths `choice` allows, in order, and takes the first that works.
    /// `counts` (given back, failed) carry on from what the data plane holds.
    pub fn choose(choice: Choice, servers: &[IpAddr], counts: (u64, u64), dataplane: &mut Dataplane) -> GiveBack {
        let mut give_back = GiveBack {
            choice,
            path: GiveBackPath::None,
            reason: None,
            loopback: None,
            servers: servers.to_vec(),
            given_back: counts.0,
            failed: counts.1,
        };
        let candidates: &[GiveBackPath] = match choice {
            Choice::Auto => &[GiveBackPath::LiveFrames, GiveBackPath::Loopback],
            Choice::LiveFrames => &[GiveBackPath::LiveFrames],
            Choice::Loopback => &[GiveBackPath::Loopback],
            Choice::None => &[],
        };
        let mut refused = Vec::new();
        for &path in candidates {
            match give_back.prove(path, dataplane) {
                Ok(()) => {
                    give_back.path = path;
                    break;
                }
                Err(e) => refused.push(format!("{path}: {e}")),
            }
        }
        give_back.reason = match (choice, give_back.path) {
            (Choice::None, _) => Some("dns.give_back = \"none\"".to_string()),
            (_, GiveBackPath::None) => Some(format!("no give-back path works here ({})", refused.join("; "))),
            _ if refused.is_empty() => None,
            _ => Some(refused.join("; ")),
        };
        match (&give_back.reason, give_back.path) {
            (None, path) => info!(%path, "DNS answers are held and given back through {path}"),
            (Some(why), GiveBackPath::None) if choice != Choice::None => {
                warn!("DNS answers are not held: they pass at once and are learned from a copy: {why}")
            }
            (Some(why), GiveBackPath::None) => info!("DNS answers are not held ({why})"),
            (Some(why), path) => info!(%path, "DNS answers are held and given back through {path} ({why})"),
        }
        give_back
    }

    pub fn path(&self) -> GiveBackPath {
        self.path
    }

    pub fn choice(&self) -> Choice {
        self.choice
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Shows that `path` delivers on this kernel, with a frame the stack discards
    /// (live frames) or a datagram to a socket of our own (loopback).
    fn prove(&mut self, path: GiveBackPath, dataplane: &mut Dataplane) -> Result<(), GiveBackError> {
        match path {
            GiveBackPath::LiveFrames => {
                let lo = if_index("lo").ok_or(GiveBackError::NoLoopback)?;
                dataplane
                    .give_back_live_frame(&crate::dataplane::LIVE_FRAME_PROBE, lo)
                    .map_err(GiveBackError::LiveFrames)
            }
            GiveBackPath::Loopback => {
                let loopback = Loopback::open()?;
                let v4 = self.servers.iter().find(|s| s.is_ipv4()).copied();
                let v6 = self.servers.iter().find(|s| s.is_ipv6()).copied();
                // IPv4 always (the probe of a host with no resolver configured yet);
                // IPv6 when answers can come over it.
                probe_loopback(&loopback, v4.unwrap_or(PROBE_SOURCE_V4.into()))?;
                if let Some(v6) = v6 {
                    probe_loopback(&loopback, v6)?;
                }
                self.loopback = Some(loopback);
                Ok(())
            }
            GiveBackPath::None => Err(GiveBackError::NoPath),
        }
    }

    /// Sends one held frame back by `path`.
    fn send(
        &self,
        path: GiveBackPath,
        frame: &[u8],
        ifindex: u32,
        dataplane: &mut Dataplane,
    ) -> Result<(), GiveBackError> {
        match path {
            GiveBackPath::LiveFrames => dataplane
                .give_back_live_frame(frame, ifindex)
                .map_err(GiveBackError::LiveFrames),
            GiveBackPath::Loopback => {
                let ip = ip_packet(frame).map_err(|source| GiveBackError::Frame { source })?;
                let scope = scope_of(ip.destination, ifindex);
                if !is_local(ip.destination, scope) {
                    return Err(GiveBackError::NotLocal {
                        destination: ip.destination,
                    });
                }
                self.loopback
                    .as_ref()
                    .ok_or(GiveBackError::NoPath)?
                    .send(ip.packet, ip.destination, scope)
            }
            GiveBackPath::None => Err(GiveBackError::NoPath),
        }
    }

    /// Gives a held frame (from its Ethernet header, as it came in on `ifindex`) back.
    /// When the path in force fails, auto moves on to loopback, and otherwise holding
    /// ends (the caller tells the data plane, `path()` says so): the answer this
    /// failed on is the only one lost.
    pub fn deliver(&mut self, frame: &[u8], ifindex: u32, dataplane: &mut Dataplane) -> Result<(), GiveBackError> {
        let failed_path = self.path;
        let error = match self.send(failed_path, frame, ifindex, dataplane) {
            Ok(()) => {
                self.given_back += 1;
                return Ok(());
            }
            Err(e) => e,
        };
        if failed_path == GiveBackPath::None || error.is_the_frames() {
            // Held before holding ended, or a frame no path could send.
            self.failed += 1;
            debug!("a held DNS answer is lost: {error}");
            return Err(error);
        }
        warn!("cannot give a held DNS answer back through {failed_path}: {error}");
        if self.choice == Choice::Auto && failed_path == GiveBackPath::LiveFrames {
            let next = GiveBackPath::Loopback;
            let moved = self
                .prove(next, dataplane)
                .and_then(|()| self.send(next, frame, ifindex, dataplane));
            match moved {
                Ok(()) => {
                    self.path = next;
                    self.reason = Some(format!("{failed_path} failed at run time: {error}"));
                    self.given_back += 1;
                    warn!("held DNS answers go back through {next} from now on");
                    return Ok(());
                }
                Err(e) => debug!("{next} does not work either: {e}"),
            }
        }
        self.path = GiveBackPath::None;
        self.reason = Some(format!("{failed_path} failed at run time: {error}"));
        self.failed += 1;
        error!(
            "DNS answers are no longer held (until the next reload or restart): they pass at once and are learned from a copy; the answer that failed is lost, its resolver's retry passes"
        );
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_destinations_keep_their_interface() {
        assert_eq!(scope_of("fe80::1".parse().unwrap(), 7), 7);
        assert_eq!(scope_of("2001:db8::1".parse().unwrap(), 7), 0);
        assert_eq!(scope_of("192.0.2.1".parse().unwrap(), 7), 0);
    }

    #[test]
    fn loopback_is_local_and_a_documentation_address_is_not() {
        assert!(is_local(Ipv4Addr::LOCALHOST.into(), 0));
        assert!(
            !is_local("203.0.113.77".parse().unwrap(), 0),
            "no host of the tests has it"
        );
    }
}
