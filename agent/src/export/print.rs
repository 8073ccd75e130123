//! `--print`: one JSON line per connection event and per finished LLM call,
//! for debugging and tests. Traffic bytes appear only as [`PrintedBytes`]
//! allows (`--capture-content`, `--print-payload`).

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use serde::Serialize;

use crate::calls::LlmCall;
use crate::stream::{CloseReason, ConnectionId, ConnectionInfo, Direction, StreamEvent, WallNanos};
use crate::workload::Workload;

/// Bytes of payload shown in `preview`.
const PREVIEW_BYTES: usize = 96;

/// What a read/write line shows of the bytes, beside their length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrintedBytes {
    /// Nothing: traffic content stays out of the output (the default).
    Nothing,
    /// Their first bytes as text (`preview`).
    Preview,
    /// The preview, and all of them in base64 (`payload`).
    Payload,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line<'a> {
    Open {
        time: String,
        connection: ConnectionId,
        #[serde(flatten)]
        info: &'a ConnectionInfo,
    },
    Data {
        time: String,
        time_ns: WallNanos,
        start_ns: WallNanos,
        pid: u32,
        tid: Option<u32>,
        connection: ConnectionId,
        direction: Direction,
        length: usize,
        gap_before: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        preview: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    Close {
        time: String,
        time_ns: WallNanos,
        connection: ConnectionId,
        pid: u32,
        reason: CloseReason,
    },
    Call {
        #[serde(flatten)]
        call: &'a LlmCall,
        workload: &'a Workload,
    },
}

/// Writes connection events as JSON lines.
pub struct StreamPrinter<W: Write> {
    out: W,
    bytes: PrintedBytes,
    pids: HashMap<ConnectionId, u32>,
}

impl<W: Write> StreamPrinter<W> {
    pub fn new(out: W, bytes: PrintedBytes) -> Self {
        StreamPrinter {
            out,
            bytes,
            pids: HashMap::new(),
        }
    }

    pub fn print(&mut self, id: ConnectionId, event: &StreamEvent) -> std::io::Result<()> {
        let line = match event {
            StreamEvent::Opened(info) => {
                self.pids.insert(id, info.pid);
                // The open line is stamped when it is printed; its stream's
                // first data line carries the first capture time.
                Line::Open {
                    time: rfc3339(now()),
                    connection: id,
                    info,
                }
            }
            StreamEvent::Data(chunk) => Line::Data {
                time: rfc3339(chunk.call_end),
                time_ns: chunk.call_end,
                start_ns: chunk.call_start,
                pid: self.pids.get(&id).copied().unwrap_or_default(),
                tid: chunk.tid,
                connection: id,
                direction: chunk.direction,
                length: chunk.bytes.len(),
                gap_before: chunk.gap_before,
                preview: (self.bytes != PrintedBytes::Nothing).then(|| preview(&chunk.bytes)),
                payload: (self.bytes == PrintedBytes::Payload)
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&chunk.bytes)),
            },
            StreamEvent::Closed { at, reason } => Line::Close {
                time: rfc3339(*at),
                time_ns: *at,
                connection: id,
                pid: self.pids.remove(&id).unwrap_or_default(),
                reason: *reason,
            },
        };
        self.write(&line)
    }

    pub fn print_call(&mut self, call: &LlmCall, workload: &Workload) -> std::io::Result<()> {
        self.write(&Line::Call { call, workload })
    }

    fn write(&mut self, line: &Line<'_>) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

fn now() -> WallNanos {
    UNIX_EPOCH
        .elapsed()
        .map_or(0, |d| d.as_nanos() as WallNanos)
}

fn rfc3339(at: WallNanos) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(at)).to_string()
}

/// The first bytes as text, with anything unprintable escaped.
fn preview(bytes: &[u8]) -> String {
    bytes[..bytes.len().min(PREVIEW_BYTES)]
        .escape_ascii()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{DataChunk, Side, Transport};

    fn printed(bytes: PrintedBytes) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut printer = StreamPrinter::new(&mut out, bytes);
        let id = ConnectionId(4);
        let info = ConnectionInfo {
            id,
            pid: 42,
            comm: None,
            fd: Some(5),
            local: None,
            peer: None,
            side: Side::Client,
            transport: Transport::Tls,
        };
        printer.print(id, &StreamEvent::Opened(info)).unwrap();
        let chunk = DataChunk {
            direction: Direction::Ingress,
            tid: Some(43),
            call_start: 1_000,
            call_end: 2_000,
            gap_before: 0,
            bytes: b"data: {}\n\n\x00".to_vec(),
        };
        printer.print(id, &StreamEvent::Data(chunk)).unwrap();
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn prints_one_line_per_event_with_the_connection_pid() {
        let lines = printed(PrintedBytes::Payload);
        assert_eq!(lines[0]["type"], "open");
        assert_eq!(lines[0]["transport"], "tls");
        assert_eq!(lines[1]["pid"], 42);
        assert_eq!(lines[1]["tid"], 43);
        assert_eq!(lines[1]["direction"], "ingress");
        assert_eq!(lines[1]["length"], 11);
        assert_eq!(lines[1]["preview"], "data: {}\\n\\n\\x00");
        assert_eq!(lines[1]["payload"], "ZGF0YToge30KCgA=");
    }

    #[test]
    fn shows_no_bytes_unless_asked() {
        let lines = printed(PrintedBytes::Nothing);
        assert_eq!(lines[1]["length"], 11);
        assert!(lines[1].get("preview").is_none() && lines[1].get("payload").is_none());
        let lines = printed(PrintedBytes::Preview);
        assert_eq!(lines[1]["preview"], "data: {}\\n\\n\\x00");
        assert!(lines[1].get("payload").is_none());
    }
}
