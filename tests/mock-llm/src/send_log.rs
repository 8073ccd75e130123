//! The mock server's record of every write it made: one [`SendRecord`] per
//! write, kept in memory for Rust tests and/or appended as a JSON line to a
//! file for the end-to-end tests, which compare captured bytes and timings
//! against it.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

/// One write the server made on a client connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SendRecord {
    /// Connection number, from 1, in accept order.
    pub conn: u64,
    /// Request number on that connection, from 0 (keep-alive reuses it).
    pub request: u64,
    /// Path of the request being answered, as sent (query included).
    pub path: String,
    /// Write number within that response, from 0.
    pub seq: u32,
    /// `CLOCK_MONOTONIC` right before the write: the clock of
    /// `bpf_ktime_get_ns`, so it compares directly with kernel timestamps.
    pub mono_ns: u64,
    /// Wall clock (ns since the Unix epoch) right before the write.
    pub wall_ns: u64,
    /// Exactly the bytes written, HTTP framing included. Always UTF-8: the
    /// server only writes text it built itself.
    pub data: String,
    /// The part of `data` that is response body, without the status line,
    /// headers or chunked-encoding framing: for a stream, one SSE event or
    /// NDJSON line.
    pub body: String,
}

/// Where records go. Cheap to clone; all clones share one log.
#[derive(Clone, Debug, Default)]
pub struct SendLog {
    inner: Arc<Mutex<Sinks>>,
}

#[derive(Debug, Default)]
struct Sinks {
    memory: Option<Vec<SendRecord>>,
    file: Option<File>,
}

impl SendLog {
    /// A log that keeps records in memory when `keep` is set and appends
    /// them to `file` (created or truncated) when given.
    pub fn new(keep: bool, file: Option<&Path>) -> anyhow::Result<Self> {
        let file = file
            .map(|p| File::create(p).with_context(|| format!("creating send log {}", p.display())))
            .transpose()?;
        let sinks = Sinks {
            memory: keep.then(Vec::new),
            file,
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(sinks)),
        })
    }

    /// Appends one record. A failed file write is reported once on stderr
    /// and the file dropped: the log must never stop the server serving.
    pub fn push(&self, record: SendRecord) {
        let mut sinks = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = sinks.file.as_mut() {
            // One write per line, unbuffered, so a reader sees whole lines
            // while the server runs.
            let mut line = serde_json::to_vec(&record).expect("records serialize");
            line.push(b'\n');
            if let Err(e) = file.write_all(&line) {
                eprintln!("mock llm: send log write failed, no longer logging to file: {e}");
                sinks.file = None;
            }
        }
        if let Some(memory) = sinks.memory.as_mut() {
            memory.push(record);
        }
    }

    /// A copy of the records kept in memory so far (empty when not kept).
    pub fn snapshot(&self) -> Vec<SendRecord> {
        let sinks = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        sinks.memory.clone().unwrap_or_default()
    }
}

/// Both clocks, read back to back: (monotonic ns, wall ns).
pub fn now_ns() -> (u64, u64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (mono, wall)
}
