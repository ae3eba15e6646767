/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flowkey.h - what connection tracking (lib/flow.h) names a flow by: its tuple from this
 * host's side, the tables' keys, the keyed hash that places a flow in the unassured
 * table (and a datagram in the fragment table, lib/frag.h), the flow clock, and the
 * flow's state and age. dataplane/flowtab.rs computes the same hash.
 */
#ifndef ALLOWGATE_FLOWKEY_H
#define ALLOWGATE_FLOWKEY_H

#include "common.h"
#include "stats.h"
#include "policy.h"
#include "essentials.h"

/* Load-time settings (the agent's, from `[state] max_flows`). */
volatile const __u64 flow_hash_key = 0;			/* the key of the flow hash */
volatile const __u32 flow_new_mask = AG_FLOW_NEW_BUCKETS - 1;	/* buckets of ag_flows_new_* - 1 */
volatile const __u32 flow_peer_words = AG_FLOW_PEER_WORDS;	/* of one filter generation, a power of two */

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

_Static_assert(__builtin_offsetof(struct ag_pkt, dport) == __builtin_offsetof(struct ag_pkt, sport) + 2,
	       "the remote port is at sport + 2 * dir, the local one at sport + 2 * (1 - dir)");

/*
 * The ports of the packet's own flow from this host's side, as ag_flow_ports() has a
 * tuple's. dir (0 or 1) picks by arithmetic, as ag_remote() does (policy.h).
 */
static __always_inline void ag_flow_pkt_ports(const struct ag_pkt *pkt, __u32 dir, __u16 *lport, __u16 *rport)
{
	__u8 proto = pkt->l4proto;

	*rport = *(const __u16 *)((const __u8 *)&pkt->sport + dir * 2);
	*lport = *(const __u16 *)((const __u8 *)&pkt->sport + (dir ^ 1) * 2);
	if ((pkt->family == 4 && proto == AG_IPPROTO_ICMP) || (pkt->family == 6 && proto == AG_IPPROTO_ICMPV6)) {
		*lport = pkt->icmp_id;
		*rport = 0;
	} else if (proto != AG_IPPROTO_TCP && proto != AG_IPPROTO_UDP) {
		*lport = 0;
		*rport = 0;
	}
}

/*
 * The table key of the packet's own flow straight from the packet (ag_flow_tuple_of()
 * and ag_flow_key_of() in one step, without the tuple): the hot path's. The local side
 * is the remote one of the other direction.
 */
static __always_inline void ag_flow_key_of_pkt(const struct ag_pkt *pkt, __u32 dir, union ag_flow_key *key)
{
	const union ag_addr *local = ag_remote(pkt, dir ^ 1);
	const union ag_addr *remote = ag_remote(pkt, dir);
	__u16 lport, rport;
	__u8 proto = pkt->l4proto;

	ag_flow_pkt_ports(pkt, dir, &lport, &rport);
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

/* One step of the keyed flow hash (dataplane/flows.rs computes the same). */
static __always_inline __u64 ag_flow_mix(__u64 h, __u64 w)
{
	h ^= w;
	h *= 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 31);
}

/*
 * The keyed hash of a flow (local and remote addresses, ports, protocol): its low bits
 * pick the bucket, its high half is the check.
 */
static __always_inline __u64 ag_flow_hash_of(__u8 family, const union ag_addr *local,
					     const union ag_addr *remote, __u16 lport, __u16 rport,
					     __u8 proto)
{
	__u64 ports = lport | ((__u64)rport << 16) | ((__u64)proto << 32);
	__u64 h = flow_hash_key;

	if (family == 4) {
		h = ag_flow_mix(h, local->v4 | ((__u64)remote->v4 << 32));
	} else {
		h = ag_flow_mix(h, local->v6[0] | ((__u64)local->v6[1] << 32));
		h = ag_flow_mix(h, local->v6[2] | ((__u64)local->v6[3] << 32));
		h = ag_flow_mix(h, remote->v6[0] | ((__u64)remote->v6[1] << 32));
		h = ag_flow_mix(h, remote->v6[2] | ((__u64)remote->v6[3] << 32));
	}
	return ag_flow_mix(h, ports);
}

static __always_inline __u64 ag_flow_hash(__u8 family, const struct ag_flow_tuple *t)
{
	return ag_flow_hash_of(family, &t->local, &t->remote, t->lport, t->rport, t->proto);
}

/*
 * The hash of the packet's own flow straight from the packet, as ag_flow_hash() has it
 * from the tuple.
 */
static __always_inline __u64 ag_flow_hash_of_pkt(const struct ag_pkt *pkt, __u32 dir)
{
	__u16 lport, rport;

	ag_flow_pkt_ports(pkt, dir, &lport, &rport);
	return ag_flow_hash_of(pkt->family, ag_remote(pkt, dir ^ 1), ag_remote(pkt, dir), lport, rport,
			       pkt->l4proto);
}

static __always_inline __u32 ag_flow_check_of(__u64 h)
{
	return (__u32)(h >> 32) | 1;
}

#endif /* ALLOWGATE_FLOWKEY_H */
