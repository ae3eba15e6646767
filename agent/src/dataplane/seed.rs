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

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket},
    };

    use super::*;

    const LOOPBACKS: [&str; 2] = ["127.0.0.1:0", "[::1]:0"];

    fn flows() -> Vec<KernelFlow> {
        kernel_flows().expect("kernel_flows() fails on this host")
    }

    fn tcp(local: SocketAddr, remote: SocketAddr, state: KernelFlowState) -> KernelFlow {
        KernelFlow {
            proto: 6,
            local,
            remote,
            state,
        }
    }

    /// The flows whose local end is `addr`.
    fn at(flows: &[KernelFlow], addr: SocketAddr) -> Vec<KernelFlow> {
        flows.iter().filter(|f| f.local == addr).copied().collect()
    }

    /// A connected TCP pair on `bind`: (listener, client, accepted).
    fn tcp_pair(bind: &str) -> (TcpListener, TcpStream, TcpStream) {
        let listener = TcpListener::bind(bind).expect("bind a loopback listener");
        let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect to the listener");
        let (accepted, _) = listener.accept().expect("accept the connection");
        (listener, client, accepted)
    }

    #[test]
    fn tcp_connections_come_back_established_from_both_ends() {
        for bind in LOOPBACKS {
            let (_listener, client, accepted) = tcp_pair(bind);
            let (client_addr, server_addr) = (client.local_addr().unwrap(), accepted.local_addr().unwrap());
            let flows = flows();
            assert_eq!(
                at(&flows, client_addr),
                [tcp(client_addr, server_addr, KernelFlowState::Established)],
                "the client end on {bind}"
            );
            assert_eq!(
                at(&flows, server_addr),
                [tcp(server_addr, client_addr, KernelFlowState::Established)],
                "the server end on {bind} (and not its listener)"
            );
        }
    }

    #[test]
    fn a_listener_is_no_flow() {
        for bind in LOOPBACKS {
            let listener = TcpListener::bind(bind).expect("bind a loopback listener");
            let addr = listener.local_addr().unwrap();
            assert_eq!(at(&flows(), addr), [], "listener on {addr}");
        }
    }

    #[test]
    fn half_closed_connections_come_back_closing() {
        for bind in LOOPBACKS {
            let (_listener, client, mut accepted) = tcp_pair(bind);
            client.shutdown(Shutdown::Write).expect("send the client's FIN");
            // The server has read the FIN (CLOSE_WAIT); the client waits in FIN_WAIT1/2.
            assert_eq!(accepted.read(&mut [0; 1]).expect("read the FIN"), 0);
            let (client_addr, server_addr) = (client.local_addr().unwrap(), accepted.local_addr().unwrap());
            let flows = flows();
            assert_eq!(
                at(&flows, client_addr),
                [tcp(client_addr, server_addr, KernelFlowState::Closing)]
            );
            assert_eq!(
                at(&flows, server_addr),
                [tcp(server_addr, client_addr, KernelFlowState::Closing)]
            );
        }
    }

    #[test]
    fn closed_connections_are_no_flows() {
        for bind in LOOPBACKS {
            let (_listener, mut client, mut accepted) = tcp_pair(bind);
            let client_addr = client.local_addr().unwrap();
            // The client closes first, so its socket stays in TIME_WAIT, which is no flow.
            client.shutdown(Shutdown::Write).expect("send the client's FIN");
            assert_eq!(accepted.read(&mut [0; 1]).expect("read the FIN"), 0);
            accepted.write_all(b"x").expect("answer");
            drop(accepted);
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).expect("read to the server's FIN");
            drop(client);
            assert_eq!(at(&flows(), client_addr), [], "the client end on {bind} in TIME_WAIT");
        }
    }

    #[test]
    fn ipv4_peers_of_a_dual_stack_socket_come_back_as_ipv4() {
        let listener = TcpListener::bind("[::]:0").expect("bind a dual-stack listener");
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .expect("connect over IPv4 to the [::] listener (is net.ipv6.bindv6only set?)");
        let (accepted, _) = listener.accept().expect("accept the connection");
        // The precondition: the server end is an IPv6 socket with IPv4-mapped addresses.
        let mapped = accepted.local_addr().unwrap();
        assert_eq!(mapped.ip(), IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()));

        let (client_addr, server_addr) = (
            client.local_addr().unwrap(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        );
        let flows = flows();
        assert_eq!(
            at(&flows, server_addr),
            [tcp(server_addr, client_addr, KernelFlowState::Established)],
            "the IPv6 server end, as IPv4"
        );
        assert_eq!(at(&flows, mapped), [], "no IPv4-mapped address comes back");
    }

    #[test]
    fn connected_udp_sockets_are_flows_unconnected_ones_are_not() {
        for bind in LOOPBACKS {
            let unconnected = UdpSocket::bind(bind).expect("bind a UDP socket");
            let connected = UdpSocket::bind(bind).expect("bind a UDP socket");
            connected
                .connect(unconnected.local_addr().unwrap())
                .expect("connect the UDP socket");
            let (local, remote) = (connected.local_addr().unwrap(), connected.peer_addr().unwrap());
            let flows = flows();
            assert_eq!(
                at(&flows, local),
                [KernelFlow {
                    proto: 17,
                    local,
                    remote,
                    state: KernelFlowState::Udp,
                }],
                "the connected UDP socket on {bind}"
            );
            assert_eq!(at(&flows, remote), [], "the unconnected UDP socket on {bind}");
        }
    }

    // Replies made by hand, as the kernel lays them out, for what a live kernel does not
    // readily show: states, errors, and malformed replies.

    const SEQ: u32 = 7;
    const MULTI: u16 = NLM_F_MULTIPART;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_NOOP: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;

    /// One netlink message (struct nlmsghdr, then the payload), padded to 4 bytes.
    fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    /// struct inet_diag_msg of a socket from `local` to `remote` in `state`.
    fn diag_msg(state: u8, local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
        let octets = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => {
                let mut a = [0; 16];
                a[..4].copy_from_slice(&v4.octets());
                a
            }
            IpAddr::V6(v6) => v6.octets(),
        };
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut m = vec![family, state, 0, 0];
        m.extend_from_slice(&local.port().to_be_bytes());
        m.extend_from_slice(&remote.port().to_be_bytes());
        m.extend_from_slice(&octets(local.ip()));
        m.extend_from_slice(&octets(remote.ip()));
        m.extend_from_slice(&[0; 4 + 8]); // interface, cookie
        m.extend_from_slice(&[0; 5 * 4]); // expires, queues, uid, inode
        m
    }

    fn socket_msg(state: u8, local: &str, remote: &str) -> Vec<u8> {
        let diag = diag_msg(state, local.parse().unwrap(), remote.parse().unwrap());
        nlmsg(SOCK_DIAG_BY_FAMILY, MULTI, SEQ, &diag)
    }

    fn done(code: i32) -> Vec<u8> {
        nlmsg(NLMSG_DONE, MULTI, SEQ, &code.to_ne_bytes())
    }

    fn dump_of(protocol: u8) -> Dump {
        dumps()
            .into_iter()
            .find(|d| d.protocol == protocol)
            .expect("a dump of the protocol")
    }

    /// Feeds `datagrams` as the reply to request SEQ of a `protocol` dump, up to its end.
    fn take(protocol: u8, max_sockets: usize, datagrams: &[Vec<u8>]) -> Result<(Vec<KernelFlow>, usize), SeedError> {
        let mut collected = Collected::new(max_sockets);
        for (i, datagram) in datagrams.iter().enumerate() {
            if collected.take_datagram(datagram, &dump_of(protocol), SEQ)? == Progress::Done {
                return Ok((collected.flows, i + 1));
            }
        }
        Ok((collected.flows, datagrams.len()))
    }

    #[test]
    fn each_kernel_state_maps_to_its_flow_state() {
        use KernelFlowState::*;
        let cases: [(u8, u8, Option<KernelFlowState>); 17] = [
            (IPPROTO_TCP, TCP_ESTABLISHED, Some(Established)),
            (IPPROTO_TCP, TCP_SYN_SENT, Some(SynSent)),
            (IPPROTO_TCP, TCP_SYN_RECV, Some(SynRecv)),
            (IPPROTO_TCP, TCP_NEW_SYN_RECV, Some(SynRecv)),
            (IPPROTO_TCP, TCP_FIN_WAIT1, Some(Closing)),
            (IPPROTO_TCP, TCP_FIN_WAIT2, Some(Closing)),
            (IPPROTO_TCP, TCP_CLOSE_WAIT, Some(Closing)),
            (IPPROTO_TCP, TCP_LAST_ACK, Some(Closing)),
            (IPPROTO_TCP, TCP_CLOSING, Some(Closing)),
            (IPPROTO_TCP, 6, None),  // TIME_WAIT
            (IPPROTO_TCP, 7, None),  // CLOSE
            (IPPROTO_TCP, 10, None), // LISTEN
            (IPPROTO_TCP, 0, None),
            (IPPROTO_TCP, 200, None),
            (IPPROTO_UDP, TCP_ESTABLISHED, Some(Udp)),
            (IPPROTO_UDP, 7, None), // unconnected
            (IPPROTO_UDP, TCP_SYN_SENT, None),
        ];
        for (protocol, state, want) in cases {
            let reply = [[socket_msg(state, "10.0.0.1:1000", "192.0.2.1:443"), done(0)].concat()];
            let (flows, _) = take(protocol, 10, &reply).expect("a well-formed reply");
            let want: Vec<_> = want
                .map(|state| KernelFlow {
                    proto: protocol,
                    local: "10.0.0.1:1000".parse().unwrap(),
                    remote: "192.0.2.1:443".parse().unwrap(),
                    state,
                })
                .into_iter()
                .collect();
            assert_eq!(flows, want, "protocol {protocol}, state {state}");
        }
    }

    #[test]
    fn sockets_without_a_remote_end_are_no_flows() {
        for remote in ["0.0.0.0:53", "192.0.2.1:0", "[::]:53", "[2001:db8::1]:0"] {
            let local = if remote.starts_with('[') {
                "[2001:db8::2]:5353"
            } else {
                "10.0.0.1:5353"
            };
            let reply = [[socket_msg(TCP_ESTABLISHED, local, remote), done(0)].concat()];
            let (flows, _) = take(IPPROTO_UDP, 10, &reply).expect("a well-formed reply");
            assert_eq!(flows, [], "remote {remote}");
        }
    }

    #[test]
    fn a_reply_in_several_datagrams_is_read_to_its_done() {
        let reply = [
            [
                socket_msg(TCP_ESTABLISHED, "10.0.0.1:1", "192.0.2.1:443"),
                socket_msg(TCP_SYN_SENT, "[::ffff:10.0.0.1]:2", "[::ffff:192.0.2.1]:443"),
            ]
            .concat(),
            socket_msg(TCP_ESTABLISHED, "[2001:db8::1]:3", "[2001:db8::2]:443"),
            done(0),
            socket_msg(TCP_ESTABLISHED, "10.0.0.1:9", "192.0.2.1:443"), // never read
        ];
        let (flows, read) = take(IPPROTO_TCP, 10, &reply).expect("a well-formed reply");
        assert_eq!(read, 3, "datagrams read up to NLMSG_DONE");
        let ports: Vec<_> = flows.iter().map(|f| (f.local, f.state)).collect();
        assert_eq!(
            ports,
            [
                ("10.0.0.1:1".parse().unwrap(), KernelFlowState::Established),
                ("10.0.0.1:2".parse().unwrap(), KernelFlowState::SynSent),
                ("[2001:db8::1]:3".parse().unwrap(), KernelFlowState::Established),
            ]
        );
        assert_eq!(flows[1].remote, "192.0.2.1:443".parse().unwrap(), "unmapped remote");
    }

    #[test]
    fn the_last_message_of_a_datagram_may_lack_its_padding() {
        let mut noop = nlmsg(NLMSG_NOOP, MULTI, SEQ, &[0]);
        noop.truncate(17);
        let reply = [
            [socket_msg(TCP_ESTABLISHED, "10.0.0.1:1", "192.0.2.1:2"), noop].concat(),
            done(0),
        ];
        let (flows, read) = take(IPPROTO_TCP, 10, &reply).expect("a well-formed reply");
        assert_eq!((flows.len(), read), (1, 2));
    }

    #[test]
    fn a_socket_outside_a_multipart_reply_ends_it() {
        let single = diag_msg(
            TCP_ESTABLISHED,
            "10.0.0.1:1".parse().unwrap(),
            "192.0.2.1:2".parse().unwrap(),
        );
        let reply = [nlmsg(SOCK_DIAG_BY_FAMILY, 0, SEQ, &single), done(0)];
        let (flows, read) = take(IPPROTO_TCP, 10, &reply).expect("a well-formed reply");
        assert_eq!((flows.len(), read), (1, 1));
    }

    #[test]
    fn kernel_errors_are_refusals() {
        let error = |code: i32| {
            // struct nlmsgerr: the error, then the header of the request it answers.
            let request = nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, SEQ, &[]);
            nlmsg(NLMSG_ERROR, 0, SEQ, &[&code.to_ne_bytes()[..], &request].concat())
        };
        for (reply, errno) in [
            (error(-libc::EACCES), libc::EACCES),
            (error(-libc::ENOENT), libc::ENOENT),
            (done(-libc::ENOMEM), libc::ENOMEM),
            (
                [socket_msg(1, "10.0.0.1:1", "192.0.2.1:2"), error(-libc::EINVAL)].concat(),
                libc::EINVAL,
            ),
        ] {
            match take(IPPROTO_TCP, 10, &[reply]) {
                Err(SeedError::Refused { source, .. }) => assert_eq!(source.raw_os_error(), Some(errno)),
                other => panic!("errno {errno}: want a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_acknowledgement_does_not_end_the_reply() {
        let ack = nlmsg(NLMSG_ERROR, 0, SEQ, &[0; 4 + 16]);
        let reply = [ack, socket_msg(TCP_ESTABLISHED, "10.0.0.1:1", "192.0.2.1:2"), done(0)];
        let (flows, read) = take(IPPROTO_TCP, 10, &reply).expect("a well-formed reply");
        assert_eq!((flows.len(), read), (1, 3));
    }

    #[test]
    fn a_reply_to_another_request_is_an_error() {
        let diag = diag_msg(1, "10.0.0.1:1".parse().unwrap(), "192.0.2.1:2".parse().unwrap());
        let reply = nlmsg(SOCK_DIAG_BY_FAMILY, MULTI, SEQ + 1, &diag);
        assert!(
            matches!(
                take(IPPROTO_TCP, 10, &[reply]),
                Err(SeedError::Sequence { got: 8, want: 7, .. })
            ),
            "another sequence number"
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        let socket = socket_msg(TCP_ESTABLISHED, "10.0.0.1:1", "192.0.2.1:2");
        let mut long = socket.clone();
        long[0..4].copy_from_slice(&(socket.len() as u32 + 4).to_ne_bytes());
        let mut short = socket.clone();
        short[0..4].copy_from_slice(&8u32.to_ne_bytes());
        let mut family = socket.clone();
        family[16] = 99;
        let cases = [
            ("a header cut short", socket[..10].to_vec()),
            ("a length past the datagram", long),
            ("a length shorter than the header", short),
            (
                "a socket cut short",
                nlmsg(SOCK_DIAG_BY_FAMILY, MULTI, SEQ, &socket[16..40]),
            ),
            ("an unknown address family", family),
            ("another message type", nlmsg(99, MULTI, SEQ, &socket[16..])),
        ];
        for (what, reply) in cases {
            let got = take(IPPROTO_TCP, 10, &[reply]);
            assert!(matches!(got, Err(SeedError::Malformed { .. })), "{what}: {got:?}");
        }
    }

    #[test]
    fn more_sockets_than_the_bound_is_an_error() {
        let socket = |port| socket_msg(TCP_ESTABLISHED, &format!("10.0.0.1:{port}"), "192.0.2.1:443");
        let reply = [[socket(1), socket(2), socket(3), done(0)].concat()];
        assert_eq!(take(IPPROTO_TCP, 3, &reply).expect("three sockets fit").0.len(), 3);
        assert!(matches!(
            take(IPPROTO_TCP, 2, &reply),
            Err(SeedError::TooMany { max: 2 })
        ));
        // Sockets that are no flows count too: the bound is on what the kernel sends.
        let listening = [[socket_msg(10, "10.0.0.1:1", "0.0.0.0:0"), socket(2), done(0)].concat()];
        assert!(matches!(
            take(IPPROTO_TCP, 1, &listening),
            Err(SeedError::TooMany { max: 1 })
        ));
    }

    proptest::proptest! {
        /// No reply panics the reader, however garbled: bytes at random, and a good
        /// reply with bytes flipped or cut.
        #[test]
        fn no_reply_panics(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..8),
            cut in 0usize..400,
        ) {
            let _ = take(IPPROTO_TCP, 10, &[noise]);
            let mut good = [
                socket_msg(TCP_ESTABLISHED, "10.0.0.1:1", "192.0.2.1:2"),
                socket_msg(TCP_SYN_SENT, "[2001:db8::1]:1", "[2001:db8::2]:2"),
                done(0),
            ]
            .concat();
            for (at, byte) in flips {
                let len = good.len();
                good[at % len] ^= byte;
            }
            good.truncate(cut);
            let _ = take(IPPROTO_UDP, 10, &[good]);
        }
    }
}
