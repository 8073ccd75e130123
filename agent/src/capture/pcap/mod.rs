//! Packet capture: TCP traffic read from libpcap (a live interface or a
//! pcap/pcapng file) instead of from processes.
//!
//! `decode` turns a frame into a TCP segment, `tcp` reassembles segments
//! into the per-connection [`crate::stream::StreamEvent`]s the eBPF path
//! also ends in, so `http`, `calls` and the exporters are shared. Packets
//! name no process: connections have pid [`tcp::NO_PID`] (0), no comm and
//! no fd, and are seen from the client (its bytes are egress). Only
//! plaintext can be read this way.

pub mod decode;
pub mod tcp;
