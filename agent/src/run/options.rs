//! From the command line to what each kind of run needs: which source,
//! which scopes, which outputs. Validation of single values stays in `cli`
//! and `config`; here only what depends on several flags at once.

use crate::capture::ebpf::llm_hosts;
use crate::capture::ebpf::scope::{ScopeArgs, Scopes};
use crate::capture::ebpf::EbpfConfig;
use crate::capture::pcap::libpcap::PacketFilter;
use crate::cli::{CaptureMode, WatchArgs};
use crate::config::ExportSettings;
use crate::export::print::PrintedBytes;

use super::{AgentOptions, OutputOptions, PacketInput, PacketOptions};

/// The packet path's options, when `--read` or `--capture pcap` asks for it.
pub(crate) fn packet_options(watch: &WatchArgs) -> anyhow::Result<Option<PacketOptions>> {
    let input = match (&watch.read, watch.capture) {
        (Some(path), _) => PacketInput::File(path.clone()),
        (None, CaptureMode::Pcap) => {
            if !watch.pid.is_empty() || !watch.command.is_empty() {
                anyhow::bail!(
                    "--capture pcap reads packets, not processes: drop --pid and the command"
                );
            }
            let iface = watch.iface.clone().ok_or_else(|| {
                anyhow::anyhow!("--capture pcap needs --iface IFACE (lo, eth0, any)")
            })?;
            PacketInput::Live { iface }
        }
        (None, CaptureMode::Ebpf) => {
            if watch.iface.is_some() || watch.filter.is_some() || watch.port.is_some() {
                anyhow::bail!("--iface, --filter and --port go with --capture pcap or --read");
            }
            return Ok(None);
        }
    };
    Ok(Some(PacketOptions {
        input,
        filter: PacketFilter {
            expression: watch.filter.clone(),
            port: watch.port,
        },
        output: output_options(watch),
        export: ExportSettings::from_args(&watch.export)?,
    }))
}

/// What --print shows and whether calls keep their text: content only with
/// --capture-content (which --print-payload requires).
fn output_options(watch: &WatchArgs) -> OutputOptions {
    let bytes = match (watch.print_payload, watch.capture_content) {
        (true, _) => PrintedBytes::Payload,
        (false, true) => PrintedBytes::Preview,
        (false, false) => PrintedBytes::Nothing,
    };
    OutputOptions {
        print: watch.print.then_some(bytes),
        capture_content: watch.capture_content,
    }
}

/// The eBPF path's options.
pub(crate) fn agent_options(watch: WatchArgs) -> anyhow::Result<AgentOptions> {
    let output = output_options(&watch);
    let scopes = Scopes::parse(&ScopeArgs {
        exes: watch.exe,
        cgroups: watch.cgroup,
        containers: watch.container,
        all: watch.all,
    })?;
    Ok(AgentOptions {
        export: ExportSettings::from_args(&watch.export)?,
        pids: watch.pid,
        command: watch.command,
        output,
        ebpf: EbpfConfig {
            capture_bytes: watch.capture_bytes,
            ring_buffer_bytes: watch.ring_buffer_kib * 1024,
            follow_forks: !watch.no_follow_forks,
            report_all_execs: scopes.needs_all_execs(),
            watch_all: scopes.all,
            llm_hosts: if scopes.all {
                llm_hosts::with_known(watch.llm_host)
            } else {
                Vec::new()
            },
        },
        scopes,
    })
}
