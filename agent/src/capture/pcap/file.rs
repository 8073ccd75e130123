//! A capture file (pcap or pcapng) replayed as fast as it reads: the
//! [`CaptureSource`] of `--read`.

use std::path::Path;

use super::libpcap::{Next, PacketFilter, PcapReader};
use super::tcp::TcpLimits;
use super::PacketStage;
use crate::capture::{CaptureReport, CaptureSource};
use crate::stream::{ConnectionEvent, WallNanos};

/// Packets read per [`CaptureSource::read`]: enough that the run loop's
/// turn costs nothing beside them, few enough that a tick or a signal
/// never waits long.
const PACKETS_PER_READ: usize = 1024;

/// A capture file being replayed.
pub struct FileSource {
    reader: PcapReader<pcap::Offline>,
    stage: PacketStage,
    /// The latest packet time: where what the file ends in the middle of
    /// is cut.
    last: WallNanos,
}

impl FileSource {
    /// Opens `path`, reading only packets that match `filter`.
    pub fn open(path: &Path, filter: &PacketFilter) -> anyhow::Result<Self> {
        let reader = PcapReader::open_file(path, filter)?;
        let stage = PacketStage::new(reader.link(), TcpLimits::default());
        Ok(FileSource {
            reader,
            stage,
            last: 0,
        })
    }
}

impl CaptureSource for FileSource {
    async fn read(&mut self, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<bool> {
        for _ in 0..PACKETS_PER_READ {
            match self.reader.next_packet()? {
                Next::Packet(at, frame) => {
                    self.last = self.last.max(at);
                    self.stage.push(at, frame, out);
                }
                Next::End => return Ok(false),
                Next::Idle => {}
            }
        }
        // Let the run loop's other branches have their turn.
        tokio::task::yield_now().await;
        Ok(true)
    }

    /// A file's time is its packets', not the wall clock's: the stage
    /// ticks on packet time by itself.
    fn tick(&mut self, _now: WallNanos, _out: &mut Vec<ConnectionEvent>) -> anyhow::Result<bool> {
        Ok(true)
    }

    async fn stop(&mut self, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<()> {
        self.stage.finish(self.last, out);
        tracing::info!(
            packets = self.stage.packets_seen(),
            flows = self.stage.tcp_stats().flows_opened,
            bytes_skipped = self.stage.tcp_stats().bytes_skipped,
            "replayed"
        );
        Ok(())
    }

    fn report(&mut self) -> CaptureReport {
        self.stage.report(Default::default())
    }
}
