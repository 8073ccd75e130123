//! One direction's message reader: head, then body by its framing, then the
//! next head (keep-alive, pipelining).

use std::collections::VecDeque;

use super::body::{decoder_for, BodyOutput};
use super::chunked::Chunked;
use super::head::{self, Framing};
use super::{ChunkTime, FramingError, Head, HttpEvent, HttpLimits, Role};

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a head.
    Head,
    /// Inside a body with this many bytes left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunked),
    /// Inside a body that ends with the connection.
    UntilClose,
    /// Not HTTP any more (101 Switching Protocols): bytes are ignored.
    Opaque,
    /// Switched to HTTP/2 by a 101 answering `Upgrade: h2c`; holds the
    /// bytes that followed the 101 in its chunk, for the HTTP/2 framer.
    H2c(Vec<u8>),
    /// Bytes were lost where framing cannot resume: chunks are skipped
    /// until one starts like a message head.
    Resync,
}

/// Reads the messages of one direction.
#[derive(Debug)]
pub(crate) struct MessageReader {
    role: Role,
    max_head: usize,
    /// Head bytes received so far.
    buf: Vec<u8>,
    state: State,
    /// The chunk that carried the current message's first byte.
    first_byte: Option<ChunkTime>,
    /// The latest chunk with bytes in this direction.
    last_byte: ChunkTime,
    out: BodyOutput,
}

impl MessageReader {
    pub(crate) fn new(role: Role, limits: HttpLimits) -> Self {
        Self {
            role,
            max_head: limits.max_head_bytes,
            buf: Vec::new(),
            state: State::Head,
            first_byte: None,
            last_byte: ChunkTime::default(),
            out: BodyOutput::new(role, limits.max_decoded_body),
        }
    }

    pub(crate) fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque | State::H2c(_))
    }

    /// After a 101 to h2c: the bytes that followed it (once; later bytes
    /// are the HTTP/2 framer's to read).
    pub(crate) fn take_h2c(&mut self) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.state, State::Opaque) {
            State::H2c(rest) => Some(rest),
            other => {
                self.state = other;
                None
            }
        }
    }

    pub(crate) fn set_opaque(&mut self) {
        self.state = State::Opaque;
    }

    /// Frames one chunk. `bodyless` holds, per request awaiting its
    /// response, whether that response has no body (HEAD); only responses
    /// use it.
    pub(crate) fn feed(
        &mut self,
        gap: u64,
        bytes: &[u8],
        time: ChunkTime,
        bodyless: &mut VecDeque<bool>,
        sink: &mut dyn FnMut(HttpEvent<'_>),
    ) -> Result<(), FramingError> {
        if gap > 0 {
            self.skip_gap(gap, time, sink);
        }
        if !bytes.is_empty() {
            self.last_byte = time;
        }
        if matches!(self.state, State::Resync) {
            // Packets start where writes did, so a head usually opens one.
            let head_starts = match self.role {
                Role::Request => head::looks_like_request(bytes),
                Role::Response => bytes.starts_with(b"HTTP/1."),
            };
            if !head_starts {
                return Ok(());
            }
            self.state = State::Head;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let used = match &mut self.state {
                State::Opaque | State::H2c(_) | State::Resync => return Ok(()),
                State::Head => {
                    let used = self.head(rest, time, bodyless, sink)?;
                    if let State::H2c(after) = &mut self.state {
                        after.extend_from_slice(&rest[used..]);
                        return Ok(());
                    }
                    used
                }
                State::Length(left) => {
                    let take = (*left).min(rest.len() as u64);
                    *left -= take;
                    let done = *left == 0;
                    self.out.pass(&rest[..take as usize], sink);
                    if done {
                        self.end(time, sink);
                    }
                    take as usize
                }
                State::Chunked(chunked) => {
                    let out = &mut self.out;
                    let (used, done) = chunked.feed(rest, &mut |piece| out.pass(piece, sink))?;
                    if done {
                        self.end(time, sink);
                    }
                    used
                }
                State::UntilClose => {
                    self.out.pass(rest, sink);
                    rest.len()
                }
            };
            rest = &rest[used..];
        }
        Ok(())
    }

    /// The connection closed: a close-delimited body ends here, and one
    /// that still owed bytes by its length or a chunk's size is short.
    pub(crate) fn close(&mut self, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        let short = match &self.state {
            State::UntilClose => return self.end(self.last_byte, sink),
            State::Length(left) => *left > 0,
            State::Chunked(chunked) => chunked.owes_data(),
            _ => false,
        };
        if short {
            sink(HttpEvent::ClosedShort { role: self.role });
        }
    }

    /// Steps over `gap` lost bytes. Inside a body whose framing can count
    /// them, the message goes on without its decoded rest; anywhere else
    /// the message in progress is cut ([`HttpEvent::Cut`]) and the reader
    /// looks for the next head.
    fn skip_gap(&mut self, gap: u64, time: ChunkTime, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        let skipped = match &mut self.state {
            State::Opaque | State::H2c(_) | State::Resync => return,
            State::Length(left) if gap <= *left => {
                *left -= gap;
                true
            }
            State::Chunked(chunked) => chunked.skip(gap),
            State::UntilClose => true,
            _ => false,
        };
        if skipped {
            // Decoding cannot resume after lost bytes.
            self.out.stop(sink);
            if matches!(self.state, State::Length(0)) {
                self.end(time, sink);
            }
            return;
        }
        // A head cut short was never reported, so only a body is cut.
        if !matches!(self.state, State::Head) {
            sink(HttpEvent::Cut { role: self.role });
        }
        self.buf.clear();
        self.first_byte = None;
        self.out.reset(None);
        self.state = State::Resync;
    }

    fn end(&mut self, time: ChunkTime, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        self.state = State::Head;
        self.first_byte = None;
        self.out.reset(None);
        sink(HttpEvent::End {
            role: self.role,
            last_byte: time,
        });
    }

    /// Consumes head bytes; returns how many of `rest` were used.
    fn head(
        &mut self,
        rest: &[u8],
        time: ChunkTime,
        bodyless: &mut VecDeque<bool>,
        sink: &mut dyn FnMut(HttpEvent<'_>),
    ) -> Result<usize, FramingError> {
        if self.buf.is_empty() {
            // Empty lines between messages are ignored (RFC 9112 §2.2).
            let blank = rest
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if blank > 0 {
                return Ok(blank);
            }
            self.first_byte.get_or_insert(time);
        }
        let old = self.buf.len();
        let take = rest.len().min(self.max_head - old);
        self.buf.extend_from_slice(&rest[..take]);
        let parsed = match self.role {
            Role::Request => head::parse_request(&self.buf)?.map(|(n, h)| (n, Head::Request(h))),
            Role::Response => head::parse_response(&self.buf)?.map(|(n, h)| (n, Head::Response(h))),
        };
        let Some((len, head)) = parsed else {
            if self.buf.len() >= self.max_head {
                return Err(FramingError::HeadTooLarge(self.max_head));
            }
            return Ok(take);
        };
        self.buf.clear();
        // `old` bytes held no complete head, so the head ends in `rest`.
        let used = len
            .checked_sub(old)
            .ok_or(FramingError::BadHead(httparse::Error::Token))?;
        let first_byte = self.first_byte.unwrap_or(time);
        let framing = match &head {
            Head::Request(req) => {
                self.out.reset(decoder_for(&req.headers));
                head::framing(&req.headers, false)?
            }
            Head::Response(res) if (100..200).contains(&res.status) && res.status != 101 => {
                // Interim response: the final one follows and is what counts.
                self.first_byte = None;
                return Ok(used);
            }
            Head::Response(res)
                if res.status == 101
                    && res
                        .header("upgrade")
                        .is_some_and(|p| p.trim().eq_ignore_ascii_case("h2c")) =>
            {
                // Not the answer: that comes on HTTP/2 stream 1.
                bodyless.pop_front();
                self.first_byte = None;
                self.state = State::H2c(Vec::new());
                return Ok(used);
            }
            Head::Response(res) => {
                self.out.reset(decoder_for(&res.headers));
                let no_body =
                    bodyless.pop_front().unwrap_or(false) || matches!(res.status, 101 | 204 | 304);
                if no_body {
                    Framing::Empty
                } else {
                    head::framing(&res.headers, true)?
                }
            }
        };
        let switching = matches!(&head, Head::Response(res) if res.status == 101);
        sink(HttpEvent::Head { head, first_byte });
        match framing {
            Framing::Empty => self.end(time, sink),
            Framing::Length(n) => self.state = State::Length(n),
            Framing::Chunked => self.state = State::Chunked(Chunked::new()),
            Framing::UntilClose => self.state = State::UntilClose,
        }
        if switching {
            self.state = State::Opaque;
        }
        Ok(used)
    }
}
