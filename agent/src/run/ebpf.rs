//! The agent on processes: the eBPF source set up for the pids, scopes or
//! command given, then driven until stopped, the command exits, or every
//! process given by pid is gone.

use std::ffi::OsString;

use anyhow::Context;

use super::{drive, pipeline, telemetry, Outcome, OutputOptions, StopSignals};
use crate::capture::ebpf::scope::Scopes;
use crate::capture::ebpf::{preflight, EbpfConfig, EbpfSource};
use crate::sys::held_child::HeldChild;

/// What to watch and what to output.
#[derive(Clone, Debug)]
pub(crate) struct AgentOptions {
    pub pids: Vec<u32>,
    /// `--exe`, `--cgroup`, `--container`, `--all`: processes watched as
    /// they start.
    pub scopes: Scopes,
    /// A command to start watched; the agent ends when it exits.
    pub command: Vec<OsString>,
    pub output: OutputOptions,
    pub ebpf: EbpfConfig,
    pub export: crate::config::ExportSettings,
}

pub(crate) async fn run(options: AgentOptions) -> anyhow::Result<Outcome> {
    if options.pids.is_empty() && options.command.is_empty() && options.scopes.is_empty() {
        anyhow::bail!("nothing to watch: give --pid PID, --exe NAME, --cgroup PATH, --container ID, --all, or a command after `--` (llmtap --print -- curl ...); packets instead: --capture pcap --iface IFACE, or --read FILE");
    }
    if !options.export.enabled {
        tracing::info!("ENABLE_TELEMETRY is false: attaching nothing, exporting nothing");
        if options.command.is_empty() {
            return Ok(Outcome::Stopped);
        }
        let status = tokio::process::Command::new(&options.command[0])
            .args(&options.command[1..])
            .status()
            .await
            .with_context(|| format!("cannot start {:?}", options.command[0]))?;
        return Ok(Outcome::CommandExited(status));
    }
    for &pid in &options.pids {
        preflight::check_process(pid)?;
    }
    let mut signals = StopSignals::listen()?;
    let scoped = !options.scopes.is_empty();
    let mut source = EbpfSource::load(&options.ebpf, options.scopes)?;
    // Off the event loop: the first call must not wait for the tables.
    std::thread::spawn(crate::calls::prepare_tokenizer);
    let telemetry = telemetry(&options.export).await?;
    let command_given = !options.command.is_empty();
    source.watch_pids(&options.pids, !command_given && !scoped)?;
    source.watch_scopes()?;
    let command = if command_given {
        let held = HeldChild::spawn(&options.command)
            .with_context(|| format!("cannot start {:?}", options.command[0]))?;
        source.watch_command(held.pid(), HeldChild::resolve_program(&options.command[0]))?;
        let mut child = held
            .release()
            .context("cannot release the started command")?;
        Some(tokio::task::spawn_blocking(move || child.wait()))
    } else {
        None
    };
    // Ready before the "watching" line: whoever waits for that line may
    // ask /readyz next.
    telemetry.set_ready(true);
    source.log_watching(scoped);
    let command_exit = async {
        match command {
            Some(child) => Ok(Outcome::CommandExited(
                child.await.context("lost the started command")??,
            )),
            None => std::future::pending().await,
        }
    };
    drive(
        source,
        pipeline(options.output, telemetry),
        &mut signals,
        command_exit,
    )
    .await
}
