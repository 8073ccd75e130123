// SPDX-License-Identifier: GPL-2.0-only
/*
 * Go's crypto/tls: (*Conn).Write(b) and (*Conn).Read(b) under Go's register
 * ABI: the receiver in RAX, b's pointer and length in RBX and RCX; the byte
 * count returned in RAX. A goroutine may move between threads during a
 * Read, so reads are keyed by the goroutine (its g, always in R14), and
 * their return is caught by uprobes on the function's RET instructions: a
 * uretprobe rewrites the return address on a stack Go may move.
 */
#include "llmtap.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct llmtap_go_key);
	__type(value, struct ssl_call);
} active_go_calls SEC(".maps");

/* Write(b) is reported at its entry, with all of b (it returns len(b) or an
 * error): the goroutine may reach its RET only after another one has read
 * the response, and the request must come first. */
SEC("uprobe")
int go_tls_write_entry(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_watched(pid_tgid >> 32))
		return 0;
	struct ssl_call call = {
		.ssl = ctx->rax,
		.buf = ctx->rbx,
		.start_ns = bpf_ktime_get_ns(),
		.direction = LLMTAP_EGRESS,
	};
	emit_tls_data(&call, ctx->rcx, pid_tgid);
	return 0;
}

SEC("uprobe")
int go_tls_read_entry(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_watched(pid_tgid >> 32))
		return 0;
	struct llmtap_go_key key = { .g = ctx->r14, .pid = pid_tgid >> 32 };
	/* A stack-growth restart re-enters: the later entry wins. */
	struct ssl_call call = {
		.ssl = ctx->rax,
		.buf = ctx->rbx,
		.start_ns = bpf_ktime_get_ns(),
		.direction = LLMTAP_INGRESS,
	};
	bpf_map_update_elem(&active_go_calls, &key, &call, BPF_ANY);
	return 0;
}

SEC("uprobe")
int go_tls_return(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct llmtap_go_key key = { .g = ctx->r14, .pid = pid_tgid >> 32 };
	struct ssl_call *active = bpf_map_lookup_elem(&active_go_calls, &key);
	if (!active)
		return 0;
	struct ssl_call call = *active;
	bpf_map_delete_elem(&active_go_calls, &key);
	__s64 n = ctx->rax;
	if (n > 0)
		emit_tls_data(&call, n, pid_tgid);
	return 0;
}
