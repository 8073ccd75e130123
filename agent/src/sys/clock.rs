//! The kernel's clocks, read directly: the eBPF side stamps events with
//! CLOCK_MONOTONIC, which `std` does not expose as nanoseconds.

/// A clock's current time in nanoseconds.
fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; both clocks exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC, as `bpf_ktime_get_ns` reads it.
pub(crate) fn monotonic_ns() -> i128 {
    now(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME: nanoseconds since the Unix epoch.
pub(crate) fn realtime_ns() -> i128 {
    now(libc::CLOCK_REALTIME)
}
