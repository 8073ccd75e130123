//! One connection: which protocol frames it (told by its first bytes; an
//! h2c upgrade turns HTTP/1.1 into HTTP/2), and its exchanges, paired by
//! the [`Framer`]'s exchange ids, each applied its events until it ends and
//! is built into an [`LlmCall`].

use std::collections::BTreeMap;

use super::build::build;
use super::exchange::{Ending, Exchange};
use super::record::LlmCall;
use super::{Limits, ReconstructionStats};
use crate::http::{
    starts_request_line, ChunkTime, ExchangeEvent, ExchangeId, Framer, FramingError, Head,
    HttpConnection, HttpEvent, Role,
};
use crate::http2::{self, Http2Connection, Opening};
use crate::stream::{CloseReason, ConnectionInfo, DataChunk, Direction, Side};

/// What frames the connection's bytes, decided by its first bytes.
enum Protocol {
    /// Open before it was watched (its opening was not seen) and first
    /// seen in the middle of a message: bytes are skipped until a chunk
    /// starts a request, where framing starts afresh.
    JoinedMidway,
    /// The first chunks, too short to tell (`PR` could be `PRI` or `PUT`).
    Undecided(Vec<DataChunk>),
    /// HTTP/1.1 or HTTP/2.
    Framed(Box<dyn Framer>),
}

/// Tracks one connection.
pub(super) struct Connection {
    info: ConnectionInfo,
    protocol: Protocol,
    exchanges: Exchanges,
    /// Framing failed: everything else on this connection is ignored.
    failed: bool,
}

/// A connection's exchanges, by the id its framer gave them.
#[derive(Default)]
struct Exchanges {
    open: BTreeMap<ExchangeId, Exchange>,
    /// Exchanges finished during the current event, in order.
    finished: Vec<(Exchange, Ending)>,
}

impl Connection {
    pub(super) fn new(info: ConnectionInfo) -> Self {
        Self {
            info,
            protocol: Protocol::Undecided(Vec::new()),
            exchanges: Exchanges::default(),
            failed: false,
        }
    }

    /// The watched process.
    pub(super) fn pid(&self) -> u32 {
        self.info.pid
    }

    /// The side, as the framing knows it.
    fn side(&self) -> Side {
        match &self.protocol {
            Protocol::JoinedMidway | Protocol::Undecided(_) => self.info.side,
            Protocol::Framed(framer) => framer.side(),
        }
    }

    /// Feeds one data chunk; finished calls are appended to `out`.
    pub(super) fn data(
        &mut self,
        chunk: &DataChunk,
        limits: &Limits,
        stats: &mut ReconstructionStats,
        out: &mut Vec<LlmCall>,
    ) {
        match &self.protocol {
            // The rest of what was in flight when the agent started.
            Protocol::JoinedMidway if !opens_exchange(&chunk.bytes) => return,
            Protocol::JoinedMidway => self.protocol = Protocol::Undecided(Vec::new()),
            Protocol::Undecided(pending)
                if pending.is_empty()
                    && self.info.side == Side::Unknown
                    && !opens_exchange(&chunk.bytes) =>
            {
                stats.connections_joined_midway += 1;
                self.protocol = Protocol::JoinedMidway;
                return;
            }
            _ => {}
        }
        let Protocol::Undecided(pending) = &mut self.protocol else {
            return self.frame(chunk, limits, stats, out);
        };
        // The protocol is told by the first direction's opening bytes.
        let first = pending.first().unwrap_or(chunk).direction;
        let mut opening: Vec<u8> = pending.iter().flat_map(|c| c.bytes.clone()).collect();
        if chunk.direction == first {
            opening.extend_from_slice(&chunk.bytes);
        }
        let framer: Box<dyn Framer> = match http2::detect(first, &opening) {
            Opening::Unsure if chunk.direction == first => {
                pending.push(chunk.clone());
                return;
            }
            Opening::Http2(side) => Box::new(Http2Connection::new(side, limits.http)),
            _ => Box::new(HttpConnection::new(self.info.side, limits.http)),
        };
        let Protocol::Undecided(pending) =
            std::mem::replace(&mut self.protocol, Protocol::Framed(framer))
        else {
            unreachable!("matched above")
        };
        for held in &pending {
            self.frame(held, limits, stats, out);
        }
        self.frame(chunk, limits, stats, out);
    }

    /// Frames one chunk once the protocol is known.
    fn frame(
        &mut self,
        chunk: &DataChunk,
        limits: &Limits,
        stats: &mut ReconstructionStats,
        out: &mut Vec<LlmCall>,
    ) {
        let Protocol::Framed(framer) = &mut self.protocol else {
            return;
        };
        if self.failed {
            return;
        }
        if chunk.gap_before > 0 {
            stats.capture_gaps += 1;
        }
        let time = ChunkTime {
            start: chunk.call_start,
            end: chunk.call_end,
        };
        let exchanges = &mut self.exchanges;
        let direction = chunk.direction;
        let mut feed = |framer: &mut dyn Framer, exchanges: &mut Exchanges, gap, bytes: &[u8]| {
            framer.feed(direction, gap, bytes, time, &mut |event| {
                exchanges.on_event(event, time, limits, stats)
            })
        };
        let mut result = feed(framer.as_mut(), exchanges, chunk.gap_before, &chunk.bytes);
        if let Some(upgrade) = framer.take_h2c_upgrade() {
            // The request that asked is answered on stream 1.
            *framer = Box::new(Http2Connection::upgraded(framer.side(), limits.http));
            if let Some(exchange) = exchanges.open.remove(&upgrade.exchange) {
                exchanges.open.insert(1, exchange);
            }
            result = result.and_then(|()| feed(framer.as_mut(), exchanges, 0, &upgrade.rest));
        }
        if let Err(FramingError::Gap(_)) = result {
            // HTTP/2 cannot resume after lost frame bytes (HPACK state is
            // gone): the open calls end where the capture stopped.
            self.end_all(Ending::CaptureLost, stats);
            self.failed = true;
            self.flush(limits, stats, out);
            return;
        }
        let failure = match result {
            Ok(()) => None,
            Err(FramingError::NotHttp) => Some(&mut stats.non_http_connections),
            Err(FramingError::TooManyPending(_)) => Some(&mut stats.pending_overflow),
            Err(_) => Some(&mut stats.parse_failures),
        };
        if let Some(counter) = failure {
            *counter += 1;
            self.fail(stats);
        }
        self.flush(limits, stats, out);
    }

    /// The connection ended: every open exchange ends with it.
    pub(super) fn close(
        mut self,
        reason: CloseReason,
        limits: &Limits,
        stats: &mut ReconstructionStats,
        out: &mut Vec<LlmCall>,
    ) {
        if !self.failed {
            let exchanges = &mut self.exchanges;
            if let Protocol::Framed(framer) = &mut self.protocol {
                let time = ChunkTime::default();
                framer.close(&mut |event| exchanges.on_event(event, time, limits, stats));
            }
            self.end_all(Ending::Cut(reason), stats);
        }
        self.flush(limits, stats, out);
    }

    /// Ends every open exchange early: with `ending` if its response had
    /// started, else as unanswered.
    fn end_all(&mut self, ending: Ending, stats: &mut ReconstructionStats) {
        let exchanges = &mut self.exchanges;
        for exchange in std::mem::take(&mut exchanges.open).into_values() {
            exchanges.finished.push(exchange.ended_early(ending, stats));
        }
    }

    /// Gives up on the connection; its open LLM exchanges are lost.
    fn fail(&mut self, stats: &mut ReconstructionStats) {
        self.failed = true;
        let open = std::mem::take(&mut self.exchanges.open);
        stats.calls_lost += open.values().filter(|e| e.llm.is_some()).count() as u64;
    }

    fn flush(&mut self, limits: &Limits, stats: &mut ReconstructionStats, out: &mut Vec<LlmCall>) {
        let side = self.side();
        for (exchange, ending) in self.exchanges.finished.drain(..) {
            if let Some(call) = build(&self.info, side, exchange, ending, limits, stats) {
                stats.llm_calls += 1;
                out.push(call);
            }
        }
    }
}

/// Whether a chunk's bytes start an exchange: an HTTP/1.x request line or
/// (the start of) the HTTP/2 client preface. A connection seen opening
/// starts that way; one joined mid-way is followed from such a chunk on.
fn opens_exchange(bytes: &[u8]) -> bool {
    match http2::detect(Direction::Egress, bytes) {
        Opening::Http2(Side::Client) | Opening::Unsure => true,
        _ => starts_request_line(bytes),
    }
}

impl Exchanges {
    /// Routes one framing event (from a chunk with `time`) to its exchange.
    fn on_event(
        &mut self,
        event: ExchangeEvent<'_>,
        time: ChunkTime,
        limits: &Limits,
        stats: &mut ReconstructionStats,
    ) {
        match event {
            ExchangeEvent::Message {
                exchange,
                event:
                    HttpEvent::Head {
                        head: Head::Request(head),
                        first_byte,
                    },
            } => {
                stats.requests += 1;
                self.open.insert(exchange, Exchange::new(head, first_byte));
            }
            ExchangeEvent::Message { exchange, event } => match self.open.get_mut(&exchange) {
                Some(open) => {
                    if let Some(ending) = apply(open, event, time, limits, stats) {
                        let open = self.open.remove(&exchange).expect("just seen");
                        self.finished.push((open, ending));
                    }
                }
                None => {
                    if let HttpEvent::Head { .. } = event {
                        stats.unmatched_responses += 1;
                    }
                }
            },
            ExchangeEvent::Reset { exchange } => {
                if let Some(open) = self.open.remove(&exchange) {
                    self.finished
                        .push(open.ended_early(Ending::Cut(CloseReason::Reset), stats));
                }
            }
        }
    }
}

/// Applies one event (other than a request head) to its exchange; returns
/// how the exchange ended if this event ended it (its response ended or
/// was cut).
fn apply(
    exchange: &mut Exchange,
    event: HttpEvent<'_>,
    time: ChunkTime,
    limits: &Limits,
    stats: &mut ReconstructionStats,
) -> Option<Ending> {
    match event {
        HttpEvent::Head {
            head: Head::Request(_),
            ..
        } => {}
        HttpEvent::Head {
            head: Head::Response(head),
            first_byte,
        } => {
            if exchange.response.is_none() {
                // An early response (before the request ended) still pairs.
                exchange.resolve(exchange.request_sent.is_some(), stats);
                exchange.respond(&head, first_byte, limits);
            } else {
                stats.unmatched_responses += 1;
            }
        }
        HttpEvent::Body {
            role: Role::Request,
            bytes,
        } => exchange.request_body(bytes, limits, stats),
        HttpEvent::Body {
            role: Role::Response,
            bytes,
        } => {
            if let Some(response) = &mut exchange.response {
                response.body(bytes, time.end, limits);
            }
        }
        HttpEvent::BodyTruncated {
            role: Role::Request,
        } => exchange.truncate_request(stats),
        HttpEvent::BodyTruncated {
            role: Role::Response,
        } => {
            if let Some(response) = &mut exchange.response {
                response.truncated = true;
            }
        }
        HttpEvent::Cut {
            role: Role::Request,
        } => {
            exchange.truncate_request(stats);
            exchange.resolve(false, stats);
        }
        HttpEvent::Cut {
            role: Role::Response,
        } => return Some(Ending::CaptureLost),
        HttpEvent::ClosedShort { role } => match role {
            Role::Request => exchange.truncate_request(stats),
            Role::Response => {
                if let Some(response) = &mut exchange.response {
                    response.truncated = true;
                    response.closed_short = true;
                }
            }
        },
        HttpEvent::End {
            role: Role::Request,
            last_byte,
        } => {
            exchange.request_sent = Some(last_byte.end);
            exchange.resolve(true, stats);
        }
        HttpEvent::End {
            role: Role::Response,
            last_byte,
        } => {
            if let Some(response) = &mut exchange.response {
                // The end (e.g. the last chunk's terminator) may come in a
                // later read than the last body byte.
                response.last_byte = last_byte.end;
                return Some(Ending::Complete);
            }
        }
    }
    None
}
