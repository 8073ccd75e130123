//! Reads the kernel side's ring buffer on the async runtime, decoding each
//! record into a [`KernelEvent`].

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::clock::MonotonicToWall;
use super::records::{self, KernelEvent};
use crate::sys;

/// How often the reader looks for records the kernel did not wake it for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The ring buffer, ready to be awaited.
pub struct RingReader {
    ring: AsyncFd<RingBuf<MapData>>,
    clock: MonotonicToWall,
}

impl RingReader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        Ok(RingReader {
            ring: sys::bpf::awaitable_ring(ring)?,
            clock: MonotonicToWall::sample(),
        })
    }

    /// Waits for records (or at most [`POLL_INTERVAL`]), then decodes all
    /// that are ready into `out`. Returns how many could not be decoded.
    pub async fn read_batch(&mut self, out: &mut Vec<KernelEvent>) -> std::io::Result<u64> {
        match tokio::time::timeout(POLL_INTERVAL, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                let malformed = drain(guard.get_inner_mut(), &self.clock, out);
                guard.clear_ready();
                Ok(malformed)
            }
            // The kernel side wakes us only when records pile up.
            Err(_elapsed) => Ok(drain(self.ring.get_mut(), &self.clock, out)),
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, clock: &MonotonicToWall, out: &mut Vec<KernelEvent>) -> u64 {
    let mut malformed = 0;
    while let Some(item) = ring.next() {
        match records::decode(&item, clock) {
            Ok(event) => out.push(event),
            Err(err) => {
                malformed += 1;
                tracing::debug!("dropping a malformed ring-buffer record: {err}");
            }
        }
    }
    malformed
}
