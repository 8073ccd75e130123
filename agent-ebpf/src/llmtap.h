/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What llmtap's hook families share: the settings user space fills in, the
 * maps more than one family uses, and the helpers that build and send
 * records (the record layout itself is events.h).
 *
 * Filtering happens in the kernel, on `watched_pids`, so uprobes can be
 * attached to a library file for every process and short-lived processes
 * are never raced.
 *
 * build.rs compiles every `.bpf.c` file as one translation unit, so the
 * definitions here exist once in the object; each .bpf.c includes this
 * header so that it reads, and compiles, on its own.
 */
#ifndef LLMTAP_H
#define LLMTAP_H

#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "kernel.h"
#include "events.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by user space before load (EbpfLoader::override_global). */
const volatile __u32 capture_bytes = 4096;
const volatile __u8 follow_forks = 1;
/* Wake the reader only once this much is waiting: a wakeup per record costs
 * the traced process a context switch per call. The reader also polls on a
 * short timer, so a quiet stream is never left behind. */
const volatile __u32 wakeup_bytes = 256 * 1024;
/* Report every exec, not only the watched ones: set when a scope (an --exe
 * regex) can only be decided in user space. */
const volatile __u8 report_all_execs = 0;
/* --all: every process is watched but the agent itself (its own metrics
 * and OTLP traffic must not loop back into it). */
const volatile __u8 watch_all = 0;
const volatile __u32 agent_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by user space */
} events SEC(".maps");

/* Thread-group ids of the processes being watched. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} watched_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LLMTAP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Masks that bound offsets and lengths for the verifier. Values are already
 * in range (offsets < LLMTAP_MAX_DATA, lengths <= LLMTAP_MAX_DATA), so the
 * masks change nothing at run time; clang drops plain `if` bounds, masks
 * it keeps. */
#define OFFSET_MASK (LLMTAP_MAX_DATA - 1)
#define LENGTH_MASK (2 * LLMTAP_MAX_DATA - 1)

/* A data record being built, sized for the largest masked offset plus
 * masked length. Too large for a per-CPU map, so a plain array indexed by
 * CPU; user space sizes it to the CPU count. */
struct data_scratch {
	struct llmtap_header hdr;
	__u32 len;
	__u32 captured;
	__u8 data[3 * LLMTAP_MAX_DATA];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct data_scratch);
} scratch SEC(".maps");

/* ---- calls in flight, by thread -----------------------------------------
 * The socket and TLS families each keep their own, but on_exit
 * (processes.bpf.c) drops them all for an exiting thread, and the socket
 * probes look at the TLS call they run inside, so they are defined here. */

/* An SSL_read/SSL_write(_ex) between entry and return. */
struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 out_len; /* size_t * of the _ex forms, 0 for the plain forms */
	__u64 start_ns;
	__u8 direction;
	/* The same session and direction as the call it is nested in (a
	 * library implementing one form with another): not reported twice. */
	__u8 repeat;
	__u8 _pad[6];
};

/* SSL calls can nest: node writes from inside SSL_read when a handshake
 * completes. Return probes fire in reverse order of entries, so a stack per
 * thread pairs each return with its entry. */
#define SSL_STACK_DEPTH 4

struct ssl_stack {
	struct ssl_call frames[SSL_STACK_DEPTH];
	__u32 depth; /* may exceed SSL_STACK_DEPTH: those frames are not kept */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ssl_stack);
} active_ssl_calls SEC(".maps");

/* The TLS socket each thread last moved ciphertext on. Libraries that do
 * TLS over memory buffers (node, asyncio) make no syscall inside SSL calls;
 * their event loop reads a socket, then decrypts with SSL_read on the same
 * thread, so this links such a session to its socket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __s32);
} thread_tls_fd SEC(".maps");

/* The socket fd under an SSL*, learnt from the syscalls it makes (by the
 * socket probes) and read when its plaintext is sent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct llmtap_ssl_key);
	__type(value, __s32);
} ssl_fds SEC(".maps");

/* Processes whose TLS libraries user space has looked at since their
 * exec: their next handshakes are not held (see tls_handshake in sockets.bpf.c). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tls_looked_at SEC(".maps");

/* ---- building and sending records -------------------------------------- */

static __always_inline __u64 wakeup_flag(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									       : BPF_RB_NO_WAKEUP;
}

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);
	if (value)
		*value += 1;
}

static __always_inline bool is_watched(__u32 pid)
{
	if (watch_all)
		return pid != agent_pid;
	return bpf_map_lookup_elem(&watched_pids, &pid) != NULL;
}

/* The innermost SSL call of this thread, or NULL. */
static __always_inline struct ssl_call *current_ssl_call(__u64 pid_tgid)
{
	struct ssl_stack *stack = bpf_map_lookup_elem(&active_ssl_calls, &pid_tgid);
	if (!stack || stack->depth == 0 || stack->depth > SSL_STACK_DEPTH)
		return NULL;
	return &stack->frames[(stack->depth - 1) & (SSL_STACK_DEPTH - 1)];
}

static __always_inline void fill_header(struct llmtap_header *hdr, __u8 kind, __u64 pid_tgid, __s32 fd)
{
	hdr->kind = kind;
	hdr->direction = 0;
	hdr->source = 0;
	hdr->flags = 0;
	hdr->pid = pid_tgid >> 32;
	hdr->tid = (__u32)pid_tgid;
	hdr->fd = fd;
	hdr->ssl = 0;
}

static __always_inline void emit_conn_event(__u8 kind, __u8 flags, __s32 fd, struct sock *sk, __u64 start_ns)
{
	struct llmtap_conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(LLMTAP_COUNTER_RINGBUF_FULL);
		return;
	}
	fill_header(&ev->hdr, kind, bpf_get_current_pid_tgid(), fd);
	ev->hdr.flags = flags;
	ev->hdr.start_ns = start_ns;
	ev->hdr.end_ns = bpf_ktime_get_ns();
	ev->family = 0;
	ev->local_port = 0;
	ev->peer_port = 0;
	ev->_pad = 0;
	__builtin_memset(ev->local_addr, 0, sizeof(ev->local_addr));
	__builtin_memset(ev->peer_addr, 0, sizeof(ev->peer_addr));
	/* The process's name (its main thread's), not the calling thread's:
	 * a tokio worker or a Python thread pool names its threads. */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&ev->comm, task, group_leader, comm);
	if (sk) {
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
		ev->family = family;
		ev->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
		ev->peer_port = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
		if (family == AF_INET) {
			__be32 local = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
			__be32 peer = BPF_CORE_READ(sk, __sk_common.skc_daddr);
			__builtin_memcpy(ev->local_addr, &local, 4);
			__builtin_memcpy(ev->peer_addr, &peer, 4);
		} else {
			BPF_CORE_READ_INTO(&ev->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
			BPF_CORE_READ_INTO(&ev->peer_addr, sk, __sk_common.skc_v6_daddr);
		}
	}
	bpf_ringbuf_submit(ev, wakeup_flag());
}

/* A record about process `pid` (and its socket `fd`, or -1) made while
 * another task runs: a fork in the parent, a socket's end in whichever
 * task ended it. Only kind, pid, fd and time are filled in. */
static __always_inline void emit_event_for(__u8 kind, __u32 pid, __s32 fd)
{
	struct llmtap_conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(LLMTAP_COUNTER_RINGBUF_FULL);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->hdr.kind = kind;
	ev->hdr.pid = pid;
	ev->hdr.fd = fd;
	ev->hdr.end_ns = ev->hdr.start_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(ev, wakeup_flag());
}

static __always_inline struct data_scratch *scratch_slot(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	return bpf_map_lookup_elem(&scratch, &cpu);
}

/* Sends `s` with its first `captured` payload bytes. */
static __always_inline void submit_data(struct data_scratch *s, __u32 captured)
{
	captured &= LENGTH_MASK;
	s->captured = captured;
	if (captured < s->len) {
		s->hdr.flags |= LLMTAP_FLAG_TRUNCATED;
		count(LLMTAP_COUNTER_TRUNCATED);
	}
	if (bpf_ringbuf_output(&events, s, sizeof(struct llmtap_data_event) + captured, wakeup_flag()))
		count(LLMTAP_COUNTER_RINGBUF_FULL);
}

static __always_inline __u32 capture_limit(__u64 len)
{
	__u32 limit = capture_bytes < LLMTAP_MAX_DATA ? capture_bytes : LLMTAP_MAX_DATA;
	return len < limit ? len : limit;
}

/* Sends the plaintext a TLS call moved: `len` bytes at `call->buf`, on the
 * stream of its session. */
static __always_inline void emit_tls_data(struct ssl_call *call, __u64 len, __u64 pid_tgid)
{
	if (len == 0)
		return;
	struct data_scratch *s = scratch_slot();
	if (!s)
		return;
	struct llmtap_ssl_key skey = { .ssl = call->ssl, .pid = pid_tgid >> 32 };
	__s32 *fd = bpf_map_lookup_elem(&ssl_fds, &skey);
	if (!fd) {
		fd = bpf_map_lookup_elem(&thread_tls_fd, &pid_tgid);
		if (fd)
			bpf_map_update_elem(&ssl_fds, &skey, fd, BPF_ANY);
	}
	fill_header(&s->hdr, LLMTAP_EVENT_DATA, pid_tgid, fd ? *fd : -1);
	s->hdr.direction = call->direction;
	s->hdr.source = LLMTAP_SOURCE_OPENSSL;
	s->hdr.ssl = call->ssl;
	s->hdr.start_ns = call->start_ns;
	s->hdr.end_ns = bpf_ktime_get_ns();
	s->len = len;
	__u32 limit = capture_limit(len);
	__u32 captured = bpf_probe_read_user(s->data, limit & LENGTH_MASK, (void *)call->buf) ? 0 : limit;
	submit_data(s, captured);
}

#endif
