/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * abi.h - the contract between the allowgate BPF programs and the agent.
 *
 * Every struct here has a #[repr(C)] mirror in ebpf-prog/src/lib.rs with size
 * asserts; change both or neither. Reason codes are stable numbers shown to users
 * and exported as metrics: never renumber or reuse one, only append.
 */
#ifndef ALLOWGATE_ABI_H
#define ALLOWGATE_ABI_H

#include <linux/types.h>

/* Two policy slots: the agent fills the idle one, then flips `ag_active`. */
#define AG_SLOTS		2
/* Port rules one remote prefix can carry after the compiler folded overlaps. */
#define AG_MAX_PORT_RULES	16
/* Non-IP ethertypes (besides ARP) the config may let through. */
#define AG_MAX_ETHERTYPES	8
/* 802.1Q and 802.1ad (QinQ); a third tag is dropped. */
#define AG_MAX_VLAN_DEPTH	2
/* IPv6 extension headers walked before the chain counts as too long. */
#define AG_MAX_V6_EXT_HDRS	8

enum ag_direction {
	AG_DIR_INGRESS = 0,	/* XDP */
	AG_DIR_EGRESS = 1,	/* TC */
	AG_DIR_MAX = 2,
};

enum ag_verdict {
	AG_VERDICT_PASS = 0,
	AG_VERDICT_DROP = 1,	/* in monitor mode: would have been dropped */
	AG_VERDICT_MAX = 2,
};

/*
 * Why a packet passed or was dropped, each reason defined here once:
 * X(NAME, code, "name users see"). The codes are stable: append, never renumber or
 * reuse. build.rs generates the Rust mirror (allowgate_ebpf::Reason) from this list.
 */
#define AG_REASONS(X)							\
	X(POLICY, 0, "policy")		/* pass: a rule allows; drop: none does */ \
	X(NO_POLICY, 1, "no-policy")	/* no complete generation loaded: fail closed */ \
	X(ARP, 2, "arp")						\
	X(ETHERTYPE, 3, "ethertype")	/* other non-IP: listed (pass) or not (drop) */ \
	X(ND, 4, "ipv6-nd")		/* IPv6 neighbour discovery and MLD */ \
	X(ICMP_ERROR, 5, "icmp-error")	/* PMTUD and other error messages */ \
	X(DHCP, 6, "dhcp")						\
	X(TRUNCATED, 7, "truncated")	/* a header runs past the packet's (or datagram's) end */ \
	X(BAD_IHL, 8, "bad-ihl")	/* IHL < 5, or total length < IHL x 4 */ \
	X(FRAG_TOO_SHORT, 9, "fragment-too-short") /* first fragment without the whole L4 header */ \
	X(FRAG_OVERLAP, 10, "fragment-overlap") /* TCP fragment at offset 8: may rewrite flags (RFC 1858) */ \
	X(V6_CHAIN_TOO_LONG, 11, "ipv6-chain-too-long") /* more than AG_MAX_V6_EXT_HDRS headers */ \
	X(V6_FRAG_CHAIN, 12, "ipv6-fragment-chain") /* first fragment without the whole header chain */ \
	X(VLAN_DEPTH, 13, "vlan-depth")	/* more than AG_MAX_VLAN_DEPTH tags */ \
	X(V4_MAPPED, 14, "ipv4-mapped")	/* ::ffff:0:0/96 on the wire */ \
	X(MALFORMED, 15, "malformed")	/* IP version does not match the ethertype */ \
	X(NO_FLOW, 16, "no-flow")	/* a return path, ICMP error, DNS or DHCP answer of no tracked flow */ \
	X(OUT_OF_WINDOW, 17, "out-of-window") /* a TCP segment outside its flow's sequence window */ \
	X(FRAGMENT_ORPHAN, 18, "fragment-orphan") /* a non-first fragment whose first fragment did not pass */

/* Reasons a test build appends (-D'AG_REASONS_EXTRA(X)=...'): none in the product. */
#ifndef AG_REASONS_EXTRA
#define AG_REASONS_EXTRA(X)
#endif

enum ag_reason {
#define AG_REASON_ENUM(name, code, label) AG_REASON_##name = code,
	AG_REASONS(AG_REASON_ENUM)
	AG_REASONS_EXTRA(AG_REASON_ENUM)
#undef AG_REASON_ENUM
	AG_REASON_END,
	AG_REASON_MAX = AG_REASON_END,	/* one past the last code */
};

/*
 * The counters keep room for this many reasons, so appending one never moves a
 * counter: pins written by an older build read back the same.
 */
#define AG_REASON_CAPACITY	64
_Static_assert(AG_REASON_MAX <= AG_REASON_CAPACITY, "more reasons than the counters hold");

/*
 * The ABI version recorded in the pins (ag_abi[0]). Bumped when a pinned map keeps its
 * shape but changes its meaning; the agent replaces what an older version wrote.
 * 2: ag_stats indexed by AG_REASON_CAPACITY (1 had AG_REASON_MAX).
 * 3: ag_dns_frames records carry whether the answer was held (struct ag_dns_frame).
 * 4: ag_flow_ctl holds the flow hash key and the peer filter's generation; the flow
 *    tables' values hold sequence windows (their shapes changed too).
 */
#define AG_ABI_VERSION		4

/* Bits of ag_gen_config.flags. */
#define AG_F_ENFORCE		(1U << 0)	/* clear: monitor mode, never drop */
#define AG_F_ARP		(1U << 1)
#define AG_F_ND			(1U << 2)
#define AG_F_ICMP_ERRORS	(1U << 3)
#define AG_F_DHCP		(1U << 4)
/*
 * The slot's table of that kind has no entry, so a lookup in it can only miss: the
 * filter skips it (a miss on the denied path is what a flood pays for). Set by the
 * agent when it installs the generation; "empty" rather than "has entries" so that a
 * generation written without these bits is looked up in full.
 */
#define AG_F_V4_HOST_EMPTY	(1U << 5)
#define AG_F_V4_LPM_EMPTY	(1U << 6)
#define AG_F_V6_HOST_EMPTY	(1U << 7)
#define AG_F_V6_LPM_EMPTY	(1U << 8)
/*
 * Connection tracking (lib/flow.h): a return path passes only for a tracked flow, ICMP
 * errors only when they quote one, DNS answers from a configured resolver only to a
 * recorded query, DHCP replies only after a request. Clear: the stateless return path.
 */
#define AG_F_STATEFUL		(1U << 9)
/*
 * With tracking: a TCP segment outside its flow's window passes (counted as a pass for
 * `out-of-window`) instead of dropping; it still changes nothing (conntrack's be_liberal).
 */
#define AG_F_LIBERAL		(1U << 10)
/*
 * The slot's IPv4 /32s are in the host index as well (struct ag_host_index_v4): the
 * filter looks them up there, inline, instead of in the slot's hash map, which stays
 * the table of record. Set by the agent only when every /32 fits (see below).
 */
#define AG_F_V4_HOST_INDEX	(1U << 11)

/*
 * The states of a tracked flow; each has its idle timeout (ag_gen_config). TCP follows
 * the flags both ways, each segment checked against the flow's sequence window (lib/
 * flow.h): a flow picked up mid-stream (a non-SYN segment on the forward path, or a
 * seeded connection) starts established.
 */
enum ag_flow_state {
	AG_FLOW_TCP_SYN_SENT = 0,	/* a SYN, the handshake not complete yet */
	AG_FLOW_TCP_ESTABLISHED = 1,
	AG_FLOW_TCP_CLOSING = 2,	/* a FIN seen */
	AG_FLOW_TCP_CLOSE = 3,		/* a RST seen */
	AG_FLOW_UDP = 4,		/* one way so far */
	AG_FLOW_UDP_STREAM = 5,		/* answered */
	AG_FLOW_ICMP = 6,		/* echo */
	AG_FLOW_OTHER = 7,		/* any other protocol */
	AG_FLOW_STATES = 8,
};

/* One policy generation's settings; ag_gen_cfg holds one per slot. */
struct ag_gen_config {
	__u64 generation;	/* 0: the slot holds no complete generation */
	__u32 flags;		/* AG_F_* */
	__u32 n_ethertypes;
	__u16 ethertypes[AG_MAX_ETHERTYPES];	/* host byte order */
	__u32 flow_timeout_s[AG_FLOW_STATES];	/* idle timeout of each enum ag_flow_state */
	/*
	 * Names this generation to the flows that remember what its tables allowed of
	 * them (ag_flow_value.tag): unique per install, never 0.
	 */
	__u64 flow_tag;
};

/*
 * Rule protocols. AG_PROTO_ICMP matches ICMP on IPv4 and ICMPv6 on IPv6;
 * AG_PROTO_ANY matches every protocol, with ports 0-65535.
 */
#define AG_PROTO_ICMP	1
#define AG_PROTO_TCP	6
#define AG_PROTO_UDP	17
#define AG_PROTO_ANY	255

/*
 * Which packets a port rule matches, by hook and by which port is compared.
 * "Remote" is the peer the table is keyed by: the destination on egress, the
 * source on ingress.
 *   egress rule to P port N:  OUT_REMOTE (dst port N) + IN_REMOTE (src port N)
 *   ingress rule from P to N: IN_LOCAL (dst port N)   + OUT_LOCAL (src port N)
 * The *return* slots (IN_REMOTE, OUT_LOCAL) never pass a TCP segment with SYN set
 * and ACK clear, nor an ICMP message other than an echo reply: a return path does
 * not open connections.
 */
#define AG_SLOT_OUT_REMOTE	(1U << 0)
#define AG_SLOT_IN_REMOTE	(1U << 1)
#define AG_SLOT_IN_LOCAL	(1U << 2)
#define AG_SLOT_OUT_LOCAL	(1U << 3)

struct ag_port_rule {
	__u8 proto;		/* AG_PROTO_* */
	__u8 slots;		/* AG_SLOT_* */
	__u16 _pad;
	__u16 port_lo;		/* host byte order, inclusive */
	__u16 port_hi;
};

/*
 * What the policy allows for one remote prefix: the union of every rule that
 * covers it (the compiler folds shorter covering prefixes into longer ones).
 */
struct ag_policy_value {
	__u32 n_rules;		/* rules[0..n_rules) are valid */
	__u32 _pad;
	struct ag_port_rule rules[AG_MAX_PORT_RULES];
};

/*
 * The host index: a slot's IPv4 /32s in an open-addressed table of
 * AG_HOST_INDEX_SIZE entries (ag_v4_host_index holds AG_SLOTS of them, slot after
 * slot), and their distinct policy values in AG_HOST_VALUES entries of ag_host_values
 * per slot. An address's home is the top AG_HOST_INDEX_BITS of its word (as read
 * from the packet) times AG_HOST_INDEX_MUL; it lies in the first of the
 * AG_HOST_INDEX_PROBES entries from its home that holds it, and an empty entry ends
 * the search. The agent fills a slot's index only when every /32 lies within the
 * probes and the values fit (dataplane/hostindex.rs), and says so with
 * AG_F_V4_HOST_INDEX; otherwise the filter reads the hash map.
 */
#define AG_HOST_INDEX_BITS	13
#define AG_HOST_INDEX_SIZE	(1U << AG_HOST_INDEX_BITS)
#define AG_HOST_INDEX_PROBES	8
#define AG_HOST_INDEX_MUL	0x9e3779b1U
#define AG_HOST_VALUES		1024

struct ag_host_index_v4 {
	__u32 addr;		/* network byte order */
	__u32 value;		/* 1 + its value's index in the slot's values; 0: empty */
};

/* Host (/32, /128) entries live in hash maps; shorter prefixes in LPM tries. */
struct ag_v4_host_key {
	__u8 addr[4];		/* network byte order */
};

struct ag_v6_host_key {
	__u8 addr[16];
};

struct ag_lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct ag_lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* ag_stats index: (direction * AG_VERDICT_MAX + verdict) * AG_REASON_CAPACITY + reason */
#define AG_STATS_ENTRIES	(AG_DIR_MAX * AG_VERDICT_MAX * AG_REASON_CAPACITY)

struct ag_counter {
	__u64 packets;
	__u64 bytes;
};

/* Indexes of ag_misc (per-CPU __u64). */
enum ag_misc_index {
	AG_MISC_EVENTS_SUPPRESSED = 0,	/* drop events over the rate limit */
	AG_MISC_EVENTS_LOST = 1,	/* ring buffer full */
	AG_MISC_DNS_HELD = 2,		/* DNS answers held for the learner */
	AG_MISC_DNS_UNHELD = 3,		/* answers passed unheld: the frame ring was full */
	AG_MISC_DNS_UNSOLICITED = 4,	/* answers passed unheld: no query of ours (fresh) asked */
	AG_MISC_FLOW_INSERTS = 5,	/* flows the programs made assured (added to ag_flows_v4/v6) */
	AG_MISC_FLOW_REMOVED = 6,	/* assured flows the programs removed (found expired) */
	AG_MISC_DNS_PASSED = 7,		/* answers passed at once, a copy to the learner: no give-back path */
	AG_MISC_FLOW_NEW = 8,		/* unassured flows the programs added to ag_flows_new_v4/v6 */
	AG_MISC_FLOW_NEW_EVICTED = 9,	/* unassured flows pushed out, unexpired, by another */
	AG_MISC_FRAG_NOTED = 10,	/* first fragments noted for their datagram's other fragments */
	AG_MISC_MAX = 11,
};

/* ag_misc keeps room for this many counters, so appending one never moves the map. */
#define AG_MISC_CAPACITY	32
_Static_assert(AG_MISC_MAX <= AG_MISC_CAPACITY, "more misc counters than ag_misc holds");

/*
 * Addresses learned from DNS answers (or resolved for the catalog's names) live in
 * per-family hash maps beside the generations, updated in place by the agent. The
 * data plane consults them when the generation's tables do not allow a packet.
 */
#define AG_DYN_MAX		16384
#define AG_MAX_DNS_SERVERS	16
#define AG_DNS_RELEASE_MAX	1024
#define AG_DNS_QUERIES_MAX	4096
#define AG_DNS_FRAME_MAX	1536

/*
 * Bits of ag_dyn_empty[0]: the learned table of that family has no entry, so the
 * filter does not look in it. The agent clears a bit before it inserts into that
 * table and sets it only once the table is empty; 0 (the default) means "look".
 */
#define AG_DYN_V4_EMPTY		(1U << 0)
#define AG_DYN_V6_EMPTY		(1U << 1)

struct ag_dyn_value {
	struct ag_policy_value policy;
	__u64 expires_ns;	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) after which it is gone */
};

/* A configured resolver; IPv4 in its IPv4-mapped form ::ffff:a.b.c.d. */
struct ag_dns_server_key {
	__u8 addr[16];
};

/*
 * How the agent gives a held answer back to the stack (ag_dns_ctl.give_back): the one
 * it proved to work on this kernel. NONE holds nothing: answers pass at once and the
 * learner reads a copy.
 */
#define AG_GIVE_BACK_NONE		0
#define AG_GIVE_BACK_LIVE_FRAMES	1	/* BPF_PROG_TEST_RUN, BPF_F_TEST_XDP_LIVE_FRAMES */
#define AG_GIVE_BACK_LOOPBACK		2	/* a raw IP socket, through the host's loopback */

/* ag_dns_ctl[0]: the learner's heartbeat and give-back path. Answers are held only
 * while the heartbeat is fresh, so a dead agent never takes the host's DNS down with
 * it, and only while a give-back path is in force. */
struct ag_dns_ctl {
	__u64 heartbeat_ns;	/* bpf_ktime_get_ns() clock; 0: no learner, copy nothing */
	__u64 stale_after_ns;
	__u32 give_back;	/* AG_GIVE_BACK_*; NONE: copy, never hold */
	__u32 pad;
	/* Written by the agent alone, for status and metrics (the programs never read them). */
	__u64 given_back;	/* held answers the agent gave back */
	__u64 give_back_failed;	/* held answers it could not give back (lost) */
};

/*
 * An answer the agent gives back to the stack: pass it, once, without holding it.
 * Also the key of ag_dns_queries (value: __u64 bpf_ktime_get_ns() when the query
 * left): the queries this host sent, the only ones whose answers are held.
 */
struct ag_dns_release_key {
	__u8 server[16];	/* as ag_dns_server_key */
	__u16 dns_id;		/* host byte order */
	__u16 client_port;	/* host byte order */
};

/* One answer on ag_dns_frames: the frame from its Ethernet header. */
struct ag_dns_frame {
	__u32 ifindex;
	__u32 len;		/* bytes of data[] that hold the frame */
	__u32 held;		/* 1: dropped, the agent gives it back; 0: it passed, a copy */
	__u32 pad;
	__u8 data[AG_DNS_FRAME_MAX];
};

/*
 * Tracked flows (lib/flow.h), pinned, so flows outlive the daemon and every generation
 * swap. Two tables per family: the assured flows (a TCP handshake completed, or UDP and
 * other protocols answered and then used once more) in an LRU hash, ag_flows_v4/v6, of
 * `[state] max_flows`; and the rest, which anyone can make by spoofing, in a table of
 * their own, ag_flows_new_v4/v6: an array of buckets of AG_FLOW_NEW_WAYS ways (their
 * checks apart, in ag_flows_chk_v4/v6), where a new flow takes an empty way of its
 * bucket, else the oldest. An unassured flow never pushes out an
 * assured one. Keyed from this host's side, the same key for a flow's packets both ways.
 * TCP and UDP: the two ports; ICMP echo: lport is the echo identifier, rport 0; other
 * protocols: both 0. A DHCP exchange: local address 0, the transaction id in the first
 * 4 bytes of remote (the server is not known before it answers).
 *
 * The capacities are set at load (EbpfLoader::set_max_entries and the load-time
 * globals flow_new_mask and flow_peer_mask); these are the defaults of a build.
 */
#define AG_FLOW_MAX		65536
#define AG_FLOW_NEW_WAYS	4
#define AG_FLOW_NEW_BUCKETS	(AG_FLOW_MAX / 2 / AG_FLOW_NEW_WAYS)
/* Words (of 64 bits) of one generation of the peer filter: 4 bits per flow. */
#define AG_FLOW_PEER_WORDS	(AG_FLOW_MAX * 4 / 64)

/* An entry of the peer filter: a word of each generation (ag_flow_ctl.peer_gen). */
struct ag_flow_peer_word {
	__u64 gen[2];
};

struct ag_flow_v4_key {
	__u8 local[4];		/* network byte order */
	__u8 remote[4];
	__u16 lport;		/* host byte order */
	__u16 rport;
	__u8 proto;		/* IP protocol (58 for ICMPv6) */
	__u8 _pad[3];
};

struct ag_flow_v6_key {
	__u8 local[16];
	__u8 remote[16];
	__u16 lport;
	__u16 rport;
	__u8 proto;
	__u8 _pad[3];
};

/* Who put a flow in the table: its first packet (by direction) or the agent's seeding. */
#define AG_FLOW_BY_INGRESS	AG_DIR_INGRESS
#define AG_FLOW_BY_EGRESS	AG_DIR_EGRESS
#define AG_FLOW_BY_SEED		2

/*
 * Bits of ag_flow_value.allowed: what the tables of the generation named by tag allowed
 * of the flow's packets going dir, so that its next packets that way pass on the flow
 * alone (the tables of a generation never change). A return path's bit holds only
 * for packets that open nothing (no SYN without ACK, no ICMP but an echo reply).
 */
#define AG_FLOW_OK_FORWARD(dir)	(1U << ((dir) * 2))
#define AG_FLOW_OK_RETURN(dir)	(2U << ((dir) * 2))

/*
 * What a TCP flow knows of one direction's sender (conntrack's ip_ct_tcp_state): the
 * window its segments are checked against. Sequence numbers as on the wire, compared
 * modulo 2^32.
 */
struct ag_flow_seq {
	__u32 end;		/* the sequence number after the last one it sent (SYN and FIN count one) */
	__u32 maxend;		/* the highest it may send: the other side's ack plus window */
	__u32 maxwin;		/* the largest window it advertised, scaled */
	__u32 maxack;		/* the highest acknowledgement it sent */
	__u8 scale;		/* its window scale (RFC 7323), once AG_SEQ_SCALE_KNOWN */
	__u8 flags;		/* AG_SEQ_* */
	__u16 _pad;
};

#define AG_SEQ_SEEN		(1U << 0)	/* it sent a segment the flow learned from */
#define AG_SEQ_END		(1U << 1)	/* end is known (its own segment, or the other side's ack) */
#define AG_SEQ_ACKED		(1U << 2)	/* maxack is known */
#define AG_SEQ_WSCALE		(1U << 3)	/* its SYN carried the window scale option */
#define AG_SEQ_SCALE_KNOWN	(1U << 4)	/* scale holds (else the largest, 14, is assumed) */
#define AG_SEQ_FRAGS		(1U << 5)	/* it sent a fragmented segment: end may be short */

/* Bits of ag_flow_value.flags. */
#define AG_FLOW_F_ASSURED	(1U << 0)	/* lives in the assured table */
#define AG_FLOW_F_ANSWERED	(1U << 1)	/* not TCP: a packet came back the other way */

struct ag_flow_value {
	__u64 seen_ns;		/* bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC_COARSE) of its last packet */
	__u8 state;		/* enum ag_flow_state */
	__u8 opened_by;		/* AG_FLOW_BY_* */
	__u8 allowed;		/* AG_FLOW_OK_* under the generation whose flow_tag is tag */
	__u8 flags;		/* AG_FLOW_F_* */
	__u32 _pad;
	__u64 tag;		/* 0: nothing remembered */
	struct ag_flow_seq seq[2];	/* TCP, by the direction its sender's segments go */
};

/* One way of a bucket of ag_flows_new_v4 / _v6. */
struct ag_flow_new_v4 {
	struct ag_flow_v4_key key;
	struct ag_flow_value value;
};

struct ag_flow_new_v6 {
	struct ag_flow_v6_key key;
	struct ag_flow_value value;
};

/*
 * A bucket's checks, in an array of their own (ag_flows_chk_v4/v6, entry i for bucket
 * i of ag_flows_new_*), four buckets to a cache line. check[i] is way i's key hash
 * (never 0) while it holds a flow, so that a way written by two CPUs at once, or half
 * written, matches no key; 0: empty. Finding that a flow is not there, and an empty way
 * for a new one, reads these 16 bytes alone: a table 21 (IPv4) to 27 (IPv6) times
 * smaller than the buckets, which stays in the caches where the buckets would not.
 */
struct ag_flow_checks {
	__u32 check[AG_FLOW_NEW_WAYS];
};

/*
 * A bucket: stamp[i], when way i's flow was last seen (CLOCK_MONOTONIC_COARSE >> 20,
 * ~1 ms), to pick the oldest when every way is taken; then the ways.
 */
struct ag_flow_bucket_v4 {
	__u32 stamp[AG_FLOW_NEW_WAYS];
	struct ag_flow_new_v4 way[AG_FLOW_NEW_WAYS];
};

struct ag_flow_bucket_v6 {
	__u32 stamp[AG_FLOW_NEW_WAYS];
	struct ag_flow_new_v6 way[AG_FLOW_NEW_WAYS];
};

/*
 * ag_flow_ctl[0]: written by the agent only (the programs count the rest). The peer
 * filter (lib/flow.h) has two generations; the programs set bits in peer_gen's, and in
 * the other one too while the agent rebuilds it (peer_building).
 */
struct ag_flow_ctl {
	__u64 seeded;		/* flows the agent added from the kernel's sockets */
	__u64 migrated;		/* flows the agent copied from tables it replaced (a new capacity) */
	__u64 hash_key;		/* the key of the flow hash the tables were filled with */
	__u32 peer_gen;		/* 0 or 1 */
	__u32 peer_building;	/* 1 while the agent rebuilds the other generation */
};

/*
 * Non-first fragments (lib/frag.h): each first fragment that passed notes its datagram
 * here, so that the datagram's other fragments pass the same way within AG_FRAG_TTL_NS,
 * and no other non-first fragment does. Direct-mapped by a keyed hash; not pinned (a
 * datagram in flight during a restart is retransmitted).
 */
#define AG_FRAG_SLOTS		16384
#define AG_FRAG_TTL_NS		(5ULL * 1000000000ULL)

struct ag_frag_key {
	__u8 src[16];		/* IPv4 in the first 4 bytes, the rest 0 */
	__u8 dst[16];
	__u32 id;		/* IPv4: the 16-bit identification; IPv6: the fragment header's */
	__u8 proto;
	__u8 family;
	__u16 _pad;
};

struct ag_frag_value {
	struct ag_frag_key key;
	__u64 seen_ns;		/* when its first fragment passed */
	__u32 check;		/* the key's hash, never 0; 0: empty */
	__u8 reason;		/* what let the first fragment pass */
	__u8 _pad[3];
};

/*
 * DNS queries by socket (lib/dns.h): each (resolver, client port) keeps its own
 * AG_DNS_SOCKET_QUERIES most recent query ids, so that a flood of queries from one
 * socket can push out only its own.
 */
#define AG_DNS_SOCKETS_MAX	16384
#define AG_DNS_SOCKET_QUERIES	16

struct ag_dns_socket_key {
	__u8 server[16];	/* as ag_dns_server_key */
	__u16 client_port;	/* host byte order */
	__u16 _pad;
};

struct ag_dns_socket_value {
	__u32 sent[AG_DNS_SOCKET_QUERIES];	/* bpf_ktime_get_ns() >> 20 when sent, | 1; 0: empty */
	__u16 id[AG_DNS_SOCKET_QUERIES];
	__u32 next;		/* the slot the next new query takes (modulo AG_DNS_SOCKET_QUERIES) */
};

/* One drop (or, in monitor mode, would-drop) event on the ring buffer. */
struct ag_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u64 generation;
	__u32 ifindex;
	__u8 direction;		/* enum ag_direction */
	__u8 reason;		/* enum ag_reason */
	__u8 enforced;		/* 0: monitor mode, the packet went on */
	__u8 family;		/* 4, 6, or 0 for non-IP */
	__u16 ethertype;	/* host byte order */
	__u8 l4proto;
	__u8 _pad;
	__u16 sport;		/* host byte order; 0 when unknown */
	__u16 dport;
	__u8 saddr[16];		/* IPv4 in the first 4 bytes */
	__u8 daddr[16];
};

#endif /* ALLOWGATE_ABI_H */
