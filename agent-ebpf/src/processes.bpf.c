// SPDX-License-Identifier: GPL-2.0-only
/*
 * Processes: children of watched processes are watched from their fork,
 * processes entering a watched scope from their exec, and a watched
 * process's exit ends its connections and drops its per-thread state.
 */
#include "llmtap.h"

/* Scopes decided here at exec, so a process is watched before its first
 * instruction: cgroup v2 ids (the cgroup directory's inode) whose processes
 * and descendant cgroups' processes are watched ... */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} watched_cgroups SEC(".maps");

/* ... and program names. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct llmtap_comm_key);
	__type(value, __u8);
} watched_comms SEC(".maps");

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
	/* For user space to hook the child's TLS libraries: a uprobe given a
	 * pid does not follow it into a forked child. */
	emit_event_for(LLMTAP_EVENT_FORK, child_pid, -1);
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
		struct llmtap_comm_key comm = {};
		bpf_get_current_comm(comm.comm, sizeof(comm.comm));
		struct llmtap_comm_key file = {};
		const unsigned char *name = BPF_CORE_READ(bprm, file, f_path.dentry, d_name.name);
		bpf_probe_read_kernel_str(file.comm, sizeof(file.comm), name);
		watched = bpf_map_lookup_elem(&watched_comms, &comm) ||
			  bpf_map_lookup_elem(&watched_comms, &file) || in_watched_cgroup();
		if (watched) {
			__u8 yes = 1;
			bpf_map_update_elem(&watched_pids, &pid, &yes, BPF_ANY);
		}
	}
	/* A new program: its TLS libraries are to be looked at again. */
	bpf_map_delete_elem(&tls_looked_at, &pid);
	if (!watched && !report_all_execs)
		return 0;
	emit_conn_event(LLMTAP_EVENT_EXEC, watched ? LLMTAP_FLAG_WATCHED : 0, -1, NULL, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	/* Every exiting thread drops its per-thread state, wherever its call
	 * was cut short. */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&active_ssl_calls, &pid_tgid);
	bpf_map_delete_elem(&thread_tls_fd, &pid_tgid);
	__u32 pid = BPF_CORE_READ(task, tgid);
	if (BPF_CORE_READ(task, pid) != pid || !is_watched(pid))
		return 0;
	bpf_map_delete_elem(&watched_pids, &pid);
	bpf_map_delete_elem(&tls_looked_at, &pid);
	emit_conn_event(LLMTAP_EVENT_EXIT, 0, -1, NULL, bpf_ktime_get_ns());
	return 0;
}
