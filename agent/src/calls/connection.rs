//! One connection: its framing (HTTP/1.1, or HTTP/2 from the first bytes
//! or after an h2c upgrade), its exchanges (HTTP/1.1's pipelined requests
//! wait in order for their responses; HTTP/2's are keyed by stream and
//! complete in any order), and turning each finished exchange into an
//! [`LlmCall`].

use std::collections::{BTreeMap, VecDeque};

use super::exchange::Exchange;
use super::record::{CallContent, ErrorType, LlmCall, OutputChunk};
use super::{tokens, Limits, ReconstructionStats};
use crate::http::{
    starts_request_line, ChunkTime, Head, HttpConnection, HttpError, HttpEvent, Role,
};
use crate::http2::{self, Http2Connection, Http2Event, Opening};
use crate::stream::{CloseReason, ConnectionInfo, DataChunk, Direction, Side};

/// How an exchange ended.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// The response's last byte arrived.
    Complete,
    /// The connection (or the HTTP/2 stream) ended while the response was
    /// arriving.
    Cut(CloseReason),
    /// The connection ended before a response started.
    NoResponse,
    /// The capture lost bytes the framing could not step over; what the
    /// response did after them is unknown.
    CaptureLost,
}

/// How the connection's bytes are framed, decided by its first bytes.
// One per connection, set once: boxing a variant would only add a pointer.
#[allow(clippy::large_enum_variant)]
enum Framing {
    /// Open before it was watched (its opening was not seen) and first
    /// seen in the middle of a message: bytes are skipped until a chunk
    /// starts a request, where framing starts afresh.
    JoinedMidway,
    /// The first chunks, too short to tell (`PR` could be `PRI` or `PUT`).
    Undecided(Vec<DataChunk>),
    Http1(HttpConnection),
    Http2(Http2Connection),
}

/// Tracks one connection.
pub(super) struct Connection {
    info: ConnectionInfo,
    framing: Framing,
    exchanges: Exchanges,
    /// Framing failed: everything else on this connection is ignored.
    failed: bool,
}

/// A connection's exchanges. HTTP/1.1's in request order: the front one is
/// receiving its response, the back one may still be sending its request.
/// HTTP/2's by stream id.
#[derive(Default)]
struct Exchanges {
    queue: VecDeque<Exchange>,
    streams: BTreeMap<u32, Exchange>,
    /// Exchanges finished during the current event, in order.
    finished: Vec<(Exchange, Ending)>,
    /// More requests waited for responses than `max_pending`.
    overflow: bool,
}

impl Connection {
    pub(super) fn new(info: ConnectionInfo) -> Self {
        Self {
            info,
            framing: Framing::Undecided(Vec::new()),
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
        match &self.framing {
            Framing::JoinedMidway | Framing::Undecided(_) => self.info.side,
            Framing::Http1(http) => http.side(),
            Framing::Http2(http) => http.side(),
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
        match &self.framing {
            // The rest of what was in flight when the agent started.
            Framing::JoinedMidway if !opens_exchange(&chunk.bytes) => return,
            Framing::JoinedMidway => self.framing = Framing::Undecided(Vec::new()),
            Framing::Undecided(pending)
                if pending.is_empty()
                    && self.info.side == Side::Unknown
                    && !opens_exchange(&chunk.bytes) =>
            {
                stats.connections_joined_midway += 1;
                self.framing = Framing::JoinedMidway;
                return;
            }
            _ => {}
        }
        let Framing::Undecided(pending) = &mut self.framing else {
            return self.frame(chunk, limits, stats, out);
        };
        // The protocol is told by the first direction's opening bytes.
        let first = pending.first().unwrap_or(chunk).direction;
        let mut opening: Vec<u8> = pending.iter().flat_map(|c| c.bytes.clone()).collect();
        if chunk.direction == first {
            opening.extend_from_slice(&chunk.bytes);
        }
        let framing = match http2::detect(first, &opening) {
            Opening::Unsure if chunk.direction == first => {
                pending.push(chunk.clone());
                return;
            }
            Opening::Http2(side) => Framing::Http2(Http2Connection::new(side, limits.http)),
            _ => Framing::Http1(HttpConnection::new(self.info.side, limits.http)),
        };
        let Framing::Undecided(pending) = std::mem::replace(&mut self.framing, framing) else {
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
        let (direction, gap, bytes) = (chunk.direction, chunk.gap_before, &chunk.bytes[..]);
        let mut result = self.feed(direction, gap, bytes, time, limits, stats);
        if let Framing::Http1(http) = &mut self.framing {
            if let Some(rest) = http.take_h2c() {
                // Upgraded: the request that asked is answered on stream 1.
                self.framing = Framing::Http2(Http2Connection::upgraded(http.side(), limits.http));
                if let Some(exchange) = self.exchanges.queue.pop_front() {
                    self.exchanges.streams.insert(1, exchange);
                }
                result = result.and_then(|()| self.feed(direction, 0, &rest, time, limits, stats));
            }
        }
        if let Err(HttpError::Gap(_)) = result {
            // HTTP/2 cannot resume after lost frame bytes (HPACK state is
            // gone): the open calls end where the capture stopped.
            self.end_all(Ending::CaptureLost, stats);
            self.failed = true;
            self.flush(limits, stats, out);
            return;
        }
        let failure = match result {
            Err(HttpError::NotHttp) => Some(&mut stats.non_http_connections),
            Err(_) => Some(&mut stats.parse_failures),
            Ok(()) if self.exchanges.overflow => Some(&mut stats.pending_overflow),
            Ok(()) => None,
        };
        if let Some(counter) = failure {
            *counter += 1;
            self.fail(stats);
        }
        self.flush(limits, stats, out);
    }

    /// Frames bytes of one direction with the connection's framing.
    fn feed(
        &mut self,
        direction: Direction,
        gap: u64,
        bytes: &[u8],
        time: ChunkTime,
        limits: &Limits,
        stats: &mut ReconstructionStats,
    ) -> Result<(), HttpError> {
        let exchanges = &mut self.exchanges;
        match &mut self.framing {
            Framing::JoinedMidway | Framing::Undecided(_) => Ok(()),
            Framing::Http1(http) => http.feed(direction, gap, bytes, time, &mut |event| {
                exchanges.on_http(event, time, limits, stats)
            }),
            Framing::Http2(http) => http.feed(direction, gap, bytes, time, &mut |event| {
                exchanges.on_http2(event, time, limits, stats)
            }),
        }
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
            let time = ChunkTime::default();
            if let Framing::Http1(http) = &mut self.framing {
                http.close(&mut |event| exchanges.on_http(event, time, limits, stats));
            }
            self.end_all(Ending::Cut(reason), stats);
        }
        self.flush(limits, stats, out);
    }

    /// Ends every open exchange early: with `ending` if its response had
    /// started, else as unanswered.
    fn end_all(&mut self, ending: Ending, stats: &mut ReconstructionStats) {
        let exchanges = &mut self.exchanges;
        let open = exchanges
            .queue
            .drain(..)
            .chain(std::mem::take(&mut exchanges.streams).into_values());
        for exchange in open {
            exchanges.finished.push(cut(exchange, ending, stats));
        }
    }

    /// Gives up on the connection; its open LLM exchanges are lost.
    fn fail(&mut self, stats: &mut ReconstructionStats) {
        self.failed = true;
        let queue = std::mem::take(&mut self.exchanges.queue);
        let streams = std::mem::take(&mut self.exchanges.streams);
        stats.calls_lost += queue
            .iter()
            .chain(streams.values())
            .filter(|e| e.llm.is_some())
            .count() as u64;
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

/// An exchange ended early: with `ending` if its response had started.
fn cut(
    mut exchange: Exchange,
    ending: Ending,
    stats: &mut ReconstructionStats,
) -> (Exchange, Ending) {
    exchange.resolve(false, stats);
    let ending = if exchange.response.is_some() {
        ending
    } else {
        Ending::NoResponse
    };
    (exchange, ending)
}

impl Exchanges {
    /// Routes one HTTP/1.1 event (from a chunk with `time`) to its exchange:
    /// a request's to the newest, a response's to the oldest.
    fn on_http(
        &mut self,
        event: HttpEvent<'_>,
        time: ChunkTime,
        limits: &Limits,
        stats: &mut ReconstructionStats,
    ) {
        if self.overflow {
            return;
        }
        if let HttpEvent::Head {
            head: Head::Request(head),
            first_byte,
        } = event
        {
            stats.requests += 1;
            // Requests pair with responses in order, so none can be
            // skipped: past the cap the connection is given up.
            if self.queue.len() >= limits.max_pending {
                self.overflow = true;
                return;
            }
            self.queue.push_back(Exchange::new(head, first_byte));
            return;
        }
        let exchange = match event.role() {
            Role::Request => self.queue.back_mut(),
            Role::Response => self.queue.front_mut(),
        };
        match exchange {
            Some(exchange) => {
                if let Some(ending) = apply(exchange, event, time, limits, stats) {
                    let exchange = self.queue.pop_front().expect("the front one");
                    self.finished.push((exchange, ending));
                }
            }
            None => unmatched(&event, stats),
        }
    }

    /// Routes one HTTP/2 event to its stream's exchange.
    fn on_http2(
        &mut self,
        event: Http2Event<'_>,
        time: ChunkTime,
        limits: &Limits,
        stats: &mut ReconstructionStats,
    ) {
        match event {
            Http2Event::Stream {
                id,
                event:
                    HttpEvent::Head {
                        head: Head::Request(head),
                        first_byte,
                    },
            } => {
                // The framer bounds the streams open at once.
                stats.requests += 1;
                self.streams.insert(id, Exchange::new(head, first_byte));
            }
            Http2Event::Stream { id, event } => match self.streams.get_mut(&id) {
                Some(exchange) => {
                    if let Some(ending) = apply(exchange, event, time, limits, stats) {
                        let exchange = self.streams.remove(&id).expect("just seen");
                        self.finished.push((exchange, ending));
                    }
                }
                None => unmatched(&event, stats),
            },
            Http2Event::Reset { id } => {
                if let Some(exchange) = self.streams.remove(&id) {
                    self.finished
                        .push(cut(exchange, Ending::Cut(CloseReason::Reset), stats));
                }
            }
        }
    }
}

/// An event with no exchange to go to.
fn unmatched(event: &HttpEvent<'_>, stats: &mut ReconstructionStats) {
    if let HttpEvent::Head { .. } = event {
        stats.unmatched_responses += 1;
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

/// The `traceparent` header's trace id and parent span id, if well formed.
fn traceparent(value: &str) -> Option<(String, String)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    valid.then(|| (trace.to_owned(), span.to_owned()))
}

/// Turns a finished exchange into a record; `None` when not an LLM call.
fn build(
    conn: &ConnectionInfo,
    side: Side,
    mut exchange: Exchange,
    ending: Ending,
    limits: &Limits,
    stats: &mut ReconstructionStats,
) -> Option<LlmCall> {
    let (provider, api) = exchange.llm?;
    let request = exchange.request.take().unwrap_or_default();
    let head = exchange.head.take()?;
    let trace = head.header("traceparent").and_then(traceparent);
    let server = match side {
        Side::Server => conn.local,
        _ => conn.peer,
    };
    let mut response = exchange.response.take();
    let mut end = None;
    if let Some(response) = &mut response {
        // Bytes the capture lost are a truncation like any other.
        response.truncated |= matches!(ending, Ending::CaptureLost);
        let oversized = response.finish(response.last_byte);
        stats.oversized_events += oversized;
        // A dropped event is output the record cannot count.
        response.truncated |= oversized > 0;
        if matches!(ending, Ending::Complete | Ending::Cut(_)) {
            end = Some(response.last_byte);
        }
    }
    let mut call = LlmCall {
        connection_id: conn.id,
        pid: conn.pid,
        comm: conn.comm.clone(),
        side,
        server_address: server.map(|a| a.ip().to_string()),
        server_port: server.map(|a| a.port()),
        provider: provider.name(),
        api,
        request_path: head.path().to_owned(),
        request_model: request.model,
        stream: request.stream,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        trace_id: trace.as_ref().map(|t| t.0.clone()),
        parent_span_id: trace.map(|t| t.1),
        response_model: None,
        response_id: None,
        finish_reasons: Vec::new(),
        http_status: response.as_ref().map(|r| r.status),
        input_tokens: None,
        output_tokens: None,
        cached_input_tokens: None,
        reasoning_tokens: None,
        input_tokens_estimated: false,
        output_tokens_estimated: false,
        t0_ns: exchange.t0,
        request_sent_ns: exchange.request_sent,
        first_byte_ns: response.as_ref().map(|r| r.first_byte),
        first_chunk_ns: None,
        first_output_ns: None,
        last_output_ns: None,
        end_ns: end,
        output_chunks: 0,
        chunks: Vec::new(),
        chunks_dropped: 0,
        ttft_s: None,
        time_to_first_chunk_s: None,
        tpot_s: None,
        tokens_per_second: None,
        duration_s: None,
        error_type: None,
        provider_error_type: None,
        error_message: None,
        request_truncated: exchange.request_truncated,
        response_truncated: false,
        content: None,
    };
    let (completion, finished) = match response {
        Some(response) => fill_response(&mut call, response, &request.input_text, stats),
        None => {
            call.error_type = Some(ErrorType::NoResponse);
            (String::new(), false)
        }
    };
    if limits.keep_content {
        call.content = Some(CallContent {
            prompt: request.input_text,
            completion,
        });
    }
    if let Ending::Cut(reason) = ending {
        // Being cut explains a missing end marker better than truncation.
        // A reply that said it was done is whole: clients close once they
        // have `[DONE]`, without waiting for the body's last framing bytes.
        if !finished && matches!(call.error_type, None | Some(ErrorType::StreamTruncated)) {
            call.error_type = Some(cut_error(reason, side));
        }
    }
    call.derive();
    Some(call)
}

/// What closing mid-response means, from the watched process's side.
fn cut_error(reason: CloseReason, side: Side) -> ErrorType {
    match (reason, side) {
        (CloseReason::Reset, _) => ErrorType::ConnectionReset,
        (CloseReason::Closed, Side::Server) | (CloseReason::ProcessExited, Side::Client) => {
            ErrorType::ClientAborted
        }
        _ => ErrorType::ConnectionClosed,
    }
}

/// Copies the response's facts, counts tokens and classifies errors.
/// Returns the generated text, and whether the reply said it was finished
/// (an end event or a finish reason).
fn fill_response(
    call: &mut LlmCall,
    response: super::exchange::Response,
    input_text: &str,
    stats: &mut ReconstructionStats,
) -> (String, bool) {
    let streamed = response.streamed();
    let acc = response.acc;
    let info = acc.info;
    stats.decode_errors += acc.decode_errors;
    stats.output_text_truncated += u64::from(info.text_truncated);
    if response.truncated {
        stats.response_bodies_truncated += 1;
    }
    call.response_truncated = response.truncated;
    call.response_model = info.model;
    call.response_id = info.id;
    call.first_chunk_ns = acc.first_chunk;
    call.first_output_ns = acc.first_output;
    call.last_output_ns = acc.last_output;
    call.output_chunks = acc.output_chunks;
    call.chunks_dropped = acc.output_chunks - acc.marks.len() as u64;
    stats.chunks_dropped += call.chunks_dropped;

    let ends: Vec<usize> = acc.marks.iter().map(|m| m.1).collect();
    let mut counts = Vec::new();
    let total = tokens::count_split(&info.text, &ends, &mut counts);
    call.chunks = acc
        .marks
        .iter()
        .zip(&counts)
        .map(|(&(t_ns, _), &tokens)| OutputChunk { t_ns, tokens })
        .collect();

    let ok = response.status < 400;
    let usage = info.usage;
    call.cached_input_tokens = usage.cached_input;
    call.reasoning_tokens = usage.reasoning;
    call.output_tokens = usage.output;
    call.input_tokens = usage.input;
    if ok && call.output_tokens.is_none() {
        call.output_tokens = Some(total);
        call.output_tokens_estimated = true;
    }
    if ok && call.input_tokens.is_none() && !input_text.is_empty() {
        call.input_tokens = Some(tokens::count(input_text));
        call.input_tokens_estimated = true;
    }

    let finished = info.done || !info.finish_reasons.is_empty();
    call.finish_reasons = info.finish_reasons;
    if let Some(error) = info.error {
        call.provider_error_type = error.kind;
        call.error_message = error.message;
    }
    call.error_type = match response.status {
        500.. => Some(ErrorType::Http5xx),
        400.. => Some(ErrorType::Http4xx),
        _ if call.provider_error_type.is_some() || call.error_message.is_some() => {
            Some(ErrorType::StreamErrorEvent)
        }
        // Unseen bytes may have held the end marker.
        _ if response.truncated && !finished => Some(ErrorType::CaptureIncomplete),
        _ if streamed && !finished => Some(ErrorType::StreamTruncated),
        _ => None,
    };
    (info.text, finished)
}
