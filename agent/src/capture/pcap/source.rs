//! libpcap access: packets with their capture times from a pcap/pcapng
//! file or a live interface.

use std::path::Path;

use anyhow::Context;
use pcap::{Activated, Active, Capture, Offline, Precision};

use super::decode::LinkType;
use crate::stream::WallNanos;

/// What reading the next packet gave.
pub enum Next<'a> {
    /// A frame and its capture time.
    Packet(WallNanos, &'a [u8]),
    /// A live capture's read timeout passed with no packet.
    Timeout,
    /// The file has no more packets.
    End,
}

/// Losses libpcap counts for a live capture (since it started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureDrops {
    /// Dropped because the capture buffer was full.
    pub kernel: u64,
    /// Dropped by the interface or its driver.
    pub interface: u64,
}

pub struct PacketSource<T: Activated + ?Sized> {
    capture: Capture<T>,
    link: LinkType,
}

/// Frames are read whole: a cut frame cannot be decoded, so its bytes
/// would be a gap.
const SNAPLEN: i32 = 262_144;

impl PacketSource<Offline> {
    /// Opens a pcap or pcapng file; `filter` is a BPF expression (tcpdump's).
    pub fn open_file(path: &Path, filter: &str) -> anyhow::Result<Self> {
        let capture = Capture::from_file_with_precision(path, Precision::Nano)
            .map_err(pcap_error)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::new(capture, filter)
    }
}

impl PacketSource<Active> {
    /// Starts capturing on `iface`, packets matching `filter` only.
    pub fn open_live(iface: &str, filter: &str) -> anyhow::Result<Self> {
        let capture = Capture::from_device(iface)
            .and_then(|c| {
                c.snaplen(SNAPLEN)
                    .precision(Precision::Nano)
                    // Each packet as it comes: timings are ours to measure,
                    // not the buffer's to batch.
                    .immediate_mode(true)
                    .timeout(50)
                    .open()
            })
            .map_err(pcap_error)
            .with_context(|| format!("cannot capture on {iface}"))?;
        Self::new(capture, filter)
    }

    pub fn drops(&mut self) -> CaptureDrops {
        self.capture
            .stats()
            .map_or(CaptureDrops::default(), |s| CaptureDrops {
                kernel: s.dropped as u64,
                interface: s.if_dropped as u64,
            })
    }
}

impl<T: Activated + ?Sized> PacketSource<T> {
    fn new(mut capture: Capture<T>, filter: &str) -> anyhow::Result<Self> {
        let linktype = capture.get_datalink();
        let link = LinkType::from_linktype(linktype.0).with_context(|| {
            format!(
                "cannot decode link type {} ({})",
                linktype.0,
                linktype.get_name().unwrap_or_default()
            )
        })?;
        capture
            .filter(filter, true)
            .map_err(pcap_error)
            .with_context(|| format!("bad filter {filter:?}"))?;
        Ok(PacketSource { capture, link })
    }

    pub fn link(&self) -> LinkType {
        self.link
    }

    pub fn next_packet(&mut self) -> anyhow::Result<Next<'_>> {
        match self.capture.next_packet() {
            Ok(packet) => {
                let ts = packet.header.ts;
                // With nanosecond precision tv_usec holds nanoseconds.
                let at = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_usec as u64;
                Ok(Next::Packet(at, packet.data))
            }
            Err(pcap::Error::TimeoutExpired) => Ok(Next::Timeout),
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(e) => Err(pcap_error(e)).context("cannot read packets"),
        }
    }
}

/// libpcap's message, without the crate's "libpcap error: " in front.
fn pcap_error(e: pcap::Error) -> anyhow::Error {
    let text = e.to_string();
    anyhow::anyhow!("{}", text.strip_prefix("libpcap error: ").unwrap_or(&text))
}
