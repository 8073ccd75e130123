//! Golden fixtures (`tests/fixtures/golden/*.jsonl`, written by
//! `generate.py`) loaded as stream events, and helpers to replay them.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use llmtap::calls::{CallTracker, Limits, LlmCall};
use llmtap::stream::{
    CloseReason, ConnectionId, ConnectionInfo, DataChunk, Direction, Side, StreamEvent, Transport,
};
use serde_json::Value;

/// The golden fixture directory.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden")
}

/// One fixture: its name and its connection's events.
pub struct Fixture {
    pub name: String,
    pub events: Vec<StreamEvent>,
}

/// Every fixture, sorted by name.
pub fn fixtures() -> Vec<Fixture> {
    let mut paths: Vec<_> = std::fs::read_dir(golden_dir())
        .expect("golden dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| Fixture {
            name: p.file_stem().unwrap().to_string_lossy().into_owned(),
            events: load(p, ConnectionId(1)),
        })
        .collect()
}

/// Reads a fixture file as the events of connection `id`.
pub fn load(path: &Path, id: ConnectionId) -> Vec<StreamEvent> {
    let text = std::fs::read_to_string(path).expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("fixture line");
            event(&v, id)
        })
        .collect()
}

fn event(v: &Value, id: ConnectionId) -> StreamEvent {
    if let Some(open) = v.get("open") {
        let addr = |k: &str| {
            open.get(k)
                .and_then(Value::as_str)
                .map(|a| a.parse().unwrap())
        };
        let side = match open["side"].as_str().unwrap() {
            "client" => Side::Client,
            "server" => Side::Server,
            _ => Side::Unknown,
        };
        let transport = match open["transport"].as_str().unwrap() {
            "tls" => Transport::Tls,
            _ => Transport::Tcp,
        };
        return StreamEvent::Opened(ConnectionInfo {
            id,
            pid: open["pid"].as_u64().unwrap() as u32,
            comm: open.get("comm").and_then(Value::as_str).map(str::to_owned),
            fd: Some(7),
            local: addr("local"),
            peer: addr("peer"),
            side,
            transport,
        });
    }
    if let Some(close) = v.get("close") {
        let reason = match close["reason"].as_str().unwrap() {
            "reset" => CloseReason::Reset,
            "process_exited" => CloseReason::ProcessExited,
            "evicted" => CloseReason::Evicted,
            _ => CloseReason::Closed,
        };
        return StreamEvent::Closed {
            at: close["at"].as_u64().unwrap(),
            reason,
        };
    }
    let bytes = match v.get("data") {
        Some(data) => data.as_str().unwrap().as_bytes().to_vec(),
        None => hex(v["hex"].as_str().unwrap()),
    };
    StreamEvent::Data(DataChunk {
        tid: None,
        direction: if v["dir"] == "egress" {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        call_start: v["start"].as_u64().unwrap(),
        call_end: v["end"].as_u64().unwrap(),
        gap_before: 0,
        bytes,
    })
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Replays one connection's events through a fresh tracker.
pub fn replay(events: &[StreamEvent]) -> Vec<LlmCall> {
    let mut tracker = CallTracker::new(Limits::default());
    let calls: Vec<_> = events
        .iter()
        .flat_map(|e| tracker.on_event(ConnectionId(1), e))
        .collect();
    assert_eq!(tracker.open_connections(), 0);
    calls
}

/// The events with data chunk `index` split at byte `at` into two chunks
/// with the same times.
pub fn split_at(events: &[StreamEvent], index: usize, at: usize) -> Vec<StreamEvent> {
    let mut out = Vec::with_capacity(events.len() + 1);
    for (i, e) in events.iter().enumerate() {
        match e {
            StreamEvent::Data(chunk) if i == index => {
                let mut first = chunk.clone();
                let mut second = chunk.clone();
                first.bytes.truncate(at);
                second.bytes.drain(..at);
                out.push(StreamEvent::Data(first));
                out.push(StreamEvent::Data(second));
            }
            e => out.push(e.clone()),
        }
    }
    out
}
