/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcpwin.h - a TCP flow's sequence window, checked as conntrack's tcp_in_window()
 * does, so that nobody off the path can steer a flow (lib/flow.h calls it).
 *
 * Each direction keeps what its sender sent (struct ag_flow_seq): the sequence end, the
 * highest sequence the other side's window lets it reach, its largest window and its
 * highest ack. A segment coming in must lie in that window: its sequence no further
 * than the receiver allowed and no further back than a window, its ack no further than
 * the host sent and no further back than the peer's window (conntrack's checks I-IV).
 * What is out of it neither refreshes nor changes the flow. On top of conntrack:
 *
 * - The handshake is exact: a SYN-ACK must ack the opener's SYN, and the opener's ACK
 *   that completes it must ack the SYN-ACK, each to the number. A SYN spoofed by
 *   someone who never sees the host's SYN-ACK never gets its flow established.
 * - A RST changes the state only at the exact next sequence (RFC 5961): the sender's
 *   end, or the receiver's highest ack. One elsewhere in the window passes without
 *   changing anything, so the host's stack can send its challenge ACK; one outside
 *   the window is out-of-window. A RST answering the host's SYN must ack it.
 * - The host's own segments (egress) are what its stack sent: they are never out of
 *   window, and they teach the window (a flow picked up mid-stream learns the host's
 *   side, and the peer's next sequence from its ack, from the first one).
 * - A bare SYN from the peer on a tracked connection changes nothing and passes: the
 *   host's stack answers it with a challenge ACK, whose RST in reply (if the peer lost
 *   its end) closes the flow at the exact sequence. A SYN from the host starts the
 *   flow again, and so does one from the peer on a closed flow's ports.
 *
 * A window scale is known from the handshake (both SYNs must carry the option, RFC
 * 7323); a flow picked up mid-stream assumes the largest (14), so its windows are
 * wider than the truth: its checks are looser, never wrong. A segment that came in
 * fragments counts only the first fragment's bytes; its receiver's acks may then run
 * up to 64 KiB past the end seen (AG_SEQ_FRAGS).
 */
#ifndef ALLOWGATE_TCPWIN_H
#define ALLOWGATE_TCPWIN_H

#include "common.h"

/* conntrack's MAXACKWINDOW floor: how far back an ack may be, at the least. */
#define AG_TCP_MIN_ACK_WINDOW	66000
/* How far a fragmented segment's end may lie past the bytes seen: one IP datagram. */
#define AG_TCP_FRAG_SLACK	65535

/*
 * The two sides of the flow a segment is checked against, copied so that a segment
 * found out of window leaves the flow as it was: per CPU and per direction, off the
 * stack (the verifier's 512 bytes per call chain).
 */
struct ag_tcp_scratch {
	struct ag_flow_seq s;	/* the segment's sender */
	struct ag_flow_seq r;	/* its receiver */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AG_DIR_MAX);
	__type(key, __u32);
	__type(value, struct ag_tcp_scratch);
} ag_tcp_scratch SEC(".maps");

enum ag_tcp_result {
	AG_TCP_ACCEPT = 0,	/* in window: passes, refreshes, the flow learned what it carried */
	AG_TCP_IGNORE = 1,	/* passes, changes nothing (a RST or SYN the host's stack judges) */
	AG_TCP_OOW = 2,		/* out of window */
	AG_TCP_RESTART = 3,	/* a bare SYN that starts the flow again: the caller's to do */
};

/* Sequence numbers compare modulo 2^32. */
static __always_inline int ag_seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int ag_seq_after(__u32 a, __u32 b)
{
	return (__s32)(b - a) < 0;
}

/* The scale of the sender's windows: from the handshake, else the largest. */
static __always_inline __u32 ag_seq_scale(const struct ag_flow_seq *s)
{
	if (!(s->flags & AG_SEQ_SCALE_KNOWN))
		return AG_TCP_MAX_WSCALE;
	return s->scale > AG_TCP_MAX_WSCALE ? AG_TCP_MAX_WSCALE : s->scale;
}

/* The sequence number after the segment: its payload, and SYN and FIN one each. */
static __always_inline __u32 ag_seq_end(const struct ag_pkt *pkt)
{
	__u32 end = pkt->tcp_seq + pkt->tcp_len;

	if (pkt->tcp_flags & AG_TCP_FLAG_SYN)
		end++;
	if (pkt->tcp_flags & AG_TCP_FLAG_FIN)
		end++;
	return end;
}

/*
 * The sender s learns its side from its first segment. A SYN (or SYN-ACK) starts it
 * at its own end; a SYN-ACK also settles both sides' scales. Any other segment picks
 * the flow up mid-stream, and its ack tells where the receiver r stands if nothing
 * did yet.
 */
static __always_inline void ag_seq_learn(struct ag_flow_seq *s, struct ag_flow_seq *r,
					 const struct ag_pkt *pkt, __u32 end)
{
	__u32 win = pkt->tcp_win;

	if (pkt->tcp_flags & AG_TCP_FLAG_SYN) {
		s->end = end;
		s->maxend = end;
		s->maxwin = win ? win : 1;
		s->flags = AG_SEQ_SEEN | AG_SEQ_END;
		s->scale = 0;
		if (pkt->tcp_wscale != 0xff) {
			s->scale = pkt->tcp_wscale > AG_TCP_MAX_WSCALE ? AG_TCP_MAX_WSCALE : pkt->tcp_wscale;
			s->flags |= AG_SEQ_WSCALE;
		}
		if (pkt->tcp_flags & AG_TCP_FLAG_ACK) {
			/* RFC 7323: windows are scaled only when both SYNs said so. */
			if (!((s->flags & AG_SEQ_WSCALE) && (r->flags & AG_SEQ_WSCALE))) {
				s->scale = 0;
				r->scale = 0;
			}
			s->flags |= AG_SEQ_SCALE_KNOWN;
			r->flags |= AG_SEQ_SCALE_KNOWN;
		}
		return;
	}
	win <<= ag_seq_scale(s);
	s->end = end;
	s->maxwin = win ? win : 1;
	s->maxend = end + s->maxwin;
	s->flags |= AG_SEQ_SEEN | AG_SEQ_END;
	if ((pkt->tcp_flags & AG_TCP_FLAG_ACK) && !(r->flags & AG_SEQ_END)) {
		r->end = pkt->tcp_ack;
		r->maxend = pkt->tcp_ack;
		r->flags |= AG_SEQ_END;
	}
}

/* Checks I and II: the segment's sequence lies in the window s may send in. */
static __always_inline int ag_seq_in_window(const struct ag_flow_seq *s, const struct ag_flow_seq *r,
					    __u32 seq, __u32 end)
{
	if (!(s->flags & AG_SEQ_END))
		return 1;
	if (ag_seq_after(seq, s->maxend))
		return 0;
	if ((r->flags & AG_SEQ_SEEN) && ag_seq_before(end, s->end - r->maxwin))
		return 0;
	return 1;
}

/* Checks III and IV: its ack is of what r sent, and not from further back than s's window. */
static __always_inline int ag_seq_ack_ok(const struct ag_flow_seq *s, const struct ag_flow_seq *r,
					 const struct ag_pkt *pkt)
{
	__u32 ack = pkt->tcp_ack;
	__u32 slack = (r->flags & AG_SEQ_FRAGS) ? AG_TCP_FRAG_SLACK : 0;
	__u32 back = s->maxwin > AG_TCP_MIN_ACK_WINDOW ? s->maxwin : AG_TCP_MIN_ACK_WINDOW;

	if (!(pkt->tcp_flags & AG_TCP_FLAG_ACK) || !(r->flags & AG_SEQ_END))
		return 1;
	if (ag_seq_after(ack, r->end + slack))
		return 0;
	return !ag_seq_before(ack, r->end - back);
}

/* What an accepted segment of s teaches: s's end, window and ack; r's limit. */
static __always_inline void ag_seq_update(struct ag_flow_seq *s, struct ag_flow_seq *r,
					  const struct ag_pkt *pkt, __u32 end)
{
	__u32 win = pkt->tcp_win;
	__u32 ack = pkt->tcp_ack;

	if (!(pkt->tcp_flags & AG_TCP_FLAG_SYN))
		win <<= ag_seq_scale(s);
	if (s->maxwin < win)
		s->maxwin = win;
	if (ag_seq_after(end, s->end))
		s->end = end;
	if (pkt->frag == AG_FRAG_FIRST)
		s->flags |= AG_SEQ_FRAGS;
	if (!(pkt->tcp_flags & AG_TCP_FLAG_ACK))
		return;
	if (!(s->flags & AG_SEQ_ACKED) || ag_seq_after(ack, s->maxack)) {
		s->maxack = ack;
		s->flags |= AG_SEQ_ACKED;
	}
	if (!ag_seq_before(ack + win, r->maxend))
		r->maxend = ack + win + (win == 0);
}

/* A RST at the exact next sequence: the sender's end, or the receiver's highest ack. */
static __always_inline int ag_seq_rst_exact(const struct ag_flow_seq *s, const struct ag_flow_seq *r,
					    __u32 seq)
{
	return ((s->flags & AG_SEQ_END) && seq == s->end) ||
	       ((r->flags & AG_SEQ_ACKED) && seq == r->maxack);
}

/*
 * Writes back what a segment of the sender (direction d) changed: the sender's side
 * field by field and the receiver's limit, so that a segment the other way on another
 * CPU, which writes the other fields, loses nothing. r_learned: the receiver's end was
 * learned from this segment's ack.
 */
static __always_inline void ag_seq_commit(struct ag_flow_value *v, __u32 d, const struct ag_flow_seq *s,
					  const struct ag_flow_seq *r, int s_learned, int r_learned)
{
	struct ag_flow_seq *vs = &v->seq[d & 1];
	struct ag_flow_seq *vr = &v->seq[(d ^ 1) & 1];

	vs->end = s->end;
	vs->maxwin = s->maxwin;
	vs->maxack = s->maxack;
	vs->flags = s->flags;
	if (s_learned) {
		vs->maxend = s->maxend;
		vs->scale = s->scale;
	}
	vr->maxend = r->maxend;
	if (r_learned) {
		vr->end = r->end;
		vr->scale = r->scale;
		vr->flags = r->flags;
	}
}

/*
 * Tracks a TCP segment that went dir on the flow v (see the top of this file); opens:
 * it came on a forward path. Returns enum ag_tcp_result; the flow changes only on
 * AG_TCP_ACCEPT.
 */
static __always_inline int ag_tcp_track_inline(struct ag_flow_value *v, const struct ag_pkt *pkt, __u32 dir,
						__u32 opens)
{
	struct ag_tcp_scratch *sc;
	struct ag_flow_seq *s, *r;
	__u8 flags, state;
	__u32 end;
	int host, opener;
	int s_learned = 0, r_learned = 0;

	if (!v || !pkt)
		return AG_TCP_OOW;
	flags = pkt->tcp_flags;
	state = v->state;
	end = ag_seq_end(pkt);
	dir &= 1;
	host = dir == AG_DIR_EGRESS;
	opener = v->opened_by == dir;
	if ((flags & AG_TCP_FLAG_SYN) && !(flags & AG_TCP_FLAG_ACK) && !(flags & AG_TCP_FLAG_RST)) {
		if (host || (opens && (state == AG_FLOW_TCP_CLOSE || state == AG_FLOW_TCP_CLOSING)))
			return AG_TCP_RESTART;
		return AG_TCP_IGNORE;
	}
	/* The checks read the flow in place; only learning a side works on copies. */
	s = &v->seq[dir & 1];
	r = &v->seq[(dir ^ 1) & 1];

	if (flags & AG_TCP_FLAG_RST) {
		if (host) {
			v->state = AG_FLOW_TCP_CLOSE;
			return AG_TCP_ACCEPT;
		}
		/* The answer to the host's SYN: it must ack it. */
		if (state == AG_FLOW_TCP_SYN_SENT && !opener && !(s->flags & AG_SEQ_SEEN)) {
			if ((flags & AG_TCP_FLAG_ACK) && (r->flags & AG_SEQ_END) && pkt->tcp_ack == r->end) {
				v->state = AG_FLOW_TCP_CLOSE;
				return AG_TCP_ACCEPT;
			}
			return AG_TCP_OOW;
		}
		/* Nothing to check it by yet (a seeded flow): the host's stack judges it. */
		if (!(s->flags & AG_SEQ_END))
			return AG_TCP_IGNORE;
		if (ag_seq_rst_exact(s, r, pkt->tcp_seq)) {
			v->state = AG_FLOW_TCP_CLOSE;
			return AG_TCP_ACCEPT;
		}
		return ag_seq_in_window(s, r, pkt->tcp_seq, pkt->tcp_seq) ? AG_TCP_IGNORE : AG_TCP_OOW;
	}

	if (!host && state == AG_FLOW_TCP_SYN_SENT) {
		if (!opener && !(s->flags & AG_SEQ_SEEN)) {
			/* The peer answers the host's SYN: a SYN-ACK of exactly that SYN. */
			if (!(flags & AG_TCP_FLAG_SYN) || !(r->flags & AG_SEQ_END) || pkt->tcp_ack != r->end)
				return AG_TCP_OOW;
		} else if (opener && !(flags & AG_TCP_FLAG_SYN)) {
			/* The peer's ACK completing its handshake: of exactly the host's SYN-ACK. */
			if (!(r->flags & AG_SEQ_SEEN) || !(flags & AG_TCP_FLAG_ACK) || pkt->tcp_ack != r->end)
				return AG_TCP_OOW;
		}
	}
	if (!(s->flags & AG_SEQ_SEEN)) {
		/* Its first segment: where the other side's acks put it, if anywhere. */
		if (!host && !(flags & AG_TCP_FLAG_SYN) && !ag_seq_in_window(s, r, pkt->tcp_seq, end))
			return AG_TCP_OOW;
		/* Learned on copies, so that a segment then found out of window changes nothing. */
		sc = bpf_map_lookup_elem(&ag_tcp_scratch, &dir);
		if (!sc)
			return AG_TCP_OOW;
		__builtin_memcpy(&sc->s, s, sizeof(sc->s));
		__builtin_memcpy(&sc->r, r, sizeof(sc->r));
		s = &sc->s;
		r = &sc->r;
		r_learned = !(r->flags & AG_SEQ_END) || (flags & AG_TCP_FLAG_SYN);
		ag_seq_learn(s, r, pkt, end);
		s_learned = 1;
	}
	if (!host && (!ag_seq_in_window(s, r, pkt->tcp_seq, end) || !ag_seq_ack_ok(s, r, pkt)))
		return AG_TCP_OOW;
	/* In place (field by field, each only on a change), or the copies written back. */
	ag_seq_update(s, r, pkt, end);
	if (s_learned)
		ag_seq_commit(v, dir, s, r, s_learned, r_learned);

	if (flags & AG_TCP_FLAG_FIN) {
		if (state != AG_FLOW_TCP_CLOSE)
			state = AG_FLOW_TCP_CLOSING;
	} else if (state == AG_FLOW_TCP_SYN_SENT && opener && !(flags & AG_TCP_FLAG_SYN) &&
		   (flags & AG_TCP_FLAG_ACK) && (r->flags & AG_SEQ_SEEN)) {
		/* The opener's ACK of the answer: the handshake is complete. */
		state = AG_FLOW_TCP_ESTABLISHED;
	}
	if (state != v->state)
		v->state = state;
	return AG_TCP_ACCEPT;
}

/*
 * ag_tcp_track_inline() as a global function, for callers with many paths of their
 * own (ag_flow()): its paths are then checked once, not once per caller's.
 */
__attribute__((noinline)) int ag_tcp_track(struct ag_flow_value *v, const struct ag_pkt *pkt, __u32 dir,
					   __u32 opens)
{
	return ag_tcp_track_inline(v, pkt, dir, opens);
}

/*
 * Starts the flow v again from a bare SYN that went dir (a new connection on its
 * ports): only the SYN's sender is known.
 */
static __always_inline void ag_tcp_start(struct ag_flow_value *v, const struct ag_pkt *pkt, __u32 dir)
{
	__builtin_memset(v->seq, 0, sizeof(v->seq));
	ag_seq_learn(&v->seq[dir & 1], &v->seq[(dir ^ 1) & 1], pkt, ag_seq_end(pkt));
	v->state = AG_FLOW_TCP_SYN_SENT;
	v->opened_by = dir;
}

/* Both sides have sent something the flow checked or trusts, past the handshake. */
static __always_inline int ag_tcp_assured(const struct ag_flow_value *v)
{
	return v->state != AG_FLOW_TCP_SYN_SENT && (v->seq[0].flags & AG_SEQ_SEEN) &&
	       (v->seq[1].flags & AG_SEQ_SEEN);
}

#endif /* ALLOWGATE_TCPWIN_H */
