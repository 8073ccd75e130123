//! The `llmtap` binary: parses the command line, sets up logging, and hands
//! over to `run` (or `demo`). Every error ends as one line on stderr.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use llmtap::capture::ebpf::scope::{ScopeArgs, Scopes};
use llmtap::capture::ebpf::EbpfConfig;
use llmtap::capture::pcap::source::PacketFilter;
use llmtap::cli::{CaptureMode, Cli, Command, DemoArgs, LogFormat, WatchArgs};
use llmtap::export::print::PrintedBytes;
use llmtap::run::{self, AgentOptions, Outcome, OutputOptions};
use llmtap::run_packets::{self, PacketInput, PacketOptions};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMTAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The packet path's options, when `--read` or `--capture pcap` asks for it.
fn packet_options(watch: &WatchArgs) -> anyhow::Result<Option<PacketOptions>> {
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
        export: llmtap::config::ExportSettings::from_args(&watch.export)?,
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

fn agent_options(watch: WatchArgs) -> anyhow::Result<AgentOptions> {
    let output = output_options(&watch);
    let scopes = Scopes::parse(&ScopeArgs {
        exes: watch.exe,
        cgroups: watch.cgroup,
        containers: watch.container,
        all: watch.all,
    })?;
    Ok(AgentOptions {
        export: llmtap::config::ExportSettings::from_args(&watch.export)?,
        pids: watch.pid,
        command: watch.command,
        output,
        ebpf: EbpfConfig {
            capture_bytes: watch.capture_bytes,
            ring_buffer_bytes: watch.ring_buffer_kib * 1024,
            follow_forks: !watch.no_follow_forks,
            report_all_execs: scopes.needs_all_execs(),
            watch_all: scopes.all,
        },
        scopes,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|err| exit_on_bad_arguments(err));
    init_logging(cli.watch.log_format);
    let result = match cli.command {
        Some(Command::Demo(args)) => demo(args).await.map(|()| ExitCode::SUCCESS),
        None => match packet_options(&cli.watch) {
            Ok(Some(options)) => run_packets::run(options).await,
            Ok(None) => match agent_options(cli.watch) {
                Ok(options) => run::run(options).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
        .map(|outcome| match outcome {
            Outcome::Stopped | Outcome::TargetsExited => ExitCode::SUCCESS,
            Outcome::CommandExited(status) => {
                ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)
            }
        }),
    };
    result.unwrap_or_else(|err| {
        eprintln!("llmtap: error: {}", one_line(&err));
        ExitCode::FAILURE
    })
}

#[cfg(feature = "demo")]
async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    llmtap::demo::run(args).await
}

#[cfg(not(feature = "demo"))]
async fn demo(_: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("this llmtap was built without the demo (cargo feature `demo`)")
}

/// Help and version go out as clap writes them; a bad argument is one line
/// on stderr, like every other startup error (clap's own rendering adds a
/// blank line and a hint).
fn exit_on_bad_arguments(err: clap::Error) -> ! {
    if !err.use_stderr() {
        err.exit();
    }
    let rendered = err.to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("llmtap: error: {first} (see llmtap --help)");
    std::process::exit(err.exit_code());
}

/// The error and its causes on one line, each cause once: some error
/// messages already quote their source.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
