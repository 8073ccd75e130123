//! Checks that the host can run the eBPF capture, before anything is loaded,
//! so a missing privilege or kernel feature is one clear line, not an aya
//! error code.

use std::path::Path;

use crate::sys;

/// A reason the eBPF capture cannot start here. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "llmtap needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE, and \
         CAP_SYS_ADMIN for TLS on Linux 6.15+ (missing: {missing}): run it with sudo"
    )]
    MissingCapabilities { missing: String },
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): llmtap needs a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 are)"
    )]
    NoBtf,
    #[error(
        "this kernel has no uprobes (/sys/bus/event_source/devices/uprobe is missing): \
         llmtap needs CONFIG_UPROBE_EVENTS=y; use --capture pcap on such hosts"
    )]
    NoUprobes,
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({0}): \
         mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    Tracefs(std::io::Error),
    #[error(
        "tracefs at /sys/kernel/tracing cannot be read by this user: run llmtap as root, or \
         add CAP_DAC_READ_SEARCH"
    )]
    TracefsUnreadable,
    #[error("no process with PID {0}: check the PID (it may have exited)")]
    NoSuchProcess(u32),
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub fn check_capabilities() -> Result<(), PreflightError> {
    let caps = sys::proc::own_effective_capabilities();
    let has = |cap: u32| caps & (1 << cap) != 0;
    // CAP_SYS_ADMIN covers BPF and perf on every kernel; PTRACE reads other
    // processes' /proc/PID/exe and /proc/PID/root (their executables and
    // libraries, their containers' files). The uprobes' own need for
    // CAP_SYS_ADMIN on recent kernels shows when they are placed: without
    // them plaintext capture still works.
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let perf = has(CAP_PERFMON) || has(CAP_SYS_ADMIN);
    let missing: Vec<&str> = [
        (bpf, "CAP_BPF"),
        (perf, "CAP_PERFMON"),
        (has(CAP_SYS_PTRACE), "CAP_SYS_PTRACE"),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities {
            missing: missing.join(", "),
        })
    }
}

pub fn check_kernel() -> Result<(), PreflightError> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(PreflightError::NoBtf);
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
        return Err(PreflightError::NoUprobes);
    }
    Ok(())
}

/// aya resolves tracepoint ids through tracefs, which fresh hosts may not
/// have mounted. Returns whether this call mounted it.
pub fn ensure_tracefs() -> Result<bool, PreflightError> {
    let tracefs = Path::new("/sys/kernel/tracing");
    match tracefs.join("events").try_exists() {
        Ok(true) => return Ok(false),
        // Mounted, but root-only (0700) and we are another user.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(PreflightError::TracefsUnreadable)
        }
        _ => {}
    }
    if Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(false);
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(tracefs)
        .status()
        .map_err(PreflightError::Tracefs)?;
    if status.success() && tracefs.join("events").exists() {
        Ok(true)
    } else {
        Err(PreflightError::Tracefs(std::io::Error::other(format!(
            "mount exited with {status}"
        ))))
    }
}

pub fn check_process(pid: u32) -> Result<(), PreflightError> {
    if sys::proc::exists(pid) {
        Ok(())
    } else {
        Err(PreflightError::NoSuchProcess(pid))
    }
}
