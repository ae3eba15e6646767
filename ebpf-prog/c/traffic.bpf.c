// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * traffic.bpf.c - the real-traffic bench's own programs (xtask bench --traffic),
 * never part of the filter: a live-frame generator and the two yardsticks.
 *
 * traffic_gen runs under BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: every
 * repeat redirects the test frame out of the veth `target_ifindex` (in the
 * generator's namespace), so the receiver's NAPI sees a stream of real frames.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Set at load time (EbpfLoader::override_global): the veth to send out of. */
volatile const __u32 target_ifindex = 0;

SEC("xdp")
int traffic_gen(struct xdp_md *ctx)
{
	return bpf_redirect(target_ifindex, 0);
}

/* The ceiling: the cheapest a receiver can drop a frame. */
SEC("xdp")
int traffic_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

/* Every frame on to the stack: what "allowed" costs before any filter. */
SEC("xdp")
int traffic_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
