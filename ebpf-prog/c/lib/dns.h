/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * dns.h - holding DNS answers for the learner (docs/dns-names.md). XDP ingress
 * only, after the core let the packet pass: a UDP answer from a configured
 * resolver (source port 53) is copied to ag_dns_frames and dropped while the
 * agent's heartbeat is fresh and a give-back path is in force; the agent learns
 * its addresses, then gives the frame back to the stack. Without a give-back path
 * (the agent proved none works on this kernel, or one failed) the answer passes at
 * once and the copy only teaches. Whatever goes wrong here passes the answer: a
 * dead or slow agent never breaks the host's DNS.
 *
 * Only answers to queries this host sent are held (and so teach anything): TC
 * egress notes each query to a configured resolver in ag_dns_queries, and an
 * answer is held only when its (resolver, DNS id, client port) is there, fresh,
 * and not yet answered. An on-link host forging the resolver's address then has
 * to guess a query in flight; an unsolicited answer passes unheld, and the
 * kernel's socket lookup decides its fate as it would without us.
 *
 * Connection tracking lets a resolver's answer in only to a query in either of two
 * tables: ag_dns_queries, shared by every socket (an LRU: a burst of queries from
 * one socket fits), and ag_dns_sockets, where each (resolver, client port) keeps
 * its own AG_DNS_SOCKET_QUERIES most recent queries. A local user flooding queries
 * from one socket pushes other sockets' queries out of the first, never out of the
 * second: their answers still pass. Its limit: a user who sends from more than
 * AG_DNS_SOCKETS_MAX ports within the query TTL pushes other ports out of it too,
 * and a socket with more than AG_DNS_SOCKET_QUERIES queries to one resolver in
 * flight during such a flood loses the answers to its oldest.
 */
#ifndef ALLOWGATE_DNS_H
#define ALLOWGATE_DNS_H

#include "common.h"
#include "stats.h"

#define AG_DNS_FRAMES_RINGBUF_BYTES	(1024 * 1024)
/* The parser never puts an L4 header further in than this (AG_V6_CHAIN_MAX). */
#define AG_DNS_L4_OFF_MAX		0xfff

/* How long after its query an answer is still held (load-time setting). */
volatile const __u64 dns_query_ttl_ns = 10000000000ULL;

/* The configured resolvers; IPv4 as ::ffff:a.b.c.d. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AG_MAX_DNS_SERVERS);
	__type(key, struct ag_dns_server_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_dns_servers SEC(".maps");

/* ag_dns_ctl[0]: the learner's heartbeat and give-back path. */
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

/*
 * The queries this host sent to a configured resolver while the learner lived:
 * (resolver, DNS id, client port) -> bpf_ktime_get_ns() when it left. An answer
 * takes its key away; LRU, so that queries nobody answered make room by
 * themselves.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AG_DNS_QUERIES_MAX);
	__type(key, struct ag_dns_release_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_dns_queries SEC(".maps");

/* Each socket's own most recent queries (see the top): written by TC egress only. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AG_DNS_SOCKETS_MAX);
	__type(key, struct ag_dns_socket_key);
	__type(value, struct ag_dns_socket_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_dns_sockets SEC(".maps");

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

/* The same for egress; ag_dns_note_query() checks the rest. */
static __always_inline int ag_dns_maybe_query(const struct ag_pkt *pkt)
{
	return pkt->dport == AG_DNS_PORT && pkt->l4proto == AG_IPPROTO_UDP;
}

/* A whole UDP datagram whose header the parser read. */
static __always_inline int ag_dns_whole_udp(const struct ag_pkt *pkt)
{
	return pkt->parse_result == AG_PARSE_OK && pkt->l4proto == AG_IPPROTO_UDP &&
	       pkt->frag == AG_FRAG_NONE;
}

/* addr as ag_dns_servers keys it (IPv4 as ::ffff:a.b.c.d); 0 when not IP. */
static __always_inline int ag_dns_server_key_of(const struct ag_pkt *pkt,
						const union ag_addr *addr,
						struct ag_dns_server_key *server)
{
	if (pkt->family == 4) {
		__builtin_memset(server->addr, 0, 10);
		server->addr[10] = 0xff;
		server->addr[11] = 0xff;
		__builtin_memcpy(&server->addr[12], &addr->v4, 4);
		return 1;
	}
	if (pkt->family == 6) {
		__builtin_memcpy(server->addr, addr->bytes, sizeof(server->addr));
		return 1;
	}
	return 0;
}

/* The time ag_dns_sockets keeps: ~1 ms units, never 0 (0 is an empty slot). */
static __always_inline __u32 ag_dns_socket_time(__u64 ns)
{
	return (__u32)(ns >> 20) | 1;
}

/* Is id among the fresh queries of the socket (server, client_port)? */
static __always_inline int ag_dns_socket_asked(const struct ag_dns_server_key *server, __u16 client_port,
					       __u16 id)
{
	struct ag_dns_socket_key key;
	struct ag_dns_socket_value *q;
	__u32 now, ttl, i;

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.server, server->addr, sizeof(key.server));
	key.client_port = client_port;
	q = bpf_map_lookup_elem(&ag_dns_sockets, &key);
	if (!q)
		return 0;
	now = ag_dns_socket_time(bpf_ktime_get_ns());
	ttl = (dns_query_ttl_ns >> 20) + 1;
	for (i = 0; i < AG_DNS_SOCKET_QUERIES; i++) {
		/* A time from the future wraps to a huge age: not fresh. */
		if (q->sent[i] && q->id[i] == id && now - q->sent[i] <= ttl)
			return 1;
	}
	return 0;
}

/* Notes the query id in its socket's own slots: a retry of the same id refreshes it. */
static __always_inline void ag_dns_socket_note(const struct ag_dns_server_key *server, __u16 client_port,
					       __u16 id, __u64 now_ns)
{
	struct ag_dns_socket_key key;
	struct ag_dns_socket_value fresh;
	struct ag_dns_socket_value *q;
	__u32 i, slot;

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.server, server->addr, sizeof(key.server));
	key.client_port = client_port;
	q = bpf_map_lookup_elem(&ag_dns_sockets, &key);
	if (!q) {
		__builtin_memset(&fresh, 0, sizeof(fresh));
		fresh.id[0] = id;
		fresh.sent[0] = ag_dns_socket_time(now_ns);
		fresh.next = 1;
		bpf_map_update_elem(&ag_dns_sockets, &key, &fresh, BPF_NOEXIST);
		return;
	}
	slot = q->next % AG_DNS_SOCKET_QUERIES;
	for (i = 0; i < AG_DNS_SOCKET_QUERIES; i++) {
		if (q->sent[i] && q->id[i] == id) {
			slot = i;
			break;
		}
	}
	if (slot == q->next % AG_DNS_SOCKET_QUERIES)
		q->next++;
	slot &= AG_DNS_SOCKET_QUERIES - 1;
	q->id[slot] = id;
	q->sent[slot] = ag_dns_socket_time(now_ns);
}

/*
 * Connection tracking (lib/flow.h): is this packet, coming in on a return path, either
 * not a resolver's answer (the flow decides alone) or the answer to a query this host
 * sent, by resolver, DNS id and port, within dns_query_ttl_ns of it (or one the agent
 * gives back)? Looks only; holding the answer takes the query away (ag_dns_hold()).
 * The query may be in the shared table or in its socket's own slots (see the top).
 */
static __always_inline int ag_dns_answer_expected(const struct ag_pkt *pkt)
{
	struct ag_dns_release_key query;
	struct ag_dns_server_key server;
	__u64 *sent;

	if (pkt->l4proto != AG_IPPROTO_UDP || pkt->sport != AG_DNS_PORT)
		return 1;
	if (!ag_dns_server_key_of(pkt, &pkt->saddr, &server))
		return 1;
	if (!bpf_map_lookup_elem(&ag_dns_servers, &server))
		return 1;
	if (!pkt->has_dns_id)
		return 0;
	__builtin_memcpy(query.server, server.addr, sizeof(query.server));
	query.dns_id = pkt->dns_id;
	query.client_port = pkt->dport;
	if (bpf_map_lookup_elem(&ag_dns_release, &query))
		return 1;
	sent = bpf_map_lookup_elem(&ag_dns_queries, &query);
	/* A query time from the future wraps to a huge age: not expected. */
	if (sent && bpf_ktime_get_ns() - *sent <= dns_query_ttl_ns)
		return 1;
	return ag_dns_socket_asked(&server, pkt->dport, pkt->dns_id);
}

/*
 * The learner's control at now: NULL when there is no learner alive (a 0 or stale
 * heartbeat), so that nothing is held or copied.
 */
static __always_inline const struct ag_dns_ctl *ag_dns_learner(__u64 now)
{
	const struct ag_dns_ctl *ctl;
	__u32 zero = 0;

	ctl = bpf_map_lookup_elem(&ag_dns_ctl, &zero);
	if (!ctl || ctl->heartbeat_ns == 0)
		return NULL;
	/* A heartbeat from the future wraps to a huge age: stale too. */
	if (now - ctl->heartbeat_ns >= ctl->stale_after_ns)
		return NULL;
	return ctl;
}

/*
 * TC egress, after the core let the packet pass: notes a DNS query to a configured
 * resolver in ag_dns_queries, so that its answer may be held and, with connection
 * tracking, may come in at all. Returns 1 when it noted one. A global function, like
 * ag_dns_hold().
 */
__attribute__((noinline)) int ag_dns_note_query(struct __sk_buff *skb, const struct ag_pkt *pkt)
{
	struct ag_dns_release_key query;
	struct ag_dns_server_key server;
	__u8 id[2];
	__u64 now, off;

	if (!pkt)
		return 0;
	if (!ag_dns_whole_udp(pkt) || pkt->dport != AG_DNS_PORT)
		return 0;
	/* Noted with or without a learner: connection tracking asks for it too. */
	now = bpf_ktime_get_ns();
	if (!ag_dns_server_key_of(pkt, &pkt->daddr, &server))
		return 0;
	if (!bpf_map_lookup_elem(&ag_dns_servers, &server))
		return 0;

	/* The DNS id: the first 2 bytes of the UDP payload (maybe not linear). */
	off = pkt->l4_off;
	if (off > AG_DNS_L4_OFF_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, off + AG_UDP_HDR_LEN, id, sizeof(id)) != 0)
		return 0;

	__builtin_memcpy(query.server, server.addr, sizeof(query.server));
	query.dns_id = ((__u16)id[0] << 8) | id[1];
	query.client_port = pkt->sport;
	/* A retry with the same id and port refreshes the time. */
	bpf_map_update_elem(&ag_dns_queries, &query, &now, BPF_ANY);
	ag_dns_socket_note(&server, query.client_port, query.dns_id, now);
	return 1;
}

/*
 * Holds the frame when it is a DNS answer the learner wants: returns 1 when it
 * went to ag_dns_frames (drop it), 0 when it passes (with a copy to the learner
 * when no give-back path is in force). A global function: the verifier checks it
 * once, not once per path through the parser.
 */
__attribute__((noinline)) int ag_dns_hold(struct xdp_md *ctx, const struct ag_pkt *pkt)
{
	const struct ag_dns_ctl *ctl;
	struct ag_dns_release_key release;
	struct ag_dns_server_key server;
	struct ag_dns_frame *frame;
	void *data, *data_end;
	__u64 now, len, off, sent_ns;
	__u64 *sent;
	__u32 hold;
	__u8 *id;

	if (!pkt)
		return 0;
	if (!ag_dns_whole_udp(pkt) || pkt->sport != AG_DNS_PORT)
		return 0;
	if (!ag_dns_server_key_of(pkt, &pkt->saddr, &server))
		return 0;
	if (!bpf_map_lookup_elem(&ag_dns_servers, &server))
		return 0;

	/* Only while the learner is alive; held only while it can give answers back. */
	now = bpf_ktime_get_ns();
	ctl = ag_dns_learner(now);
	if (!ctl)
		return 0;
	hold = ctl->give_back != AG_GIVE_BACK_NONE;

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

	/*
	 * Only the answer to a query this host sent (same key): one answer per query,
	 * and within dns_query_ttl_ns of it. The delete is the atomic test again: of
	 * two answers racing on two CPUs only one takes the query. An expired query
	 * goes too, teaching nothing.
	 */
	sent = bpf_map_lookup_elem(&ag_dns_queries, &release);
	if (!sent) {
		ag_count_misc(AG_MISC_DNS_UNSOLICITED);
		return 0;
	}
	sent_ns = *sent;
	if (bpf_map_delete_elem(&ag_dns_queries, &release) != 0) {
		ag_count_misc(AG_MISC_DNS_UNSOLICITED);
		return 0;
	}
	/* Read the clock again: a retry noted since `now` is not from the future. A
	 * query time from the future wraps to a huge age: not held. */
	if (bpf_ktime_get_ns() - sent_ns > dns_query_ttl_ns) {
		ag_count_misc(AG_MISC_DNS_UNSOLICITED);
		return 0;
	}

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
	frame->held = hold;
	frame->pad = 0;
	if (bpf_xdp_load_bytes(ctx, 0, frame->data, len) != 0) {
		bpf_ringbuf_discard(frame, 0);
		ag_count_misc(AG_MISC_DNS_UNHELD);
		return 0;
	}
	bpf_ringbuf_submit(frame, 0);
	if (!hold) {
		ag_count_misc(AG_MISC_DNS_PASSED);
		return 0;
	}
	ag_count_misc(AG_MISC_DNS_HELD);
	return 1;
}

#endif /* ALLOWGATE_DNS_H */
