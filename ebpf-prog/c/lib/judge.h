/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * judge.h - the judging core both hooks share. It sees only the parsed facts
 * of a packet (struct ag_pkt) and the direction, gives a verdict and its
 * reason, counts it, reports a drop, and softens a drop to a pass in monitor
 * mode.
 *
 * Order: no complete generation -> drop; what the parser could not read
 * safely -> drop; non-IP by ethertype; essentials; the policy tables. With
 * connection tracking (AG_F_STATEFUL), a forward path opens its flow, a return
 * path and the related essentials (ICMP errors, DHCP replies) need one (flow.h).
 *
 * ag_judge() is a global (not inlined) function on purpose: the verifier then
 * checks it once, with every field of the packet unknown, instead of once per
 * path through the parser (VLAN depth x IPv6 chain x L4 protocol x ...). On
 * kernel 6.18 that is ~33k verified instructions for the XDP program instead
 * of ~160k inlined (and over the 1M limit with a naive IPv6 walk), and it was
 * no slower in BPF_PROG_TEST_RUN: one BPF-to-BPF call per packet against a
 * much larger inlined body.
 *
 * dir is never branched on below (masks and arithmetic pick by direction):
 * a branch would pin it to a constant and double what the verifier walks.
 */
#ifndef ALLOWGATE_JUDGE_H
#define ALLOWGATE_JUDGE_H

#include "common.h"
#include "policy.h"
#include "essentials.h"
#include "stats.h"
#include "flow.h"

static __always_inline int ag_ethertype_listed(const struct ag_gen_config *cfg, __u16 proto)
{
	__u32 n = cfg->n_ethertypes;
	__u32 i;

	if (n > AG_MAX_ETHERTYPES)
		n = AG_MAX_ETHERTYPES;
	for (i = 0; i < AG_MAX_ETHERTYPES; i++) {
		if (i >= n)
			break;
		if (cfg->ethertypes[i] == proto)
			return 1;
	}
	return 0;
}

/* The verdict on a parsed packet under cfg; *reason says why. */
static __always_inline int ag_verdict(const struct ag_gen_config *cfg, __u32 slot,
				      const struct ag_pkt *pkt, __u32 dir, __u8 *reason)
{
	int essential, match, learned;
	__u32 op, stateful;

	if (pkt->parse_result != AG_PARSE_OK) {
		*reason = pkt->parse_result;
		/* Always a reason by construction; keep the counter index honest. */
		if (*reason >= AG_REASON_MAX)
			*reason = AG_REASON_MALFORMED;
		return AG_VERDICT_DROP;
	}
	if (pkt->family == 0) {
		if (pkt->ethertype == ETH_P_ARP) {
			*reason = AG_REASON_ARP;
			return (cfg->flags & AG_F_ARP) ? AG_VERDICT_PASS : AG_VERDICT_DROP;
		}
		*reason = AG_REASON_ETHERTYPE;
		return ag_ethertype_listed(cfg, pkt->ethertype) ? AG_VERDICT_PASS : AG_VERDICT_DROP;
	}
	essential = ag_essential(pkt, cfg->flags, dir);
	if (essential != AG_NO_ESSENTIAL) {
		*reason = essential;
		if (!(cfg->flags & AG_F_STATEFUL))
			return AG_VERDICT_PASS;
		if (essential == AG_REASON_ICMP_ERROR)
			op = AG_FLOW_OP_RELATED;
		else if (essential == AG_REASON_DHCP)
			op = AG_FLOW_OP_DHCP;
		else
			return AG_VERDICT_PASS;
		if (ag_flow(pkt, dir, op, slot))
			return AG_VERDICT_PASS;
		*reason = AG_REASON_NO_FLOW;
		return AG_VERDICT_DROP;
	}

	/*
	 * The generation's tables first; a tracked answer stops there. Learned addresses
	 * only when the tables did not settle it (their forward path may still allow it).
	 */
	stateful = cfg->flags & AG_F_STATEFUL;
	*reason = AG_REASON_POLICY;
	/*
	 * A flow that remembers this generation's tables allowing it needs no table
	 * lookup; an address with no flow is not looked for (flow.h).
	 */
	if (stateful && ag_flow_peer_maybe(pkt, ag_remote(pkt, dir)) &&
	    ag_flow_remembered(pkt, dir, slot))
		return AG_VERDICT_PASS;
	match = ag_table_match(slot, cfg->flags, pkt, dir);
	if (match == AG_MATCH_NO_TABLES) {
		*reason = AG_REASON_NO_POLICY;
		return AG_VERDICT_DROP;
	}
	if (match == AG_MATCH_FORWARD)
		goto forward;
	if (match == AG_MATCH_RETURN &&
	    (!stateful || ag_flow(pkt, dir, AG_FLOW_OP_RETURN | AG_FLOW_F_TABLES, slot)))
		return AG_VERDICT_PASS;
	learned = ag_learned_match(pkt, dir);
	if (learned == AG_MATCH_FORWARD) {
		if (stateful)
			ag_flow(pkt, dir, AG_FLOW_OP_OPEN, slot);
		return AG_VERDICT_PASS;
	}
	/* The same flow was asked for already when the tables gave a return path. */
	if (learned == AG_MATCH_RETURN && match != AG_MATCH_RETURN &&
	    (!stateful || ag_flow(pkt, dir, AG_FLOW_OP_RETURN, slot)))
		return AG_VERDICT_PASS;
	if (stateful && (match == AG_MATCH_RETURN || learned == AG_MATCH_RETURN))
		*reason = AG_REASON_NO_FLOW;
	return AG_VERDICT_DROP;

forward:
	if (stateful)
		ag_flow(pkt, dir, AG_FLOW_OP_OPEN | AG_FLOW_F_TABLES, slot);
	return AG_VERDICT_PASS;
}

/*
 * Judges, counts and reports one packet of `bytes` bytes seen on ifindex in
 * direction dir. Returns AG_VERDICT_DROP when the packet must go: a drop in
 * enforce mode, or any packet while no generation is loaded.
 */
__attribute__((noinline)) int ag_judge(const struct ag_pkt *pkt, __u32 dir, __u32 bytes,
				       __u32 ifindex)
{
	const struct ag_gen_config *cfg;
	__u32 slot = 0;
	__u8 reason = AG_REASON_NO_POLICY;
	__u8 enforced = 1;
	int verdict = AG_VERDICT_DROP;

	dir &= 1;	/* AG_DIR_INGRESS or AG_DIR_EGRESS, by a mask, not a branch */
	if (!pkt)
		return AG_VERDICT_DROP;

	/* Without a complete generation there is no mode either: fail closed. */
	cfg = ag_active_config(&slot);
	if (cfg) {
		verdict = ag_verdict(cfg, slot, pkt, dir, &reason);
		enforced = !!(cfg->flags & AG_F_ENFORCE);
	}
	ag_count(dir, verdict, reason, bytes);
	if (verdict == AG_VERDICT_PASS)
		return AG_VERDICT_PASS;

	ag_report_drop(pkt, cfg ? cfg->generation : 0, ifindex, dir, reason, enforced);
	return enforced ? AG_VERDICT_DROP : AG_VERDICT_PASS;
}

#endif /* ALLOWGATE_JUDGE_H */
