//! The default console output: one human-readable log line per call.

use crate::calls::LlmCall;
use crate::workload::Workload;

/// One line about a finished call: who, what, how fast, how it ended.
pub fn summary(call: &LlmCall, workload: &Workload) -> String {
    let model = call
        .response_model
        .as_deref()
        .or(call.request_model.as_deref())
        .unwrap_or("?");
    let mut line = format!(
        "{} {} {} pid={} {}",
        call.provider,
        call.api.as_str(),
        model,
        call.pid,
        call.comm.as_deref().unwrap_or("")
    );
    if let (Some(namespace), Some(pod)) = (&workload.pod_namespace, &workload.pod_name) {
        line += &format!(" pod={namespace}/{pod}");
    } else if let Some(container) = &workload.container_id {
        line += &format!(" container={}", &container[..container.len().min(12)]);
    }
    if let Some(status) = call.outcome.http_status {
        line += &format!(" status={status}");
    }
    if let Some(ttft) = call.timings.ttft_s() {
        line += &format!(" ttft={:.1}ms", ttft * 1e3);
    }
    if let Some(duration) = call.timings.duration_s() {
        line += &format!(" duration={:.1}ms", duration * 1e3);
    }
    if let (Some(input), Some(output)) = (call.usage.input_tokens, call.usage.output_tokens) {
        let estimated = if call.usage.output_tokens_estimated {
            " (estimated)"
        } else {
            ""
        };
        line += &format!(" tokens={input}in/{output}out{estimated}");
    }
    if let Some(rate) = call.tokens_per_second() {
        line += &format!(" rate={rate:.1}tok/s");
    }
    if let Some(error) = call.outcome.error_type {
        line += &format!(" error={}", error.as_str());
    }
    line
}
