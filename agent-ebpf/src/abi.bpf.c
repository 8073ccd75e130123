// SPDX-License-Identifier: GPL-2.0-only
/*
 * The record layout as compiled, read back by the ABI test in
 * agent/src/capture/ebpf/abi.rs: llmtap_abi_<struct>__<field> is the field's
 * offset, llmtap_abi_<struct>__size the struct's size. No program reads
 * these; they sit in .rodata for the test alone.
 */
#include "llmtap.h"

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
