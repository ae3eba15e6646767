/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * quote.h - the header an ICMP or ICMPv6 error quotes: the addresses, protocol and
 * ports (or echo identifier) of the packet that caused it, which connection tracking
 * looks up as a flow (lib/flow.h). Read with the hook's load-bytes helper rather than
 * by direct access, so the parser's paths don't grow and a quote in a non-linear
 * skb reads as well as a linear one. Only the quoted IP header itself is read: a
 * quoted IPv6 extension header or a quoted non-first fragment names no flow.
 */
#ifndef ALLOWGATE_QUOTE_H
#define ALLOWGATE_QUOTE_H

#include "common.h"

/* Quoted IPv4 header (without options) and IPv6 header. */
#define AG_QUOTE_V4_LEN		20
#define AG_QUOTE_V6_LEN		40

/* The parser puts no L4 header further in than this (AG_V6_CHAIN_MAX). */
#define AG_QUOTE_OFF_MAX	0xfff

/* Fills pkt->q_* from the quoted IP header ip and the first 8 bytes l4 of what it carried. */
static __always_inline void ag_quote_fill(struct ag_pkt *pkt, const __u8 *ip, const __u8 *l4)
{
	__u8 proto;

	if (pkt->family == 4) {
		proto = ip[9];
		__builtin_memcpy(&pkt->q_saddr.v4, &ip[12], 4);
		__builtin_memcpy(&pkt->q_daddr.v4, &ip[16], 4);
	} else {
		proto = ip[6];
		__builtin_memcpy(pkt->q_saddr.bytes, &ip[8], 16);
		__builtin_memcpy(pkt->q_daddr.bytes, &ip[24], 16);
	}
	pkt->q_proto = proto;
	if (proto == AG_IPPROTO_TCP || proto == AG_IPPROTO_UDP) {
		pkt->q_sport = ((__u16)l4[0] << 8) | l4[1];
		pkt->q_dport = ((__u16)l4[2] << 8) | l4[3];
	} else if ((pkt->family == 4 && proto == AG_IPPROTO_ICMP) ||
		   (pkt->family == 6 && proto == AG_IPPROTO_ICMPV6)) {
		/* A quoted echo: its identifier, in both (lib/flow.h). */
		pkt->q_sport = ((__u16)l4[4] << 8) | l4[5];
		pkt->q_dport = pkt->q_sport;
	}
	pkt->q_ok = 1;
}

/*
 * Checks the quoted header at ip (its first AG_QUOTE_V4_LEN or AG_QUOTE_V6_LEN bytes)
 * and returns where, from it, the L4 header starts; 0 when it names no flow.
 */
static __always_inline __u32 ag_quote_l4_at(const struct ag_pkt *pkt, const __u8 *ip)
{
	__u32 ihl;

	if (pkt->family == 4) {
		if ((ip[0] >> 4) != 4)
			return 0;
		ihl = (ip[0] & 0xf) * 4;
		if (ihl < AG_QUOTE_V4_LEN)
			return 0;
		/* A non-first fragment: no ports. */
		if (((ip[6] & 0x1f) | ip[7]) != 0)
			return 0;
		return ihl;
	}
	if ((ip[0] >> 4) != 6)
		return 0;
	return AG_QUOTE_V6_LEN;
}

/* The quote of an ICMP error seen by XDP. A global function: checked once. */
__attribute__((noinline)) int ag_read_quote_xdp(struct xdp_md *ctx, struct ag_pkt *pkt)
{
	__u8 ip[AG_QUOTE_V6_LEN];
	__u8 l4[8];
	__u32 off, at;

	if (!pkt)
		return 0;
	off = pkt->l4_off;
	if (off > AG_QUOTE_OFF_MAX)
		return 0;
	off += AG_ICMP_HDR_LEN;
	if (pkt->family == 4) {
		if (bpf_xdp_load_bytes(ctx, off, ip, AG_QUOTE_V4_LEN) != 0)
			return 0;
	} else if (bpf_xdp_load_bytes(ctx, off, ip, AG_QUOTE_V6_LEN) != 0) {
		return 0;
	}
	at = ag_quote_l4_at(pkt, ip);
	if (at == 0 || bpf_xdp_load_bytes(ctx, off + at, l4, sizeof(l4)) != 0)
		return 0;
	ag_quote_fill(pkt, ip, l4);
	return 1;
}

/* The same for TC. */
__attribute__((noinline)) int ag_read_quote_skb(struct __sk_buff *skb, struct ag_pkt *pkt)
{
	__u8 ip[AG_QUOTE_V6_LEN];
	__u8 l4[8];
	__u32 off, at;

	if (!pkt)
		return 0;
	off = pkt->l4_off;
	if (off > AG_QUOTE_OFF_MAX)
		return 0;
	off += AG_ICMP_HDR_LEN;
	if (pkt->family == 4) {
		if (bpf_skb_load_bytes(skb, off, ip, AG_QUOTE_V4_LEN) != 0)
			return 0;
	} else if (bpf_skb_load_bytes(skb, off, ip, AG_QUOTE_V6_LEN) != 0) {
		return 0;
	}
	at = ag_quote_l4_at(pkt, ip);
	if (at == 0 || bpf_skb_load_bytes(skb, off + at, l4, sizeof(l4)) != 0)
		return 0;
	ag_quote_fill(pkt, ip, l4);
	return 1;
}

#endif /* ALLOWGATE_QUOTE_H */
