//! Capture replay throughput: `llmtap --read` over a 100 MB capture made of
//! the checked-in fixture `tests/fixtures/pcap/ipv4.pcap` (one streamed
//! chat completion) repeated as back-to-back flows, each on its own client
//! port, so every copy is a call of its own.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

const TARGET_BYTES: usize = 100 * 1024 * 1024;
const RSS_GOAL_MB: f64 = 128.0;
/// Classic pcap, nanosecond timestamps, as tcpdump wrote the fixture.
const PCAP_NANO_MAGIC: u32 = 0xa1b2_3c4d;
const ETHERNET_HEADER: usize = 14;

struct Packet {
    time_ns: u64,
    frame: Vec<u8>,
}

pub fn run(root: &Path, llmtap: &Path, work: &Path) -> Result<String> {
    crate::apt_install(&["time"])?;
    let fixture = std::fs::read(root.join("tests/fixtures/pcap/ipv4.pcap"))?;
    let (header, packets) = parse(&fixture)?;
    let capture = work.join("replay-100MB.pcap");
    let copies = write_copies(&capture, header, &packets)?;
    let size = std::fs::metadata(&capture)?.len() as f64;

    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "max_rss_kb=%M"])
        .arg(llmtap)
        .arg("--read")
        .arg(&capture)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .context("run llmtap --read under /usr/bin/time")?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("llmtap --read failed: {log}");
    }
    let calls = log.lines().filter(|l| l.contains(" status=200 ")).count();
    ensure!(
        calls == copies,
        "{copies} calls in the capture, llmtap reported {calls}"
    );
    let rss_mb = log
        .lines()
        .find_map(|l| l.strip_prefix("max_rss_kb="))
        .and_then(|kb| kb.trim().parse::<f64>().ok())
        .context("no max RSS from /usr/bin/time")?
        / 1024.0;
    let mb = size / 1e6;
    Ok(format!(
        "## Capture replay throughput (`--read`)\n\n\
         Measured by `cargo xtask bench`: `llmtap --read` over a {mb:.0} MB capture (the fixture \
         `tests/fixtures/pcap/ipv4.pcap`, one streamed chat completion, repeated as {copies} back-to-back \
         flows on distinct client ports), metrics on, no `--print`. Every call was reported.\n\n\
         | figure | measured | goal |\n|---|---:|---:|\n\
         | throughput | {:.1} MB/s ({:.0} calls/s) | — |\n\
         | wall time | {seconds:.2} s | — |\n\
         | peak RSS | {rss_mb:.1} MB | < {RSS_GOAL_MB:.0} MB ({}) |\n",
        mb / seconds,
        copies as f64 / seconds,
        if rss_mb < RSS_GOAL_MB { "met" } else { "missed" },
    ))
}

/// The global header and the packets of a nanosecond classic pcap.
fn parse(file: &[u8]) -> Result<(&[u8], Vec<Packet>)> {
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().expect("4 bytes"));
    ensure!(
        file.len() >= 24 && u32_at(0) == PCAP_NANO_MAGIC,
        "not a little-endian nanosecond pcap"
    );
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let time_ns = u64::from(u32_at(at)) * 1_000_000_000 + u64::from(u32_at(at + 4));
        let len = u32_at(at + 8) as usize;
        let frame = file
            .get(at + 16..at + 16 + len)
            .context("truncated packet")?
            .to_vec();
        packets.push(Packet { time_ns, frame });
        at += 16 + len;
    }
    Ok((&file[..24], packets))
}

/// Writes copies of the flow until the file reaches the target size, each
/// later in time than the last and from another client port. Returns how
/// many copies were written.
fn write_copies(path: &Path, header: &[u8], packets: &[Packet]) -> Result<usize> {
    let first = packets.first().context("empty fixture")?;
    let client_port = tcp_ports(&first.frame)?.0;
    let span = packets.last().expect("not empty").time_ns - first.time_ns;
    let flow_bytes: usize = packets.iter().map(|p| 16 + p.frame.len()).sum();
    let copies = TARGET_BYTES / flow_bytes + 1;
    let mut out = Vec::with_capacity(header.len() + copies * flow_bytes);
    out.extend_from_slice(header);
    for copy in 0..copies {
        let port = 10_000 + (copy % 50_000) as u16;
        let shift = copy as u64 * (span + 1_000_000);
        for packet in packets {
            let time = packet.time_ns + shift;
            let mut frame = packet.frame.clone();
            set_client_port(&mut frame, client_port, port)?;
            out.extend_from_slice(&((time / 1_000_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((time % 1_000_000_000) as u32).to_le_bytes());
            let len = (frame.len() as u32).to_le_bytes();
            out.extend_from_slice(&len);
            out.extend_from_slice(&len);
            out.extend_from_slice(&frame);
        }
    }
    std::fs::write(path, out)?;
    Ok(copies)
}

/// Where an Ethernet/IPv4 frame's TCP header starts.
fn tcp_offset(frame: &[u8]) -> Result<usize> {
    let ip = frame.get(ETHERNET_HEADER).context("short frame")?;
    ensure!(ip >> 4 == 4, "the fixture is IPv4 over Ethernet");
    Ok(ETHERNET_HEADER + usize::from(ip & 0x0f) * 4)
}

fn tcp_ports(frame: &[u8]) -> Result<(u16, u16)> {
    let tcp = tcp_offset(frame)?;
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    Ok((port(tcp), port(tcp + 2)))
}

/// Replaces the client's port, keeping the TCP checksum right (RFC 1624).
fn set_client_port(frame: &mut [u8], from: u16, to: u16) -> Result<()> {
    let tcp = tcp_offset(frame)?;
    let (source, destination) = tcp_ports(frame)?;
    let at = if source == from {
        tcp
    } else if destination == from {
        tcp + 2
    } else {
        bail!("a packet of another flow in the fixture");
    };
    frame[at..at + 2].copy_from_slice(&to.to_be_bytes());
    let checksum = u16::from_be_bytes([frame[tcp + 16], frame[tcp + 17]]);
    let mut sum = u32::from(!checksum) + u32::from(!from) + u32::from(to);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[tcp + 16..tcp + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    Ok(())
}
