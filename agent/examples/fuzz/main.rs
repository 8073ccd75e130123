//! A coverage-less mutation fuzzer for the reconstruction stages, on stable
//! Rust (cargo-fuzz needs nightly).
//!
//! It mutates the golden fixtures (bit flips, splices, framing tokens,
//! huge numbers), cuts them at random, feeds one stage, and catches panics.
//!
//! ```text
//! cargo run --release -p llmtap --example fuzz -- <http|http2|sse|providers|calls|tcp> <seconds> [seed]
//! ```
//!
//! `tcp` fuzzes packet decoding and TCP reassembly on the frames of the
//! pcap fixtures (`tests/fixtures/pcap/`): frames reordered, duplicated,
//! dropped, mutated and cut, times jumbled, under small random limits;
//! besides panics it checks that each connection opens first, closes
//! once and last.
//!
//! Each execution draws from its own seed; a crash's seed is written to
//! `target/fuzz-crashes/` and replays alone, panic and all, with
//! `fuzz -- <target> replay <seed>`. The exit status is non-zero on crashes.

#[path = "../../tests/common/mod.rs"]
mod common;
mod targets;

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use llmtap::calls::{CallTracker, Limits};
use llmtap::capture::pcap::decode::LinkType;
use llmtap::capture::pcap::libpcap::{Next, PacketFilter, PcapReader};
use llmtap::capture::pcap::tcp::TcpLimits;
use llmtap::capture::pcap::PacketStage;
use llmtap::http::{ChunkTime, ExchangeEvent, Framer, HttpConnection, HttpEvent, HttpLimits};
use llmtap::http2::{Http2Connection, PREFACE};
use llmtap::providers::{Api, PROVIDERS};
use llmtap::sse::{Frame, NdjsonParser, SseParser};
use llmtap::stream::{CloseReason, ConnectionId, DataChunk, Direction, Side, StreamEvent};

/// Byte strings that matter to the parsers, spliced in by mutations.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n\n",
    b"\r\n\r\n",
    b"\r",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"Content-Length: 18446744073709551616\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Encoding: gzip\r\n",
    b"Content-Encoding: br\r\n",
    b"Content-Encoding: zstd\r\n",
    b"Content-Type: text/event-stream\r\n",
    b"Content-Type: application/x-ndjson\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 500 Oops\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\n",
    b"HEAD / HTTP/1.1\r\n\r\n",
    b"data: ",
    b"data: [DONE]\n\n",
    b"event: error\n",
    b"retry: 99999999999999999999\n",
    b"id: \0\n",
    b":\n",
    b"\xEF\xBB\xBF",
    b"\xF0\x9F\x98",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-1",
    b"1e400",
    b"18446744073709551616",
    b"{}",
    b"[]",
    b"{\"error\":\"x\"}",
    b"\"",
    b"{",
    b"]",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    // HTTP/2: the preface, frames (SETTINGS with a huge table size,
    // RST_STREAM, CONTINUATION, padded HEADERS with priority, padded DATA,
    // PUSH_PROMISE, GOAWAY), and HPACK pieces (a huge table size update,
    // an index past both tables, bad Huffman, static indexes, a new name).
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\0\0\0\x04\0\0\0\0\0",
    b"\0\0\x06\x04\0\0\0\0\0\0\x01\xff\xff\xff\xff",
    b"\0\0\x04\x03\0\0\0\0\x01\0\0\0\x08",
    b"\0\0\x01\x09\x04\0\0\0\x01\x82",
    b"\0\0\x08\x01\x2d\0\0\0\x03\x01\0\0\0\x01\x10\x82\0",
    b"\0\0\x04\0\x09\0\0\0\x01\x02x\0\0",
    b"\0\0\x05\x05\x04\0\0\0\x01\0\0\0\x02\x82",
    b"\0\0\x08\x07\0\0\0\0\0\0\0\0\x01\0\0\0\0",
    b"\x3f\xe1\xff\xff\x0f",
    b"\xff\xff\xff\xff\x0f",
    b"\x40\x85\xff\xff\xff\xff\xff",
    b"\x82\x86\x84",
    b"\x40\x01a\x01b",
];

/// xorshift64*: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(8) {
        let len = data.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 if len > 0 => data[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => data[at.min(len - 1)] = rng.next() as u8,
            2 => data.insert(at, rng.next() as u8),
            3 => {
                let end = (at + rng.below(32)).min(len);
                data.drain(at..end);
            }
            4 => {
                let end = (at + rng.below(64)).min(len);
                let copy = data[at..end].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, copy);
            }
            5 | 6 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            _ => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(256)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
}

/// Cuts `data` at random points.
fn cuts<'a>(rng: &mut Rng, data: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = if rng.chance(4) {
            rest.len()
        } else {
            1 + rng.below(rest.len().min(300))
        };
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// The fixtures' events, and every data chunk's bytes as the corpus.
struct Seeds {
    connections: Vec<Vec<StreamEvent>>,
    /// The fixtures that open with HTTP/2's preface.
    http2: Vec<Vec<StreamEvent>>,
    corpus: Vec<Vec<u8>>,
    /// Each fixture's ingress bytes (responses, mostly), for SSE.
    bodies: Vec<Vec<u8>>,
    /// SSE/NDJSON frame payloads found in the fixtures.
    frames: Vec<Vec<u8>>,
    /// Each pcap fixture's link type and timed frames.
    captures: Vec<Capture>,
}

/// A capture's link type and its frames with their times.
type Capture = (LinkType, Vec<(u64, Vec<u8>)>);

/// The frames of every pcap fixture.
fn captures() -> Vec<Capture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pcap");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/pcap")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let mut source = PcapReader::open_file(path, &PacketFilter::default()).expect("opens");
            let mut frames = Vec::new();
            while let Ok(Next::Packet(at, frame)) = source.next_packet() {
                frames.push((at, frame.to_vec()));
            }
            (source.link(), frames)
        })
        .collect()
}

fn seeds() -> Seeds {
    let connections: Vec<_> = common::fixtures().into_iter().map(|f| f.events).collect();
    let mut corpus = Vec::new();
    let mut bodies = Vec::new();
    let mut frames = Vec::new();
    for events in &connections {
        let mut ingress = Vec::new();
        for event in events {
            if let StreamEvent::Data(chunk) = event {
                corpus.push(chunk.bytes.clone());
                if chunk.direction == Direction::Ingress {
                    ingress.extend_from_slice(&chunk.bytes);
                }
            }
        }
        SseParser::new(1 << 20).feed(&ingress, &mut |f| frames.push(f.data.to_vec()));
        bodies.push(ingress);
    }
    let opens_h2 = |events: &&Vec<StreamEvent>| {
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::Data(c) if c.bytes.starts_with(PREFACE)))
    };
    let http2 = connections.iter().filter(opens_h2).cloned().collect();
    Seeds {
        connections,
        http2,
        corpus,
        bodies,
        frames,
        captures: captures(),
    }
}

/// One of `connections`, mutated and cut anew.
fn mutated_events(
    rng: &mut Rng,
    connections: &[Vec<StreamEvent>],
    seeds: &Seeds,
) -> Vec<StreamEvent> {
    let events = &connections[rng.below(connections.len())];
    let mut out = Vec::new();
    for event in events {
        match event {
            StreamEvent::Data(chunk) => {
                let mut bytes = chunk.bytes.clone();
                if rng.chance(6) {
                    mutate(rng, &mut bytes, &seeds.corpus);
                }
                for piece in cuts(rng, &bytes) {
                    let mut direction = chunk.direction;
                    if rng.chance(200) {
                        direction = match direction {
                            Direction::Egress => Direction::Ingress,
                            Direction::Ingress => Direction::Egress,
                        };
                    }
                    out.push(StreamEvent::Data(DataChunk {
                        tid: None,
                        direction,
                        call_start: chunk.call_start,
                        call_end: chunk.call_end,
                        gap_before: if rng.chance(100) {
                            rng.below(64) as u64
                        } else {
                            0
                        },
                        bytes: piece.to_vec(),
                    }));
                }
            }
            StreamEvent::Opened(info) => {
                let mut info = info.clone();
                if rng.chance(3) {
                    info.side = [Side::Client, Side::Server, Side::Unknown][rng.below(3)];
                }
                out.push(StreamEvent::Opened(info));
            }
            closed => {
                if rng.chance(10) {
                    let reason = [
                        CloseReason::Closed,
                        CloseReason::Reset,
                        CloseReason::ProcessExited,
                        CloseReason::Evicted,
                    ][rng.below(4)];
                    out.push(StreamEvent::Closed { at: 0, reason });
                } else {
                    out.push(closed.clone());
                }
            }
        }
    }
    // Sometimes the connection ends early.
    if rng.chance(5) {
        let keep = rng.below(out.len());
        out.truncate(keep.max(1));
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args.get(1).map(String::as_str).unwrap_or("calls");
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0x5EED);
    let run: fn(&mut Rng, &Seeds) -> u64 = match target {
        "http" => targets::http,
        "http2" => targets::http2,
        "sse" => targets::sse,
        "providers" => targets::providers,
        "calls" => targets::calls,
        "tcp" => targets::tcp,
        other => {
            eprintln!("unknown target {other}: use http, http2, sse, providers, calls or tcp");
            std::process::exit(2);
        }
    };
    let seeds = seeds();
    if args.get(2).map(String::as_str) == Some("replay") {
        let exec_seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
        let produced = run(&mut Rng(exec_seed), &seeds);
        println!("replayed {exec_seed} without panicking ({produced} produced)");
        return;
    }
    let crash_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-crashes");
    panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // `produced` (body bytes, frames, records) shows inputs get deep.
    let (mut execs, mut crashes, mut produced) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        for _ in 0..64 {
            // Each exec gets its own seed, so a crash can be replayed alone.
            let exec_seed = (seed ^ execs.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
            let mut rng = Rng(exec_seed);
            match panic::catch_unwind(AssertUnwindSafe(|| run(&mut rng, &seeds))) {
                Ok(n) => produced += n,
                Err(_) => {
                    crashes += 1;
                    std::fs::create_dir_all(&crash_dir).ok();
                    let note = format!("target {target}, exec seed {exec_seed}\n");
                    std::fs::write(crash_dir.join(format!("{target}-{exec_seed}.txt")), note).ok();
                }
            }
            execs += 1;
        }
    }
    println!(
        "target={target} seconds={seconds} execs={execs} crashes={crashes} produced={produced}"
    );
    if crashes > 0 {
        std::process::exit(1);
    }
}
