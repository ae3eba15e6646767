/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * common.h - headers, protocol numbers and small helpers every part of the
 * filter uses. Only uapi headers: the programs must build on a machine without
 * a vmlinux.h.
 */
#ifndef ALLOWGATE_COMMON_H
#define ALLOWGATE_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"

/* Ethertypes (host byte order) the parser knows besides IPv4/IPv6/ARP. */
#define AG_ETH_P_8021Q		0x8100
#define AG_ETH_P_8021AD		0x88a8

/* IP protocol and IPv6 next-header numbers. */
#define AG_IPPROTO_HOPOPTS	0
#define AG_IPPROTO_ICMP		1
#define AG_IPPROTO_TCP		6
#define AG_IPPROTO_UDP		17
#define AG_IPPROTO_ROUTING	43
#define AG_IPPROTO_FRAGMENT	44
#define AG_IPPROTO_AH		51
#define AG_IPPROTO_ICMPV6	58
#define AG_IPPROTO_DSTOPTS	60

/* Bytes of the L4 header the filter reads (ports, flags, ICMP type). */
#define AG_TCP_HDR_LEN		20
#define AG_UDP_HDR_LEN		8
#define AG_ICMP_HDR_LEN		8

/* TCP flags byte (offset 13 of the header). */
#define AG_TCP_FLAG_FIN		0x01
#define AG_TCP_FLAG_SYN		0x02
#define AG_TCP_FLAG_RST		0x04
#define AG_TCP_FLAG_ACK		0x10
/* TCP option kinds (RFC 9293, RFC 7323) and the largest window scale. */
#define AG_TCPOPT_EOL		0
#define AG_TCPOPT_NOP		1
#define AG_TCPOPT_WSCALE	3
#define AG_TCP_MAX_WSCALE	14
/* Bytes of options a TCP header can carry (data offset 15). */
#define AG_TCP_OPTS_MAX		40

/* A rule protocol no rule carries: matches AG_PROTO_ANY only. */
#define AG_PROTO_NONE		0

#define AG_ICMP_ECHO_REPLY	0
#define AG_ICMP_ECHO		8
#define AG_ICMPV6_ECHO_REQUEST	128
#define AG_ICMPV6_ECHO_REPLY	129

#define AG_DNS_PORT		53

#ifndef barrier_var
#define barrier_var(var) asm volatile("" : "=r"(var) : "0"(var))
#endif

/*
 * What the parser saw; addresses stay in network byte order, ports in host
 * byte order. Its head is zeroed before parsing, so that a drop event built from
 * a half-parsed packet carries zeros, not the frame before's; the fields after it
 * hold only where their flag says so. It is all the judging core gets to see of
 * a packet.
 */
union ag_addr {
	__u32 v4;		/* IPv4: the first 4 bytes */
	__u32 v6[4];
	__u8 bytes[16];
};

enum ag_frag {
	AG_FRAG_NONE = 0,	/* a whole datagram */
	AG_FRAG_FIRST = 1,	/* offset 0, more to come: carries the L4 header */
	AG_FRAG_LATER = 2,	/* offset != 0: no L4 header, judged without ports */
};

struct ag_pkt {
	/* Zeroed before each parse (the first AG_PKT_ZEROED bytes; ag_parse()). */
	union ag_addr saddr;
	union ag_addr daddr;
	__u16 ethertype;	/* after the VLAN tags, host byte order */
	__u16 sport;		/* 0 for protocols without ports */
	__u16 dport;
	__u16 l4_off;		/* TCP, UDP, ICMP: its header's offset from the frame start */
	__u8 family;		/* 4, 6, or 0 for non-IP */
	__u8 l4proto;		/* IPv4 protocol, or the end of the IPv6 chain */
	__u8 frag;		/* enum ag_frag */
	__u8 icmp_type;		/* ICMP and ICMPv6 */
	__u8 tcp_flags;
	__u8 hop_limit;		/* IPv6: ND is only valid at 255 */
	__s8 parse_result;	/* AG_PARSE_OK, or the enum ag_reason to drop for */
	__u8 rule_proto;	/* l4proto as port rules name it (ag_rule_proto()) */
	__u8 return_ok;		/* may match a return slot: opens nothing */
	__u8 has_dns_id;	/* UDP to or from port 53 with 2 payload bytes: dns_id is read */
	__u8 q_ok;		/* an ICMP error whose quoted header was read: the q_ fields hold */
	__u8 has_xid;		/* a DHCP client exchange with its transaction id read */
	__u16 icmp_id;		/* ICMP echo request or reply: its identifier */
	__u16 dns_id;
	__u16 tcp_len;		/* TCP: payload bytes in this packet (a first fragment: its own only) */
	__u16 _pad;
	/*
	 * Not zeroed: each written by the parse step that reads it, and read only where
	 * the field in brackets says it holds, so a stale value from the frame before
	 * is never read. Zeroing them too cost ~3 ns a packet.
	 */
	/* [TCP, parsed whole, not a later fragment] what tracking checks a segment's window by (host byte order) */
	__u32 tcp_seq;
	__u32 tcp_ack;
	__u16 tcp_win;		/* as on the wire, unscaled */
	__u8 tcp_hdr_len;	/* data offset x 4 */
	__u8 tcp_wscale;	/* a SYN's window scale option (read by ag_read_tcp_opts_*()); 0xff: none */
	__u32 frag_id;		/* [frag != AG_FRAG_NONE] IPv4 identification, or the IPv6 fragment header's */
	__u32 dhcp_xid;		/* [has_xid] DHCPv4 xid; DHCPv6 transaction id (its 3 bytes, high byte 0) */
	/*
	 * [q_ok] An ICMP error: the header it quotes (ag_read_quote_*()), as the packet that
	 * caused it was sent.
	 */
	__u8 q_proto;
	__u8 _pad2;
	__u16 q_sport;		/* ICMP echo: both the identifier */
	__u16 q_dport;
	__u16 _pad3;
	union ag_addr q_saddr;
	union ag_addr q_daddr;
};

/* The bytes of struct ag_pkt that ag_parse() zeroes: the fields before tcp_seq. */
#define AG_PKT_ZEROED	__builtin_offsetof(struct ag_pkt, tcp_seq)

/* A parse step went well and the packet goes on to be judged. */
#define AG_PARSE_OK	(-1)

#endif /* ALLOWGATE_COMMON_H */
