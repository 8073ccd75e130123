//! From connection events to LLM call records.
//!
//! Input: each connection's [`StreamEvent`]s, in order (connections may
//! interleave freely). Output: one [`LlmCall`] per request/response pair
//! that is an LLM API call, returned by the event that finished it, plus
//! [`ReconstructionStats`] counters for what was dropped, cut or not
//! understood. Bad input never fails the tracker: it is counted.
//!
//! Each connection runs `http` (framing) → `sse` (frames) → `providers`
//! (meaning); this module pairs requests with responses, times every frame
//! by the read that completed it, and counts tokens.

mod bpe;
mod build;
mod connection;
mod errors;
mod exchange;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixture;
mod record;
mod tokens;

pub use tokens::prepare as prepare_tokenizer;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

use crate::http::HttpLimits;
use crate::stream::{ConnectionId, ConnectionInfo, StreamEvent, Transport};
use connection::Connection;

pub use errors::ErrorType;
pub use record::{CallContent, LlmCall, Outcome, OutputChunk, Timings, Usage};

/// Caps that bound memory per connection and per call, and whether a call
/// keeps its text. Past a cap the call is still timed; what was cut is
/// flagged on the record and counted.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections followed at once; more are ignored (and counted).
    pub max_connections: usize,
    /// HTTP framing caps (head size, decoded body size).
    pub http: HttpLimits,
    /// Request body bytes kept to read model and parameters.
    pub max_request_body: usize,
    /// Non-streamed response body bytes kept to decode.
    pub max_response_body: usize,
    /// Bytes of one SSE event or NDJSON line.
    pub max_event_bytes: usize,
    /// Generated text kept per call to count tokens.
    pub max_output_text: usize,
    /// Output chunks listed per call.
    pub max_chunks: usize,
    /// Put the prompt and completion text on the record
    /// ([`LlmCall::content`]). Off by default: text is read to count
    /// tokens, then dropped.
    pub keep_content: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 16 * 1024,
            http: HttpLimits::default(),
            max_request_body: 4 * 1024 * 1024,
            max_response_body: 4 * 1024 * 1024,
            max_event_bytes: 1024 * 1024,
            max_output_text: 1024 * 1024,
            max_chunks: 4096,
            keep_content: false,
        }
    }
}

/// Counters of everything reconstruction did not turn into a clean record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconstructionStats {
    /// Connections seen opening.
    pub connections_opened: u64,
    /// Connections seen closing.
    pub connections_closed: u64,
    /// Connections followed now (a gauge).
    pub open_connections: u64,
    /// Connections ignored because `max_connections` were open.
    pub connections_rejected: u64,
    /// Data or close events for a connection never opened.
    pub events_without_open: u64,
    /// Connections whose bytes were neither HTTP/1.x nor HTTP/2.
    pub non_http_connections: u64,
    /// Connections open before they were watched and first seen in the
    /// middle of a message (the agent started, or restarted, meanwhile):
    /// what was in flight is not recorded, the requests after it are.
    pub connections_joined_midway: u64,
    /// Connections whose HTTP framing failed (garbage, truncation, gaps).
    pub parse_failures: u64,
    /// Chunks that arrived after lost bytes.
    pub capture_gaps: u64,
    /// HTTP requests seen.
    pub requests: u64,
    /// Requests that were not LLM API calls.
    pub non_llm_requests: u64,
    /// LLM call records produced.
    pub llm_calls: u64,
    /// LLM calls lost with a connection whose framing failed.
    pub calls_lost: u64,
    /// Responses with no request to pair with.
    pub unmatched_responses: u64,
    /// Connections given up because too many requests awaited responses.
    pub pending_overflow: u64,
    /// Request bodies cut at `max_request_body`.
    pub request_bodies_truncated: u64,
    /// Responses with bytes lost or cut.
    pub response_bodies_truncated: u64,
    /// SSE events or NDJSON lines dropped at `max_event_bytes`.
    pub oversized_events: u64,
    /// Frames or bodies a provider could not decode.
    pub decode_errors: u64,
    /// Calls whose generated text outgrew `max_output_text`.
    pub output_text_truncated: u64,
    /// Output chunks not listed at `max_chunks`.
    pub chunks_dropped: u64,
}

/// Hashes [`ConnectionId`]s: they are assigned by `reassembly`, never by
/// the traffic, so a multiply is enough (SipHash costs per read).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Turns every connection's events into [`LlmCall`]s.
pub struct CallTracker {
    limits: Limits,
    connections: HashMap<ConnectionId, Connection, BuildHasherDefault<IdHasher>>,
    stats: ReconstructionStats,
}

impl CallTracker {
    /// A tracker with the given caps.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            connections: HashMap::default(),
            stats: ReconstructionStats::default(),
        }
    }

    /// Feeds one event of one connection; returns the LLM calls that
    /// finished with it (usually none or one; more when pipelined or when
    /// a close ends several).
    pub fn on_event(&mut self, conn: ConnectionId, event: &StreamEvent) -> Vec<LlmCall> {
        let mut out = Vec::new();
        match event {
            StreamEvent::Opened(info) => self.open(conn, info.clone()),
            StreamEvent::Data(chunk) => {
                if let Some(connection) = self.connections.get_mut(&conn) {
                    connection.data(chunk, &self.limits, &mut self.stats, &mut out);
                } else {
                    self.stats.events_without_open += 1;
                    self.open(conn, unknown(conn));
                    if let Some(connection) = self.connections.get_mut(&conn) {
                        connection.data(chunk, &self.limits, &mut self.stats, &mut out);
                    }
                }
            }
            StreamEvent::Closed { reason, .. } => match self.connections.remove(&conn) {
                Some(connection) => {
                    self.stats.connections_closed += 1;
                    self.stats.open_connections = self.connections.len() as u64;
                    connection.close(*reason, &self.limits, &mut self.stats, &mut out);
                }
                None => self.stats.events_without_open += 1,
            },
        }
        out
    }

    /// The counters so far.
    pub fn stats(&self) -> &ReconstructionStats {
        &self.stats
    }

    /// The process of a connection followed now.
    pub fn pid_of(&self, conn: ConnectionId) -> Option<u32> {
        self.connections.get(&conn).map(Connection::pid)
    }

    /// Connections currently followed.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    fn open(&mut self, id: ConnectionId, info: ConnectionInfo) {
        if self.connections.len() >= self.limits.max_connections
            && !self.connections.contains_key(&id)
        {
            self.stats.connections_rejected += 1;
            return;
        }
        self.stats.connections_opened += 1;
        self.connections.insert(id, Connection::new(info));
        self.stats.open_connections = self.connections.len() as u64;
    }
}

/// What we know of a connection first seen by its data.
fn unknown(id: ConnectionId) -> ConnectionInfo {
    ConnectionInfo {
        id,
        pid: 0,
        comm: None,
        fd: None,
        local: None,
        peer: None,
        side: crate::stream::Side::Unknown,
        transport: Transport::Tcp,
    }
}
