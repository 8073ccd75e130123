//! The export side of the agent in one handle, for the run loop.
//!
//! Input: validated [`ExportSettings`], then each finished [`LlmCall`] and
//! the capture/reconstruction totals. Output: the metrics endpoint
//! (always, once started) and OTLP traces (when an endpoint is set). Every
//! call is counted in the metrics; sampling applies to traces only.

use std::sync::Arc;
use std::time::Duration;

use super::metrics_server::{MetricsServer, ServerError};
use super::otlp::{OtlpError, OtlpExporter};
use super::prometheus::{MetricsError, MetricsRegistry};
use crate::calls::{LlmCall, ReconstructionStats};
use crate::capture::CaptureReport;
use crate::config::ExportSettings;
use crate::workload::Workload;

/// Starting the exporters failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The metric families could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The metrics endpoint could not listen.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The OTLP exporter could not be built.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
}

/// Metrics registry, endpoint and (optional) trace exporter.
pub struct Telemetry {
    registry: Arc<MetricsRegistry>,
    server: MetricsServer,
    traces: Option<OtlpExporter>,
}

/// How long shutdown waits for queued spans to go out.
const SPAN_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

impl Telemetry {
    /// Registers the metrics, starts the endpoint and the OTLP exporter (on
    /// the current tokio runtime). `/readyz` says not ready until
    /// [`Telemetry::set_ready`].
    pub async fn start(settings: &ExportSettings) -> Result<Self, ExportError> {
        let registry = Arc::new(MetricsRegistry::new(settings)?);
        let server = MetricsServer::spawn(&settings.metrics, registry.clone()).await?;
        let traces = OtlpExporter::start(settings, registry.health())?;
        Ok(Telemetry {
            registry,
            server,
            traces,
        })
    }

    /// The metrics URL (`https` when it serves TLS).
    pub fn metrics_url(&self) -> String {
        self.server.url()
    }

    /// Marks capture as attached (`/readyz` → 200), or not.
    pub fn set_ready(&self, ready: bool) {
        self.server.set_ready(ready);
    }

    /// Counts the call in the metrics and queues its span; never blocks.
    pub fn record(&self, call: &LlmCall, workload: &Workload) {
        self.registry.record(call, workload);
        if let Some(traces) = &self.traces {
            traces.export(call, workload);
        }
    }

    /// Brings the health metrics up to the running totals of capture and
    /// reconstruction.
    pub fn observe(&self, capture: &CaptureReport, reconstruction: &ReconstructionStats) {
        self.registry.health().observe(capture, reconstruction);
    }

    /// Flushes queued spans (for at most a few seconds) and stops the
    /// endpoint.
    pub async fn shutdown(self) {
        if let Some(traces) = self.traces {
            traces.shutdown(SPAN_FLUSH_DEADLINE).await;
        }
        self.server.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::fixture::streamed_call;

    #[tokio::test]
    async fn records_calls_and_serves_them() {
        let mut settings = crate::config::test_settings();
        settings.metrics.addr = "127.0.0.1:0".parse().unwrap();
        let telemetry = Telemetry::start(&settings).await.unwrap();
        telemetry.record(&streamed_call("m", &[]), &Workload::default());
        let capture = CaptureReport {
            records_lost: 5,
            truncated: 4,
            ..CaptureReport::default()
        };
        let stats = ReconstructionStats {
            parse_failures: 2,
            connections_joined_midway: 3,
            oversized_events: 1,
            ..ReconstructionStats::default()
        };
        telemetry.observe(&capture, &stats);
        telemetry.observe(&capture, &stats);
        let text = String::from_utf8(telemetry.registry.encode()).unwrap();
        assert!(
            text.contains("llm_request_duration_seconds_count{container_id=\"\",k8s_namespace=\"\",k8s_pod=\"\",model=\"m\""),
            "{text}"
        );
        assert!(text.contains("llmtap_events_lost_total 5"), "{text}");
        for line in [
            "llmtap_parse_failures_total{stage=\"http\"} 2",
            "llmtap_connections_joined_midway_total 3",
            "llmtap_truncated_total{part=\"capture\"} 4",
            "llmtap_truncated_total{part=\"event\"} 1",
            "llmtap_truncated_total{part=\"response_body\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        telemetry.shutdown().await;
    }
}
