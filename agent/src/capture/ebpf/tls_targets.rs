//! Finds the files to hang the TLS uprobes on: the `libssl.so*` a process
//! maps, an executable that carries OpenSSL itself (node), and the system's
//! libssl for processes that have not loaded it yet.
//!
//! Uprobes belong to a file (its inode), not to a process, so targets are
//! deduplicated by inode and each is attached once for every process.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection, ObjectSymbol, ObjectSymbolTable};

use crate::sys;

/// The TLS library functions llmtap hooks, with the entry program each one
/// gets; all share the `ssl_return` return program. GnuTLS's record calls
/// have the shape of `SSL_write`/`SSL_read` (session, buffer; the byte
/// count returned), so they use the same programs, the session pointer
/// keying the stream as an `SSL*` does.
/// Go's crypto/tls (`(*Conn).Write`/`Read`) take their own entry programs
/// and no `ssl_return`: see [`TlsTarget::go_returns`].
pub const TLS_FUNCTIONS: [(&str, &str); 8] = [
    ("SSL_write", "ssl_write_entry"),
    ("SSL_write_ex", "ssl_write_ex_entry"),
    ("SSL_read", "ssl_read_entry"),
    ("SSL_read_ex", "ssl_read_ex_entry"),
    ("gnutls_record_send", "ssl_write_entry"),
    ("gnutls_record_recv", "ssl_read_entry"),
    (GO_WRITE, "go_tls_write_entry"),
    (GO_READ, "go_tls_read_entry"),
];

const GO_WRITE: &str = "crypto/tls.(*Conn).Write";
const GO_READ: &str = "crypto/tls.(*Conn).Read";

/// Whether a hooked function is Go's (register ABI, returns found by RET).
pub fn is_go_function(name: &str) -> bool {
    name.starts_with("crypto/tls.")
}

/// File names of the TLS libraries a process may map.
const TLS_LIBRARIES: [&str; 3] = ["libssl.so", "libssl3.so", "libgnutls.so"];

/// One file to attach to, with the hooked functions it defines and their
/// file offsets (resolved here once: aya would re-read a 100 MB node
/// binary for every probe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    pub path: PathBuf,
    pub functions: Vec<(&'static str, u64)>,
    /// File offsets of the RET instructions of Go's `(*Conn).Read`: the
    /// return probes go there, since a uretprobe breaks Go's movable
    /// stacks. (`Write` is reported at its entry.)
    pub go_returns: Vec<u64>,
}

impl TlsTarget {
    /// The TLS library family: `gnutls` or `openssl` (which BoringSSL and
    /// node's static copy also answer to), for `llmtap_tls_processes`.
    pub fn stack(&self) -> &'static str {
        if self.functions.iter().any(|(f, _)| f.starts_with("gnutls_")) {
            "gnutls"
        } else if !self.go_returns.is_empty() {
            "go"
        } else {
            "openssl"
        }
    }
}

/// A file's identity, whatever name reaches it: (device, inode).
pub type FileId = (u64, u64);

/// The identity of the file at `path`.
pub fn file_id(path: &Path) -> Option<FileId> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Every file looked at so far, with what it offers to hook: each is read
/// once, however many processes map it.
#[derive(Default)]
pub struct TlsTargets {
    scanned: HashMap<FileId, Option<TlsTarget>>,
}

impl TlsTargets {
    /// The target `path` is, with its identity, if it defines any hooked
    /// function. Files without TLS functions are remembered too: every exec
    /// of `sh` must not re-read it.
    pub fn target(&mut self, path: &Path) -> Option<(FileId, &TlsTarget)> {
        let id = file_id(path)?;
        let target = self.scanned.entry(id).or_insert_with(|| scan_target(path));
        target.as_ref().map(|t| (id, t))
    }

    /// The target a file already scanned is, if any.
    pub fn known(&self, id: FileId) -> Option<&TlsTarget> {
        self.scanned.get(&id)?.as_ref()
    }
}

fn scan_target(path: &Path) -> Option<TlsTarget> {
    let (functions, go_returns) = match scan_file(path) {
        Scan::Found(functions, go_returns) => (functions, go_returns),
        Scan::Nothing => return None,
        Scan::StrippedGo => {
            // Once per file: its scan is remembered.
            tracing::warn!(
                path = %path.display(),
                "unsupported: a Go executable without symbols; its crypto/tls calls cannot \
                 be hooked, only its plaintext traffic will be seen"
            );
            return None;
        }
    };
    Some(TlsTarget {
        path: path.to_owned(),
        functions,
        go_returns,
    })
}

/// Candidate files for a running process: its mapped libssl and its
/// executable. A process in another mount namespace (a container) has its
/// files reached through /proc/PID/root; one in ours by their own path,
/// which outlives the process (a short-lived one may be gone by attach).
pub fn process_candidates(pid: u32) -> Vec<PathBuf> {
    let in_its_root = in_root_of(pid);
    let mut out = vec![sys::proc::exe(pid).map_or_else(
        || PathBuf::from(format!("/proc/{pid}/exe")),
        |p| in_its_root(&p),
    )];
    for path in sys::proc::mapped_files(pid) {
        let is_libssl = Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| TLS_LIBRARIES.iter().any(|lib| n.starts_with(lib)));
        if is_libssl {
            out.push(in_its_root(Path::new(&path)));
        }
    }
    out
}

/// Turns a path as process `pid` names it into one the agent can open: the
/// same path when the process shares the agent's root, else the path below
/// /proc/PID/root. A path in the agent's own root outlives the process (a
/// short-lived one may be gone by the time its files are hooked).
fn in_root_of(pid: u32) -> impl Fn(&Path) -> PathBuf {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let shared_root = sys::proc::shares_our_root(pid);
    move |path: &Path| {
        if shared_root {
            path.to_owned()
        } else {
            root.join(path.strip_prefix("/").unwrap_or(path))
        }
    }
}

/// What a file offers to hook.
enum Scan {
    /// Hooked functions with their file offsets, and Go's RET offsets.
    Found(Vec<(&'static str, u64)>, Vec<u64>),
    Nothing,
    /// A Go program whose symbols were stripped: nothing to find Go's
    /// crypto/tls by.
    StrippedGo,
}

/// Which hooked functions `path` defines, in its dynamic or static
/// symbols, with their offsets in the file (what a uprobe attaches at).
fn scan_file(path: &Path) -> Scan {
    let Ok(data) = sys::files::MappedFile::open(path) else {
        return Scan::Nothing;
    };
    let Ok(file) = object::File::parse(&*data) else {
        return Scan::Nothing;
    };
    let scan = |symbols: object::read::SymbolIterator<'_, '_>| {
        let mut found: Vec<(&'static str, u64, u64)> = Vec::new();
        for symbol in symbols {
            let Ok(symbol_name) = symbol.name() else {
                continue;
            };
            let Some((name, _)) = TLS_FUNCTIONS
                .iter()
                .find(|(name, _)| *name == symbol_name && symbol.is_definition())
            else {
                continue;
            };
            if found.iter().all(|(n, _, _)| n != name) {
                found.extend(
                    file_offset(&file, &symbol).map(|offset| (*name, offset, symbol.size())),
                );
            }
        }
        found
    };
    // The exported symbols, and the (much longer) full table only when
    // nothing is exported.
    let mut found = exported_by_hash(&data, &file).unwrap_or_else(|| scan(file.dynamic_symbols()));
    if found.is_empty() {
        found = scan(file.symbols());
    }
    let is_go = file.section_by_name(".go.buildinfo").is_some()
        || file.section_by_name(".note.go.buildid").is_some();
    if found.is_empty() {
        return if is_go && file.symbols().next().is_none() {
            Scan::StrippedGo
        } else {
            Scan::Nothing
        };
    }
    // In the order of TLS_FUNCTIONS, whatever the symbol table's.
    found.sort_by_key(|(name, _, _)| TLS_FUNCTIONS.iter().position(|(n, _)| n == name));
    let go_returns = found
        .iter()
        .filter(|(name, _, _)| *name == GO_READ)
        .flat_map(|&(_, offset, size)| ret_offsets(&data, offset, size))
        .collect();
    Scan::Found(
        found
            .into_iter()
            .map(|(name, offset, _)| (name, offset))
            .collect(),
        go_returns,
    )
}

/// The hooked functions a file exports, looked up in its GNU hash table:
/// eight lookups, where walking node's 75,000 exports takes long enough
/// (100 ms in a debug build) to miss a new process's first calls. None
/// when the file has no such table.
fn exported_by_hash(data: &[u8], file: &object::File<'_>) -> Option<Vec<(&'static str, u64, u64)>> {
    let elf = ElfFile64::<Endianness>::parse(data).ok()?;
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let (table, link) = sections.gnu_hash(endian, data).ok()??;
    let symbols = sections.symbol_table_by_index(endian, data, link).ok()?;
    let versions = sections.versions(endian, data).ok()?.unwrap_or_default();
    let exports = file.dynamic_symbol_table()?;
    let found = TLS_FUNCTIONS.iter().filter_map(|&(name, _)| {
        let hash = object::elf::gnu_hash(name.as_bytes());
        let (index, _) = table.find(endian, name.as_bytes(), hash, None, &symbols, &versions)?;
        let symbol = exports.symbol_by_index(index).ok()?;
        if !symbol.is_definition() {
            return None;
        }
        Some((name, file_offset(file, &symbol)?, symbol.size()))
    });
    Some(found.collect())
}

/// File offsets of the RET instructions in the function at `offset` of
/// `size` bytes (x86-64 only: elsewhere none, and Go is not hooked).
fn ret_offsets(data: &[u8], offset: u64, size: u64) -> Vec<u64> {
    if !cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    let Some(code) = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(offset + size).ok())
        .and_then(|(start, end)| data.get(start..end))
    else {
        return Vec::new();
    };
    let decoder = iced_x86::Decoder::with_ip(64, code, offset, iced_x86::DecoderOptions::NONE);
    decoder
        .into_iter()
        .filter(|insn| insn.mnemonic() == iced_x86::Mnemonic::Ret)
        .map(|insn| insn.ip())
        .collect()
}

/// Where a function's code sits in its file: its address made relative to
/// its section, plus the section's file offset.
fn file_offset(file: &object::File<'_>, symbol: &object::Symbol<'_, '_>) -> Option<u64> {
    let section = file.section_by_index(symbol.section_index()?).ok()?;
    let (offset, _) = section.file_range()?;
    Some(symbol.address() - section.address() + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_ret_instructions_are_return_points() {
        // mov rbx, rax (48 89 c3: a 0xc3 byte that is no RET); ret; nop.
        let code = [0x48, 0x89, 0xc3, 0xc3, 0x90];
        let mut file = vec![0u8; 0x100];
        file.extend_from_slice(&code);
        assert_eq!(ret_offsets(&file, 0x100, code.len() as u64), [0x103]);
        // A function running past the end of the file finds nothing.
        assert!(ret_offsets(&file, 0x100, 0x1000).is_empty());
    }

    #[test]
    fn a_file_without_ssl_functions_is_no_target() {
        let mut targets = TlsTargets::default();
        assert_eq!(targets.target(Path::new("/proc/self/exe")), None);
        assert_eq!(targets.target(Path::new("/nonexistent")), None);
    }

    #[test]
    fn the_system_libssl_is_found_and_known_under_its_other_names() {
        let mut targets = TlsTargets::default();
        // Debian's, which `cargo xtask setup` installs.
        let system = [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
        ];
        let found: Vec<(FileId, TlsTarget)> = system
            .iter()
            .map(Path::new)
            .filter_map(|p| targets.target(p).map(|(id, t)| (id, t.clone())))
            .collect();
        let found: Vec<_> = found.into_iter().map(|(_, t)| t).collect();
        let Some(first) = found.first() else {
            panic!("no libssl in {system:?}: install libssl3");
        };
        let read = first.functions.iter().find(|(name, _)| *name == "SSL_read");
        assert!(read.is_some_and(|(_, offset)| *offset > 0), "{first:?}");
        let gnutls = found
            .iter()
            .find(|t| t.path.to_string_lossy().contains("libgnutls"))
            .expect("libgnutls.so.30 found: install libgnutls30");
        let names: Vec<_> = gnutls.functions.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["gnutls_record_send", "gnutls_record_recv"]);
        // The same inode under another name is the same target.
        let alias = fs::canonicalize(&first.path).unwrap();
        let (id, again) = targets.target(&alias).unwrap();
        assert_eq!((Some(id), &again.path), (file_id(&first.path), &first.path));
    }
}
