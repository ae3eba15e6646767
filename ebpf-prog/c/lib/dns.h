/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * dns.h - holding DNS answers for the learner (docs/dns-names.md). XDP ingress
 * only, after the core let the packet pass: a UDP answer from a configured
 * resolver (source port 53) is copied to ag_dns_frames and dropped while the
 * agent's heartbeat is fresh; the agent learns its addresses, then gives the
 * frame back to the stack. Whatever goes wrong here passes the answer: a dead
 * or slow agent never breaks the host's DNS.
 */
#ifndef ALLOWGATE_DNS_H
#define ALLOWGATE_DNS_H

#include "common.h"
#include "stats.h"

#define AG_DNS_PORT			53
#define AG_DNS_FRAMES_RINGBUF_BYTES	(1024 * 1024)
/* The parser never puts an L4 header further in than this (AG_V6_CHAIN_MAX). */
#define AG_DNS_L4_OFF_MAX		0xfff

/* The configured resolvers; IPv4 as ::ffff:a.b.c.d. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AG_MAX_DNS_SERVERS);
	__type(key, struct ag_dns_server_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_dns_servers SEC(".maps");

/* ag_dns_ctl[0]: the learner's heartbeat. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ag_dns_ctl);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_dns_ctl SEC(".maps");

/* Answers the agent gives back: each key lets one answer pass unheld, then goes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AG_DNS_RELEASE_MAX);
	__type(key, struct ag_dns_release_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_dns_release SEC(".maps");

/* Held answers: one struct ag_dns_frame per record. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, AG_DNS_FRAMES_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_dns_frames SEC(".maps");

/* Cheap enough to ask of every passing packet; ag_dns_hold() checks the rest. */
static __always_inline int ag_dns_maybe_answer(const struct ag_pkt *pkt)
{
	return pkt->sport == AG_DNS_PORT && pkt->l4proto == AG_IPPROTO_UDP;
}

/*
 * Holds the frame when it is a DNS answer the learner wants: returns 1 when it
 * went to ag_dns_frames (drop it), 0 when it passes. A global function: the
 * verifier checks it once, not once per path through the parser.
 */
__attribute__((noinline)) int ag_dns_hold(struct xdp_md *ctx, const struct ag_pkt *pkt)
{
	struct ag_dns_release_key release;
	struct ag_dns_server_key server;
	const struct ag_dns_ctl *ctl;
	struct ag_dns_frame *frame;
	void *data, *data_end;
	__u64 now, len, off;
	__u32 zero = 0;
	__u8 *id;

	if (!pkt)
		return 0;
	/* A whole UDP datagram whose header the parser read. */
	if (pkt->parse_result != AG_PARSE_OK || pkt->l4proto != AG_IPPROTO_UDP ||
	    pkt->frag != AG_FRAG_NONE || pkt->sport != AG_DNS_PORT)
		return 0;
	if (pkt->family == 4) {
		__builtin_memset(server.addr, 0, 10);
		server.addr[10] = 0xff;
		server.addr[11] = 0xff;
		__builtin_memcpy(&server.addr[12], &pkt->saddr.v4, 4);
	} else if (pkt->family == 6) {
		__builtin_memcpy(server.addr, pkt->saddr.bytes, sizeof(server.addr));
	} else {
		return 0;
	}
	if (!bpf_map_lookup_elem(&ag_dns_servers, &server))
		return 0;

	/* Only while the learner is alive: 0 or a stale heartbeat holds nothing. */
	ctl = bpf_map_lookup_elem(&ag_dns_ctl, &zero);
	if (!ctl || ctl->heartbeat_ns == 0)
		return 0;
	now = bpf_ktime_get_ns();
	/* A heartbeat from the future wraps to a huge age: not held either. */
	if (now - ctl->heartbeat_ns >= ctl->stale_after_ns)
		return 0;

	/* The DNS id: the first 2 bytes of the UDP payload. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	off = pkt->l4_off;
	if (off > AG_DNS_L4_OFF_MAX)
		return 0;
	id = data + off + AG_UDP_HDR_LEN;
	if ((void *)(id + 2) > data_end)
		return 0;

	/* Given back by the agent: pass it this once. Delete is the atomic test. */
	__builtin_memcpy(release.server, server.addr, sizeof(release.server));
	release.dns_id = ((__u16)id[0] << 8) | id[1];
	release.client_port = pkt->dport;
	if (bpf_map_delete_elem(&ag_dns_release, &release) == 0)
		return 0;

	len = bpf_xdp_get_buff_len(ctx);
	if (len > AG_DNS_FRAME_MAX) {
		/* Too long to hold whole (EDNS answers can be): pass it unheld. */
		ag_count_misc(AG_MISC_DNS_UNHELD);
		return 0;
	}
	/* Separate from the check above so that clang can't fold the two into one. */
	barrier_var(len);
	if (len == 0)
		return 0;

	frame = bpf_ringbuf_reserve(&ag_dns_frames, sizeof(*frame), 0);
	if (!frame) {
		ag_count_misc(AG_MISC_DNS_UNHELD);
		return 0;
	}
	frame->ifindex = ctx->ingress_ifindex;
	frame->len = len;
	if (bpf_xdp_load_bytes(ctx, 0, frame->data, len) != 0) {
		bpf_ringbuf_discard(frame, 0);
		ag_count_misc(AG_MISC_DNS_UNHELD);
		return 0;
	}
	bpf_ringbuf_submit(frame, 0);
	ag_count_misc(AG_MISC_DNS_HELD);
	return 1;
}

#endif /* ALLOWGATE_DNS_H */
