/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flownew.h - the unassured flows (lib/flow.h): an array of buckets of AG_FLOW_NEW_WAYS
 * ways per family, a keyed hash picking the bucket, a new flow taking an empty way or
 * else the oldest. A lookup reads the bucket's checks (16 bytes, in an array of their
 * own) and reads the bucket only where a check matches, to compare the whole key, or
 * when every way is taken, to pick the oldest; a writer clears the way's check first
 * and writes it last, so a way half written, or written by two CPUs at once, matches
 * no key. A flow that earns assurance moves to the assured table.
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

/* Each bucket's checks (struct ag_flow_checks): entry i for bucket i of the table above. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_FLOW_NEW_BUCKETS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ag_flow_checks);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flows_chk_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_FLOW_NEW_BUCKETS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ag_flow_checks);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flows_chk_v6 SEC(".maps");

/*
 * The checks of bucket of family's table. Each lookup stays a call of its own map
 * (barrier_var): merged into one call of either map, it would not be inlined.
 */
static __always_inline struct ag_flow_checks *ag_flow_checks_of(__u8 family, __u32 bucket)
{
	struct ag_flow_checks *c;

	if (family == 4) {
		c = bpf_map_lookup_elem(&ag_flows_chk_v4, &bucket);
		barrier_var(c);
	} else {
		c = bpf_map_lookup_elem(&ag_flows_chk_v6, &bucket);
		barrier_var(c);
	}
	return c;
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

/* The stamp of a time: what a bucket keeps of each way to find its oldest. */
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
	const struct ag_flow_checks *c = ag_flow_checks_of(pkt->family, bucket);

	if (!c)
		return 1;
	_Static_assert(AG_FLOW_NEW_WAYS == 4, "the checks compared below");
	return c->check[0] == check || c->check[1] == check || c->check[2] == check || c->check[3] == check;
}

/*
 * The value of the way the search found or chose, with (out) its key, its check and
 * its bucket's stamp slot.
 */
static __always_inline struct ag_flow_value *ag_flow_way_value(__u8 family, const struct ag_flow_way *w,
								void **key_out, __u32 **check_out,
								__u32 **stamp_out)
{
	__u32 bucket = w->bucket;
	__u32 i = w->way & (AG_FLOW_NEW_WAYS - 1);
	struct ag_flow_checks *c;

	if (!w->ok)
		return NULL;
	c = ag_flow_checks_of(family, bucket);
	if (!c)
		return NULL;
	*check_out = &c->check[i];
	if (family == 4) {
		struct ag_flow_bucket_v4 *b = bpf_map_lookup_elem(&ag_flows_new_v4, &bucket);

		if (!b)
			return NULL;
		*key_out = &b->way[i].key;
		*stamp_out = &b->stamp[i];
		return &b->way[i].value;
	} else {
		struct ag_flow_bucket_v6 *b = bpf_map_lookup_elem(&ag_flows_new_v6, &bucket);

		if (!b)
			return NULL;
		*key_out = &b->way[i].key;
		*stamp_out = &b->stamp[i];
		return &b->way[i].value;
	}
}

/* Does way i of bucket hold key (the way's check matched: the bucket is read only now)? */
static __always_inline int ag_flow_new_holds(__u8 family, __u32 bucket, __u32 i, const union ag_flow_key *key)
{
	i &= AG_FLOW_NEW_WAYS - 1;
	if (family == 4) {
		struct ag_flow_bucket_v4 *b = bpf_map_lookup_elem(&ag_flows_new_v4, &bucket);

		return b && ag_flow_key_eq_v4(&b->way[i].key, &key->v4);
	} else {
		struct ag_flow_bucket_v6 *b = bpf_map_lookup_elem(&ag_flows_new_v6, &bucket);

		return b && ag_flow_key_eq_v6(&b->way[i].key, &key->v6);
	}
}

/* The stamps of bucket of family's table (a call of its own map each, as above). */
static __always_inline const __u32 *ag_flow_stamps_of(__u8 family, __u32 bucket)
{
	if (family == 4) {
		struct ag_flow_bucket_v4 *b = bpf_map_lookup_elem(&ag_flows_new_v4, &bucket);

		barrier_var(b);
		return b ? b->stamp : NULL;
	} else {
		struct ag_flow_bucket_v6 *b = bpf_map_lookup_elem(&ag_flows_new_v6, &bucket);

		barrier_var(b);
		return b ? b->stamp : NULL;
	}
}

/*
 * The way of t's flow (keyed key) in its bucket: the checks first, the bucket read for
 * a whole key compare only where a check matches (a torn way matches nothing). With
 * now != 0 and no such flow, it also picks the way a new one takes: an empty one (the
 * checks say), else the oldest (the bucket's stamps say), and says whether that one
 * still lives under slot's timeouts. With now == 0 it only looks (a packet that opens
 * nothing). A global function: checked once.
 */
__attribute__((noinline)) int ag_flow_new_find(const struct ag_flow_tuple *t, const union ag_flow_key *key,
					       __u32 slot, __u64 now, struct ag_flow_way *out)
{
	const struct ag_gen_config *cfg;
	const struct ag_flow_value *victim;
	const struct ag_flow_checks *c;
	const __u32 *stamps;
	void *wkey = NULL;
	__u32 *wcheck = NULL, *wstamp = NULL;
	__u32 i, age, oldest = 0, stamp;
	__u64 h;

	if (!t || !key || !out)
		return 0;
	__builtin_memset(out, 0, sizeof(*out));
	h = ag_flow_hash(t->family, t);
	out->bucket = (__u32)h & flow_new_mask;
	out->check = ag_flow_check_of(h);
	c = ag_flow_checks_of(t->family, out->bucket);
	if (!c)
		return 0;
	out->ok = 1;
	for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
		if (c->check[i] == out->check && ag_flow_new_holds(t->family, out->bucket, i, key)) {
			out->way = i;
			out->found = 1;
			return 1;
		}
	}
	if (!now)
		return 1;
	for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
		if (c->check[i] == 0) {
			out->way = i;
			return 1;
		}
	}
	stamps = ag_flow_stamps_of(t->family, out->bucket);
	if (!stamps) {
		out->ok = 0;
		return 0;
	}
	stamp = ag_flow_stamp(now);
	for (i = 0; i < AG_FLOW_NEW_WAYS; i++) {
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
