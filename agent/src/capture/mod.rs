//! Capture: where bytes come from.
//!
//! A [`CaptureSource`] (the eBPF probes in `ebpf`, a live interface or a
//! capture file in `pcap`) observes traffic its own way and hands on
//! [`ConnectionEvent`]s: each source owns what it takes to get there (stream
//! identity for kernel records, TCP reassembly for packets). Nothing after
//! capture knows which source ran.

pub(crate) mod ebpf;
pub mod pcap;

use crate::stream::{ConnectionEvent, WallNanos};

/// Where connection events come from. The run loop calls [`read`] whenever
/// it is idle, [`tick`] about once a second, and [`stop`] once at the end.
///
/// [`read`]: CaptureSource::read
/// [`tick`]: CaptureSource::tick
/// [`stop`]: CaptureSource::stop
// Used generically by the run loop, never as `dyn`: no `Send` bound needed.
#[allow(async_fn_in_trait)]
pub trait CaptureSource {
    /// Waits for what the source observes next (a short while at most),
    /// then appends the connection events it makes to `out`. Returns false
    /// once the source has nothing more to give (a file read to its end).
    async fn read(&mut self, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<bool>;

    /// Housekeeping as of `now`: what only a look finds out (idle
    /// connections, processes whose exit went unreported). Returns false
    /// once nothing is left to watch.
    fn tick(&mut self, now: WallNanos, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<bool>;

    /// Stops capturing: what was captured before is still handed on, then
    /// every connection still open ends.
    async fn stop(&mut self, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<()>;

    /// Running totals and the current state, for the agent's health.
    fn report(&mut self) -> CaptureReport;
}

/// What a capture source saw and lost so far (totals since it started),
/// and its state now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureReport {
    /// Records read from the kernel.
    pub records_read: u64,
    /// Payload bytes read from the kernel.
    pub bytes_captured: u64,
    /// Records that could not be decoded.
    pub malformed_records: u64,
    /// Records the kernel dropped because the ring buffer was full.
    pub records_lost: u64,
    /// Reads or writes whose bytes were cut at the capture size.
    pub truncated: u64,
    /// Connections `--all` stopped copying: their first bytes are not HTTP.
    pub not_http_connections: u64,
    /// TLS connections `--all` left unhooked: their ClientHello names no
    /// LLM API host.
    pub tls_not_llm_connections: u64,
    /// HTTP/1 requests `--all` did not copy, nor their responses: not POST,
    /// so not an LLM call.
    pub not_post_requests: u64,
    /// HTTP/1 exchanges `--all` stopped copying past their share while the
    /// ring buffer filled up.
    pub exchanges_over_share: u64,
    /// Connections followed now.
    pub open_streams: usize,
    /// The watched processes, for a source that watches processes.
    pub processes: Option<ProcessReport>,
    /// The packets, for a source that reads packets.
    pub packets: Option<PacketReport>,
}

/// The processes a source watches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessReport {
    /// Processes watched now.
    pub watched: usize,
    /// Watched processes by the TLS stack hooked in them (`None`: none is,
    /// only their plaintext is seen).
    pub tls: Vec<(Option<&'static str>, usize)>,
    /// Entries in each kernel map holding per-process, per-thread or
    /// per-connection state.
    pub map_entries: Vec<(&'static str, usize)>,
    /// Seconds from a process's exec to its new TLS code being hooked,
    /// one per hooking since the last report.
    pub hook_latencies: Vec<f64>,
}

/// The packets a source reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PacketReport {
    /// Frames read.
    pub seen: u64,
    /// Frames lost because the capture buffer was full.
    pub dropped_by_kernel: u64,
    /// Frames lost by the interface or its driver.
    pub dropped_by_interface: u64,
    /// Frames the agent could not queue.
    pub dropped_by_agent: u64,
    /// TCP flows given up, by reason.
    pub abandoned: Vec<(&'static str, u64)>,
}
