//! Finds the files to hang the TLS uprobes on: the `libssl.so*` a process
//! maps, an executable that carries OpenSSL itself (node), and the system's
//! libssl for processes that have not loaded it yet.
//!
//! Uprobes belong to a file (its inode), not to a process, so targets are
//! deduplicated by inode and each is attached once for every process.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol};

/// The OpenSSL-compatible functions llmtap hooks, with the entry program
/// each one gets. All four share the `ssl_return` return program.
pub const SSL_FUNCTIONS: [(&str, &str); 4] = [
    ("SSL_write", "ssl_write_entry"),
    ("SSL_write_ex", "ssl_write_ex_entry"),
    ("SSL_read", "ssl_read_entry"),
    ("SSL_read_ex", "ssl_read_ex_entry"),
];

/// Where the system's libssl usually lives (Debian/Ubuntu multiarch first,
/// then Fedora/Arch/Alpine layouts).
const SYSTEM_LIBSSL: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libssl.so.1.1",
    "/usr/lib64/libssl.so.3",
    "/usr/lib64/libssl.so.1.1",
    "/usr/lib/libssl.so.3",
    "/lib/libssl.so.3",
];

/// One file to attach to, with the hooked functions it defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    pub path: PathBuf,
    pub functions: Vec<&'static str>,
}

/// The set of targets found so far, keyed by (device, inode).
#[derive(Default)]
pub struct TlsTargets {
    seen: HashSet<(u64, u64)>,
}

impl TlsTargets {
    /// Returns `path` as a new target if it defines any hooked function and
    /// has not been returned before (under any name).
    pub fn consider(&mut self, path: &Path) -> Option<TlsTarget> {
        let meta = fs::metadata(path).ok()?;
        let inode = (meta.dev(), meta.ino());
        if self.seen.contains(&inode) {
            return None;
        }
        let functions = ssl_functions_defined(path);
        if functions.is_empty() {
            return None;
        }
        self.seen.insert(inode);
        Some(TlsTarget {
            path: path.to_owned(),
            functions,
        })
    }
}

/// Candidate files for a running process: its mapped libssl and its
/// executable. Paths go through /proc/PID/root so that a process in another
/// mount namespace (a container) resolves to its own files.
pub fn process_candidates(pid: u32) -> Vec<PathBuf> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut out = vec![PathBuf::from(format!("/proc/{pid}/exe"))];
    if let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) {
        for path in maps
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
        {
            let is_libssl = Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libssl.so") || n.starts_with("libssl3.so"));
            if is_libssl {
                out.push(root.join(path.trim_start_matches('/')));
            }
        }
    }
    out
}

/// The system's libssl files, for processes that load TLS later.
pub fn system_candidates() -> Vec<PathBuf> {
    SYSTEM_LIBSSL.iter().map(PathBuf::from).collect()
}

/// Which hooked functions `path` defines, in its dynamic or static symbols.
fn ssl_functions_defined(path: &Path) -> Vec<&'static str> {
    let Ok(data) = fs::read(path) else {
        return Vec::new();
    };
    let Ok(file) = object::File::parse(&*data) else {
        return Vec::new();
    };
    let defined: HashSet<&str> = file
        .dynamic_symbols()
        .chain(file.symbols())
        .filter(|s| s.is_definition())
        .filter_map(|s| s.name().ok())
        .collect();
    SSL_FUNCTIONS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| defined.contains(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_ssl_functions_is_no_target() {
        let mut targets = TlsTargets::default();
        assert_eq!(targets.consider(Path::new("/proc/self/exe")), None);
        assert_eq!(targets.consider(Path::new("/nonexistent")), None);
    }

    #[test]
    fn the_system_libssl_is_found_once() {
        let mut targets = TlsTargets::default();
        let found: Vec<_> = system_candidates()
            .iter()
            .filter_map(|p| targets.consider(p))
            .collect();
        let Some(first) = found.first() else {
            panic!("no libssl in {SYSTEM_LIBSSL:?}: install libssl3");
        };
        assert!(first.functions.contains(&"SSL_read"), "{first:?}");
        // The same inode under another name is not a second target.
        if let Ok(alias) = fs::canonicalize(&first.path) {
            assert_eq!(targets.consider(&alias), None);
        }
    }
}
