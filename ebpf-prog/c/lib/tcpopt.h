/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcpopt.h - the window scale option of a SYN (RFC 7323), which connection tracking
 * needs to read the windows of the segments that follow (lib/flow.h). Read only for
 * SYNs, with the hook's load-bytes helper into a buffer of its own, so the parser's
 * paths don't grow: the option walk is checked once, as a global function.
 */
#ifndef ALLOWGATE_TCPOPT_H
#define ALLOWGATE_TCPOPT_H

#include "common.h"
#include "parse.h"
#include "quote.h"

/* The parser puts no L4 header further in than this (AG_V6_CHAIN_MAX). */
#define AG_TCPOPT_OFF_MAX	0xfff
/* The buffer the options are read into: a power of two, so a masked index stays inside. */
#define AG_TCPOPT_BUF		64

/*
 * The window scale in opts[0..len), or 0xff without one. A malformed list (an option
 * running past the end, a length below 2) ends the walk: what was read so far stands.
 */
static __always_inline __u8 ag_tcpopt_wscale(const __u8 *opts, __u32 len)
{
	__u32 i = 0, n, at;

	for (n = 0; n < AG_TCP_OPTS_MAX; n++) {
		__u8 kind, optlen;

		/*
		 * Every layout of options would otherwise be a path of its own to the
		 * verifier (as the IPv6 header walk, lib/parse.h): forget where the walk is.
		 */
		i = ag_verifier_forget(i);
		if (i >= len || i >= AG_TCP_OPTS_MAX - 1)
			break;
		/*
		 * Masked after a barrier: clang would drop a mask it can prove idle, and the
		 * verifier, tracking another copy of i, then sees an unbounded stack read.
		 */
		at = i;
		barrier_var(at);
		kind = opts[at & (AG_TCPOPT_BUF - 1)];
		if (kind == AG_TCPOPT_EOL)
			break;
		if (kind == AG_TCPOPT_NOP) {
			i++;
			continue;
		}
		at = i + 1;
		barrier_var(at);
		optlen = opts[at & (AG_TCPOPT_BUF - 1)];
		if (optlen < 2 || i + optlen > len)
			break;
		if (kind == AG_TCPOPT_WSCALE && optlen == 3) {
			at = i + 2;
			barrier_var(at);
			return opts[at & (AG_TCPOPT_BUF - 1)];
		}
		i += optlen;
	}
	return 0xff;
}

/* Reads a SYN's window scale into pkt->tcp_wscale; ctx as ag_quote_load() takes it. */
static __always_inline int ag_read_tcp_opts(void *ctx, int xdp, struct ag_pkt *pkt)
{
	__u8 opts[AG_TCPOPT_BUF];
	__u32 off, len;

	pkt->tcp_wscale = 0xff;
	off = pkt->l4_off;
	if (off > AG_TCPOPT_OFF_MAX)
		return 0;
	len = pkt->tcp_hdr_len;
	if (len <= AG_TCP_HDR_LEN || len > AG_TCP_HDR_LEN + AG_TCP_OPTS_MAX)
		return 0;
	len -= AG_TCP_HDR_LEN;
	__builtin_memset(opts, 0, sizeof(opts));
	if (ag_quote_load(ctx, xdp, off + AG_TCP_HDR_LEN, opts, len) != 0)
		return 0;
	pkt->tcp_wscale = ag_tcpopt_wscale(opts, len);
	return 1;
}

/* For XDP. A global function: checked once. */
__attribute__((noinline)) int ag_read_tcp_opts_xdp(struct xdp_md *ctx, struct ag_pkt *pkt)
{
	return pkt ? ag_read_tcp_opts(ctx, 1, pkt) : 0;
}

/* For TC. */
__attribute__((noinline)) int ag_read_tcp_opts_skb(struct __sk_buff *skb, struct ag_pkt *pkt)
{
	return pkt ? ag_read_tcp_opts(skb, 0, pkt) : 0;
}

/* Is it worth reading the options: a SYN (with or without ACK) with some. */
static __always_inline int ag_tcp_opts_wanted(const struct ag_pkt *pkt)
{
	return pkt->parse_result == AG_PARSE_OK && pkt->l4proto == AG_IPPROTO_TCP &&
	       pkt->frag != AG_FRAG_LATER && (pkt->tcp_flags & AG_TCP_FLAG_SYN) &&
	       pkt->tcp_hdr_len > AG_TCP_HDR_LEN;
}

#endif /* ALLOWGATE_TCPOPT_H */
