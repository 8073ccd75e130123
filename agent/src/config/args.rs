//! The export flags and variables exactly as typed: strings and plain
//! values, checked by `clap` only for their syntax. `super` validates them
//! into settings.

use std::path::PathBuf;

use clap::Args;

/// Export settings as typed on the command line or in the environment.
#[derive(Clone, Debug, Args)]
pub struct ExportArgs {
    /// Whether to observe anything at all. `false` (or 0/no/off) makes the
    /// agent attach nothing, export nothing, and say so.
    #[arg(
        long,
        env = "ENABLE_TELEMETRY",
        value_name = "BOOL",
        default_value = "true"
    )]
    pub enable_telemetry: String,

    /// Service name for metrics labels and the trace resource's
    /// `service.name`. Defaults to the observed process's pod name, else its
    /// container's name, else the process's name.
    #[arg(long, env = "SERVICE_NAME", value_name = "NAME")]
    pub service_name: Option<String>,

    /// The standard OpenTelemetry service name; used when --service-name is
    /// not given.
    #[arg(long, env = "OTEL_SERVICE_NAME", value_name = "NAME")]
    pub otel_service_name: Option<String>,

    /// Where to send traces (OTLP), e.g. http://collector:4317 for gRPC or
    /// http://collector:4318 for HTTP/protobuf (`/v1/traces` is appended for
    /// HTTP). https:// uses TLS (rustls, system roots). Unset (and no
    /// --jaeger-endpoint): no traces are exported; metrics still are.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP protocol: `grpc` or `http/protobuf`. Default: guessed from the
    /// endpoint's port (4317 gRPC, 4318 HTTP), otherwise http/protobuf.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,

    /// Extra headers (or gRPC metadata) on every OTLP export, as
    /// `key1=value1,key2=value2` (values may be %-encoded), e.g. an
    /// authorization token.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        value_name = "HEADERS",
        hide_env_values = true
    )]
    pub otlp_headers: Option<String>,

    /// How long one OTLP export may take, in milliseconds, before it is
    /// abandoned (and its spans counted as dropped).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TIMEOUT",
        value_name = "MS",
        allow_hyphen_values = true,
        default_value = "10000"
    )]
    pub otlp_timeout: String,

    /// Legacy Jaeger collector URL from the seed's settings. Jaeger ingests
    /// OTLP, so it is mapped to the same host on port 4318 (HTTP/protobuf),
    /// e.g. http://jaeger:14268/api/traces → http://jaeger:4318. Ignored when
    /// --otlp-endpoint is set.
    #[arg(long, env = "JAEGER_ENDPOINT", value_name = "URL")]
    pub jaeger_endpoint: Option<String>,

    /// A call taking longer than this (seconds, request start to last byte)
    /// counts in `llm_slow_requests_total{reason="duration"}` and its span is
    /// marked slow. 0 turns this check off.
    #[arg(
        long,
        env = "LLM_SLOW_REQUEST_THRESHOLD_SECONDS",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        default_value = "5.0"
    )]
    pub slow_request_threshold_seconds: String,

    /// A call generating fewer tokens per second than this counts in
    /// `llm_slow_requests_total{reason="token_rate"}` and its span is marked
    /// slow.
    #[arg(
        long,
        env = "LLM_SLOW_TOKEN_RATE_THRESHOLD",
        value_name = "TOKENS_PER_S",
        allow_hyphen_values = true,
        default_value = "10.0"
    )]
    pub slow_token_rate_threshold: String,

    /// Fraction of calls exported as traces, from 0 to 1. Metrics always
    /// count every call; calls left out are counted.
    #[arg(
        long,
        env = "TELEMETRY_SAMPLE_RATE",
        value_name = "RATE",
        allow_hyphen_values = true,
        default_value = "1.0"
    )]
    pub telemetry_sample_rate: String,

    /// Address of the /metrics, /healthz and /readyz endpoint. Use
    /// 0.0.0.0:9464 to be scraped from other hosts.
    #[arg(
        long,
        env = "LLMTAP_METRICS_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_addr: String,

    /// Require `Authorization: Bearer TOKEN` on /metrics. Prefer the
    /// environment variable or --metrics-bearer-token-file: flags show in
    /// `ps`.
    #[arg(
        long,
        env = "LLMTAP_METRICS_BEARER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "metrics_bearer_token_file"
    )]
    pub metrics_bearer_token: Option<String>,

    /// Like --metrics-bearer-token, with the token read from this file
    /// (surrounding whitespace is ignored): a regular file of at most
    /// 4 KiB, not a FIFO or a device.
    #[arg(long, env = "LLMTAP_METRICS_BEARER_TOKEN_FILE", value_name = "PATH")]
    pub metrics_bearer_token_file: Option<PathBuf>,

    /// Serve the metrics endpoint over TLS with this certificate chain (PEM).
    /// Needs --metrics-tls-key.
    #[arg(
        long,
        env = "LLMTAP_METRICS_TLS_CERT",
        value_name = "PATH",
        requires = "metrics_tls_key"
    )]
    pub metrics_tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --metrics-tls-cert.
    #[arg(
        long,
        env = "LLMTAP_METRICS_TLS_KEY",
        value_name = "PATH",
        requires = "metrics_tls_cert"
    )]
    pub metrics_tls_key: Option<PathBuf>,

    /// Distinct values kept per label of each metric. Label values come from
    /// observed traffic (the model name is chosen by whoever sends the
    /// request), so past this many, new values are reported as `other` and
    /// counted in `llmtap_label_values_folded_total`.
    #[arg(
        long,
        env = "LLMTAP_MAX_LABEL_VALUES",
        value_name = "N",
        allow_hyphen_values = true,
        default_value = "100"
    )]
    pub max_label_values: String,

    /// Output-chunk events kept per span (after the `gen_ai.first_token`
    /// event); the rest are counted in the span's
    /// `llmtap.chunk_events.dropped` attribute.
    #[arg(
        long,
        env = "LLMTAP_MAX_CHUNK_EVENTS",
        value_name = "N",
        allow_hyphen_values = true,
        default_value = "64"
    )]
    pub max_chunk_events: String,

    /// Finished spans waiting for export at most. Past it, new spans are
    /// dropped and counted, so a slow or absent collector never grows memory
    /// (roughly 1 KiB per span plus 150 bytes per chunk event: about 5 MiB
    /// with the defaults).
    #[arg(
        long,
        env = "LLMTAP_OTLP_QUEUE_SIZE",
        value_name = "N",
        allow_hyphen_values = true,
        default_value = "512"
    )]
    pub otlp_queue_size: String,
}
