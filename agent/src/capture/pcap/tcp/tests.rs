use super::*;
use crate::capture::pcap::decode::{decode, LinkType};
use etherparse::PacketBuilder;

const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 80);

#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
}
const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};

/// An Ethernet frame from the client (or the server) built by etherparse.
fn frame(from_client: bool, seq: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = if from_client {
        (CLIENT, SERVER)
    } else {
        (SERVER, CLIENT)
    };
    let mut builder = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 1024);
    if flags.syn {
        builder = builder.syn();
    }
    if flags.ack {
        builder = builder.ack(1);
    }
    if flags.fin {
        builder = builder.fin();
    }
    if flags.rst {
        builder = builder.rst();
    }
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

struct Run {
    tcp: TcpReassembler,
    out: Vec<ConnectionEvent>,
    at: WallNanos,
}

impl Run {
    fn new() -> Self {
        Self::with(TcpLimits::default())
    }
    fn with(limits: TcpLimits) -> Self {
        Run {
            tcp: TcpReassembler::new(limits),
            out: Vec::new(),
            at: 1_000,
        }
    }
    fn packet(&mut self, from_client: bool, seq: u32, flags: Flags, payload: &[u8]) {
        self.at += 10;
        let frame = frame(from_client, seq, flags, payload);
        let segment = decode(LinkType::Ethernet, &frame).unwrap();
        self.tcp.push(&segment, self.at, &mut self.out);
    }
    /// A handshake with the client's ISN `c` and the server's `s`.
    fn handshake(&mut self, c: u32, s: u32) {
        let syn = Flags {
            syn: true,
            ..Flags::default()
        };
        self.packet(true, c, syn, b"");
        self.packet(false, s, Flags { ack: true, ..syn }, b"");
        self.packet(true, c.wrapping_add(1), ACK, b"");
    }
    /// Each direction's bytes with their gaps: (direction, gap, bytes).
    fn chunks(&self) -> Vec<(Direction, u64, String)> {
        self.out
            .iter()
            .filter_map(|(_, e)| match e {
                StreamEvent::Data(c) => Some((
                    c.direction,
                    c.gap_before,
                    String::from_utf8(c.bytes.clone()).unwrap(),
                )),
                _ => None,
            })
            .collect()
    }
    fn egress(&self) -> String {
        self.chunks()
            .into_iter()
            .filter(|c| c.0 == Direction::Egress)
            .map(|c| c.2)
            .collect()
    }
    fn closed(&self) -> Vec<CloseReason> {
        self.out
            .iter()
            .filter_map(|(_, e)| match e {
                StreamEvent::Closed { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn handshake_decides_the_client_and_both_fins_close() {
    let mut run = Run::new();
    run.handshake(100, 900);
    run.packet(true, 101, ACK, b"GET / HTTP/1.1\r\n\r\n");
    run.packet(false, 901, ACK, b"HTTP/1.1 200 OK\r\n");
    run.packet(true, 119, Flags { fin: true, ..ACK }, b"");
    assert!(run.closed().is_empty());
    run.packet(false, 918, Flags { fin: true, ..ACK }, b"");
    run.packet(true, 120, ACK, b"");
    let StreamEvent::Opened(info) = &run.out[0].1 else {
        panic!()
    };
    assert_eq!(info.side, Side::Client);
    assert_eq!(info.pid, NO_PID);
    assert_eq!(info.local, Some("10.0.0.1:40000".parse().unwrap()));
    assert_eq!(
        run.chunks(),
        [
            (Direction::Egress, 0, "GET / HTTP/1.1\r\n\r\n".into()),
            (Direction::Ingress, 0, "HTTP/1.1 200 OK\r\n".into())
        ]
    );
    assert_eq!(run.closed(), [CloseReason::Closed]);
    assert_eq!(run.tcp.open_flows(), 0, "the last ACK opens nothing");
}

#[test]
fn out_of_order_segments_wait_for_the_hole() {
    let mut run = Run::new();
    run.handshake(100, 900);
    run.packet(true, 105, ACK, b"efgh");
    run.packet(true, 109, ACK, b"ijk");
    assert_eq!(run.egress(), "");
    run.packet(true, 101, ACK, b"abcd");
    assert_eq!(run.egress(), "abcdefghijk");
    let times: Vec<(u64, u64)> = run
        .out
        .iter()
        .filter_map(|(_, e)| match e {
            StreamEvent::Data(c) => Some((c.call_start, c.call_end)),
            _ => None,
        })
        .collect();
    // Sent at their own times, readable when the hole was filled.
    assert_eq!(times, [(1060, 1060), (1040, 1060), (1050, 1060)]);
}

#[test]
fn retransmissions_and_overlaps_keep_the_first_copy() {
    let mut run = Run::new();
    run.handshake(100, 900);
    run.packet(true, 101, ACK, b"abcd");
    run.packet(true, 101, ACK, b"abcd");
    run.packet(true, 103, ACK, b"XXef");
    // Overlaps in the buffer: the first copy of each byte wins there too.
    run.packet(true, 109, ACK, b"ij");
    run.packet(true, 108, ACK, b"YZZk");
    run.packet(true, 107, ACK, b"g");
    assert_eq!(run.egress(), "abcdefgYijk");
    assert_eq!(run.tcp.stats().duplicate_segments, 1);
}

#[test]
fn sequence_numbers_wrap() {
    let mut run = Run::new();
    run.handshake(u32::MAX - 2, 5);
    run.packet(true, u32::MAX - 1, ACK, b"ab");
    run.packet(true, 1, ACK, b"de");
    run.packet(true, 0, ACK, b"c");
    assert_eq!(run.egress(), "abcde");
}

#[test]
fn a_hole_never_filled_is_skipped_as_a_gap() {
    let mut run = Run::new();
    run.handshake(100, 900);
    run.packet(true, 101, ACK, b"ab");
    run.packet(true, 106, ACK, b"fg");
    run.tcp.tick(run.at + 500_000_000, &mut run.out);
    assert_eq!(run.egress(), "ab", "still waiting for a retransmission");
    run.tcp.tick(run.at + 2_000_000_000, &mut run.out);
    assert_eq!(
        run.chunks(),
        [
            (Direction::Egress, 0, "ab".into()),
            (Direction::Egress, 3, "fg".into())
        ]
    );
    assert_eq!(run.tcp.stats().bytes_skipped, 3);
}

#[test]
fn an_overflowing_buffer_skips_ahead() {
    let mut run = Run::with(TcpLimits {
        max_buffered: 4,
        ..TcpLimits::default()
    });
    run.handshake(100, 900);
    run.packet(true, 103, ACK, b"cde");
    run.packet(true, 106, ACK, b"fg");
    assert_eq!(
        run.chunks(),
        [
            (Direction::Egress, 2, "cde".into()),
            (Direction::Egress, 0, "fg".into())
        ]
    );
}

#[test]
fn lost_tail_is_a_gap_at_the_close() {
    let mut run = Run::new();
    run.handshake(100, 900);
    run.packet(false, 901, ACK, b"HTTP");
    // 4 bytes from 905 never arrive.
    run.packet(false, 909, Flags { fin: true, ..ACK }, b"");
    run.packet(true, 101, Flags { fin: true, ..ACK }, b"");
    assert!(run.closed().is_empty());
    run.tcp.tick(run.at + 2_000_000_000, &mut run.out);
    assert_eq!(
        run.chunks(),
        [
            (Direction::Ingress, 0, "HTTP".into()),
            (Direction::Ingress, 4, "".into())
        ]
    );
    assert_eq!(run.closed(), [CloseReason::Closed]);
}

#[test]
fn rst_resets_and_flushes_with_gaps() {
    let mut run = Run::new();
    run.handshake(100, 900);
    run.packet(true, 104, ACK, b"de");
    run.packet(false, 901, Flags { rst: true, ..ACK }, b"");
    assert_eq!(run.chunks(), [(Direction::Egress, 3, "de".into())]);
    assert_eq!(run.closed(), [CloseReason::Reset]);
}

#[test]
fn mid_stream_flows_are_picked_up_with_side_unknown() {
    let mut run = Run::new();
    run.packet(false, 5000, ACK, b"data: x\n\n");
    run.packet(true, 77, ACK, b"");
    run.packet(false, 5009, ACK, b"data: y\n\n");
    let StreamEvent::Opened(info) = &run.out[0].1 else {
        panic!()
    };
    assert_eq!(info.side, Side::Unknown);
    assert_eq!(run.chunks().len(), 2);
}

#[test]
fn a_new_syn_on_the_same_ports_is_a_new_connection() {
    let mut run = Run::new();
    run.handshake(100, 900);
    run.packet(true, 101, ACK, b"a");
    run.handshake(5000, 7000);
    run.packet(true, 5001, ACK, b"b");
    let ids: Vec<u64> = run.out.iter().map(|(id, _)| id.0).collect();
    assert_eq!(ids, [0, 0, 0, 1, 1]);
    assert_eq!(run.closed(), [CloseReason::Closed]);
}

#[test]
fn abandoned_flows_stay_silent_and_are_counted() {
    let mut run = Run::new();
    run.handshake(100, 900);
    run.packet(true, 101, ACK, b"\x16\x03\x01");
    run.tcp
        .abandon(ConnectionId(0), AbandonReason::Tls, run.at, &mut run.out);
    run.packet(true, 104, ACK, b"more");
    assert_eq!(run.egress(), "\x16\x03\x01");
    assert_eq!(run.closed(), [CloseReason::Evicted]);
    assert_eq!(run.tcp.stats().abandoned[&AbandonReason::Tls], 1);
    run.tcp.tick(run.at + 400 * 1_000_000_000, &mut run.out);
    assert_eq!(run.tcp.open_flows(), 0);
    assert_eq!(run.closed().len(), 1, "closed once");
    assert!(!run.tcp.stats().abandoned.contains_key(&AbandonReason::Idle));
}
