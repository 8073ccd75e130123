//! HTTP/1.1 framing of one connection, both directions, and what both
//! HTTP versions share (`framer`: the [`Framer`] trait and its events).
//!
//! Input: the connection's byte chunks ([`crate::stream::DataChunk`] bytes
//! with their [`ChunkTime`]), direction by direction, then its close.
//! Output: [`ExchangeEvent`]s handed to a callback: a message head, decoded
//! body bytes (de-chunked and de-compressed as they arrive), the message
//! end, each with the exchange it belongs to. Keep-alive and pipelining come
//! for free: messages follow each other, and responses answer requests in
//! order.
//!
//! A parse error stops the whole connection ([`FramingError`]); other
//! connections are unaffected because each has its own [`HttpConnection`].

mod body;
mod chunked;
mod encoding;
mod framer;
mod head;
mod message;

pub(crate) use body::{decoder_for, BodyOutput};

use std::collections::VecDeque;

use crate::stream::{Direction, Side, WallNanos};

pub use framer::{
    ExchangeEvent, ExchangeId, Framer, FramingError, H2cUpgrade, FIRST_HTTP1_EXCHANGE,
};
pub use head::{starts_request_line, Header, RequestHead, ResponseHead};
use message::MessageReader;

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
    /// The connection closed before the current message of `role` had
    /// the body its `Content-Length` or a chunk's size announced.
    ClosedShort {
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
            | HttpEvent::ClosedShort { role }
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
    /// HTTP/1.1 requests waiting for their responses (pipelining); past it
    /// the connection is given up.
    pub max_pending: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 64 * 1024,
            max_decoded_body: 64 * 1024 * 1024,
            max_streams: 256,
            max_pending: 64,
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
    pairing: Pairing,
    failed: bool,
}

/// HTTP/1.1's exchanges: requests numbered in order, each response
/// answering the oldest request not answered yet.
#[derive(Debug)]
struct Pairing {
    /// Request heads seen.
    requests: u64,
    /// Responses ended (or cut), never more than the requests.
    answered: u64,
    max_pending: usize,
    /// A request came with `max_pending` already waiting.
    overflow: bool,
}

impl Pairing {
    /// The exchange of a request event: the newest request's.
    fn request(&mut self, event: &HttpEvent<'_>) -> ExchangeId {
        if let HttpEvent::Head { .. } = event {
            if self.requests - self.answered >= self.max_pending as u64 {
                self.overflow = true;
            }
            self.requests += 1;
        }
        FIRST_HTTP1_EXCHANGE + self.requests.saturating_sub(1)
    }

    /// The exchange of a response event: the oldest unanswered request's.
    fn response(&mut self, event: &HttpEvent<'_>) -> ExchangeId {
        let exchange = FIRST_HTTP1_EXCHANGE + self.answered;
        if matches!(event, HttpEvent::End { .. } | HttpEvent::Cut { .. }) {
            self.answered = (self.answered + 1).min(self.requests);
        }
        exchange
    }
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
            pairing: Pairing {
                requests: 0,
                answered: 0,
                max_pending: limits.max_pending,
                overflow: false,
            },
            failed: false,
        }
    }
}

impl Framer for HttpConnection {
    fn side(&self) -> Side {
        self.side
    }

    fn feed(
        &mut self,
        direction: Direction,
        gap_before: u64,
        bytes: &[u8],
        time: ChunkTime,
        sink: &mut dyn FnMut(ExchangeEvent<'_>),
    ) -> Result<(), FramingError> {
        if self.failed {
            return Err(FramingError::Failed);
        }
        if self.side == Side::Unknown && !bytes.is_empty() {
            self.side = decide_side(direction, bytes).inspect_err(|_| self.failed = true)?;
        }
        let requests_go = match self.side {
            Side::Server => Direction::Ingress,
            _ => Direction::Egress,
        };
        let pairing = &mut self.pairing;
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
                let exchange = pairing.request(&event);
                sink(ExchangeEvent::Message { exchange, event });
            };
            self.requests
                .feed(gap_before, bytes, time, &mut VecDeque::new(), &mut on)
        } else {
            let mut on = |event: HttpEvent<'_>| {
                let exchange = pairing.response(&event);
                sink(ExchangeEvent::Message { exchange, event });
            };
            let result = self
                .responses
                .feed(gap_before, bytes, time, &mut self.bodyless, &mut on);
            if self.responses.is_opaque() {
                self.requests.set_opaque();
            }
            result
        };
        let result = match result {
            Ok(()) if self.pairing.overflow => {
                Err(FramingError::TooManyPending(self.pairing.max_pending))
            }
            result => result,
        };
        self.failed = result.is_err();
        result
    }

    fn close(&mut self, sink: &mut dyn FnMut(ExchangeEvent<'_>)) {
        if !self.failed {
            let pairing = &mut self.pairing;
            self.responses.close(&mut |event| {
                let exchange = pairing.response(&event);
                sink(ExchangeEvent::Message { exchange, event });
            });
        }
    }

    /// After a `101` answering `Upgrade: h2c`: the exchange that asked and
    /// the bytes that followed, once. From then on the connection is
    /// HTTP/2's ([`crate::http2::Http2Connection::upgraded`]).
    fn take_h2c_upgrade(&mut self) -> Option<H2cUpgrade> {
        let rest = self.responses.take_h2c()?;
        Some(H2cUpgrade {
            exchange: FIRST_HTTP1_EXCHANGE + self.pairing.answered,
            rest,
        })
    }
}

/// Tells the side from the first bytes of either direction. A first read
/// too short to tell (`HT`) is taken the usual way round: client side.
fn decide_side(direction: Direction, bytes: &[u8]) -> Result<Side, FramingError> {
    if bytes.len() < 5 && b"HTTP/".starts_with(bytes) {
        return Ok(Side::Client);
    }
    let is_response = bytes.starts_with(b"HTTP/");
    let is_request = !is_response && head::looks_like_request(bytes);
    match (direction, is_response, is_request) {
        (Direction::Egress, false, true) | (Direction::Ingress, true, false) => Ok(Side::Client),
        (Direction::Ingress, false, true) | (Direction::Egress, true, false) => Ok(Side::Server),
        _ => Err(FramingError::NotHttp),
    }
}

#[cfg(test)]
mod tests;
