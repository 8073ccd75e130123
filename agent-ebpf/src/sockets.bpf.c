// SPDX-License-Identifier: GPL-2.0-only
/*
 * Socket syscalls: the plaintext a watched process writes to and reads from
 * its TCP sockets (write/read, sendto/recvfrom, their vector and msghdr
 * forms), and the connections it opens (connect, accept) and closes.
 */
#include "llmtap.h"

#define SOCKET_SIDE_UNKNOWN 0
#define SOCKET_SIDE_CLIENT 1
#define SOCKET_SIDE_SERVER 2

/* What is known of a watched process's TCP socket. */
struct socket_state {
	__u8 tls;       /* carries TLS: its socket records are ciphertext */
	__u8 seen_data; /* the first bytes were checked for a TLS record */
	__u8 side;
	__u8 not_http;  /* --all: its first bytes are not HTTP; ignored */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct llmtap_socket_key);
	__type(value, struct socket_state);
} sockets SEC(".maps");

static __always_inline struct llmtap_socket_key socket_key(__u32 pid, __s32 fd)
{
	return (struct llmtap_socket_key){ .fd = fd, .pid = pid };
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

/* ---- socket syscalls ---------------------------------------------------- */

static __always_inline int enter_socket_call(__s32 fd, __u64 buf, __u32 iovcnt, __u8 kind, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	if (!is_watched(pid))
		return 0;

	struct socket_state fresh = {};
	struct llmtap_socket_key key = socket_key(pid, fd);
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
		struct llmtap_ssl_key skey = { .ssl = ssl->ssl, .pid = pid };
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

	struct llmtap_socket_key key = socket_key(pid_tgid >> 32, call.fd);
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
	struct llmtap_socket_key key = socket_key(pid_tgid >> 32, fd);
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
	struct llmtap_socket_key key = socket_key(pid, fd);
	if (!bpf_map_lookup_elem(&sockets, &key))
		return 0;
	bpf_map_delete_elem(&sockets, &key);
	emit_conn_event(LLMTAP_EVENT_CLOSE, 0, fd, NULL, bpf_ktime_get_ns());
	return 0;
}
