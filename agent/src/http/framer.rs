//! What both HTTP versions hand on, whatever their wire format: the
//! [`Framer`] trait over one connection's bytes, and the protocol-neutral
//! [`ExchangeEvent`]s it emits, each tied to one request/response pair.

use super::{ChunkTime, HttpEvent};
use crate::stream::{Direction, Side};

/// Why a connection's bytes could not be framed, in either HTTP version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
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
    /// More HTTP/1.1 requests awaited their responses than the cap: they
    /// pair in order, so none can be skipped.
    #[error("more than {0} requests waiting for responses")]
    TooManyPending(usize),
    /// HTTP/2 framing or HPACK broke the protocol.
    #[error("HTTP/2: {0}")]
    Http2(&'static str),
}

/// Which request/response pair an event belongs to, on one connection.
/// HTTP/2 uses the stream id; HTTP/1.1 numbers its exchanges in request
/// order from [`FIRST_HTTP1_EXCHANGE`], above every stream id, so that
/// after an h2c upgrade the two never meet.
pub type ExchangeId = u64;

/// The first exchange id of HTTP/1.1.
pub const FIRST_HTTP1_EXCHANGE: ExchangeId = 1 << 32;

/// One framing step of one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum ExchangeEvent<'a> {
    /// Head, body bytes, truncation or end of one message of an exchange.
    Message {
        /// The exchange.
        exchange: ExchangeId,
        /// What happened to its request or response.
        event: HttpEvent<'a>,
    },
    /// The exchange was reset (HTTP/2's RST_STREAM) before it completed.
    Reset {
        /// The exchange.
        exchange: ExchangeId,
    },
}

/// An HTTP/1.1 connection switched to HTTP/2 (`Upgrade: h2c` answered
/// `101`): the exchange that asked continues as stream 1.
#[derive(Debug, PartialEq, Eq)]
pub struct H2cUpgrade {
    /// The exchange that asked for the upgrade.
    pub exchange: ExchangeId,
    /// The bytes that followed the `101`: HTTP/2 already.
    pub rest: Vec<u8>,
}

/// Frames both directions of one connection into exchange events.
pub trait Framer: Send {
    /// Which end the watched process is, once known.
    fn side(&self) -> Side;

    /// Frames one chunk of `direction`, read or written in a call timed
    /// `time`, with `gap_before` bytes lost before it. After an error every
    /// later call fails too and emits nothing.
    fn feed(
        &mut self,
        direction: Direction,
        gap_before: u64,
        bytes: &[u8],
        time: ChunkTime,
        sink: &mut dyn FnMut(ExchangeEvent<'_>),
    ) -> Result<(), FramingError>;

    /// The connection closed: ends what is delimited by the close.
    fn close(&mut self, sink: &mut dyn FnMut(ExchangeEvent<'_>));

    /// An upgrade to HTTP/2 that the last chunk completed, once.
    fn take_h2c_upgrade(&mut self) -> Option<H2cUpgrade> {
        None
    }
}
