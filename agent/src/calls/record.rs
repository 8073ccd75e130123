//! [`LlmCall`]: the one record per LLM request/response pair, and the
//! numbers derived from its timings (as `design.md` defines them).

use serde::Serialize;

use crate::providers::Api;
use crate::stream::{ConnectionId, Side, WallNanos};

/// Why a call failed. One fixed set, so it can be a metric label; the
/// provider's own error type goes in [`LlmCall::provider_error_type`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ErrorType {
    /// HTTP status 400–499.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// HTTP status 500 and above.
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// An error event (or error object) inside a successful response.
    #[serde(rename = "stream_error_event")]
    StreamErrorEvent,
    /// The body ended cleanly but the stream's end marker never came.
    #[serde(rename = "stream_truncated")]
    StreamTruncated,
    /// The connection was reset while the response was arriving.
    #[serde(rename = "connection_reset")]
    ConnectionReset,
    /// The connection closed while the response was arriving, seen from
    /// the client (or no longer followed: evicted, server process gone).
    #[serde(rename = "connection_closed")]
    ConnectionClosed,
    /// The client went away mid-response: seen closing from the server
    /// side, or the watched client process exited.
    #[serde(rename = "client_aborted")]
    ClientAborted,
    /// The connection ended before any response arrived (also when the
    /// request itself was cut short).
    #[serde(rename = "no_response")]
    NoResponse,
    /// Part of the response was not observed (bytes lost by the capture,
    /// or past a size cap) and what was seen does not show how it ended.
    #[serde(rename = "capture_incomplete")]
    CaptureIncomplete,
}

impl ErrorType {
    /// The label value, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::StreamErrorEvent => "stream_error_event",
            Self::StreamTruncated => "stream_truncated",
            Self::ConnectionReset => "connection_reset",
            Self::ConnectionClosed => "connection_closed",
            Self::ClientAborted => "client_aborted",
            Self::NoResponse => "no_response",
            Self::CaptureIncomplete => "capture_incomplete",
        }
    }
}

/// One output-bearing chunk: when it arrived and its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OutputChunk {
    /// Return of the read that completed the chunk (wall-clock ns).
    pub t_ns: WallNanos,
    /// Tokens of its generated text, by the tokenizer (an estimate even
    /// when the response reports usage: usage has no per-chunk split).
    pub tokens: u32,
}

/// The text of a call, kept only when asked for (`--capture-content`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallContent {
    /// The prompt's text (system and user messages, or the prompt), joined
    /// with newlines.
    pub prompt: String,
    /// The generated text (and reasoning and tool arguments), capped like
    /// the text tokens are counted from.
    pub completion: String,
}

/// One LLM API call: a request and its response (or its failure).
///
/// All `*_ns` values are wall-clock nanoseconds since the Unix epoch, taken
/// from the watched process's own read/write calls. No prompt or completion
/// text is kept unless [`Limits::keep_content`](super::Limits) asks for it:
/// by default only counts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LlmCall {
    /// The connection, as `reassembly` numbered it.
    pub connection_id: ConnectionId,
    /// The watched process.
    pub pid: u32,
    /// Its command name, when known.
    pub comm: Option<String>,
    /// Whether the watched process was the client or the server.
    pub side: Side,
    /// The server's IP address (peer for a client, local for a server).
    pub server_address: Option<String>,
    /// The server's port.
    pub server_port: Option<u16>,
    /// API family: `openai`, `azure_openai`, `anthropic`, `gemini`, `ollama`.
    pub provider: &'static str,
    /// Operation: `chat`, `text_completion`, `responses`, `generate_content`.
    pub api: Api,
    /// Request path, without the query string (it can hold API keys).
    pub request_path: String,
    /// Model asked for (body, or path for Gemini and Azure deployments).
    pub request_model: Option<String>,
    /// Whether the request asked for a streamed response.
    pub stream: bool,
    /// Output token limit asked for.
    pub max_tokens: Option<u64>,
    /// Sampling temperature asked for.
    pub temperature: Option<f64>,
    /// Trace id of the request's W3C `traceparent` header.
    pub trace_id: Option<String>,
    /// Parent span id of that header (the caller's span).
    pub parent_span_id: Option<String>,
    /// Model that answered.
    pub response_model: Option<String>,
    /// Response id given by the API.
    pub response_id: Option<String>,
    /// Finish/stop reasons, one per finished choice.
    pub finish_reasons: Vec<String>,
    /// HTTP status of the final response, if one arrived.
    pub http_status: Option<u16>,
    /// Prompt tokens (cached included).
    pub input_tokens: Option<u64>,
    /// Generated tokens (reasoning included).
    pub output_tokens: Option<u64>,
    /// Prompt tokens served from the provider's cache.
    pub cached_input_tokens: Option<u64>,
    /// Reasoning tokens.
    pub reasoning_tokens: Option<u64>,
    /// `input_tokens` was counted by the tokenizer, not reported.
    pub input_tokens_estimated: bool,
    /// `output_tokens` was counted by the tokenizer, not reported.
    pub output_tokens_estimated: bool,
    /// Request start: entry of the first write (client side) or read
    /// (server side) carrying the request's first byte.
    pub t0_ns: WallNanos,
    /// Return of the call that carried the request's last byte.
    pub request_sent_ns: Option<WallNanos>,
    /// Return of the call that carried the response status line's first byte.
    pub first_byte_ns: Option<WallNanos>,
    /// Return of the call that completed the first stream event of any kind.
    pub first_chunk_ns: Option<WallNanos>,
    /// Return of the call that completed the first output-bearing chunk
    /// (text, reasoning or tool-call delta; not role-only, empty or ping).
    pub first_output_ns: Option<WallNanos>,
    /// The same for the last output-bearing chunk.
    pub last_output_ns: Option<WallNanos>,
    /// Return of the call that carried the response's last byte.
    pub end_ns: Option<WallNanos>,
    /// Output-bearing chunks seen.
    pub output_chunks: u64,
    /// The first of them, with times and token counts (capped).
    pub chunks: Vec<OutputChunk>,
    /// Output chunks not listed in `chunks` because of the cap.
    pub chunks_dropped: u64,
    /// TTFT: `first_output_ns - t0_ns`, in seconds.
    pub ttft_s: Option<f64>,
    /// Time to first chunk: `first_chunk_ns - t0_ns`, in seconds.
    pub time_to_first_chunk_s: Option<f64>,
    /// Time per output token: `(last_output - first_output) / (output_tokens - 1)`.
    pub tpot_s: Option<f64>,
    /// Token generation rate: `1 / tpot_s` when streamed, else
    /// `output_tokens / duration_s`.
    pub tokens_per_second: Option<f64>,
    /// `end_ns - t0_ns`, in seconds.
    pub duration_s: Option<f64>,
    /// Why the call failed, if it did.
    pub error_type: Option<ErrorType>,
    /// The provider's own error type/status (e.g. `rate_limit_error`).
    pub provider_error_type: Option<String>,
    /// The provider's error message, cut to 256 bytes.
    pub error_message: Option<String>,
    /// The request body outgrew its cap (request fields may be missing).
    pub request_truncated: bool,
    /// Response bytes were lost or cut (capture gap, caps, bad encoding).
    pub response_truncated: bool,
    /// The prompt and completion text, only with `--capture-content`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<CallContent>,
}

/// Seconds between two wall-clock times.
fn seconds(from: WallNanos, to: WallNanos) -> f64 {
    to.saturating_sub(from) as f64 / 1e9
}

impl LlmCall {
    /// Gaps between consecutive listed output chunks, in nanoseconds
    /// (OTel `time_per_output_chunk`).
    pub fn inter_chunk_gaps(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks
            .windows(2)
            .map(|w| w[1].t_ns.saturating_sub(w[0].t_ns))
    }

    /// Fills the derived numbers from the timings and token counts.
    pub(super) fn derive(&mut self) {
        self.ttft_s = self.first_output_ns.map(|t| seconds(self.t0_ns, t));
        self.time_to_first_chunk_s = self.first_chunk_ns.map(|t| seconds(self.t0_ns, t));
        self.duration_s = self.end_ns.map(|t| seconds(self.t0_ns, t));
        self.tpot_s = match (
            self.first_output_ns,
            self.last_output_ns,
            self.output_tokens,
        ) {
            (Some(first), Some(last), Some(tokens)) if tokens > 1 && self.output_chunks > 1 => {
                Some(seconds(first, last) / (tokens - 1) as f64)
            }
            _ => None,
        };
        self.tokens_per_second = if self.output_chunks > 0 {
            self.tpot_s.filter(|t| *t > 0.0).map(|t| 1.0 / t)
        } else {
            match (self.output_tokens, self.duration_s) {
                (Some(tokens), Some(d)) if d > 0.0 && self.error_type.is_none() => {
                    Some(tokens as f64 / d)
                }
                _ => None,
            }
        };
    }
}
