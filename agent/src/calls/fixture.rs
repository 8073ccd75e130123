//! A made-up finished call, for the exporters' tests: here, and in the
//! end-to-end export tests through the `fixtures` cargo feature.

use super::{LlmCall, Outcome, OutputChunk, Timings, Usage};
use crate::providers::Api;
use crate::stream::{ConnectionId, Side, WallNanos};

const S: u64 = 1_000_000_000;

/// A finished streamed chat call by process 4242 (`python3`) to
/// 127.0.0.1:8443: t0 = 10 s, request sent +10 ms, first byte +50 ms,
/// first chunk +0.1 s, first token +0.25 s, end 16 s, 12 in / 3 out
/// tokens, and one output chunk of one token at each of `chunk_times` (the
/// last of them is the last token).
pub fn streamed_call(model: &str, chunk_times: &[WallNanos]) -> LlmCall {
    LlmCall {
        connection_id: ConnectionId(1),
        pid: 4242,
        comm: Some("python3".into()),
        side: Side::Client,
        server_address: Some("127.0.0.1".into()),
        server_port: Some(8443),
        provider: "openai",
        api: Api::Chat,
        request_path: "/v1/chat/completions".into(),
        request_model: Some(model.into()),
        stream: true,
        max_tokens: None,
        temperature: None,
        trace_id: None,
        parent_span_id: None,
        response_model: Some(model.into()),
        response_id: Some("chatcmpl-1".into()),
        timings: Timings {
            t0_ns: 10 * S,
            request_sent_ns: Some(10 * S + S / 100),
            first_byte_ns: Some(10 * S + S / 20),
            first_chunk_ns: Some(10 * S + S / 10),
            first_output_ns: Some(10 * S + S / 4),
            last_output_ns: chunk_times.last().copied(),
            end_ns: Some(16 * S),
            output_chunks: chunk_times.len() as u64,
            chunks: chunk_times
                .iter()
                .map(|&t_ns| OutputChunk { t_ns, tokens: 1 })
                .collect(),
            chunks_dropped: 0,
        },
        usage: Usage {
            input_tokens: Some(12),
            output_tokens: Some(3),
            ..Usage::default()
        },
        outcome: Outcome {
            http_status: Some(200),
            finish_reasons: vec!["stop".into()],
            ..Outcome::default()
        },
        content: None,
    }
}
