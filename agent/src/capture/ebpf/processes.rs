//! What discovery and the scopes need to know of running processes, behind
//! [`Processes`], so that both can be tested with made-up processes. On a
//! real host [`HostProcesses`] reads it from `/proc` and cgroupfs.

use std::path::{Path, PathBuf};

use super::tls_targets;
use crate::sys;

/// The names a process goes by: its comm and its executable's file name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessNames {
    pub comm: String,
    pub exe: String,
}

/// Facts about processes, as of the moment they are asked for. A process
/// that is gone answers with nothing: empty lists, `None`, exited.
pub trait Processes {
    /// Every process now.
    fn all_pids(&self) -> Vec<u32>;
    /// The processes in a cgroup directory (v1 or v2) and its descendants.
    fn cgroup_members(&self, dir: &Path) -> Vec<u32>;
    /// Its comm and executable name.
    fn names(&self, pid: u32) -> ProcessNames;
    /// Its `/proc/PID/cgroup` text.
    fn cgroup(&self, pid: u32) -> Option<String>;
    /// The files that may hold TLS functions for it: its executable and
    /// the TLS libraries it maps, as paths the agent can open.
    fn tls_candidates(&self, pid: u32) -> Vec<PathBuf>;
    /// Whether it exited (reaped or a zombie).
    fn has_exited(&self, pid: u32) -> bool;
    /// Whether it has a TCP socket open.
    fn has_tcp_socket(&self, pid: u32) -> bool;
    /// Its parent, if it has a controlling terminal: a shell's job.
    fn terminal_parent(&self, pid: u32) -> Option<u32>;
}

/// The processes of this host, read from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostProcesses;

impl Processes for HostProcesses {
    fn all_pids(&self) -> Vec<u32> {
        sys::proc::all_pids()
    }

    fn cgroup_members(&self, dir: &Path) -> Vec<u32> {
        sys::proc::cgroup_members(dir)
    }

    fn names(&self, pid: u32) -> ProcessNames {
        ProcessNames {
            comm: sys::proc::comm(pid),
            exe: sys::proc::exe(pid)
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default(),
        }
    }

    fn cgroup(&self, pid: u32) -> Option<String> {
        sys::proc::cgroup(pid)
    }

    fn tls_candidates(&self, pid: u32) -> Vec<PathBuf> {
        tls_targets::process_candidates(pid)
    }

    fn has_exited(&self, pid: u32) -> bool {
        sys::proc::has_exited(pid)
    }

    fn has_tcp_socket(&self, pid: u32) -> bool {
        sys::proc::has_tcp_socket(pid)
    }

    fn terminal_parent(&self, pid: u32) -> Option<u32> {
        sys::proc::has_terminal(pid)
            .then(|| sys::proc::parent(pid))
            .flatten()
    }
}
