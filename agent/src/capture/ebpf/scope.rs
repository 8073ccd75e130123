//! Scopes beyond `--pid`: which processes to watch by program name
//! (`--exe`), by cgroup (`--cgroup`, v2 or v1), by container
//! (`--container`) or all of them (`--all`), turned into what the kernel
//! matches at exec (comm keys, cgroup v2 ids) and what user space matches
//! itself (name patterns, v1 paths, container ids), plus the processes
//! already running in them.
//!
//! Input: the flags' strings. Output: [`Scopes`], and which processes are
//! in them, as [`Processes`] tells. No BPF here: discovery puts the keys in
//! the kernel's maps.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::processes::{ProcessNames, Processes};
use crate::sys;
use crate::workload::{container_id_matches, CgroupIdentity};

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
    #[error("--cgroup {0}: not a cgroup directory (cgroup2 is mounted at {1}; give a directory under it, or under a cgroup v1 hierarchy such as /sys/fs/cgroup/pids)")]
    NotCgroup(PathBuf, String),
    #[error("--container {0:?}: a container id is 1 to 64 hex digits (as `docker ps` or `crictl ps` show it)")]
    BadContainerId(String),
    #[error("--exe \"\": give a program name or a regular expression")]
    EmptyExe,
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
        if value.is_empty() {
            return Err(ScopeError::EmptyExe);
        }
        let plain = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+@:".contains(c));
        if plain {
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
            return Err(ScopeError::NotCgroup(full, mount.display().to_string()));
        }
        Ok(WatchedCgroup {
            id: meta.ino(),
            path: full,
        })
    }
}

/// A directory of a cgroup v1 hierarchy. The kernel's cgroup id helpers
/// only know v2, so membership is matched in user space, at exec, on the
/// process's `/proc/PID/cgroup` line for this hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Cgroup {
    pub path: PathBuf,
    /// The hierarchy's controllers as `/proc/PID/cgroup` spells them
    /// (`pids`, `cpu,cpuacct`, `name=systemd`).
    controllers: String,
    /// The directory relative to the hierarchy's root (`/`, `/a/b`).
    relative: String,
}

impl V1Cgroup {
    /// `path` when it lies in a mounted cgroup v1 hierarchy.
    fn resolve(path: &Path) -> Option<V1Cgroup> {
        let mountinfo = sys::proc::own_mountinfo()?;
        let own = sys::proc::own_cgroup()?;
        let (point, options) = mountinfo.lines().find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let point = Path::new(mount.split(' ').nth(4)?);
            let mut fs = fs.split(' ');
            (fs.next()? == "cgroup" && path.starts_with(point))
                .then(|| (point.to_owned(), fs.nth(1).unwrap_or("").to_owned()))
        })?;
        let options: Vec<&str> = options.split(',').collect();
        // The hierarchy whose every controller is among the mount's options.
        let controllers = own.lines().find_map(|line| {
            let controllers = line.split(':').nth(1)?;
            (!controllers.is_empty() && controllers.split(',').all(|c| options.contains(&c)))
                .then(|| controllers.to_owned())
        })?;
        let relative = Path::new("/").join(path.strip_prefix(&point).ok()?);
        Some(V1Cgroup {
            path: path.to_owned(),
            controllers,
            relative: relative.display().to_string(),
        })
    }

    /// Whether a process with this `/proc/PID/cgroup` text is inside.
    fn contains(&self, cgroup_file: &str) -> bool {
        cgroup_file.lines().any(|line| {
            let mut fields = line.splitn(3, ':').skip(1);
            let (Some(controllers), Some(path)) = (fields.next(), fields.next()) else {
                return false;
            };
            controllers == self.controllers
                && (self.relative == "/"
                    || path == self.relative
                    || path
                        .strip_prefix(&self.relative)
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }
}

/// `--cgroup PATH`: where it lies decides how it is matched.
fn resolve_cgroup(path: &Path) -> Result<CgroupScope, ScopeError> {
    match WatchedCgroup::resolve(path) {
        Ok(v2) => Ok(CgroupScope::V2(v2)),
        Err(ScopeError::NotCgroup(..)) if fs::metadata(path).is_ok_and(|m| m.is_dir()) => {
            V1Cgroup::resolve(path).map(CgroupScope::V1).ok_or_else(|| {
                ScopeError::NotCgroup(path.to_owned(), cgroup2_mount().display().to_string())
            })
        }
        Err(e) => Err(e),
    }
}

enum CgroupScope {
    V2(WatchedCgroup),
    V1(V1Cgroup),
}

/// `--container ID`, checked: hex, lowercased.
fn parse_container_id(value: &str) -> Result<String, ScopeError> {
    let valid = (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit());
    valid
        .then(|| value.to_ascii_lowercase())
        .ok_or_else(|| ScopeError::BadContainerId(value.to_owned()))
}

/// The cgroup v2 directory a process of a container is in, when its v2
/// path names that container (on cgroup v1 only hosts it is `/`, which
/// must not be watched).
fn container_cgroup_v2(cgroup_file: &str, container_id: &str) -> Option<WatchedCgroup> {
    let path = cgroup_file.lines().find_map(|l| l.strip_prefix("0::"))?;
    if !path.contains(container_id) {
        return None;
    }
    WatchedCgroup::resolve(Path::new(path)).ok()
}

/// The cgroup2 mount point, from /proc/self/mountinfo: `/sys/fs/cgroup`
/// on unified systems, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_mount() -> PathBuf {
    sys::proc::own_mountinfo()
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
    sys::files::filesystem_magic(path) == Some(CGROUP2_SUPER_MAGIC)
}

/// What the scope flags say, before they are resolved.
#[derive(Clone, Debug, Default)]
pub struct ScopeArgs {
    pub exes: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub containers: Vec<String>,
    pub all: bool,
}

/// Every scope given on the command line.
#[derive(Clone, Debug, Default)]
pub struct Scopes {
    pub exes: Vec<ExeMatch>,
    /// cgroup v2 directories, matched in the kernel.
    pub cgroups: Vec<WatchedCgroup>,
    /// cgroup v1 directories, matched in user space.
    pub v1_cgroups: Vec<V1Cgroup>,
    /// Container ids (or prefixes), matched in user space on each exec's
    /// cgroup; their cgroup v2 directories are also given to the kernel
    /// once a process of theirs is seen.
    pub containers: Vec<String>,
    /// Every process on the host but the agent itself.
    pub all: bool,
}

impl Scopes {
    pub fn parse(args: &ScopeArgs) -> Result<Self, ScopeError> {
        let mut scopes = Scopes {
            exes: args
                .exes
                .iter()
                .map(|e| ExeMatch::parse(e))
                .collect::<Result<_, _>>()?,
            containers: args
                .containers
                .iter()
                .map(|c| parse_container_id(c))
                .collect::<Result<_, _>>()?,
            all: args.all,
            ..Scopes::default()
        };
        for path in &args.cgroups {
            match resolve_cgroup(path)? {
                CgroupScope::V2(cgroup) => scopes.cgroups.push(cgroup),
                CgroupScope::V1(cgroup) => scopes.v1_cgroups.push(cgroup),
            }
        }
        Ok(scopes)
    }

    pub fn is_empty(&self) -> bool {
        self.exes.is_empty()
            && self.cgroups.is_empty()
            && self.v1_cgroups.is_empty()
            && self.containers.is_empty()
            && !self.all
    }

    /// Whether some scope can only be decided in user space, so the kernel
    /// must report every exec. (Under `--all` every process is watched, so
    /// every exec is reported anyway: a new program's TLS evidence starts
    /// over.)
    pub fn needs_all_execs(&self) -> bool {
        self.all
            || !self.v1_cgroups.is_empty()
            || !self.containers.is_empty()
            || self.exes.iter().any(|e| matches!(e, ExeMatch::Pattern(_)))
    }

    /// Whether a process the kernel did not match at exec is in a scope
    /// that user space decides: an `--exe` pattern, a v1 cgroup, a container.
    pub fn matches_in_user_space(&self, processes: &impl Processes, pid: u32) -> bool {
        if self.exe_matches(processes, pid) {
            return true;
        }
        if self.v1_cgroups.is_empty() && self.containers.is_empty() {
            return false;
        }
        let Some(cgroup_file) = processes.cgroup(pid) else {
            return false;
        };
        self.v1_cgroups.iter().any(|c| c.contains(&cgroup_file))
            || self.watched_container(&cgroup_file).is_some()
    }

    /// The processes already inside a scope when the agent starts.
    pub fn running_pids(&self, processes: &impl Processes) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .cgroups
            .iter()
            .map(|c| &c.path)
            .chain(self.v1_cgroups.iter().map(|c| &c.path))
            .flat_map(|path| processes.cgroup_members(path))
            .collect();
        if !self.exes.is_empty() || !self.containers.is_empty() || self.all {
            let me = std::process::id();
            pids.extend(processes.all_pids().into_iter().filter(|&pid| {
                pid != me
                    && (self.all
                        || self.exe_matches(processes, pid)
                        || (!self.containers.is_empty()
                            && processes
                                .cgroup(pid)
                                .is_some_and(|f| self.watched_container(&f).is_some())))
            }));
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether its program is one of the `--exe` names or patterns.
    pub fn exe_matches(&self, processes: &impl Processes, pid: u32) -> bool {
        !self.exes.is_empty() && {
            let names = processes.names(pid);
            self.exes.iter().any(|e| e.matches(&names))
        }
    }

    /// The id of the watched container a `/proc/PID/cgroup` text names.
    fn watched_container(&self, cgroup_file: &str) -> Option<String> {
        CgroupIdentity::parse(cgroup_file)
            .container_id
            .filter(|id| self.containers.iter().any(|c| container_id_matches(c, id)))
    }

    /// The cgroup v2 directory of a watched container's process, for the
    /// kernel to match the container's later execs itself.
    pub fn container_cgroup(&self, processes: &impl Processes, pid: u32) -> Option<WatchedCgroup> {
        if self.containers.is_empty() {
            return None;
        }
        let text = processes.cgroup(pid)?;
        container_cgroup_v2(&text, &self.watched_container(&text)?)
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
            ..Scopes::default()
        };
        assert!(scopes.needs_all_execs());
        assert!(matches!(
            ExeMatch::parse("("),
            Err(ScopeError::BadPattern { .. })
        ));
        // It would match no program, silently.
        assert!(matches!(ExeMatch::parse(""), Err(ScopeError::EmptyExe)));
    }

    #[test]
    fn a_cgroup_resolves_to_its_inode_or_is_refused() {
        let mount = cgroup2_mount();
        let root = WatchedCgroup::resolve(Path::new("/")).unwrap();
        assert_eq!(root.path, mount);
        assert_eq!(root.id, fs::metadata(&mount).unwrap().ino());
        assert!(sys::proc::cgroup_members(&root.path).contains(&std::process::id()));
        assert!(matches!(
            WatchedCgroup::resolve(&mount.join("cgroup.procs")),
            Err(ScopeError::NotCgroup(..))
        ));
        assert!(matches!(
            WatchedCgroup::resolve(Path::new("/no/such/llmtap/group")),
            Err(ScopeError::Cgroup { .. })
        ));
    }

    #[test]
    fn a_v1_directory_matches_its_hierarchys_line_and_descendants() {
        let cgroup = V1Cgroup {
            path: "/sys/fs/cgroup/pids/app".into(),
            controllers: "pids".into(),
            relative: "/app".into(),
        };
        assert!(cgroup.contains("8:pids:/app\n0::/\n"));
        assert!(cgroup.contains("8:pids:/app/worker\n"));
        assert!(!cgroup.contains("8:pids:/application\n"));
        assert!(!cgroup.contains("4:memory:/app\n8:pids:/\n"));
        assert!(!cgroup.contains("0::/app\n"));
    }

    #[test]
    fn container_ids_are_hex_and_compared_lowercase() {
        assert_eq!(parse_container_id("3F4E1B2C9A8D").unwrap(), "3f4e1b2c9a8d");
        for bad in ["", "not-hex", &"a".repeat(65)] {
            assert!(matches!(
                parse_container_id(bad),
                Err(ScopeError::BadContainerId(_))
            ));
        }
    }
}
