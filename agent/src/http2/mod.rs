//! HTTP/2 framing of one connection, both directions (RFC 9113): h2c with
//! prior knowledge, h2c after an `Upgrade`, and h2 inside TLS (ALPN), whose
//! plaintext the TLS probes see the same way.
//!
//! Input: the connection's byte chunks with their [`ChunkTime`], as for
//! HTTP/1.1. Output: the same [`ExchangeEvent`]s HTTP/1.1 gives (head,
//! decoded body bytes, end), the exchange being the stream, and stream
//! resets. Streams interleave; each completes on its own.
//!
//! Header blocks are HPACK-decoded with one dynamic table per direction
//! (`loona-hpack`). A protocol error stops this connection only.

mod fields;
mod frame;

use std::collections::HashMap;

use loona_hpack::Decoder;

use crate::http::{
    decoder_for, BodyOutput, ChunkTime, ExchangeEvent, Framer, FramingError, Head, HttpEvent,
    HttpLimits, RequestHead, ResponseHead, Role,
};
use crate::stream::{Direction, Side};
use frame::{FrameHeader, FrameReader, Piece};

/// What a client sends before its first frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HPACK's dynamic table size before SETTINGS say otherwise.
const DEFAULT_TABLE_SIZE: usize = 4096;

/// The largest dynamic table allowed, whatever SETTINGS say: it is memory
/// the peers' encoders decide.
const MAX_TABLE_SIZE: usize = 64 * 1024;

/// What a connection's opening bytes (of one direction) say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// HTTP/2, and which side the watched process is: the client preface
    /// comes from the client, a SETTINGS frame before anything else from
    /// the server.
    Http2(Side),
    /// Not HTTP/2 (HTTP/1.x, or nothing this agent reads).
    Other,
    /// Too few bytes to tell (`PR` may become `PRI` or `PROPFIND`).
    Unsure,
}

/// Tells HTTP/2 from the first bytes of a connection in `direction`.
pub fn detect(direction: Direction, bytes: &[u8]) -> Opening {
    let (client, server) = match direction {
        Direction::Egress => (Side::Client, Side::Server),
        Direction::Ingress => (Side::Server, Side::Client),
    };
    if bytes.starts_with(PREFACE) {
        return Opening::Http2(client);
    }
    if PREFACE.starts_with(bytes) {
        return Opening::Unsure;
    }
    let Some(header) = bytes.get(..9).and_then(|b| b.try_into().ok()) else {
        // Could these be the start of a SETTINGS frame on stream 0 (length
        // below 64 KiB, type 4, no flags)?
        let settings = [Some(0), None, None, Some(frame::SETTINGS), Some(0), Some(0)];
        let fits = bytes
            .iter()
            .zip(settings.iter().chain(std::iter::repeat(&Some(0))))
            .all(|(b, want)| want.is_none_or(|w| *b == w));
        return if fits {
            Opening::Unsure
        } else {
            Opening::Other
        };
    };
    let header = FrameHeader::parse(header);
    let settings = header.kind == frame::SETTINGS
        && header.flags == 0
        && header.stream == 0
        && header.len.is_multiple_of(6)
        && header.len <= 16 * 1024;
    if settings {
        Opening::Http2(server)
    } else {
        Opening::Other
    }
}

/// One message of a stream: its head seen, its end seen, its body decoding.
#[derive(Debug)]
struct Half {
    head: bool,
    ended: bool,
    body: BodyOutput,
}

/// A stream's request and response.
#[derive(Debug)]
struct Stream {
    request: Half,
    response: Half,
}

impl Stream {
    fn new(limits: &HttpLimits) -> Self {
        let half = |role| Half {
            head: false,
            ended: false,
            body: BodyOutput::new(role, limits.max_decoded_body),
        };
        Self {
            request: half(Role::Request),
            response: half(Role::Response),
        }
    }

    fn half(&mut self, role: Role) -> &mut Half {
        match role {
            Role::Request => &mut self.request,
            Role::Response => &mut self.response,
        }
    }
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    /// A PUSH_PROMISE's block: decoded to keep the table, then dropped.
    push: bool,
    fragment: Vec<u8>,
    first_byte: ChunkTime,
}

/// One direction: its frames and its HPACK decoder.
struct Peer {
    role: Role,
    frames: FrameReader,
    hpack: Decoder<'static>,
    block: Option<Block>,
}

impl Peer {
    fn new(role: Role, limits: &HttpLimits) -> Self {
        let mut hpack = Decoder::new();
        hpack.set_max_allowed_table_size(DEFAULT_TABLE_SIZE);
        Self {
            role,
            frames: FrameReader::new(role == Role::Request, limits.max_head_bytes),
            hpack,
            block: None,
        }
    }
}

/// Frames both directions of one HTTP/2 connection.
pub struct Http2Connection {
    side: Side,
    limits: HttpLimits,
    client: Peer,
    server: Peer,
    streams: HashMap<u32, Stream>,
    failed: bool,
}

impl std::fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Connection")
            .field("side", &self.side)
            .field("streams", &self.streams.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl Http2Connection {
    /// A connection from its start (the client preface is expected); `side`
    /// as [`detect`] tells it.
    pub fn new(side: Side, limits: HttpLimits) -> Self {
        Self {
            side,
            limits,
            client: Peer::new(Role::Request, &limits),
            server: Peer::new(Role::Response, &limits),
            streams: HashMap::new(),
            failed: false,
        }
    }

    /// A connection upgraded from HTTP/1.1 (`Upgrade: h2c`): the request
    /// that asked is stream 1, already sent; its response comes in frames.
    pub fn upgraded(side: Side, limits: HttpLimits) -> Self {
        let mut conn = Self::new(side, limits);
        let mut stream = Stream::new(&limits);
        stream.request.head = true;
        stream.request.ended = true;
        conn.streams.insert(1, stream);
        conn
    }
}

impl Framer for Http2Connection {
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
        let from_client = (direction == Direction::Egress) == (self.side != Side::Server);
        let (peer, other) = if from_client {
            (&mut self.client, &mut self.server)
        } else {
            (&mut self.server, &mut self.client)
        };
        let mut frames = Frames {
            role: peer.role,
            hpack: &mut peer.hpack,
            block: &mut peer.block,
            other_hpack: &mut other.hpack,
            streams: &mut self.streams,
            limits: &self.limits,
            time,
            sink,
        };
        let result = peer
            .frames
            .feed(gap_before, bytes, time, &mut |piece| frames.piece(piece));
        self.failed = result.is_err();
        result
    }

    /// Every HTTP/2 message is delimited by frames: a close ends none.
    fn close(&mut self, _sink: &mut dyn FnMut(ExchangeEvent<'_>)) {}
}

/// What one direction's frames do to the connection, during one chunk.
struct Frames<'c> {
    role: Role,
    hpack: &'c mut Decoder<'static>,
    block: &'c mut Option<Block>,
    /// The other direction's decoder, which this one's SETTINGS bound.
    other_hpack: &'c mut Decoder<'static>,
    streams: &'c mut HashMap<u32, Stream>,
    limits: &'c HttpLimits,
    time: ChunkTime,
    sink: &'c mut Sink<'c>,
}

/// Where a connection's events go.
type Sink<'a> = dyn FnMut(ExchangeEvent<'_>) + 'a;

impl Frames<'_> {
    fn piece(&mut self, piece: Piece<'_>) -> Result<(), FramingError> {
        if self.block.is_some()
            && !matches!(piece, Piece::Frame { header, .. } if header.kind == frame::CONTINUATION)
        {
            return Err(FramingError::Http2("header block interrupted"));
        }
        match piece {
            Piece::Data { stream, bytes } => {
                if let Some((half, sink)) = self.open_half(stream) {
                    half.body.pass(bytes, &mut |event| {
                        sink(ExchangeEvent::Message {
                            exchange: stream.into(),
                            event,
                        })
                    });
                }
            }
            Piece::DataGap { stream } => {
                if let Some((half, sink)) = self.open_half(stream) {
                    half.body.stop(&mut |event| {
                        sink(ExchangeEvent::Message {
                            exchange: stream.into(),
                            event,
                        })
                    });
                }
            }
            Piece::DataEnd { stream, end_stream } => {
                if stream == 0 {
                    return Err(FramingError::Http2("DATA on stream 0"));
                }
                if end_stream {
                    self.end(stream);
                }
            }
            Piece::Frame {
                header,
                payload,
                first_byte,
            } => self.frame(header, payload, first_byte)?,
        }
        Ok(())
    }

    /// The current direction's message on `stream` if it is under way, and
    /// the sink.
    fn open_half(&mut self, stream: u32) -> Option<(&mut Half, &mut Sink<'_>)> {
        let half = self.streams.get_mut(&stream)?.half(self.role);
        (half.head && !half.ended).then_some((half, &mut *self.sink))
    }

    fn frame(
        &mut self,
        header: FrameHeader,
        payload: &[u8],
        first_byte: ChunkTime,
    ) -> Result<(), FramingError> {
        match header.kind {
            frame::HEADERS | frame::PUSH_PROMISE => {
                if header.stream == 0 {
                    return Err(FramingError::Http2("header block on stream 0"));
                }
                let push = header.kind == frame::PUSH_PROMISE;
                let fragment = fragment(header, payload)?;
                *self.block = Some(Block {
                    stream: header.stream,
                    end_stream: header.has(frame::END_STREAM) && !push,
                    push,
                    fragment: fragment.to_vec(),
                    first_byte,
                });
            }
            frame::CONTINUATION => {
                let block = self
                    .block
                    .as_mut()
                    .filter(|b| b.stream == header.stream)
                    .ok_or(FramingError::Http2("stray CONTINUATION"))?;
                if block.fragment.len() + payload.len() > self.limits.max_head_bytes {
                    return Err(FramingError::HeadTooLarge(self.limits.max_head_bytes));
                }
                block.fragment.extend_from_slice(payload);
            }
            frame::RST_STREAM => {
                if self.streams.remove(&header.stream).is_some() {
                    (self.sink)(ExchangeEvent::Reset {
                        exchange: header.stream.into(),
                    });
                }
                return Ok(());
            }
            frame::SETTINGS if !header.has(frame::ACK) => {
                for setting in payload.chunks_exact(6) {
                    // SETTINGS_HEADER_TABLE_SIZE bounds the peer's encoder.
                    if setting[..2] == [0, 1] {
                        let size =
                            u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                        self.other_hpack.set_max_allowed_table_size(
                            (size as usize).clamp(DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE),
                        );
                    }
                }
                return Ok(());
            }
            // PING, PRIORITY, WINDOW_UPDATE, GOAWAY (the close that follows
            // ends what is open) and unknown types carry nothing to follow.
            _ => return Ok(()),
        }
        if header.has(frame::END_HEADERS) {
            if let Some(block) = self.block.take() {
                self.headers(block)?;
            }
        }
        Ok(())
    }

    /// A complete header block: a message's head, or trailers.
    fn headers(&mut self, block: Block) -> Result<(), FramingError> {
        let fields = fields::decode(self.hpack, &block.fragment, self.limits.max_head_bytes)?;
        if block.push {
            return Ok(());
        }
        let id = block.stream;
        if !self.streams.contains_key(&id) {
            if self.streams.len() >= self.limits.max_streams {
                return Err(FramingError::Http2("too many open streams"));
            }
            self.streams.insert(id, Stream::new(self.limits));
        }
        let role = self.role;
        let half = self.streams.get_mut(&id).expect("inserted").half(role);
        if half.ended {
            return Ok(());
        }
        if !half.head {
            let head = match role {
                Role::Request => Head::Request(RequestHead {
                    method: fields.method.unwrap_or_default(),
                    target: fields.path.unwrap_or_default(),
                    headers: fields.headers,
                }),
                Role::Response => {
                    let status = fields
                        .status
                        .ok_or(FramingError::Http2("response without :status"))?;
                    if (100..200).contains(&status) {
                        // Interim: the final head follows.
                        return Ok(());
                    }
                    Head::Response(ResponseHead {
                        status,
                        headers: fields.headers,
                    })
                }
            };
            half.head = true;
            let headers = match &head {
                Head::Request(h) => &h.headers,
                Head::Response(h) => &h.headers,
            };
            half.body.reset(decoder_for(headers));
            (self.sink)(ExchangeEvent::Message {
                exchange: id.into(),
                event: HttpEvent::Head {
                    head,
                    first_byte: block.first_byte,
                },
            });
        }
        if block.end_stream {
            self.end(id);
        }
        Ok(())
    }

    /// The current direction's message on `stream` is complete.
    fn end(&mut self, id: u32) {
        let role = self.role;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let half = stream.half(role);
        if !half.head || half.ended {
            return;
        }
        half.ended = true;
        let done = stream.request.ended && stream.response.ended;
        (self.sink)(ExchangeEvent::Message {
            exchange: id.into(),
            event: HttpEvent::End {
                role,
                last_byte: self.time,
            },
        });
        if done {
            self.streams.remove(&id);
        }
    }
}

/// A HEADERS or PUSH_PROMISE payload without its padding, priority or
/// promised stream id: the header block fragment.
fn fragment(header: FrameHeader, payload: &[u8]) -> Result<&[u8], FramingError> {
    let short = FramingError::Http2("header frame too short");
    let mut rest = payload;
    let mut pad = 0;
    if header.has(frame::PADDED) {
        pad = usize::from(*rest.first().ok_or(short.clone())?);
        rest = &rest[1..];
    }
    let skip = if header.kind == frame::PUSH_PROMISE {
        4
    } else if header.has(frame::PRIORITY) {
        5
    } else {
        0
    };
    rest = rest.get(skip..).ok_or(short.clone())?;
    rest.get(..rest.len().checked_sub(pad).ok_or(short)?)
        .ok_or(FramingError::Http2("header frame too short"))
}

#[cfg(test)]
mod tests;
