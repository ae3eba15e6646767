//! The XDP hook of an interface as netlink sees it (RTM_GETLINK's IFLA_XDP): which
//! program runs there and in which mode, whoever attached it, and attaching a program
//! there the way libxdp does (IFLA_XDP with `XDP_FLAGS_UPDATE_IF_NOEXIST`, or
//! `XDP_FLAGS_REPLACE` and the expected fd, so that a swap that raced another tool
//! fails instead of undoing it).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::policy::config::XdpMode;

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// The program on an interface's XDP hook (not counting one offloaded to hardware).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpHook {
    pub prog_id: u32,
    pub mode: XdpMode,
}

fn socket() -> io::Result<Socket> {
    let socket = Socket::new(NETLINK_ROUTE)?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(std::time::Duration::from_secs(5)),
    )?;
    Ok(socket)
}

fn request(message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<NetlinkPayload<RouteNetlinkMessage>>> {
    let socket = socket()?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(header, message.into());
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    let mut datagram = Vec::with_capacity(64 * 1024);
    loop {
        datagram.clear();
        match socket.recv(&mut datagram, 0) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let mut payloads = Vec::new();
    let mut rest = &datagram[..];
    while !rest.is_empty() {
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let len = (message.header.length as usize).next_multiple_of(4).min(rest.len());
        if let NetlinkPayload::Error(e) = &message.payload
            && e.code.is_some()
        {
            return Err(e.to_io());
        }
        payloads.push(message.payload);
        rest = &rest[len..];
    }
    Ok(payloads)
}

fn link_message(ifindex: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    message.attributes = attributes;
    message
}

/// The program on the XDP hook of interface `ifindex`, or `None`.
pub fn query(ifindex: u32) -> io::Result<Option<XdpHook>> {
    let payloads = request(
        RouteNetlinkMessage::GetLink(link_message(ifindex, Vec::new())),
        NLM_F_REQUEST,
    )?;
    for payload in payloads {
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = payload else {
            continue;
        };
        let Some(xdp) = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Xdp(xdp) => Some(xdp),
            _ => None,
        }) else {
            return Ok(None);
        };
        let (mut attached, mut prog, mut drv, mut skb) = (XdpAttached::None, 0, 0, 0);
        for a in xdp {
            match a {
                LinkXdp::Attached(a) => attached = *a,
                LinkXdp::ProgId(id) => prog = *id,
                LinkXdp::DrvProgId(id) => drv = *id,
                LinkXdp::SkbProgId(id) => skb = *id,
                _ => {}
            }
        }
        return Ok(match attached {
            XdpAttached::Driver => Some(XdpHook {
                prog_id: prog,
                mode: XdpMode::Native,
            }),
            XdpAttached::SocketBuffer => Some(XdpHook {
                prog_id: prog,
                mode: XdpMode::Generic,
            }),
            XdpAttached::Multiple if drv != 0 => Some(XdpHook {
                prog_id: drv,
                mode: XdpMode::Native,
            }),
            XdpAttached::Multiple if skb != 0 => Some(XdpHook {
                prog_id: skb,
                mode: XdpMode::Generic,
            }),
            _ => None,
        });
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no interface of index {ifindex}"),
    ))
}

fn mode_flag(mode: XdpMode) -> u32 {
    match mode {
        XdpMode::Native => XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => XDP_FLAGS_SKB_MODE,
    }
}

/// Puts `prog` (`None`: nothing) on the XDP hook of `ifindex` in `mode`: only if the
/// hook is empty when `expected` is `None`, else only if it still runs `expected`
/// (EEXIST or EBUSY when another tool got there first).
pub fn set(ifindex: u32, prog: Option<&OwnedFd>, expected: Option<&OwnedFd>, mode: XdpMode) -> io::Result<()> {
    let mut flags = mode_flag(mode);
    let mut nlas = vec![LinkXdp::Fd(prog.map_or(-1, |p| p.as_fd().as_raw_fd()))];
    match expected {
        Some(old) => {
            flags |= XDP_FLAGS_REPLACE;
            nlas.push(LinkXdp::ExpectedFd(old.as_fd().as_raw_fd() as u32));
        }
        None => flags |= XDP_FLAGS_UPDATE_IF_NOEXIST,
    }
    nlas.push(LinkXdp::Flags(flags));
    request(
        RouteNetlinkMessage::SetLink(link_message(ifindex, vec![LinkAttribute::Xdp(nlas)])),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .map(|_| ())
}
