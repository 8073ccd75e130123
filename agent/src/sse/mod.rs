//! Streamed response bodies cut into frames: Server-Sent Events (WHATWG
//! rules) and newline-delimited JSON.
//!
//! Input: decoded body bytes, split anywhere (even inside a UTF-8
//! character). Output: one [`Frame`] per dispatched event or JSON line,
//! handed to a callback. Framing never fails: an event larger than the cap
//! is dropped and counted in `oversized`.

mod ndjson;

pub use ndjson::NdjsonParser;

/// One event of a stream: an SSE event, or one NDJSON line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The SSE event type; empty for the default `message` type and NDJSON.
    pub event: &'a [u8],
    /// The event's data (lines joined with `\n`), or the JSON line.
    pub data: &'a [u8],
}

/// An incremental `text/event-stream` parser.
#[derive(Debug, Default)]
pub struct SseParser {
    /// A line not yet terminated.
    line: Vec<u8>,
    /// Data buffer of the event being built.
    data: Vec<u8>,
    /// Event type buffer.
    event: Vec<u8>,
    /// Last event id, as the spec keeps it (unused downstream).
    last_id: Vec<u8>,
    /// Reconnection time in ms, as the spec keeps it.
    retry: Option<u64>,
    /// The previous feed ended with CR: a leading LF belongs to it.
    after_cr: bool,
    /// No line processed yet (a BOM may lead).
    started: bool,
    /// The current event or line outgrew `max`.
    overflow: bool,
    max: usize,
    /// Events dropped for exceeding the cap.
    pub oversized: u64,
}

impl SseParser {
    /// A parser that keeps at most `max` bytes of one event.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// The last `retry:` value seen, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id seen.
    pub fn last_event_id(&self) -> &[u8] {
        &self.last_id
    }

    /// Parses `bytes`, calling `on` for every event they complete.
    pub fn feed(&mut self, bytes: &[u8], on: &mut dyn FnMut(Frame<'_>)) {
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\r', b'\n', rest) {
            let mut next = pos + 1;
            if rest[pos] == b'\r' {
                match rest.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() && !self.overflow {
                self.line_done(&rest[..pos], on);
            } else {
                self.push_line(&rest[..pos]);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, on);
                self.line = line;
                self.line.clear();
            }
            rest = &rest[next..];
        }
        self.push_line(rest);
    }

    fn push_line(&mut self, part: &[u8]) {
        if self.line.len() + part.len() > self.max {
            self.overflow = true;
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn line_done(&mut self, mut line: &[u8], on: &mut dyn FnMut(Frame<'_>)) {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch(on);
        }
        if line[0] == b':' {
            return; // comment, e.g. a keep-alive
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.overflow || self.data.len() + value.len() + 1 > self.max {
                    self.overflow = true;
                } else {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
            }
            b"event" => {
                self.event.clear();
                self.event
                    .extend_from_slice(&value[..value.len().min(self.max)]);
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id
                    .extend_from_slice(&value[..value.len().min(self.max)]);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on: &mut dyn FnMut(Frame<'_>)) {
        if self.overflow {
            self.oversized += 1;
            self.overflow = false;
        } else if let Some(data) = self.data.strip_suffix(b"\n") {
            on(Frame {
                event: &self.event,
                data,
            });
        }
        self.data.clear();
        self.event.clear();
    }
}

#[cfg(test)]
mod tests;
