// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * abi_check.c - never linked: build.rs compiles it with -fsyntax-only so that a
 * change to abi.h that the #[repr(C)] mirrors in src/lib.rs don't follow (or the
 * reverse: lib.rs asserts the same numbers) fails the build.
 */
#include "abi.h"

#define AG_ASSERT_SIZE(type, size) \
	_Static_assert(sizeof(type) == (size), #type " must be " #size " bytes, as src/lib.rs asserts")

AG_ASSERT_SIZE(struct ag_gen_config, 72);
AG_ASSERT_SIZE(struct ag_port_rule, 8);
AG_ASSERT_SIZE(struct ag_policy_value, 136);
AG_ASSERT_SIZE(struct ag_v4_host_key, 4);
AG_ASSERT_SIZE(struct ag_v6_host_key, 16);
AG_ASSERT_SIZE(struct ag_host_index_v4, 8);
AG_ASSERT_SIZE(struct ag_lpm_v4_key, 8);
AG_ASSERT_SIZE(struct ag_lpm_v6_key, 20);
AG_ASSERT_SIZE(struct ag_counter, 16);
AG_ASSERT_SIZE(struct ag_event, 64);
AG_ASSERT_SIZE(struct ag_dyn_value, 144);
AG_ASSERT_SIZE(struct ag_dns_server_key, 16);
AG_ASSERT_SIZE(struct ag_dns_ctl, 40);
AG_ASSERT_SIZE(struct ag_dns_release_key, 20);
AG_ASSERT_SIZE(struct ag_dns_frame, 16 + AG_DNS_FRAME_MAX);
AG_ASSERT_SIZE(struct ag_flow_v4_key, 16);
AG_ASSERT_SIZE(struct ag_flow_v6_key, 40);
AG_ASSERT_SIZE(struct ag_flow_seq, 20);
AG_ASSERT_SIZE(struct ag_flow_value, 64);
AG_ASSERT_SIZE(struct ag_flow_checks, 16);
AG_ASSERT_SIZE(struct ag_flow_bucket_v4, 16 + 4 * 80);
AG_ASSERT_SIZE(struct ag_flow_bucket_v6, 16 + 4 * 104);
AG_ASSERT_SIZE(struct ag_flow_ctl, 32);
AG_ASSERT_SIZE(struct ag_flow_peer_word, 16);
AG_ASSERT_SIZE(struct ag_frag_value, 56);
AG_ASSERT_SIZE(struct ag_dns_socket_key, 20);
AG_ASSERT_SIZE(struct ag_dns_socket_value, 100);

/* Field offsets the Rust side relies on implicitly through #[repr(C)]. */
_Static_assert(__builtin_offsetof(struct ag_gen_config, ethertypes) == 16, "ag_gen_config layout");
_Static_assert(__builtin_offsetof(struct ag_gen_config, flow_timeout_s) == 32 &&
	       __builtin_offsetof(struct ag_gen_config, flow_tag) == 64, "ag_gen_config layout");
_Static_assert(__builtin_offsetof(struct ag_flow_value, allowed) == 10 &&

	       __builtin_offsetof(struct ag_flow_value, tag) == 16 &&
	       __builtin_offsetof(struct ag_flow_value, seq) == 24, "ag_flow_value layout");
_Static_assert(__builtin_offsetof(struct ag_flow_seq, scale) == 16, "ag_flow_seq layout");
_Static_assert(__builtin_offsetof(struct ag_flow_ctl, hash_key) == 16 &&
	       __builtin_offsetof(struct ag_flow_ctl, peer_gen) == 24, "ag_flow_ctl layout");
_Static_assert(__builtin_offsetof(struct ag_dns_socket_value, id) == 64 &&
	       __builtin_offsetof(struct ag_dns_socket_value, next) == 96, "ag_dns_socket_value layout");
_Static_assert(__builtin_offsetof(struct ag_flow_v4_key, lport) == 8 &&
	       __builtin_offsetof(struct ag_flow_v6_key, lport) == 32, "ag_flow_*_key layout");
_Static_assert(__builtin_offsetof(struct ag_policy_value, rules) == 8, "ag_policy_value layout");
_Static_assert((AG_HOST_VALUES & (AG_HOST_VALUES - 1)) == 0, "AG_HOST_VALUES is a power of two");
_Static_assert(__builtin_offsetof(struct ag_port_rule, port_lo) == 4, "ag_port_rule layout");
_Static_assert(__builtin_offsetof(struct ag_event, ethertype) == 24, "ag_event layout");
_Static_assert(__builtin_offsetof(struct ag_event, saddr) == 32, "ag_event layout");
_Static_assert(__builtin_offsetof(struct ag_event, daddr) == 48, "ag_event layout");
_Static_assert(__builtin_offsetof(struct ag_dyn_value, expires_ns) == 136, "ag_dyn_value layout");
_Static_assert(__builtin_offsetof(struct ag_dns_release_key, dns_id) == 16 &&
	       __builtin_offsetof(struct ag_dns_release_key, client_port) == 18,
	       "ag_dns_release_key layout");
_Static_assert(__builtin_offsetof(struct ag_dns_frame, held) == 8 &&
	       __builtin_offsetof(struct ag_dns_frame, data) == 16, "ag_dns_frame layout");
_Static_assert(__builtin_offsetof(struct ag_dns_ctl, give_back) == 16 &&
	       __builtin_offsetof(struct ag_dns_ctl, given_back) == 24, "ag_dns_ctl layout");

/* The number of counters lib.rs computes the same way. */
_Static_assert(AG_STATS_ENTRIES == 256, "AG_STATS_ENTRIES");
_Static_assert(AG_SLOTS == 2 && AG_MAX_PORT_RULES == 16 && AG_MAX_ETHERTYPES == 8 &&
	       AG_MAX_VLAN_DEPTH == 2 && AG_MAX_V6_EXT_HDRS == 8 && AG_REASON_CAPACITY == 64 &&
	       AG_ABI_VERSION == 4 &&
	       AG_MISC_MAX == 11 && AG_MISC_CAPACITY == 32 && AG_MISC_DNS_UNSOLICITED == 4 &&
	       AG_MISC_FLOW_REMOVED == 6 && AG_MISC_DNS_PASSED == 7 && AG_MISC_FLOW_NEW == 8 &&
	       AG_MISC_FRAG_NOTED == 10 &&
	       AG_GIVE_BACK_NONE == 0 && AG_GIVE_BACK_LIVE_FRAMES == 1 && AG_GIVE_BACK_LOOPBACK == 2 &&
	       AG_FLOW_MAX == 65536 && AG_FLOW_NEW_WAYS == 4 && AG_FLOW_STATES == 8 &&
	       AG_F_STATEFUL == (1U << 9) && AG_F_LIBERAL == (1U << 10) &&
	       AG_FRAG_SLOTS == 16384 && AG_DNS_SOCKETS_MAX == 16384 && AG_DNS_SOCKET_QUERIES == 16 &&
	       AG_DYN_MAX == 16384 && AG_MAX_DNS_SERVERS == 16 &&
	       AG_DNS_RELEASE_MAX == 1024 && AG_DNS_QUERIES_MAX == 4096 &&
	       AG_DNS_FRAME_MAX == 1536,
	       "abi.h bounds must match the constants in src/lib.rs");
