/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flownew.h - the unassured flows (lib/flow.h): an array of buckets of AG_FLOW_NEW_WAYS
 * ways per family, a keyed hash picking the bucket, a new flow taking an empty way or
 * else the oldest. A lookup reads the bucket's header of checks (one cache line) and
 * compares a whole key only where a check matches; a writer clears the way's check
 * first and writes it last, so a way half written, or written by two CPUs at once,
 * matches no key. A flow that earns assurance moves to the assured table.
 */
#ifndef ALLOWGATE_FLOWNEW_H
#define ALLOWGATE_FLOWNEW_H

#include "flowkey.h"
#include "flowpeers.h"
#include "tcpwin.h"

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
 * May the packet's own flow be among the unassured? 0 means surely not: no way of its
 * bucket holds its check (a flow's check is a function of its key). Read straight from
 * the packet, inlined, before any tuple or key is built: the path of a spoofed answer
 * with no flow at all, the one a flood from a catalog peer takes, asks nothing more.
 */
static __always_inline int ag_flow_new_maybe(const struct ag_pkt *pkt, __u32 dir)
{
	__u64 h = ag_flow_hash_of_pkt(pkt, dir);
	__u32 bucket = (__u32)h & flow_new_mask;
	__u32 check = ag_flow_check_of(h);
	const __u32 *checks;

	if (pkt->family == 4) {
		struct ag_flow_bucket_v4 *b = bpf_map_lookup_elem(&ag_flows_new_v4, &bucket);

		barrier_var(b);
		checks = b ? b->check : NULL;
	} else {
		struct ag_flow_bucket_v6 *b = bpf_map_lookup_elem(&ag_flows_new_v6, &bucket);

		barrier_var(b);
		checks = b ? b->check : NULL;
	}
	if (!checks)
		return 1;
	_Static_assert(AG_FLOW_NEW_WAYS == 4, "the checks compared below");
	return checks[0] == check || checks[1] == check || checks[2] == check || checks[3] == check;
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
 * The way of bucket b (of either family) that holds the flow of check want and key k
 * (compared by eq), or AG_FLOW_NEW_WAYS: the checks first, a whole key compare only
 * where a check matches (a torn way matches nothing).
 */
#define AG_FLOW_NEW_MATCH(b, want, eq, k)                                           \
	({                                                                          \
		__u32 _i, _way = AG_FLOW_NEW_WAYS;                                  \
		for (_i = 0; _i < AG_FLOW_NEW_WAYS; _i++) {                         \
			if ((b)->check[_i] == (want) && eq(&(b)->way[_i].key, (k))) { \
				_way = _i;                                          \
				break;                                              \
			}                                                           \
		}                                                                   \
		_way;                                                               \
	})

/*
 * The way of t's flow (keyed key) in its bucket (AG_FLOW_NEW_MATCH). With now != 0 and
 * no such flow, it also picks the way a new one takes: an empty one, else the oldest,
 * and says whether that one still lives under slot's timeouts. With now == 0 it only
 * looks (a packet that opens nothing). A global function: checked once.
 */
__attribute__((noinline)) int ag_flow_new_find(const struct ag_flow_tuple *t, const union ag_flow_key *key,
					       __u32 slot, __u64 now, struct ag_flow_way *out)
{
	const struct ag_gen_config *cfg;
	const struct ag_flow_value *victim;
	const __u32 *check, *stamps;
	void *wkey = NULL;
	__u32 *wcheck = NULL, *wstamp = NULL;
	__u32 i, way, age, oldest = 0, stamp;
	__u64 h;

	if (!t || !key || !out)
		return 0;
	__builtin_memset(out, 0, sizeof(*out));
	h = ag_flow_hash(t->family, t);
	out->bucket = (__u32)h & flow_new_mask;
	out->check = ag_flow_check_of(h);
	if (t->family == 4) {
		struct ag_flow_bucket_v4 *b = bpf_map_lookup_elem(&ag_flows_new_v4, &out->bucket);

		if (!b)
			return 0;
		way = AG_FLOW_NEW_MATCH(b, out->check, ag_flow_key_eq_v4, &key->v4);
		check = b->check;
		stamps = b->stamp;
	} else {
		struct ag_flow_bucket_v6 *b = bpf_map_lookup_elem(&ag_flows_new_v6, &out->bucket);

		if (!b)
			return 0;
		way = AG_FLOW_NEW_MATCH(b, out->check, ag_flow_key_eq_v6, &key->v6);
		check = b->check;
		stamps = b->stamp;
	}
	out->ok = 1;
	if (way < AG_FLOW_NEW_WAYS) {
		out->way = way;
		out->found = 1;
		return 1;
	}
	if (!now)
		return 1;
	stamp = ag_flow_stamp(now);
	for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
		if (check[i] == 0) {
			out->way = i;
			return 1;
		}
		age = stamp - stamps[i];
		if (age >= oldest) {
			oldest = age;
			out->way = i;
		}
	}
	victim = ag_flow_way_value(t->family, out, &wkey, &wcheck, &wstamp);
	cfg = bpf_map_lookup_elem(&ag_gen_cfg, &slot);
	out->live = victim && cfg && !ag_flow_expired(victim, cfg, now);
	return 1;
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

#endif /* ALLOWGATE_FLOWNEW_H */
