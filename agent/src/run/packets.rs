//! The agent on packets: a capture file replayed as fast as it reads, or a
//! live interface captured until stopped, through the same pipeline and
//! outputs as the eBPF path.

use std::path::PathBuf;

use super::{drive, pipeline, telemetry, Outcome, OutputOptions, StopSignals};
use crate::capture::pcap::file::FileSource;
use crate::capture::pcap::libpcap::PacketFilter;
use crate::capture::pcap::live::LiveSource;

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
    let no_end = std::future::pending();
    match &options.input {
        PacketInput::File(path) => {
            // Before anything starts: a bad file is the one line said.
            let source = FileSource::open(path, &options.filter)?;
            let telemetry = crate::export::telemetry::Telemetry::start(&options.export).await?;
            drive(
                source,
                pipeline(options.output, telemetry),
                &mut signals,
                no_end,
            )
            .await
        }
        PacketInput::Live { iface } => {
            let source = LiveSource::open(iface, &options.filter)?;
            std::thread::spawn(crate::calls::prepare_tokenizer);
            let telemetry = telemetry(&options.export).await?;
            telemetry.set_ready(true);
            drive(
                source,
                pipeline(options.output, telemetry),
                &mut signals,
                no_end,
            )
            .await
        }
    }
}
