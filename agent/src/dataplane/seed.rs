//! The connections the kernel already has, asked of it through sock_diag (inet_diag),
//! so that the daemon can seed its connection table before it enforces: a flow that
//! began before the daemon (the SSH session that started it) must not look new to it.
//!
//! One NETLINK_SOCK_DIAG socket dumps TCP and UDP of IPv4 and IPv6 in turn (the kernel
//! dumps one family and one protocol per request). The socket, and so the dump, belongs
//! to the calling thread's network namespace.

use std::{io, net::SocketAddr, time::Duration};

use netlink_packet_core::{
    DecodeError, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SockDiagMessage, TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED,
    TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_SYN_RECV, TCP_SYN_SENT,
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};

/// One connection the kernel has, from this host's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelFlow {
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: KernelFlowState,
}

/// Where a connection is in its life, per its socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelFlowState {
    SynSent,
    SynRecv,
    Established,
    /// FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING: one side has said goodbye,
    /// packets still flow.
    Closing,
    /// A connected UDP socket.
    Udp,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot open a sock_diag netlink socket (the kernel needs inet_diag): {source}")]
    Open {
        #[source]
        source: io::Error,
    },
    #[error("cannot ask the kernel for its {what} sockets: {source}")]
    Send {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the kernel's list of {what} sockets: {source}")]
    Receive {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "the kernel refused to list its {what} sockets (without the inet_diag, tcp_diag and udp_diag modules it cannot): {source}"
    )]
    Refused {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the kernel's list of {what} sockets came in a message of {len} bytes, more than the {max} read")]
    Truncated { what: &'static str, len: usize, max: usize },
    #[error("the kernel's list of {what} sockets is malformed: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("the kernel's list of {what} sockets has a reply to request {got}, not to request {want}")]
    Sequence { what: &'static str, got: u32, want: u32 },
    #[error("the kernel's list of {what} sockets has a message that is not a socket ({kind})")]
    Unexpected { what: &'static str, kind: &'static str },
    #[error("the kernel has more than {max} sockets: too many to seed the connection table from")]
    TooMany { max: usize },
}

/// The most sockets read, over all four lists: past it the kernel's answer is not one
/// to hold in memory and seed a table from.
const MAX_SOCKETS: usize = 1_000_000;

/// The largest datagram read. The kernel fills a dump's datagrams up to 32 KiB at most
/// (`netlink_dump` caps its buffer there); a larger one is reported, not cut.
const RECV_BUF: usize = 64 * 1024;

/// The kernel answers a dump at once; a silent one must not hold up the daemon's start.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// The state of a request socket (a half-open passive connection) in the kernel. The
/// kernel reports it as TCP_SYN_RECV; it is named here in case it does not.
const TCP_NEW_SYN_RECV: u8 = 12;

/// One dump: the kernel lists one address family and one protocol per request.
struct Dump {
    family: u8,
    protocol: u8,
    /// The states asked for (a bit per state): TCP without LISTEN, TIME_WAIT and CLOSE;
    /// for UDP a connected socket is "established", an unconnected one "close".
    states: StateFlags,
    what: &'static str,
}

fn tcp_states() -> StateFlags {
    StateFlags::SYN_SENT
        | StateFlags::SYN_RECV
        | StateFlags::ESTABLISHED
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

fn dumps() -> [Dump; 4] {
    let dump = |family, protocol, states, what| Dump {
        family,
        protocol,
        states,
        what,
    };
    [
        dump(AF_INET, IPPROTO_TCP, tcp_states(), "IPv4 TCP"),
        // AF_INET6 lists the IPv6 sockets only, dual-stack ones included: no socket
        // comes twice.
        dump(AF_INET6, IPPROTO_TCP, tcp_states(), "IPv6 TCP"),
        dump(AF_INET, IPPROTO_UDP, StateFlags::ESTABLISHED, "IPv4 UDP"),
        dump(AF_INET6, IPPROTO_UDP, StateFlags::ESTABLISHED, "IPv6 UDP"),
    ]
}

/// Every TCP connection (not LISTEN, not TIME_WAIT/CLOSE) and every connected UDP socket
/// (remote address not unspecified / port not 0) of the current network namespace, both
/// families. IPv4-mapped addresses (::ffff:a.b.c.d) of AF_INET6 sockets come back as IPv4.
pub fn kernel_flows() -> Result<Vec<KernelFlow>, SeedError> {
    let socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|source| SeedError::Open { source })?;
    // Talk to the kernel (port 0) only; connecting also binds us a port.
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(|source| SeedError::Open { source })?;
    rustix::net::sockopt::set_socket_timeout(&socket, rustix::net::sockopt::Timeout::Recv, Some(RECV_TIMEOUT))
        .map_err(|e| SeedError::Open { source: e.into() })?;

    let mut collected = Collected::new(MAX_SOCKETS);
    let mut datagram = Vec::with_capacity(RECV_BUF);
    for (dump, sequence) in dumps().iter().zip(1..) {
        send_request(&socket, dump, sequence)?;
        loop {
            datagram.clear();
            let len = match socket.recv(&mut datagram, libc::MSG_TRUNC) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(SeedError::Receive {
                        what: dump.what,
                        source,
                    });
                }
            };
            // With MSG_TRUNC the kernel tells the datagram's whole length.
            if len > datagram.len() {
                return Err(SeedError::Truncated {
                    what: dump.what,
                    len,
                    max: datagram.len(),
                });
            }
            if collected.take_datagram(&datagram, dump, sequence)? == Progress::Done {
                break;
            }
        }
    }
    Ok(collected.flows)
}

fn send_request(socket: &Socket, dump: &Dump, sequence: u32) -> Result<(), SeedError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = sequence;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: dump.family,
            protocol: dump.protocol,
            extensions: ExtensionFlags::empty(),
            states: dump.states.clone(),
            socket_id: if dump.family == AF_INET6 {
                SocketId::new_v6()
            } else {
                SocketId::new_v4()
            },
        })
        .into(),
    );
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0).map_err(|source| SeedError::Send {
        what: dump.what,
        source,
    })?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

/// The flows of the dumps read so far, and how many sockets they listed.
struct Collected {
    flows: Vec<KernelFlow>,
    sockets: usize,
    max_sockets: usize,
}

impl Collected {
    fn new(max_sockets: usize) -> Self {
        Collected {
            flows: Vec::new(),
            sockets: 0,
            max_sockets,
        }
    }

    /// Takes the messages of one datagram of `dump`'s reply to request `sequence`: done
    /// at NLMSG_DONE, or after a message that is not part of a multi-part reply.
    fn take_datagram(&mut self, datagram: &[u8], dump: &Dump, sequence: u32) -> Result<Progress, SeedError> {
        let what = dump.what;
        let mut rest = datagram;
        while !rest.is_empty() {
            // Checks that the header's length fits in `rest` and covers the header.
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
                .map_err(|source| SeedError::Malformed { what, source })?;
            let header = message.header;
            if header.sequence_number != sequence {
                return Err(SeedError::Sequence {
                    what,
                    got: header.sequence_number,
                    want: sequence,
                });
            }
            match message.payload {
                NetlinkPayload::Done(done) if done.code < 0 => {
                    return Err(SeedError::Refused {
                        what,
                        source: io::Error::from_raw_os_error(done.code.saturating_neg()),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(Progress::Done),
                NetlinkPayload::Error(error) if error.code.is_some() => {
                    return Err(SeedError::Refused {
                        what,
                        source: error.to_io(),
                    });
                }
                // An acknowledgement (error code 0) or filler: nothing to take, and no
                // end of the reply.
                NetlinkPayload::Error(_) | NetlinkPayload::Noop => {
                    rest = after(rest, &header);
                    continue;
                }
                NetlinkPayload::Overrun(_) => return Err(SeedError::Unexpected { what, kind: "overrun" }),
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    self.sockets += 1;
                    if self.sockets > self.max_sockets {
                        return Err(SeedError::TooMany { max: self.max_sockets });
                    }
                    self.flows.extend(flow(dump.protocol, &response.header));
                }
                NetlinkPayload::InnerMessage(_) => {
                    return Err(SeedError::Unexpected {
                        what,
                        kind: "a request or a unix socket",
                    });
                }
                _ => return Err(SeedError::Unexpected { what, kind: "unknown" }),
            }
            // A socket outside a multi-part reply is the whole reply.
            if header.flags & NLM_F_MULTIPART == 0 {
                return Ok(Progress::Done);
            }
            rest = after(rest, &header);
        }
        Ok(Progress::More)
    }
}

/// What follows the message of `header` at the start of `messages` (whose length the
/// parser checked): messages start at 4-byte boundaries (NLMSG_ALIGN), and the last
/// one of a datagram may lack its padding.
fn after<'a>(messages: &'a [u8], header: &NetlinkHeader) -> &'a [u8] {
    let len = (header.length as usize).next_multiple_of(4);
    messages.get(len..).unwrap_or_default()
}

/// The flow of one socket the kernel listed in a dump of `protocol`, or `None` for a
/// socket that is no flow: a state not asked for, or no remote end.
fn flow(protocol: u8, socket: &InetResponseHeader) -> Option<KernelFlow> {
    let state = match (protocol, socket.state) {
        // A UDP socket is "established" once connected.
        (IPPROTO_UDP, TCP_ESTABLISHED) => KernelFlowState::Udp,
        (IPPROTO_UDP, _) => return None,
        (_, TCP_SYN_SENT) => KernelFlowState::SynSent,
        (_, TCP_SYN_RECV | TCP_NEW_SYN_RECV) => KernelFlowState::SynRecv,
        (_, TCP_ESTABLISHED) => KernelFlowState::Established,
        (_, TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING) => KernelFlowState::Closing,
        _ => return None,
    };
    let id = &socket.socket_id;
    // A dual-stack socket's IPv4 peers are IPv4-mapped (::ffff:a.b.c.d); its packets
    // carry the IPv4 address.
    let local = SocketAddr::new(id.source_address.to_canonical(), id.source_port);
    let remote = SocketAddr::new(id.destination_address.to_canonical(), id.destination_port);
    if remote.ip().is_unspecified() || remote.port() == 0 {
        return None;
    }
    Some(KernelFlow {
        proto: protocol,
        local,
        remote,
        state,
    })
}

