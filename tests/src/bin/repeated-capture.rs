//! Makes a large capture for `cargo xtask bench`: one Ethernet/IPv4 TCP
//! flow of a capture file (a fixture) repeated back to back, each copy
//! later in time than the last and from its own client port, so every copy
//! is a connection of its own.
//!
//! `repeated-capture FLOW.pcap OUT.pcap MIN_BYTES` writes OUT.pcap and
//! prints how many copies it holds.

use std::path::PathBuf;

use anyhow::{ensure, Context};
use clap::Parser;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use llmtap_tests::capture_file::{read, write, Frame};
use pcap::Linktype;

#[derive(Parser)]
struct Args {
    /// A capture of one TCP flow over Ethernet and IPv4.
    flow: PathBuf,
    /// Where to write the repeated capture.
    out: PathBuf,
    /// Copies are added until the frames hold at least this many bytes.
    min_bytes: usize,
}

/// Space between one copy's last packet and the next copy's first.
const PAUSE_NS: u64 = 1_000_000;
/// pcap's per-packet record header.
const RECORD_HEADER: usize = 16;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let flow = read(&args.flow)?;
    let first = flow.first().context("an empty capture")?;
    let client_port = match tcp(&first.data)?.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp.source_port(),
        _ => unreachable!("tcp() checked"),
    };
    let span = flow.last().expect("not empty").at - first.at;
    let copy_bytes: usize = flow.iter().map(|f| RECORD_HEADER + f.data.len()).sum();
    let copies = args.min_bytes.div_ceil(copy_bytes);
    let mut frames = Vec::with_capacity(copies * flow.len());
    for copy in 0..copies {
        let port = 10_000 + (copy % 50_000) as u16;
        let shift = copy as u64 * (span + PAUSE_NS);
        for frame in &flow {
            frames.push(Frame {
                at: frame.at + shift,
                data: with_client_port(&frame.data, client_port, port)?,
            });
        }
    }
    write(&args.out, Linktype::ETHERNET, &frames)?;
    println!("{copies}");
    Ok(())
}

/// The frame decoded down to its TCP segment, or why it is not one.
fn tcp(frame: &[u8]) -> anyhow::Result<SlicedPacket<'_>> {
    let packet = SlicedPacket::from_ethernet(frame)?;
    ensure!(
        matches!(packet.net, Some(NetSlice::Ipv4(_)))
            && matches!(packet.transport, Some(TransportSlice::Tcp(_))),
        "not TCP over IPv4"
    );
    Ok(packet)
}

/// The frame with the client's port `from` replaced by `to`, and the TCP
/// checksum computed anew.
fn with_client_port(frame: &[u8], from: u16, to: u16) -> anyhow::Result<Vec<u8>> {
    let packet = tcp(frame)?;
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(segment))) =
        (&packet.net, &packet.transport)
    else {
        unreachable!("tcp() checked");
    };
    let mut header = segment.to_header();
    if header.source_port == from {
        header.source_port = to;
    } else {
        ensure!(header.destination_port == from, "a packet of another flow");
        header.destination_port = to;
    }
    header.checksum = header.calc_checksum_ipv4(&ip.header().to_header(), segment.payload())?;
    let at = segment.slice().as_ptr() as usize - frame.as_ptr() as usize;
    let mut out = frame.to_vec();
    out[at..at + header.header_len()].copy_from_slice(&header.to_bytes());
    Ok(out)
}
