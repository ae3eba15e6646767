//! The reference of a TCP flow's sequence window (docs/state.md; the data
//! plane's lib/tcpwin.h): conntrack's tcp_in_window() checks, an exact handshake, RSTs
//! that change the state only at the exact next sequence (RFC 5961), and the host's
//! own segments trusted. Written from the rules, not from the C: the differential
//! tests compare the two on every segment.

use super::{Hook, Seg};

/// conntrack's floor of how far back an ack may be.
const MIN_ACK_WINDOW: u32 = 66_000;
/// How far past the bytes seen a segment that came in fragments may end.
const FRAG_SLACK: u32 = 65_535;
/// The largest window scale (RFC 7323), assumed where the handshake was not seen.
const MAX_SCALE: u8 = 14;

/// a before b, modulo 2^32.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// What the flow knows of one direction's sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Side {
    /// The sequence number after the last one it sent.
    end: u32,
    /// The highest it may send: the other side's ack plus window.
    maxend: u32,
    /// Its largest window, scaled.
    maxwin: u32,
    /// Its highest ack.
    maxack: u32,
    scale: u8,
    /// It sent a segment the flow learned from.
    seen: bool,
    /// `end` is known (its own segment, or the other side's ack).
    end_known: bool,
    acked: bool,
    /// Its SYN carried the window scale option.
    wscale: bool,
    scale_known: bool,
    /// It sent a segment in fragments: its end may be short.
    frags: bool,
}

impl Side {
    fn scale(&self) -> u32 {
        u32::from(if self.scale_known {
            self.scale.min(MAX_SCALE)
        } else {
            MAX_SCALE
        })
    }
}

/// Where a TCP flow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TcpState {
    /// A SYN, the handshake not complete.
    SynSent,
    Established,
    /// A FIN seen.
    Closing,
    /// A RST seen.
    Close,
}

/// What a segment does to its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// In window: it passes and the flow learns what it carried.
    Accept,
    /// It passes and changes nothing (a RST or a SYN the host's stack judges).
    Ignore,
    /// Out of window: it changes nothing.
    OutOfWindow,
}

/// A segment as the flow sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    pub(super) syn: bool,
    pub(super) ack: bool,
    pub(super) seg: Seg,
    /// It came as a first fragment: only that fragment's bytes are counted.
    pub(super) first_fragment: bool,
}

impl Segment {
    /// The sequence number after it.
    fn end(&self) -> u32 {
        self.seg
            .seq
            .wrapping_add(u32::from(self.seg.len))
            .wrapping_add(u32::from(self.syn))
            .wrapping_add(u32::from(self.seg.fin))
    }

    fn bare_syn(&self) -> bool {
        self.syn && !self.ack && !self.seg.rst
    }
}

/// A TCP flow's state and its two sides, indexed by the direction their segments go.
#[derive(Clone, Copy, Debug)]
pub(super) struct TcpFlow {
    pub(super) state: TcpState,
    /// Who sent the SYN (or the first segment); `None`: the agent seeded it.
    pub(super) opener: Option<Hook>,
    pub(super) sides: [Side; 2],
}

fn index(hook: Hook) -> usize {
    match hook {
        Hook::Ingress => 0,
        Hook::Egress => 1,
    }
}

impl TcpFlow {
    /// The flow a segment that went `hook` starts (it opened on a forward path).
    pub(super) fn new(hook: Hook, s: &Segment) -> TcpFlow {
        let mut flow = TcpFlow {
            state: TcpState::Established,
            opener: Some(hook),
            sides: [Side::default(); 2],
        };
        if s.bare_syn() {
            flow.start(hook, s);
        } else {
            // Picked up mid-stream: what the segment shows of its sender.
            flow.track(hook, s, true);
        }
        flow
    }

    /// A bare SYN from `hook` (re)starts the flow: only its sender is known.
    fn start(&mut self, hook: Hook, s: &Segment) {
        let (mut sender, mut receiver) = (Side::default(), Side::default());
        learn(&mut sender, &mut receiver, s);
        self.sides[index(hook)] = sender;
        self.sides[1 - index(hook)] = receiver;
        self.state = TcpState::SynSent;
        self.opener = Some(hook);
    }

    /// Both sides have sent what the flow checked or trusts, past the handshake.
    pub(super) fn assured(&self) -> bool {
        self.state != TcpState::SynSent && self.sides[0].seen && self.sides[1].seen
    }

    /// A segment that went `hook` on the flow; `opens`: it came on a forward path.
    pub(super) fn track(&mut self, hook: Hook, s: &Segment, opens: bool) -> Outcome {
        let host = hook == Hook::Egress;
        let opener = self.opener == Some(hook);
        let (seq, ack) = (s.seg.seq, s.seg.ack);
        let end = s.end();

        if s.bare_syn() {
            // The host's SYN is a new connection whatever the flow thought; the peer's
            // only on the ports of one that ended.
            if host || (opens && matches!(self.state, TcpState::Close | TcpState::Closing)) {
                self.start(hook, s);
                return Outcome::Accept;
            }
            return Outcome::Ignore;
        }
        let (mut me, mut other) = (self.sides[index(hook)], self.sides[1 - index(hook)]);

        if s.seg.rst {
            if host {
                self.state = TcpState::Close;
                return Outcome::Accept;
            }
            if self.state == TcpState::SynSent && !opener && !me.seen {
                // The peer refuses the host's SYN: the RST must ack exactly that SYN.
                if s.ack && other.end_known && ack == other.end {
                    self.state = TcpState::Close;
                    return Outcome::Accept;
                }
                return Outcome::OutOfWindow;
            }
            if !me.end_known {
                return Outcome::Ignore;
            }
            let exact = seq == me.end || (other.acked && seq == other.maxack);
            if exact {
                self.state = TcpState::Close;
                return Outcome::Accept;
            }
            return if seq_in_window(&me, &other, seq, seq) {
                Outcome::Ignore
            } else {
                Outcome::OutOfWindow
            };
        }

        if !host && self.state == TcpState::SynSent {
            if !opener && !me.seen {
                // Only the SYN-ACK of exactly the host's SYN answers it.
                if !s.syn || !other.end_known || ack != other.end {
                    return Outcome::OutOfWindow;
                }
            } else if opener && !s.syn && (!other.seen || !s.ack || ack != other.end) {
                // The peer's ACK completes its handshake only acking exactly the host's SYN-ACK.
                return Outcome::OutOfWindow;
            }
        }
        if !me.seen {
            if !host && !s.syn && !seq_in_window(&me, &other, seq, end) {
                return Outcome::OutOfWindow;
            }
            learn(&mut me, &mut other, s);
        }
        if !host && (!seq_in_window(&me, &other, seq, end) || !ack_ok(&me, &other, s)) {
            return Outcome::OutOfWindow;
        }
        update(&mut me, &mut other, s, end);
        self.sides[index(hook)] = me;
        self.sides[1 - index(hook)] = other;

        if s.seg.fin {
            if self.state != TcpState::Close {
                self.state = TcpState::Closing;
            }
        } else if self.state == TcpState::SynSent && opener && !s.syn && s.ack && other.seen {
            self.state = TcpState::Established;
        }
        Outcome::Accept
    }
}

/// The sender learns its side from its first segment (see lib/tcpwin.h's notes).
fn learn(me: &mut Side, other: &mut Side, s: &Segment) {
    let end = s.end();
    let win = u32::from(s.seg.win);
    if s.syn {
        *me = Side {
            end,
            maxend: end,
            maxwin: win.max(1),
            seen: true,
            end_known: true,
            ..Side::default()
        };
        if let Some(w) = s.seg.wscale {
            me.scale = w.min(MAX_SCALE);
            me.wscale = true;
        }
        if s.ack {
            // The answer settles both scales: only when both SYNs carried the option.
            if !(me.wscale && other.wscale) {
                me.scale = 0;
                other.scale = 0;
            }
            me.scale_known = true;
            other.scale_known = true;
        }
        return;
    }
    let win = (win << me.scale()).max(1);
    me.end = end;
    me.maxwin = win;
    me.maxend = end.wrapping_add(win);
    me.seen = true;
    me.end_known = true;
    if s.ack && !other.end_known {
        other.end = s.seg.ack;
        other.maxend = s.seg.ack;
        other.end_known = true;
    }
}

/// Its sequence lies where the receiver lets the sender send: no further than the
/// receiver's window, no further back than one.
fn seq_in_window(me: &Side, other: &Side, seq: u32, end: u32) -> bool {
    if !me.end_known {
        return true;
    }
    if after(seq, me.maxend) {
        return false;
    }
    !(other.seen && before(end, me.end.wrapping_sub(other.maxwin)))
}

/// Its ack is of what the receiver sent, and from no further back than a window.
fn ack_ok(me: &Side, other: &Side, s: &Segment) -> bool {
    if !s.ack || !other.end_known {
        return true;
    }
    let slack = if other.frags { FRAG_SLACK } else { 0 };
    if after(s.seg.ack, other.end.wrapping_add(slack)) {
        return false;
    }
    !before(s.seg.ack, other.end.wrapping_sub(me.maxwin.max(MIN_ACK_WINDOW)))
}

/// What an accepted segment teaches: the sender's end, window and ack, the receiver's limit.
fn update(me: &mut Side, other: &mut Side, s: &Segment, end: u32) {
    let win = if s.syn {
        u32::from(s.seg.win)
    } else {
        u32::from(s.seg.win) << me.scale()
    };
    me.maxwin = me.maxwin.max(win);
    if after(end, me.end) {
        me.end = end;
    }
    if s.first_fragment {
        me.frags = true;
    }
    if !s.ack {
        return;
    }
    let ack = s.seg.ack;
    if !me.acked || after(ack, me.maxack) {
        me.maxack = ack;
        me.acked = true;
    }
    if !before(ack.wrapping_add(win), other.maxend) {
        other.maxend = ack.wrapping_add(win).wrapping_add(u32::from(win == 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(syn: bool, ack: bool, seq: u32, ack_no: u32) -> Segment {
        Segment {
            syn,
            ack,
            seg: Seg {
                seq,
                ack: ack_no,
                win: 1000,
                ..Seg::default()
            },
            first_fragment: false,
        }
    }

    /// The host connects, the peer answers, data both ways: assured; a blind RST and a
    /// stray segment change nothing, the exact RST closes.
    #[test]
    fn a_handshake_then_only_the_exact_rst_closes() {
        let mut f = TcpFlow::new(Hook::Egress, &seg(true, false, 100, 0));
        assert_eq!(f.state, TcpState::SynSent);
        // A SYN-ACK acking anything but 101 is no answer.
        assert_eq!(
            f.track(Hook::Ingress, &seg(true, true, 5000, 100), false),
            Outcome::OutOfWindow
        );
        assert_eq!(
            f.track(Hook::Ingress, &seg(true, true, 5000, 101), false),
            Outcome::Accept
        );
        assert!(!f.assured(), "not before the opener's ACK");
        assert_eq!(
            f.track(Hook::Egress, &seg(false, true, 101, 5001), true),
            Outcome::Accept
        );
        assert_eq!(f.state, TcpState::Established);
        assert!(f.assured());
        let mut rst = seg(false, false, 123_456, 0);
        rst.seg.rst = true;
        assert_eq!(f.track(Hook::Ingress, &rst, false), Outcome::OutOfWindow);
        rst.seg.seq = 5001 + 10;
        assert_eq!(
            f.track(Hook::Ingress, &rst, false),
            Outcome::Ignore,
            "in window, not exact"
        );
        assert_eq!(f.state, TcpState::Established);
        assert_eq!(
            f.track(Hook::Ingress, &seg(false, true, 900_000, 101), false),
            Outcome::OutOfWindow
        );
        rst.seg.seq = 5001;
        assert_eq!(f.track(Hook::Ingress, &rst, false), Outcome::Accept);
        assert_eq!(f.state, TcpState::Close);
    }

    /// A spoofed SYN to an open port: the host's SYN-ACK comes, the blind ACK can't
    /// know its number, the flow never gets established.
    #[test]
    fn a_spoofed_syn_never_gets_established() {
        let mut f = TcpFlow::new(Hook::Ingress, &seg(true, false, 7, 0));
        assert_eq!(
            f.track(Hook::Egress, &seg(true, true, 90_000, 8), false),
            Outcome::Accept
        );
        for guess in [0, 1, 8, 90_000, 90_002] {
            assert_eq!(
                f.track(Hook::Ingress, &seg(false, true, 8, guess), true),
                Outcome::OutOfWindow
            );
        }
        assert_eq!(f.state, TcpState::SynSent);
        assert!(!f.assured());
        assert_eq!(
            f.track(Hook::Ingress, &seg(false, true, 8, 90_001), true),
            Outcome::Accept
        );
        assert!(f.assured());
    }

    /// Picked up mid-stream from the host's segment: the peer's next sequence is what
    /// the host acked; a segment far from it is out of window.
    #[test]
    fn mid_stream_learns_from_the_hosts_ack() {
        let mut f = TcpFlow::new(Hook::Egress, &seg(false, true, 1_000_000, 2_000_000));
        assert!(!f.assured());
        assert_eq!(
            f.track(Hook::Ingress, &seg(false, true, 3_000_000_000, 1_000_000), false),
            Outcome::OutOfWindow
        );
        assert_eq!(
            f.track(Hook::Ingress, &seg(false, true, 2_000_000, 1_000_000), false),
            Outcome::Accept
        );
        assert!(f.assured());
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert!(before(u32::MAX, 0) && after(0, u32::MAX) && !before(5, 5));
        let mut f = TcpFlow::new(Hook::Egress, &seg(true, false, u32::MAX, 0));
        assert_eq!(f.track(Hook::Ingress, &seg(true, true, 10, 0), false), Outcome::Accept);
    }
}
