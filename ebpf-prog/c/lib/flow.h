/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow.h - connection tracking: the flows this host opened under an egress rule or
 * let in under an ingress rule, so that a return path answers only those.
 *
 * A packet a rule's forward path allows opens (or refreshes) its flow; a packet that
 * only a rule's return path would allow passes only when its flow is tracked and
 * fresh. The policy is still asked first for every packet: a flow never lets through
 * what the generation in force does not allow, so turning a region off cuts the flows
 * to the addresses only it listed at their next packet. TCP segments must also lie in
 * their flow's sequence window (lib/tcpwin.h).
 *
 * Two tables per family, so that what anyone can spoof never pushes out what a peer
 * proved. A new flow goes into ag_flows_new_*, an array of buckets (a keyed hash picks
 * the bucket, a new flow takes its oldest way): inserting costs no lock and no
 * allocation, and a flood of spoofed SYNs or datagrams only churns its own kind. A flow
 * that is *assured* (its TCP handshake completed, each side's number checked; UDP and
 * other protocols answered and then used once more) moves to ag_flows_*, an LRU hash of
 * `[state] max_flows`, which only assured flows (and the connections the agent seeds)
 * enter.
 *
 * Who writes what: the programs write both tables (from packets the policy lets
 * through), the agent seeds and migrates (lib.rs's ABI, dataplane/flows.rs). An
 * off-path sender can fill the unassured table, and push out a flow there (a
 * handshake in progress, a DNS query's flow, a DHCP exchange) by hitting its bucket
 * often enough; it cannot make a flow assured, nor move an assured one's state or
 * window without the numbers in it.
 *
 * Related traffic: an ICMP error passes only when the header it quotes belongs to a
 * tracked flow; a DHCP reply only with the transaction id of the host's own request
 * (the id is the flow's remote address: the server is not known before it answers),
 * and it neither refreshes nor answers the flow; a DNS answer from a configured
 * resolver only to the port and id of a recorded query (lib/dns.h). Non-first
 * fragments: lib/frag.h.
 *
 * A filter of the remote addresses that have an assured flow (ag_flow_peers) stands
 * before the LRU hash: a clear bit means no assured flow there, so the packets of a
 * flood from elsewhere, or spoofed from a catalog peer the host has no connection
 * with, pay an array read instead of a lookup that misses. Bits are set (atomically)
 * before a flow enters the table; the agent rebuilds the filter from the table now and
 * then (two generations: the programs set bits in both while it does), so bits of
 * flows long gone don't pile up.
 *
 * Times are CLOCK_MONOTONIC_COARSE (bpf_ktime_get_coarse_ns(), read once per jiffy
 * per CPU: ag_flow_now()): a tick's resolution is plenty for idle timeouts of
 * seconds, and the agent reads the same clock when it seeds flows.
 *
 * Here: the assured tables and the operations on a packet's flow. The tuples, keys,
 * hash and clock are lib/flowkey.h's, the peer filter lib/flowpeers.h's, the
 * unassured tables lib/flownew.h's, the window rules lib/tcpwin.h's.
 */
#ifndef ALLOWGATE_FLOW_H
#define ALLOWGATE_FLOW_H

#include "common.h"
#include "stats.h"
#include "policy.h"
#include "essentials.h"
#include "dns.h"
#include "tcpwin.h"
#include "flowkey.h"
#include "flowpeers.h"
#include "flownew.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AG_FLOW_MAX);
	__type(key, struct ag_flow_v4_key);
	__type(value, struct ag_flow_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flows_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AG_FLOW_MAX);
	__type(key, struct ag_flow_v6_key);
	__type(value, struct ag_flow_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flows_v6 SEC(".maps");

enum ag_flow_op {
	AG_FLOW_OP_OPEN = 0,	/* a forward path allowed it: track (or refresh) its flow */
	AG_FLOW_OP_RETURN = 1,	/* only a return path would allow it: its flow must be tracked */
	AG_FLOW_OP_RELATED = 2,	/* an ICMP error: the flow it quotes must be tracked */
	AG_FLOW_OP_DHCP = 3,	/* the DHCP client: a request opens, a reply needs it */
};

/*
 * Or'ed into the op. TABLES: the generation's tables (not a learned address, which may
 * expire within the generation) allowed the packet, so the flow may remember it for
 * the generation. NO_ASSURED: the caller already knows there is no assured flow (the
 * peer filter said so, or ag_flow_remembered() looked), so the LRU hash is not asked.
 */
#define AG_FLOW_F_TABLES	0x10
#define AG_FLOW_F_NO_ASSURED	0x20

/* What ag_flow() and ag_flow_remembered() make of a packet. */
enum ag_flow_result {
	AG_FLOW_NONE = 0,	/* no tracked flow (ag_flow_remembered(): ask the tables) */
	AG_FLOW_PASS = 1,
	AG_FLOW_OOW = 2,	/* a TCP segment out of its flow's window: changed nothing */
	AG_FLOW_NOT_ASSURED = 3, /* ag_flow_remembered(): the remote has no assured flow at all */
};

/*
 * Moves a flow that is not TCP on by a packet that went dir. Returns 1 when the flow
 * has now earned being assured: answered, and then used once more.
 */
static __always_inline int ag_flow_other(struct ag_flow_value *v, __u32 dir)
{
	if (v->flags & AG_FLOW_F_ANSWERED)
		return 1;
	if (v->opened_by != dir) {
		v->flags |= AG_FLOW_F_ANSWERED;
		if (v->state == AG_FLOW_UDP)
			v->state = AG_FLOW_UDP_STREAM;
	}
	return 0;
}

/*
 * Moves a tracked flow on by a packet that went dir: a TCP segment if it is in window.
 * Returns AG_FLOW_PASS (refreshed unless ignored) or AG_FLOW_OOW (nothing changed);
 * *assure is set when the flow has now earned being assured.
 */
static __always_inline int ag_flow_advance_how(struct ag_flow_value *v, const struct ag_pkt *pkt,
					       __u32 dir, int opens, __u64 now, int *assure, int inline_tcp)
{
	int res;

	*assure = 0;
	if (pkt->l4proto == AG_IPPROTO_TCP) {
		if (inline_tcp)
			res = ag_tcp_track_inline(v, pkt, dir, opens);
		else
			res = ag_tcp_track(v, pkt, dir, opens);
		if (res == AG_TCP_OOW)
			return AG_FLOW_OOW;
		if (res == AG_TCP_IGNORE)
			return AG_FLOW_PASS;
		if (res == AG_TCP_RESTART)
			ag_tcp_start(v, pkt, dir);
		*assure = ag_tcp_assured(v);
	} else {
		*assure = ag_flow_other(v, dir);
	}
	/* Written only on a change: most packets of a flow find it as it is. */
	if (v->seen_ns != now)
		v->seen_ns = now;
	return AG_FLOW_PASS;
}

static __always_inline int ag_flow_advance(struct ag_flow_value *v, const struct ag_pkt *pkt,
					   __u32 dir, int opens, __u64 now, int *assure)
{
	return ag_flow_advance_how(v, pkt, dir, opens, now, assure, 0);
}

/* The assured flow of key, or NULL. */
static __always_inline struct ag_flow_value *ag_flow_lookup_assured(__u8 family, union ag_flow_key *key)
{
	struct ag_flow_value *v;
	void *map;

	/* Each call with its own barriers, or clang merges the two (policy.h says why not). */
	if (family == 4) {
		map = &ag_flows_v4;
		barrier_var(map);
		v = bpf_map_lookup_elem(map, &key->v4);
		barrier_var(v);
		return v;
	}
	map = &ag_flows_v6;
	barrier_var(map);
	v = bpf_map_lookup_elem(map, &key->v6);
	barrier_var(v);
	return v;
}

/*
 * Moves the unassured flow in sc's way to the assured table: its peer is noted first,
 * then it goes in, then its way is freed. If the table refuses it, it stays. A global
 * function: checked once, with a stack of its own.
 */
__attribute__((noinline)) int ag_flow_promote(struct ag_flow_scratch *sc)
{
	struct ag_flow_value moved;
	struct ag_flow_value *v;
	void *wkey = NULL;
	__u32 *check = NULL, *stamp = NULL;
	long err;

	if (!sc)
		return 0;
	v = ag_flow_way_value(sc->t.family, &sc->way, &wkey, &check, &stamp);
	if (!v || !check)
		return 0;
	__builtin_memcpy(&moved, v, sizeof(moved));
	moved.flags |= AG_FLOW_F_ASSURED;
	ag_flow_peer_note(sc->t.family, &sc->t.remote);
	if (sc->t.family == 4)
		err = bpf_map_update_elem(&ag_flows_v4, &sc->key.v4, &moved, BPF_ANY);
	else
		err = bpf_map_update_elem(&ag_flows_v6, &sc->key.v6, &moved, BPF_ANY);
	if (err)
		return 0;
	*check = 0;
	ag_count_misc(AG_MISC_FLOW_INSERTS);
	return 1;
}

/* Removes the expired assured flow of key. */
static __always_inline void ag_flow_remove(__u8 family, union ag_flow_key *key)
{
	if (family == 4)
		bpf_map_delete_elem(&ag_flows_v4, &key->v4);
	else
		bpf_map_delete_elem(&ag_flows_v6, &key->v6);
	ag_count_misc(AG_MISC_FLOW_REMOVED);
}

/* What the tables allowed, remembered for this generation (an assured flow only). */
static __always_inline void ag_flow_remember(struct ag_flow_value *v, const struct ag_gen_config *cfg,
					     __u32 ok)
{
	if (!ok)
		return;
	if (v->tag != cfg->flow_tag) {
		v->allowed = ok;
		v->tag = cfg->flow_tag;
	} else if (!(v->allowed & ok)) {
		v->allowed |= ok;
	}
}

/*
 * Before the tables (the peer filter said its remote may have one): does the packet's
 * assured flow remember that the tables of slot's
 * generation allow its packets going dir? Then they need not be asked again: the flow
 * moves on and AG_FLOW_PASS (or AG_FLOW_OOW: a segment out of window) comes back.
 * AG_FLOW_NOT_ASSURED: no assured flow of these ports (ag_flow() need not look again).
 * AG_FLOW_NONE: ask the tables (expired, another generation, a way not remembered).
 * A global function, as ag_flow().
 */
__attribute__((noinline)) int ag_flow_remembered(const struct ag_pkt *pkt, __u32 dir, __u32 slot)
{
	const struct ag_gen_config *cfg;
	union ag_flow_key key;
	struct ag_flow_value *v;
	__u64 now;
	__u32 ok;
	int assure;

	if (!pkt || pkt->frag == AG_FRAG_LATER)
		return AG_FLOW_NONE;
	dir &= 1;
	cfg = bpf_map_lookup_elem(&ag_gen_cfg, &slot);
	if (!cfg)
		return AG_FLOW_NONE;
	/* The caller asked the peer filter already (ag_verdict()). */
	ag_flow_key_of_pkt(pkt, dir, &key);
	v = ag_flow_lookup_assured(pkt->family, &key);
	if (!v)
		return AG_FLOW_NOT_ASSURED;
	if (v->tag != cfg->flow_tag)
		return AG_FLOW_NONE;
	ok = v->allowed;
	if (!((ok & AG_FLOW_OK_FORWARD(dir)) || ((ok & AG_FLOW_OK_RETURN(dir)) && pkt->return_ok)))
		return AG_FLOW_NONE;
	now = ag_flow_now();
	if (ag_flow_expired(v, cfg, now))
		return AG_FLOW_NONE;
	/* The hot path: the segment checks inlined, not a call. */
	return ag_flow_advance_how(v, pkt, dir, (ok & AG_FLOW_OK_FORWARD(dir)) != 0, now, &assure, 1);
}

/*
 * Tracks the packet under op, in slot's timeouts: returns enum ag_flow_result,
 * AG_FLOW_PASS when the packet may pass (it opened or belongs to a tracked flow; always
 * for an OPEN, unless its segment is out of window), AG_FLOW_NONE when its flow is not
 * tracked. A global function: the verifier checks it once, whatever the caller's path.
 */
__attribute__((noinline)) int ag_flow(const struct ag_pkt *pkt, __u32 dir, __u32 op, __u32 slot)
{
	struct ag_flow_scratch *sc;
	struct ag_flow_value *v;
	const struct ag_gen_config *cfg;
	__u64 now;
	__u32 tables, ok, skip_assured;
	__u8 family, state;
	int opens, res, assure;

	if (!pkt)
		return AG_FLOW_NONE;
	dir &= 1;
	family = pkt->family;
	cfg = bpf_map_lookup_elem(&ag_gen_cfg, &slot);
	if (!cfg)
		return AG_FLOW_NONE;
	sc = bpf_map_lookup_elem(&ag_flow_scratch, &dir);
	if (!sc)
		return AG_FLOW_NONE;
	__builtin_memset(&sc->t, 0, sizeof(sc->t));
	tables = op & AG_FLOW_F_TABLES;
	skip_assured = op & AG_FLOW_F_NO_ASSURED;
	op &= 0xf;

	switch (op) {
	case AG_FLOW_OP_OPEN:
	case AG_FLOW_OP_RETURN:
		ag_flow_tuple_of(pkt, dir, &sc->t);
		/* A resolver's answer: to a query this host sent, too. */
		if (op == AG_FLOW_OP_RETURN && dir == AG_DIR_INGRESS && !ag_dns_answer_expected(pkt))
			return AG_FLOW_NONE;
		opens = op == AG_FLOW_OP_OPEN;
		break;
	case AG_FLOW_OP_RELATED:
		if (!ag_flow_tuple_quoted(pkt, dir, &sc->t))
			return AG_FLOW_NONE;
		opens = 0;
		break;
	case AG_FLOW_OP_DHCP:
		if (!ag_flow_tuple_dhcp(pkt, &sc->t))
			return dir == AG_DIR_EGRESS ? AG_FLOW_PASS : AG_FLOW_NONE;
		/* A DHCP exchange never earns an assured flow. */
		skip_assured = 1;
		opens = dir == AG_DIR_EGRESS;
		break;
	default:
		return AG_FLOW_NONE;
	}
	sc->t.family = family;
	ag_flow_key_of(family, &sc->t, &sc->key);

	/*
	 * What the tables allowed, remembered for this generation: the way it went, and
	 * for a return path, not a resolver's answer (each of which must match its query).
	 */
	ok = 0;
	if (tables && op == AG_FLOW_OP_OPEN)
		ok = AG_FLOW_OK_FORWARD(dir);
	if (tables && op == AG_FLOW_OP_RETURN &&
	    !(dir == AG_DIR_INGRESS && sc->t.proto == AG_IPPROTO_UDP && sc->t.rport == AG_DNS_PORT))
		ok = AG_FLOW_OK_RETURN(dir);

	v = NULL;
	if (!skip_assured && ag_flow_peer_maybe(family, &sc->t.remote))
		v = ag_flow_lookup_assured(family, &sc->key);
	now = 0;
	if (v) {
		now = ag_flow_now();
		/* Expired: gone, and a packet that opens starts it again unassured. */
		if (ag_flow_expired(v, cfg, now)) {
			ag_flow_remove(family, &sc->key);
			if (!opens)
				return AG_FLOW_NONE;
		} else {
			/* An ICMP error tells of a flow; it does not move it on. */
			if (op == AG_FLOW_OP_RELATED)
				return AG_FLOW_PASS;
			res = ag_flow_advance(v, pkt, dir, opens, now, &assure);
			if (res == AG_FLOW_PASS)
				ag_flow_remember(v, cfg, ok);
			return res;
		}
	}

	/* Only a packet that opens needs the time (and a way) before a flow is found. */
	if (opens && !now)
		now = ag_flow_now();
	ag_flow_new_find(&sc->t, &sc->key, slot, opens ? now : 0, &sc->way);
	if (sc->way.found) {
		void *wkey = NULL;
		__u32 *check = NULL, *stamp = NULL;

		v = ag_flow_way_value(family, &sc->way, &wkey, &check, &stamp);
		if (!v || !stamp)
			return opens ? AG_FLOW_PASS : AG_FLOW_NONE;
		if (!now)
			now = ag_flow_now();
		if (!ag_flow_expired(v, cfg, now)) {
			if (op == AG_FLOW_OP_RELATED)
				return AG_FLOW_PASS;
			/* A DHCP reply only shows the exchange is fresh: it neither answers nor refreshes it. */
			if (op == AG_FLOW_OP_DHCP && !opens)
				return AG_FLOW_PASS;
			res = ag_flow_advance(v, pkt, dir, opens, now, &assure);
			if (res != AG_FLOW_PASS)
				return res;
			if (*stamp != ag_flow_stamp(now))
				*stamp = ag_flow_stamp(now);
			ag_flow_remember(v, cfg, ok);
			if (assure)
				ag_flow_promote(sc);
			return AG_FLOW_PASS;
		}
		if (!opens)
			return AG_FLOW_NONE;
		/* Expired: starts again as new, in its own way. */
		sc->way.found = 0;
		sc->way.live = 0;
	}
	if (!opens)
		return AG_FLOW_NONE;

	state = ag_flow_first_state(&sc->t, pkt->tcp_flags);
	if (state == AG_FLOW_STATES)
		return AG_FLOW_PASS;
	ag_flow_new_put(&sc->way, &sc->t, &sc->key, pkt, dir, state, now);
	if (ok) {
		void *wkey = NULL;
		__u32 *check = NULL, *stamp = NULL;

		v = ag_flow_way_value(family, &sc->way, &wkey, &check, &stamp);
		if (v)
			ag_flow_remember(v, cfg, ok);
	}
	return AG_FLOW_PASS;
}

/*
 * ag_flow() for a packet that only a return path allows (op AG_FLOW_OP_RETURN), without
 * the call when the caller knows there is no assured flow (AG_FLOW_F_NO_ASSURED) and the
 * unassured bucket holds no way of its check: no flow, as ag_flow() would find. A flood
 * of answers spoofed from a catalog peer pays an inlined hash and one bucket's checks.
 */
static __always_inline int ag_flow_answer(const struct ag_pkt *pkt, __u32 dir, __u32 op, __u32 slot)
{
	if ((op & AG_FLOW_F_NO_ASSURED) && !ag_flow_new_maybe(pkt, dir))
		return AG_FLOW_NONE;
	return ag_flow(pkt, dir, op, slot);
}

#endif /* ALLOWGATE_FLOW_H */
