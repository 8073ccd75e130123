//! Scopes beyond `--pid`: which processes to watch by program name
//! (`--exe`) or by cgroup v2 (`--cgroup`), turned into what the kernel
//! matches at exec (comm keys, cgroup ids) and what user space matches
//! itself (name patterns), plus the processes already running in them.
//!
//! Input: the flags' strings. Output: [`Scopes`], and pid lists from /proc
//! and cgroupfs. No BPF here: the loader puts the keys in its maps.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use regex::Regex;

/// Where the cgroup v2 hierarchy usually is mounted (on hybrid systems,
/// at `unified/` below it: [`cgroup2_mount`] finds out).
const CGROUP2_ROOT: &str = "/sys/fs/cgroup";
/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Bytes of a name the kernel keeps in `comm` (16 with the NUL).
pub const COMM_LEN: usize = 16;

/// Why a scope flag cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("--exe {pattern:?} is not a valid regular expression: {source}")]
    BadPattern {
        pattern: String,
        source: Box<regex::Error>,
    },
    #[error("--cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--cgroup {0}: not a cgroup v2 directory (cgroup v1 hierarchies are not supported; cgroup2 is mounted at {1})")]
    NotCgroup2(PathBuf, String),
}

/// One `--exe` value.
#[derive(Clone, Debug)]
pub enum ExeMatch {
    /// A plain program name: matched in the kernel at exec, on the comm and
    /// on the executable file's name (each cut to 15 bytes, as comm is).
    Name(String),
    /// Anything else is a regular expression over the whole name, matched
    /// in user space when the exec is reported.
    Pattern(Regex),
}

impl ExeMatch {
    pub fn parse(value: &str) -> Result<Self, ScopeError> {
        let plain = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+@:".contains(c));
        if plain && !value.is_empty() {
            return Ok(ExeMatch::Name(value.to_owned()));
        }
        Regex::new(&format!("^(?:{value})$"))
            .map(ExeMatch::Pattern)
            .map_err(|source| ScopeError::BadPattern {
                pattern: value.to_owned(),
                source: Box::new(source),
            })
    }

    /// The kernel's `watched_comms` key for a plain name.
    pub fn comm_key(&self) -> Option<[u8; COMM_LEN]> {
        let ExeMatch::Name(name) = self else {
            return None;
        };
        let mut key = [0u8; COMM_LEN];
        let len = name.len().min(COMM_LEN - 1);
        key[..len].copy_from_slice(&name.as_bytes()[..len]);
        Some(key)
    }

    /// Whether a process with this comm and executable name matches.
    pub fn matches(&self, names: &ProcessNames) -> bool {
        let candidates = [names.comm.as_str(), names.exe.as_str()];
        match self {
            ExeMatch::Name(name) => {
                let cut = &name.as_bytes()[..name.len().min(COMM_LEN - 1)];
                candidates.iter().any(|c| c == name) || names.comm.as_bytes() == cut
            }
            ExeMatch::Pattern(re) => candidates.iter().any(|c| !c.is_empty() && re.is_match(c)),
        }
    }
}

/// The names a process goes by: its comm and its executable's file name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessNames {
    pub comm: String,
    pub exe: String,
}

impl ProcessNames {
    /// Reads them from /proc; empty strings for what is gone or hidden.
    pub fn of(pid: u32) -> ProcessNames {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        ProcessNames {
            comm: comm.trim_end().to_owned(),
            exe,
        }
    }
}

/// A cgroup v2 directory and its id (the directory's inode number, which
/// is what `bpf_get_current_cgroup_id` returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedCgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl WatchedCgroup {
    /// Resolves `--cgroup PATH`: a directory under the cgroup2 mount, given
    /// in full or relative to it (`/system.slice/x.service` works).
    pub fn resolve(path: &Path) -> Result<Self, ScopeError> {
        let mount = cgroup2_mount();
        let full = if path.starts_with(CGROUP2_ROOT) {
            path.to_owned()
        } else {
            mount.join(path.strip_prefix("/").unwrap_or(path))
        };
        let error = |source| ScopeError::Cgroup {
            path: full.clone(),
            source,
        };
        let meta = fs::metadata(&full).map_err(error)?;
        if !meta.is_dir() || !is_cgroup2(&full) {
            return Err(ScopeError::NotCgroup2(full, mount.display().to_string()));
        }
        Ok(WatchedCgroup {
            id: meta.ino(),
            path: full,
        })
    }

    /// The processes in this cgroup and its descendants now.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.path.clone()];
        while let Some(dir) = dirs.pop() {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                dirs.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        pids
    }
}

/// The cgroup2 mount point, from /proc/self/mountinfo: `/sys/fs/cgroup`
/// on unified systems, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_mount() -> PathBuf {
    fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                let (mount, fstype) = line.split_once(" - ")?;
                let point = mount.split(' ').nth(4)?;
                fstype.starts_with("cgroup2 ").then(|| PathBuf::from(point))
            })
        })
        .unwrap_or_else(|| PathBuf::from(CGROUP2_ROOT))
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; c_path is NUL-terminated.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut fs) == 0 && fs.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// Every scope given on the command line.
#[derive(Clone, Debug, Default)]
pub struct Scopes {
    pub exes: Vec<ExeMatch>,
    pub cgroups: Vec<WatchedCgroup>,
}

impl Scopes {
    pub fn parse(exes: &[String], cgroups: &[PathBuf]) -> Result<Self, ScopeError> {
        Ok(Scopes {
            exes: exes
                .iter()
                .map(|e| ExeMatch::parse(e))
                .collect::<Result<_, _>>()?,
            cgroups: cgroups
                .iter()
                .map(|c| WatchedCgroup::resolve(c))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exes.is_empty() && self.cgroups.is_empty()
    }

    /// Whether some scope can only be decided in user space, so the kernel
    /// must report every exec.
    pub fn needs_all_execs(&self) -> bool {
        self.exes.iter().any(|e| matches!(e, ExeMatch::Pattern(_)))
    }

    /// Whether a process matches an `--exe` scope.
    pub fn exe_matches(&self, names: &ProcessNames) -> bool {
        self.exes.iter().any(|e| e.matches(names))
    }

    /// The processes already inside a scope when the agent starts.
    pub fn running_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.cgroups.iter().flat_map(WatchedCgroup::pids).collect();
        if !self.exes.is_empty() {
            let me = std::process::id();
            let all = fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
            pids.extend(all.filter(|&pid| pid != me && self.exe_matches(&ProcessNames::of(pid))));
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(comm: &str, exe: &str) -> ProcessNames {
        ProcessNames {
            comm: comm.into(),
            exe: exe.into(),
        }
    }

    #[test]
    fn a_plain_name_matches_comm_or_executable_and_goes_to_the_kernel() {
        let m = ExeMatch::parse("python3").unwrap();
        assert!(matches!(m, ExeMatch::Name(_)));
        assert!(m.matches(&names("python3", "python3.11")));
        assert!(m.matches(&names("worker", "python3")));
        assert!(!m.matches(&names("python3.11", "python3.11")));
        let key = m.comm_key().unwrap();
        assert_eq!(&key[..8], b"python3\0");
    }

    #[test]
    fn a_long_name_is_cut_like_comm() {
        let m = ExeMatch::parse("a-very-long-program-name").unwrap();
        assert_eq!(&m.comm_key().unwrap()[..15], b"a-very-long-pro");
        assert!(m.matches(&names("a-very-long-pro", "")));
    }

    #[test]
    fn anything_else_is_a_whole_name_pattern_for_user_space() {
        let m = ExeMatch::parse("python3(\\.[0-9]+)?").unwrap();
        assert!(m.comm_key().is_none());
        assert!(m.matches(&names("x", "python3.11")));
        assert!(m.matches(&names("python3", "")));
        assert!(!m.matches(&names("mypython3", "")));
        let scopes = Scopes {
            exes: vec![m],
            cgroups: vec![],
        };
        assert!(scopes.needs_all_execs());
        assert!(matches!(
            ExeMatch::parse("("),
            Err(ScopeError::BadPattern { .. })
        ));
    }

    #[test]
    fn a_cgroup_resolves_to_its_inode_or_is_refused() {
        let mount = cgroup2_mount();
        let root = WatchedCgroup::resolve(Path::new("/")).unwrap();
        assert_eq!(root.path, mount);
        assert_eq!(root.id, fs::metadata(&mount).unwrap().ino());
        assert!(root.pids().contains(&std::process::id()));
        assert!(matches!(
            WatchedCgroup::resolve(&mount.join("cgroup.procs")),
            Err(ScopeError::NotCgroup2(..))
        ));
        assert!(matches!(
            WatchedCgroup::resolve(Path::new("/no/such/llmtap/group")),
            Err(ScopeError::Cgroup { .. })
        ));
    }
}
