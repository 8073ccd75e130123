//! Exporters: where finished records go.

pub mod derived;
pub mod labels;
pub mod metrics_server;
pub mod otlp;
pub mod print;
pub mod prometheus;
pub mod semconv;
pub mod telemetry;
