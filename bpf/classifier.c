// SPDX-License-Identifier: Apache-2.0
//
// wuos XDP classifier: counts service traffic, records new flows, and hands packets of services
// that have a local instance straight to that instance's veth.
//
//   packet ─▶ Ethernet/IPv4 (no fragment) ─▶ UDP/TCP ─▶ services[(VIP, dport, proto)] ─▶ id
//                 │ anything else                            │ no entry
//                 ▼                                          ▼
//             XDP_PASS                                   XDP_PASS
//   id ─▶ counters[id] += (1 packet, frame bytes)
//      ─▶ flows[5-tuple] absent? insert; counters[id].flows += 1; events ◀─ FlowEvent
//      ─▶ local_rules[id]? rewrite MACs, TTL - 1 (checksum fixed), XDP_REDIRECT to its ifindex
//                     : XDP_PASS (the kernel's FIB decides)
//
// The layouts below are mirrored byte for byte in crates/wuos-southbound/src/xdp.rs.
// Built by crates/wuos-southbound/build.rs with `clang -O2 -g -target bpf`; no libbpf needed:
// the few helpers and map macros are declared here.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/types.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define bpf_htons(x) __builtin_bswap16(x)
#else
#define bpf_htons(x) (x)
#endif

// Helper prototypes: the helper number comes from enum bpf_func_id in linux/bpf.h.
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   __u64 flags) = (void *)BPF_FUNC_map_update_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)BPF_FUNC_ringbuf_reserve;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)BPF_FUNC_ringbuf_submit;

// (VIP, destination port, IP protocol), all in network byte order; 8 bytes.
struct service_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

// Per service and per CPU; summed in user space.
struct counters {
	__u64 packets;
	__u64 bytes; // whole Ethernet frames
	__u64 flows;
};

// Where a local instance of the service is reached: an interface of this namespace and the MACs
// to put on the frame. 16 bytes.
struct local_rule {
	__u32 ifindex;
	__u8 dst_mac[ETH_ALEN];
	__u8 src_mac[ETH_ALEN];
};

// The 5-tuple, addresses and ports in network byte order; 16 bytes.
struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_value {
	__u32 service;
	__u32 ifindex;
	__u64 first_ns;
};

// Pushed on a flow's first packet; 32 bytes.
struct flow_event {
	__u32 service;
	__u32 ifindex; // ingress
	__u64 ts_ns;   // bpf_ktime_get_ns: CLOCK_MONOTONIC
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct service_key);
	__type(value, __u32);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct local_rule);
} local_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

// No GPL-only helper is used, so the program keeps the project's licence.
char _license[] SEC("license") = "Apache-2.0";

// ip_decrease_ttl() of the kernel: TTL is the high byte of its 16-bit word, so the checksum
// changes by +0x0100 (one's complement, end-around carry).
static inline __attribute__((always_inline)) void decrease_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

SEC("xdp")
int wuos_classifier(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return XDP_PASS;
	// Fragments (more-fragments flag or an offset) carry no reliable ports.
	if (ip->frag_off & bpf_htons(0x3FFF))
		return XDP_PASS;

	struct flow_key fk = {};
	void *l4 = (void *)ip + ip->ihl * 4;
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return XDP_PASS;
		fk.sport = udp->source;
		fk.dport = udp->dest;
	} else if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return XDP_PASS;
		fk.sport = tcp->source;
		fk.dport = tcp->dest;
	} else {
		return XDP_PASS;
	}
	fk.saddr = ip->saddr;
	fk.daddr = ip->daddr;
	fk.proto = ip->protocol;

	struct service_key sk = {.vip = ip->daddr, .port = fk.dport, .proto = ip->protocol};
	__u32 *id = bpf_map_lookup_elem(&services, &sk);
	if (!id)
		return XDP_PASS;
	__u32 service = *id;

	struct counters *c = bpf_map_lookup_elem(&counters, &service);
	if (!c) {
		// User space creates the entry with the service; this covers a race with its removal.
		struct counters zero = {};
		bpf_map_update_elem(&counters, &service, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&counters, &service);
	}
	if (c) {
		// Per-CPU values: no other CPU writes these, no atomics needed.
		c->packets++;
		c->bytes += data_end - data;
	}

	if (!bpf_map_lookup_elem(&flows, &fk)) {
		__u64 now = bpf_ktime_get_ns();
		struct flow_value fv = {.service = service, .ifindex = ctx->ingress_ifindex, .first_ns = now};
		// BPF_NOEXIST: of two CPUs that see the first packets of one flow at once, one reports it.
		if (bpf_map_update_elem(&flows, &fk, &fv, BPF_NOEXIST) == 0) {
			if (c)
				c->flows++;
			struct flow_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
			if (ev) {
				ev->service = service;
				ev->ifindex = ctx->ingress_ifindex;
				ev->ts_ns = now;
				ev->saddr = fk.saddr;
				ev->daddr = fk.daddr;
				ev->sport = fk.sport;
				ev->dport = fk.dport;
				ev->proto = fk.proto;
				ev->pad[0] = ev->pad[1] = ev->pad[2] = 0;
				bpf_ringbuf_submit(ev, 0);
			}
		}
	}

	struct local_rule *rule = bpf_map_lookup_elem(&local_rules, &service);
	// A packet that would expire here is left to the kernel, which answers with ICMP.
	if (!rule || ip->ttl <= 1)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, rule->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, rule->src_mac, ETH_ALEN);
	decrease_ttl(ip);
	return bpf_redirect(rule->ifindex, 0);
}

// XDP_PASS for the far end of a veth that frames are redirected to: a veth accepts XDP_REDIRECTed
// frames only while its peer runs an XDP program (which switches on the peer's NAPI receive path).
SEC("xdp")
int wuos_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
