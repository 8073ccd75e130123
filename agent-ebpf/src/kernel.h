/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The few kernel types the programs read, declared with
 * preserve_access_index so every field access is a CO-RE relocation that the
 * loader fixes up against the running kernel's BTF. Only the fields used are
 * declared; their order and neighbours do not matter.
 */
#ifndef LLMTAP_KERNEL_H
#define LLMTAP_KERNEL_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SIGSTOP 19

#define CORE __attribute__((preserve_access_index))

struct qstr {
	const unsigned char *name;
} CORE;

struct dentry {
	struct qstr d_name;
} CORE;

struct path {
	struct dentry *dentry;
} CORE;

struct file {
	struct path f_path;
} CORE;

struct linux_binprm {
	struct file *file;
} CORE;

struct tty_struct {
	int index;
} CORE;

struct signal_struct {
	struct tty_struct *tty;
} CORE;

struct task_struct {
	unsigned int flags;
	struct signal_struct *signal;
	int pid;
	int tgid;
	struct task_struct *group_leader;
	struct task_struct *real_parent;
	char comm[16];
} CORE;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
} CORE;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} CORE;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
} CORE;

struct iovec {
	void *iov_base;
	__u64 iov_len;
};

/* struct user_msghdr: the layout of the syscall ABI, not a kernel internal. */
struct user_msghdr {
	void *msg_name;
	int msg_namelen;
	struct iovec *msg_iov;
	__u64 msg_iovlen;
	void *msg_control;
	__u64 msg_controllen;
	unsigned int msg_flags;
};

#endif
