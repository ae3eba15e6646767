/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * frag.h - non-first fragments under connection tracking. They carry no ports, so no
 * rule or flow can judge them; they pass only as part of a datagram whose first
 * fragment (which carries the ports, and was judged) passed within AG_FRAG_TTL_NS,
 * counted under the reason that passed it; any other is dropped as
 * `fragment-orphan`. So fragments sprayed from anywhere never reach the host's
 * reassembly queue, where they would crowd out a real datagram's.
 *
 * A datagram is (source, destination, protocol, IP identification; on IPv6 the fragment
 * header's identification). The table is direct-mapped by a keyed hash: a noted first
 * fragment stays until another datagram takes its slot, which a flood of first
 * fragments from allowed sources can do; the fragments of one datagram arrive within
 * microseconds of each other, so it must be a flood of AG_FRAG_SLOTS datagrams in that
 * time. A fragment that overtakes its first fragment drops (as in Cilium). Scratch, not
 * pinned: a datagram in flight over a restart is sent again by its sender.
 *
 * Who writes: the programs only, from fragments the policy let through.
 */
#ifndef ALLOWGATE_FRAG_H
#define ALLOWGATE_FRAG_H

#include "common.h"
#include "stats.h"
#include "flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_FRAG_SLOTS);
	__type(key, __u32);
	__type(value, struct ag_frag_value);
} ag_frags SEC(".maps");

_Static_assert((AG_FRAG_SLOTS & (AG_FRAG_SLOTS - 1)) == 0, "AG_FRAG_SLOTS is a power of two");
_Static_assert(sizeof(struct ag_frag_key) == 5 * 8, "fragment keys hash as five words");

/* The datagram the fragment pkt belongs to. */
static __always_inline void ag_frag_key_of(const struct ag_pkt *pkt, struct ag_frag_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memcpy(key->src, pkt->saddr.bytes, sizeof(key->src));
	__builtin_memcpy(key->dst, pkt->daddr.bytes, sizeof(key->dst));
	key->id = pkt->frag_id;
	key->proto = pkt->l4proto;
	key->family = pkt->family;
}

static __always_inline __u64 ag_frag_hash(const struct ag_frag_key *key)
{
	const __u64 *w = (const __u64 *)key;
	__u64 h = flow_hash_key;

	h = ag_flow_mix(h, w[0]);
	h = ag_flow_mix(h, w[1]);
	h = ag_flow_mix(h, w[2]);
	h = ag_flow_mix(h, w[3]);
	return ag_flow_mix(h, w[4]);
}

static __always_inline int ag_frag_key_eq(const struct ag_frag_key *a, const struct ag_frag_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/*
 * Notes that the first fragment pkt passed for reason. A global function: checked once.
 */
__attribute__((noinline)) int ag_frag_note(const struct ag_pkt *pkt, __u32 reason)
{
	struct ag_frag_key key __attribute__((aligned(8)));
	struct ag_frag_value *slot;
	__u32 index;
	__u64 h;

	if (!pkt)
		return 0;
	ag_frag_key_of(pkt, &key);
	h = ag_frag_hash(&key);
	index = (__u32)h & (AG_FRAG_SLOTS - 1);
	slot = bpf_map_lookup_elem(&ag_frags, &index);
	if (!slot)
		return 0;
	/* The check last, as in ag_flow_new_put(): a half-written slot matches nothing. */
	slot->check = 0;
	asm volatile("" ::: "memory");
	__builtin_memcpy(&slot->key, &key, sizeof(key));
	slot->seen_ns = ag_flow_now();
	slot->reason = reason;
	asm volatile("" ::: "memory");
	slot->check = ag_flow_check_of(h);
	ag_count_misc(AG_MISC_FRAG_NOTED);
	return 1;
}

/*
 * The reason that passed the first fragment of the non-first fragment pkt's datagram,
 * plus one; 0 when none did within AG_FRAG_TTL_NS. A global function: checked once.
 */
__attribute__((noinline)) int ag_frag_find(const struct ag_pkt *pkt)
{
	struct ag_frag_key key __attribute__((aligned(8)));
	struct ag_frag_value *slot;
	__u32 index, check;
	__u64 h, seen;

	if (!pkt)
		return 0;
	ag_frag_key_of(pkt, &key);
	h = ag_frag_hash(&key);
	index = (__u32)h & (AG_FRAG_SLOTS - 1);
	check = ag_flow_check_of(h);
	slot = bpf_map_lookup_elem(&ag_frags, &index);
	if (!slot || slot->check != check)
		return 0;
	seen = slot->seen_ns;
	if (!ag_frag_key_eq(&slot->key, &key))
		return 0;
	/* A time from the future wraps to a huge age: not this datagram's. */
	if (ag_flow_now() - seen > AG_FRAG_TTL_NS)
		return 0;
	return slot->reason + 1;
}

#endif /* ALLOWGATE_FRAG_H */
