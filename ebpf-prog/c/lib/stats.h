/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * stats.h - what the filter tells the agent: per-CPU counters by (direction,
 * verdict, reason), and drop events on a ring buffer, rate-limited per CPU so
 * that a flood of dropped packets can't flood the agent too.
 */
#ifndef ALLOWGATE_STATS_H
#define ALLOWGATE_STATS_H

#include "common.h"

#define AG_NSEC_PER_SEC		1000000000ULL
#define AG_EVENTS_RINGBUF_BYTES	(256 * 1024)

/* Load-time settings of the event rate limit (EbpfLoader::override_global). */
volatile const __u64 event_rate_per_sec = 1000;
volatile const __u64 event_burst = 100;

/*
 * Token bucket kept as a theoretical arrival time (GCRA): one u64, no
 * fractional tokens. Each event moves tat_ns an interval (1 s / rate) later;
 * an event is allowed while tat_ns stays within burst intervals of now.
 */
struct ag_ratelimit_state {
	__u64 tat_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AG_STATS_ENTRIES);
	__type(key, __u32);
	__type(value, struct ag_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_stats SEC(".maps");

/* ag_abi[0]: the AG_ABI_VERSION of the build that pinned these maps (the agent writes it). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_abi SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AG_MISC_CAPACITY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_misc SEC(".maps");

/*
 * The jiffy in which this CPU's limiter last said no. Until jiffies moves on, a drop
 * is suppressed without reading the clock: bpf_jiffies64() is one load, while
 * bpf_ktime_get_ns() is tens of ns in a VM, paid on every dropped packet of a flood.
 * The bucket itself still runs on the ns clock, so no refill is lost, only deferred
 * to the next jiffy.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_event_quiet SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, AG_EVENTS_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ag_ratelimit_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_ratelimit SEC(".maps");

static __always_inline void ag_count(__u8 dir, __u8 verdict, __u8 reason, __u64 bytes)
{
	__u32 index = ((__u32)dir * AG_VERDICT_MAX + verdict) * AG_REASON_CAPACITY + reason;
	struct ag_counter *counter;

	counter = bpf_map_lookup_elem(&ag_stats, &index);
	if (!counter)
		return;
	/* Per-CPU, and a CPU runs one of our programs at a time: no atomics. */
	counter->packets += 1;
	counter->bytes += bytes;
}

static __always_inline void ag_count_misc(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&ag_misc, &index);

	if (value)
		*value += 1;
}

/* May this CPU emit one more event at time now? */
static __always_inline int ag_event_allowed(__u64 now)
{
	__u64 rate = event_rate_per_sec;
	__u64 burst = event_burst;
	struct ag_ratelimit_state *state;
	__u64 interval, tat;
	__u32 zero = 0;

	if (rate == 0 || burst == 0)
		return 0;
	state = bpf_map_lookup_elem(&ag_ratelimit, &zero);
	if (!state)
		return 0;
	interval = AG_NSEC_PER_SEC / rate;
	tat = state->tat_ns > now ? state->tat_ns : now;
	if (tat + interval - now > burst * interval)
		return 0;
	state->tat_ns = tat + interval;
	return 1;
}

static __always_inline void ag_report_drop(const struct ag_pkt *pkt, __u64 generation,
					   __u32 ifindex, __u8 dir, __u8 reason, __u8 enforced)
{
	__u64 jiffies = bpf_jiffies64();
	struct ag_event *event;
	__u32 zero = 0;
	__u64 *quiet;
	__u64 now;

	quiet = bpf_map_lookup_elem(&ag_event_quiet, &zero);
	if (quiet && *quiet == jiffies) {
		ag_count_misc(AG_MISC_EVENTS_SUPPRESSED);
		return;
	}
	now = bpf_ktime_get_ns();
	if (!ag_event_allowed(now)) {
		if (quiet)
			*quiet = jiffies;
		ag_count_misc(AG_MISC_EVENTS_SUPPRESSED);
		return;
	}
	event = bpf_ringbuf_reserve(&ag_events, sizeof(*event), 0);
	if (!event) {
		ag_count_misc(AG_MISC_EVENTS_LOST);
		return;
	}
	event->ts_ns = now;
	event->generation = generation;
	event->ifindex = ifindex;
	event->direction = dir;
	event->reason = reason;
	event->enforced = enforced;
	event->family = pkt->family;
	event->ethertype = pkt->ethertype;
	event->l4proto = pkt->l4proto;
	event->_pad = 0;
	event->sport = pkt->sport;
	event->dport = pkt->dport;
	__builtin_memcpy(event->saddr, pkt->saddr.bytes, sizeof(event->saddr));
	__builtin_memcpy(event->daddr, pkt->daddr.bytes, sizeof(event->daddr));
	bpf_ringbuf_submit(event, 0);
}

#endif /* ALLOWGATE_STATS_H */
