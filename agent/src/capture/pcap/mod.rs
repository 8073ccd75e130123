//! Packet capture: TCP traffic read from libpcap instead of from
//! processes, from a capture file ([`file::FileSource`], `--read`) or a live
//! interface ([`live::LiveSource`], `--capture pcap`).
//!
//! `libpcap` reads frames, `decode` turns a frame into a TCP segment, `tcp`
//! reassembles segments into the per-connection [`ConnectionEvent`]s the
//! eBPF path also ends in, so `http`, `calls` and the exporters are shared.
//! Packets name no process: connections have pid [`tcp::NO_PID`] (0), no
//! comm and no fd, and are seen from the client (its bytes are egress).
//! Only plaintext can be read this way.

pub mod decode;
pub mod file;
pub mod libpcap;
pub mod live;
pub mod tcp;

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{CaptureReport, PacketReport};
use crate::stream::{ConnectionEvent, ConnectionId, StreamEvent, WallNanos};
use decode::{decode, LinkType};
use libpcap::CaptureDrops;
use tcp::{AbandonReason, TcpLimits, TcpReassembler, TcpStats};

/// How often (in packet time) held holes and idle flows are looked at.
const TICK_NS: u64 = 1_000_000_000;

/// Frames in, connection events out: decoding, TCP reassembly, and the
/// dropping of flows that turn out to be TLS.
pub struct PacketStage {
    link: LinkType,
    tcp: TcpReassembler,
    /// Connections whose first bytes are yet to be seen, and their server.
    unscreened: HashMap<ConnectionId, Option<SocketAddr>>,
    last_tick: WallNanos,
    packets_seen: u64,
}

impl PacketStage {
    /// A stage for frames of `link`, reassembled within `limits`.
    pub fn new(link: LinkType, limits: TcpLimits) -> Self {
        PacketStage {
            link,
            tcp: TcpReassembler::new(limits),
            unscreened: HashMap::new(),
            last_tick: 0,
            packets_seen: 0,
        }
    }

    /// Frames pushed so far.
    pub fn packets_seen(&self) -> u64 {
        self.packets_seen
    }

    /// The TCP reassembly's running totals.
    pub fn tcp_stats(&self) -> &TcpStats {
        self.tcp.stats()
    }

    /// Flows followed now.
    pub fn open_flows(&self) -> usize {
        self.tcp.open_flows()
    }

    /// Feeds one frame captured at `at`; appends the events it causes.
    pub fn push(&mut self, at: WallNanos, frame: &[u8], out: &mut Vec<ConnectionEvent>) {
        self.packets_seen += 1;
        if let Some(segment) = decode(self.link, frame) {
            let from = out.len();
            self.tcp.push(&segment, at, out);
            self.screen(from, at, out);
        }
        if at >= self.last_tick + TICK_NS {
            self.tick(at, out);
        }
    }

    /// Skips holes that waited too long and ends idle flows, as of `now`.
    pub fn tick(&mut self, now: WallNanos, out: &mut Vec<ConnectionEvent>) {
        let from = out.len();
        self.tcp.tick(now, out);
        self.screen(from, now, out);
        self.last_tick = now;
    }

    /// Ends every flow: the capture is over.
    pub fn finish(&mut self, at: WallNanos, out: &mut Vec<ConnectionEvent>) {
        let from = out.len();
        self.tcp.close_all(at, out);
        self.screen(from, at, out);
    }

    /// What the stage saw and gave up, with the losses before it.
    pub fn report(&self, drops: CaptureDrops) -> CaptureReport {
        let abandoned = &self.tcp_stats().abandoned;
        CaptureReport {
            open_streams: self.open_flows(),
            packets: Some(PacketReport {
                seen: self.packets_seen,
                dropped_by_kernel: drops.kernel,
                dropped_by_interface: drops.interface,
                dropped_by_agent: drops.agent,
                abandoned: AbandonReason::ALL
                    .iter()
                    .map(|r| (r.as_str(), abandoned.get(r).copied().unwrap_or(0)))
                    .collect(),
            }),
            ..CaptureReport::default()
        }
    }

    /// Looks at the first bytes of each new connection among `out[from..]`:
    /// a TLS record there means nothing in the flow can be read, so it is
    /// dropped (its first chunk too) and said once.
    fn screen(&mut self, from: usize, at: WallNanos, out: &mut Vec<ConnectionEvent>) {
        let events: Vec<ConnectionEvent> = out.drain(from..).collect();
        let mut dropped = Vec::new();
        for (id, event) in events {
            if dropped.contains(&id) {
                continue;
            }
            match &event {
                StreamEvent::Opened(info) => {
                    self.unscreened.insert(id, info.peer);
                }
                StreamEvent::Data(chunk) => {
                    let first = self.unscreened.remove(&id);
                    if let Some(server) = first.filter(|_| is_tls_record(&chunk.bytes)) {
                        let server = server.map_or("?".into(), |s| s.to_string());
                        tracing::warn!(
                            "the connection to {server} is TLS: its contents cannot be read from \
                             packets (the eBPF capture, the default, sees TLS); dropping it"
                        );
                        self.tcp.abandon(id, AbandonReason::Tls, at, out);
                        dropped.push(id);
                        continue;
                    }
                }
                StreamEvent::Closed { .. } => {
                    self.unscreened.remove(&id);
                }
            }
            out.push((id, event));
        }
    }
}

/// A TLS record header: handshake (22) or alert (21), version 3.x.
fn is_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [21 | 22, 3, 0..=4, ..])
}
