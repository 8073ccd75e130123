//! The eBPF capture source: the kernel side's probes (`probes`), its ring
//! buffer (`ring`, records decoded in `records`), the processes it watches
//! (`discovery`, with `scope`, `processes`, `tls_targets`) and the identity
//! of their streams (`streams`), behind one [`CaptureSource`].
//!
//! Data flow: ring-buffer record → [`records::KernelEvent`] → execs and
//! exits to discovery, everything to `streams` → [`ConnectionEvent`]s.

// A full mirror of events.h, every value checked against the object by its
// test; not every value is read.
#[allow(dead_code)]
pub mod abi;
mod clock;
mod discovery;
pub mod llm_hosts;
pub mod preflight;
mod probes;
mod processes;
mod records;
mod ring;
pub mod scope;
mod streams;
pub mod tls_targets;

use std::path::PathBuf;
use std::time::Duration;

use self::discovery::{Discovery, ProbeControl};
use self::preflight::PreflightError;
use self::probes::{EbpfProbes, KernelCounters};
use self::processes::HostProcesses;
use self::records::KernelEvent;
use self::ring::RingReader;
use self::scope::Scopes;
use self::streams::{StreamLimits, Streams};
use super::{CaptureReport, CaptureSource, ProcessReport};
use crate::stream::{ConnectionEvent, WallNanos};
use crate::sys;

/// What can go wrong while setting up the eBPF capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("loading the BPF programs failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program `{name}`: {source}")]
    Program {
        name: String,
        source: aya::programs::ProgramError,
    },
    #[error(
        "the kernel refused to place a uprobe (permission denied): since Linux 6.15 (and in \
         stable kernels with that change) uprobes need CAP_SYS_ADMIN, which CAP_PERFMON no \
         longer covers; TLS traffic will not be seen, plaintext traffic still is (run llmtap \
         as root or add CAP_SYS_ADMIN)"
    )]
    UprobeRefused,
    #[error("BPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("polling the ring buffer failed: {0}")]
    RingBuffer(std::io::Error),
    #[error("reading the kernel's BTF failed: {0}")]
    Btf(#[from] aya::BtfError),
}

/// Settings of the kernel side.
#[derive(Clone, Debug)]
pub struct EbpfConfig {
    /// Bytes copied per read/write at most (the rest is counted, not copied).
    pub capture_bytes: u32,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
    /// Watch children forked by watched processes.
    pub follow_forks: bool,
    /// Report every exec on the host (for scopes matched in user space).
    pub report_all_execs: bool,
    /// Watch every process on the host but the agent (`--all`).
    pub watch_all: bool,
    /// Under `--all`, the server names whose TLS handshakes get a process
    /// its TLS hooks.
    pub llm_hosts: Vec<llm_hosts::LlmHost>,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            capture_bytes: abi::MAX_DATA,
            ring_buffer_bytes: 8 << 20,
            follow_forks: true,
            report_all_execs: false,
            watch_all: false,
            llm_hosts: Vec::new(),
        }
    }
}

/// At a stop, how long at most to keep reading the records already in the
/// ring buffer (under `--all` new ones never stop coming).
const DRAIN_AT_STOP: Duration = Duration::from_millis(500);

/// Processes watched through the kernel: what they read and write on their
/// sockets and through their TLS libraries.
pub struct EbpfSource {
    probes: EbpfProbes,
    ring: RingReader,
    discovery: Discovery<HostProcesses>,
    streams: Streams,
    /// Records read and not handed on yet.
    records: Vec<KernelEvent>,
    /// The pids whose exit ends the source, when nothing else can add to
    /// what is watched.
    end_with: Vec<u32>,
    records_read: u64,
    bytes_captured: u64,
    malformed_records: u64,
    /// The kernel's counters at the last tick, to log what changed.
    logged: KernelCounters,
}

impl EbpfSource {
    /// Checks the host, loads the kernel side and attaches its tracepoints.
    /// Nothing is watched yet.
    pub fn load(config: &EbpfConfig, scopes: Scopes) -> Result<Self, CaptureError> {
        let mut probes = EbpfProbes::load(config)?;
        let ring = probes.ring_reader()?;
        Ok(EbpfSource {
            probes,
            ring,
            discovery: Discovery::new(scopes, HostProcesses),
            streams: Streams::new(StreamLimits::default()),
            records: Vec::new(),
            end_with: Vec::new(),
            records_read: 0,
            bytes_captured: 0,
            malformed_records: 0,
            logged: KernelCounters::default(),
        })
    }

    /// Watches processes by pid; the source ends once all of them have
    /// exited if `end_with_them`.
    pub fn watch_pids(&mut self, pids: &[u32], end_with_them: bool) -> Result<(), CaptureError> {
        for &pid in pids {
            self.discovery.watch(&mut self.probes, pid)?;
            if !self.discovery.is_tls_hooked(&self.probes, pid) {
                tracing::warn!(
                    "process {pid} has no TLS library loaded (no libssl, no SSL_* functions in its \
                     executable): only its plaintext traffic will be seen"
                );
            }
        }
        if end_with_them {
            self.end_with = pids.to_vec();
        }
        Ok(())
    }

    /// Puts the scopes in the kernel and watches what runs in them.
    pub fn watch_scopes(&mut self) -> Result<(), CaptureError> {
        self.discovery.arm(&mut self.probes)
    }

    /// Watches a command started held (`pid`, which will run `program`):
    /// call it before the command is released.
    pub fn watch_command(
        &mut self,
        pid: u32,
        program: Option<PathBuf>,
    ) -> Result<(), CaptureError> {
        self.discovery.watch(&mut self.probes, pid)?;
        if let Some(exe) = program {
            self.probes.attach_tls(pid, &[exe]);
        }
        Ok(())
    }

    /// Logs the files whose TLS functions are hooked, and what is watched.
    pub fn log_watching(&mut self, scoped: bool) {
        self.probes.log_hooked_files();
        tracing::info!(
            "watching {} process(es) and their children{}; stop with Ctrl-C",
            self.discovery.watched(),
            if scoped {
                ", and those that start in the scopes given"
            } else {
                ""
            }
        );
    }

    /// Hands the records read to discovery and to the streams.
    fn hand_on(&mut self, out: &mut Vec<ConnectionEvent>) -> Result<(), CaptureError> {
        self.discovery
            .on_events(&mut self.probes, &self.records, &|| {
                sys::clock::realtime_ns() as WallNanos
            })?;
        self.records_read += self.records.len() as u64;
        for event in self.records.drain(..) {
            if let KernelEvent::Data {
                key,
                direction,
                len,
                bytes,
                ..
            } = &event
            {
                // Lengths only: logs never carry traffic content.
                tracing::trace!(?key, ?direction, len, captured = bytes.len(), "captured");
                self.bytes_captured += bytes.len() as u64;
            }
            self.streams.push(event, out);
        }
        Ok(())
    }

    /// Logs what the kernel dropped since the last look.
    fn log_kernel_losses(&mut self) {
        let now = self.probes.counters();
        let lost = now.ringbuf_full - self.logged.ringbuf_full;
        if lost > 0 {
            tracing::warn!(
                lost,
                total = now.ringbuf_full,
                "the ring buffer was full: records were dropped (raise --ring-buffer-kib)"
            );
        }
        let truncated = now.truncated - self.logged.truncated;
        if truncated > 0 {
            tracing::debug!(
                truncated,
                "reads/writes larger than --capture-bytes were cut (reported as gaps)"
            );
        }
        self.logged = now;
    }
}

impl CaptureSource for EbpfSource {
    async fn read(&mut self, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<bool> {
        self.malformed_records += self.ring.read_batch(&mut self.records).await?;
        self.hand_on(out)?;
        Ok(true)
    }

    fn tick(&mut self, now: WallNanos, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<bool> {
        let exits = self.discovery.unreported_exits(now);
        if !exits.is_empty() {
            tracing::info!(count = exits.len(), "watched processes exited without their exit reported (ring buffer full): forgotten now");
            self.records.extend(exits);
            self.hand_on(out)?;
        }
        self.streams.evict_idle(now, out);
        self.discovery.look(&mut self.probes);
        self.log_kernel_losses();
        let gone =
            !self.end_with.is_empty() && self.end_with.iter().all(|&pid| !sys::proc::exists(pid));
        Ok(!gone)
    }

    async fn stop(&mut self, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<()> {
        // What the kernel captured before the stop is still owed to the
        // outputs: a busy agent may be behind by a whole stream's end.
        let deadline = tokio::time::Instant::now() + DRAIN_AT_STOP;
        while tokio::time::Instant::now() < deadline {
            self.malformed_records += self.ring.read_batch(&mut self.records).await?;
            if self.records.is_empty() {
                break;
            }
            self.hand_on(out)?;
        }
        self.streams
            .close_all(sys::clock::realtime_ns() as WallNanos, out);
        self.log_kernel_losses();
        tracing::info!(
            streams = self.streams.stats().streams_opened,
            malformed_records = self.malformed_records,
            "detaching"
        );
        Ok(())
    }

    fn report(&mut self) -> CaptureReport {
        let kernel = self.probes.counters();
        CaptureReport {
            records_read: self.records_read,
            bytes_captured: self.bytes_captured,
            malformed_records: self.malformed_records,
            records_lost: kernel.ringbuf_full,
            truncated: kernel.truncated,
            not_http_connections: kernel.not_http_connections,
            tls_not_llm_connections: kernel.tls_not_llm_connections,
            not_post_requests: kernel.not_post_requests,
            exchanges_over_share: kernel.exchanges_over_share,
            open_streams: self.streams.open_streams(),
            processes: Some(ProcessReport {
                watched: self.discovery.watched(),
                tls: self.discovery.tls().to_vec(),
                map_entries: self.probes.map_entries(),
                hook_latencies: self.discovery.take_hook_latencies(),
            }),
            packets: None,
        }
    }
}
