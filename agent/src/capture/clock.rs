//! Converts the kernel's CLOCK_MONOTONIC timestamps (`bpf_ktime_get_ns`)
//! to wall-clock nanoseconds since the Unix epoch.

use crate::stream::WallNanos;

/// The offset between the two clocks, sampled once: the monotonic clock
/// does not jump, so one sample stays right until the wall clock is stepped.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicToWall {
    offset: i128,
}

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; both clocks exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl MonotonicToWall {
    pub fn sample() -> Self {
        // Bracket the wall-clock read between two monotonic reads and use
        // their midpoint, halving the error of one unlucky preemption.
        let before = now(libc::CLOCK_MONOTONIC);
        let wall = now(libc::CLOCK_REALTIME);
        let after = now(libc::CLOCK_MONOTONIC);
        MonotonicToWall {
            offset: wall - (before + after) / 2,
        }
    }

    pub fn to_wall(&self, monotonic_ns: u64) -> WallNanos {
        (monotonic_ns as i128 + self.offset).max(0) as WallNanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_now() {
        let clock = MonotonicToWall::sample();
        let converted = clock.to_wall(now(libc::CLOCK_MONOTONIC) as u64) as i128;
        let wall = now(libc::CLOCK_REALTIME);
        assert!(
            (wall - converted).abs() < 5_000_000,
            "{wall} vs {converted}"
        );
    }
}
