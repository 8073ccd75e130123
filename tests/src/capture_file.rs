//! Reading and writing pcap files with nanosecond times, for the tools
//! that make captures from captures (fixture variants, benchmark inputs).

use std::path::Path;

use pcap::{Capture, Linktype, Packet, PacketHeader, Precision};

/// A frame and its capture time in nanoseconds.
#[derive(Clone)]
pub struct Frame {
    pub at: u64,
    pub data: Vec<u8>,
}

/// Every frame of a capture file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Frame>> {
    let mut capture = Capture::from_file_with_precision(path, Precision::Nano)?;
    let mut frames = Vec::new();
    while let Ok(packet) = capture.next_packet() {
        let ts = packet.header.ts;
        frames.push(Frame {
            at: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_usec as u64,
            data: packet.data.to_vec(),
        });
    }
    Ok(frames)
}

/// A pcap file of `frames`, with link type `link`.
pub fn write(path: &Path, link: Linktype, frames: &[Frame]) -> anyhow::Result<()> {
    let dead = Capture::dead_with_precision(link, Precision::Nano)?;
    let mut file = dead.savefile(path)?;
    for frame in frames {
        let header = PacketHeader {
            ts: libc::timeval {
                tv_sec: (frame.at / 1_000_000_000) as _,
                tv_usec: (frame.at % 1_000_000_000) as _,
            },
            caplen: frame.data.len() as u32,
            len: frame.data.len() as u32,
        };
        file.write(&Packet::new(&header, &frame.data));
    }
    file.flush()?;
    Ok(())
}
