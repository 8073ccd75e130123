// SPDX-License-Identifier: GPL-2.0-only
/*
 * events.h as compiled, read back by the ABI test in
 * agent/src/capture/ebpf/abi.rs: llmtap_abi_<struct>__<field> is the field's
 * offset, llmtap_abi_<struct>__size the struct's size, and llmtap_abi_<NAME>
 * the value of LLMTAP_<NAME>. No program reads these; they sit in .rodata
 * for the test alone.
 */
#include "llmtap.h"

#define ABI_SIZE(type) const volatile __u32 llmtap_abi_##type##__size = sizeof(struct type);
#define ABI_OFFSET(type, field) \
	const volatile __u32 llmtap_abi_##type##__##field = __builtin_offsetof(struct type, field);
#define ABI_VALUE(name) const volatile __u32 llmtap_abi_##name = LLMTAP_##name;

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
ABI_SIZE(llmtap_ssl_key)
ABI_OFFSET(llmtap_ssl_key, pid)
ABI_SIZE(llmtap_go_key)
ABI_OFFSET(llmtap_go_key, pid)
ABI_SIZE(llmtap_comm_key)
ABI_SIZE(llmtap_host_key)

ABI_VALUE(MAX_DATA)
ABI_VALUE(EVENT_DATA)
ABI_VALUE(EVENT_CONNECT)
ABI_VALUE(EVENT_ACCEPT)
ABI_VALUE(EVENT_CLOSE)
ABI_VALUE(EVENT_EXIT)
ABI_VALUE(EVENT_EXEC)
ABI_VALUE(EVENT_FOUND)
ABI_VALUE(EVENT_FORK)
ABI_VALUE(EVENT_TLS_HELLO)
ABI_VALUE(EVENT_TCP_START)
ABI_VALUE(EGRESS)
ABI_VALUE(INGRESS)
ABI_VALUE(SOURCE_SOCKET)
ABI_VALUE(SOURCE_OPENSSL)
ABI_VALUE(FLAG_TRUNCATED)
ABI_VALUE(FLAG_WATCHED)
ABI_VALUE(FLAG_HELD)
ABI_VALUE(HOST_EXACT)
ABI_VALUE(HOST_SUBDOMAINS)
ABI_VALUE(COUNTER_RINGBUF_FULL)
ABI_VALUE(COUNTER_TRUNCATED)
ABI_VALUE(COUNTER_TLS_CIPHERTEXT)
ABI_VALUE(COUNTER_NOT_HTTP)
ABI_VALUE(COUNTER_TLS_NOT_LLM)
ABI_VALUE(COUNTER_NOT_POST)
ABI_VALUE(COUNTER_CROWDING)
ABI_VALUE(COUNTER_MAX)
