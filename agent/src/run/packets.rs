//! The agent on packets: a capture file replayed as fast as it reads, or a
//! live interface captured until stopped, through the same pipeline and
//! outputs as the eBPF path.

use std::path::PathBuf;

use super::{drive, pipeline, telemetry, Outcome, OutputOptions, StopSignals};
use crate::capture::pcap::file::FileSource;
use crate::capture::pcap::libpcap::PacketFilter;
use crate::capture::pcap::live::LiveSource;
use crate::capture::CaptureSource;

/// Where packets come from.
#[derive(Clone, Debug)]
pub(crate) enum PacketInput {
    /// `--read FILE`: replay, then exit.
    File(PathBuf),
    /// `--capture pcap --iface IFACE`: capture until stopped.
    Live { iface: String },
}

#[derive(Clone, Debug)]
pub(crate) struct PacketOptions {
    pub input: PacketInput,
    pub filter: PacketFilter,
    pub output: OutputOptions,
    pub export: crate::config::ExportSettings,
}

pub(crate) async fn run(options: PacketOptions) -> anyhow::Result<Outcome> {
    let mut signals = StopSignals::listen()?;
    match &options.input {
        PacketInput::File(path) => {
            // Before anything starts: a bad file is the one line said.
            let source = FileSource::open(path, &options.filter)?;
            serve(source, &options, &mut signals).await
        }
        PacketInput::Live { iface } => {
            let source = LiveSource::open(iface, &options.filter)?;
            // Off the event loop: the first call must not wait for the tables.
            std::thread::spawn(crate::calls::prepare_tokenizer);
            serve(source, &options, &mut signals).await
        }
    }
}

/// Starts the exporters and drives `source` into them until it ends or a
/// signal comes.
async fn serve<S: CaptureSource>(
    source: S,
    options: &PacketOptions,
    signals: &mut StopSignals,
) -> anyhow::Result<Outcome> {
    let telemetry = telemetry(&options.export).await?;
    telemetry.set_ready(true);
    let pipeline = pipeline(options.output, telemetry);
    drive(source, pipeline, signals, std::future::pending()).await
}
