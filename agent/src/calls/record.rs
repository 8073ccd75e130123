//! [`LlmCall`]: the one record per LLM request/response pair, its raw
//! facts grouped as [`Timings`], [`Usage`] and [`Outcome`], and the numbers
//! derived from them (as `design.md` defines them), computed when asked.

use serde::{Serialize, Serializer};

use super::errors::ErrorType;
use crate::providers::Api;
use crate::stream::{ConnectionId, Side, WallNanos};

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

/// When each step of a call happened: wall-clock nanoseconds since the Unix
/// epoch, from the watched process's own read and write calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timings {
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
}

/// Seconds between two wall-clock times.
fn seconds(from: WallNanos, to: WallNanos) -> f64 {
    to.saturating_sub(from) as f64 / 1e9
}

impl Timings {
    /// TTFT: request start to the first output-bearing chunk, in seconds.
    pub fn ttft_s(&self) -> Option<f64> {
        self.first_output_ns.map(|t| seconds(self.t0_ns, t))
    }

    /// Request start to the first stream event of any kind, in seconds.
    pub fn time_to_first_chunk_s(&self) -> Option<f64> {
        self.first_chunk_ns.map(|t| seconds(self.t0_ns, t))
    }

    /// Request start to the response's last byte, in seconds; `None` for
    /// a call that never ended.
    pub fn duration_s(&self) -> Option<f64> {
        self.end_ns.map(|t| seconds(self.t0_ns, t))
    }

    /// When the call was over: its last byte, or for a call that never
    /// ended (connection cut, no response) the last moment anything of it
    /// was seen.
    pub fn over_ns(&self) -> WallNanos {
        self.end_ns
            .or(self.last_output_ns)
            .or(self.first_chunk_ns)
            .or(self.first_byte_ns)
            .or(self.request_sent_ns)
            .unwrap_or(self.t0_ns)
            .max(self.t0_ns)
    }

    /// Request start to [`Timings::over_ns`], in seconds: the duration of
    /// an ended call, how long one that never ended was seen.
    pub fn elapsed_s(&self) -> f64 {
        seconds(self.t0_ns, self.over_ns())
    }

    /// Gaps between consecutive listed output chunks, in nanoseconds
    /// (OTel `time_per_output_chunk`).
    pub fn inter_chunk_gaps(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks
            .windows(2)
            .map(|w| w[1].t_ns.saturating_sub(w[0].t_ns))
    }
}

/// Tokens of a call: as the response reported them, or counted by the
/// tokenizer (and marked estimated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
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
}

/// How a call ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP status of the final response, if one arrived.
    pub http_status: Option<u16>,
    /// Finish/stop reasons, one per finished choice.
    pub finish_reasons: Vec<String>,
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
}

/// One LLM API call: a request and its response (or its failure).
///
/// No prompt or completion text is kept unless
/// [`Limits::keep_content`](super::Limits) asks for it: by default only
/// counts. Serialized flat, with the derived numbers beside the raw ones.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmCall {
    /// The connection, as the capture source numbered it.
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
    /// When each step happened.
    pub timings: Timings,
    /// Its tokens.
    pub usage: Usage,
    /// How it ended.
    pub outcome: Outcome,
    /// The prompt and completion text, only with `--capture-content`.
    pub content: Option<CallContent>,
}

impl LlmCall {
    /// Time per output token: `(last_output - first_output) / (output_tokens - 1)`.
    pub fn tpot_s(&self) -> Option<f64> {
        let t = &self.timings;
        match (
            t.first_output_ns,
            t.last_output_ns,
            self.usage.output_tokens,
        ) {
            (Some(first), Some(last), Some(tokens)) if tokens > 1 && t.output_chunks > 1 => {
                Some(seconds(first, last) / (tokens - 1) as f64)
            }
            _ => None,
        }
    }

    /// Token generation rate: `1 / tpot` when streamed, else
    /// `output_tokens / duration` for a call that succeeded.
    pub fn tokens_per_second(&self) -> Option<f64> {
        if self.timings.output_chunks > 0 {
            return self.tpot_s().filter(|t| *t > 0.0).map(|t| 1.0 / t);
        }
        match (self.usage.output_tokens, self.timings.duration_s()) {
            (Some(tokens), Some(d)) if d > 0.0 && self.outcome.error_type.is_none() => {
                Some(tokens as f64 / d)
            }
            _ => None,
        }
    }
}

/// The record as `--print` and the golden files show it: every fact and
/// derived number side by side, in one object.
#[derive(Serialize)]
struct Flat<'a> {
    connection_id: ConnectionId,
    pid: u32,
    comm: &'a Option<String>,
    side: Side,
    server_address: &'a Option<String>,
    server_port: Option<u16>,
    provider: &'static str,
    api: Api,
    request_path: &'a str,
    request_model: &'a Option<String>,
    stream: bool,
    max_tokens: Option<u64>,
    temperature: Option<f64>,
    trace_id: &'a Option<String>,
    parent_span_id: &'a Option<String>,
    response_model: &'a Option<String>,
    response_id: &'a Option<String>,
    finish_reasons: &'a [String],
    http_status: Option<u16>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cached_input_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    input_tokens_estimated: bool,
    output_tokens_estimated: bool,
    t0_ns: WallNanos,
    request_sent_ns: Option<WallNanos>,
    first_byte_ns: Option<WallNanos>,
    first_chunk_ns: Option<WallNanos>,
    first_output_ns: Option<WallNanos>,
    last_output_ns: Option<WallNanos>,
    end_ns: Option<WallNanos>,
    output_chunks: u64,
    chunks: &'a [OutputChunk],
    chunks_dropped: u64,
    ttft_s: Option<f64>,
    time_to_first_chunk_s: Option<f64>,
    tpot_s: Option<f64>,
    tokens_per_second: Option<f64>,
    duration_s: Option<f64>,
    error_type: Option<ErrorType>,
    provider_error_type: &'a Option<String>,
    error_message: &'a Option<String>,
    request_truncated: bool,
    response_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: &'a Option<CallContent>,
}

impl Serialize for LlmCall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (t, u, o) = (&self.timings, &self.usage, &self.outcome);
        Flat {
            connection_id: self.connection_id,
            pid: self.pid,
            comm: &self.comm,
            side: self.side,
            server_address: &self.server_address,
            server_port: self.server_port,
            provider: self.provider,
            api: self.api,
            request_path: &self.request_path,
            request_model: &self.request_model,
            stream: self.stream,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            trace_id: &self.trace_id,
            parent_span_id: &self.parent_span_id,
            response_model: &self.response_model,
            response_id: &self.response_id,
            finish_reasons: &o.finish_reasons,
            http_status: o.http_status,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cached_input_tokens,
            reasoning_tokens: u.reasoning_tokens,
            input_tokens_estimated: u.input_tokens_estimated,
            output_tokens_estimated: u.output_tokens_estimated,
            t0_ns: t.t0_ns,
            request_sent_ns: t.request_sent_ns,
            first_byte_ns: t.first_byte_ns,
            first_chunk_ns: t.first_chunk_ns,
            first_output_ns: t.first_output_ns,
            last_output_ns: t.last_output_ns,
            end_ns: t.end_ns,
            output_chunks: t.output_chunks,
            chunks: &t.chunks,
            chunks_dropped: t.chunks_dropped,
            ttft_s: t.ttft_s(),
            time_to_first_chunk_s: t.time_to_first_chunk_s(),
            tpot_s: self.tpot_s(),
            tokens_per_second: self.tokens_per_second(),
            duration_s: t.duration_s(),
            error_type: o.error_type,
            provider_error_type: &o.provider_error_type,
            error_message: &o.error_message,
            request_truncated: o.request_truncated,
            response_truncated: o.response_truncated,
            content: &self.content,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::streamed_call;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_derived_numbers_follow_the_timings_and_tokens() {
        // 3 tokens, the first at +0.25 s, the last at +0.75 s.
        let call = streamed_call("m", &[10 * S + S / 4, 10 * S + 3 * S / 4]);
        let t = &call.timings;
        assert_eq!(t.ttft_s(), Some(0.25));
        assert_eq!(t.time_to_first_chunk_s(), Some(0.1));
        assert_eq!(t.duration_s(), Some(6.0));
        assert_eq!(call.tpot_s(), Some(0.25));
        assert_eq!(call.tokens_per_second(), Some(4.0));
        assert_eq!(t.inter_chunk_gaps().collect::<Vec<_>>(), [S / 2]);
    }

    #[test]
    fn a_non_streamed_rate_is_tokens_over_duration_when_it_succeeded() {
        let mut call = streamed_call("m", &[]);
        call.timings.output_chunks = 0;
        assert_eq!(call.tokens_per_second(), Some(0.5));
        call.outcome.error_type = Some(super::ErrorType::Http5xx);
        assert_eq!(call.tokens_per_second(), None);
    }

    #[test]
    fn a_call_that_never_ended_lasts_until_last_seen() {
        let mut call = streamed_call("m", &[10 * S + S / 2]);
        let t = &mut call.timings;
        t.end_ns = None;
        assert_eq!(t.duration_s(), None);
        assert_eq!(t.over_ns(), 10 * S + S / 2);
        assert_eq!(t.elapsed_s(), 0.5);
        t.last_output_ns = None;
        t.first_chunk_ns = None;
        t.first_byte_ns = None;
        t.request_sent_ns = None;
        assert_eq!(t.over_ns(), t.t0_ns);
    }
}
