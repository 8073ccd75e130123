//! OTLP traces: one CLIENT span per LLM call, sent over gRPC or
//! HTTP/protobuf with `opentelemetry-otlp` (rustls, no OpenSSL).
//!
//! Input: each finished [`LlmCall`], on the capture path. Output:
//! spans at the collector. [`OtlpExporter::export`] never waits: it samples
//! (`TELEMETRY_SAMPLE_RATE`, by trace id as OTel's ratio sampler does), builds
//! the span's data and puts it on a bounded queue. One tokio task batches the
//! queue and exports; a slow or absent collector only fills the queue, and
//! every span that does not make it is counted (queue full or export
//! failed), as are the calls sampled out.
//!
//! Spans are built as SDK `SpanData` (times from the kernel, known once
//! the call is over) and handed to the OTLP `SpanExporter` directly. The
//! SDK's tracer provider and `BatchSpanProcessor` are not used: a provider
//! has one resource, while our spans come from many observed processes, and
//! the batch processor keeps its drop count private. Here each batch is
//! exported per process, with that process as its resource (`service.name`,
//! `process.pid`, `process.executable.name`, `host.name`, and when known
//! `container.id`, `k8s.pod.name`, `k8s.pod.uid`, `k8s.namespace.name`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{
    Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents,
    SpanExporter as _, SpanLinks,
};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::derived::{self, SlowReasons};
use super::labels::truncate;
use super::prometheus::Health;
use super::semconv::{attr, value};
use crate::calls::LlmCall;
use crate::config::{ExportSettings, OtlpProtocol, OtlpSettings, SlowThresholds};
use crate::stream::WallNanos;
use crate::workload::Workload;

/// Longest string attribute kept, in bytes.
const MAX_ATTRIBUTE_BYTES: usize = 256;
/// Bytes of prompt or completion text per content event at most
/// (`--capture-content`), so one long conversation cannot fill an export.
const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Spans per export request at most.
const MAX_BATCH: usize = 512;
/// How long a span waits for others to share its export request.
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// The exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// `opentelemetry-otlp` refused the endpoint or options.
    #[error("cannot set up the OTLP exporter for {endpoint}: {source}")]
    Build {
        /// The endpoint given.
        endpoint: String,
        /// Why it was refused.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The counters the exporter bumps (from [`Health`], `exporter="otlp"`).
#[derive(Clone, Debug)]
struct Counters {
    /// Spans the export task finished with (exported or failed), so that
    /// shutdown can count what it abandons.
    settled: Arc<AtomicU64>,
    sampled_out: IntCounter,
    exported: IntCounter,
    dropped: IntCounter,
    failures: IntCounter,
}

/// Which observed process a span belongs to: its resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ProcessKey {
    service: String,
    pid: u32,
    executable: String,
    workload: Workload,
}

struct Queued {
    process: ProcessKey,
    span: SpanData,
}

/// Span-building choices.
#[derive(Debug)]
struct SpanOptions {
    max_chunk_events: usize,
    slow: SlowThresholds,
    service_name: Option<String>,
}

/// The running exporter. Dropping it without [`OtlpExporter::shutdown`]
/// loses the queued spans.
pub struct OtlpExporter {
    queue: mpsc::Sender<Queued>,
    sampler: Sampler,
    ids: RandomIdGenerator,
    options: SpanOptions,
    counters: Counters,
    worker: JoinHandle<()>,
    /// Spans put on the queue.
    queued: AtomicU64,
}

impl OtlpExporter {
    /// Builds the exporter and starts its task on the current tokio runtime;
    /// `None` when no OTLP endpoint is configured (traces off). Nothing
    /// connects yet: an absent collector is found out (and counted) at the
    /// first export.
    pub fn start(export: &ExportSettings, health: &Health) -> Result<Option<Self>, OtlpError> {
        let Some(settings) = &export.otlp else {
            return Ok(None);
        };
        let exporter = build_exporter(settings).map_err(|source| OtlpError::Build {
            endpoint: settings.endpoint.clone(),
            source,
        })?;
        let otlp = [value::EXPORTER_OTLP];
        let counters = Counters {
            settled: Arc::default(),
            sampled_out: health.calls_sampled_out.clone(),
            exported: health.spans_exported.with_label_values(&otlp),
            dropped: health.spans_dropped.with_label_values(&otlp),
            failures: health.exporter_failures.with_label_values(&otlp),
        };
        let (queue, receiver) = mpsc::channel(settings.queue_size);
        let worker = tokio::spawn(export_loop(
            exporter,
            receiver,
            settings.timeout,
            counters.clone(),
            host_name(),
        ));
        Ok(Some(OtlpExporter {
            queue,
            sampler: Sampler::TraceIdRatioBased(settings.sample_rate),
            ids: RandomIdGenerator::default(),
            options: SpanOptions {
                max_chunk_events: settings.max_chunk_events,
                slow: export.slow,
                service_name: export.service_name.clone(),
            },
            counters,
            worker,
            queued: AtomicU64::new(0),
        }))
    }

    /// Queues the call's span, under its process's resource, unless
    /// sampled out; never blocks.
    pub fn export(&self, call: &LlmCall, workload: &Workload) {
        let parent = remote_parent(call);
        let trace_id = parent
            .as_ref()
            .map_or_else(|| self.ids.new_trace_id(), |p| p.trace_id());
        let name = span_name(call);
        let sampled =
            self.sampler
                .should_sample(None, trace_id, &name, &SpanKind::Client, &[], &[]);
        if sampled.decision != SamplingDecision::RecordAndSample {
            self.counters.sampled_out.inc();
            return;
        }
        let span = build_span(
            call,
            name,
            trace_id,
            self.ids.new_span_id(),
            parent,
            &self.options,
        );
        let process = ProcessKey {
            service: derived::service(self.options.service_name.as_deref(), call, workload)
                .to_owned(),
            pid: call.pid,
            executable: call.comm.clone().unwrap_or_default(),
            workload: workload.clone(),
        };
        match self.queue.try_send(Queued { process, span }) {
            Ok(()) => _ = self.queued.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.dropped.inc(),
        }
    }

    /// Exports what is queued, waiting at most `deadline`; what is still
    /// queued then is dropped and counted.
    pub async fn shutdown(self, deadline: Duration) {
        drop(self.queue);
        let mut worker = self.worker;
        if tokio::time::timeout(deadline, &mut worker).await.is_err() {
            worker.abort();
            let settled = self.counters.settled.load(Ordering::Relaxed);
            let abandoned = self.queued.load(Ordering::Relaxed).saturating_sub(settled);
            self.counters.dropped.inc_by(abandoned);
            tracing::warn!(
                "OTLP export did not finish within {deadline:?}; {abandoned} queued span(s) dropped"
            );
        }
    }
}

fn build_exporter(
    settings: &OtlpSettings,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    // reqwest is built without a crypto provider of its own: use ring, as
    // the rest of the agent does. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No retries: a failed export is counted and its spans dropped, rather
    // than holding up the spans queued behind it.
    let retry = RetryPolicy::disabled();
    match settings.protocol {
        OtlpProtocol::Grpc => {
            let metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(
                http_headers(&settings.headers),
            );
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&settings.endpoint)
                .with_timeout(settings.timeout)
                .with_metadata(metadata)
                .with_retry_policy(retry);
            if settings.endpoint.starts_with("https://") {
                builder = builder.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_native_roots(),
                );
            }
            builder.build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&settings.endpoint)
            .with_timeout(settings.timeout)
            .with_headers(settings.headers.iter().cloned().collect())
            .with_retry_policy(retry)
            .build(),
    }
}

/// The configured headers as gRPC metadata wants them; settings validated
/// the keys, and a value that is no valid header is left out.
fn http_headers(headers: &[(String, String)]) -> http::HeaderMap {
    headers
        .iter()
        .filter_map(|(key, val)| {
            Some((
                http::HeaderName::from_bytes(key.as_bytes()).ok()?,
                http::HeaderValue::from_str(val).ok()?,
            ))
        })
        .collect()
}

async fn export_loop(
    mut exporter: opentelemetry_otlp::SpanExporter,
    mut queue: mpsc::Receiver<Queued>,
    timeout: Duration,
    counters: Counters,
    host: String,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut failing = false;
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let deadline = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(deadline);
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                got = queue.recv_many(&mut batch, room) => if got == 0 { break },
                _ = &mut deadline => break,
            }
        }
        let mut by_process: BTreeMap<ProcessKey, Vec<SpanData>> = BTreeMap::new();
        for queued in batch.drain(..) {
            by_process
                .entry(queued.process)
                .or_default()
                .push(queued.span);
        }
        for (process, spans) in by_process {
            let count = spans.len() as u64;
            // Export calls never overlap (one task), so switching the
            // resource per request is safe.
            exporter.set_resource(&resource(&process, &host));
            match export_with_deadline(&exporter, spans, timeout).await {
                Ok(()) => {
                    counters.exported.inc_by(count);
                    if std::mem::take(&mut failing) {
                        tracing::info!("OTLP export works again");
                    }
                }
                Err(e) => {
                    counters.failures.inc();
                    counters.dropped.inc_by(count);
                    // Once per outage at warn level; every failure at debug.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            "OTLP export failed ({e}): spans are dropped until it works again \
                             (counted in llmtap_spans_dropped_total)"
                        );
                    }
                    tracing::debug!("OTLP export of {count} span(s) failed: {e}");
                }
            }
            counters.settled.fetch_add(count, Ordering::Relaxed);
        }
    }
    let _ = exporter.shutdown();
}

/// One export request. The exporter has its own timeout; this one guards
/// against a transport that ignores it.
async fn export_with_deadline(
    exporter: &opentelemetry_otlp::SpanExporter,
    spans: Vec<SpanData>,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout + Duration::from_secs(1), exporter.export(spans)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

fn resource(process: &ProcessKey, host: &str) -> Resource {
    let workload = &process.workload;
    let known = [
        (attr::CONTAINER_ID, &workload.container_id),
        (attr::K8S_POD_NAME, &workload.pod_name),
        (attr::K8S_POD_UID, &workload.pod_uid),
        (attr::K8S_NAMESPACE_NAME, &workload.pod_namespace),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some(KeyValue::new(key, value.clone()?)));
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new(attr::SERVICE_NAME, process.service.clone()),
            KeyValue::new(attr::HOST_NAME, host.to_owned()),
            KeyValue::new(attr::PROCESS_PID, i64::from(process.pid)),
            KeyValue::new(attr::PROCESS_EXECUTABLE_NAME, process.executable.clone()),
        ])
        .with_attributes(known)
        .build()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| value::UNKNOWN.to_owned())
}

/// `{gen_ai.operation.name} {gen_ai.request.model}`, or the operation alone
/// when the model is unknown.
fn span_name(call: &LlmCall) -> String {
    match call.request_model.as_deref().filter(|m| !m.is_empty()) {
        Some(model) => format!(
            "{} {}",
            call.api.as_str(),
            truncate(model, MAX_ATTRIBUTE_BYTES)
        ),
        None => call.api.as_str().to_owned(),
    }
}

/// The caller's span from the request's `traceparent` (already checked by
/// `calls`), as a remote parent. The header's flags are not kept on the
/// record: the parent counts as sampled, since its service sent it on.
fn remote_parent(call: &LlmCall) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(call.trace_id.as_deref()?).ok()?;
    let span_id = SpanId::from_hex(call.parent_span_id.as_deref()?).ok()?;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then(|| {
        SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )
    })
}

/// A string-array attribute value.
fn strings<'a>(items: impl Iterator<Item = &'a str>) -> Value {
    let items: Vec<StringValue> = items.map(|s| StringValue::from(s.to_owned())).collect();
    Value::Array(items.into())
}

fn wall(at: WallNanos) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(at)
}

fn build_span(
    call: &LlmCall,
    name: String,
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanContext>,
    options: &SpanOptions,
) -> SpanData {
    let mut attributes = vec![
        KeyValue::new(attr::GENAI_OPERATION_NAME, call.api.as_str()),
        KeyValue::new(attr::GENAI_PROVIDER_NAME, call.provider),
        KeyValue::new(attr::GENAI_REQUEST_STREAM, call.stream),
    ];
    // Strings come from observed traffic: cut, so one odd request cannot
    // make a huge span.
    let mut text = |key: &'static str, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            attributes.push(KeyValue::new(
                key,
                truncate(v, MAX_ATTRIBUTE_BYTES).to_owned(),
            ));
        }
    };
    text(attr::GENAI_REQUEST_MODEL, call.request_model.as_deref());
    text(attr::GENAI_RESPONSE_MODEL, call.response_model.as_deref());
    text(attr::GENAI_RESPONSE_ID, call.response_id.as_deref());
    text(attr::SERVER_ADDRESS, call.server_address.as_deref());
    text(
        attr::ERROR_TYPE,
        call.outcome.error_type.map(|e| e.as_str()),
    );
    if !call.outcome.finish_reasons.is_empty() {
        let reasons = call.outcome.finish_reasons.iter().map(String::as_str);
        attributes.push(KeyValue::new(
            attr::GENAI_RESPONSE_FINISH_REASONS,
            strings(reasons),
        ));
    }
    let numbers = [
        (attr::GENAI_USAGE_INPUT_TOKENS, call.usage.input_tokens),
        (attr::GENAI_USAGE_OUTPUT_TOKENS, call.usage.output_tokens),
        (attr::SERVER_PORT, call.server_port.map(u64::from)),
        (attr::GENAI_REQUEST_MAX_TOKENS, call.max_tokens),
    ];
    for (key, number) in numbers {
        if let Some(n) = number {
            attributes.push(KeyValue::new(key, i64::try_from(n).unwrap_or(i64::MAX)));
        }
    }
    if let Some(temperature) = call.temperature {
        attributes.push(KeyValue::new(attr::GENAI_REQUEST_TEMPERATURE, temperature));
    }
    if let Some(first) = call.timings.time_to_first_chunk_s() {
        attributes.push(KeyValue::new(
            attr::GENAI_RESPONSE_TIME_TO_FIRST_CHUNK,
            first,
        ));
    }
    let slow = SlowReasons::of(call, options.slow);
    if slow.any() {
        attributes.push(KeyValue::new(attr::LLMTAP_SLOW, true));
        let reasons = [
            (value::SLOW_DURATION, slow.duration),
            (value::SLOW_TOKEN_RATE, slow.token_rate),
        ]
        .into_iter()
        .filter(|(_, is)| *is)
        .map(|(reason, _)| reason);
        attributes.push(KeyValue::new(attr::LLMTAP_SLOW_REASONS, strings(reasons)));
    }

    let kept = call.timings.chunks.len().min(options.max_chunk_events);
    let mut events = Vec::with_capacity(1 + kept);
    if let Some(at) = call.timings.first_output_ns {
        events.push(Event::new(attr::EVENT_FIRST_TOKEN, wall(at), Vec::new(), 0));
    }
    // Events keep their order, so no index: one attribute keeps them small.
    for chunk in &call.timings.chunks[..kept] {
        let tokens = vec![KeyValue::new(
            attr::LLMTAP_CHUNK_TOKENS,
            i64::from(chunk.tokens),
        )];
        events.push(Event::new(attr::EVENT_CHUNK, wall(chunk.t_ns), tokens, 0));
    }
    if let Some(content) = &call.content {
        let text = |key: &'static str, text: &str| {
            vec![KeyValue::new(
                key,
                truncate(text, MAX_CONTENT_BYTES).to_owned(),
            )]
        };
        events.push(Event::new(
            attr::EVENT_CONTENT_PROMPT,
            wall(call.timings.t0_ns),
            text(attr::GENAI_PROMPT, &content.prompt),
            0,
        ));
        events.push(Event::new(
            attr::EVENT_CONTENT_COMPLETION,
            wall(call.timings.over_ns()),
            text(attr::GENAI_COMPLETION, &content.completion),
            0,
        ));
    }
    // Past our cap, and past reconstruction's own list cap.
    let dropped_events = (call.timings.chunks.len() - kept) as u64 + call.timings.chunks_dropped;
    if dropped_events > 0 {
        attributes.push(KeyValue::new(
            attr::LLMTAP_CHUNK_EVENTS_DROPPED,
            dropped_events as i64,
        ));
    }

    let mut span_events = SpanEvents::default();
    span_events.events = events;
    span_events.dropped_count = u32::try_from(dropped_events).unwrap_or(u32::MAX);
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent.as_ref().map_or(SpanId::INVALID, |p| p.span_id()),
        parent_span_is_remote: parent.is_some(),
        span_kind: SpanKind::Client,
        name: name.into(),
        start_time: wall(call.timings.t0_ns),
        end_time: wall(call.timings.over_ns()),
        attributes,
        dropped_attributes_count: 0,
        events: span_events,
        links: SpanLinks::default(),
        status: match call.outcome.error_type {
            Some(error) => Status::error(error.as_str()),
            None => Status::Unset,
        },
        instrumentation_scope: InstrumentationScope::builder("llmtap")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

#[cfg(test)]
mod tests;
