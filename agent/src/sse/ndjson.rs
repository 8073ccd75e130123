//! Newline-delimited JSON (Ollama's streaming format): one [`Frame`] per
//! non-blank line, split anywhere across feeds.

use super::Frame;

/// An incremental NDJSON line splitter.
#[derive(Debug, Default)]
pub struct NdjsonParser {
    /// A line not yet terminated.
    line: Vec<u8>,
    /// The current line outgrew `max` and is being skipped.
    overflow: bool,
    max: usize,
    /// Lines dropped for exceeding the cap.
    pub oversized: u64,
}

impl NdjsonParser {
    /// A splitter that keeps at most `max` bytes of one line.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Splits `bytes`, calling `on` for every line they complete.
    pub fn feed(&mut self, bytes: &[u8], on: &mut dyn FnMut(Frame<'_>)) {
        let mut rest = bytes;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            if self.line.is_empty() && !self.overflow {
                emit(&rest[..pos], on);
            } else {
                self.push(&rest[..pos]);
                self.end_line(on);
            }
            rest = &rest[pos + 1..];
        }
        self.push(rest);
    }

    /// The body ended: a last line without a newline still counts.
    pub fn finish(&mut self, on: &mut dyn FnMut(Frame<'_>)) {
        self.end_line(on);
    }

    /// Emits (or counts as oversized) the buffered line and starts anew.
    fn end_line(&mut self, on: &mut dyn FnMut(Frame<'_>)) {
        if self.overflow {
            self.oversized += 1;
        } else {
            emit(&self.line, on);
        }
        self.line.clear();
        self.overflow = false;
    }

    fn push(&mut self, part: &[u8]) {
        if self.overflow || self.line.len() + part.len() > self.max {
            self.overflow = true;
        } else {
            self.line.extend_from_slice(part);
        }
    }
}

fn emit(line: &[u8], on: &mut dyn FnMut(Frame<'_>)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.iter().all(u8::is_ascii_whitespace) {
        on(Frame {
            event: b"",
            data: line,
        });
    }
}
