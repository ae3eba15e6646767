/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h - packet parsing: Ethernet, VLAN tags, IPv4 (options skipped),
 * IPv6 and its extension-header chain, and the L4 fields the policy needs.
 *
 * Every function returns AG_PARSE_OK or the reason the packet can't be judged
 * safely (it is then dropped). Only what is read here is trusted: a header that
 * does not fit between data and data_end is never guessed at.
 */
#ifndef ALLOWGATE_PARSE_H
#define ALLOWGATE_PARSE_H

#include "common.h"

struct ag_vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct ag_ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ag_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;	/* offset << 3 | M */
	__be32 identification;
};

#define AG_IPV4_MF		0x2000
#define AG_IPV4_OFFSET_MASK	0x1fff
#define AG_IPV6_FRAG_OFFSET_MASK 0xfff8

/* The UDP ports of the DHCP client's exchanges, either way. */
static __always_inline int ag_is_dhcp_ports(__u16 sport, __u16 dport)
{
	return (sport == 68 && dport == 67) || (sport == 67 && dport == 68) ||
	       (sport == 546 && dport == 547) || (sport == 547 && dport == 546);
}

/*
 * The transaction id of a DHCP message in the UDP datagram at bytes: DHCPv4's xid is
 * the 4 bytes at offset 4 of the message (RFC 2131), DHCPv6's the 3 after its message
 * type (RFC 8415). Only when those bytes are in the datagram.
 */
static __always_inline void ag_parse_dhcp_xid(__u8 *bytes, __u64 l4_off, __u64 ip_end,
					      void *data_end, struct ag_pkt *pkt)
{
	__u8 *msg = bytes + AG_UDP_HDR_LEN;

	if (!ag_is_dhcp_ports(pkt->sport, pkt->dport))
		return;
	if ((void *)(msg + 8) > data_end || l4_off + AG_UDP_HDR_LEN + 8 > ip_end)
		return;
	if (pkt->sport == 68 || pkt->sport == 67)
		pkt->dhcp_xid = ((__u32)msg[4] << 24) | ((__u32)msg[5] << 16) |
				((__u32)msg[6] << 8) | msg[7];
	else
		pkt->dhcp_xid = ((__u32)msg[1] << 16) | ((__u32)msg[2] << 8) | msg[3];
	pkt->has_xid = 1;
}

/*
 * Reads ports, TCP flags or the ICMP type at l4 (data + l4_off). icmp_proto is the ICMP of
 * this family (1 on IPv4, 58 on IPv6; the other one is just a protocol without
 * ports there). too_short is the reason when the header is cut: TRUNCATED for a
 * whole datagram, FRAG_TOO_SHORT or V6_FRAG_CHAIN for a first fragment (whose
 * later fragments can't be checked). ip_end is the offset from data where the IP
 * datagram ends (its total or payload length says so): bytes past it, in the frame's
 * padding, are not the datagram's and must not stand in for a header it lacks.
 */
static __always_inline int ag_parse_l4(void *l4, __u64 l4_off, __u64 ip_end, void *data_end,
				       struct ag_pkt *pkt, __u8 icmp_proto, int too_short)
{
	__u8 *bytes = l4;

	if (pkt->l4proto == AG_IPPROTO_TCP) {
		__u64 hdr_len;

		if (l4 + AG_TCP_HDR_LEN > data_end || l4_off + AG_TCP_HDR_LEN > ip_end)
			return too_short;
		pkt->sport = bpf_ntohs(*(__be16 *)&bytes[0]);
		pkt->dport = bpf_ntohs(*(__be16 *)&bytes[2]);
		pkt->tcp_seq = bpf_ntohl(*(__be32 *)&bytes[4]);
		pkt->tcp_ack = bpf_ntohl(*(__be32 *)&bytes[8]);
		pkt->tcp_flags = bytes[13];
		pkt->tcp_win = bpf_ntohs(*(__be16 *)&bytes[14]);
		pkt->l4_off = l4_off;
		/*
		 * The payload's length, which connection tracking counts into the sequence
		 * space. A data offset below 5 or past the datagram leaves it 0: the
		 * segment then claims less than it carries, which only narrows what it
		 * may do.
		 */
		hdr_len = (bytes[12] >> 4) * 4;
		pkt->tcp_hdr_len = hdr_len;
		pkt->tcp_wscale = 0xff;
		if (hdr_len >= AG_TCP_HDR_LEN && l4_off + hdr_len <= ip_end)
			pkt->tcp_len = ip_end - l4_off - hdr_len;
	} else if (pkt->l4proto == AG_IPPROTO_UDP) {
		if (l4 + AG_UDP_HDR_LEN > data_end || l4_off + AG_UDP_HDR_LEN > ip_end)
			return too_short;
		pkt->sport = bpf_ntohs(*(__be16 *)&bytes[0]);
		pkt->dport = bpf_ntohs(*(__be16 *)&bytes[2]);
		/* Where a DNS answer's payload starts (lib/dns.h). */
		pkt->l4_off = l4_off;
		/* The DNS id, which connection tracking matches answers by (lib/flow.h). */
		if ((pkt->sport == AG_DNS_PORT || pkt->dport == AG_DNS_PORT) &&
		    l4 + AG_UDP_HDR_LEN + 2 <= data_end && l4_off + AG_UDP_HDR_LEN + 2 <= ip_end) {
			pkt->dns_id = ((__u16)bytes[AG_UDP_HDR_LEN] << 8) | bytes[AG_UDP_HDR_LEN + 1];
			pkt->has_dns_id = 1;
		}
		/* A DHCP client exchange's transaction id, which its replies must carry. */
		ag_parse_dhcp_xid(bytes, l4_off, ip_end, data_end, pkt);
	} else if (pkt->l4proto == icmp_proto) {
		if (l4 + AG_ICMP_HDR_LEN > data_end || l4_off + AG_ICMP_HDR_LEN > ip_end)
			return too_short;
		pkt->icmp_type = bytes[0];
		/* An error's quoted header starts 8 bytes in (ag_read_quote_*()). */
		pkt->l4_off = l4_off;
		if (pkt->icmp_type == AG_ICMP_ECHO || pkt->icmp_type == AG_ICMP_ECHO_REPLY ||
		    pkt->icmp_type == AG_ICMPV6_ECHO_REQUEST || pkt->icmp_type == AG_ICMPV6_ECHO_REPLY)
			pkt->icmp_id = bpf_ntohs(*(__be16 *)&bytes[4]);
	}
	/* Anything else has no ports: judged on addresses and protocol. */
	return AG_PARSE_OK;
}

static __always_inline int ag_parse_ipv4(void *l3, __u32 l3_off, void *data_end,
					 struct ag_pkt *pkt)
{
	struct iphdr *iph = l3;
	__u32 hdr_len;
	__u16 frag_off;
	__u64 ip_end;

	pkt->family = 4;
	if ((void *)(iph + 1) > data_end)
		return AG_REASON_TRUNCATED;
	pkt->saddr.v4 = iph->saddr;
	pkt->daddr.v4 = iph->daddr;
	pkt->l4proto = iph->protocol;

	if (iph->version != 4)
		return AG_REASON_MALFORMED;
	if (iph->ihl < 5)
		return AG_REASON_BAD_IHL;
	hdr_len = iph->ihl * 4;
	if (l3 + hdr_len > data_end)
		return AG_REASON_TRUNCATED;
	if (bpf_ntohs(iph->tot_len) < hdr_len)
		return AG_REASON_BAD_IHL;

	frag_off = bpf_ntohs(iph->frag_off);
	pkt->frag_id = bpf_ntohs(iph->id);
	if (frag_off & AG_IPV4_OFFSET_MASK) {
		pkt->frag = AG_FRAG_LATER;
		/* Offset 8 could rewrite the TCP flags of the first fragment. */
		if (pkt->l4proto == AG_IPPROTO_TCP && (frag_off & AG_IPV4_OFFSET_MASK) == 1)
			return AG_REASON_FRAG_OVERLAP;
		return AG_PARSE_OK;
	}
	ip_end = (__u64)l3_off + bpf_ntohs(iph->tot_len);
	if (frag_off & AG_IPV4_MF) {
		pkt->frag = AG_FRAG_FIRST;
		return ag_parse_l4(l3 + hdr_len, l3_off + hdr_len, ip_end, data_end, pkt,
				   AG_IPPROTO_ICMP, AG_REASON_FRAG_TOO_SHORT);
	}
	return ag_parse_l4(l3 + hdr_len, l3_off + hdr_len, ip_end, data_end, pkt, AG_IPPROTO_ICMP,
			   AG_REASON_TRUNCATED);
}

/* ::ffff:0:0/96 has no business on an IPv6 wire and may confuse v4 rules. */
static __always_inline int ag_ipv6_is_v4_mapped(const union ag_addr *addr)
{
	return addr->v6[0] == 0 && addr->v6[1] == 0 &&
	       addr->v6[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int ag_ipv6_is_ext_hdr(__u8 nexthdr)
{
	return nexthdr == AG_IPPROTO_HOPOPTS || nexthdr == AG_IPPROTO_ROUTING ||
	       nexthdr == AG_IPPROTO_DSTOPTS || nexthdr == AG_IPPROTO_FRAGMENT ||
	       nexthdr == AG_IPPROTO_AH;
}

/* Longest IPv6 header chain (from the start of the frame) the walk follows. */
#define AG_V6_CHAIN_MAX		0xfff

/*
 * Returns v unchanged, but as a global function its result is unknown to the
 * verifier (it checks global functions on their own). The extension-header
 * walk passes its offset through here so that every mix of header kinds and
 * lengths before it reaches the verifier as the same state; otherwise each
 * mix is a state of its own and the walk alone costs ~90k verified
 * instructions per program. Called only for packets with extension headers.
 */
__attribute__((noinline)) __u64 ag_verifier_forget(__u64 v)
{
	asm volatile("" : "+r"(v));
	return v;
}

/* l3 is data + l3_off: the walk works on offsets from data. */
static __always_inline int ag_parse_ipv6(void *data, __u32 l3_off, void *data_end,
					 struct ag_pkt *pkt)
{
	struct ipv6hdr *ip6 = data + l3_off;
	/* 64 bits: no zero-extension copy for clang to bound-check instead. */
	__u64 off = l3_off + sizeof(*ip6);
	__u64 ip_end;
	int too_short = AG_REASON_TRUNCATED;
	__u8 nexthdr;
	__u32 i;

	pkt->family = 6;
	if ((void *)(ip6 + 1) > data_end)
		return AG_REASON_TRUNCATED;
	__builtin_memcpy(&pkt->saddr, &ip6->saddr, sizeof(pkt->saddr));
	__builtin_memcpy(&pkt->daddr, &ip6->daddr, sizeof(pkt->daddr));
	nexthdr = ip6->nexthdr;
	pkt->l4proto = nexthdr;

	if (ip6->version != 6)
		return AG_REASON_MALFORMED;
	if (ag_ipv6_is_v4_mapped(&pkt->saddr) || ag_ipv6_is_v4_mapped(&pkt->daddr))
		return AG_REASON_V4_MAPPED;
	pkt->hop_limit = ip6->hop_limit;
	/* A jumbogram (payload length 0) has no L4 header inside this bound: dropped. */
	ip_end = off + bpf_ntohs(ip6->payload_len);

	for (i = 0; i < AG_MAX_V6_EXT_HDRS; i++) {
		struct ag_ipv6_opt_hdr *opt;
		struct ag_ipv6_frag_hdr *frag;
		__u64 len;

		if (!ag_ipv6_is_ext_hdr(nexthdr))
			goto chain_end;
		off = ag_verifier_forget(off);
		/* Only reachable with 4 KiB of headers actually in the packet. */
		if (off > AG_V6_CHAIN_MAX)
			return AG_REASON_V6_CHAIN_TOO_LONG;
		opt = data + off;
		frag = data + off;

		switch (nexthdr) {
		case AG_IPPROTO_FRAGMENT:
			if ((void *)(frag + 1) > data_end)
				return too_short;
			nexthdr = frag->nexthdr;
			pkt->frag_id = bpf_ntohl(frag->identification);
			if (bpf_ntohs(frag->frag_off) & AG_IPV6_FRAG_OFFSET_MASK) {
				/* Its next header names the protocol; no L4 here. */
				pkt->frag = AG_FRAG_LATER;
				pkt->l4proto = nexthdr;
				/* Offset 8 could rewrite the TCP flags of the first fragment. */
				if (nexthdr == AG_IPPROTO_TCP &&
				    (bpf_ntohs(frag->frag_off) & AG_IPV6_FRAG_OFFSET_MASK) == 8)
					return AG_REASON_FRAG_OVERLAP;
				return AG_PARSE_OK;
			}
			/* The rest of the chain and the L4 header must be here. */
			pkt->frag = AG_FRAG_FIRST;
			too_short = AG_REASON_V6_FRAG_CHAIN;
			len = sizeof(*frag);
			break;
		case AG_IPPROTO_AH:
			if ((void *)(opt + 1) > data_end)
				return too_short;
			len = ((__u64)opt->hdrlen + 2) * 4;
			nexthdr = opt->nexthdr;
			break;
		default:	/* hop-by-hop, routing, destination options */
			if ((void *)(opt + 1) > data_end)
				return too_short;
			len = ((__u64)opt->hdrlen + 1) * 8;
			nexthdr = opt->nexthdr;
			break;
		}
		off += len;
		if (data + off > data_end)
			return too_short;
		pkt->l4proto = nexthdr;
	}
	if (ag_ipv6_is_ext_hdr(nexthdr))
		return AG_REASON_V6_CHAIN_TOO_LONG;

chain_end:
	if (off > AG_V6_CHAIN_MAX)
		return AG_REASON_V6_CHAIN_TOO_LONG;
	return ag_parse_l4(data + off, off, ip_end, data_end, pkt, AG_IPPROTO_ICMPV6, too_short);
}

/*
 * Ethernet and up to AG_MAX_VLAN_DEPTH tags, then the network layer. Non-IP
 * packets come back AG_PARSE_OK with family 0: whether their ethertype may
 * pass is the policy's call, not the parser's.
 */
static __always_inline int ag_parse_eth(void *data, void *data_end, struct ag_pkt *pkt)
{
	struct ethhdr *eth = data;
	__u32 l3_off = sizeof(*eth);
	__u16 proto;
	__u32 i;

	if ((void *)(eth + 1) > data_end)
		return AG_REASON_TRUNCATED;
	proto = bpf_ntohs(eth->h_proto);

	for (i = 0; i < AG_MAX_VLAN_DEPTH; i++) {
		struct ag_vlan_hdr *vlan = data + l3_off;

		if (proto != AG_ETH_P_8021Q && proto != AG_ETH_P_8021AD)
			break;
		if ((void *)(vlan + 1) > data_end) {
			pkt->ethertype = proto;
			return AG_REASON_TRUNCATED;
		}
		proto = bpf_ntohs(vlan->encapsulated_proto);
		l3_off += sizeof(*vlan);
	}
	pkt->ethertype = proto;
	if (proto == AG_ETH_P_8021Q || proto == AG_ETH_P_8021AD)
		return AG_REASON_VLAN_DEPTH;

	if (proto == ETH_P_IP)
		return ag_parse_ipv4(data + l3_off, l3_off, data_end, pkt);
	if (proto == ETH_P_IPV6)
		return ag_parse_ipv6(data, l3_off, data_end, pkt);
	return AG_PARSE_OK;
}

/* The ICMP of the packet's family: ICMP on IPv4, ICMPv6 on IPv6. */
static __always_inline int ag_is_icmp(const struct ag_pkt *pkt)
{
	return (pkt->family == 4 && pkt->l4proto == AG_IPPROTO_ICMP) ||
	       (pkt->family == 6 && pkt->l4proto == AG_IPPROTO_ICMPV6);
}

/*
 * The protocol as port rules name it: AG_PROTO_ICMP for the family's ICMP;
 * AG_PROTO_NONE for the other family's ICMP number (ICMPv4 inside IPv6, ICMPv6
 * inside IPv4), which no ICMP rule allows, only an any-protocol one.
 */
static __always_inline __u8 ag_rule_proto(const struct ag_pkt *pkt)
{
	if (ag_is_icmp(pkt))
		return AG_PROTO_ICMP;
	if (pkt->l4proto == AG_IPPROTO_ICMP || pkt->l4proto == AG_IPPROTO_ICMPV6)
		return AG_PROTO_NONE;
	return pkt->l4proto;
}

/*
 * A return path never opens a connection: not a TCP segment with SYN set and
 * ACK clear, not an ICMP message other than an echo reply.
 */
static __always_inline int ag_return_ok(const struct ag_pkt *pkt)
{
	if (pkt->l4proto == AG_IPPROTO_TCP)
		return !((pkt->tcp_flags & AG_TCP_FLAG_SYN) && !(pkt->tcp_flags & AG_TCP_FLAG_ACK));
	if (ag_is_icmp(pkt))
		return pkt->icmp_type ==
		       (pkt->family == 4 ? AG_ICMP_ECHO_REPLY : AG_ICMPV6_ECHO_REPLY);
	return 1;
}

/*
 * Parses the frame at [data, data_end) into *pkt, its head zeroed first (common.h), and derives what
 * the rule match needs (done here, where the verifier walks each parse path
 * anyway, rather than as branches in the judging core).
 */
static __always_inline void ag_parse(void *data, void *data_end, struct ag_pkt *pkt)
{
	__builtin_memset(pkt, 0, AG_PKT_ZEROED);
	pkt->parse_result = ag_parse_eth(data, data_end, pkt);
	pkt->rule_proto = ag_rule_proto(pkt);
	pkt->return_ok = ag_return_ok(pkt);
}

/* Reasons a pull of a non-linear skb might turn into something to judge. */
static __always_inline int ag_parse_cut_short(const struct ag_pkt *pkt)
{
	return pkt->parse_result == AG_REASON_TRUNCATED ||
	       pkt->parse_result == AG_REASON_FRAG_TOO_SHORT ||
	       pkt->parse_result == AG_REASON_V6_FRAG_CHAIN;
}

#endif /* ALLOWGATE_PARSE_H */
