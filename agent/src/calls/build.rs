//! A finished exchange becomes an [`LlmCall`]: its request's facts, its
//! response's timings and usage (tokens counted where the response gave
//! none), how it ended, and the caller's trace context.

use super::errors::{self, ErrorType, ResponseEnd};
use super::exchange::{Ending, Exchange, Response};
use super::record::{CallContent, LlmCall, Outcome, OutputChunk, Timings, Usage};
use super::{tokens, Limits, ReconstructionStats};
use crate::stream::{ConnectionInfo, Side};

/// Turns a finished exchange into a record; `None` when not an LLM call.
pub(super) fn build(
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
        timings: Timings {
            t0_ns: exchange.t0,
            request_sent_ns: exchange.request_sent,
            ..Timings::default()
        },
        usage: Usage::default(),
        outcome: Outcome {
            request_truncated: exchange.request_truncated,
            ..Outcome::default()
        },
        content: None,
    };
    let (completion, finished) = match exchange.response.take() {
        Some(response) => fill_response(&mut call, response, ending, &request.input_text, stats),
        None => {
            call.outcome.error_type = Some(ErrorType::NoResponse);
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
        call.outcome.error_type = errors::when_cut(call.outcome.error_type, finished, reason, side);
    }
    Some(call)
}

/// Copies the response's facts, counts tokens and classifies errors.
/// Returns the generated text, and whether the reply said it was finished
/// (an end event or a finish reason).
fn fill_response(
    call: &mut LlmCall,
    mut response: Response,
    ending: Ending,
    input_text: &str,
    stats: &mut ReconstructionStats,
) -> (String, bool) {
    // Bytes the capture lost are a truncation like any other.
    response.truncated |= matches!(ending, Ending::CaptureLost);
    let oversized = response.finish(response.last_byte);
    stats.oversized_events += oversized;
    // A dropped event is output the record cannot count.
    response.truncated |= oversized > 0;
    let timings = &mut call.timings;
    timings.first_byte_ns = Some(response.first_byte);
    if matches!(ending, Ending::Complete | Ending::Cut(_)) {
        timings.end_ns = Some(response.last_byte);
    }
    let streamed = response.streamed();
    let acc = response.acc;
    let info = acc.info;
    stats.decode_errors += acc.decode_errors;
    stats.output_text_truncated += u64::from(info.text_truncated);
    if response.truncated {
        stats.response_bodies_truncated += 1;
    }
    call.response_model = info.model;
    call.response_id = info.id;
    timings.first_chunk_ns = acc.first_chunk;
    timings.first_output_ns = acc.first_output;
    timings.last_output_ns = acc.last_output;
    timings.output_chunks = acc.output_chunks;
    timings.chunks_dropped = acc.output_chunks - acc.marks.len() as u64;
    stats.chunks_dropped += timings.chunks_dropped;

    let ends: Vec<usize> = acc.marks.iter().map(|m| m.1).collect();
    let mut counts = Vec::new();
    let total = tokens::count_split(&info.text, &ends, &mut counts);
    timings.chunks = acc
        .marks
        .iter()
        .zip(&counts)
        .map(|(&(t_ns, _), &tokens)| OutputChunk { t_ns, tokens })
        .collect();

    let ok = response.status < 400;
    let reported = info.usage;
    let usage = &mut call.usage;
    usage.cached_input_tokens = reported.cached_input;
    usage.reasoning_tokens = reported.reasoning;
    usage.output_tokens = reported.output;
    usage.input_tokens = reported.input;
    if ok && usage.output_tokens.is_none() {
        usage.output_tokens = Some(total);
        usage.output_tokens_estimated = true;
    }
    if ok && usage.input_tokens.is_none() && !input_text.is_empty() {
        usage.input_tokens = Some(tokens::count(input_text));
        usage.input_tokens_estimated = true;
    }

    let finished = (info.done || !info.finish_reasons.is_empty()) && !response.closed_short;
    let outcome = &mut call.outcome;
    outcome.http_status = Some(response.status);
    outcome.response_truncated = response.truncated;
    outcome.finish_reasons = info.finish_reasons;
    if let Some(error) = info.error {
        outcome.provider_error_type = error.kind;
        outcome.error_message = error.message;
    }
    outcome.error_type = ResponseEnd {
        status: response.status,
        provider_error: outcome.provider_error_type.is_some() || outcome.error_message.is_some(),
        // Cut by the peer's close, not by the capture: the close explains it.
        truncated: response.truncated && !response.closed_short,
        streamed,
        finished,
    }
    .error();
    (info.text, finished)
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
