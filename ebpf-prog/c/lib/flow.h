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
 * Times come from bpf_ktime_get_coarse_ns(): a tick's resolution is plenty for idle
 * timeouts of seconds, it costs a load rather than a clock read, and the agent reads
 * the same clock (CLOCK_MONOTONIC_COARSE) when it seeds flows.
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

/*
 * Tracks the packet under op, in slot's timeouts. Returns 1 when the packet may pass
 * (it opened or belongs to a tracked flow; always for an OPEN), 0 when its flow is not
 * tracked. A global function: the verifier checks it once, whatever the caller's path.
 */
__attribute__((noinline)) int ag_flow(const struct ag_pkt *pkt, __u32 dir, __u32 op, __u32 slot)
{
	struct ag_flow_tuple t;
	struct ag_flow_v4_key k4;
	struct ag_flow_v6_key k6;
	struct ag_flow_value fresh;
	struct ag_flow_value *v;
	const struct ag_gen_config *cfg;
	void *map;
	__u64 now;
	int opens;

	if (!pkt)
		return 0;
	dir &= 1;
	cfg = bpf_map_lookup_elem(&ag_gen_cfg, &slot);
	if (!cfg)
		return 0;
	__builtin_memset(&t, 0, sizeof(t));

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

	now = bpf_ktime_get_coarse_ns();
	if (pkt->family == 4) {
		__builtin_memset(&k4, 0, sizeof(k4));
		__builtin_memcpy(k4.local, &t.local.v4, sizeof(k4.local));
		__builtin_memcpy(k4.remote, &t.remote.v4, sizeof(k4.remote));
		k4.lport = t.lport;
		k4.rport = t.rport;
		k4.proto = t.proto;
		map = &ag_flows_v4;
		barrier_var(map);
		v = bpf_map_lookup_elem(map, &k4);
		barrier_var(v);
	} else {
		__builtin_memset(&k6, 0, sizeof(k6));
		__builtin_memcpy(k6.local, t.local.bytes, sizeof(k6.local));
		__builtin_memcpy(k6.remote, t.remote.bytes, sizeof(k6.remote));
		k6.lport = t.lport;
		k6.rport = t.rport;
		k6.proto = t.proto;
		map = &ag_flows_v6;
		barrier_var(map);
		v = bpf_map_lookup_elem(map, &k6);
		barrier_var(v);
	}

	if (v && ag_flow_expired(v, cfg, now)) {
		if (opens) {
			/* Starts again as if new. */
			v->state = ag_flow_first_state(&t, pkt->tcp_flags);
			if (v->state == AG_FLOW_STATES)
				v->state = AG_FLOW_TCP_CLOSE;
			v->opened_by = dir;
			v->seen_ns = now;
			return 1;
		}
		if (pkt->family == 4)
			bpf_map_delete_elem(&ag_flows_v4, &k4);
		else
			bpf_map_delete_elem(&ag_flows_v6, &k6);
		ag_count_misc(AG_MISC_FLOW_REMOVED);
		return 0;
	}
	if (v) {
		/* An ICMP error tells of a flow; it does not move it on. */
		if (op != AG_FLOW_OP_RELATED)
			ag_flow_advance(v, pkt, &t, dir, op, now);
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
	if (pkt->family == 4) {
		if (bpf_map_update_elem(&ag_flows_v4, &k4, &fresh, BPF_NOEXIST) == 0)
			ag_count_misc(AG_MISC_FLOW_INSERTS);
	} else {
		if (bpf_map_update_elem(&ag_flows_v6, &k6, &fresh, BPF_NOEXIST) == 0)
			ag_count_misc(AG_MISC_FLOW_INSERTS);
	}
	return 1;
}

#endif /* ALLOWGATE_FLOW_H */
