//! Regenerates the packet-capture fixtures in `tests/fixtures/pcap/`
//! (run as root: `cargo run -p llmtap-tests --bin pcap-fixtures`).
//!
//! Each capture is a real one: the openai Python SDK streams a chat
//! completion over plain HTTP from `mock-llm` while tcpdump records
//! loopback (`-i lo`, Ethernet); a second run listens on `[::1]`. The
//! client's own report is kept beside each capture as `NAME.client.json`.
//! Then the IPv4 capture is rewritten into the variants the tests need:
//! other link layers (802.1Q-tagged, Linux cooked v2: `-i any -y
//! LINUX_SLL2` drops packets on loopback in the kernel, so it is made by
//! rewriting instead), reordered, retransmitted (with an overlap), lossy.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use llmtap_tests::capture_file::{read, write, Frame};
use llmtap_tests::{client_env, workspace_root, ClientReport, MockServer, REAL_TIME};
use pcap::Linktype;

fn main() -> anyhow::Result<()> {
    let dir = workspace_root().join("tests/fixtures/pcap");
    std::fs::create_dir_all(&dir)?;
    record(&dir, "127.0.0.1:0", "ipv4")?;
    record(&dir, "[::1]:0", "ipv6")?;
    let base = read(&dir.join("ipv4.pcap"))?;
    let ethernet = Linktype::ETHERNET;
    let vlan: Vec<Frame> = base.iter().map(vlan_tagged).collect();
    write(&dir.join("ipv4-vlan.pcap"), ethernet, &vlan)?;
    let sll2: Vec<Frame> = base.iter().map(linux_sll2).collect();
    write(&dir.join("ipv4-sll2.pcap"), Linktype(276), &sll2)?;
    write(
        &dir.join("ipv4-reordered.pcap"),
        ethernet,
        &reordered(&base),
    )?;
    write(
        &dir.join("ipv4-retransmitted.pcap"),
        ethernet,
        &retransmitted(&base),
    )?;
    write(&dir.join("ipv4-lossy.pcap"), ethernet, &lossy(&base))?;
    std::fs::write(dir.join("ipv4.pcapng"), pcapng(1, &base))?;
    for name in [
        "ipv4-vlan",
        "ipv4-sll2",
        "ipv4-reordered",
        "ipv4-retransmitted",
        "ipv4-lossy",
    ] {
        std::fs::copy(
            dir.join("ipv4.client.json"),
            dir.join(format!("{name}.client.json")),
        )?;
    }
    println!("fixtures written to {}", dir.display());
    Ok(())
}

/// One client run against a mock server on `listen`, recorded on
/// loopback as `NAME.pcap`, with the client's report.
fn record(dir: &Path, listen: &str, name: &str) -> anyhow::Result<()> {
    let server = MockServer::start_on(
        listen,
        false,
        &[
            "--chunks",
            "8",
            "--chunk-delay-ms",
            "15",
            "--first-token-delay-ms",
            "40",
        ],
    );
    let port = server.addr.port().to_string();
    let filter = format!("tcp port {port}");
    let mut dump: Child = Command::new("tcpdump")
        .args([
            "-i",
            "lo",
            "--immediate-mode",
            "--time-stamp-precision=nano",
            "-U",
            "-w",
        ])
        .arg(dir.join(format!("{name}.pcap")))
        .arg(&filter)
        .stderr(Stdio::null())
        .spawn()?;
    // tcpdump is listening once it has written the file's header.
    std::thread::sleep(Duration::from_millis(1500));
    let report = ClientReport::new();
    let script = workspace_root().join("tests/clients/openai_stream.py");
    // At real-time priority, so that it reads each chunk as it arrives.
    let mut client = Command::new(REAL_TIME[0]);
    client
        .args(&REAL_TIME[1..])
        .arg("python3")
        .arg(script)
        .arg(server.base_url())
        .args(["--model", "gpt-fixture", "--output", &report.arg()]);
    client_env(&mut client, None);
    anyhow::ensure!(client.status()?.success(), "the client failed");
    std::thread::sleep(Duration::from_millis(500));
    // SIGINT: tcpdump flushes and closes the file.
    // SAFETY: signalling our own child, which has not been waited for.
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    dump.wait()?;
    std::fs::copy(&report.path, dir.join(format!("{name}.client.json")))?;
    Ok(())
}

/// The frames as pcapng (libpcap writes only pcap): a section header, one
/// interface with nanosecond timestamps, an enhanced packet block each.
fn pcapng(linktype: u16, frames: &[Frame]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let len = (12 + body.len().next_multiple_of(4)) as u32;
        out.extend(kind.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(body);
        out.resize(out.len() + body.len().next_multiple_of(4) - body.len(), 0);
        out.extend(len.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend(1u16.to_le_bytes());
    shb.extend(0u16.to_le_bytes());
    shb.extend((-1i64).to_le_bytes());
    block(&mut out, 0x0A0D_0D0A, &shb);
    let mut idb = linktype.to_le_bytes().to_vec();
    idb.extend([0, 0]);
    idb.extend(262_144u32.to_le_bytes());
    // if_tsresol = 9 (nanoseconds), then the end of options.
    idb.extend([9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    block(&mut out, 1, &idb);
    for frame in frames {
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend(((frame.at >> 32) as u32).to_le_bytes());
        epb.extend((frame.at as u32).to_le_bytes());
        epb.extend((frame.data.len() as u32).to_le_bytes());
        epb.extend((frame.data.len() as u32).to_le_bytes());
        epb.extend(&frame.data);
        block(&mut out, 6, &epb);
    }
    out
}

/// An 802.1Q tag (VLAN 42) after the MAC addresses.
fn vlan_tagged(frame: &Frame) -> Frame {
    let mut data = frame.data[..12].to_vec();
    data.extend([0x81, 0x00, 0x00, 42]);
    data.extend(&frame.data[12..]);
    Frame { at: frame.at, data }
}

/// The Ethernet header replaced by a Linux cooked v2 one: protocol,
/// reserved, interface index 1, ARPHRD_LOOPBACK, packet type (host),
/// address length 6, address.
fn linux_sll2(frame: &Frame) -> Frame {
    let mut data = frame.data[12..14].to_vec();
    data.extend([0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6]);
    data.extend([0; 8]);
    data.extend(&frame.data[14..]);
    Frame { at: frame.at, data }
}

/// Indices of the frames from the server (port `server`) with payload.
fn server_data(frames: &[Frame]) -> Vec<usize> {
    let server = frames
        .iter()
        .find_map(
            |f| match SlicedPacket::from_ethernet(&f.data).ok()?.transport? {
                TransportSlice::Tcp(t) if t.syn() && !t.ack() => Some(t.destination_port()),
                _ => None,
            },
        )
        .expect("a SYN");
    (0..frames.len())
        .filter(|&i| {
            matches!(SlicedPacket::from_ethernet(&frames[i].data).ok().and_then(|p| p.transport),
                Some(TransportSlice::Tcp(t)) if t.source_port() == server && !t.payload().is_empty())
        })
        .collect()
}

/// The 5th and 6th response segments (two SSE events) swapped; each
/// position keeps its time, so the 6th arrives first.
fn reordered(frames: &[Frame]) -> Vec<Frame> {
    let data = server_data(frames);
    let mut out = frames.to_vec();
    let (a, b) = (data[4], data[5]);
    out[a].data = frames[b].data.clone();
    out[b].data = frames[a].data.clone();
    out
}

/// Every response segment after the first sent twice (the copy 1 ms
/// later), and the 4th also re-sent as an overlapping segment whose
/// bytes differ: the first copy must win.
fn retransmitted(frames: &[Frame]) -> Vec<Frame> {
    let data = server_data(frames);
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        out.push(frame.clone());
        if data[1..].contains(&i) {
            out.push(Frame {
                at: frame.at + 1_000_000,
                data: frame.data.clone(),
            });
        }
        if i == data[3] {
            out.push(Frame {
                at: frame.at + 2_000_000,
                data: overlap(&frame.data),
            });
        }
    }
    out.sort_by_key(|f| f.at);
    out
}

/// The segment's bytes from its 4th on, re-sent with a garbled payload.
fn overlap(frame: &[u8]) -> Vec<u8> {
    let packet = SlicedPacket::from_ethernet(frame).expect("decodes");
    let Some(etherparse::NetSlice::Ipv4(ip)) = packet.net else {
        panic!("IPv4")
    };
    let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
        panic!("TCP")
    };
    let payload: Vec<u8> = tcp.payload()[3..].iter().map(|_| b'#').collect();
    let mut out = Vec::new();
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(ip.header().source(), ip.header().destination(), 64)
        .tcp(
            tcp.source_port(),
            tcp.destination_port(),
            tcp.sequence_number() + 3,
            512,
        )
        .ack(tcp.acknowledgment_number())
        .write(&mut out, &payload)
        .expect("builds");
    out
}

/// The 4th response segment never arrives.
fn lossy(frames: &[Frame]) -> Vec<Frame> {
    let lost = server_data(frames)[3];
    frames
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lost)
        .map(|(_, f)| f.clone())
        .collect()
}
