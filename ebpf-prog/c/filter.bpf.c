// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * filter.bpf.c - the allowgate entry points: XDP for ingress (alone, or as a
 * component of a libxdp dispatcher), TC (tcx or clsact) for egress. Each parses its packet (lib/parse.h) and hands the
 * parsed facts to the shared core (lib/judge.h); then it only translates the
 * verdict into its hook's return code, XDP after holding the DNS answers the
 * learner wants, TC after noting the DNS queries whose answers it may hold
 * (lib/dns.h).
 */
#include "lib/common.h"
#include "lib/parse.h"
#include "lib/judge.h"
#include "lib/dns.h"
#include "lib/quote.h"
#include "lib/tcpopt.h"

/*
 * Headers a non-linear skb must have in its linear part for the filter to read
 * them: Ethernet, two VLAN tags, IPv6 with a few extension headers, TCP with
 * options. Pulled only after a first parse found the headers cut short.
 */
#define AG_TC_PULL_LEN	256

/*
 * The packet being judged, per CPU and per hook: not on the entry points' stack, which
 * the judging functions' frames (lib/flow.h, lib/tcpwin.h) need under the verifier's
 * 512 bytes per call chain. A program runs to its end before the next one on its CPU
 * starts; the two hooks keep slots apart all the same.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AG_DIR_MAX);
	__type(key, __u32);
	__type(value, struct ag_pkt);
} ag_pkt_scratch SEC(".maps");

/* A DHCP client exchange whose transaction id the parse could not read (not linear). */
static __always_inline int ag_dhcp_xid_missing(const struct ag_pkt *pkt)
{
	return pkt->parse_result == AG_PARSE_OK && pkt->l4proto == AG_IPPROTO_UDP && !pkt->has_xid &&
	       ag_is_dhcp_ports(pkt->sport, pkt->dport);
}

static __always_inline int ag_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 slot = AG_DIR_INGRESS;
	struct ag_pkt *pkt;

	pkt = bpf_map_lookup_elem(&ag_pkt_scratch, &slot);
	if (!pkt)
		return XDP_DROP;
	ag_parse(data, data_end, pkt);
	/* An ICMP error passes by the flow it quotes (lib/flow.h). */
	if (pkt->parse_result == AG_PARSE_OK && pkt->frag != AG_FRAG_LATER && ag_is_icmp_error(pkt))
		ag_read_quote_xdp(ctx, pkt);
	/* A SYN's window scale, which tracking reads its flow's windows by (lib/tcpwin.h). */
	if (ag_tcp_opts_wanted(pkt))
		ag_read_tcp_opts_xdp(ctx, pkt);
	if (ag_judge(pkt, AG_DIR_INGRESS, data_end - data, ctx->ingress_ifindex) != AG_VERDICT_PASS)
		return XDP_DROP;
	/*
	 * A DNS answer the learner wants goes to it instead (lib/dns.h); the
	 * counters already have it as a pass. Monitor mode holds the same way:
	 * the agent gives every answer back.
	 */
	if (ag_dns_maybe_answer(pkt) && ag_dns_hold(ctx, pkt))
		return XDP_DROP;
	return XDP_PASS;
}

/* Ingress attached alone, through a bpf_link of its own. */
SEC("xdp")
int allowgate_ingress(struct xdp_md *ctx)
{
	return ag_ingress(ctx);
}

/*
 * The same ingress as one component of a libxdp dispatcher: an extension
 * (freplace) of one of its stub slots, loaded only in that mode. Its name fits
 * the kernel's 15 characters, so libxdp and bpftool show it whole.
 */
SEC("freplace")
int allowgate_xdp(struct xdp_md *ctx)
{
	return ag_ingress(ctx);
}

SEC("classifier")
int allowgate_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 linear = data_end - data;
	__u32 slot = AG_DIR_EGRESS;
	struct ag_pkt *pkt;

	pkt = bpf_map_lookup_elem(&ag_pkt_scratch, &slot);
	if (!pkt)
		return TC_ACT_SHOT;
	ag_parse(data, data_end, pkt);
	/*
	 * Locally built packets keep their headers in the linear part; when one
	 * does not, pull them in and parse again rather than drop it as cut (or,
	 * for a DHCP request, without the transaction id its reply must carry).
	 */
	if ((ag_parse_cut_short(pkt) || ag_dhcp_xid_missing(pkt)) && skb->len > linear &&
	    linear < AG_TC_PULL_LEN) {
		__u32 want = skb->len < AG_TC_PULL_LEN ? skb->len : AG_TC_PULL_LEN;

		if (bpf_skb_pull_data(skb, want) == 0) {
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			ag_parse(data, data_end, pkt);
		}
	}
	if (pkt->parse_result == AG_PARSE_OK && pkt->frag != AG_FRAG_LATER && ag_is_icmp_error(pkt))
		ag_read_quote_skb(skb, pkt);
	if (ag_tcp_opts_wanted(pkt))
		ag_read_tcp_opts_skb(skb, pkt);
	if (ag_judge(pkt, AG_DIR_EGRESS, skb->len, skb->ifindex) != AG_VERDICT_PASS)
		return TC_ACT_SHOT;
	/* A query to a resolver: only its answer may be held (lib/dns.h). */
	if (ag_dns_maybe_query(pkt))
		ag_dns_note_query(skb, pkt);
	/* A pass is TC_ACT_UNSPEC: tcx/clsact programs after us still run. */
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "Dual BSD/GPL";
