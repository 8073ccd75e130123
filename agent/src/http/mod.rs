//! HTTP/1.1 framing of one connection, both directions.
//!
//! Input: the connection's byte chunks ([`crate::stream::DataChunk`] bytes
//! with their [`ChunkTime`]), direction by direction, then its close.
//! Output: [`HttpEvent`]s handed to a callback: a message head, decoded body
//! bytes (de-chunked and de-compressed as they arrive), the message end.
//! Keep-alive and pipelining come for free: messages follow each other.
//!
//! A parse error stops the whole connection ([`HttpError`]); other
//! connections are unaffected because each has its own [`HttpConnection`].

mod body;
mod chunked;
mod encoding;
mod head;
mod message;

pub(crate) use body::{decoder_for, BodyOutput};

use std::collections::VecDeque;

use crate::stream::{Direction, Side, WallNanos};

pub use head::{starts_request_line, Header, RequestHead, ResponseHead};
use message::MessageReader;

/// Why a connection's bytes could not be framed as HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The first bytes are neither a request line nor a status line.
    #[error("not HTTP/1.x")]
    NotHttp,
    /// `httparse` rejected a message head.
    #[error("malformed message head: {0}")]
    BadHead(httparse::Error),
    /// A head grew past the configured cap without ending.
    #[error("message head longer than {0} bytes")]
    HeadTooLarge(usize),
    /// A chunk-size line or chunk terminator was malformed.
    #[error("malformed chunked encoding")]
    BadChunk,
    /// `Content-Length` was not a number.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Bytes were lost where framing cannot skip them.
    #[error("{0} bytes missing from the capture")]
    Gap(u64),
    /// Data arrived in a direction after that direction failed or closed.
    #[error("connection already failed")]
    Failed,
    /// HTTP/2 framing or HPACK broke the protocol.
    #[error("HTTP/2: {0}")]
    Http2(&'static str),
}

/// Which message of an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sent by the client.
    Request,
    /// Sent by the server.
    Response,
}

/// Entry and return of the read/write call that moved some bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkTime {
    /// `call_start` of the chunk.
    pub start: WallNanos,
    /// `call_end` of the chunk.
    pub end: WallNanos,
}

/// A message head, request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// A request line and headers.
    Request(RequestHead),
    /// A final (non-1xx) status line and headers.
    Response(ResponseHead),
}

/// One framing step. Bodies are borrowed from the input or the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpEvent<'a> {
    /// A complete head; `first_byte` is the chunk that carried its first byte.
    Head {
        /// The parsed head.
        head: Head,
        /// Times of the chunk holding the message's first byte.
        first_byte: ChunkTime,
    },
    /// Decoded body bytes of the current message of `role`.
    Body {
        /// Whose body.
        role: Role,
        /// The bytes, after chunked and content decoding.
        bytes: &'a [u8],
    },
    /// Body bytes were lost (capture gap or decoding cap); the rest of the
    /// message still frames.
    BodyTruncated {
        /// Whose body.
        role: Role,
    },
    /// Bytes of the current message of `role` were lost where its framing
    /// cannot step over them: the message ends here, incomplete, and the
    /// direction resumes at the next message head it finds.
    Cut {
        /// Whose message.
        role: Role,
    },
    /// The current message of `role` is complete.
    End {
        /// Whose message.
        role: Role,
        /// Times of the chunk holding the message's last byte.
        last_byte: ChunkTime,
    },
}

impl HttpEvent<'_> {
    /// Whose message the event is about.
    pub fn role(&self) -> Role {
        match self {
            HttpEvent::Head {
                head: Head::Request(_),
                ..
            } => Role::Request,
            HttpEvent::Head {
                head: Head::Response(_),
                ..
            } => Role::Response,
            HttpEvent::Body { role, .. }
            | HttpEvent::BodyTruncated { role }
            | HttpEvent::Cut { role }
            | HttpEvent::End { role, .. } => *role,
        }
    }
}

/// Caps for one connection's framing buffers.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Largest message head kept while waiting for its end.
    pub max_head_bytes: usize,
    /// Decoded (decompressed) bytes passed on per message; the rest is
    /// dropped and reported with [`HttpEvent::BodyTruncated`].
    pub max_decoded_body: u64,
    /// HTTP/2 streams open at once on one connection; past it the
    /// connection is given up.
    pub max_streams: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 64 * 1024,
            max_decoded_body: 64 * 1024 * 1024,
            max_streams: 256,
        }
    }
}

/// Frames both directions of one connection.
#[derive(Debug)]
pub struct HttpConnection {
    side: Side,
    requests: MessageReader,
    responses: MessageReader,
    /// For each request whose response has not started: must the response
    /// have no body (HEAD)?
    bodyless: VecDeque<bool>,
    failed: bool,
}

impl HttpConnection {
    /// A connection whose watched process is `side` (Unknown is decided by
    /// the first bytes seen).
    pub fn new(side: Side, limits: HttpLimits) -> Self {
        Self {
            side,
            requests: MessageReader::new(Role::Request, limits),
            responses: MessageReader::new(Role::Response, limits),
            bodyless: VecDeque::new(),
            failed: false,
        }
    }

    /// The side, once known.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Frames one chunk. After an error every later call returns
    /// [`HttpError::Failed`] and emits nothing.
    pub fn feed(
        &mut self,
        direction: Direction,
        gap_before: u64,
        bytes: &[u8],
        time: ChunkTime,
        sink: &mut dyn FnMut(HttpEvent<'_>),
    ) -> Result<(), HttpError> {
        if self.failed {
            return Err(HttpError::Failed);
        }
        if self.side == Side::Unknown && !bytes.is_empty() {
            self.side = decide_side(direction, bytes).inspect_err(|_| self.failed = true)?;
        }
        let requests_go = match self.side {
            Side::Server => Direction::Ingress,
            _ => Direction::Egress,
        };
        let result = if direction == requests_go {
            let bodyless = &mut self.bodyless;
            let mut on = |event: HttpEvent<'_>| {
                if let HttpEvent::Head {
                    head: Head::Request(req),
                    ..
                } = &event
                {
                    bodyless.push_back(req.method.eq_ignore_ascii_case("HEAD"));
                }
                sink(event);
            };
            self.requests
                .feed(gap_before, bytes, time, &mut VecDeque::new(), &mut on)
        } else {
            let result = self
                .responses
                .feed(gap_before, bytes, time, &mut self.bodyless, sink);
            if self.responses.is_opaque() {
                self.requests.set_opaque();
            }
            result
        };
        self.failed = result.is_err();
        result
    }

    /// After a `101` answering `Upgrade: h2c`: the bytes that followed it,
    /// once. From then on the connection is HTTP/2's
    /// ([`crate::http2::Http2Connection::upgraded`]).
    pub fn take_h2c(&mut self) -> Option<Vec<u8>> {
        self.responses.take_h2c()
    }

    /// The connection closed: ends bodies delimited by the close.
    pub fn close(&mut self, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        if !self.failed {
            self.responses.close(sink);
        }
    }
}

/// Tells the side from the first bytes of either direction. A first read
/// too short to tell (`HT`) is taken the usual way round: client side.
fn decide_side(direction: Direction, bytes: &[u8]) -> Result<Side, HttpError> {
    if bytes.len() < 5 && b"HTTP/".starts_with(bytes) {
        return Ok(Side::Client);
    }
    let is_response = bytes.starts_with(b"HTTP/");
    let is_request = !is_response && head::looks_like_request(bytes);
    match (direction, is_response, is_request) {
        (Direction::Egress, false, true) | (Direction::Ingress, true, false) => Ok(Side::Client),
        (Direction::Ingress, false, true) | (Direction::Egress, true, false) => Ok(Side::Server),
        _ => Err(HttpError::NotHttp),
    }
}

#[cfg(test)]
mod tests;
