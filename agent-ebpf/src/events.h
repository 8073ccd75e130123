/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The one ABI between llmtap's kernel programs and its user space: the
 * records of the ring buffer, the values user space reads in them and in
 * the `counters` map, and the keys of the maps it writes or cleans.
 *
 * Every record in the ring buffer starts with `struct llmtap_header`; `kind`
 * says which body follows. The Rust mirror lives in
 * agent/src/capture/ebpf/abi.rs and a test checks every value, size and
 * offset against the `llmtap_abi_*` constants in the compiled object
 * (abi.bpf.c).
 *
 * Only fixed-width types, explicit padding, no bitfields: the layout must be
 * the same for clang -target bpf and for rustc.
 */
#ifndef LLMTAP_EVENTS_H
#define LLMTAP_EVENTS_H

/* Largest payload one record carries. A power of two so the verifier can
 * bound offsets with a mask. Larger calls are truncated and marked. */
#define LLMTAP_MAX_DATA 16384
/* How many iovec entries writev/readv/sendmsg/recvmsg capture walks. */
#define LLMTAP_MAX_IOV 8

enum llmtap_event_kind {
	LLMTAP_EVENT_DATA = 1,
	/* The watched process connected a TCP socket: it is the client. */
	LLMTAP_EVENT_CONNECT = 2,
	/* The watched process accepted a TCP socket: it is the server. */
	LLMTAP_EVENT_ACCEPT = 3,
	LLMTAP_EVENT_CLOSE = 4,
	/* A watched process exited: its connections ended without close(). */
	LLMTAP_EVENT_EXIT = 5,
	/* A watched process, or one that just entered a watched scope by
	 * exec, ran a new program (a conn_event with fd -1 and its comm). With
	 * `report_all_execs`, every exec on the host, for user-space matching. */
	LLMTAP_EVENT_EXEC = 6,
	/* A TCP socket the watched process had before it was watched (or
	 * before llmtap started), seen at its first read or write since:
	 * its addresses, side unknown. */
	LLMTAP_EVENT_FOUND = 7,
	/* A watched process forked: the child (`pid`) is watched too. */
	LLMTAP_EVENT_FORK = 8,
	/* A watched process whose TLS libraries were not looked at since its
	 * exec sent a TLS ClientHello: a data record (fd -1) carrying its
	 * first bytes, LLMTAP_FLAG_HELD when the process waits. */
	LLMTAP_EVENT_TLS_HELLO = 9,
	/* A watched process connected or listened on a TCP socket (not
	 * reported under --all): a conn_event with its pid only, and
	 * LLMTAP_FLAG_HELD when the socket data programs were not attached
	 * (`socket_capture` 0) and the process waits for them. */
	LLMTAP_EVENT_TCP_START = 10,
};

enum llmtap_direction {
	LLMTAP_EGRESS = 0,
	LLMTAP_INGRESS = 1,
};

enum llmtap_source {
	/* Plaintext bytes from a socket syscall. */
	LLMTAP_SOURCE_SOCKET = 0,
	/* Plaintext bytes from a TLS library: OpenSSL-compatible
	 * SSL_read/SSL_write(_ex), or GnuTLS gnutls_record_recv/send. */
	LLMTAP_SOURCE_OPENSSL = 1,
};

/* `flags` bit of a data record: the payload was cut at the capture size. */
#define LLMTAP_FLAG_TRUNCATED 1
/* `flags` bit of an exec record: the process is watched (it was, or it
 * entered a watched scope). */
#define LLMTAP_FLAG_WATCHED 2
/* `flags` bit of a TLS hello or TCP start record: the process is stopped
 * (SIGSTOP) until user space has hooked it and continues it (SIGCONT). */
#define LLMTAP_FLAG_HELD 4

struct llmtap_header {
	__u8 kind;      /* enum llmtap_event_kind */
	__u8 direction; /* enum llmtap_direction (data records) */
	__u8 source;    /* enum llmtap_source (data records) */
	__u8 flags;     /* LLMTAP_FLAG_* */
	__u32 pid;      /* thread group id, what user space calls the pid */
	__u32 tid;
	__s32 fd;       /* socket fd, -1 when not known (TLS over memory BIOs) */
	__u64 ssl;      /* SSL* of a TLS stream, 0 for socket records */
	__u64 start_ns; /* CLOCK_MONOTONIC at the call's entry */
	__u64 end_ns;   /* CLOCK_MONOTONIC at the call's return */
};

struct llmtap_data_event {
	struct llmtap_header hdr;
	__u32 len;      /* bytes the call moved */
	__u32 captured; /* bytes of `data` that follow (<= len) */
	__u8 data[];
};

struct llmtap_conn_event {
	struct llmtap_header hdr;
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 local_port;
	__u16 peer_port;
	__u16 _pad;
	__u8 local_addr[16]; /* IPv4 in the first 4 bytes, network order */
	__u8 peer_addr[16];
	char comm[16];
};

/* Indexes of the per-CPU `counters` array, read by user space. */
enum llmtap_counter {
	/* Records dropped because the ring buffer was full. */
	LLMTAP_COUNTER_RINGBUF_FULL = 0,
	/* Data records whose payload was cut at the capture size. */
	LLMTAP_COUNTER_TRUNCATED = 1,
	/* Socket records dropped because the connection carries TLS. */
	LLMTAP_COUNTER_TLS_CIPHERTEXT = 2,
	/* Plaintext connections --all stopped capturing: their first bytes
	 * are not HTTP, so they cannot carry an LLM call. */
	LLMTAP_COUNTER_NOT_HTTP = 3,
	/* TLS connections --all left unhooked: their ClientHello names no
	 * LLM API host. */
	LLMTAP_COUNTER_TLS_NOT_LLM = 4,
	/* HTTP/1 requests --all did not copy, nor their responses: not POST,
	 * so not an LLM call. */
	LLMTAP_COUNTER_NOT_POST = 5,
	/* HTTP/1 exchanges --all stopped copying: past their share (1 MiB)
	 * while the ring buffer was more than half full. */
	LLMTAP_COUNTER_CROWDING = 6,
	LLMTAP_COUNTER_MAX = 7,
};

/* Keys of the maps that hold state of a process: user space finds the
 * process by the pid in each key to drop what an exited one left. */

/* `ssl_fds`: a TLS session (an SSL*, or a GnuTLS or Go connection). */
struct llmtap_ssl_key {
	__u64 ssl;
	__u32 pid;
	__u32 _pad;
};

/* `active_go_calls`: a goroutine (its g) inside crypto/tls Read. */
struct llmtap_go_key {
	__u64 g;
	__u32 pid;
	__u32 _pad;
};

/* `watched_comms`: a program name as an exec sets the comm (the file's
 * basename, cut to 15 bytes, zero-padded). */
struct llmtap_comm_key {
	char comm[16];
};

/* `llm_hosts`: a server name, lowercase, zero-padded; names this long or
 * longer are not kept. */
#define LLMTAP_HOST_LEN 64
struct llmtap_host_key {
	char name[LLMTAP_HOST_LEN];
};

/* `llm_hosts` values, bits: the name itself is an LLM API host, and so is
 * each name one label below it (`*.openai.azure.com`). */
#define LLMTAP_HOST_EXACT 1
#define LLMTAP_HOST_SUBDOMAINS 2

#endif
