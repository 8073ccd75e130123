//! The command line. Parsing only checks what was typed; `main` builds the
//! running objects from it.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// llmtap watches processes' LLM API traffic through eBPF, with no change to
/// the observed program, and reports each call's timings and token counts.
///
/// It hooks the TLS library calls (SSL_read/SSL_write and their _ex forms,
/// in libssl or statically linked, as in node) and the socket syscalls of the
/// watched processes, and rebuilds their HTTP and streaming (SSE) traffic.
///
/// Needs root, or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE (plus CAP_SYS_ADMIN
/// for TLS on Linux 6.15+, whose uprobes need it), and a kernel with BTF and
/// uprobes.
#[derive(Debug, Parser)]
#[command(name = "llmtap", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A subcommand instead of watching.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// What to watch and how (the default run).
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a built-in demo: a local LLM-like streaming server over TLS, a
    /// client (curl) calling it, and the agent watching the client.
    // A build without the `demo` feature (the container image) keeps it out
    // of --help, but still parses it to say in one line why it cannot run.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo(DemoArgs),
}

/// The flags of a run: what to watch, what to capture, what to output.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch this process (all its threads). May be repeated or comma-separated.
    #[arg(long, short = 'p', value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Watch every process running this program, now and when started
    /// later: a name (matched on the comm and the executable's file name)
    /// or a regular expression over the whole name. Names are matched in
    /// the kernel at exec, before the program's first instruction; a
    /// regular expression in user space just after it. May be repeated.
    #[arg(long, value_name = "NAME|REGEX")]
    pub exe: Vec<String>,

    /// Watch every process in this cgroup or its descendants, now and when
    /// started later: a cgroup v2 directory (in full, or relative to the
    /// cgroup2 mount), matched at exec in the kernel, or a cgroup v1
    /// hierarchy's directory (/sys/fs/cgroup/pids/app), matched by llmtap
    /// just after exec. May be repeated.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<std::path::PathBuf>,

    /// Watch every process of this container (Docker, containerd, CRI-O,
    /// Podman), now and when started later: its full id or a prefix, as
    /// `docker ps` or `crictl ps` show it. Found through /proc/*/cgroup, so
    /// the container's runtime needs no socket. May be repeated.
    #[arg(long, value_name = "ID")]
    pub container: Vec<String>,

    /// Watch every process on the host (but llmtap itself), now and when
    /// started later. Connections that are not HTTP are dropped as soon as
    /// their first bytes show it; only LLM calls are reported. TLS is
    /// hooked only in a process that starts a handshake with an LLM API
    /// host (the server name its ClientHello sends; see --llm-host), or
    /// runs a program --exe names (a TLS-terminating inference server, a
    /// client that connects by address), so other processes' TLS calls
    /// cost nothing.
    #[arg(long)]
    pub all: bool,

    /// With --all: also hook the TLS of processes that connect to this
    /// server name, as TLS clients send it: api.example.com, or
    /// *.example.com for every name one label below. Added to the major
    /// LLM API hosts (api.openai.com, api.anthropic.com, *.openai.azure.com,
    /// generativelanguage.googleapis.com, ...). May be repeated.
    #[arg(long, value_name = "NAME", requires = "all")]
    pub llm_host: Vec<crate::capture::ebpf::llm_hosts::LlmHost>,

    /// Where bytes are captured: `ebpf` (the default) hooks the watched
    /// processes' TLS and socket calls; `pcap` reads the TCP packets on
    /// --iface instead, with no process to give, but sees plaintext HTTP
    /// only (TLS connections are dropped, and logged once each).
    #[arg(long, value_enum, default_value_t = CaptureMode::Ebpf)]
    pub capture: CaptureMode,

    /// With --capture pcap: the network interface to capture on (lo, eth0,
    /// any).
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,

    /// With --capture pcap or --read: which packets to read, as a BPF
    /// filter expression (tcpdump's syntax), ANDed with "TCP, 802.1Q-tagged
    /// or not". Default: all TCP.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,

    /// With --capture pcap or --read: only TCP traffic to or from this port
    /// (narrows --filter).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Replay a pcap or pcapng file (tcpdump -w) through the same
    /// reconstruction and outputs as fast as it reads, then exit. Timings
    /// come from the packets' capture times. Plaintext HTTP only.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pid", "exe", "cgroup", "container", "all", "command", "iface"])]
    pub read: Option<std::path::PathBuf>,

    /// Print one JSON line per connection event and per read/write (time,
    /// pid, tid, connection, direction, length), and one per call with
    /// every field of its record, for debugging. With --capture-content each
    /// read/write also shows a printable preview of its bytes.
    #[arg(long)]
    pub print: bool,

    /// With --print and --capture-content, also include each read/write's
    /// captured bytes in full (base64, field `payload`).
    #[arg(long, requires_all = ["print", "capture_content"])]
    pub print_payload: bool,

    /// Keep the prompt and completion text of each call and show it: in
    /// --print (each call's `content`, each read/write's `preview`) and in
    /// OTLP traces (span events `gen_ai.content.prompt` and
    /// `gen_ai.content.completion`). Without it no output carries prompt or
    /// completion text: only counts and timings.
    #[arg(long, env = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")]
    pub capture_content: bool,

    /// Bytes copied per read/write at most (1..=16384). The rest is counted
    /// as a gap, never guessed.
    #[arg(long, value_name = "BYTES", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(1..=16384))]
    pub capture_bytes: u32,

    /// Size of the kernel-to-agent ring buffer, in KiB (a power of two,
    /// 4 to 1048576). When it overflows, records are dropped and counted
    /// in llmtap_events_lost_total.
    #[arg(long, value_name = "KIB", default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_buffer_kib: u32,

    /// Do not watch the children that watched processes fork.
    #[arg(long)]
    pub no_follow_forks: bool,

    /// Metrics and traces (the seed's settings, OTEL_*, the metrics endpoint).
    #[command(flatten, next_help_heading = "Export")]
    pub export: crate::config::ExportArgs,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Start COMMAND watched from its first instruction, and stop when it
    /// exits (with its exit status). Use this for short-lived clients.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Where bytes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CaptureMode {
    /// Processes' TLS library and socket calls (the default).
    Ebpf,
    /// Packets on an interface (plaintext only).
    Pcap,
}

/// How the log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags of `llmtap demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Calls the demo client makes.
    #[arg(long, default_value_t = 3)]
    pub calls: u32,

    /// Seconds to keep serving /metrics after the last call (0: exit at once).
    #[arg(long, default_value_t = 0)]
    pub linger: u64,

    /// Where metrics and traces go.
    #[command(flatten, next_help_heading = "Export")]
    pub export: crate::config::ExportArgs,
}

fn parse_ring_kib(value: &str) -> Result<u32, String> {
    let kib: u32 = value.parse().map_err(|e| format!("{e}"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err("must be a power of two between 4 and 1048576".into());
    }
    Ok(kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pids_and_a_command() {
        let cli = Cli::try_parse_from([
            "llmtap", "--pid", "1,2", "-p", "3", "--print", "--", "curl", "-N",
        ])
        .unwrap();
        assert_eq!(cli.watch.pid, [1, 2, 3]);
        assert!(cli.watch.print);
        assert_eq!(cli.watch.command, ["curl", "-N"]);
    }

    #[test]
    fn parses_repeated_scopes() {
        let cli = Cli::try_parse_from([
            "llmtap", "--exe", "python3", "--exe", "node", "--cgroup", "/a/b",
        ])
        .unwrap();
        assert_eq!(cli.watch.exe, ["python3", "node"]);
        assert_eq!(cli.watch.cgroup, [std::path::PathBuf::from("/a/b")]);
    }

    #[test]
    fn packet_flags() {
        let cli = Cli::try_parse_from([
            "llmtap",
            "--capture",
            "pcap",
            "--iface",
            "lo",
            "--port",
            "8080",
        ])
        .unwrap();
        assert_eq!(cli.watch.capture, CaptureMode::Pcap);
        assert_eq!(cli.watch.iface.as_deref(), Some("lo"));
        assert_eq!(cli.watch.port, Some(8080));
        assert!(Cli::try_parse_from(["llmtap", "--read", "a.pcap", "--pid", "1"]).is_err());
        assert!(Cli::try_parse_from(["llmtap", "--read", "a.pcap", "--iface", "lo"]).is_err());
    }

    #[test]
    fn demo_parses_in_every_build() {
        // Without the `demo` feature it is hidden, not gone: main says why
        // it cannot run.
        let cli = Cli::try_parse_from(["llmtap", "demo", "--calls", "2"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Demo(DemoArgs { calls: 2, .. }))
        ));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(Cli::try_parse_from(["llmtap", "--capture-bytes", "0"]).is_err());
        assert!(Cli::try_parse_from(["llmtap", "--ring-buffer-kib", "3000"]).is_err());
        assert!(Cli::try_parse_from(["llmtap", "--print-payload"]).is_err());
    }

    #[test]
    fn payload_needs_the_content_opt_in() {
        assert!(Cli::try_parse_from(["llmtap", "--print", "--print-payload"]).is_err());
        let cli =
            Cli::try_parse_from(["llmtap", "--print", "--print-payload", "--capture-content"])
                .unwrap();
        assert!(cli.watch.print_payload && cli.watch.capture_content);
        assert!(
            !Cli::try_parse_from(["llmtap"])
                .unwrap()
                .watch
                .capture_content
        );
    }
}
