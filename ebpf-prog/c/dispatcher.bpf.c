// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * dispatcher.bpf.c - an XDP dispatcher in the format of libxdp's multi-prog
 * protocol (version 2, xdp-tools lib/libxdp/protocol.org), written for
 * allowgate from that document: the XDP program that sits on the interface
 * and calls up to ten component programs in turn, each replacing one of the
 * stub functions prog0..prog9 (freplace, BPF_PROG_TYPE_EXT).
 *
 * libxdp recognises a dispatcher by what the kernel says of it: the program
 * is called xdp_dispatcher, it has exactly one map (this .rodata), and the
 * map's value starts with the magic and the version. What it reads there
 * (each slot's run priority and chain call actions) is how it rebuilds the
 * dispatcher when another program joins or leaves, so the layout below is the
 * protocol's, byte for byte (124 bytes, asserted on the Rust side).
 *
 * The agent fills `conf` before loading (dataplane/dispatcher.rs); the frozen
 * read-only map lets the verifier cut the calls to unused slots.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define AG_DISPATCHER_SLOTS	10
/* What a stub returns, always a chain call action: an empty slot goes on. */
#define AG_DISPATCHER_STUB_RET	31

struct ag_dispatcher_config {
	__u8 magic;
	__u8 dispatcher_version;
	__u8 num_progs_enabled;
	__u8 is_xdp_frags;
	__u32 chain_call_actions[AG_DISPATCHER_SLOTS];
	__u32 run_prios[AG_DISPATCHER_SLOTS];
	__u32 program_flags[AG_DISPATCHER_SLOTS];
};

volatile const struct ag_dispatcher_config conf = {};

/*
 * The stubs are global (freplace can only replace global functions) and not
 * inlined; the volatile return keeps the compiler from assuming what they
 * return, and the ctx check gives the verifier a use of ctx.
 */
#define AG_STUB(n)                                               \
	__attribute__((noinline)) int prog##n(struct xdp_md *ctx) \
	{                                                        \
		volatile int ret = AG_DISPATCHER_STUB_RET;       \
		if (!ctx)                                        \
			return XDP_ABORTED;                      \
		return ret;                                      \
	}

AG_STUB(0)
AG_STUB(1)
AG_STUB(2)
AG_STUB(3)
AG_STUB(4)
AG_STUB(5)
AG_STUB(6)
AG_STUB(7)
AG_STUB(8)
AG_STUB(9)

/* Slot n runs when enabled; a return outside its chain call actions is final. */
#define AG_SLOT(n)                                               \
	if (conf.num_progs_enabled <= n)                         \
		return XDP_PASS;                                 \
	ret = prog##n(ctx);                                      \
	if (!((1U << ret) & conf.chain_call_actions[n]))         \
		return ret;

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	int ret;

	AG_SLOT(0)
	AG_SLOT(1)
	AG_SLOT(2)
	AG_SLOT(3)
	AG_SLOT(4)
	AG_SLOT(5)
	AG_SLOT(6)
	AG_SLOT(7)
	AG_SLOT(8)
	AG_SLOT(9)
	return XDP_PASS;
}

/*
 * A do-nothing extension, never attached to an interface: loading it against
 * this dispatcher tells whether the kernel takes extension programs at all
 * (some hardened kernels refuse them, and libxdp then attaches programs alone).
 */
SEC("freplace")
int ag_probe_ext(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
