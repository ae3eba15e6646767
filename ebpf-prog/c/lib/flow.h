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
 */
#ifndef ALLOWGATE_FLOW_H
#define ALLOWGATE_FLOW_H

#include "common.h"
#include "stats.h"
#include "policy.h"
#include "essentials.h"
#include "dns.h"
#include "tcpwin.h"

/* Load-time settings (the agent's, from `[state] max_flows`). */
volatile const __u64 flow_hash_key = 0;			/* the key of the flow hash */
volatile const __u32 flow_new_mask = AG_FLOW_NEW_BUCKETS - 1;	/* buckets of ag_flows_new_* - 1 */
volatile const __u32 flow_peer_words = AG_FLOW_PEER_WORDS;	/* of one filter generation, a power of two */

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

/* Mappable, so that the agent counts and migrates them without a syscall per bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_FLOW_NEW_BUCKETS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ag_flow_bucket_v4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flows_new_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_FLOW_NEW_BUCKETS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ag_flow_bucket_v6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flows_new_v6 SEC(".maps");

/*
 * flow_peer_words entries, each a word of both generations side by side, so that the
 * check reads one entry; mappable for the agent's rebuild.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_FLOW_PEER_WORDS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ag_flow_peer_word);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flow_peers SEC(".maps");

/* ag_flow_ctl[0]: written by the agent only (abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ag_flow_ctl);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flow_ctl SEC(".maps");

/*
 * The coarse clock, read once per jiffy per CPU: bpf_ktime_get_coarse_ns() costs a
 * helper call and a seqcount read on every packet (~18 ns here), bpf_jiffies64() one
 * load. Ticks are the coarse clock's resolution anyway. Scratch, not pinned.
 */
struct ag_flow_clock {
	__u64 jiffies;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ag_flow_clock);
} ag_flow_clock SEC(".maps");

/* CLOCK_MONOTONIC_COARSE now, to the tick. */
static __always_inline __u64 ag_flow_now(void)
{
	struct ag_flow_clock *clock;
	__u32 zero = 0;
	__u64 jiffies = bpf_jiffies64();

	clock = bpf_map_lookup_elem(&ag_flow_clock, &zero);
	if (!clock)
		return bpf_ktime_get_coarse_ns();
	if (clock->jiffies != jiffies) {
		clock->ns = bpf_ktime_get_coarse_ns();
		clock->jiffies = jiffies;
	}
	return clock->ns;
}

/*
 * The filter bit of a remote address: a multiplicative hash of its (folded) words, its
 * high half masked to the generation's bits. dataplane/flows.rs computes the same.
 */
static __always_inline __u32 ag_flow_peer_bit(__u8 family, const union ag_addr *remote)
{
	__u32 folded = remote->v4;

	if (family == 6)
		folded = remote->v6[0] ^ remote->v6[1] ^ remote->v6[2] ^ remote->v6[3];
	return (__u32)(((__u64)folded * 0x9e3779b97f4a7c15ULL) >> 32) & (flow_peer_words * 64 - 1);
}

/*
 * May remote have an assured flow? 0 means surely not. Either generation will do: the
 * one the programs write holds every assured flow's bit, the other only adds stale
 * ones, which cost a lookup, no verdict. So no generation needs reading first.
 */
static __always_inline int ag_flow_peer_maybe(__u8 family, const union ag_addr *remote)
{
	struct ag_flow_peer_word *w;
	__u32 bit = ag_flow_peer_bit(family, remote);
	__u32 index = bit / 64;

	w = bpf_map_lookup_elem(&ag_flow_peers, &index);
	/* Without a filter, every address may: the tables decide. */
	return !w || ((w->gen[0] | w->gen[1]) & (1ULL << (bit % 64)));
}

/* Notes that remote has an assured flow, before the flow goes in (see the top). */
static __always_inline void ag_flow_peer_note(__u8 family, const union ag_addr *remote)
{
	const struct ag_flow_ctl *ctl;
	struct ag_flow_peer_word *w;
	__u32 zero = 0, bit, index, gen;
	__u64 mask;

	ctl = bpf_map_lookup_elem(&ag_flow_ctl, &zero);
	if (!ctl)
		return;
	bit = ag_flow_peer_bit(family, remote);
	index = bit / 64;
	mask = 1ULL << (bit % 64);
	w = bpf_map_lookup_elem(&ag_flow_peers, &index);
	if (!w)
		return;
	gen = ctl->peer_gen & 1;
	if (!(w->gen[gen] & mask))
		__sync_fetch_and_or(&w->gen[gen], mask);
	if (ctl->peer_building)
		__sync_fetch_and_or(&w->gen[gen ^ 1], mask);
}

enum ag_flow_op {
	AG_FLOW_OP_OPEN = 0,	/* a forward path allowed it: track (or refresh) its flow */
	AG_FLOW_OP_RETURN = 1,	/* only a return path would allow it: its flow must be tracked */
	AG_FLOW_OP_RELATED = 2,	/* an ICMP error: the flow it quotes must be tracked */
	AG_FLOW_OP_DHCP = 3,	/* the DHCP client: a request opens, a reply needs it */
};

/*
 * Or'ed into the op. TABLES: the generation's tables (not a learned address, which may
 * expire within the generation) allowed the packet, so the flow may remember it for
 * the generation. NO_ASSURED: the caller already knows the remote has no assured flow
 * (ag_flow_remembered() looked), so the LRU hash is not asked again.
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

/* A flow from this host's side, whichever way the packet went. */
struct ag_flow_tuple {
	union ag_addr local;
	union ag_addr remote;
	__u16 lport;
	__u16 rport;
	__u8 proto;
	__u8 family;	/* 4 or 6 */
};

/*
 * The ports of a flow of proto: TCP and UDP keep theirs; the family's ICMP keys an echo
 * by its identifier (carried in lport); other protocols have none.
 */
static __always_inline void ag_flow_ports(struct ag_flow_tuple *t, __u8 family, __u16 icmp_id)
{
	if ((family == 4 && t->proto == AG_IPPROTO_ICMP) ||
	    (family == 6 && t->proto == AG_IPPROTO_ICMPV6)) {
		t->lport = icmp_id;
		t->rport = 0;
	} else if (t->proto != AG_IPPROTO_TCP && t->proto != AG_IPPROTO_UDP) {
		t->lport = 0;
		t->rport = 0;
	}
}

/* The flow of a packet that went dir: egress leaves from the local side. */
static __always_inline void ag_flow_tuple_of(const struct ag_pkt *pkt, __u32 dir,
					     struct ag_flow_tuple *t)
{
	if (dir == AG_DIR_EGRESS) {
		t->local = pkt->saddr;
		t->remote = pkt->daddr;
		t->lport = pkt->sport;
		t->rport = pkt->dport;
	} else {
		t->local = pkt->daddr;
		t->remote = pkt->saddr;
		t->lport = pkt->dport;
		t->rport = pkt->sport;
	}
	t->proto = pkt->l4proto;
	ag_flow_ports(t, pkt->family, pkt->icmp_id);
}

/*
 * The flow an ICMP error that went dir quotes. The quoted packet went the other way:
 * an error coming in quotes what this host sent. Returns 0 when the error names no
 * flow of this host: nothing quoted, or its local address is not the error's.
 */
static __always_inline int ag_flow_tuple_quoted(const struct ag_pkt *pkt, __u32 dir,
						struct ag_flow_tuple *t)
{
	const union ag_addr *outer_local;

	if (!pkt->q_ok)
		return 0;
	if (dir == AG_DIR_EGRESS) {
		/* The host answers a packet it received: that packet's destination is local. */
		t->local = pkt->q_daddr;
		t->remote = pkt->q_saddr;
		t->lport = pkt->q_dport;
		t->rport = pkt->q_sport;
		outer_local = &pkt->saddr;
	} else {
		t->local = pkt->q_saddr;
		t->remote = pkt->q_daddr;
		t->lport = pkt->q_sport;
		t->rport = pkt->q_dport;
		outer_local = &pkt->daddr;
	}
	t->proto = pkt->q_proto;
	/* A quoted echo carries its identifier in both ports. */
	ag_flow_ports(t, pkt->family, pkt->q_sport);
	if (pkt->family == 4)
		return outer_local->v4 == t->local.v4;
	return outer_local->v6[0] == t->local.v6[0] && outer_local->v6[1] == t->local.v6[1] &&
	       outer_local->v6[2] == t->local.v6[2] && outer_local->v6[3] == t->local.v6[3];
}

/*
 * The DHCP client's exchange of the packet's family: local address 0, the transaction
 * id as the remote address. 0 when the packet's id could not be read.
 */
static __always_inline int ag_flow_tuple_dhcp(const struct ag_pkt *pkt, struct ag_flow_tuple *t)
{
	if (!pkt->has_xid)
		return 0;
	t->remote.v4 = bpf_htonl(pkt->dhcp_xid);
	t->proto = AG_IPPROTO_UDP;
	t->lport = pkt->family == 4 ? AG_DHCP_CLIENT_PORT : AG_DHCPV6_CLIENT_PORT;
	t->rport = pkt->family == 4 ? AG_DHCP_SERVER_PORT : AG_DHCPV6_SERVER_PORT;
	return 1;
}

/* The state a flow starts in, or AG_FLOW_STATES when the packet opens none (a RST). */
static __always_inline __u8 ag_flow_first_state(const struct ag_flow_tuple *t, __u8 tcp_flags)
{
	if (t->proto == AG_IPPROTO_TCP) {
		if (tcp_flags & AG_TCP_FLAG_RST)
			return AG_FLOW_STATES;
		if ((tcp_flags & AG_TCP_FLAG_SYN) && !(tcp_flags & AG_TCP_FLAG_ACK))
			return AG_FLOW_TCP_SYN_SENT;
		/* Picked up mid-stream, as conntrack does by default. */
		return AG_FLOW_TCP_ESTABLISHED;
	}
	if (t->proto == AG_IPPROTO_UDP)
		return AG_FLOW_UDP;
	if (t->proto == AG_IPPROTO_ICMP || t->proto == AG_IPPROTO_ICMPV6)
		return AG_FLOW_ICMP;
	return AG_FLOW_OTHER;
}

/* Has v been idle longer than its state allows at now? */
static __always_inline int ag_flow_expired(const struct ag_flow_value *v,
					   const struct ag_gen_config *cfg, __u64 now)
{
	__u64 timeout = (__u64)cfg->flow_timeout_s[v->state & (AG_FLOW_STATES - 1)] * AG_NSEC_PER_SEC;

	/* Seen "after" now (a seeded time read a tick ahead): fresh, not a huge age. */
	return (__s64)(now - v->seen_ns) > (__s64)timeout;
}

/*
 * A new flow's value from its first packet, which went dir. A TCP segment teaches the
 * flow its sender's side (a SYN its start, any other segment mid-stream).
 */
static __always_inline void ag_flow_fresh(struct ag_flow_value *v, const struct ag_pkt *pkt,
					  __u32 dir, __u8 state, __u64 now)
{
	__builtin_memset(v, 0, sizeof(*v));
	v->state = state;
	v->opened_by = dir;
	v->seen_ns = now;
	if (pkt->l4proto == AG_IPPROTO_TCP) {
		if (state == AG_FLOW_TCP_SYN_SENT)
			ag_tcp_start(v, pkt, dir);
		else
			ag_tcp_track(v, pkt, dir, 1);
	}
}

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

/* One key at a time: the two families share the stack. Aligned for word compares. */
union ag_flow_key {
	struct ag_flow_v4_key v4;
	struct ag_flow_v6_key v6;
	__u64 _align;
};

_Static_assert(sizeof(struct ag_flow_v4_key) == 4 * 4 && sizeof(struct ag_flow_v6_key) == 10 * 4,
	       "flow keys compare as 32-bit words");

/* Whole keys compared word by word (a and b 4-byte aligned). */
static __always_inline int ag_flow_key_eq_v4(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

static __always_inline int ag_flow_key_eq_v6(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;
	__u32 diff = 0;
	__u32 i;

	for (i = 0; i < 10; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

/* t as the tables key it. */
static __always_inline void ag_flow_key_of(__u8 family, const struct ag_flow_tuple *t,
					   union ag_flow_key *key)
{
	if (family == 4) {
		__builtin_memset(&key->v4, 0, sizeof(key->v4));
		__builtin_memcpy(key->v4.local, &t->local.v4, sizeof(key->v4.local));
		__builtin_memcpy(key->v4.remote, &t->remote.v4, sizeof(key->v4.remote));
		key->v4.lport = t->lport;
		key->v4.rport = t->rport;
		key->v4.proto = t->proto;
	} else {
		__builtin_memset(&key->v6, 0, sizeof(key->v6));
		__builtin_memcpy(key->v6.local, t->local.bytes, sizeof(key->v6.local));
		__builtin_memcpy(key->v6.remote, t->remote.bytes, sizeof(key->v6.remote));
		key->v6.lport = t->lport;
		key->v6.rport = t->rport;
		key->v6.proto = t->proto;
	}
}

/*
 * The table key of the packet's own flow straight from the packet (ag_flow_tuple_of()
 * and ag_flow_key_of() in one step, without the tuple): the hot path's.
 */
static __always_inline void ag_flow_key_of_pkt(const struct ag_pkt *pkt, __u32 dir, union ag_flow_key *key)
{
	const union ag_addr *local = dir == AG_DIR_EGRESS ? &pkt->saddr : &pkt->daddr;
	const union ag_addr *remote = dir == AG_DIR_EGRESS ? &pkt->daddr : &pkt->saddr;
	__u16 lport = dir == AG_DIR_EGRESS ? pkt->sport : pkt->dport;
	__u16 rport = dir == AG_DIR_EGRESS ? pkt->dport : pkt->sport;
	__u8 proto = pkt->l4proto;

	if ((pkt->family == 4 && proto == AG_IPPROTO_ICMP) || (pkt->family == 6 && proto == AG_IPPROTO_ICMPV6)) {
		lport = pkt->icmp_id;
		rport = 0;
	} else if (proto != AG_IPPROTO_TCP && proto != AG_IPPROTO_UDP) {
		lport = 0;
		rport = 0;
	}
	if (pkt->family == 4) {
		__builtin_memcpy(key->v4.local, &local->v4, sizeof(key->v4.local));
		__builtin_memcpy(key->v4.remote, &remote->v4, sizeof(key->v4.remote));
		key->v4.lport = lport;
		key->v4.rport = rport;
		key->v4.proto = proto;
		__builtin_memset(key->v4._pad, 0, sizeof(key->v4._pad));
	} else {
		__builtin_memcpy(key->v6.local, local->bytes, sizeof(key->v6.local));
		__builtin_memcpy(key->v6.remote, remote->bytes, sizeof(key->v6.remote));
		key->v6.lport = lport;
		key->v6.rport = rport;
		key->v6.proto = proto;
		__builtin_memset(key->v6._pad, 0, sizeof(key->v6._pad));
	}
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

/* One step of the keyed flow hash (dataplane/flows.rs computes the same). */
static __always_inline __u64 ag_flow_mix(__u64 h, __u64 w)
{
	h ^= w;
	h *= 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 31);
}

/* The keyed hash of t: its low bits pick the bucket, its high half is the check. */
static __always_inline __u64 ag_flow_hash(__u8 family, const struct ag_flow_tuple *t)
{
	__u64 ports = t->lport | ((__u64)t->rport << 16) | ((__u64)t->proto << 32);
	__u64 h = flow_hash_key;

	if (family == 4) {
		h = ag_flow_mix(h, t->local.v4 | ((__u64)t->remote.v4 << 32));
	} else {
		h = ag_flow_mix(h, t->local.v6[0] | ((__u64)t->local.v6[1] << 32));
		h = ag_flow_mix(h, t->local.v6[2] | ((__u64)t->local.v6[3] << 32));
		h = ag_flow_mix(h, t->remote.v6[0] | ((__u64)t->remote.v6[1] << 32));
		h = ag_flow_mix(h, t->remote.v6[2] | ((__u64)t->remote.v6[3] << 32));
	}
	return ag_flow_mix(h, ports);
}

static __always_inline __u32 ag_flow_check_of(__u64 h)
{
	return (__u32)(h >> 32) | 1;
}

/* A way of an unassured bucket, found or chosen: scalars, so a global function may fill it. */
struct ag_flow_way {
	__u32 bucket;
	__u32 check;
	__u32 way;	/* < AG_FLOW_NEW_WAYS */
	__u8 found;	/* 1: the way holds the flow of the key; 0: the way to put it in */
	__u8 live;	/* !found: the way holds a flow that has not expired */
	__u8 ok;	/* 0: the bucket could not be read */
	__u8 _pad;
};

/*
 * A flow's tuple, key and way while ag_flow() and ag_flow_remembered() work on them:
 * off their stack, which the verifier's 512 bytes per call chain can't spare, per CPU
 * and per direction (a packet's calls run one after the other).
 */
struct ag_flow_scratch {
	struct ag_flow_tuple t;
	union ag_flow_key key;
	struct ag_flow_way way;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AG_DIR_MAX);
	__type(key, __u32);
	__type(value, struct ag_flow_scratch);
} ag_flow_scratch SEC(".maps");

/* The stamp of a time: what a bucket's header keeps to find its oldest way. */
static __always_inline __u32 ag_flow_stamp(__u64 now)
{
	return (__u32)(now >> 20);
}

/*
 * Lookup only (a packet that opens nothing): is t's flow (keyed key) in its bucket?
 * The same search as ag_flow_new_find() without picking a way, inlined: the path of a
 * spoofed answer with no flow, which a flood takes, pays no call for it.
 */
static __always_inline void ag_flow_new_probe(const struct ag_flow_tuple *t, const union ag_flow_key *key,
					      struct ag_flow_way *out)
{
	__u64 h = ag_flow_hash(t->family, t);
	__u32 i;

	out->bucket = (__u32)h & flow_new_mask;
	out->check = ag_flow_check_of(h);
	out->way = 0;
	out->found = 0;
	out->live = 0;
	out->ok = 0;
	if (t->family == 4) {
		struct ag_flow_bucket_v4 *b = bpf_map_lookup_elem(&ag_flows_new_v4, &out->bucket);

		if (!b)
			return;
		out->ok = 1;
		for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
			if (b->check[i] == out->check && ag_flow_key_eq_v4(&b->way[i].key, &key->v4)) {
				out->way = i;
				out->found = 1;
				return;
			}
		}
	} else {
		struct ag_flow_bucket_v6 *b = bpf_map_lookup_elem(&ag_flows_new_v6, &out->bucket);

		if (!b)
			return;
		out->ok = 1;
		for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
			if (b->check[i] == out->check && ag_flow_key_eq_v6(&b->way[i].key, &key->v6)) {
				out->way = i;
				out->found = 1;
				return;
			}
		}
	}
}

/*
 * The way of t's flow (keyed key) in its bucket: the header's checks first (one cache
 * line), a whole key compare only where a check matches (a torn way matches nothing).
 * With now != 0 and no such flow, it also picks the way a new one takes: an empty one,
 * else the oldest, and says whether that one still lives under slot's timeouts. A
 * global function: checked once.
 */
__attribute__((noinline)) int ag_flow_new_find(const struct ag_flow_tuple *t, const union ag_flow_key *key,
					       __u32 slot, __u64 now, struct ag_flow_way *out)
{
	const struct ag_gen_config *cfg;
	const struct ag_flow_value *victim;
	__u32 i, family, age, oldest = 0, stamp;
	__u64 h;

	if (!t || !key || !out)
		return 0;
	__builtin_memset(out, 0, sizeof(*out));
	family = t->family;
	h = ag_flow_hash(family, t);
	out->bucket = (__u32)h & flow_new_mask;
	out->check = ag_flow_check_of(h);
	stamp = ag_flow_stamp(now);
	if (family == 4) {
		struct ag_flow_bucket_v4 *b = bpf_map_lookup_elem(&ag_flows_new_v4, &out->bucket);

		if (!b)
			return 0;
		out->ok = 1;
		for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
			if (b->check[i] == out->check && ag_flow_key_eq_v4(&b->way[i].key, &key->v4)) {
				out->way = i;
				out->found = 1;
				return 1;
			}
		}
		if (!now)
			return 1;
		for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
			if (b->check[i] == 0) {
				out->way = i;
				return 1;
			}
			age = stamp - b->stamp[i];
			if (age >= oldest) {
				oldest = age;
				out->way = i;
			}
		}
		victim = &b->way[out->way & (AG_FLOW_NEW_WAYS - 1)].value;
	} else {
		struct ag_flow_bucket_v6 *b = bpf_map_lookup_elem(&ag_flows_new_v6, &out->bucket);

		if (!b)
			return 0;
		out->ok = 1;
		for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
			if (b->check[i] == out->check && ag_flow_key_eq_v6(&b->way[i].key, &key->v6)) {
				out->way = i;
				out->found = 1;
				return 1;
			}
		}
		if (!now)
			return 1;
		for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
			if (b->check[i] == 0) {
				out->way = i;
				return 1;
			}
			age = stamp - b->stamp[i];
			if (age >= oldest) {
				oldest = age;
				out->way = i;
			}
		}
		victim = &b->way[out->way & (AG_FLOW_NEW_WAYS - 1)].value;
	}
	cfg = bpf_map_lookup_elem(&ag_gen_cfg, &slot);
	out->live = cfg && !ag_flow_expired(victim, cfg, now);
	return 1;
}

/*
 * The value of the way the search found or chose, with (out) its key and its bucket's
 * check and stamp slots.
 */
static __always_inline struct ag_flow_value *ag_flow_way_value(__u8 family, const struct ag_flow_way *w,
								void **key_out, __u32 **check_out,
								__u32 **stamp_out)
{
	__u32 bucket = w->bucket;
	__u32 i = w->way & (AG_FLOW_NEW_WAYS - 1);

	if (!w->ok)
		return NULL;
	if (family == 4) {
		struct ag_flow_bucket_v4 *b = bpf_map_lookup_elem(&ag_flows_new_v4, &bucket);

		if (!b)
			return NULL;
		*key_out = &b->way[i].key;
		*check_out = &b->check[i];
		*stamp_out = &b->stamp[i];
		return &b->way[i].value;
	} else {
		struct ag_flow_bucket_v6 *b = bpf_map_lookup_elem(&ag_flows_new_v6, &bucket);

		if (!b)
			return NULL;
		*key_out = &b->way[i].key;
		*check_out = &b->check[i];
		*stamp_out = &b->stamp[i];
		return &b->way[i].value;
	}
}

/*
 * Starts a flow of key, from its first packet pkt, in the way the search chose. The
 * check goes last, after a barrier, so that a reader never takes a half-written way
 * for the flow (it sees the old check, or 0).
 */
static __always_inline void ag_flow_new_put(const struct ag_flow_way *way, const struct ag_flow_tuple *t,
					    const union ag_flow_key *key, const struct ag_pkt *pkt,
					    __u32 dir, __u8 state, __u64 now)
{
	struct ag_flow_value *v;
	void *wkey = NULL;
	__u32 *check = NULL, *stamp = NULL;

	v = ag_flow_way_value(t->family, way, &wkey, &check, &stamp);
	if (!v || !wkey || !check || !stamp)
		return;
	if (way->live)
		ag_count_misc(AG_MISC_FLOW_NEW_EVICTED);
	*check = 0;
	asm volatile("" ::: "memory");
	if (t->family == 4)
		__builtin_memcpy(wkey, &key->v4, sizeof(key->v4));
	else
		__builtin_memcpy(wkey, &key->v6, sizeof(key->v6));
	ag_flow_fresh(v, pkt, dir, state, now);
	*stamp = ag_flow_stamp(now);
	asm volatile("" ::: "memory");
	*check = way->check;
	ag_count_misc(AG_MISC_FLOW_NEW);
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
	if (opens) {
		if (!now)
			now = ag_flow_now();
		ag_flow_new_find(&sc->t, &sc->key, slot, now, &sc->way);
	} else {
		ag_flow_new_probe(&sc->t, &sc->key, &sc->way);
	}
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

#endif /* ALLOWGATE_FLOW_H */
