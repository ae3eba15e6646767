//! Drop events from the data plane, decoded for people.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use allowgate_ebpf::{self as abi, Event, Reason};

/// One drop (or would-drop) event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decoded {
    pub direction: String,
    pub reason: String,
    /// False in monitor mode: the packet went on.
    pub enforced: bool,
    pub ifindex: u32,
    pub interface: Option<String>,
    pub ethertype: u16,
    pub proto: u8,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: u16,
    pub dport: u16,
    pub generation: u64,
}

fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

impl From<&Event> for Decoded {
    fn from(e: &Event) -> Self {
        let addr = |b: &[u8; 16]| match e.family {
            4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
            _ => None,
        };
        Decoded {
            direction: if e.direction == abi::DIR_EGRESS {
                "egress"
            } else {
                "ingress"
            }
            .to_string(),
            reason: Reason::from_u8(e.reason)
                .map(Reason::as_str)
                .unwrap_or("unknown")
                .to_string(),
            enforced: e.enforced != 0,
            ifindex: e.ifindex,
            interface: if_name(e.ifindex),
            ethertype: e.ethertype,
            proto: e.l4proto,
            src: addr(&e.saddr),
            dst: addr(&e.daddr),
            sport: e.sport,
            dport: e.dport,
            generation: e.generation,
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        other => format!("proto {other}"),
    }
}

impl fmt::Display for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.enforced { "drop" } else { "would drop" };
        let iface = self.interface.clone().unwrap_or_else(|| format!("if{}", self.ifindex));
        write!(f, "{verdict} {} {iface} {}", self.direction, self.reason)?;
        match (self.src, self.dst) {
            (Some(s), Some(d)) if matches!(self.proto, 6 | 17) => {
                write!(
                    f,
                    " {} {s}:{} -> {d}:{}",
                    proto_name(self.proto),
                    self.sport,
                    self.dport
                )
            }
            (Some(s), Some(d)) => write!(f, " {} {s} -> {d}", proto_name(self.proto)),
            _ => write!(f, " ethertype 0x{:04x}", self.ethertype),
        }
    }
}
