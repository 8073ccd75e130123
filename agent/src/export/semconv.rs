//! Every exported name in one place: Prometheus metric and label names, and
//! the OpenTelemetry GenAI semantic-convention attributes (v1.41) used on
//! spans. Nothing else in `export` spells a name.

/// Metric names (Prometheus conventions: counters end in `_total`).
pub mod metric {
    pub const TOKEN_GENERATION_RATE: &str = "llm_token_generation_rate";
    pub const TIME_TO_FIRST_TOKEN: &str = "llm_time_to_first_token_seconds";
    pub const REQUEST_DURATION: &str = "llm_request_duration_seconds";
    pub const TOTAL_TOKENS: &str = "llm_total_tokens_total";
    pub const ERROR_COUNT: &str = "llm_error_count_total";
    pub const SLOW_REQUESTS: &str = "llm_slow_requests_total";
    pub const GENAI_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
    pub const GENAI_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
    pub const GENAI_TIME_TO_FIRST_CHUNK: &str =
        "gen_ai_client_operation_time_to_first_chunk_seconds";
    pub const GENAI_TIME_PER_OUTPUT_CHUNK: &str =
        "gen_ai_client_operation_time_per_output_chunk_seconds";

    pub const EVENTS_READ: &str = "llmtap_events_read_total";
    pub const EVENTS_LOST: &str = "llmtap_events_lost_total";
    pub const CONNECTIONS_NOT_HTTP: &str = "llmtap_connections_not_http_total";
    pub const TLS_CONNECTIONS_NOT_LLM: &str = "llmtap_tls_connections_not_llm_total";
    pub const REQUESTS_NOT_POST: &str = "llmtap_requests_not_post_total";
    pub const EXCHANGES_OVER_SHARE: &str = "llmtap_exchanges_over_share_total";
    pub const TLS_HOOK_LATENCY: &str = "llmtap_tls_hook_latency_seconds";
    pub const BYTES_CAPTURED: &str = "llmtap_bytes_captured_total";
    pub const ATTACHED_PROCESSES: &str = "llmtap_attached_processes";
    pub const OPEN_STREAMS: &str = "llmtap_open_streams";
    pub const BPF_MAP_ENTRIES: &str = "llmtap_bpf_map_entries";
    pub const TLS_PROCESSES: &str = "llmtap_tls_processes";
    pub const PARSE_FAILURES: &str = "llmtap_parse_failures_total";
    pub const CALLS_LOST: &str = "llmtap_calls_lost_total";
    pub const CONNECTIONS_JOINED_MIDWAY: &str = "llmtap_connections_joined_midway_total";
    pub const TRUNCATED: &str = "llmtap_truncated_total";
    pub const CALLS_SAMPLED_OUT: &str = "llmtap_calls_sampled_out_total";
    pub const SPANS_EXPORTED: &str = "llmtap_spans_exported_total";
    pub const SPANS_DROPPED: &str = "llmtap_spans_dropped_total";
    pub const EXPORTER_FAILURES: &str = "llmtap_exporter_failures_total";
    pub const LABEL_VALUES_FOLDED: &str = "llmtap_label_values_folded_total";
    pub const PACKETS_SEEN: &str = "llmtap_packets_seen_total";
    pub const PACKETS_DROPPED: &str = "llmtap_packets_dropped_total";
    pub const FLOWS_ABANDONED: &str = "llmtap_flows_abandoned_total";
}

/// Prometheus label names.
pub mod label {
    pub const MODEL: &str = "model";
    pub const PROVIDER: &str = "provider";
    pub const OPERATION: &str = "operation";
    pub const SERVICE: &str = "service";
    pub const SIDE: &str = "side";
    pub const STATUS: &str = "status";
    pub const TOKEN_TYPE: &str = "token_type";
    pub const ERROR_TYPE: &str = "error_type";
    pub const REASON: &str = "reason";

    pub const GENAI_OPERATION_NAME: &str = "gen_ai_operation_name";
    pub const GENAI_PROVIDER_NAME: &str = "gen_ai_provider_name";
    pub const GENAI_REQUEST_MODEL: &str = "gen_ai_request_model";
    pub const GENAI_RESPONSE_MODEL: &str = "gen_ai_response_model";
    pub const GENAI_TOKEN_TYPE: &str = "gen_ai_token_type";
    pub const SERVER_ADDRESS: &str = "server_address";

    /// The watched process's container and pod (empty when unknown).
    pub const CONTAINER_ID: &str = "container_id";
    pub const K8S_NAMESPACE: &str = "k8s_namespace";
    pub const K8S_POD: &str = "k8s_pod";

    /// Self-health labels.
    pub const EXPORTER: &str = "exporter";
    pub const STAGE: &str = "stage";
    pub const METRIC: &str = "metric";
    pub const MAP: &str = "map";
    pub const STACK: &str = "stack";
    pub const STATE: &str = "state";
    pub const BY: &str = "by";
    pub const PART: &str = "part";
}

/// Label values with a fixed meaning.
pub mod value {
    pub const TOKEN_INPUT: &str = "input";
    pub const TOKEN_OUTPUT: &str = "output";
    pub const SLOW_DURATION: &str = "duration";
    pub const SLOW_TOKEN_RATE: &str = "token_rate";
    /// What values past the label cap are reported as.
    pub const OTHER: &str = "other";
    /// An empty or unknown label value.
    pub const UNKNOWN: &str = "unknown";
    pub const EXPORTER_OTLP: &str = "otlp";
    /// `llmtap_parse_failures_total` stages.
    pub const STAGE_HTTP: &str = "http";
    pub const STAGE_PROVIDER: &str = "provider";
    /// `llmtap_truncated_total` parts: reads/writes cut at
    /// `--capture-bytes`, request and response bodies over their caps,
    /// stream events over theirs (dropped), generated text kept per call.
    pub const PART_CAPTURE: &str = "capture";
    pub const PART_REQUEST_BODY: &str = "request_body";
    pub const PART_RESPONSE_BODY: &str = "response_body";
    pub const PART_EVENT: &str = "event";
    pub const PART_OUTPUT_TEXT: &str = "output_text";
    /// `llmtap_tls_processes` stacks and states: a process with no TLS
    /// library hooked is `none`/`unhooked`.
    pub const TLS_NONE: &str = "none";
    pub const TLS_HOOKED: &str = "hooked";
    pub const TLS_UNHOOKED: &str = "unhooked";
    /// `llmtap_packets_dropped_total` droppers.
    pub const DROPPED_BY_KERNEL: &str = "kernel";
    pub const DROPPED_BY_INTERFACE: &str = "interface";
    pub const DROPPED_BY_AGENT: &str = "agent";
}

/// OpenTelemetry span, event and resource attribute names.
pub mod attr {
    pub const GENAI_OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const GENAI_PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const GENAI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GENAI_REQUEST_STREAM: &str = "gen_ai.request.stream";
    pub const GENAI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const GENAI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    pub const GENAI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GENAI_RESPONSE_ID: &str = "gen_ai.response.id";
    pub const GENAI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const GENAI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
    pub const GENAI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GENAI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const SERVER_PORT: &str = "server.port";
    pub const ERROR_TYPE: &str = "error.type";

    /// llmtap's own span attributes.
    pub const LLMTAP_SLOW: &str = "llmtap.slow";
    pub const LLMTAP_SLOW_REASONS: &str = "llmtap.slow.reasons";
    pub const LLMTAP_CHUNK_EVENTS_DROPPED: &str = "llmtap.chunk_events.dropped";
    pub const LLMTAP_CHUNK_TOKENS: &str = "llmtap.chunk.tokens";

    /// Events.
    pub const EVENT_FIRST_TOKEN: &str = "gen_ai.first_token";
    pub const EVENT_CHUNK: &str = "gen_ai.chunk";
    /// With `--capture-content` only: the prompt and the completion, as
    /// the GenAI conventions' earlier content events carried them.
    pub const EVENT_CONTENT_PROMPT: &str = "gen_ai.content.prompt";
    pub const EVENT_CONTENT_COMPLETION: &str = "gen_ai.content.completion";
    pub const GENAI_PROMPT: &str = "gen_ai.prompt";
    pub const GENAI_COMPLETION: &str = "gen_ai.completion";

    /// Resource.
    pub const SERVICE_NAME: &str = "service.name";
    pub const HOST_NAME: &str = "host.name";
    pub const PROCESS_PID: &str = "process.pid";
    pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
    pub const CONTAINER_ID: &str = "container.id";
    pub const K8S_POD_NAME: &str = "k8s.pod.name";
    pub const K8S_POD_UID: &str = "k8s.pod.uid";
    pub const K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
}
