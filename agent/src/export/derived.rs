//! What the exporters derive from an [`LlmCall`] beyond its own fields, in
//! one place so that metrics and traces never disagree: the service a call
//! is reported under, its label strings, its duration when it never ended,
//! and whether it was slow.

use crate::calls::LlmCall;
use crate::config::SlowThresholds;
use crate::stream::{Side, WallNanos};
use crate::workload::Workload;

use super::semconv::value;

/// The service a call is reported under: the configured name, else the
/// watched process's pod name, container name, or command name.
pub fn service<'a>(
    configured: Option<&'a str>,
    call: &'a LlmCall,
    workload: &'a Workload,
) -> &'a str {
    [
        configured,
        workload.pod_name.as_deref(),
        workload.container_name.as_deref(),
        call.comm.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.is_empty())
    .unwrap_or(value::UNKNOWN)
}

/// `client`, `server` or `unknown`.
pub fn side(call: &LlmCall) -> &'static str {
    match call.side {
        Side::Client => "client",
        Side::Server => "server",
        Side::Unknown => value::UNKNOWN,
    }
}

/// When the call was over: its last byte, or for a call that never ended
/// (connection cut, no response) the last moment anything of it was seen.
pub fn end_ns(call: &LlmCall) -> WallNanos {
    call.end_ns
        .or(call.last_output_ns)
        .or(call.first_chunk_ns)
        .or(call.first_byte_ns)
        .or(call.request_sent_ns)
        .unwrap_or(call.t0_ns)
        .max(call.t0_ns)
}

/// Request start to [`end_ns`], in seconds.
pub fn duration_s(call: &LlmCall) -> f64 {
    call.duration_s
        .unwrap_or_else(|| (end_ns(call) - call.t0_ns) as f64 / 1e9)
}

/// Why a call counts as slow (both can hold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowReasons {
    pub duration: bool,
    pub token_rate: bool,
}

impl SlowReasons {
    /// Slower than the duration threshold, or generating under the token
    /// rate threshold. A threshold of 0 turns its check off.
    pub fn of(call: &LlmCall, thresholds: SlowThresholds) -> Self {
        SlowReasons {
            duration: thresholds.duration_seconds > 0.0
                && duration_s(call) > thresholds.duration_seconds,
            token_rate: call
                .tokens_per_second
                .is_some_and(|rate| rate < thresholds.token_rate),
        }
    }

    pub fn any(self) -> bool {
        self.duration || self.token_rate
    }
}

/// A finished streamed chat call for the exporters' tests: t0 = 10 s, end
/// 16 s, first chunk +0.1 s, first token +0.25 s, 12 in / 3 out tokens,
/// 4 tokens/s, output chunks at the given times.
#[cfg(test)]
pub(crate) fn test_call(model: &str, chunk_times: &[WallNanos]) -> LlmCall {
    const S: u64 = 1_000_000_000;
    LlmCall {
        connection_id: crate::stream::ConnectionId(1),
        pid: 4242,
        comm: Some("python3".into()),
        side: Side::Client,
        server_address: Some("127.0.0.1".into()),
        server_port: Some(8443),
        provider: "openai",
        api: crate::providers::Api::Chat,
        request_path: "/v1/chat/completions".into(),
        request_model: Some(model.into()),
        stream: true,
        max_tokens: None,
        temperature: None,
        trace_id: None,
        parent_span_id: None,
        response_model: Some(model.into()),
        response_id: Some("chatcmpl-1".into()),
        finish_reasons: vec!["stop".into()],
        http_status: Some(200),
        input_tokens: Some(12),
        output_tokens: Some(3),
        cached_input_tokens: None,
        reasoning_tokens: None,
        input_tokens_estimated: false,
        output_tokens_estimated: false,
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
            .map(|&t_ns| crate::calls::OutputChunk { t_ns, tokens: 1 })
            .collect(),
        chunks_dropped: 0,
        ttft_s: Some(0.25),
        time_to_first_chunk_s: Some(0.1),
        tpot_s: Some(0.25),
        tokens_per_second: Some(4.0),
        duration_s: Some(6.0),
        error_type: None,
        provider_error_type: None,
        error_message: None,
        request_truncated: false,
        response_truncated: false,
        content: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: SlowThresholds = SlowThresholds {
        duration_seconds: 5.0,
        token_rate: 10.0,
    };

    #[test]
    fn a_call_that_never_ended_lasts_until_last_seen() {
        let mut call = test_call("m", &[10_500_000_000]);
        call.end_ns = None;
        call.duration_s = None;
        assert_eq!(end_ns(&call), 10_500_000_000);
        assert_eq!(duration_s(&call), 0.5);
        call.last_output_ns = None;
        call.first_chunk_ns = None;
        call.first_byte_ns = None;
        call.request_sent_ns = None;
        assert_eq!(end_ns(&call), call.t0_ns);
    }

    #[test]
    fn service_is_configured_else_the_pod_the_container_or_the_process() {
        let mut call = test_call("m", &[]);
        let mut workload = Workload::default();
        assert_eq!(service(None, &call, &workload), "python3");
        workload.container_name = Some("api".into());
        assert_eq!(service(None, &call, &workload), "api");
        workload.pod_name = Some("chat-0".into());
        assert_eq!(service(None, &call, &workload), "chat-0");
        assert_eq!(service(Some("svc"), &call, &workload), "svc");
        call.comm = None;
        assert_eq!(service(None, &call, &Workload::default()), "unknown");
    }

    #[test]
    fn slow_by_duration_or_rate_and_zero_disables() {
        let mut call = test_call("m", &[]);
        call.tokens_per_second = Some(12.0);
        assert_eq!(
            SlowReasons::of(&call, T),
            SlowReasons {
                duration: true,
                token_rate: false
            }
        );
        call.tokens_per_second = Some(9.0);
        call.duration_s = Some(1.0);
        assert_eq!(
            SlowReasons::of(&call, T),
            SlowReasons {
                duration: false,
                token_rate: true
            }
        );
        let off = SlowThresholds {
            duration_seconds: 0.0,
            token_rate: 0.0,
        };
        assert!(!SlowReasons::of(&call, off).any());
        call.tokens_per_second = None;
        assert!(!SlowReasons::of(&call, T).any());
    }
}
