/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * policy.h - the policy maps, the per-generation config, and the rule lookup:
 * hosts first (the host index, else the hash map), then the LPM trie, then the port
 * rules of what was found.
 *
 * A generation lives in one of AG_SLOTS slots: its four inner maps sit at that
 * index of the four outer maps and its config in ag_gen_cfg. The agent fills the
 * idle slot and then flips ag_active, so a packet sees one whole generation.
 */
#ifndef ALLOWGATE_POLICY_H
#define ALLOWGATE_POLICY_H

#include "common.h"

/*
 * Inner-map templates. The kernel checks type, key size, value size and
 * map_flags of every map the agent puts in a slot against these (not
 * max_entries), so map_flags must stay exactly BPF_F_NO_PREALLOC, which is
 * what the agent creates them with. Sizes rather than __type(): clang emits
 * only forward declarations for types this deep in a map definition, and the
 * loader can't size a forward declaration.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, AG_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, 1);
		__uint(key_size, sizeof(struct ag_v4_host_key));
		__uint(value_size, sizeof(struct ag_policy_value));
	});
} ag_v4_host SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, AG_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, 1);
		__uint(key_size, sizeof(struct ag_lpm_v4_key));
		__uint(value_size, sizeof(struct ag_policy_value));
	});
} ag_v4_lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, AG_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, 1);
		__uint(key_size, sizeof(struct ag_v6_host_key));
		__uint(value_size, sizeof(struct ag_policy_value));
	});
} ag_v6_host SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, AG_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, 1);
		__uint(key_size, sizeof(struct ag_lpm_v6_key));
		__uint(value_size, sizeof(struct ag_policy_value));
	});
} ag_v6_lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_SLOTS);
	__type(key, __u32);
	__type(value, struct ag_gen_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_gen_cfg SEC(".maps");

/* ag_active[0] is the slot packets are judged by. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_active SEC(".maps");

/*
 * Learned addresses (abi.h): one hash per family beside the generations, updated in
 * place by the agent, each entry with its own expiry. Consulted only when the
 * generation's tables do not allow a packet.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AG_DYN_MAX);
	__type(key, struct ag_v4_host_key);
	__type(value, struct ag_dyn_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_v4_dyn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AG_DYN_MAX);
	__type(key, struct ag_v6_host_key);
	__type(value, struct ag_dyn_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_v6_dyn SEC(".maps");

/* ag_dyn_empty[0]: AG_DYN_*_EMPTY bits, kept by the agent (abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_dyn_empty SEC(".maps");

/*
 * The host index (abi.h): each slot's IPv4 /32s, looked up inline (two array reads)
 * rather than through the kernel's hash lookup, which costs a call, a jhash and a
 * memcmp on every packet from a catalog peer. Written by the agent, through mmap, for
 * the idle slot only, like the inner maps.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_SLOTS * AG_HOST_INDEX_SIZE);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ag_host_index_v4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_v4_host_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_SLOTS * AG_HOST_VALUES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ag_policy_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_host_values SEC(".maps");

/* The active generation's config, or NULL when none is complete. */
static __always_inline const struct ag_gen_config *ag_active_config(__u32 *slot)
{
	const struct ag_gen_config *cfg;
	__u32 zero = 0;
	__u32 *active;

	active = bpf_map_lookup_elem(&ag_active, &zero);
	if (!active)
		return NULL;
	*slot = *active;
	if (*slot >= AG_SLOTS)
		return NULL;
	cfg = bpf_map_lookup_elem(&ag_gen_cfg, slot);
	if (!cfg || cfg->generation == 0)
		return NULL;
	return cfg;
}

enum ag_lookup_result {
	AG_LOOKUP_FOUND = 0,
	AG_LOOKUP_MISS = 1,		/* no prefix covers the remote: deny */
	AG_LOOKUP_NO_TABLES = 2,	/* the slot lacks an inner map: fail closed */
};

/*
 * The /32 addr in slot's host index: AG_LOOKUP_FOUND with *value, or AG_LOOKUP_MISS.
 * Every /32 of the slot lies within AG_HOST_INDEX_PROBES entries of its home and no
 * empty entry comes before it (the agent placed it so), so a miss is a miss of the
 * hash map too.
 */
static __always_inline int ag_host_index_v4(__u32 slot, __u32 addr, const struct ag_policy_value **value)
{
	__u32 home = (addr * AG_HOST_INDEX_MUL) >> (32 - AG_HOST_INDEX_BITS);
	__u32 base = (slot & (AG_SLOTS - 1)) * AG_HOST_INDEX_SIZE;
	__u32 i;

	_Static_assert((AG_SLOTS & (AG_SLOTS - 1)) == 0, "slot is masked into range");
	for (i = 0; i < AG_HOST_INDEX_PROBES; i++) {
		__u32 at = base + ((home + i) & (AG_HOST_INDEX_SIZE - 1));
		const struct ag_host_index_v4 *e = bpf_map_lookup_elem(&ag_v4_host_index, &at);
		__u32 v;

		if (!e || e->value == 0)
			return AG_LOOKUP_MISS;
		if (e->addr != addr)
			continue;
		v = (slot & (AG_SLOTS - 1)) * AG_HOST_VALUES + ((e->value - 1) & (AG_HOST_VALUES - 1));
		*value = bpf_map_lookup_elem(&ag_host_values, &v);
		barrier_var(*value);
		return *value ? AG_LOOKUP_FOUND : AG_LOOKUP_MISS;
	}
	return AG_LOOKUP_MISS;
}

/*
 * The v4 and v6 lookups are separate functions with barrier_var() on every map
 * pointer and result. clang may otherwise merge the two families' calls into
 * one bpf_map_lookup_elem whose map pointer depends on the branch; the
 * verifier then can't turn it into a direct call of the hash or trie lookup
 * and leaves the generic helper (about twice the cost per packet). clang 14
 * does not merge this shape today; the barriers keep it so, and the smoke
 * test map_lookups_are_direct_calls reads the translated code to check.
 */
static __always_inline int ag_lookup_v4(__u32 slot, __u32 flags, __u32 addr,
					const struct ag_policy_value **value)
{
	struct ag_v4_host_key host_key;
	struct ag_lpm_v4_key lpm_key;
	void *host, *lpm;

	/*
	 * The index first: the agent sets its flag in the config it writes after the
	 * slot's inner maps, so a slot with the flag has them all.
	 */
	*value = NULL;
	if ((flags & AG_F_V4_HOST_INDEX) && ag_host_index_v4(slot, addr, value) == AG_LOOKUP_FOUND)
		return AG_LOOKUP_FOUND;

	/* The outer lookups are inlined array reads: a missing inner map still fails closed. */
	host = bpf_map_lookup_elem(&ag_v4_host, &slot);
	barrier_var(host);
	if (!host)
		return AG_LOOKUP_NO_TABLES;
	lpm = bpf_map_lookup_elem(&ag_v4_lpm, &slot);
	barrier_var(lpm);
	if (!lpm)
		return AG_LOOKUP_NO_TABLES;

	if (!(flags & (AG_F_V4_HOST_INDEX | AG_F_V4_HOST_EMPTY))) {
		__builtin_memcpy(host_key.addr, &addr, sizeof(host_key.addr));
		*value = bpf_map_lookup_elem(host, &host_key);
		barrier_var(*value);
		if (*value)
			return AG_LOOKUP_FOUND;
	}
	if (flags & AG_F_V4_LPM_EMPTY)
		return AG_LOOKUP_MISS;
	lpm_key.prefixlen = 32;
	__builtin_memcpy(lpm_key.addr, &addr, sizeof(lpm_key.addr));
	*value = bpf_map_lookup_elem(lpm, &lpm_key);
	barrier_var(*value);
	return *value ? AG_LOOKUP_FOUND : AG_LOOKUP_MISS;
}

static __always_inline int ag_lookup_v6(__u32 slot, __u32 flags, const union ag_addr *addr,
					const struct ag_policy_value **value)
{
	struct ag_v6_host_key host_key;
	struct ag_lpm_v6_key lpm_key;
	void *host, *lpm;

	host = bpf_map_lookup_elem(&ag_v6_host, &slot);
	barrier_var(host);
	if (!host)
		return AG_LOOKUP_NO_TABLES;
	lpm = bpf_map_lookup_elem(&ag_v6_lpm, &slot);
	barrier_var(lpm);
	if (!lpm)
		return AG_LOOKUP_NO_TABLES;

	*value = NULL;
	if (!(flags & AG_F_V6_HOST_EMPTY)) {
		__builtin_memcpy(host_key.addr, addr->bytes, sizeof(host_key.addr));
		*value = bpf_map_lookup_elem(host, &host_key);
		barrier_var(*value);
		if (*value)
			return AG_LOOKUP_FOUND;
	}
	if (flags & AG_F_V6_LPM_EMPTY)
		return AG_LOOKUP_MISS;
	lpm_key.prefixlen = 128;
	__builtin_memcpy(lpm_key.addr, addr->bytes, sizeof(lpm_key.addr));
	*value = bpf_map_lookup_elem(lpm, &lpm_key);
	barrier_var(*value);
	return *value ? AG_LOOKUP_FOUND : AG_LOOKUP_MISS;
}

/*
 * The learned entry of a remote address, or NULL. Separate per family, with
 * barriers, for the same reason as the lookups above.
 */
static __always_inline const struct ag_dyn_value *ag_dyn_lookup_v4(__u32 addr)
{
	const struct ag_dyn_value *dyn;
	struct ag_v4_host_key key;
	void *map = &ag_v4_dyn;

	barrier_var(map);
	__builtin_memcpy(key.addr, &addr, sizeof(key.addr));
	dyn = bpf_map_lookup_elem(map, &key);
	barrier_var(dyn);
	return dyn;
}

static __always_inline const struct ag_dyn_value *ag_dyn_lookup_v6(const union ag_addr *addr)
{
	const struct ag_dyn_value *dyn;
	struct ag_v6_host_key key;
	void *map = &ag_v6_dyn;

	barrier_var(map);
	__builtin_memcpy(key.addr, addr->bytes, sizeof(key.addr));
	dyn = bpf_map_lookup_elem(map, &key);
	barrier_var(dyn);
	return dyn;
}

/* What a rule lookup found for a packet: nothing, a forward path, or only a return path. */
#define AG_MATCH_NONE		0
#define AG_MATCH_FORWARD	1	/* opens (or continues) a flow */
#define AG_MATCH_RETURN		2	/* answers a flow: with tracking, only a tracked one */
#define AG_MATCH_NO_TABLES	3	/* the slot is incomplete: fail closed */

/*
 * The port rules of what was found. "Forward" slots compare the destination
 * port (egress OUT_REMOTE, ingress IN_LOCAL), "return" slots the source port
 * (egress OUT_LOCAL, ingress IN_REMOTE), and only when the packet opens
 * nothing (pkt->return_ok). A forward match wins over a return one.
 *
 * The packet's fields are read through a volatile pointer in every iteration
 * on purpose: held in registers, a field that one iteration's branch pinned to
 * a constant stays pinned in the next, and the verifier walks the loop once
 * per such constant. Reloads from L1 cost next to nothing.
 */
static __always_inline int ag_rules_match(const struct ag_policy_value *value,
					  const struct ag_pkt *pkt, __u32 fwd_slot, __u32 ret_slot)
{
	const volatile struct ag_pkt *p = pkt;
	int match = AG_MATCH_NONE;
	__u32 i;

	for (i = 0; i < AG_MAX_PORT_RULES; i++) {
		const struct ag_port_rule *rule = &value->rules[i];
		__u16 port;

		if (i >= value->n_rules)
			break;
		if (rule->proto != AG_PROTO_ANY && rule->proto != p->rule_proto)
			continue;
		/* A non-first fragment has no ports: any rule of this hook will do. */
		if (p->frag == AG_FRAG_LATER) {
			if (rule->slots & fwd_slot)
				return AG_MATCH_FORWARD;
			if (rule->slots & ret_slot)
				match = AG_MATCH_RETURN;
			continue;
		}
		port = p->dport;
		if ((rule->slots & fwd_slot) && port >= rule->port_lo && port <= rule->port_hi)
			return AG_MATCH_FORWARD;
		port = p->sport;
		if ((rule->slots & ret_slot) && p->return_ok &&
		    port >= rule->port_lo && port <= rule->port_hi)
			match = AG_MATCH_RETURN;
	}
	return match;
}

/* ag_table_match() and ag_learned_match() pick by arithmetic on dir what a branch would pick. */
_Static_assert(AG_DIR_INGRESS == 0 && AG_DIR_EGRESS == 1, "dir is a 0/1 multiplier");
_Static_assert(__builtin_offsetof(struct ag_pkt, daddr) ==
	       __builtin_offsetof(struct ag_pkt, saddr) + sizeof(union ag_addr),
	       "the remote address is saddr + dir * sizeof(union ag_addr)");
_Static_assert((AG_SLOT_IN_LOCAL >> 2) == AG_SLOT_OUT_REMOTE &&
	       (AG_SLOT_IN_REMOTE << 2) == AG_SLOT_OUT_LOCAL,
	       "the egress slots are the ingress ones shifted by 2 * dir");

/* The remote peer: where ingress comes from (saddr), egress goes (daddr). */
static __always_inline const union ag_addr *ag_remote(const struct ag_pkt *pkt, __u32 dir)
{
	return (const union ag_addr *)((const __u8 *)&pkt->saddr + dir * sizeof(union ag_addr));
}

/*
 * What the generation's tables allow of an IP packet: AG_MATCH_FORWARD,
 * AG_MATCH_RETURN, AG_MATCH_NONE, or AG_MATCH_NO_TABLES (the slot is incomplete).
 * dir is 0 or 1 and is never branched on (see ag_judge()).
 *
 * Ingress: IN_LOCAL (bit 2) forward, IN_REMOTE (bit 1) return;
 * egress: OUT_REMOTE (bit 0) forward, OUT_LOCAL (bit 3) return.
 */
static __always_inline int ag_table_match(__u32 slot, __u32 flags, const struct ag_pkt *pkt, __u32 dir)
{
	const struct ag_policy_value *value = NULL;
	const union ag_addr *remote = ag_remote(pkt, dir);
	int found;

	if (pkt->family == 4)
		found = ag_lookup_v4(slot, flags, remote->v4, &value);
	else
		found = ag_lookup_v6(slot, flags, remote, &value);
	if (found == AG_LOOKUP_NO_TABLES)
		return AG_MATCH_NO_TABLES;
	if (found != AG_LOOKUP_FOUND)
		return AG_MATCH_NONE;
	return ag_rules_match(value, pkt, AG_SLOT_IN_LOCAL >> (dir * 2), AG_SLOT_IN_REMOTE << (dir * 2));
}

/*
 * ag_rules_match() for a learned address's value, as a global function: the verifier
 * checks it once, for any value, rather than once more inline for each family's learned
 * table (a third and fourth kind of value pointer after the generation's tables and the
 * host index). A call more, paid only by packets the generation's tables did not allow.
 */
__attribute__((noinline)) int ag_learned_rules_match(const struct ag_policy_value *value,
						      const struct ag_pkt *pkt, __u32 fwd_slot,
						      __u32 ret_slot)
{
	if (!value || !pkt)
		return AG_MATCH_NONE;
	return ag_rules_match(value, pkt, fwd_slot, ret_slot);
}

/*
 * What a learned address allows of the packet, while it lasts: AG_MATCH_FORWARD,
 * AG_MATCH_RETURN or AG_MATCH_NONE. Asked only when the generation's tables did not
 * settle it; an empty learned table (no DNS names, or none resolved) is not looked in.
 */
static __always_inline int ag_learned_match(const struct ag_pkt *pkt, __u32 dir)
{
	const union ag_addr *remote = ag_remote(pkt, dir);
	const struct ag_dyn_value *dyn;
	__u32 zero = 0;
	__u32 *dyn_empty;

	dyn_empty = bpf_map_lookup_elem(&ag_dyn_empty, &zero);
	if (dyn_empty && (*dyn_empty & (pkt->family == 4 ? AG_DYN_V4_EMPTY : AG_DYN_V6_EMPTY)))
		return AG_MATCH_NONE;
	if (pkt->family == 4)
		dyn = ag_dyn_lookup_v4(remote->v4);
	else
		dyn = ag_dyn_lookup_v6(remote);
	if (!dyn || dyn->expires_ns <= bpf_ktime_get_ns())
		return AG_MATCH_NONE;
	return ag_learned_rules_match(&dyn->policy, pkt, AG_SLOT_IN_LOCAL >> (dir * 2),
				      AG_SLOT_IN_REMOTE << (dir * 2));
}

#endif /* ALLOWGATE_POLICY_H */
