//! The eBPF capture path: loads `llmtap-ebpf`'s object with aya, attaches
//! its syscall tracepoints and TLS uprobes, keeps the in-kernel set of
//! watched processes, and turns ring-buffer records into [`CaptureEvent`]s.

pub mod abi;
mod map_keys;
pub mod preflight;
pub mod scope;
pub mod tls_targets;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use aya::programs::{BtfTracePoint, TracePoint, UProbe};
use aya::{Btf, Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use self::abi::{maps, programs, ConnEvent, DataEvent, Record};
use self::preflight::PreflightError;
use self::tls_targets::{TlsTarget, TlsTargets, TLS_FUNCTIONS};
use super::clock::MonotonicToWall;
use super::{CaptureEvent, StreamKey};
use crate::stream::{Direction, Side, WallNanos};

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
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            capture_bytes: abi::MAX_DATA,
            ring_buffer_bytes: 8 << 20,
            follow_forks: true,
            report_all_execs: false,
            watch_all: false,
        }
    }
}

/// Kernel-side counters (`enum llmtap_counter`), summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Records dropped because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Reads/writes whose bytes were cut at the capture size.
    pub truncated: u64,
    /// Socket calls skipped because they carried TLS ciphertext.
    pub tls_ciphertext_skipped: u64,
    /// Connections `--all` stopped capturing: their first bytes are not HTTP.
    pub not_http_connections: u64,
}

/// The loaded programs. Dropping it detaches and unloads everything.
pub struct EbpfCapture {
    ebpf: Ebpf,
    targets: TlsTargets,
    attached: Vec<TlsTarget>,
    /// The kernel refused a uprobe for want of a capability (said once).
    uprobes_refused: bool,
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let not_found = || CaptureError::Program {
        name: name.to_owned(),
        source: aya::programs::ProgramError::UnexpectedProgramType,
    };
    let prog = ebpf.program_mut(name).ok_or_else(not_found)?;
    prog.try_into().map_err(|source| CaptureError::Program {
        name: name.to_owned(),
        source,
    })
}

fn program_error(name: &str) -> impl FnOnce(aya::programs::ProgramError) -> CaptureError + '_ {
    move |source| CaptureError::Program {
        name: name.to_owned(),
        source,
    }
}

impl EbpfCapture {
    /// Checks the host, loads the programs and attaches the syscall and
    /// scheduler tracepoints. TLS uprobes are attached per target later.
    pub fn load(config: &EbpfConfig) -> Result<Self, CaptureError> {
        preflight::check_capabilities()?;
        preflight::check_kernel()?;
        if preflight::ensure_tracefs()? {
            tracing::info!("mounted tracefs at /sys/kernel/tracing (needed to attach tracepoints)");
        }
        let cpus = aya::util::nr_cpus().map_or(256, |n| n as u32);
        let capture_bytes = config.capture_bytes.clamp(1, abi::MAX_DATA);
        let follow_forks = u8::from(config.follow_forks);
        let report_all_execs = u8::from(config.report_all_execs);
        let watch_all = u8::from(config.watch_all);
        // The kernel's pid (tgid) of the agent, which --all must not watch.
        let agent_pid = std::process::id();
        let wakeup_bytes = (config.ring_buffer_bytes / 4).min(256 * 1024);
        let mut ebpf = EbpfLoader::new()
            .override_global("capture_bytes", &capture_bytes, true)
            .override_global("follow_forks", &follow_forks, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .override_global("report_all_execs", &report_all_execs, true)
            .override_global("watch_all", &watch_all, true)
            .override_global("agent_pid", &agent_pid, true)
            .map_max_entries(maps::EVENTS, config.ring_buffer_bytes)
            .map_max_entries(maps::SCRATCH, cpus)
            .load(llmtap_ebpf::object())?;

        for (tracepoint, name) in programs::TRACEPOINTS {
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load().map_err(program_error(name))?;
            prog.attach("syscalls", tracepoint)
                .map_err(program_error(name))?;
        }
        let btf = Btf::from_sys_fs()?;
        for (tracepoint, name) in programs::SCHED_TRACEPOINTS {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            prog.load(tracepoint, &btf).map_err(program_error(name))?;
            prog.attach().map_err(program_error(name))?;
        }
        let uprobes: std::collections::BTreeSet<&str> = TLS_FUNCTIONS
            .iter()
            .map(|(_, name)| *name)
            .chain([programs::SSL_RETURN, programs::GO_TLS_RETURN])
            .collect();
        for name in uprobes {
            program::<UProbe>(&mut ebpf, name)?
                .load()
                .map_err(program_error(name))?;
        }

        Ok(EbpfCapture {
            ebpf,
            targets: TlsTargets::default(),
            attached: Vec::new(),
            uprobes_refused: false,
        })
    }

    /// Adds a process to the in-kernel watch list.
    pub fn watch(&mut self, pid: u32) -> Result<(), CaptureError> {
        self.insert(maps::WATCHED_PIDS, pid)
    }

    /// Watches every process that execs inside this cgroup v2 (by id) or
    /// one of its descendants.
    pub fn watch_cgroup(&mut self, id: u64) -> Result<(), CaptureError> {
        self.insert(maps::WATCHED_CGROUPS, id)
    }

    /// Watches every process that execs a program of this name (a
    /// `watched_comms` key: the name cut to 15 bytes, zero-padded).
    pub fn watch_comm(&mut self, comm: [u8; scope::COMM_LEN]) -> Result<(), CaptureError> {
        self.insert(maps::WATCHED_COMMS, comm)
    }

    fn insert<K: aya::Pod>(&mut self, name: &'static str, key: K) -> Result<(), CaptureError> {
        let map_error = |source| CaptureError::Map { name, source };
        let map = self.ebpf.map_mut(name).expect("in the object");
        let mut set: BpfHashMap<_, K, u8> = BpfHashMap::try_from(map).map_err(map_error)?;
        set.insert(key, 1, 0).map_err(map_error)
    }

    /// Drops what the kernel still keeps for processes that exited: their
    /// sockets and TLS sessions (an exit closes the fds without a close(2)
    /// for the probes to see). Per-thread state the exit program drops.
    pub fn forget_processes(&mut self, pids: &HashSet<u32>) {
        if pids.is_empty() {
            return;
        }
        for (name, pid_at) in maps::PID_KEYED_MAPS {
            if let Some(map) = self.ebpf.map(name) {
                map_keys::remove_where(map, |key| {
                    map_keys::u32_at(key, pid_at).is_some_and(|pid| pids.contains(&pid))
                });
            }
        }
    }

    /// Entries in each kernel map that holds per-process, per-thread or
    /// per-connection state: what an exited process must not leave behind.
    pub fn map_entries(&self) -> Vec<(&'static str, usize)> {
        maps::STATE_MAPS
            .iter()
            .map(|name| {
                (
                    *name,
                    self.ebpf.map(name).map_or(0, |m| map_keys::keys(m).len()),
                )
            })
            .collect()
    }

    /// Attaches the TLS uprobes to those of `candidates` not hooked yet, and
    /// returns the new targets. A file that cannot be hooked is logged and
    /// skipped: plaintext capture goes on without it.
    pub fn attach_tls(&mut self, candidates: &[std::path::PathBuf]) -> Vec<TlsTarget> {
        let mut added = Vec::new();
        for path in candidates {
            let Some(target) = self.targets.consider(path) else {
                continue;
            };
            match self.attach_tls_target(&target) {
                Ok(()) => {
                    tracing::debug!(path = %target.path.display(), functions = ?target.functions, "hooked TLS library");
                    self.attached.push(target.clone());
                    added.push(target);
                }
                // The same for every library: said once.
                Err(CaptureError::UprobeRefused) if self.uprobes_refused => {}
                Err(err @ CaptureError::UprobeRefused) => {
                    self.uprobes_refused = true;
                    tracing::warn!("{err}");
                }
                Err(err) => {
                    tracing::warn!(path = %target.path.display(), "cannot hook TLS library: {err}")
                }
            }
        }
        added
    }

    fn attach_tls_target(&mut self, target: &TlsTarget) -> Result<(), CaptureError> {
        let attach = |ebpf: &mut Ebpf, name: &str, offset: u64| {
            program::<UProbe>(ebpf, name)?
                .attach(
                    UProbeAttachLocation::AbsoluteOffset(offset),
                    &target.path,
                    UProbeScope::AllProcesses,
                )
                .map(drop)
                .map_err(|source| match &source {
                    aya::programs::ProgramError::SyscallError(e)
                        if e.io_error.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        CaptureError::UprobeRefused
                    }
                    _ => program_error(name)(source),
                })
        };
        for (function, entry) in TLS_FUNCTIONS {
            let Some(&(_, offset)) = target.functions.iter().find(|(f, _)| *f == function) else {
                continue;
            };
            attach(&mut self.ebpf, entry, offset)?;
            if !tls_targets::is_go_function(function) {
                attach(&mut self.ebpf, programs::SSL_RETURN, offset)?;
            }
        }
        for &offset in &target.go_returns {
            attach(&mut self.ebpf, programs::GO_TLS_RETURN, offset)?;
        }
        Ok(())
    }

    /// Whether `path` is (another name of) a hooked file.
    pub fn is_tls_hooked(&self, path: &std::path::Path) -> bool {
        self.hooked_target(path).is_some()
    }

    /// The hooked target that `path` is (another name of), if any.
    pub fn hooked_target(&self, path: &std::path::Path) -> Option<&TlsTarget> {
        let inode = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let wanted = inode(path)?;
        self.attached
            .iter()
            .find(|t| inode(&t.path) == Some(wanted))
    }

    /// Files whose TLS functions are hooked.
    pub fn tls_targets(&self) -> &[TlsTarget] {
        &self.attached
    }

    /// Takes the ring buffer out for reading on the async runtime.
    pub fn event_reader(&mut self) -> Result<EventReader, CaptureError> {
        let map = self.ebpf.take_map(maps::EVENTS).expect("in the object");
        let ring = RingBuf::try_from(map).map_err(|source| CaptureError::Map {
            name: maps::EVENTS,
            source,
        })?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as it lives, which is as long as the AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| CaptureError::RingBuffer(err.into()))?;
        Ok(EventReader {
            ring,
            clock: MonotonicToWall::sample(),
            execs: Vec::new(),
        })
    }

    pub fn counters(&self) -> KernelCounters {
        let Some(map) = self.ebpf.map(maps::COUNTERS) else {
            return KernelCounters::default();
        };
        let Ok(array) = PerCpuArray::<_, u64>::try_from(map) else {
            return KernelCounters::default();
        };
        let sum = |index: u32| -> u64 {
            array
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        KernelCounters {
            ringbuf_full: sum(abi::COUNTER_RINGBUF_FULL),
            truncated: sum(abi::COUNTER_TRUNCATED),
            tls_ciphertext_skipped: sum(abi::COUNTER_TLS_CIPHERTEXT),
            not_http_connections: sum(abi::COUNTER_NOT_HTTP),
        }
    }
}

/// A process ran a new program: a watched one, one that entered a watched
/// scope by this exec, or (when every exec is reported) any other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExec {
    pub pid: u32,
    pub comm: String,
    /// When it exec'd (wall clock).
    pub at: WallNanos,
    /// The kernel watches it now.
    pub watched: bool,
}

/// Reads ring-buffer records as they arrive.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    clock: MonotonicToWall,
    execs: Vec<ProcessExec>,
}

impl EventReader {
    /// Waits for records (or at most [`POLL_INTERVAL`]), then decodes all
    /// that are ready into `out`. Returns how many could not be decoded.
    /// Exec records are kept aside for [`EventReader::take_execs`].
    pub async fn read_batch(&mut self, out: &mut Vec<CaptureEvent>) -> std::io::Result<u64> {
        let clock = self.clock;
        match tokio::time::timeout(POLL_INTERVAL, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                let malformed = drain(guard.get_inner_mut(), &clock, out, &mut self.execs);
                guard.clear_ready();
                Ok(malformed)
            }
            // The kernel side wakes us only when records pile up.
            Err(_elapsed) => Ok(drain(self.ring.get_mut(), &clock, out, &mut self.execs)),
        }
    }

    /// The execs read since the last call.
    pub fn take_execs(&mut self) -> Vec<ProcessExec> {
        std::mem::take(&mut self.execs)
    }
}

/// How often the reader looks for records the kernel did not wake it for.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

fn drain(
    ring: &mut RingBuf<MapData>,
    clock: &MonotonicToWall,
    out: &mut Vec<CaptureEvent>,
    execs: &mut Vec<ProcessExec>,
) -> u64 {
    let mut malformed = 0;
    while let Some(item) = ring.next() {
        match abi::decode(&item) {
            Ok(Record::Conn(event)) if event.hdr.kind == abi::EVENT_EXEC => {
                execs.push(ProcessExec {
                    pid: event.hdr.pid,
                    comm: comm_string(&event.comm),
                    at: clock.to_wall(event.hdr.end_ns),
                    watched: event.hdr.flags & abi::FLAG_WATCHED != 0,
                });
            }
            Ok(record) => out.push(to_capture_event(record, clock)),
            Err(err) => {
                malformed += 1;
                tracing::debug!("dropping a malformed ring-buffer record: {err}");
            }
        }
    }
    malformed
}

fn to_capture_event(record: Record<'_>, clock: &MonotonicToWall) -> CaptureEvent {
    match record {
        Record::Data { event, payload } => data_event(&event, payload, clock),
        Record::Conn(event) => conn_event(&event, clock),
    }
}

fn data_event(event: &DataEvent, payload: &[u8], clock: &MonotonicToWall) -> CaptureEvent {
    let hdr = &event.hdr;
    let fd = (hdr.fd >= 0).then_some(hdr.fd);
    let key = if hdr.source == abi::SOURCE_OPENSSL {
        StreamKey::Tls {
            pid: hdr.pid,
            session: hdr.ssl,
        }
    } else {
        StreamKey::Socket {
            pid: hdr.pid,
            fd: hdr.fd,
        }
    };
    CaptureEvent::Data {
        key,
        fd,
        tid: hdr.tid,
        direction: if hdr.direction == abi::EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        call_start: clock.to_wall(hdr.start_ns),
        call_end: clock.to_wall(hdr.end_ns),
        len: u64::from(event.len),
        bytes: payload.to_vec(),
    }
}

fn conn_event(event: &ConnEvent, clock: &MonotonicToWall) -> CaptureEvent {
    let hdr = &event.hdr;
    let at = clock.to_wall(hdr.end_ns);
    match hdr.kind {
        abi::EVENT_CLOSE => CaptureEvent::Closed {
            pid: hdr.pid,
            fd: hdr.fd,
            at,
        },
        abi::EVENT_EXIT => CaptureEvent::ProcessExited { pid: hdr.pid, at },
        kind => CaptureEvent::Connected {
            pid: hdr.pid,
            fd: hdr.fd,
            side: match kind {
                abi::EVENT_CONNECT => Side::Client,
                abi::EVENT_ACCEPT => Side::Server,
                _ => Side::Unknown,
            },
            local: socket_addr(event.family, &event.local_addr, event.local_port),
            peer: socket_addr(event.family, &event.peer_addr, event.peer_port),
            comm: comm_string(&event.comm),
            at,
        },
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(*addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
