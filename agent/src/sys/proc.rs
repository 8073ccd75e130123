//! What `/proc` says of a process, and continuing a stopped one. Every read answers "nothing" (an empty
//! value or `None`) for a process that is gone or hidden: processes come
//! and go between two reads, and that is never an error.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Whether a process with this pid exists (running or a zombie).
pub(crate) fn exists(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// The fields of `/proc/PID/stat` after the command name (which is in
/// parentheses and may hold anything): state, parent, group, session,
/// terminal, and so on.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether process `pid` is gone or a zombie: it exited, reaped or not.
pub(crate) fn has_exited(pid: u32) -> bool {
    let state = stat_fields(pid).and_then(|f| f.first()?.chars().next());
    !matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// Its parent's pid.
pub(crate) fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether it has a controlling terminal.
pub(crate) fn has_terminal(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.get(4)?.parse::<i64>().ok())
        .is_some_and(|tty| tty != 0)
}

/// Whether it has a TCP socket open: an fd on a socket that its network
/// namespace's TCP tables (`/proc/PID/net/tcp`, `tcp6`) list.
pub(crate) fn has_tcp_socket(pid: u32) -> bool {
    let inodes: HashSet<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.ok()?.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    ["tcp", "tcp6"].iter().any(|table| {
        fs::read_to_string(format!("/proc/{pid}/net/{table}")).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                line.split_whitespace()
                    .nth(9)
                    .and_then(|inode| inode.parse().ok())
                    .is_some_and(|inode| inodes.contains(&inode))
            })
        })
    })
}

/// Every pid in /proc.
pub(crate) fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// Its command name (`comm`), without the newline.
pub(crate) fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_owned())
        .unwrap_or_default()
}

/// Its executable's path, as the process's own mount namespace names it.
pub(crate) fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether it sees the agent's root (not a container's).
pub(crate) fn shares_our_root(pid: u32) -> bool {
    fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == Path::new("/"))
}

/// The paths of the files it maps (`/proc/PID/maps`, one per mapping).
pub(crate) fn mapped_files(pid: u32) -> Vec<String> {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

/// Its `/proc/PID/cgroup` text.
pub(crate) fn cgroup(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// Its environment (`KEY=VALUE`, NUL-separated); empty when unreadable.
pub(crate) fn environ(pid: u32) -> Vec<u8> {
    fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
}

/// The agent's own view of its mounts and cgroups.
pub(crate) fn own_mountinfo() -> Option<String> {
    fs::read_to_string("/proc/self/mountinfo").ok()
}

/// The agent's own `/proc/self/cgroup`.
pub(crate) fn own_cgroup() -> Option<String> {
    fs::read_to_string("/proc/self/cgroup").ok()
}

/// The agent's effective capability set.
pub(crate) fn own_effective_capabilities() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// The processes of a cgroup directory and of all its descendants.
pub(crate) fn cgroup_members(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

/// Continues a stopped process (SIGCONT).
pub(crate) fn resume(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: kill(2) with a pid and a signal number reads no memory.
    if unsafe { libc::kill(pid, libc::SIGCONT) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
