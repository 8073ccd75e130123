// SPDX-License-Identifier: GPL-2.0-only
/*
 * llmtap's kernel side: copies what a watched process writes to and reads
 * from its TCP sockets and its OpenSSL-compatible TLS library into a ring
 * buffer, one variable-size record per call (see events.h).
 *
 * Filtering happens here, on `watched_pids`, so uprobes can be attached to a
 * library file for every process and short-lived processes are never raced.
 */
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

/* The record layout as compiled, read back by the ABI test in
 * agent/src/capture/ebpf/abi.rs: llmtap_abi_<struct>__<field> is the field's
 * offset, llmtap_abi_<struct>__size the struct's size. */
#define ABI_SIZE(type) const volatile __u32 llmtap_abi_##type##__size = sizeof(struct type);
#define ABI_OFFSET(type, field) \
	const volatile __u32 llmtap_abi_##type##__##field = __builtin_offsetof(struct type, field);
ABI_SIZE(llmtap_header)
ABI_OFFSET(llmtap_header, kind)
ABI_OFFSET(llmtap_header, direction)
ABI_OFFSET(llmtap_header, source)
ABI_OFFSET(llmtap_header, flags)
ABI_OFFSET(llmtap_header, pid)
ABI_OFFSET(llmtap_header, tid)
ABI_OFFSET(llmtap_header, fd)
ABI_OFFSET(llmtap_header, ssl)
ABI_OFFSET(llmtap_header, start_ns)
ABI_OFFSET(llmtap_header, end_ns)
ABI_SIZE(llmtap_data_event)
ABI_OFFSET(llmtap_data_event, len)
ABI_OFFSET(llmtap_data_event, captured)
ABI_OFFSET(llmtap_data_event, data)
ABI_SIZE(llmtap_conn_event)
ABI_OFFSET(llmtap_conn_event, family)
ABI_OFFSET(llmtap_conn_event, local_port)
ABI_OFFSET(llmtap_conn_event, peer_port)
ABI_OFFSET(llmtap_conn_event, local_addr)
ABI_OFFSET(llmtap_conn_event, peer_addr)
ABI_OFFSET(llmtap_conn_event, comm)
const volatile __u32 llmtap_abi_max_data = LLMTAP_MAX_DATA;

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

/* Scopes decided here at exec, so a process is watched before its first
 * instruction: cgroup v2 ids (the cgroup directory's inode) whose processes
 * and descendant cgroups' processes are watched ... */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} watched_cgroups SEC(".maps");

/* ... and program names (the comm an exec sets: the file's basename, cut
 * to 15 bytes, zero-padded). */
struct comm_key {
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct comm_key);
	__type(value, __u8);
} watched_comms SEC(".maps");

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

#define SOCKET_SIDE_UNKNOWN 0
#define SOCKET_SIDE_CLIENT 1
#define SOCKET_SIDE_SERVER 2

/* What is known of a watched process's TCP socket, by (tgid << 32 | fd). */
struct socket_state {
	__u8 tls;       /* carries TLS: its socket records are ciphertext */
	__u8 seen_data; /* the first bytes were checked for a TLS record */
	__u8 side;
	__u8 not_http;  /* --all: its first bytes are not HTTP; ignored */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct socket_state);
} sockets SEC(".maps");

#define BUF_PLAIN 0
#define BUF_IOVEC 1
#define BUF_MSGHDR 2

/* A socket syscall between its entry and its return, by thread. */
struct socket_call {
	__u64 buf; /* data, struct iovec[] or struct user_msghdr, see `kind` */
	__u64 start_ns;
	__s32 fd;
	__u32 iovcnt;
	__u8 kind;
	__u8 direction;
	__u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct socket_call);
} active_socket_calls SEC(".maps");

/* connect/accept between entry and return: the fd, by thread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __s32);
} active_connects SEC(".maps");

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

struct ssl_key {
	__u64 ssl;
	__u32 pid;
	__u32 _pad;
};

/* The socket fd under an SSL*, learnt from the syscalls it makes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __s32);
} ssl_fds SEC(".maps");

static __always_inline __u64 wakeup_flag(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									       : BPF_RB_NO_WAKEUP;
}

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

static __always_inline __u64 socket_key(__u32 pid, __s32 fd)
{
	return ((__u64)pid << 32) | (__u32)fd;
}

/* The TCP socket behind `fd` in the current process, or NULL. */
static __always_inline struct sock *tcp_sock_of_fd(__s32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *socket = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(socket, sk);
	if (!sk)
		return NULL;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
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

static __always_inline struct data_scratch *scratch_slot(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	return bpf_map_lookup_elem(&scratch, &cpu);
}

/* Copies up to `limit` of the `total` bytes a call moved through an iovec
 * array into `s->data`, returns the bytes copied. */
static __always_inline __u32 copy_iovecs(struct data_scratch *s, const struct iovec *iovs, __u32 iovcnt,
					 __u64 total, __u32 limit)
{
	__u32 off = 0;
	for (int i = 0; i < LLMTAP_MAX_IOV; i++) {
		if ((__u32)i >= iovcnt || total == 0 || off >= limit)
			break;
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), &iovs[i]))
			break;
		__u64 seg = iov.iov_len < total ? iov.iov_len : total;
		total -= seg;
		__u32 room = limit - off;
		__u64 take = seg < room ? seg : room;
		take &= LENGTH_MASK;
		if (bpf_probe_read_user(&s->data[off & OFFSET_MASK], take, iov.iov_base))
			break;
		off += take;
	}
	return off;
}

static __always_inline bool looks_like_tls_record(const __u8 *data, __u32 captured)
{
	/* ContentType change_cipher_spec..application_data, version 3.x. */
	return captured >= 3 && data[0] >= 0x14 && data[0] <= 0x17 && data[1] == 0x03 && data[2] <= 0x04;
}

/* Whether the first bytes of a connection open an HTTP/1.x request or
 * response, or the HTTP/2 preface (`PRI *`): four letters are enough. */
static __always_inline bool looks_like_http(const __u8 *data, __u32 captured)
{
	if (captured < 4)
		return false;
	__u32 word = data[0] | data[1] << 8 | data[2] << 16 | (__u32)data[3] << 24;
#define WORD(a, b, c, d) ((a) | (b) << 8 | (c) << 16 | (__u32)(d) << 24)
	switch (word) {
	case WORD('G', 'E', 'T', ' '):
	case WORD('P', 'O', 'S', 'T'):
	case WORD('P', 'U', 'T', ' '):
	case WORD('P', 'A', 'T', 'C'):
	case WORD('D', 'E', 'L', 'E'):
	case WORD('H', 'E', 'A', 'D'):
	case WORD('O', 'P', 'T', 'I'):
	case WORD('H', 'T', 'T', 'P'):
	case WORD('P', 'R', 'I', ' '):
		return true;
	}
#undef WORD
	return false;
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

/* ---- socket syscalls ---------------------------------------------------- */

static __always_inline int enter_socket_call(__s32 fd, __u64 buf, __u32 iovcnt, __u8 kind, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	if (!is_watched(pid))
		return 0;

	struct socket_state fresh = {};
	__u64 key = socket_key(pid, fd);
	struct ssl_call *ssl = current_ssl_call(pid_tgid);
	if (ssl) {
		/* Inside an SSL call: if this is a TCP socket, it is the TLS
		 * library moving its ciphertext. Learn the SSL*'s fd, and keep
		 * the socket's own records quiet from now on. */
		struct socket_state *state = bpf_map_lookup_elem(&sockets, &key);
		if (state) {
			state->tls = 1;
		} else {
			struct sock *sk = tcp_sock_of_fd(fd);
			if (!sk)
				return 0;
			fresh.tls = 1;
			bpf_map_update_elem(&sockets, &key, &fresh, BPF_ANY);
			emit_conn_event(LLMTAP_EVENT_FOUND, 0, fd, sk, bpf_ktime_get_ns());
		}
		struct ssl_key skey = { .ssl = ssl->ssl, .pid = pid };
		bpf_map_update_elem(&ssl_fds, &skey, &fd, BPF_ANY);
		count(LLMTAP_COUNTER_TLS_CIPHERTEXT);
		return 0;
	}

	struct socket_state *state = bpf_map_lookup_elem(&sockets, &key);
	if (!state) {
		/* A socket opened before we watched, or not a TCP socket. */
		struct sock *sk = tcp_sock_of_fd(fd);
		if (!sk)
			return 0;
		bpf_map_update_elem(&sockets, &key, &fresh, BPF_ANY);
		emit_conn_event(LLMTAP_EVENT_FOUND, 0, fd, sk, bpf_ktime_get_ns());
	} else if (state->tls) {
		bpf_map_update_elem(&thread_tls_fd, &pid_tgid, &fd, BPF_ANY);
		count(LLMTAP_COUNTER_TLS_CIPHERTEXT);
		return 0;
	} else if (state->not_http) {
		return 0;
	}

	struct socket_call call = {
		.buf = buf,
		.start_ns = bpf_ktime_get_ns(),
		.fd = fd,
		.iovcnt = iovcnt,
		.kind = kind,
		.direction = direction,
	};
	bpf_map_update_elem(&active_socket_calls, &pid_tgid, &call, BPF_ANY);
	return 0;
}

static __always_inline int exit_socket_call(__s64 ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct socket_call *active = bpf_map_lookup_elem(&active_socket_calls, &pid_tgid);
	if (!active)
		return 0;
	struct socket_call call = *active;
	bpf_map_delete_elem(&active_socket_calls, &pid_tgid);
	if (ret <= 0)
		return 0;

	__u64 key = socket_key(pid_tgid >> 32, call.fd);
	struct socket_state *state = bpf_map_lookup_elem(&sockets, &key);
	if (!state || state->tls)
		return 0;

	struct data_scratch *s = scratch_slot();
	if (!s)
		return 0;
	fill_header(&s->hdr, LLMTAP_EVENT_DATA, pid_tgid, call.fd);
	s->hdr.direction = call.direction;
	s->hdr.source = LLMTAP_SOURCE_SOCKET;
	s->hdr.start_ns = call.start_ns;
	s->hdr.end_ns = bpf_ktime_get_ns();
	s->len = ret;

	__u32 limit = capture_limit(ret);
	__u32 captured = 0;
	if (call.kind == BUF_PLAIN) {
		if (!bpf_probe_read_user(s->data, limit & LENGTH_MASK, (void *)call.buf))
			captured = limit;
	} else {
		const struct iovec *iovs = (const struct iovec *)call.buf;
		__u32 iovcnt = call.iovcnt;
		if (call.kind == BUF_MSGHDR) {
			struct user_msghdr msg = {};
			if (bpf_probe_read_user(&msg, sizeof(msg), (void *)call.buf))
				return 0;
			iovs = msg.msg_iov;
			iovcnt = msg.msg_iovlen;
		}
		captured = copy_iovecs(s, iovs, iovcnt, ret, limit);
	}

	if (!state->seen_data) {
		state->seen_data = 1;
		if (looks_like_tls_record(s->data, captured)) {
			state->tls = 1;
			count(LLMTAP_COUNTER_TLS_CIPHERTEXT);
			return 0;
		}
		/* Host-wide, most sockets are not LLM traffic: stop at once
		 * rather than stream them to user space. */
		if (watch_all && !looks_like_http(s->data, captured)) {
			state->not_http = 1;
			count(LLMTAP_COUNTER_NOT_HTTP);
			return 0;
		}
	}
	submit_data(s, captured);
	return 0;
}

#define SOCKET_CALL(name, buf_kind, dir, iov_arg)                                                    \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                                  \
	int enter_##name(struct syscall_enter_ctx *ctx)                                              \
	{                                                                                            \
		return enter_socket_call(ctx->args[0], ctx->args[1], iov_arg, buf_kind, dir);         \
	}                                                                                            \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                                   \
	int exit_##name(struct syscall_exit_ctx *ctx)                                                \
	{                                                                                            \
		return exit_socket_call(ctx->ret);                                                   \
	}

SOCKET_CALL(write, BUF_PLAIN, LLMTAP_EGRESS, 0)
SOCKET_CALL(sendto, BUF_PLAIN, LLMTAP_EGRESS, 0)
SOCKET_CALL(writev, BUF_IOVEC, LLMTAP_EGRESS, ctx->args[2])
SOCKET_CALL(sendmsg, BUF_MSGHDR, LLMTAP_EGRESS, 0)
SOCKET_CALL(read, BUF_PLAIN, LLMTAP_INGRESS, 0)
SOCKET_CALL(recvfrom, BUF_PLAIN, LLMTAP_INGRESS, 0)
SOCKET_CALL(readv, BUF_IOVEC, LLMTAP_INGRESS, ctx->args[2])
SOCKET_CALL(recvmsg, BUF_MSGHDR, LLMTAP_INGRESS, 0)

/* ---- connection lifecycle ---------------------------------------------- */

static __always_inline int enter_connection_call(__s32 fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_watched(pid_tgid >> 32))
		return 0;
	bpf_map_update_elem(&active_connects, &pid_tgid, &fd, BPF_ANY);
	return 0;
}

/* A new TCP connection at `fd`: forget what an earlier socket with the same
 * fd taught us, and report its addresses. */
static __always_inline void connection_opened(__u8 kind, __s32 fd, __u8 side)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sock *sk = tcp_sock_of_fd(fd);
	if (!sk)
		return;
	struct socket_state fresh = { .side = side };
	__u64 key = socket_key(pid_tgid >> 32, fd);
	bpf_map_update_elem(&sockets, &key, &fresh, BPF_ANY);
	emit_conn_event(kind, 0, fd, sk, bpf_ktime_get_ns());
}

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect(struct syscall_enter_ctx *ctx)
{
	return enter_connection_call(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct syscall_exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__s32 *fd = bpf_map_lookup_elem(&active_connects, &pid_tgid);
	if (!fd)
		return 0;
	__s32 sock_fd = *fd;
	bpf_map_delete_elem(&active_connects, &pid_tgid);
	if (ctx->ret == 0 || ctx->ret == -EINPROGRESS)
		connection_opened(LLMTAP_EVENT_CONNECT, sock_fd, SOCKET_SIDE_CLIENT);
	return 0;
}

static __always_inline int exit_accept(__s64 ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ret < 0 || !is_watched(pid_tgid >> 32))
		return 0;
	connection_opened(LLMTAP_EVENT_ACCEPT, ret, SOCKET_SIDE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept_plain(struct syscall_exit_ctx *ctx)
{
	return exit_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct syscall_exit_ctx *ctx)
{
	return exit_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct syscall_enter_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	if (!is_watched(pid))
		return 0;
	__s32 fd = ctx->args[0];
	__u64 key = socket_key(pid, fd);
	if (!bpf_map_lookup_elem(&sockets, &key))
		return 0;
	bpf_map_delete_elem(&sockets, &key);
	emit_conn_event(LLMTAP_EVENT_CLOSE, 0, fd, NULL, bpf_ktime_get_ns());
	return 0;
}

/* ---- TLS libraries: OpenSSL-compatible, and GnuTLS's record calls, which
 * take (session, buffer, size) and return the byte count like SSL_read/
 * SSL_write, so they attach the same programs ---------------------------- */

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

/* Sends the plaintext a TLS call moved: `len` bytes at `call->buf`, on the
 * stream of its session. */
static __always_inline void emit_tls_data(struct ssl_call *call, __u64 len, __u64 pid_tgid)
{
	if (len == 0)
		return;
	struct data_scratch *s = scratch_slot();
	if (!s)
		return;
	struct ssl_key skey = { .ssl = call->ssl, .pid = pid_tgid >> 32 };
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

/* ---- Go crypto/tls ------------------------------------------------------
 * (*Conn).Write(b) and (*Conn).Read(b) under Go's register ABI: the
 * receiver in RAX, b's pointer and length in RBX and RCX; the byte count
 * returned in RAX. A goroutine may move between threads during a Read, so
 * reads are keyed by the goroutine (its g, always in R14), and their
 * return is caught by uprobes on the function's RET instructions: a
 * uretprobe rewrites the return address on a stack Go may move. */

struct go_key {
	__u64 g;
	__u32 pid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
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
	struct go_key key = { .g = ctx->r14, .pid = pid_tgid >> 32 };
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
	struct go_key key = { .g = ctx->r14, .pid = pid_tgid >> 32 };
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

/* ---- process lifecycle ------------------------------------------------- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	/* Under --all every process is watched already: no entry to add. */
	if (!follow_forks || watch_all)
		return 0;
	__u32 parent_pid = BPF_CORE_READ(parent, tgid);
	__u32 child_pid = BPF_CORE_READ(child, tgid);
	if (child_pid == parent_pid || !is_watched(parent_pid))
		return 0;
	__u8 yes = 1;
	bpf_map_update_elem(&watched_pids, &child_pid, &yes, BPF_ANY);
	return 0;
}

/* How deep a watched cgroup's descendants are looked for. */
#define MAX_CGROUP_DEPTH 16

static __always_inline bool in_watched_cgroup(void)
{
	for (int level = 0; level < MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (id == 0)
			break;
		if (bpf_map_lookup_elem(&watched_cgroups, &id))
			return true;
	}
	return false;
}

/* Runs in the process that exec'd, after its comm became the new
 * program's name: scopes are matched here so the new program is watched
 * from its first instruction, and user space is told so it can hook the
 * new executable's TLS functions. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	bool watched = is_watched(pid);
	if (!watched) {
		/* The comm is the name it was started by (python3), the file's
		 * own name may differ (python3.11, behind a symlink). */
		struct comm_key comm = {};
		bpf_get_current_comm(comm.comm, sizeof(comm.comm));
		struct comm_key file = {};
		const unsigned char *name = BPF_CORE_READ(bprm, file, f_path.dentry, d_name.name);
		bpf_probe_read_kernel_str(file.comm, sizeof(file.comm), name);
		watched = bpf_map_lookup_elem(&watched_comms, &comm) ||
			  bpf_map_lookup_elem(&watched_comms, &file) || in_watched_cgroup();
		if (watched) {
			__u8 yes = 1;
			bpf_map_update_elem(&watched_pids, &pid, &yes, BPF_ANY);
		}
	}
	if (watched || report_all_execs)
		emit_conn_event(LLMTAP_EVENT_EXEC, watched ? LLMTAP_FLAG_WATCHED : 0, -1, NULL,
				bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	/* Every exiting thread drops its per-thread state, wherever its call
	 * was cut short. */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&active_ssl_calls, &pid_tgid);
	bpf_map_delete_elem(&active_socket_calls, &pid_tgid);
	bpf_map_delete_elem(&active_connects, &pid_tgid);
	bpf_map_delete_elem(&thread_tls_fd, &pid_tgid);
	__u32 pid = BPF_CORE_READ(task, tgid);
	if (BPF_CORE_READ(task, pid) != pid || !is_watched(pid))
		return 0;
	bpf_map_delete_elem(&watched_pids, &pid);
	emit_conn_event(LLMTAP_EVENT_EXIT, 0, -1, NULL, bpf_ktime_get_ns());
	return 0;
}
