//! Drop events and the counters from the data plane, decoded for people: a leaf that
//! every layer may use (the data plane fills `Counters`, the daemon sums them up).

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use allowgate_ebpf::{self as abi, Event, Reason};

/// Packets and bytes per (direction, verdict, reason), summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub by_key: BTreeMap<(u8, u8, Reason), abi::Counter>,
    pub events_suppressed: u64,
    pub events_lost: u64,
    /// DNS answers held for the learner, and passed unheld because its ring was full.
    pub dns_held: u64,
    pub dns_unheld: u64,
    /// Answers from a resolver's address that answer no query this host sent.
    pub dns_unsolicited: u64,
    /// Answers passed at once with a copy to the learner (no give-back path in force).
    pub dns_passed: u64,
}

impl Counters {
    pub fn get(&self, direction: u8, verdict: u8, reason: Reason) -> abi::Counter {
        self.by_key
            .get(&(direction, verdict, reason))
            .copied()
            .unwrap_or_default()
    }

    /// Packets of a direction and verdict, whatever the reason.
    pub fn packets(&self, direction: u8, verdict: u8) -> u64 {
        self.by_key
            .iter()
            .filter(|((d, v, _), _)| *d == direction && *v == verdict)
            .map(|(_, c)| c.packets)
            .sum()
    }
}

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
    use rustix::net::{AddressFamily, SocketType, netdevice::index_to_name, socket};
    let probe = socket(AddressFamily::INET, SocketType::DGRAM, None).ok()?;
    index_to_name(&probe, index).ok()
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

/// What the daemon logs about drops: one line per interval with the drops of that
/// interval by direction and reason (exact, from the counters), and by interface (from
/// the drop events, which the data plane rate-limits: a sample under a flood). Each
/// event on its own goes to debug and to `allowgate events`, never to the log at info:
/// a flood must not become a flood of log lines.
#[derive(Debug, Default)]
pub struct DropSummary {
    /// Drop counters at the start of the interval, by (direction, reason).
    last: Option<std::collections::BTreeMap<(u8, Reason), u64>>,
    last_suppressed: u64,
    /// Events of the interval by (interface, direction, reason).
    events: std::collections::BTreeMap<(String, String, String), u64>,
}

impl DropSummary {
    pub fn observe(&mut self, event: &Decoded) {
        let iface = event
            .interface
            .clone()
            .unwrap_or_else(|| format!("if{}", event.ifindex));
        *self
            .events
            .entry((iface, event.direction.clone(), event.reason.clone()))
            .or_default() += 1;
    }

    /// The line for the interval that ends now, or `None` when nothing was dropped
    /// (and on the first call, which only takes the starting point). `monitor`: the
    /// drops were only counted ("would drop").
    pub fn take(&mut self, counters: &Counters, monitor: bool, interval_secs: u64) -> Option<String> {
        let now: std::collections::BTreeMap<(u8, Reason), u64> = counters
            .by_key
            .iter()
            .filter(|((_, verdict, _), _)| *verdict == abi::VERDICT_DROP)
            .map(|((direction, _, reason), c)| ((*direction, *reason), c.packets))
            .collect();
        let events = std::mem::take(&mut self.events);
        let suppressed = counters.events_suppressed.saturating_sub(self.last_suppressed);
        self.last_suppressed = counters.events_suppressed;
        let last = self.last.replace(now.clone())?;
        let deltas: Vec<((u8, Reason), u64)> = now
            .iter()
            .map(|(k, v)| (*k, v.saturating_sub(last.get(k).copied().unwrap_or(0))))
            .filter(|(_, d)| *d > 0)
            .collect();
        let total: u64 = deltas.iter().map(|(_, d)| d).sum();
        if total == 0 {
            return None;
        }
        let verb = if monitor { "would drop" } else { "dropped" };
        let mut line = format!("{verb} {total} packets in the last {interval_secs} s: ");
        let by_reason: Vec<String> = deltas
            .iter()
            .map(|((direction, reason), d)| {
                let dir = if *direction == abi::DIR_EGRESS {
                    "egress"
                } else {
                    "ingress"
                };
                format!("{dir} {} {d}", reason.as_str())
            })
            .collect();
        line.push_str(&by_reason.join(", "));
        if !events.is_empty() {
            let by_iface: Vec<String> = events
                .iter()
                .map(|((iface, dir, reason), n)| format!("{iface} {dir} {reason} {n}"))
                .collect();
            line.push_str(&format!("; events by interface: {}", by_iface.join(", ")));
        }
        if suppressed > 0 {
            line.push_str(&format!(" ({suppressed} more not reported: event rate limit)"));
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(drops: &[(u8, Reason, u64)], suppressed: u64) -> Counters {
        let mut c = Counters::default();
        for &(dir, reason, packets) in drops {
            c.by_key
                .insert((dir, abi::VERDICT_DROP, reason), abi::Counter { packets, bytes: 0 });
        }
        // Passes never make a summary.
        c.by_key.insert(
            (abi::DIR_INGRESS, abi::VERDICT_PASS, Reason::Policy),
            abi::Counter { packets: 99, bytes: 0 },
        );
        c.events_suppressed = suppressed;
        c
    }

    fn event(reason: &str) -> Decoded {
        Decoded {
            direction: "ingress".into(),
            reason: reason.into(),
            enforced: true,
            ifindex: 7,
            interface: Some("eth1".into()),
            ethertype: 0x0800,
            proto: 17,
            src: None,
            dst: None,
            sport: 0,
            dport: 0,
            generation: 1,
        }
    }

    #[test]
    fn a_summary_says_what_the_interval_dropped_and_nothing_when_quiet() {
        let mut s = DropSummary::default();
        assert_eq!(
            s.take(&counters(&[(abi::DIR_INGRESS, Reason::Policy, 100)], 0), false, 10),
            None
        );
        s.observe(&event("policy"));
        s.observe(&event("policy"));
        s.observe(&event("truncated"));
        let line = s
            .take(
                &counters(
                    &[
                        (abi::DIR_INGRESS, Reason::Policy, 5100),
                        (abi::DIR_EGRESS, Reason::Truncated, 3),
                    ],
                    4000,
                ),
                false,
                10,
            )
            .expect("drops in the interval");
        assert_eq!(
            line,
            "dropped 5003 packets in the last 10 s: ingress policy 5000, egress truncated 3; \
             events by interface: eth1 ingress policy 2, eth1 ingress truncated 1 (4000 more not reported: event rate limit)"
        );
        let same = counters(
            &[
                (abi::DIR_INGRESS, Reason::Policy, 5100),
                (abi::DIR_EGRESS, Reason::Truncated, 3),
            ],
            4000,
        );
        assert_eq!(s.take(&same, false, 10), None, "no drops, no line");
    }

    #[test]
    fn monitor_mode_says_would_drop() {
        let mut s = DropSummary::default();
        s.take(&counters(&[], 0), true, 1);
        let line = s
            .take(&counters(&[(abi::DIR_EGRESS, Reason::Policy, 2)], 0), true, 1)
            .expect("drops");
        assert_eq!(line, "would drop 2 packets in the last 1 s: egress policy 2");
    }
}
