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
 * path and the related essentials (ICMP errors, DHCP replies) need one, a TCP
 * segment must lie in its flow's window (flow.h), and a non-first fragment passes
 * only as its passed first fragment's datagram (frag.h).
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
#include "frag.h"

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

/*
 * What a flow's answer makes of the packet: a pass, or a segment out of its window
 * (dropped, or passed under `[state] liberal`, counted as out-of-window either way).
 * AG_VERDICT_MAX: no flow.
 */
static __always_inline int ag_flow_verdict(const struct ag_gen_config *cfg, int res, __u8 *reason)
{
	if (res == AG_FLOW_PASS)
		return AG_VERDICT_PASS;
	if (res != AG_FLOW_OOW)
		return AG_VERDICT_MAX;
	*reason = AG_REASON_OUT_OF_WINDOW;
	return (cfg->flags & AG_F_LIBERAL) ? AG_VERDICT_PASS : AG_VERDICT_DROP;
}

/* The verdict on a parsed packet under cfg; *reason says why. */
static __always_inline int ag_verdict(const struct ag_gen_config *cfg, __u32 slot,
				      const struct ag_pkt *pkt, __u32 dir, __u8 *reason)
{
	int essential, match, learned, res, verdict, found;
	__u32 op, stateful, hint;

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
	stateful = cfg->flags & AG_F_STATEFUL;
	/* No ports to judge by: the datagram's first fragment was judged (frag.h). */
	if (stateful && pkt->frag == AG_FRAG_LATER) {
		found = ag_frag_find(pkt);
		if (found > 0 && found <= AG_REASON_MAX) {
			*reason = found - 1;
			return AG_VERDICT_PASS;
		}
		*reason = AG_REASON_FRAGMENT_ORPHAN;
		return AG_VERDICT_DROP;
	}
	essential = ag_essential(pkt, cfg->flags, dir);
	if (essential != AG_NO_ESSENTIAL) {
		*reason = essential;
		if (!stateful)
			return AG_VERDICT_PASS;
		if (essential == AG_REASON_ICMP_ERROR)
			op = AG_FLOW_OP_RELATED;
		else if (essential == AG_REASON_DHCP)
			op = AG_FLOW_OP_DHCP;
		else
			return AG_VERDICT_PASS;
		if (ag_flow(pkt, dir, op, slot) == AG_FLOW_PASS)
			return AG_VERDICT_PASS;
		*reason = AG_REASON_NO_FLOW;
		return AG_VERDICT_DROP;
	}

	/*
	 * The generation's tables first; a tracked answer stops there. Learned addresses
	 * only when the tables did not settle it (their forward path may still allow it).
	 */
	*reason = AG_REASON_POLICY;
	/*
	 * An assured flow that remembers this generation's tables allowing it needs no
	 * table lookup; where there is none, the flow calls below need not look for one.
	 */
	hint = 0;
	if (stateful && !ag_flow_peer_maybe(pkt->family, ag_remote(pkt, dir))) {
		hint = AG_FLOW_F_NO_ASSURED;
	} else if (stateful) {
		res = ag_flow_remembered(pkt, dir, slot);
		if (res == AG_FLOW_NOT_ASSURED)
			hint = AG_FLOW_F_NO_ASSURED;
		verdict = ag_flow_verdict(cfg, res, reason);
		if (verdict != AG_VERDICT_MAX)
			return verdict;
	}
	match = ag_table_match(slot, cfg->flags, pkt, dir);
	if (match == AG_MATCH_NO_TABLES) {
		*reason = AG_REASON_NO_POLICY;
		return AG_VERDICT_DROP;
	}
	if (match == AG_MATCH_FORWARD) {
		if (!stateful)
			return AG_VERDICT_PASS;
		res = ag_flow(pkt, dir, AG_FLOW_OP_OPEN | AG_FLOW_F_TABLES | hint, slot);
		verdict = ag_flow_verdict(cfg, res, reason);
		return verdict == AG_VERDICT_MAX ? AG_VERDICT_PASS : verdict;
	}
	if (match == AG_MATCH_RETURN) {
		if (!stateful)
			return AG_VERDICT_PASS;
		res = ag_flow_answer(pkt, dir, AG_FLOW_OP_RETURN | AG_FLOW_F_TABLES | hint, slot);
		verdict = ag_flow_verdict(cfg, res, reason);
		if (verdict != AG_VERDICT_MAX)
			return verdict;
	}
	learned = ag_learned_match(pkt, dir);
	if (learned == AG_MATCH_FORWARD) {
		if (!stateful)
			return AG_VERDICT_PASS;
		res = ag_flow(pkt, dir, AG_FLOW_OP_OPEN | hint, slot);
		verdict = ag_flow_verdict(cfg, res, reason);
		return verdict == AG_VERDICT_MAX ? AG_VERDICT_PASS : verdict;
	}
	/* The same flow was asked for already when the tables gave a return path. */
	if (learned == AG_MATCH_RETURN && match != AG_MATCH_RETURN) {
		if (!stateful)
			return AG_VERDICT_PASS;
		res = ag_flow_answer(pkt, dir, AG_FLOW_OP_RETURN | hint, slot);
		verdict = ag_flow_verdict(cfg, res, reason);
		if (verdict != AG_VERDICT_MAX)
			return verdict;
	}
	if (stateful && (match == AG_MATCH_RETURN || learned == AG_MATCH_RETURN))
		*reason = AG_REASON_NO_FLOW;
	return AG_VERDICT_DROP;
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
	if (verdict == AG_VERDICT_PASS) {
		/* Its datagram's other fragments pass as it did (frag.h). */
		if (pkt->frag == AG_FRAG_FIRST && cfg && (cfg->flags & AG_F_STATEFUL))
			ag_frag_note(pkt, reason);
		return AG_VERDICT_PASS;
	}

	ag_report_drop(pkt, cfg ? cfg->generation : 0, ifindex, dir, reason, enforced);
	return enforced ? AG_VERDICT_DROP : AG_VERDICT_PASS;
}

#endif /* ALLOWGATE_JUDGE_H */
