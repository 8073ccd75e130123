//! libpcap access: packets with their capture times from a pcap/pcapng
//! file or a live interface, read through a BPF filter.

use std::path::Path;

use anyhow::Context;
use pcap::{Activated, Active, Capture, Offline, Precision};

use super::decode::LinkType;
use crate::stream::WallNanos;

/// What reading the next packet gave.
pub enum Next<'a> {
    /// A frame and its capture time.
    Packet(WallNanos, &'a [u8]),
    /// The file has no more packets, or a live capture was broken off.
    End,
    /// A live capture's wait ended with no packet (libpcap's read timeout,
    /// or a signal woke it): nothing is wrong, read again.
    Idle,
}

/// Frames a live capture lost (since it started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureDrops {
    /// Dropped because the capture buffer was full (libpcap's count).
    pub kernel: u64,
    /// Dropped by the interface or its driver (libpcap's count).
    pub interface: u64,
    /// Not queued to the pipeline: the agent fell behind.
    pub agent: u64,
}

/// Which packets to read: `--filter` and `--port`.
#[derive(Clone, Debug, Default)]
pub struct PacketFilter {
    /// A BPF expression (tcpdump's syntax).
    pub expression: Option<String>,
    /// Only traffic to or from this TCP port.
    pub port: Option<u16>,
}

impl PacketFilter {
    /// The BPF program's source for a link type. On Ethernet a plain `tcp`
    /// misses 802.1Q-tagged frames, so the test is also made behind a tag
    /// (`vlan` shifts the offsets of what follows it, so it comes last);
    /// libpcap knows no tags on other link types.
    pub fn for_link(&self, link: LinkType) -> String {
        let tcp = match self.port {
            Some(port) => format!("tcp port {port}"),
            None => "tcp".to_string(),
        };
        let tcp = match link {
            LinkType::Ethernet => format!("{tcp} or (vlan and {tcp})"),
            _ => tcp,
        };
        match &self.expression {
            Some(expression) => format!("({expression}) and ({tcp})"),
            None => tcp,
        }
    }
}

/// An open capture file or interface.
pub struct PcapReader<T: Activated + ?Sized> {
    capture: Capture<T>,
    link: LinkType,
    filter: String,
}

/// Frames are read whole: a cut frame cannot be decoded, so its bytes
/// would be a gap.
const SNAPLEN: i32 = 262_144;

/// The kernel's capture ring. In immediate mode each slot holds one frame
/// of the largest size the interface can carry (64 KiB on `lo`, or with
/// GRO): libpcap's 2 MiB default is some 30 slots, which a moment's delay
/// in reading overflows.
const RING_BYTES: i32 = 32 << 20;

impl PcapReader<Offline> {
    /// Opens a pcap or pcapng file; `filter` is a BPF expression (tcpdump's).
    pub fn open_file(path: &Path, filter: &PacketFilter) -> anyhow::Result<Self> {
        let capture = Capture::from_file_with_precision(path, Precision::Nano)
            .map_err(pcap_error)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::new(capture, filter)
    }
}

impl PcapReader<Active> {
    /// Starts capturing on `iface`, packets matching `filter` only.
    pub fn open_live(iface: &str, filter: &PacketFilter) -> anyhow::Result<Self> {
        let capture = Capture::from_device(iface)
            .and_then(|c| {
                c.snaplen(SNAPLEN)
                    .precision(Precision::Nano)
                    // Each packet as it comes: timings are ours to measure,
                    // not the buffer's to batch.
                    .immediate_mode(true)
                    .buffer_size(RING_BYTES)
                    .open()
            })
            .map_err(pcap_error)
            .with_context(|| format!("cannot capture on {iface}"))?;
        Self::new(capture, filter)
    }

    /// A handle that makes a blocked [`PcapReader::next_packet`] return
    /// (libpcap waits for a packet however long, whatever its timeout).
    pub fn breaker(&mut self) -> pcap::BreakLoop {
        self.capture.breakloop_handle()
    }

    /// Frames lost so far, as libpcap counts them.
    pub fn drops(&mut self) -> CaptureDrops {
        self.capture
            .stats()
            .map_or(CaptureDrops::default(), |s| CaptureDrops {
                kernel: s.dropped as u64,
                interface: s.if_dropped as u64,
                agent: 0,
            })
    }
}

impl<T: Activated + ?Sized> PcapReader<T> {
    fn new(mut capture: Capture<T>, filter: &PacketFilter) -> anyhow::Result<Self> {
        let linktype = capture.get_datalink();
        let link = LinkType::from_linktype(linktype.0).with_context(|| {
            format!(
                "cannot decode link type {} ({})",
                linktype.0,
                linktype.get_name().unwrap_or_default()
            )
        })?;
        let filter = filter.for_link(link);
        capture
            .filter(&filter, true)
            .map_err(pcap_error)
            .with_context(|| format!("bad filter {filter:?}"))?;
        Ok(PcapReader {
            capture,
            link,
            filter,
        })
    }

    /// The BPF filter in force.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// What its frames start with.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// The next frame and its capture time.
    pub fn next_packet(&mut self) -> anyhow::Result<Next<'_>> {
        match self.capture.next_packet() {
            Ok(packet) => {
                let ts = packet.header.ts;
                // With nanosecond precision tv_usec holds nanoseconds.
                let at = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_usec as u64;
                Ok(Next::Packet(at, packet.data))
            }
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(pcap::Error::TimeoutExpired) => Ok(Next::Idle),
            Err(e) => Err(pcap_error(e)).context("cannot read packets"),
        }
    }
}

/// libpcap's message, without the crate's "libpcap error: " in front.
fn pcap_error(e: pcap::Error) -> anyhow::Error {
    let text = e.to_string();
    anyhow::anyhow!("{}", text.strip_prefix("libpcap error: ").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_tagged_ethernet_frames_too() {
        let all = PacketFilter::default();
        assert_eq!(all.for_link(LinkType::Ethernet), "tcp or (vlan and tcp)");
        assert_eq!(all.for_link(LinkType::LinuxSll2), "tcp");
        let narrow = PacketFilter {
            expression: Some("host 10.0.0.1".into()),
            port: Some(80),
        };
        assert_eq!(
            narrow.for_link(LinkType::Ethernet),
            "(host 10.0.0.1) and (tcp port 80 or (vlan and tcp port 80))"
        );
    }
}
