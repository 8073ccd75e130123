//! Prometheus metrics: the seed's five (under Prometheus naming), the slow
//! call counter, the OpenTelemetry GenAI client histograms with the
//! specification's buckets, and llmtap's own health.
//!
//! Input: each finished [`LlmCall`] ([`MetricsRegistry::record`]), and
//! the agent's counters through [`Health`]. Output: the text exposition
//! format ([`MetricsRegistry::encode`]), served by `metrics_server`. Every
//! call is recorded, sampled for traces or not. Label values from traffic,
//! and the watched process's container and pod (pod names churn), go
//! through `LabelCap`.

use std::borrow::Cow;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::derived::{self, SlowReasons};
use super::labels::{Admitted, LabelCap};
use super::semconv::{label, metric, value};
use crate::calls::{LlmCall, ReconstructionStats};
use crate::capture::{CaptureReport, PacketReport, ProcessReport};
use crate::config::{ExportSettings, SlowThresholds};
use crate::workload::Workload;

/// OTel GenAI `gen_ai.client.operation.duration` buckets, seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// OTel GenAI `gen_ai.client.token.usage` buckets: powers of 4, 1 to 4^13.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// `llm_token_generation_rate` buckets, tokens/s: from a struggling CPU
/// model to a fast hosted one.
pub const TOKEN_RATE_BUCKETS: [f64; 14] = [
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0, 500.0, 1000.0,
];

/// Labels of the seed's metrics (plus the workload's, last).
const SEED: [&str; 8] = [
    label::MODEL,
    label::PROVIDER,
    label::OPERATION,
    label::SERVICE,
    label::SIDE,
    label::CONTAINER_ID,
    label::K8S_NAMESPACE,
    label::K8S_POD,
];
/// Labels of the GenAI histograms (plus `side`, see design.md, and the
/// workload's, last).
const GENAI: [&str; 10] = [
    label::GENAI_OPERATION_NAME,
    label::GENAI_PROVIDER_NAME,
    label::GENAI_REQUEST_MODEL,
    label::GENAI_RESPONSE_MODEL,
    label::SERVER_ADDRESS,
    label::ERROR_TYPE,
    label::SIDE,
    label::CONTAINER_ID,
    label::K8S_NAMESPACE,
    label::K8S_POD,
];

/// Building the metric families failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A family could not be created or registered (a bug: names are fixed).
    #[error("metric registration failed: {0}")]
    Register(#[from] prometheus::Error),
}

/// The agent's own counters, for the run loop and the exporters to bump.
#[derive(Clone, Debug)]
pub struct Health {
    /// Capture records read from the kernel.
    pub events_read: IntCounter,
    /// Capture records the kernel dropped (ring buffer full).
    pub events_lost: IntCounter,
    /// Connections `--all` ignored because their first bytes are not HTTP.
    pub connections_not_http: IntCounter,
    /// TLS connections `--all` left unhooked: no LLM API host named.
    pub tls_connections_not_llm: IntCounter,
    /// HTTP/1 requests `--all` did not copy: not POST.
    pub requests_not_post: IntCounter,
    /// HTTP/1 exchanges `--all` stopped copying: past their share, with
    /// the ring buffer filling up.
    pub exchanges_over_share: IntCounter,
    /// From a process's exec to its new TLS code being hooked, seconds.
    pub tls_hook_latency: Histogram,
    /// Payload bytes captured.
    pub bytes_captured: IntCounter,
    /// Processes watched now.
    pub attached_processes: IntGauge,
    /// Connections followed now.
    pub open_streams: IntGauge,
    /// Entries in the kernel's per-process and per-connection maps, by `map`.
    pub bpf_map_entries: IntGaugeVec,
    /// Watched processes by TLS `stack` (openssl, gnutls; none) and `state`
    /// (hooked; unhooked when no hooked TLS library is mapped).
    pub tls_processes: IntGaugeVec,
    /// Parse failures, by `stage` (http, provider).
    pub parse_failures: IntCounterVec,
    /// LLM calls lost with a connection whose framing failed.
    pub calls_lost: IntCounter,
    /// Connections first seen in the middle of a message.
    pub connections_joined_midway: IntCounter,
    /// What a cap cut, by `part`.
    pub truncated: IntCounterVec,
    /// Calls not exported as traces because of `TELEMETRY_SAMPLE_RATE`.
    pub calls_sampled_out: IntCounter,
    /// Spans the collector accepted, by `exporter`.
    pub spans_exported: IntCounterVec,
    /// Spans lost (queue full, or their export failed), by `exporter`.
    pub spans_dropped: IntCounterVec,
    /// Failed export attempts, by `exporter`.
    pub exporter_failures: IntCounterVec,
    /// Label values reported as `other`, by `metric`.
    pub label_values_folded: IntCounterVec,
    /// Packet capture: frames read from libpcap.
    pub packets_seen: IntCounter,
    /// Packet capture: frames lost, `by` the kernel, the interface or the agent.
    pub packets_dropped: IntCounterVec,
    /// Packet capture: TCP flows given up, by `reason`.
    pub flows_abandoned: IntCounterVec,
}

impl Health {
    /// Brings the health metrics up to the running totals of capture and
    /// reconstruction, and the gauges to their state. Call it as often as
    /// convenient: only the increase since the last call is added.
    pub fn observe(&self, capture: &CaptureReport, reconstruction: &ReconstructionStats) {
        advance(&self.events_read, capture.records_read);
        advance(&self.bytes_captured, capture.bytes_captured);
        advance(&self.events_lost, capture.records_lost);
        advance(&self.connections_not_http, capture.not_http_connections);
        advance(
            &self.tls_connections_not_llm,
            capture.tls_not_llm_connections,
        );
        advance(&self.requests_not_post, capture.not_post_requests);
        advance(&self.exchanges_over_share, capture.exchanges_over_share);
        self.open_streams.set(capture.open_streams as i64);
        advance(&self.calls_lost, reconstruction.calls_lost);
        advance(
            &self.connections_joined_midway,
            reconstruction.connections_joined_midway,
        );
        let stages = [
            (value::STAGE_HTTP, reconstruction.parse_failures),
            (value::STAGE_PROVIDER, reconstruction.decode_errors),
        ];
        for (stage, total) in stages {
            advance(&self.parse_failures.with_label_values(&[stage]), total);
        }
        let parts = [
            (value::PART_CAPTURE, capture.truncated),
            (
                value::PART_REQUEST_BODY,
                reconstruction.request_bodies_truncated,
            ),
            (
                value::PART_RESPONSE_BODY,
                reconstruction.response_bodies_truncated,
            ),
            (value::PART_EVENT, reconstruction.oversized_events),
            (
                value::PART_OUTPUT_TEXT,
                reconstruction.output_text_truncated,
            ),
        ];
        for (part, total) in parts {
            advance(&self.truncated.with_label_values(&[part]), total);
        }
        if let Some(processes) = &capture.processes {
            self.observe_processes(processes);
        }
        if let Some(packets) = &capture.packets {
            self.observe_packets(packets);
        }
    }

    fn observe_processes(&self, processes: &ProcessReport) {
        self.attached_processes.set(processes.watched as i64);
        self.tls_processes.reset();
        for &(stack, count) in &processes.tls {
            let (stack, state) = match stack {
                Some(stack) => (stack, value::TLS_HOOKED),
                None => (value::TLS_NONE, value::TLS_UNHOOKED),
            };
            self.tls_processes
                .with_label_values(&[stack, state])
                .set(count as i64);
        }
        for &(map, entries) in &processes.map_entries {
            self.bpf_map_entries
                .with_label_values(&[map])
                .set(entries as i64);
        }
        for &latency in &processes.hook_latencies {
            self.tls_hook_latency.observe(latency);
        }
    }

    fn observe_packets(&self, packets: &PacketReport) {
        advance(&self.packets_seen, packets.seen);
        let dropped = [
            (value::DROPPED_BY_KERNEL, packets.dropped_by_kernel),
            (value::DROPPED_BY_INTERFACE, packets.dropped_by_interface),
            (value::DROPPED_BY_AGENT, packets.dropped_by_agent),
        ];
        for (by, total) in dropped {
            advance(&self.packets_dropped.with_label_values(&[by]), total);
        }
        for &(reason, total) in &packets.abandoned {
            advance(&self.flows_abandoned.with_label_values(&[reason]), total);
        }
    }
}

/// Raises a counter to a running total kept elsewhere.
fn advance(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// Every metric, in one registry.
#[derive(Debug)]
pub struct MetricsRegistry {
    registry: Registry,
    cap: LabelCap,
    slow: SlowThresholds,
    /// `SERVICE_NAME`/`OTEL_SERVICE_NAME`; else each call's pod, container
    /// or process name.
    service_name: Option<String>,
    token_rate: HistogramVec,
    ttft: HistogramVec,
    duration: HistogramVec,
    tokens: IntCounterVec,
    errors: IntCounterVec,
    slow_requests: IntCounterVec,
    genai_duration: HistogramVec,
    genai_tokens: HistogramVec,
    genai_first_chunk: HistogramVec,
    genai_per_chunk: HistogramVec,
    health: Health,
}

struct Families<'r>(&'r Registry);

impl Families<'_> {
    fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> Result<HistogramVec, MetricsError> {
        let h = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?;
        self.0.register(Box::new(h.clone()))?;
        Ok(h)
    }

    fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counter(&self, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
        let c = IntCounter::new(name, help)?;
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(g.clone()))?;
        Ok(g)
    }

    fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        let g = IntGauge::new(name, help)?;
        self.0.register(Box::new(g.clone()))?;
        Ok(g)
    }
}

fn with(labels: &[&'static str], extra: &'static str) -> Vec<&'static str> {
    let mut all = labels.to_vec();
    all.push(extra);
    all
}

impl MetricsRegistry {
    /// All families, empty; labels capped at `--max-label-values` (see
    /// `LabelCap`).
    pub fn new(settings: &ExportSettings) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let f = Families(&registry);
        let exporter = [label::EXPORTER];
        let health = Health {
            events_read: f.counter(metric::EVENTS_READ, "Capture records read from the kernel ring buffer.")?,
            events_lost: f.counter(metric::EVENTS_LOST, "Capture records dropped in the kernel because the ring buffer was full.")?,
            connections_not_http: f.counter(metric::CONNECTIONS_NOT_HTTP, "Connections --all stopped capturing at their first bytes, which were not HTTP (so no LLM call).")?,
            requests_not_post: f.counter(metric::REQUESTS_NOT_POST, "HTTP/1 requests --all did not copy, nor their responses: their method is not POST, which every LLM API call uses.")?,
            exchanges_over_share: f.counter(metric::EXCHANGES_OVER_SHARE, "HTTP/1 exchanges --all stopped copying once past their share (1 MiB) while the kernel ring buffer was more than half full, so an upload or a flood cannot crowd other connections' records out.")?,
            tls_connections_not_llm: f.counter(metric::TLS_CONNECTIONS_NOT_LLM, "TLS connections whose process --all did not hook: their ClientHello named no LLM API host (see --llm-host).")?,
            tls_hook_latency: f.histogram(metric::TLS_HOOK_LATENCY, "Time from a process's exec to the hooking of TLS code no earlier process used (its executable's static OpenSSL, a library), seconds.", prometheus::DEFAULT_BUCKETS, &[])?.with_label_values(&[] as &[&str]),
            bytes_captured: f.counter(metric::BYTES_CAPTURED, "Payload bytes captured from watched processes.")?,
            attached_processes: f.gauge(metric::ATTACHED_PROCESSES, "Processes currently watched.")?,
            open_streams: f.gauge(metric::OPEN_STREAMS, "Connections currently being reassembled.")?,
            tls_processes: f.gauges(metric::TLS_PROCESSES, "Watched processes by TLS library stack and state (hooked, or unhooked: no hooked TLS library mapped, only plaintext seen).", &[label::STACK, label::STATE])?,
            bpf_map_entries: f.gauges(metric::BPF_MAP_ENTRIES, "Entries in the kernel's per-process, per-thread and per-connection maps, by map.", &[label::MAP])?,
            parse_failures: f.counters(metric::PARSE_FAILURES, "Connections or messages that could not be parsed, by stage.", &[label::STAGE])?,
            calls_lost: f.counter(
                metric::CALLS_LOST,
                "LLM calls lost with a connection whose HTTP framing failed.",
            )?,
            connections_joined_midway: f.counter(metric::CONNECTIONS_JOINED_MIDWAY, "Connections open before llmtap watched them and first seen in the middle of a message (llmtap started or restarted meanwhile): the call in flight is not recorded, the next requests on them are.")?,
            truncated: f.counters(metric::TRUNCATED, "What a cap cut, by part: capture (a read/write over --capture-bytes, the rest a gap), request_body, response_body (a response whose bytes were cut or lost), event (a stream event over 1 MiB, dropped), output_text (generated text kept per call for counting tokens).", &[label::PART])?,
            calls_sampled_out: f.counter(metric::CALLS_SAMPLED_OUT, "Calls not exported as traces because of TELEMETRY_SAMPLE_RATE (metrics count them).")?,
            spans_exported: f.counters(metric::SPANS_EXPORTED, "Spans accepted by the collector.", &exporter)?,
            spans_dropped: f.counters(metric::SPANS_DROPPED, "Spans lost: export queue full or export failed.", &exporter)?,
            exporter_failures: f.counters(metric::EXPORTER_FAILURES, "Failed export attempts.", &exporter)?,
            label_values_folded: f.counters(metric::LABEL_VALUES_FOLDED, "Label values reported as \"other\" because the label reached --max-label-values, by metric.", &[label::METRIC])?,
            packets_seen: f.counter(metric::PACKETS_SEEN, "Packets read from libpcap (--capture pcap, --read).")?,
            packets_dropped: f.counters(metric::PACKETS_DROPPED, "Packets lost before reassembly, by who dropped them: kernel (capture buffer full), interface, agent (too slow).", &[label::BY])?,
            flows_abandoned: f.counters(metric::FLOWS_ABANDONED, "TCP flows the packet capture gave up, by reason: idle, flow_limit, tls (unreadable from packets).", &[label::REASON])?,
        };
        Ok(MetricsRegistry {
            token_rate: f.histogram(metric::TOKEN_GENERATION_RATE, "Output tokens per second of each call (1/TPOT when streamed).", &TOKEN_RATE_BUCKETS, &SEED)?,
            ttft: f.histogram(metric::TIME_TO_FIRST_TOKEN, "Time from request start to the first output token, seconds.", &DURATION_BUCKETS, &SEED)?,
            duration: f.histogram(metric::REQUEST_DURATION, "Time from request start to the response's last byte, seconds.", &DURATION_BUCKETS, &with(&SEED, label::STATUS))?,
            tokens: f.counters(metric::TOTAL_TOKENS, "Tokens used, by token_type (input, output).", &with(&SEED, label::TOKEN_TYPE))?,
            errors: f.counters(metric::ERROR_COUNT, "Failed calls, by error_type.", &with(&SEED, label::ERROR_TYPE))?,
            slow_requests: f.counters(metric::SLOW_REQUESTS, "Calls over LLM_SLOW_REQUEST_THRESHOLD_SECONDS (reason=duration) or under LLM_SLOW_TOKEN_RATE_THRESHOLD tokens/s (reason=token_rate).", &with(&SEED, label::REASON))?,
            genai_duration: f.histogram(metric::GENAI_OPERATION_DURATION, "GenAI operation duration (OTel gen_ai.client.operation.duration), seconds.", &DURATION_BUCKETS, &GENAI)?,
            genai_tokens: f.histogram(metric::GENAI_TOKEN_USAGE, "Tokens used per operation (OTel gen_ai.client.token.usage).", &TOKEN_BUCKETS, &with(&GENAI, label::GENAI_TOKEN_TYPE))?,
            genai_first_chunk: f.histogram(metric::GENAI_TIME_TO_FIRST_CHUNK, "Time to the first response chunk (OTel gen_ai.client.operation.time_to_first_chunk), seconds.", &DURATION_BUCKETS, &GENAI)?,
            genai_per_chunk: f.histogram(metric::GENAI_TIME_PER_OUTPUT_CHUNK, "Time between consecutive output chunks (OTel gen_ai.client.operation.time_per_output_chunk), seconds.", &DURATION_BUCKETS, &GENAI)?,
            health,
            registry,
            cap: LabelCap::new(settings.max_label_values),
            slow: settings.slow,
            service_name: settings.service_name.clone(),
        })
    }

    /// The agent's own counters.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Counts one finished call in every family it belongs to.
    pub fn record(&self, call: &LlmCall, workload: &Workload) {
        let status = call
            .outcome
            .http_status
            .map_or(Cow::Borrowed("none"), |s| Cow::Owned(s.to_string()));
        let model = call.request_model.as_deref().unwrap_or("");
        let operation = call.api.as_str();
        let side = derived::side(call);
        // Empty when unknown, like `error_type`: Prometheus reads an empty
        // label as absent.
        let container = workload.container_id.as_deref().unwrap_or("");
        let namespace = workload.pod_namespace.as_deref().unwrap_or("");
        let pod = workload.pod_name.as_deref().unwrap_or("");
        let seed = [
            model,
            call.provider,
            operation,
            derived::service(self.service_name.as_deref(), call, workload),
            side,
            container,
            namespace,
            pod,
        ];
        let seed_with = |family: &'static str, extra: &str| {
            let mut values = seed.to_vec();
            values.push(extra);
            self.labels(family, &with(&SEED, extra_label(family)), &values)
        };
        let duration = call.timings.elapsed_s();
        self.duration
            .with_label_values(&seed_with(metric::REQUEST_DURATION, &status))
            .observe(duration);
        if let Some(ttft) = call.timings.ttft_s() {
            self.ttft
                .with_label_values(&self.labels(metric::TIME_TO_FIRST_TOKEN, &SEED, &seed))
                .observe(ttft);
        }
        if let Some(rate) = call.tokens_per_second().filter(|r| r.is_finite()) {
            self.token_rate
                .with_label_values(&self.labels(metric::TOKEN_GENERATION_RATE, &SEED, &seed))
                .observe(rate);
        }
        let tokens = [
            (value::TOKEN_INPUT, call.usage.input_tokens),
            (value::TOKEN_OUTPUT, call.usage.output_tokens),
        ];
        for (kind, count) in tokens {
            if let Some(count) = count {
                self.tokens
                    .with_label_values(&seed_with(metric::TOTAL_TOKENS, kind))
                    .inc_by(count);
            }
        }
        let error = call.outcome.error_type.map(|e| e.as_str());
        if let Some(error) = error {
            self.errors
                .with_label_values(&seed_with(metric::ERROR_COUNT, error))
                .inc();
        }
        let slow = SlowReasons::of(call, self.slow);
        for (reason, is) in [
            (value::SLOW_DURATION, slow.duration),
            (value::SLOW_TOKEN_RATE, slow.token_rate),
        ] {
            if is {
                self.slow_requests
                    .with_label_values(&seed_with(metric::SLOW_REQUESTS, reason))
                    .inc();
            }
        }

        let genai = [
            operation,
            call.provider,
            model,
            call.response_model.as_deref().unwrap_or(model),
            call.server_address.as_deref().unwrap_or(""),
            error.unwrap_or(""),
            side,
            container,
            namespace,
            pod,
        ];
        self.genai_duration
            .with_label_values(&self.labels(metric::GENAI_OPERATION_DURATION, &GENAI, &genai))
            .observe(duration);
        for (kind, count) in tokens {
            if let Some(count) = count {
                let mut values = genai.to_vec();
                values.push(kind);
                self.genai_tokens
                    .with_label_values(&self.labels(
                        metric::GENAI_TOKEN_USAGE,
                        &with(&GENAI, label::GENAI_TOKEN_TYPE),
                        &values,
                    ))
                    .observe(count as f64);
            }
        }
        if let Some(first) = call.timings.time_to_first_chunk_s() {
            self.genai_first_chunk
                .with_label_values(&self.labels(metric::GENAI_TIME_TO_FIRST_CHUNK, &GENAI, &genai))
                .observe(first);
        }
        let per_chunk = self.genai_per_chunk.with_label_values(&self.labels(
            metric::GENAI_TIME_PER_OUTPUT_CHUNK,
            &GENAI,
            &genai,
        ));
        for gap in call.timings.inter_chunk_gaps() {
            per_chunk.observe(gap as f64 / 1e9);
        }
    }

    /// Label values for one family, each through the cap. Empty values stay
    /// empty (Prometheus reads them as "label absent", e.g. no error).
    fn labels(&self, family: &'static str, names: &[&'static str], values: &[&str]) -> Vec<String> {
        names
            .iter()
            .zip(values)
            .map(|(&name, &raw)| {
                if raw.is_empty() {
                    return String::new();
                }
                match self.cap.admit(family, name, raw) {
                    Admitted::Kept(v) => v.into_owned(),
                    Admitted::Folded => {
                        self.health
                            .label_values_folded
                            .with_label_values(&[family])
                            .inc();
                        value::OTHER.to_owned()
                    }
                }
            })
            .collect()
    }

    /// The text exposition format, for a scrape.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Text encoding into a Vec cannot fail for registry-made families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The label a seed family has after the common ones.
fn extra_label(family: &'static str) -> &'static str {
    match family {
        metric::REQUEST_DURATION => label::STATUS,
        metric::TOTAL_TOKENS => label::TOKEN_TYPE,
        metric::ERROR_COUNT => label::ERROR_TYPE,
        _ => label::REASON,
    }
}

#[cfg(test)]
mod tests;
