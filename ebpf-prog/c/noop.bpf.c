// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * noop.bpf.c - an XDP program that passes every packet and does nothing else:
 * the bench's yardstick for the fixed cost of running any XDP program.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int noop(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
