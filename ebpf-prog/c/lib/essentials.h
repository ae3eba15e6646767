/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * essentials.h - traffic a host needs whatever the policy says, each kind
 * switched by its AG_F_* flag: IPv6 neighbour discovery and MLD (RFC 4890),
 * ICMP errors (path MTU discovery), and the DHCP client. DNS to the resolvers
 * is not here: the agent compiles it into ordinary rules.
 *
 * Only whole datagrams and first fragments come here: they carry the ICMP type
 * or the ports these checks need.
 */
#ifndef ALLOWGATE_ESSENTIALS_H
#define ALLOWGATE_ESSENTIALS_H

#include "common.h"

#define AG_ICMP_DEST_UNREACH	3
#define AG_ICMP_TIME_EXCEEDED	11
#define AG_ICMP_PARAMETERPROB	12

#define AG_ICMPV6_DEST_UNREACH	1
#define AG_ICMPV6_PKT_TOOBIG	2
#define AG_ICMPV6_TIME_EXCEED	3
#define AG_ICMPV6_PARAMPROB	4

#define AG_ICMPV6_MLD_QUERY	130
#define AG_ICMPV6_MLD_REPORT	131
#define AG_ICMPV6_MLD_DONE	132
#define AG_ICMPV6_ROUTER_SOLICIT 133
#define AG_ICMPV6_REDIRECT	137
#define AG_ICMPV6_MLD2_REPORT	143

/* RFC 4861: ND messages are only valid with hop limit 255 (never routed). */
#define AG_ND_HOP_LIMIT		255

#define AG_DHCP_SERVER_PORT	67
#define AG_DHCP_CLIENT_PORT	68
#define AG_DHCPV6_CLIENT_PORT	546
#define AG_DHCPV6_SERVER_PORT	547

/* ag_essential(): no essential covers the packet, the policy decides. */
#define AG_NO_ESSENTIAL		(-1)

/* fe80::/10 or :: - where MLD messages come from (RFC 3810). */
static __always_inline int ag_mld_source_ok(const union ag_addr *src)
{
	if ((src->bytes[0] == 0xfe) && ((src->bytes[1] & 0xc0) == 0x80))
		return 1;
	return (src->v6[0] | src->v6[1] | src->v6[2] | src->v6[3]) == 0;
}

static __always_inline int ag_is_nd(const struct ag_pkt *pkt)
{
	__u8 type = pkt->icmp_type;

	if (pkt->family != 6 || pkt->l4proto != AG_IPPROTO_ICMPV6)
		return 0;
	if (type >= AG_ICMPV6_ROUTER_SOLICIT && type <= AG_ICMPV6_REDIRECT)
		return pkt->hop_limit == AG_ND_HOP_LIMIT;
	if (type == AG_ICMPV6_MLD_QUERY || type == AG_ICMPV6_MLD_REPORT ||
	    type == AG_ICMPV6_MLD_DONE || type == AG_ICMPV6_MLD2_REPORT)
		return ag_mld_source_ok(&pkt->saddr);
	return 0;
}

static __always_inline int ag_is_icmp_error(const struct ag_pkt *pkt)
{
	__u8 type = pkt->icmp_type;

	if (pkt->family == 4 && pkt->l4proto == AG_IPPROTO_ICMP)
		return type == AG_ICMP_DEST_UNREACH || type == AG_ICMP_TIME_EXCEEDED ||
		       type == AG_ICMP_PARAMETERPROB;
	if (pkt->family == 6 && pkt->l4proto == AG_IPPROTO_ICMPV6)
		return type >= AG_ICMPV6_DEST_UNREACH && type <= AG_ICMPV6_PARAMPROB;
	return 0;
}

/*
 * The client side of DHCPv4 and DHCPv6, in the direction each message flows:
 * egress client -> server, ingress server -> client. Picks by arithmetic on
 * dir rather than a branch (see ag_judge()).
 */
static __always_inline int ag_is_dhcp_client(const struct ag_pkt *pkt, __u32 dir)
{
	__u32 client, server, egress_mask, from, to;

	if (pkt->l4proto != AG_IPPROTO_UDP)
		return 0;
	if (pkt->family == 4) {
		client = AG_DHCP_CLIENT_PORT;
		server = AG_DHCP_SERVER_PORT;
	} else {
		client = AG_DHCPV6_CLIENT_PORT;
		server = AG_DHCPV6_SERVER_PORT;
	}
	egress_mask = -dir;	/* all ones on egress, 0 on ingress */
	from = server ^ ((client ^ server) & egress_mask);
	to = client ^ ((client ^ server) & egress_mask);
	return pkt->sport == from && pkt->dport == to;
}

/* The reason an essential lets the packet pass, or AG_NO_ESSENTIAL. */
static __always_inline int ag_essential(const struct ag_pkt *pkt, __u32 flags, __u32 dir)
{
	if (pkt->frag == AG_FRAG_LATER)
		return AG_NO_ESSENTIAL;
	if ((flags & AG_F_ND) && ag_is_nd(pkt))
		return AG_REASON_ND;
	if ((flags & AG_F_ICMP_ERRORS) && ag_is_icmp_error(pkt))
		return AG_REASON_ICMP_ERROR;
	if ((flags & AG_F_DHCP) && ag_is_dhcp_client(pkt, dir))
		return AG_REASON_DHCP;
	return AG_NO_ESSENTIAL;
}

#endif /* ALLOWGATE_ESSENTIALS_H */
