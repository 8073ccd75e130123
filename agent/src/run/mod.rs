//! The running agent: builds a capture source and the exporters from the
//! options, then drives events from one to the other (`drive`) until it
//! is stopped, the source runs dry, or the command it started exits.
//! `ebpf` and `packets` hold the set-up of each kind of source.

mod ebpf;
mod options;
mod packets;

// The demo runs the eBPF path on options of its own.
#[cfg(feature = "demo")]
pub(crate) use ebpf::run as run_ebpf;
pub(crate) use ebpf::AgentOptions;
pub(crate) use packets::{PacketInput, PacketOptions};

use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::calls::Limits;
use crate::capture::CaptureSource;
use crate::cli::WatchArgs;
use crate::config::ExportSettings;
use crate::export::print::{PrintedBytes, StreamPrinter};
use crate::export::telemetry::Telemetry;
use crate::export::Exporters;
use crate::pipeline::Pipeline;
use crate::stream::WallNanos;
use crate::sys;
use crate::workload::Workloads;

/// Runs what the command line asks for (watching processes, or reading
/// packets) until it ends.
pub async fn run(watch: WatchArgs) -> anyhow::Result<Outcome> {
    match options::packet_options(&watch)? {
        Some(packets) => packets::run(packets).await,
        None => ebpf::run(options::agent_options(watch)?).await,
    }
}

/// What the console output shows, and whether calls keep their text.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OutputOptions {
    /// `--print`: JSON lines instead of log lines, showing this much of
    /// the bytes.
    pub print: Option<PrintedBytes>,
    /// `--capture-content`: calls keep their prompt and completion text,
    /// for `--print` and the traces.
    pub capture_content: bool,
}

/// How the agent ended.
#[derive(Debug)]
pub enum Outcome {
    /// SIGINT or SIGTERM.
    Stopped,
    /// The capture file was read to its end.
    Replayed,
    /// Every process given by --pid exited (and no scope was given).
    TargetsExited,
    /// The command the agent started exited with this status.
    CommandExited(ExitStatus),
}

/// SIGINT and SIGTERM, listened for from before anything is attached, so
/// that a signal always means a clean detach.
pub(crate) struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub(crate) fn listen() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// The pipeline and the exporters for `output`, around started telemetry.
fn pipeline(output: OutputOptions, telemetry: Telemetry) -> Pipeline<Exporters> {
    let limits = Limits {
        keep_content: output.capture_content,
        ..Limits::default()
    };
    let printer = output
        .print
        .map(|bytes| StreamPrinter::new(std::io::stdout(), bytes));
    Pipeline::new(
        limits,
        Workloads::default(),
        Exporters::new(printer, telemetry),
    )
}

/// Starts the exporters: metrics endpoint, OTLP traces.
async fn telemetry(export: &ExportSettings) -> anyhow::Result<Telemetry> {
    let telemetry = Telemetry::start(export).await?;
    tracing::info!("metrics on {}", telemetry.metrics_url());
    Ok(telemetry)
}

/// Moves events from `source` through `pipeline` until a signal, the end
/// of the source, or `until` (the started command's exit); then stops the
/// source, hands on what it still had, and shuts the exporters down.
async fn drive<S: CaptureSource>(
    mut source: S,
    mut pipeline: Pipeline<Exporters>,
    signals: &mut StopSignals,
    until: impl Future<Output = anyhow::Result<Outcome>>,
) -> anyhow::Result<Outcome> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut events = Vec::new();
    tokio::pin!(until);
    let outcome = loop {
        tokio::select! {
            read = source.read(&mut events) => {
                let more = read.and_then(|more| Ok(pipeline.feed(&mut events).map(|()| more)?));
                match more {
                    Ok(true) => {}
                    Ok(false) => break Ok(Outcome::Replayed),
                    Err(e) => break Err(e),
                }
            }
            _ = tick.tick() => {
                let watching = source.tick(now(), &mut events).and_then(|watching| {
                    pipeline.feed(&mut events)?;
                    pipeline.observe(&source.report());
                    Ok(watching)
                });
                match watching {
                    Ok(true) => {}
                    Ok(false) => break Ok(Outcome::TargetsExited),
                    Err(e) => break Err(e),
                }
            }
            outcome = &mut until => break outcome,
            () = signals.recv() => break Ok(Outcome::Stopped),
        }
    };
    source.stop(&mut events).await?;
    pipeline.feed(&mut events)?;
    pipeline.observe(&source.report());
    drop(source);
    pipeline.into_outputs().shutdown().await;
    outcome
}

/// The wall clock now.
fn now() -> WallNanos {
    sys::clock::realtime_ns() as WallNanos
}
