// SPDX-License-Identifier: GPL-2.0-only
/*
 * TLS libraries: the plaintext of OpenSSL-compatible SSL_read/SSL_write(_ex)
 * calls, and of GnuTLS's record calls, which take (session, buffer, size)
 * and return the byte count like SSL_read/SSL_write, so they attach the
 * same programs.
 */
#include "llmtap.h"

static __always_inline int enter_ssl(void *ssl, const void *buf, __u64 out_len, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_watched(pid_tgid >> 32))
		return 0;
	struct ssl_stack *stack = bpf_map_lookup_elem(&active_ssl_calls, &pid_tgid);
	if (!stack) {
		struct ssl_stack empty = {};
		bpf_map_update_elem(&active_ssl_calls, &pid_tgid, &empty, BPF_NOEXIST);
		stack = bpf_map_lookup_elem(&active_ssl_calls, &pid_tgid);
		if (!stack)
			return 0;
	}
	__u32 depth = stack->depth;
	stack->depth = depth + 1;
	if (depth >= SSL_STACK_DEPTH)
		return 0;
	struct ssl_call *call = &stack->frames[depth & (SSL_STACK_DEPTH - 1)];
	call->ssl = (__u64)ssl;
	call->buf = (__u64)buf;
	call->out_len = out_len;
	call->start_ns = bpf_ktime_get_ns();
	call->direction = direction;
	call->repeat = 0;
	if (depth > 0) {
		struct ssl_call *outer = &stack->frames[(depth - 1) & (SSL_STACK_DEPTH - 1)];
		call->repeat = outer->ssl == (__u64)ssl && outer->direction == direction;
	}
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_entry, void *ssl, const void *buf)
{
	return enter_ssl(ssl, buf, 0, LLMTAP_EGRESS);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_ex_entry, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	return enter_ssl(ssl, buf, (__u64)written, LLMTAP_EGRESS);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_entry, void *ssl, void *buf)
{
	return enter_ssl(ssl, buf, 0, LLMTAP_INGRESS);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_ex_entry, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return enter_ssl(ssl, buf, (__u64)readbytes, LLMTAP_INGRESS);
}

/* The return of all four: the plain forms return the byte count, the _ex
 * forms 1 on success with the count behind `out_len`. */
SEC("uretprobe")
int BPF_KRETPROBE(ssl_return, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ssl_stack *stack = bpf_map_lookup_elem(&active_ssl_calls, &pid_tgid);
	if (!stack || stack->depth == 0)
		return 0;
	__u32 depth = --stack->depth;
	if (depth >= SSL_STACK_DEPTH)
		return 0;
	struct ssl_call call = stack->frames[depth & (SSL_STACK_DEPTH - 1)];
	if (depth == 0)
		bpf_map_delete_elem(&active_ssl_calls, &pid_tgid);
	if (call.repeat)
		return 0;

	__u64 len = 0;
	if (call.out_len) {
		if ((int)ret != 1 || bpf_probe_read_user(&len, sizeof(len), (void *)call.out_len))
			return 0;
	} else {
		if ((int)ret <= 0)
			return 0;
		len = (int)ret;
	}
	emit_tls_data(&call, len, pid_tgid);
	return 0;
}
