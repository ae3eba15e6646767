// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * share_test.bpf.c - programs of "another owner" for tests/share.rs, never part
 * of the filter: what shares allowgate's hooks in the tests.
 *
 * other_egress counts every packet it sees and lets it go on (TC_ACT_UNSPEC);
 * other_egress_ok counts too but ends the tcx chain with TC_ACT_OK, as a
 * program placed before allowgate could. pass_first passes every frame and,
 * by its libxdp run config, ends a dispatcher's chain on XDP_PASS at priority 0
 * under a name that sorts before allowgate's.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} other_seen SEC(".maps");

static __always_inline void count(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&other_seen, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("classifier")
int other_egress(struct __sk_buff *skb)
{
	count();
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int other_egress_ok(struct __sk_buff *skb)
{
	count();
	return TC_ACT_OK;
}

/* libxdp's run config (its XDP_RUN_CONFIG layout): priority 0, and only XDP_DROP
 * goes on to the next program (XDP_PASS is one unless turned off). */
struct {
	int (*priority)[0];
	int (*XDP_PASS)[0];
	int (*XDP_DROP)[1];
} _a_pass_first SEC(".xdp_run_config");

SEC("xdp")
int a_pass_first(struct xdp_md *ctx)
{
	count();
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
