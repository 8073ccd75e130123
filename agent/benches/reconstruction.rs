//! The whole reconstruction path (StreamEvents → CallTracker → LlmCall) on a
//! realistic OpenAI chat stream: 1,000 content chunks as one chunked SSE
//! response, read in ~100-byte pieces. Throughput is in SSE chunks per
//! second of the benchmark thread's CPU time (see [`ThreadCpuTime`]).
//!
//! `cargo bench -p llmtap --bench reconstruction`

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use llmtap::calls::{CallTracker, Limits};
use llmtap::stream::{
    CloseReason, ConnectionId, ConnectionInfo, DataChunk, Direction, Side, StreamEvent, Transport,
};

const CHUNKS: usize = 1000;
const READ: usize = 100;

const WORDS: &[&str] = &[
    " The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ".",
    " Rust",
    " makes",
    " systems",
    " programming",
    " safer",
    ",",
    " and",
    " eBPF",
    " lets",
    " us",
    " observe",
    " without",
    " changing",
    " code",
    "!",
    " Tokens",
    " stream",
    " in",
    " one",
    " by",
    " one",
    "\\n",
];

fn sse_chunk(delta: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or("null".to_owned(), |f| format!("\"{f}\""));
    let event = format!(
        "data: {{\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
    );
    format!("{:x}\r\n{event}\r\n", event.len())
}

/// One connection carrying one streamed chat call.
fn events() -> Vec<StreamEvent> {
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Tell me a long story."}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut response = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    response += &sse_chunk(r#"{"role":"assistant","content":"","refusal":null}"#, None);
    for i in 0..CHUNKS {
        let word = WORDS[(i * 7 + i / 3) % WORDS.len()];
        response += &sse_chunk(&format!("{{\"content\":\"{word}\"}}"), None);
    }
    response += &sse_chunk("{}", Some("stop"));
    response += "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";

    let mut out = vec![StreamEvent::Opened(ConnectionInfo {
        id: ConnectionId(1),
        pid: 1,
        comm: None,
        fd: Some(3),
        local: Some("10.0.0.2:50000".parse().unwrap()),
        peer: Some("104.18.6.192:443".parse().unwrap()),
        side: Side::Client,
        transport: Transport::Tls,
    })];
    let mut t = 1_700_000_000_000_000_000u64;
    out.push(StreamEvent::Data(DataChunk {
        tid: None,
        direction: Direction::Egress,
        call_start: t,
        call_end: t + 20_000,
        gap_before: 0,
        bytes: request.into_bytes(),
    }));
    for piece in response.as_bytes().chunks(READ) {
        t += 1_000_000;
        out.push(StreamEvent::Data(DataChunk {
            tid: None,
            direction: Direction::Ingress,
            call_start: t,
            call_end: t + 5_000,
            gap_before: 0,
            bytes: piece.to_vec(),
        }));
    }
    out.push(StreamEvent::Closed {
        at: t + 10_000,
        reason: CloseReason::Closed,
    });
    out
}

/// Time on the benchmark thread's CPU (`CLOCK_THREAD_CPUTIME_ID`) rather
/// than wall time: the goal is per core, and on a shared machine the time
/// spent waiting for a core while other work runs is not this code's.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_ns() - started
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, ns: &u64) -> f64 {
        *ns as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuTimeFormatter
    }
}

/// Shows CPU nanoseconds as CPU time and elements per CPU second.
struct CpuTimeFormatter;

impl ValueFormatter for CpuTimeFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (per_ns, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns CPU"),
            t if t < 1e6 => (1e-3, "µs CPU"),
            t if t < 1e9 => (1e-6, "ms CPU"),
            _ => (1e-9, "s CPU"),
        };
        values.iter_mut().for_each(|v| *v *= per_ns);
        unit
    }

    fn scale_throughputs(
        &self,
        _: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match *throughput {
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => n,
            Throughput::Bits(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n,
        } as f64;
        values
            .iter_mut()
            .for_each(|ns| *ns = per_iteration / (*ns / 1e9) / 1e6);
        "M/s CPU"
    }

    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn reconstruction(c: &mut Criterion<ThreadCpuTime>) {
    let events = events();
    let mut tracker = CallTracker::new(Limits::default());
    // Build the tokenizer outside the measurement: it is built once per process.
    let warm: Vec<_> = events
        .iter()
        .flat_map(|e| tracker.on_event(ConnectionId(0), e))
        .collect();
    assert_eq!(warm.len(), 1);
    assert_eq!(warm[0].timings.output_chunks, CHUNKS as u64);

    let mut group = c.benchmark_group("reconstruction");
    // The role chunk, content chunks, the finish chunk and [DONE].
    group.throughput(Throughput::Elements(CHUNKS as u64 + 3));
    let mut id = 1;
    group.bench_function("openai_stream_100B_reads", |b| {
        b.iter(|| {
            id += 1;
            let mut calls = 0;
            for event in &events {
                calls += tracker.on_event(ConnectionId(id), black_box(event)).len();
            }
            assert_eq!(calls, 1);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = reconstruction
}
criterion_main!(benches);
