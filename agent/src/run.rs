//! The running agent: sets up the eBPF capture for the requested processes,
//! then drives every event through reassembly to the outputs until it is
//! stopped, the command it started exits, or every watched process is gone.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::calls::{CallTracker, Limits, LlmCall};
use crate::capture::ebpf::scope::{ExeMatch, ProcessNames, Scopes};
use crate::capture::ebpf::tls_targets::TlsTarget;
use crate::capture::ebpf::{
    preflight, tls_targets, EbpfCapture, EbpfConfig, KernelCounters, ProcessExec,
};
use crate::capture::CaptureEvent;
use crate::export::print::{PrintedBytes, StreamPrinter};
use crate::export::prometheus::Health;
use crate::export::telemetry::Telemetry;
use crate::launch::HeldChild;
use crate::reassembly::{ConnectionEvent, Reassembler, ReassemblyLimits};
use crate::stream::{StreamEvent, WallNanos};
use crate::workload::Workloads;

/// What to watch and what to output.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub pids: Vec<u32>,
    /// `--exe` and `--cgroup`: processes watched as they start.
    pub scopes: Scopes,
    /// A command to start watched; the agent ends when it exits.
    pub command: Vec<OsString>,
    pub output: OutputOptions,
    pub ebpf: EbpfConfig,
    pub export: crate::config::ExportSettings,
}

/// What the console output shows, and whether calls keep their text.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutputOptions {
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
    /// Every process given by --pid exited (and no scope was given).
    TargetsExited,
    /// The command the agent started exited with this status.
    CommandExited(ExitStatus),
}

/// At a stop, how long at most to keep reading the records already in the
/// ring buffer (under `--all` new ones never stop coming).
const DRAIN_AT_STOP: Duration = Duration::from_millis(500);

pub async fn run(options: AgentOptions) -> anyhow::Result<Outcome> {
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
    // Before anything is attached, so a signal always means a clean detach.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut capture = EbpfCapture::load(&options.ebpf)?;
    // Off the event loop: the first call must not wait for the tables.
    std::thread::spawn(crate::calls::prepare_tokenizer);
    let telemetry = Telemetry::start(&options.export).await?;
    tracing::info!("metrics on {}", telemetry.metrics_url());
    let mut discovery = Discovery::new(options.scopes.clone());
    for &pid in &options.pids {
        discovery.watch(&mut capture, pid)?;
        if !tls_targets::process_candidates(pid)
            .iter()
            .any(|c| capture.is_tls_hooked(c))
        {
            tracing::warn!(
                "process {pid} has no TLS library loaded (no libssl, no SSL_* functions in its \
                 executable): only its plaintext traffic will be seen"
            );
        }
    }
    // Scopes first in the kernel, then what is already running in them:
    // a process starting in between is caught by one or the other.
    discovery.arm(&mut capture)?;
    // For processes that load libssl after we start (and the command below).
    capture.attach_tls(&tls_targets::system_candidates());

    let command_running = !options.command.is_empty();
    let (exit_tx, mut exit_rx) = oneshot::channel();
    if !options.command.is_empty() {
        let held = HeldChild::spawn(&options.command)
            .with_context(|| format!("cannot start {:?}", options.command[0]))?;
        discovery.watch(&mut capture, held.pid())?;
        if let Some(exe) = HeldChild::resolve_program(&options.command[0]) {
            capture.attach_tls(&[exe]);
        }
        let mut child = held
            .release()
            .context("cannot release the started command")?;
        tokio::task::spawn_blocking(move || {
            let _ = exit_tx.send(child.wait());
        });
    } else {
        drop(exit_tx);
    }
    for target in capture.tls_targets() {
        tracing::info!(path = %target.path.display(), functions = ?target.functions, "TLS hooks attached");
    }
    let mut reader = capture.event_reader()?;
    telemetry.set_ready(true);
    tracing::info!(
        "watching {} process(es) and their children{}; stop with Ctrl-C",
        discovery.watched.len(),
        if options.scopes.is_empty() {
            ""
        } else {
            ", and those that start in the scopes given"
        }
    );

    let mut pipeline = Pipeline::new(options.output, telemetry);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut batch = Vec::new();
    let mut reported = KernelCounters::default();

    let outcome = loop {
        tokio::select! {
            read = reader.read_batch(&mut batch) => {
                pipeline.malformed_records += read?;
                discovery.after_batch(&mut capture, pipeline.telemetry.health(), reader.take_execs(), &batch)?;
                pipeline.feed(batch.drain(..))?;
            }
            _ = sigint.recv() => break Outcome::Stopped,
            _ = sigterm.recv() => break Outcome::Stopped,
            status = &mut exit_rx, if command_running => {
                break Outcome::CommandExited(status.context("lost the started command")??);
            }
            _ = tick.tick() => {
                let exits = discovery.unreported_exits(now());
                if !exits.is_empty() {
                    tracing::info!(count = exits.len(), "watched processes exited without their exit reported (ring buffer full): forgotten now");
                    discovery.after_batch(&mut capture, pipeline.telemetry.health(), Vec::new(), &exits)?;
                    pipeline.feed(exits.into_iter())?;
                }
                pipeline.evict_idle(now())?;
                pipeline.observe(&capture.counters());
                discovery.observe(&mut capture, pipeline.telemetry.health());
                reported = report_kernel_losses(capture.counters(), reported);
                if !command_running && options.scopes.is_empty() && options.pids.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                    break Outcome::TargetsExited;
                }
            }
        }
    };
    // What the kernel captured before the stop is still owed to the
    // outputs: a busy agent may be behind by a whole stream's end.
    let deadline = tokio::time::Instant::now() + DRAIN_AT_STOP;
    while tokio::time::Instant::now() < deadline {
        pipeline.malformed_records += reader.read_batch(&mut batch).await?;
        if batch.is_empty() {
            break;
        }
        discovery.after_batch(
            &mut capture,
            pipeline.telemetry.health(),
            reader.take_execs(),
            &batch,
        )?;
        pipeline.feed(batch.drain(..))?;
    }
    pipeline.finish(now())?;
    pipeline.observe(&capture.counters());
    report_kernel_losses(capture.counters(), reported);
    tracing::info!(
        streams = pipeline.reassembler.stats().streams_opened,
        malformed_records = pipeline.malformed_records,
        "detaching"
    );
    drop(reader);
    drop(capture);
    pipeline.telemetry.shutdown().await;
    Ok(outcome)
}

/// Which processes are watched, and the discovery of new ones: those that
/// exec inside a scope (reported by the kernel) get their executable's and
/// libraries' TLS functions hooked; those that exit are forgotten, in the
/// kernel's maps too.
struct Discovery {
    scopes: Scopes,
    /// Processes known to be watched: given, started, or found by exec.
    watched: HashSet<u32>,
    /// Containers' cgroup v2 ids already given to the kernel.
    container_cgroups: HashSet<u64>,
    /// Watched processes found gone at the last look, their exit not
    /// reported yet.
    gone_unreported: HashSet<u32>,
}

impl Discovery {
    fn new(scopes: Scopes) -> Self {
        Discovery {
            scopes,
            watched: HashSet::new(),
            container_cgroups: HashSet::new(),
            gone_unreported: HashSet::new(),
        }
    }

    /// Exits the kernel could not report (their record was dropped with the
    /// ring buffer full), made up now for the processes found gone at two
    /// looks in a row: an exit still on its way has arrived by the second.
    fn unreported_exits(&mut self, at: WallNanos) -> Vec<CaptureEvent> {
        let gone: HashSet<u32> = self
            .watched
            .iter()
            .copied()
            .filter(|&pid| has_exited(pid))
            .collect();
        let overdue: Vec<u32> = gone.intersection(&self.gone_unreported).copied().collect();
        self.gone_unreported = gone;
        overdue
            .into_iter()
            .map(|pid| CaptureEvent::ProcessExited { pid, at })
            .collect()
    }

    /// Watches `pid` and hooks the TLS files it uses now; returns how
    /// many files were hooked for it (not already hooked for another).
    fn watch(&mut self, capture: &mut EbpfCapture, pid: u32) -> anyhow::Result<usize> {
        // Under --all the kernel watches every pid without a map entry.
        if !self.scopes.all {
            capture.watch(pid)?;
        }
        self.watched.insert(pid);
        Ok(capture
            .attach_tls(&tls_targets::process_candidates(pid))
            .len())
    }

    /// Watches a process found in a scope user space matched, and gives
    /// the kernel its container's cgroup v2 directory, so the container's
    /// next execs are matched there, from their first instruction.
    fn watch_matched(&mut self, capture: &mut EbpfCapture, pid: u32) -> anyhow::Result<usize> {
        let hooked = self.watch(capture, pid)?;
        for cgroup in self.scopes.container_cgroups(&[pid]) {
            if self.container_cgroups.insert(cgroup.id) {
                capture.watch_cgroup(cgroup.id)?;
                tracing::info!(path = %cgroup.path.display(), "watching a container's cgroup");
            }
        }
        Ok(hooked)
    }

    /// Puts the scopes in the kernel, then watches what already runs in them.
    fn arm(&mut self, capture: &mut EbpfCapture) -> anyhow::Result<()> {
        for cgroup in &self.scopes.cgroups {
            capture.watch_cgroup(cgroup.id)?;
            tracing::info!(path = %cgroup.path.display(), id = cgroup.id, "watching cgroup");
        }
        for cgroup in &self.scopes.v1_cgroups {
            tracing::info!(path = %cgroup.path.display(), "watching cgroup v1 directory (matched at exec by llmtap)");
        }
        for comm in self.scopes.exes.iter().filter_map(ExeMatch::comm_key) {
            capture.watch_comm(comm)?;
        }
        for pid in self.scopes.running_pids() {
            // Gone already, or not ours to trace: skip it, the scope stays.
            if preflight::check_process(pid).is_ok() {
                self.watch_matched(capture, pid)?;
            }
        }
        if !self.scopes.containers.is_empty() && self.container_cgroups.is_empty() {
            tracing::info!(
                containers = ?self.scopes.containers,
                "no process of the given containers runs yet: they are watched from their first exec"
            );
        }
        Ok(())
    }

    /// Handles the execs and exits of one batch of records.
    fn after_batch(
        &mut self,
        capture: &mut EbpfCapture,
        health: &Health,
        execs: Vec<ProcessExec>,
        events: &[CaptureEvent],
    ) -> anyhow::Result<()> {
        for exec in execs {
            let hooked = if exec.watched {
                self.watched.insert(exec.pid);
                capture
                    .attach_tls(&tls_targets::process_candidates(exec.pid))
                    .len()
            } else if self.scopes.matches_in_user_space(exec.pid) {
                self.watch_matched(capture, exec.pid)?
            } else {
                tracing::trace!(pid = exec.pid, names = ?ProcessNames::of(exec.pid), "exec outside the scopes");
                continue;
            };
            tracing::debug!(pid = exec.pid, comm = %exec.comm, "exec in scope");
            if hooked > 0 {
                let latency = now().saturating_sub(exec.at) as f64 / 1e9;
                health.tls_hook_latency.observe(latency);
                tracing::info!(
                    pid = exec.pid,
                    comm = %exec.comm,
                    latency_ms = format!("{:.1}", latency * 1e3),
                    "hooked a new program's TLS functions after its exec"
                );
            }
        }
        let exited: HashSet<u32> = events
            .iter()
            .filter_map(|e| match e {
                CaptureEvent::ProcessExited { pid, .. } => Some(*pid),
                _ => None,
            })
            .collect();
        self.watched.retain(|pid| !exited.contains(pid));
        capture.forget_processes(&exited);
        Ok(())
    }

    /// Brings the process and kernel-map gauges up to date. Each watched
    /// process's mapped TLS libraries are looked at again: one loaded
    /// since its exec (a dlopen of libssl) is hooked now.
    fn observe(&self, capture: &mut EbpfCapture, health: &Health) {
        health.attached_processes.set(self.watched.len() as i64);
        health.tls_processes.reset();
        for &pid in &self.watched {
            let candidates = tls_targets::process_candidates(pid);
            capture.attach_tls(&candidates);
            let mut stacks: Vec<&str> = candidates
                .iter()
                .filter_map(|c| capture.hooked_target(c).map(TlsTarget::stack))
                .collect();
            stacks.sort_unstable();
            stacks.dedup();
            if stacks.is_empty() {
                health
                    .tls_processes
                    .with_label_values(&["none", "unhooked"])
                    .inc();
            }
            for stack in stacks {
                health
                    .tls_processes
                    .with_label_values(&[stack, "hooked"])
                    .inc();
            }
        }
        for (map, entries) in capture.map_entries() {
            health
                .bpf_map_entries
                .with_label_values(&[map])
                .set(entries as i64);
        }
    }
}

/// Whether process `pid` is gone or a zombie: it exited, reaped or not.
fn has_exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the command name, which is in parentheses and may
    // hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some('Z' | 'X'))
}

/// Logs what the kernel side dropped since the last report.
fn report_kernel_losses(now: KernelCounters, before: KernelCounters) -> KernelCounters {
    let lost = now.ringbuf_full - before.ringbuf_full;
    if lost > 0 {
        tracing::warn!(
            lost,
            total = now.ringbuf_full,
            "the ring buffer was full: records were dropped (raise --ring-buffer-kib)"
        );
    }
    let truncated = now.truncated - before.truncated;
    if truncated > 0 {
        tracing::debug!(
            truncated,
            "reads/writes larger than --capture-bytes were cut (reported as gaps)"
        );
    }
    now
}

pub(crate) fn now() -> WallNanos {
    std::time::UNIX_EPOCH
        .elapsed()
        .map_or(0, |d| d.as_nanos() as WallNanos)
}

/// Everything after capture, fed one batch at a time: capture events
/// (eBPF) through reassembly, or connection events (packets) directly.
pub(crate) struct Pipeline {
    reassembler: Reassembler,
    calls: CallTracker,
    printer: Option<StreamPrinter<std::io::Stdout>>,
    pub(crate) telemetry: Telemetry,
    connection_events: Vec<ConnectionEvent>,
    /// Container and pod of each process with a connection.
    workloads: Workloads,
    malformed_records: u64,
}

impl Pipeline {
    pub(crate) fn new(output: OutputOptions, telemetry: Telemetry) -> Self {
        Pipeline {
            reassembler: Reassembler::new(ReassemblyLimits::default()),
            calls: CallTracker::new(Limits {
                keep_content: output.capture_content,
                ..Limits::default()
            }),
            printer: output
                .print
                .map(|bytes| StreamPrinter::new(std::io::stdout(), bytes)),
            telemetry,
            connection_events: Vec::new(),
            workloads: Workloads::default(),
            malformed_records: 0,
        }
    }

    fn feed(&mut self, events: impl ExactSizeIterator<Item = CaptureEvent>) -> std::io::Result<()> {
        let health = self.telemetry.health();
        health.events_read.inc_by(events.len() as u64);
        let mut exited = Vec::new();
        for event in events {
            match &event {
                CaptureEvent::Data {
                    key,
                    direction,
                    len,
                    bytes,
                    ..
                } => {
                    // Lengths only: logs never carry traffic content.
                    tracing::trace!(?key, ?direction, len, captured = bytes.len(), "captured");
                    health.bytes_captured.inc_by(bytes.len() as u64);
                }
                CaptureEvent::ProcessExited { pid, .. } => exited.push(*pid),
                _ => tracing::trace!(?event, "captured"),
            }
            self.reassembler.push(event, &mut self.connection_events);
        }
        self.flush()?;
        // Only now: the exit closed the process's connections, and their
        // calls, flushed above, needed its workload.
        for pid in exited {
            self.workloads.forget(pid);
        }
        Ok(())
    }

    /// Takes connection events already reassembled (the packet path).
    pub(crate) fn feed_connections(
        &mut self,
        events: impl Iterator<Item = ConnectionEvent>,
    ) -> std::io::Result<()> {
        self.connection_events.extend(events);
        self.flush()
    }

    fn evict_idle(&mut self, now: WallNanos) -> std::io::Result<()> {
        self.reassembler
            .evict_idle(now, &mut self.connection_events);
        self.flush()
    }

    pub(crate) fn finish(&mut self, now: WallNanos) -> std::io::Result<()> {
        self.reassembler.close_all(now, &mut self.connection_events);
        self.flush()
    }

    /// Brings the health metrics up to the stages' running totals.
    fn observe(&self, kernel: &KernelCounters) {
        self.observe_with(kernel, self.reassembler.open_streams());
    }

    /// The same, with the open streams counted by the capture (packets
    /// are reassembled before the pipeline).
    pub(crate) fn observe_with(&self, kernel: &KernelCounters, open_streams: usize) {
        self.telemetry.observe_totals(kernel, self.calls.stats());
        self.telemetry
            .health()
            .open_streams
            .set(open_streams as i64);
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for (id, event) in self.connection_events.drain(..) {
            if let Some(printer) = &mut self.printer {
                printer.print(id, &event)?;
            }
            // Read while the process surely lives: its calls may only end
            // once it has exited.
            if let StreamEvent::Opened(info) = &event {
                self.workloads.get(info.pid);
            }
            for mut call in self.calls.on_event(id, &event) {
                call.workload = self.workloads.get(call.pid).clone();
                match &mut self.printer {
                    Some(printer) => printer.print_call(&call)?,
                    None => tracing::info!("{}", summary(&call)),
                }
                self.telemetry.record(&call);
            }
        }
        Ok(())
    }
}

/// One human-readable line about a finished call.
fn summary(call: &LlmCall) -> String {
    let model = call
        .response_model
        .as_deref()
        .or(call.request_model.as_deref())
        .unwrap_or("?");
    let mut line = format!(
        "{} {} {} pid={} {}",
        call.provider,
        call.api.as_str(),
        model,
        call.pid,
        call.comm.as_deref().unwrap_or("")
    );
    let workload = &call.workload;
    if let (Some(namespace), Some(pod)) = (&workload.pod_namespace, &workload.pod_name) {
        line += &format!(" pod={namespace}/{pod}");
    } else if let Some(container) = &workload.container_id {
        line += &format!(" container={}", &container[..container.len().min(12)]);
    }
    if let Some(status) = call.http_status {
        line += &format!(" status={status}");
    }
    if let Some(ttft) = call.ttft_s {
        line += &format!(" ttft={:.1}ms", ttft * 1e3);
    }
    if let Some(duration) = call.duration_s {
        line += &format!(" duration={:.1}ms", duration * 1e3);
    }
    if let (Some(input), Some(output)) = (call.input_tokens, call.output_tokens) {
        let estimated = if call.output_tokens_estimated {
            " (estimated)"
        } else {
            ""
        };
        line += &format!(" tokens={input}in/{output}out{estimated}");
    }
    if let Some(rate) = call.tokens_per_second {
        line += &format!(" rate={rate:.1}tok/s");
    }
    if let Some(error) = call.error_type {
        line += &format!(" error={}", error.as_str());
    }
    line
}
