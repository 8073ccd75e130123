//! The eBPF capture path: loads `llmtap-ebpf`'s object with aya, attaches
//! its syscall tracepoints and TLS uprobes, keeps the in-kernel set of
//! watched processes, and turns ring-buffer records into [`CaptureEvent`]s.

pub mod abi;
pub mod preflight;
pub mod tls_targets;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::UProbeScope;
use aya::programs::{BtfTracePoint, TracePoint, UProbe};
use aya::{Btf, Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use self::abi::{ConnEvent, DataEvent, Record};
use self::preflight::PreflightError;
use self::tls_targets::{TlsTarget, TlsTargets, SSL_FUNCTIONS};
use super::clock::MonotonicToWall;
use super::{CaptureEvent, StreamKey};
use crate::stream::{Direction, Side};

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
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            capture_bytes: abi::MAX_DATA,
            ring_buffer_bytes: 8 << 20,
            follow_forks: true,
        }
    }
}

/// Syscall tracepoints and the programs on them.
const TRACEPOINTS: &[(&str, &str)] = &[
    ("sys_enter_write", "enter_write"),
    ("sys_exit_write", "exit_write"),
    ("sys_enter_sendto", "enter_sendto"),
    ("sys_exit_sendto", "exit_sendto"),
    ("sys_enter_writev", "enter_writev"),
    ("sys_exit_writev", "exit_writev"),
    ("sys_enter_sendmsg", "enter_sendmsg"),
    ("sys_exit_sendmsg", "exit_sendmsg"),
    ("sys_enter_read", "enter_read"),
    ("sys_exit_read", "exit_read"),
    ("sys_enter_recvfrom", "enter_recvfrom"),
    ("sys_exit_recvfrom", "exit_recvfrom"),
    ("sys_enter_readv", "enter_readv"),
    ("sys_exit_readv", "exit_readv"),
    ("sys_enter_recvmsg", "enter_recvmsg"),
    ("sys_exit_recvmsg", "exit_recvmsg"),
    ("sys_enter_connect", "enter_connect"),
    ("sys_exit_connect", "exit_connect"),
    ("sys_exit_accept", "exit_accept_plain"),
    ("sys_exit_accept4", "exit_accept4"),
    ("sys_enter_close", "enter_close"),
];

/// Scheduler tracepoints (BTF-typed) that follow forks and exits.
const SCHED_TRACEPOINTS: &[(&str, &str)] = &[
    ("sched_process_fork", "on_fork"),
    ("sched_process_exit", "on_exit"),
];

/// Kernel-side counters (`enum llmtap_counter`), summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Records dropped because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Reads/writes whose bytes were cut at the capture size.
    pub truncated: u64,
    /// Socket calls skipped because they carried TLS ciphertext.
    pub tls_ciphertext_skipped: u64,
}

/// The loaded programs. Dropping it detaches and unloads everything.
pub struct EbpfCapture {
    ebpf: Ebpf,
    targets: TlsTargets,
    attached: Vec<TlsTarget>,
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
        let wakeup_bytes = (config.ring_buffer_bytes / 4).min(256 * 1024);
        let mut ebpf = EbpfLoader::new()
            .override_global("capture_bytes", &capture_bytes, true)
            .override_global("follow_forks", &follow_forks, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .map_max_entries("events", config.ring_buffer_bytes)
            .map_max_entries("scratch", cpus)
            .load(llmtap_ebpf::object())?;

        for (tracepoint, name) in TRACEPOINTS {
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load().map_err(program_error(name))?;
            prog.attach("syscalls", tracepoint)
                .map_err(program_error(name))?;
        }
        let btf = Btf::from_sys_fs()?;
        for (tracepoint, name) in SCHED_TRACEPOINTS {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            prog.load(tracepoint, &btf).map_err(program_error(name))?;
            prog.attach().map_err(program_error(name))?;
        }
        for (_, name) in SSL_FUNCTIONS {
            program::<UProbe>(&mut ebpf, name)?
                .load()
                .map_err(program_error(name))?;
        }
        program::<UProbe>(&mut ebpf, "ssl_return")?
            .load()
            .map_err(program_error("ssl_return"))?;

        Ok(EbpfCapture {
            ebpf,
            targets: TlsTargets::default(),
            attached: Vec::new(),
        })
    }

    /// Adds a process to the in-kernel watch list.
    pub fn watch(&mut self, pid: u32) -> Result<(), CaptureError> {
        let map = self.ebpf.map_mut("watched_pids").expect("in the object");
        let mut watched: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(map).map_err(|source| CaptureError::Map {
                name: "watched_pids",
                source,
            })?;
        watched
            .insert(pid, 1, 0)
            .map_err(|source| CaptureError::Map {
                name: "watched_pids",
                source,
            })
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
                Err(err) => {
                    tracing::warn!(path = %target.path.display(), "cannot hook TLS library: {err}")
                }
            }
        }
        added
    }

    fn attach_tls_target(&mut self, target: &TlsTarget) -> Result<(), CaptureError> {
        for (function, entry) in SSL_FUNCTIONS {
            if !target.functions.contains(&function) {
                continue;
            }
            for name in [entry, "ssl_return"] {
                program::<UProbe>(&mut self.ebpf, name)?
                    .attach(function, &target.path, UProbeScope::AllProcesses)
                    .map_err(program_error(name))?;
            }
        }
        Ok(())
    }

    /// Whether `path` is (another name of) a hooked file.
    pub fn is_tls_hooked(&self, path: &std::path::Path) -> bool {
        let inode = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let Some(wanted) = inode(path) else {
            return false;
        };
        self.attached.iter().any(|t| inode(&t.path) == Some(wanted))
    }

    /// Files whose TLS functions are hooked.
    pub fn tls_targets(&self) -> &[TlsTarget] {
        &self.attached
    }

    /// Takes the ring buffer out for reading on the async runtime.
    pub fn event_reader(&mut self) -> Result<EventReader, CaptureError> {
        let map = self.ebpf.take_map("events").expect("in the object");
        let ring = RingBuf::try_from(map).map_err(|source| CaptureError::Map {
            name: "events",
            source,
        })?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as it lives, which is as long as the AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| CaptureError::RingBuffer(err.into()))?;
        Ok(EventReader {
            ring,
            clock: MonotonicToWall::sample(),
        })
    }

    pub fn counters(&self) -> KernelCounters {
        let Some(map) = self.ebpf.map("counters") else {
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
        }
    }
}

/// Reads ring-buffer records as they arrive.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    clock: MonotonicToWall,
}

impl EventReader {
    /// Waits for records (or at most [`POLL_INTERVAL`]), then decodes all
    /// that are ready into `out`. Returns how many could not be decoded.
    pub async fn read_batch(&mut self, out: &mut Vec<CaptureEvent>) -> std::io::Result<u64> {
        let clock = self.clock;
        match tokio::time::timeout(POLL_INTERVAL, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                let malformed = drain(guard.get_inner_mut(), &clock, out);
                guard.clear_ready();
                Ok(malformed)
            }
            // The kernel side wakes us only when records pile up.
            Err(_elapsed) => Ok(drain(self.ring.get_mut(), &clock, out)),
        }
    }
}

/// How often the reader looks for records the kernel did not wake it for.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

fn drain(ring: &mut RingBuf<MapData>, clock: &MonotonicToWall, out: &mut Vec<CaptureEvent>) -> u64 {
    let mut malformed = 0;
    while let Some(item) = ring.next() {
        match abi::decode(&item) {
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
            side: if kind == abi::EVENT_CONNECT {
                Side::Client
            } else {
                Side::Server
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
