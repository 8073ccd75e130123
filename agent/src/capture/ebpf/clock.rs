//! Converts the kernel's CLOCK_MONOTONIC timestamps (`bpf_ktime_get_ns`)
//! to wall-clock nanoseconds since the Unix epoch.

use crate::stream::WallNanos;
use crate::sys::clock::{monotonic_ns, realtime_ns};

/// The offset between the two clocks, sampled once: the monotonic clock
/// does not jump, so one sample stays right until the wall clock is stepped.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicToWall {
    offset: i128,
}

impl MonotonicToWall {
    pub fn sample() -> Self {
        // Bracket the wall-clock read between two monotonic reads and use
        // their midpoint, halving the error of one unlucky preemption.
        let before = monotonic_ns();
        let wall = realtime_ns();
        let after = monotonic_ns();
        MonotonicToWall {
            offset: wall - (before + after) / 2,
        }
    }

    pub fn to_wall(self, monotonic_ns: u64) -> WallNanos {
        (monotonic_ns as i128 + self.offset).max(0) as WallNanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_now() {
        let clock = MonotonicToWall::sample();
        let converted = clock.to_wall(monotonic_ns() as u64) as i128;
        let wall = realtime_ns();
        assert!(
            (wall - converted).abs() < 5_000_000,
            "{wall} vs {converted}"
        );
    }
}
