/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow.h - connection tracking: the flows this host opened under an egress rule or
 * let in under an ingress rule, so that a return path answers only those.
 *
 * A packet a rule's forward path allows opens (or refreshes) its flow; a packet that
 * only a rule's return path would allow passes only when its flow is tracked and
 * fresh. The policy is still asked first for every packet: a flow never lets through
 * what the generation in force does not allow, so turning a region off cuts the flows
 * to the addresses only it listed at their next packet.
 *
 * Related traffic: an ICMP error passes only when the header it quotes belongs to a
 * tracked flow; a DHCP reply only after the host's own request (one flow with both
 * addresses 0: the server is not known before it answers); a DNS answer from a
 * configured resolver only to the port and id of a recorded query (lib/dns.h).
 *
 * Non-first fragments carry no ports and can't be matched to a flow; they are judged
 * by the policy alone, as without tracking. The kernel can't reassemble them without
 * their first fragment, which carries the ports and is tracked.
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
 * Remote addresses that have (or had) a flow, as bits of a filter indexed by a hash
 * of the address: a packet from (or to) an address whose bit is clear has no flow to
 * remember anything, and goes straight to the tables. So a flood from addresses the
 * host never talked to, the path an attacker picks, pays one array read for
 * tracking, not a flow lookup that misses. Bits are set when a flow goes in or
 * remembers a generation, never cleared; a lost or stale bit only costs a lookup,
 * never a verdict. Scratch, not pinned: a new program starts with none and sets them
 * again as flows pass.
 */
#define AG_FLOW_PEER_BITS	16
#define AG_FLOW_PEER_WORDS	((1U << AG_FLOW_PEER_BITS) / 64)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_FLOW_PEER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} ag_flow_peers SEC(".maps");

/* The filter bit of a remote address: a multiplicative hash of its (folded) words. */
static __always_inline __u32 ag_flow_peer_bit(const struct ag_pkt *pkt, const union ag_addr *remote)
{
	__u32 folded = remote->v4;

	if (pkt->family == 6)
		folded = remote->v6[0] ^ remote->v6[1] ^ remote->v6[2] ^ remote->v6[3];
	return (folded * 0x9e3779b1U) >> (32 - AG_FLOW_PEER_BITS);
}

/* May remote have a flow? 0 means surely not. */
static __always_inline int ag_flow_peer_maybe(const struct ag_pkt *pkt, const union ag_addr *remote)
{
	__u32 bit = ag_flow_peer_bit(pkt, remote);
	__u32 word = bit / 64;
	__u64 *w = bpf_map_lookup_elem(&ag_flow_peers, &word);

	return w && (*w & (1ULL << (bit % 64)));
}

static __always_inline void ag_flow_peer_note(const struct ag_pkt *pkt, const union ag_addr *remote)
{
	__u32 bit = ag_flow_peer_bit(pkt, remote);
	__u32 word = bit / 64;
	__u64 *w = bpf_map_lookup_elem(&ag_flow_peers, &word);

	/* Not atomic: a bit lost to a race costs a lookup later, no verdict. */
	if (w && !(*w & (1ULL << (bit % 64))))
		*w |= 1ULL << (bit % 64);
}

/* ag_flow_ctl[0]: written by the agent only (abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ag_flow_ctl);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_flow_ctl SEC(".maps");

enum ag_flow_op {
	AG_FLOW_OP_OPEN = 0,	/* a forward path allowed it: track (or refresh) its flow */
	AG_FLOW_OP_RETURN = 1,	/* only a return path would allow it: its flow must be tracked */
	AG_FLOW_OP_RELATED = 2,	/* an ICMP error: the flow it quotes must be tracked */
	AG_FLOW_OP_DHCP = 3,	/* the DHCP client: a request opens, a reply needs it */
};

/*
 * Or'ed into AG_FLOW_OP_OPEN and AG_FLOW_OP_RETURN: the generation's tables (not a
 * learned address, which may expire within the generation) allowed the packet, so
 * the flow may remember it for the generation.
 */
#define AG_FLOW_F_TABLES	0x10

/* A flow from this host's side, whichever way the packet went. */
struct ag_flow_tuple {
	union ag_addr local;
	union ag_addr remote;
	__u16 lport;
	__u16 rport;
	__u8 proto;
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

/* The DHCP client's exchange of the packet's family. */
static __always_inline void ag_flow_tuple_dhcp(const struct ag_pkt *pkt, struct ag_flow_tuple *t)
{
	t->proto = AG_IPPROTO_UDP;
	t->lport = pkt->family == 4 ? AG_DHCP_CLIENT_PORT : AG_DHCPV6_CLIENT_PORT;
	t->rport = pkt->family == 4 ? AG_DHCP_SERVER_PORT : AG_DHCPV6_SERVER_PORT;
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

/* Moves a tracked flow on by a packet that went dir (TCP by its flags, UDP by an answer). */
static __always_inline void ag_flow_advance(struct ag_flow_value *v, const struct ag_pkt *pkt,
					    const struct ag_flow_tuple *t, __u32 dir, __u32 op,
					    __u64 now)
{
	__u8 state = v->state;
	__u8 flags = pkt->tcp_flags;

	if (t->proto == AG_IPPROTO_TCP) {
		if (flags & AG_TCP_FLAG_RST) {
			state = AG_FLOW_TCP_CLOSE;
		} else if (flags & AG_TCP_FLAG_FIN) {
			if (state != AG_FLOW_TCP_CLOSE)
				state = AG_FLOW_TCP_CLOSING;
		} else if ((flags & AG_TCP_FLAG_SYN) && !(flags & AG_TCP_FLAG_ACK)) {
			/* A new connection on the ports of one that ended. */
			if (op == AG_FLOW_OP_OPEN &&
			    (state == AG_FLOW_TCP_CLOSE || state == AG_FLOW_TCP_CLOSING)) {
				state = AG_FLOW_TCP_SYN_SENT;
				v->opened_by = dir;
			}
		} else if (state == AG_FLOW_TCP_SYN_SENT && dir != v->opened_by) {
			state = AG_FLOW_TCP_ESTABLISHED;
		}
	} else if (state == AG_FLOW_UDP && dir != v->opened_by) {
		state = AG_FLOW_UDP_STREAM;
	}
	/* Written only on a change: most packets of a flow find both as they are. */
	if (state != v->state)
		v->state = state;
	if (v->seen_ns != now)
		v->seen_ns = now;
}

/* One key at a time: the two families share the stack. */
union ag_flow_key {
	struct ag_flow_v4_key v4;
	struct ag_flow_v6_key v6;
};

/* The tracked flow of t, with its key in *key; NULL when none is. */
static __always_inline struct ag_flow_value *ag_flow_lookup(const struct ag_pkt *pkt,
							    const struct ag_flow_tuple *t,
							    union ag_flow_key *key)
{
	struct ag_flow_value *v;
	void *map;

	if (pkt->family == 4) {
		__builtin_memset(&key->v4, 0, sizeof(key->v4));
		__builtin_memcpy(key->v4.local, &t->local.v4, sizeof(key->v4.local));
		__builtin_memcpy(key->v4.remote, &t->remote.v4, sizeof(key->v4.remote));
		key->v4.lport = t->lport;
		key->v4.rport = t->rport;
		key->v4.proto = t->proto;
		map = &ag_flows_v4;
		barrier_var(map);
		v = bpf_map_lookup_elem(map, &key->v4);
		barrier_var(v);
	} else {
		__builtin_memset(&key->v6, 0, sizeof(key->v6));
		__builtin_memcpy(key->v6.local, t->local.bytes, sizeof(key->v6.local));
		__builtin_memcpy(key->v6.remote, t->remote.bytes, sizeof(key->v6.remote));
		key->v6.lport = t->lport;
		key->v6.rport = t->rport;
		key->v6.proto = t->proto;
		map = &ag_flows_v6;
		barrier_var(map);
		v = bpf_map_lookup_elem(map, &key->v6);
		barrier_var(v);
	}
	return v;
}

/*
 * Before the tables: does the packet's flow remember that the tables of slot's
 * generation allow its packets going dir? Then they need not be asked again: returns
 * 1 and moves the flow on. 0 sends the packet to the tables (no flow, expired,
 * another generation, a way not remembered). A global function, as ag_flow().
 */
__attribute__((noinline)) int ag_flow_remembered(const struct ag_pkt *pkt, __u32 dir, __u32 slot)
{
	const struct ag_gen_config *cfg;
	struct ag_flow_tuple t;
	union ag_flow_key key;
	struct ag_flow_value *v;
	__u64 now;
	__u32 ok;

	if (!pkt || pkt->frag == AG_FRAG_LATER)
		return 0;
	dir &= 1;
	cfg = bpf_map_lookup_elem(&ag_gen_cfg, &slot);
	if (!cfg)
		return 0;
	__builtin_memset(&t, 0, sizeof(t));
	ag_flow_tuple_of(pkt, dir, &t);
	v = ag_flow_lookup(pkt, &t, &key);
	if (!v || v->tag != cfg->flow_tag)
		return 0;
	ok = v->allowed;
	if (!((ok & AG_FLOW_OK_FORWARD(dir)) || ((ok & AG_FLOW_OK_RETURN(dir)) && pkt->return_ok)))
		return 0;
	now = ag_flow_now();
	if (ag_flow_expired(v, cfg, now))
		return 0;
	ag_flow_advance(v, pkt, &t, dir, AG_FLOW_OP_OPEN, now);
	return 1;
}

/*
 * Tracks the packet under op, in slot's timeouts. Returns 1 when the packet may pass
 * (it opened or belongs to a tracked flow; always for an OPEN), 0 when its flow is not
 * tracked. A global function: the verifier checks it once, whatever the caller's path.
 */
__attribute__((noinline)) int ag_flow(const struct ag_pkt *pkt, __u32 dir, __u32 op, __u32 slot)
{
	struct ag_flow_tuple t;
	union ag_flow_key key;
	struct ag_flow_value fresh;
	struct ag_flow_value *v;
	const struct ag_gen_config *cfg;
	__u64 now;
	__u32 tables, ok;
	int opens;

	if (!pkt)
		return 0;
	dir &= 1;
	cfg = bpf_map_lookup_elem(&ag_gen_cfg, &slot);
	if (!cfg)
		return 0;
	__builtin_memset(&t, 0, sizeof(t));
	tables = op & AG_FLOW_F_TABLES;
	op &= ~AG_FLOW_F_TABLES;

	switch (op) {
	case AG_FLOW_OP_OPEN:
	case AG_FLOW_OP_RETURN:
		/* No ports to match a flow by: the policy alone decided (see above). */
		if (pkt->frag == AG_FRAG_LATER)
			return 1;
		ag_flow_tuple_of(pkt, dir, &t);
		/* A resolver's answer: to a query this host sent, too. */
		if (op == AG_FLOW_OP_RETURN && dir == AG_DIR_INGRESS && !ag_dns_answer_expected(pkt))
			return 0;
		opens = op == AG_FLOW_OP_OPEN;
		break;
	case AG_FLOW_OP_RELATED:
		if (!ag_flow_tuple_quoted(pkt, dir, &t))
			return 0;
		opens = 0;
		break;
	case AG_FLOW_OP_DHCP:
		ag_flow_tuple_dhcp(pkt, &t);
		opens = dir == AG_DIR_EGRESS;
		break;
	default:
		return 0;
	}

	now = ag_flow_now();
	v = ag_flow_lookup(pkt, &t, &key);
	/*
	 * What the tables allowed, remembered for this generation: the way it went, and
	 * for a return path, not a resolver's answer (each of which must match its query).
	 */
	ok = 0;
	if (tables && op == AG_FLOW_OP_OPEN)
		ok = AG_FLOW_OK_FORWARD(dir);
	if (tables && op == AG_FLOW_OP_RETURN &&
	    !(dir == AG_DIR_INGRESS && t.proto == AG_IPPROTO_UDP && t.rport == AG_DNS_PORT))
		ok = AG_FLOW_OK_RETURN(dir);
	if (v && ag_flow_expired(v, cfg, now)) {
		if (opens) {
			/* Starts again as if new. */
			v->state = ag_flow_first_state(&t, pkt->tcp_flags);
			if (v->state == AG_FLOW_STATES)
				v->state = AG_FLOW_TCP_CLOSE;
			v->opened_by = dir;
			v->seen_ns = now;
			v->allowed = ok;
			v->tag = ok ? cfg->flow_tag : 0;
			if (ok)
				ag_flow_peer_note(pkt, &t.remote);
			return 1;
		}
		if (pkt->family == 4)
			bpf_map_delete_elem(&ag_flows_v4, &key.v4);
		else
			bpf_map_delete_elem(&ag_flows_v6, &key.v6);
		ag_count_misc(AG_MISC_FLOW_REMOVED);
		return 0;
	}
	if (v) {
		/* An ICMP error tells of a flow; it does not move it on. */
		if (op == AG_FLOW_OP_RELATED)
			return 1;
		ag_flow_advance(v, pkt, &t, dir, op, now);
		if (ok) {
			if (v->tag != cfg->flow_tag) {
				v->allowed = ok;
				v->tag = cfg->flow_tag;
				ag_flow_peer_note(pkt, &t.remote);
			} else if (!(v->allowed & ok)) {
				v->allowed |= ok;
			}
		}
		return 1;
	}
	if (!opens)
		return 0;

	__builtin_memset(&fresh, 0, sizeof(fresh));
	fresh.state = ag_flow_first_state(&t, pkt->tcp_flags);
	if (fresh.state == AG_FLOW_STATES)
		return 1;
	fresh.seen_ns = now;
	fresh.opened_by = dir;
	if (ok) {
		fresh.allowed = ok;
		fresh.tag = cfg->flow_tag;
		ag_flow_peer_note(pkt, &t.remote);
	}
	if (pkt->family == 4) {
		if (bpf_map_update_elem(&ag_flows_v4, &key.v4, &fresh, BPF_NOEXIST) == 0)
			ag_count_misc(AG_MISC_FLOW_INSERTS);
	} else {
		if (bpf_map_update_elem(&ag_flows_v6, &key.v6, &fresh, BPF_NOEXIST) == 0)
			ag_count_misc(AG_MISC_FLOW_INSERTS);
	}
	return 1;
}

#endif /* ALLOWGATE_FLOW_H */
