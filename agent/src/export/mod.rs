//! Exporters: where finished calls and the agent's health go.
//!
//! Input: each [`LlmCall`] with its process's [`Workload`], each connection
//! event (for `--print`), and the running totals of capture and
//! reconstruction. Output: the console (a `log` line per call, or
//! `print`'s JSON lines), Prometheus metrics (`prometheus`, served by
//! `metrics_server`) and OTLP traces (`otlp`), with every attribute name in
//! `semconv` and what both derive from a call in `derived`. `Exporters`
//! is the pipeline's `Outputs`.

pub(crate) mod derived;
pub(crate) mod labels;
pub(crate) mod log;
pub mod metrics_server;
pub mod otlp;
pub(crate) mod print;
pub mod prometheus;
pub(crate) mod semconv;
pub(crate) mod telemetry;

use crate::calls::{LlmCall, ReconstructionStats};
use crate::capture::CaptureReport;
use crate::pipeline::Outputs;
use crate::stream::{ConnectionId, StreamEvent};
use crate::workload::Workload;
use print::StreamPrinter;
use telemetry::Telemetry;

/// The console and the telemetry, as the run loop's outputs.
pub(crate) struct Exporters {
    /// `--print`'s JSON lines; the log line per call without it.
    printer: Option<StreamPrinter<std::io::Stdout>>,
    telemetry: Telemetry,
}

impl Exporters {
    pub fn new(printer: Option<StreamPrinter<std::io::Stdout>>, telemetry: Telemetry) -> Self {
        Exporters { printer, telemetry }
    }

    /// Flushes queued spans and stops the metrics endpoint.
    pub async fn shutdown(self) {
        self.telemetry.shutdown().await;
    }
}

impl Outputs for Exporters {
    fn connection_event(&mut self, id: ConnectionId, event: &StreamEvent) -> std::io::Result<()> {
        match &mut self.printer {
            Some(printer) => printer.print(id, event),
            None => Ok(()),
        }
    }

    fn call(&mut self, call: &LlmCall, workload: &Workload) -> std::io::Result<()> {
        match &mut self.printer {
            Some(printer) => printer.print_call(call, workload)?,
            None => tracing::info!("{}", log::summary(call, workload)),
        }
        self.telemetry.record(call, workload);
        Ok(())
    }

    fn observe(&mut self, capture: &CaptureReport, reconstruction: &ReconstructionStats) {
        self.telemetry.observe(capture, reconstruction);
    }
}
