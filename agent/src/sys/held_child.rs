//! Starts a command held at the door: its process exists, but the command
//! does not run until the agent has put its pid on the watch list, so not
//! one of its calls is missed however short-lived it is.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

/// A child process waiting to exec its command.
pub struct HeldChild {
    child: Child,
    gate: OwnedFd,
}

impl HeldChild {
    pub fn spawn(argv: &[OsString]) -> io::Result<HeldChild> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these two fds, owned by nobody else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let gate_fd = read_end.as_raw_fd();
        let release_fd = write_end.as_raw_fd();
        // std's spawn returns only once the child has exec'd, so the child
        // cannot wait before exec: a shell waits for the gate on fd 3, then
        // execs the command in the same process, keeping the pid we watch.
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(r#"read -r _ <&3 || exit 125; exec 3<&-; exec "$0" "$@""#)
            .arg(program)
            .args(args);
        // SAFETY: close(2), fcntl(2) and dup2(2) are async-signal-safe. Closing the
        // child's copy of the write end makes the gate read fail, and the
        // command not run, if the agent dies before releasing it.
        unsafe {
            command.pre_exec(move || {
                libc::close(release_fd);
                // dup2 onto itself keeps close-on-exec set: clear it instead.
                let gate_on_3 = if gate_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(gate_fd, 3) == 3
                };
                if !gate_on_3 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(read_end);
        Ok(HeldChild {
            child,
            gate: write_end,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The executable the child will run, resolved along PATH.
    pub fn resolve_program(program: &OsString) -> Option<PathBuf> {
        let program = PathBuf::from(program);
        if program.components().count() > 1 {
            return Some(program);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&program))
                .find(|candidate| candidate.is_file())
        })
    }

    /// Lets the child go on to `exec`.
    pub fn release(self) -> io::Result<Child> {
        // SAFETY: writes one byte from a valid buffer to a pipe we own.
        let written = unsafe { libc::write(self.gate.as_raw_fd(), b"\n".as_ptr().cast(), 1) };
        if written != 1 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_runs_only_after_release() {
        let marker = std::env::temp_dir().join(format!("llmtap-launch-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let argv: Vec<OsString> = vec!["touch".into(), marker.clone().into()];
        let held = HeldChild::spawn(&argv).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!marker.exists(), "ran before release");
        let status = held.release().unwrap().wait().unwrap();
        assert!(status.success());
        assert!(marker.exists());
        std::fs::remove_file(marker).unwrap();
    }
}
