// SPDX-License-Identifier: GPL-2.0-only
/*
 * Sockets: the plaintext a watched process writes to and reads from its TCP
 * sockets, and the connections it opens and closes.
 *
 * The hooks are the socket layer's own tracepoints, not the syscalls':
 * `sock_send_length` and `sock_recv_length` fire once per send or receive
 * on a socket (write/read, send*, recv*, their vector and msghdr forms), in
 * the calling task, after the bytes moved; `inet_sock_set_state` fires on a
 * TCP state change. Every other syscall of every task on the host runs no
 * code of ours (syscall tracepoints put every syscall of every task on the
 * traced path). The call's fd and buffer are its syscall's arguments, read
 * from the task's saved user registers.
 *
 * The data tracepoints are attached only while some watched process uses
 * TCP: a process that connects or listens while they are not is held at
 * that moment until user space has attached them (see tcp_starting), so
 * that with no watched process on the network nothing else pays for them.
 *
 * What is known of a socket lives in its socket storage, freed with it.
 */
#include "llmtap.h"

/* x86-64 syscall numbers of the calls that move socket data. */
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_readv 19
#define NR_writev 20
#define NR_connect 42
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47

#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define MSG_PEEK 2
#define PF_KTHREAD 0x00200000

#define SOCKET_SIDE_UNKNOWN 0
#define SOCKET_SIDE_CLIENT 1
#define SOCKET_SIDE_SERVER 2

/* What is known of a TCP socket. */
struct socket_state {
	__u32 pid;      /* the process it was last reported for */
	__s32 fd;       /* its fd there */
	__u8 side;      /* seen opening: connected (client) or accepted (server) */
	__u8 reported;  /* its open event was sent for `pid` */
	__u8 tls;       /* carries TLS: its socket records are ciphertext */
	__u8 seen_data; /* the first bytes were checked for a TLS record */
	__u8 not_http;  /* --all: its first bytes are not HTTP; ignored */
	/* --all, HTTP/1: the direction its requests travel in, and the last
	 * data's (each as LLMTAP_EGRESS/INGRESS + 1, 0 for none), and whether
	 * the exchange under way is skipped, request and response. */
	__u8 request_dir;
	__u8 last_dir;
	__u8 skipping;
	/* --all, HTTP/1: bytes copied of the exchange under way (up to its
	 * share, EXCHANGE_SHARE). */
	__u32 exchange_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct socket_state);
} socket_states SEC(".maps");

/* The server names --all hooks a process's TLS for when it starts a
 * handshake with one: the LLM API hosts, filled in by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct llmtap_host_key);
	__type(value, __u8);
} llm_hosts SEC(".maps");

/* Whether socket_sent and socket_received are attached (key 0, set by
 * user space when it attaches them and cleared before it detaches them). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8);
} socket_capture SEC(".maps");

/* Bytes of a ClientHello sent to user space: its server name is there. */
#define HELLO_BYTES 512

/* A `struct llmtap_data_event` of a fixed size, to be reserved. */
struct hello_event {
	struct llmtap_header hdr;
	__u32 len;
	__u32 captured;
	__u8 data[HELLO_BYTES];
};

/* The syscall a task is in: its number and first two arguments, as its
 * user registers were saved at entry. */
struct syscall_args {
	long nr;
	__s32 fd;
	__u64 buf;
	__u64 count; /* iovec count of readv/writev */
};

static __always_inline bool current_syscall(struct syscall_args *call)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return false;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct pt_regs saved;
	if (bpf_probe_read_kernel(&saved, sizeof(saved), regs))
		return false;
	call->nr = saved.orig_rax;
	call->fd = saved.rdi;
	call->buf = saved.rsi;
	call->count = saved.rdx;
	return true;
}

static __always_inline bool is_tcp(struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	return (family == AF_INET || family == AF_INET6) && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP;
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

/* Copies up to `limit` of the `len` bytes the syscall `call` moved. */
static __always_inline __u32 copy_payload(struct data_scratch *s, const struct syscall_args *call, __u64 len,
					  __u32 limit)
{
	switch (call->nr) {
	case NR_write:
	case NR_read:
	case NR_sendto:
	case NR_recvfrom:
		return bpf_probe_read_user(s->data, limit & LENGTH_MASK, (void *)call->buf) ? 0 : limit;
	case NR_writev:
	case NR_readv:
		return copy_iovecs(s, (const struct iovec *)call->buf, call->count, len, limit);
	default: {
		struct user_msghdr msg = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)call->buf))
			return 0;
		return copy_iovecs(s, msg.msg_iov, msg.msg_iovlen, len, limit);
	}
	}
}

static __always_inline bool moves_data(long nr)
{
	switch (nr) {
	case NR_write:
	case NR_read:
	case NR_sendto:
	case NR_recvfrom:
	case NR_writev:
	case NR_readv:
	case NR_sendmsg:
	case NR_recvmsg:
		return true;
	}
	return false;
}

static __always_inline bool is_client_hello(const __u8 *data, __u32 captured)
{
	/* A handshake record (22) whose first message is a ClientHello (1). */
	return captured >= 6 && data[0] == 0x16 && data[5] == 0x01;
}

/* A process started a TLS handshake outside any hooked TLS call, and its
 * TLS libraries were not looked at since its exec: the library (a libssl
 * loaded by dlopen, say) is not hooked in it yet, and a uprobe given a pid
 * is placed by user space. The process is held here, stopped before its
 * handshake goes on and its first request goes out, and the ClientHello
 * goes to user space, which hooks the process and continues it. */
/* Whether stopping the current process goes unseen by anyone but llmtap.
 * A job-control shell sees its job stop and takes the terminal back, so a
 * process in a terminal is held only when its parent is llmtap (`-- CMD`)
 * or watched itself (that command's children): the job the shell waits on
 * is then llmtap. Elsewhere the ClientHello only informs. */
static __always_inline bool may_hold(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (!BPF_CORE_READ(task, signal, tty))
		return true;
	__u32 parent = BPF_CORE_READ(task, real_parent, tgid);
	return parent == agent_pid || bpf_map_lookup_elem(&watched_pids, &parent);
}

/* Holds the current process (SIGSTOP) if it may be, marking the record
 * `hdr` heads: sent after the stop, its continue cannot come first. */
static __always_inline void hold_current(struct llmtap_header *hdr)
{
	if (may_hold() && !bpf_send_signal(SIGSTOP))
		hdr->flags |= LLMTAP_FLAG_HELD;
}

static __always_inline __u32 be16_at(const __u8 *data, __u32 off)
{
	return (__u32)data[off & OFFSET_MASK] << 8 | data[(off + 1) & OFFSET_MASK];
}

/* Copies the server name (SNI) a ClientHello asks for into `name`, in
 * lowercase; returns its length, 0 when the first `captured` bytes hold
 * none or it does not fit. */
static __always_inline __u32 hello_server_name(const __u8 *data, __u32 captured, char *name)
{
	if (captured > LLMTAP_MAX_DATA)
		captured = LLMTAP_MAX_DATA;
	/* Record header (5), handshake header (4), version (2), random (32). */
	__u32 off = 43;
	if (off + 1 > captured)
		return 0;
	off += 1 + data[off & OFFSET_MASK]; /* session id */
	if (off + 2 > captured)
		return 0;
	off += 2 + be16_at(data, off); /* cipher suites */
	if (off + 1 > captured)
		return 0;
	off += 1 + data[off & OFFSET_MASK]; /* compression methods */
	off += 2;                           /* the extensions' length */
	for (int i = 0; i < 32; i++) {
		if (off + 4 > captured)
			return 0;
		if (be16_at(data, off) != 0 /* server_name */) {
			off += 4 + be16_at(data, off + 2);
			continue;
		}
		/* List length (2), name type (1), name length (2), name. */
		__u32 len = be16_at(data, off + 7);
		if (len == 0 || len >= LLMTAP_HOST_LEN || off + 9 + len > captured)
			return 0;
		if (bpf_probe_read_kernel(name, len & (LLMTAP_HOST_LEN - 1), &data[(off + 9) & OFFSET_MASK]))
			return 0;
		for (int c = 0; c < LLMTAP_HOST_LEN; c++)
			if (name[c] >= 'A' && name[c] <= 'Z')
				name[c] += 'a' - 'A';
		return len;
	}
	return 0;
}

/* Whether a ClientHello names an LLM API host: one of `llm_hosts`, or a
 * name one label below one kept with its subdomains. */
static __always_inline bool hello_names_llm_host(const __u8 *hello, __u32 captured)
{
	struct llmtap_host_key host = {};
	__u32 len = hello_server_name(hello, captured, host.name);
	if (!len)
		return false;
	__u8 *kind = bpf_map_lookup_elem(&llm_hosts, &host);
	if (kind && (*kind & LLMTAP_HOST_EXACT))
		return true;
	struct llmtap_host_key parent = {};
	for (__u32 dot = 0; dot < LLMTAP_HOST_LEN - 1; dot++) {
		if (host.name[dot] != '.')
			continue;
		if (bpf_probe_read_kernel(parent.name, (len - dot - 1) & (LLMTAP_HOST_LEN - 1),
					  &host.name[dot + 1]))
			return false;
		kind = bpf_map_lookup_elem(&llm_hosts, &parent);
		return kind && (*kind & LLMTAP_HOST_SUBDOMAINS);
	}
	return false;
}

static __always_inline void tls_handshake(const __u8 *hello, __u32 captured, __u64 pid_tgid)
{
	__u32 pid = pid_tgid >> 32;
	if (bpf_map_lookup_elem(&tls_looked_at, &pid))
		return;
	/* Host-wide, only a handshake with an LLM API host is evidence enough
	 * to hook a process: hooks cost every TLS call of the process. */
	if (watch_all && !hello_names_llm_host(hello, captured)) {
		count(LLMTAP_COUNTER_TLS_NOT_LLM);
		return;
	}
	struct hello_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(LLMTAP_COUNTER_RINGBUF_FULL);
		return;
	}
	fill_header(&ev->hdr, LLMTAP_EVENT_TLS_HELLO, pid_tgid, -1);
	ev->hdr.end_ns = ev->hdr.start_ns = bpf_ktime_get_ns();
	__u32 n = captured < HELLO_BYTES ? captured : HELLO_BYTES;
	ev->len = captured;
	ev->captured = n;
	__builtin_memcpy(ev->data, hello, HELLO_BYTES);
	hold_current(&ev->hdr);
	/* Held or not, the process's first call races the hooking: no batching. */
	bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
}

static __always_inline bool looks_like_tls_record(const __u8 *data, __u32 captured)
{
	/* ContentType change_cipher_spec..application_data, version 3.x. */
	return captured >= 3 && data[0] >= 0x14 && data[0] <= 0x17 && data[1] == 0x03 && data[2] <= 0x04;
}

enum http_start {
	HTTP_NONE,     /* not HTTP */
	HTTP_REQUEST,  /* an HTTP/1.x request of another method than POST */
	HTTP_POST,     /* an HTTP/1.x POST: every LLM API call is one */
	HTTP_RESPONSE, /* an HTTP/1.x status line */
	HTTP2_PREFACE, /* `PRI *`, HTTP/2 without TLS */
};

/* What bytes that start a message open: four letters are enough. */
static __always_inline enum http_start http_start_of(const __u8 *data, __u32 captured)
{
	if (captured < 4)
		return HTTP_NONE;
	__u32 word = data[0] | data[1] << 8 | data[2] << 16 | (__u32)data[3] << 24;
#define WORD(a, b, c, d) ((a) | (b) << 8 | (c) << 16 | (__u32)(d) << 24)
	switch (word) {
	case WORD('P', 'O', 'S', 'T'):
		return HTTP_POST;
	case WORD('G', 'E', 'T', ' '):
	case WORD('P', 'U', 'T', ' '):
	case WORD('P', 'A', 'T', 'C'):
	case WORD('D', 'E', 'L', 'E'):
	case WORD('H', 'E', 'A', 'D'):
	case WORD('O', 'P', 'T', 'I'):
		return HTTP_REQUEST;
	case WORD('H', 'T', 'T', 'P'):
		return HTTP_RESPONSE;
	case WORD('P', 'R', 'I', ' '):
		return HTTP2_PREFACE;
	}
#undef WORD
	return HTTP_NONE;
}

/* The open event of a socket seen for the first time in this process: how
 * it was opened if that was seen, else found open. */
static __always_inline void report_open(struct sock *sk, struct socket_state *state, __u32 pid, __s32 fd)
{
	__u8 kind = LLMTAP_EVENT_FOUND;
	/* A socket handed to another process (a fork's child) is found there. */
	if (state->pid == pid || state->pid == 0) {
		if (state->side == SOCKET_SIDE_CLIENT)
			kind = LLMTAP_EVENT_CONNECT;
		else if (state->side == SOCKET_SIDE_SERVER)
			kind = LLMTAP_EVENT_ACCEPT;
	}
	state->pid = pid;
	state->fd = fd;
	state->reported = 1;
	emit_conn_event(kind, 0, fd, sk, bpf_ktime_get_ns());
}

/* What one HTTP/1 exchange may copy before it yields to the others when
 * the ring buffer fills up: more than a long prompt or a long stream. */
#define EXCHANGE_SHARE (1 << 20)

/* Whether this exchange, having copied `captured` bytes more, has had its
 * share while the ring buffer is more than half full: an upload or a flood
 * of HTTP-looking bytes that would otherwise crowd the other connections'
 * records (LLM calls among them) out of it. */
static __always_inline bool crowds_others(struct socket_state *state, __u32 captured)
{
	if (state->exchange_bytes < EXCHANGE_SHARE) {
		state->exchange_bytes += captured;
		return false;
	}
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 2;
}

static __always_inline void on_socket_data(struct sock *sk, int ret, int flags, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	if (ret <= 0 || !is_watched(pid) || !is_tcp(sk))
		return;
	/* Peeked bytes are read again by the next receive. */
	if (direction == LLMTAP_INGRESS && (flags & MSG_PEEK))
		return;
	struct syscall_args call;
	if (!current_syscall(&call) || !moves_data(call.nr))
		return;
	struct socket_state *state = bpf_sk_storage_get(&socket_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state)
		return;
	if (!state->reported || state->pid != pid)
		report_open(sk, state, pid, call.fd);

	struct ssl_call *ssl = current_ssl_call(pid_tgid);
	if (ssl) {
		/* Inside an SSL call: the TLS library moving its ciphertext.
		 * Learn the SSL*'s fd, and keep the socket quiet from now on. */
		state->tls = 1;
		struct llmtap_ssl_key skey = { .ssl = ssl->ssl, .pid = pid };
		bpf_map_update_elem(&ssl_fds, &skey, &call.fd, BPF_ANY);
		count(LLMTAP_COUNTER_TLS_CIPHERTEXT);
		return;
	}
	if (state->tls) {
		/* Host-wide, most TLS is in processes not hooked: nothing reads it. */
		if (!watch_all || bpf_map_lookup_elem(&tls_looked_at, &pid))
			bpf_map_update_elem(&thread_tls_fd, &pid_tgid, &call.fd, BPF_ANY);
		count(LLMTAP_COUNTER_TLS_CIPHERTEXT);
		return;
	}
	if (state->not_http)
		return;
	/* --all: an HTTP/1 request starts where data turns to the requests'
	 * direction; until then a skipped exchange stays skipped. */
	__u8 dir = direction + 1;
	bool request_start = dir == state->request_dir && state->last_dir != dir;
	state->last_dir = dir;
	if (state->skipping && !request_start)
		return;

	struct data_scratch *s = scratch_slot();
	if (!s)
		return;
	fill_header(&s->hdr, LLMTAP_EVENT_DATA, pid_tgid, call.fd);
	s->hdr.direction = direction;
	s->hdr.source = LLMTAP_SOURCE_SOCKET;
	/* The bytes have moved: the call's entry is not seen, only now. */
	s->hdr.end_ns = bpf_ktime_get_ns();
	s->hdr.start_ns = s->hdr.end_ns;
	s->len = ret;
	__u32 captured = copy_payload(s, &call, ret, capture_limit(ret));

	if (!state->seen_data) {
		state->seen_data = 1;
		if (looks_like_tls_record(s->data, captured)) {
			state->tls = 1;
			count(LLMTAP_COUNTER_TLS_CIPHERTEXT);
			if (direction == LLMTAP_EGRESS && is_client_hello(s->data, captured))
				tls_handshake(s->data, captured, pid_tgid);
			return;
		}
		/* Host-wide, most sockets are not LLM traffic: stop at once
		 * rather than stream them to user space. */
		if (watch_all) {
			enum http_start start = http_start_of(s->data, captured);
			if (start == HTTP_NONE) {
				state->not_http = 1;
				count(LLMTAP_COUNTER_NOT_HTTP);
				return;
			}
			if (start == HTTP_REQUEST || start == HTTP_POST)
				state->request_dir = dir;
			else if (start == HTTP_RESPONSE)
				state->request_dir = 3 - dir;
			request_start = dir == state->request_dir;
		}
	}
	/* Host-wide, an HTTP/1 exchange whose request is not a POST is no LLM
	 * call (every LLM API is called by POST): neither it nor its response
	 * is sent to user space. Bytes that open no request at a request's
	 * start (a body sent after `100 Continue`) leave the state as it is. */
	if (watch_all && request_start) {
		enum http_start start = http_start_of(s->data, captured);
		if (start == HTTP_REQUEST) {
			state->skipping = 1;
			count(LLMTAP_COUNTER_NOT_POST);
		} else if (start == HTTP_POST) {
			state->skipping = 0;
			state->exchange_bytes = 0;
		}
	}
	if (state->skipping)
		return;
	if (state->request_dir && crowds_others(state, captured)) {
		state->skipping = 1;
		count(LLMTAP_COUNTER_CROWDING);
		return;
	}
	submit_data(s, captured);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(socket_sent, struct sock *sk, int ret, int flags)
{
	on_socket_data(sk, ret, flags, LLMTAP_EGRESS);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(socket_received, struct sock *sk, int ret, int flags)
{
	on_socket_data(sk, ret, flags, LLMTAP_INGRESS);
	return 0;
}

/* A watched process is connecting or listening, in connect(2) or
 * listen(2): user space is told, as it keeps the data programs attached
 * while a watched process uses TCP. If they are not attached, the process
 * is also held (stopped before its first byte can move) until user space
 * has attached them and continues it. One that cannot be held may have its
 * first bytes go by before the programs are in place. Under --all the
 * programs are always attached. */
static __always_inline void tcp_starting(void)
{
	if (watch_all)
		return;
	__u32 zero = 0;
	__u8 *attached = bpf_map_lookup_elem(&socket_capture, &zero);
	struct llmtap_conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(LLMTAP_COUNTER_RINGBUF_FULL);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	fill_header(&ev->hdr, LLMTAP_EVENT_TCP_START, bpf_get_current_pid_tgid(), -1);
	ev->hdr.end_ns = ev->hdr.start_ns = bpf_ktime_get_ns();
	if (attached && !*attached)
		hold_current(&ev->hdr);
	bpf_ringbuf_submit(ev, ev->hdr.flags & LLMTAP_FLAG_HELD ? BPF_RB_FORCE_WAKEUP : wakeup_flag());
}

/* Opening and closing. A watched process's connect() moves its socket to
 * SYN_SENT in the process itself; an accepted socket is born in SYN_RECV
 * while its listener's owner is not known yet, so every one is marked, and
 * told apart from a socket opened before llmtap watched at its first data.
 * A close(2) of the last fd of an established socket changes its state in
 * the closing process; a reset or abort ends it in TCP_CLOSE. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(socket_state_changed, struct sock *sk, int old_state, int new_state)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (new_state == TCP_SYN_RECV) {
		struct socket_state *state = bpf_sk_storage_get(&socket_states, sk, 0,
								BPF_SK_STORAGE_GET_F_CREATE);
		if (state)
			state->side = SOCKET_SIDE_SERVER;
		return 0;
	}
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (new_state == TCP_SYN_SENT || new_state == TCP_LISTEN) {
		if (!is_watched(pid))
			return 0;
		tcp_starting();
		if (new_state == TCP_LISTEN)
			return 0;
		struct socket_state *state = bpf_sk_storage_get(&socket_states, sk, 0,
								BPF_SK_STORAGE_GET_F_CREATE);
		struct syscall_args call;
		if (state && current_syscall(&call) && call.nr == NR_connect) {
			state->side = SOCKET_SIDE_CLIENT;
			state->pid = pid;
			state->fd = call.fd;
		}
		return 0;
	}
	struct socket_state *state = bpf_sk_storage_get(&socket_states, sk, 0, 0);
	if (!state || !state->reported)
		return 0;
	struct syscall_args call;
	bool closed_here = state->pid == pid && current_syscall(&call) && call.nr == NR_close;
	if (closed_here || new_state == TCP_CLOSE) {
		state->reported = 0;
		emit_event_for(LLMTAP_EVENT_CLOSE, state->pid, state->fd);
	}
	return 0;
}
