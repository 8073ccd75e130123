//! Files read in ways `std` does not offer: mapped read-only, asked for
//! their file system's magic number, or opened inside another process's
//! root with its links resolved there.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A file mapped read-only: only the pages a reader touches are read (the
/// ELF headers and symbol tables of a 100 MB executable, say).
pub(crate) struct MappedFile {
    addr: *mut libc::c_void,
    len: usize,
}

impl MappedFile {
    /// Maps `path`; an empty file is an error (there is nothing to map).
    pub(crate) fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
        if len == 0 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        // SAFETY: a fresh private read-only mapping of an open fd; the
        // mapping stays valid after the fd is closed.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(MappedFile { addr, len })
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: addr..addr+len is mapped readable for our lifetime.
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `open` made.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// The magic number of the file system `path` is on (`statfs`'s `f_type`).
pub(crate) fn filesystem_magic(path: &Path) -> Option<i64> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: an all-zero statfs is a valid buffer for statfs(2) to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and fs is a valid statfs.
    let ok = unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } == 0;
    ok.then_some(fs.f_type as i64)
}

/// Reads `path` as process `pid` sees it, its links resolved inside that
/// process's root: `/var/run` is a link to `/run` in most images, and
/// followed from `/proc/PID/root` it would lead to the agent's own `/run`,
/// so a plain open is not enough (openat2 `RESOLVE_IN_ROOT`).
pub(crate) fn read_in_root(pid: u32, path: &str) -> Option<String> {
    let root = File::open(format!("/proc/{pid}/root")).ok()?;
    let path = CString::new(path).ok()?;
    // SAFETY: an all-zero open_how is valid (no flags, mode or resolve).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: a valid directory fd, a NUL-terminated path, and `how` with
    // its size, as openat2(2) takes them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: openat2 just returned this fd, owned by no one else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The bytes of a small regular file, at most `max` of them. Anything else
/// is an error rather than a wait or an endless read: a FIFO (opened
/// without blocking, then refused), a device such as `/dev/zero`, a
/// directory, or a file larger than `max`.
pub(crate) fn read_small_file(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, a device or a directory)",
        ));
    }
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_in_the_processs_root() {
        let me = std::process::id();
        assert_eq!(
            read_in_root(me, "proc/sys/kernel/ostype").as_deref(),
            Some("Linux\n")
        );
        assert_eq!(read_in_root(me, "no/such/file"), None);
        assert_eq!(read_in_root(u32::MAX, "proc/sys/kernel/ostype"), None);
    }

    #[test]
    fn a_mapped_file_reads_like_the_file() {
        let mapped = MappedFile::open(
            Path::new("/proc/self/exe")
                .canonicalize()
                .unwrap()
                .as_path(),
        )
        .unwrap();
        assert_eq!(&mapped[..4], b"\x7fELF");
        assert!(MappedFile::open(Path::new("/no/such/file")).is_err());
    }
}
