/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flowpeers.h - the filter of remote addresses that have an assured flow (lib/flow.h):
 * a clear bit means there is none, so a packet from (or to) any other address skips the
 * assured table. Bits are set, atomically, before a flow goes in; the agent rebuilds
 * the filter from the table every minute (dataplane/flows.rs), in the generation the
 * programs do not write, and swaps (ag_flow_ctl).
 */
#ifndef ALLOWGATE_FLOWPEERS_H
#define ALLOWGATE_FLOWPEERS_H

#include "flowkey.h"

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

#endif /* ALLOWGATE_FLOWPEERS_H */
