//! The kernel side, loaded: `llmtap-ebpf`'s object loaded with aya, its
//! socket and scheduler tracepoints attached, TLS uprobes attached per
//! watched process (a uprobe given a pid traps in that process only, so
//! the processes that share a library and are not watched never pay), and
//! the in-kernel watch lists and per-process state kept.
//! [`EbpfProbes`] is the real [`ProbeControl`]; nothing here decides what
//! to watch (that is `discovery`) or reads records (that is `ring`).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap as BpfHashMap, PerCpuArray, RingBuf};
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLink, UProbeLinkId, UProbeScope};
use aya::programs::{BtfTracePoint, UProbe};
use aya::{Btf, Ebpf, EbpfLoader};

use super::abi::{self, maps, programs};
use super::discovery::ProbeControl;
use super::llm_hosts;
use super::ring::RingReader;
use super::scope::COMM_LEN;
use super::tls_targets::{self, FileId, TlsTarget, TlsTargets, TLS_FUNCTIONS};
use super::{preflight, CaptureError, EbpfConfig};
use crate::sys;

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
    /// TLS connections `--all` left unhooked: their ClientHello names no
    /// LLM API host.
    pub tls_not_llm_connections: u64,
    /// HTTP/1 requests `--all` did not copy, nor their responses: not POST.
    pub not_post_requests: u64,
    /// HTTP/1 exchanges `--all` stopped copying: past their share while
    /// the ring buffer was more than half full.
    pub exchanges_over_share: u64,
}

/// The loaded programs and maps. Dropping it detaches and unloads
/// everything.
pub struct EbpfProbes {
    ebpf: Ebpf,
    targets: TlsTargets,
    /// The TLS hooks of each watched process.
    hooks: HashMap<u32, ProcessHooks>,
    /// Files hooked in some process, for the log.
    hooked_files: HashSet<FileId>,
    /// The kernel refused a uprobe for want of a capability (said once).
    uprobes_refused: bool,
    /// Where links of exited processes go to be closed, off the event loop.
    reaper: Reaper,
    /// The socket data programs' links, while they are attached.
    socket_data_links: Vec<(&'static str, BtfTracePointLinkId)>,
    /// What the kernel's `socket_capture` flag says: the data programs are
    /// attached, no need to hold a process that starts TCP.
    socket_data_flag: bool,
}

/// Closes uprobe links on a thread of its own: closing one waits for the
/// kernel to be sure no task still runs in it (a grace period, tens of
/// milliseconds here), and a process's exit would otherwise hold up every
/// event behind it for the sum of its links'.
struct Reaper(std::sync::mpsc::Sender<Vec<UProbeLink>>);

impl Reaper {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<UProbeLink>>();
        std::thread::Builder::new()
            .name("uprobe-reaper".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .expect("a thread for closing uprobes");
        Reaper(tx)
    }
}

/// The uprobes attached for one process.
#[derive(Default)]
struct ProcessHooks {
    /// The files hooked, with their TLS stack.
    files: HashMap<FileId, &'static str>,
    /// Every link, to detach when the process is forgotten.
    links: Vec<(&'static str, UProbeLinkId)>,
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

impl EbpfProbes {
    /// Checks the host, loads the programs and attaches the syscall and
    /// scheduler tracepoints. TLS uprobes are attached per process later.
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
        let ebpf = EbpfLoader::new()
            .override_global("capture_bytes", &capture_bytes, true)
            .override_global("follow_forks", &follow_forks, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .override_global("report_all_execs", &report_all_execs, true)
            .override_global("watch_all", &watch_all, true)
            .override_global("agent_pid", &agent_pid, true)
            .map_max_entries(maps::EVENTS, config.ring_buffer_bytes)
            .map_max_entries(maps::SCRATCH, cpus)
            .load(llmtap_ebpf::object())?;
        let mut probes = EbpfProbes {
            ebpf,
            targets: TlsTargets::default(),
            hooks: HashMap::new(),
            hooked_files: HashSet::new(),
            uprobes_refused: false,
            reaper: Reaper::start(),
            socket_data_links: Vec::new(),
            socket_data_flag: false,
        };
        for (host, bits) in llm_hosts::kernel_entries(&config.llm_hosts) {
            probes.insert_value(maps::LLM_HOSTS, host, bits)?;
        }

        let btf = Btf::from_sys_fs()?;
        let ebpf = &mut probes.ebpf;
        for (tracepoint, name) in programs::LASTING_TRACEPOINTS
            .iter()
            .chain(programs::SOCKET_DATA_TRACEPOINTS)
        {
            let prog: &mut BtfTracePoint = program(ebpf, name)?;
            prog.load(tracepoint, &btf).map_err(program_error(name))?;
        }
        for (_, name) in programs::LASTING_TRACEPOINTS {
            program::<BtfTracePoint>(ebpf, name)?
                .attach()
                .map_err(program_error(name))?;
        }
        let uprobes: std::collections::BTreeSet<&str> = TLS_FUNCTIONS
            .iter()
            .map(|(_, name)| *name)
            .chain([programs::SSL_RETURN, programs::GO_TLS_RETURN])
            .collect();
        for name in uprobes {
            program::<UProbe>(ebpf, name)?
                .load()
                .map_err(program_error(name))?;
        }

        Ok(probes)
    }

    fn insert<K: aya::Pod>(&mut self, name: &'static str, key: K) -> Result<(), CaptureError> {
        self.insert_value(name, key, 1)
    }

    fn insert_value<K: aya::Pod>(
        &mut self,
        name: &'static str,
        key: K,
        value: u8,
    ) -> Result<(), CaptureError> {
        let map_error = |source| CaptureError::Map { name, source };
        let map = self.ebpf.map_mut(name).expect("in the object");
        let mut set: BpfHashMap<_, K, u8> = BpfHashMap::try_from(map).map_err(map_error)?;
        set.insert(key, value, 0).map_err(map_error)
    }

    /// Entries in each kernel map that holds per-process, per-thread or
    /// per-connection state: what an exited process must not leave behind.
    pub fn map_entries(&self) -> Vec<(&'static str, usize)> {
        maps::STATE_MAPS
            .iter()
            .map(|name| {
                (
                    *name,
                    self.ebpf.map(name).map_or(0, |m| sys::bpf::keys(m).len()),
                )
            })
            .collect()
    }

    /// Attaches every uprobe of `target` for process `pid`; returns the
    /// links, or detaches what was attached and fails.
    fn attach_tls_target(
        ebpf: &mut Ebpf,
        target: &TlsTarget,
        pid: NonZeroU32,
    ) -> Result<Vec<(&'static str, UProbeLinkId)>, CaptureError> {
        let mut points: Vec<(&'static str, u64)> = Vec::new();
        for (function, entry) in TLS_FUNCTIONS {
            let Some(&(_, offset)) = target.functions.iter().find(|(f, _)| *f == function) else {
                continue;
            };
            points.push((entry, offset));
            if !tls_targets::is_go_function(function) {
                points.push((programs::SSL_RETURN, offset));
            }
        }
        points.extend(
            target
                .go_returns
                .iter()
                .map(|&o| (programs::GO_TLS_RETURN, o)),
        );
        let mut links = Vec::with_capacity(points.len());
        for (name, offset) in points {
            let attached = program::<UProbe>(ebpf, name).and_then(|prog| {
                prog.attach(
                    UProbeAttachLocation::AbsoluteOffset(offset),
                    &target.path,
                    UProbeScope::OneProcess(pid),
                )
                .map_err(|source| match &source {
                    aya::programs::ProgramError::SyscallError(e)
                        if e.io_error.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        CaptureError::UprobeRefused
                    }
                    _ => program_error(name)(source),
                })
            });
            match attached {
                Ok(link) => links.push((name, link)),
                Err(err) => {
                    drop(take_links(ebpf, links));
                    return Err(err);
                }
            }
        }
        Ok(links)
    }

    /// Logs the files hooked so far.
    pub fn log_hooked_files(&mut self) {
        for files in self.hooks.values() {
            for id in files.files.keys() {
                if !self.hooked_files.insert(*id) {
                    continue;
                }
                if let Some(target) = self.targets.known(*id) {
                    tracing::info!(path = %target.path.display(), functions = ?target.functions, "TLS hooks attached");
                }
            }
        }
    }

    /// Takes the ring buffer out for reading on the async runtime.
    pub fn ring_reader(&mut self) -> Result<RingReader, CaptureError> {
        let map = self.ebpf.take_map(maps::EVENTS).expect("in the object");
        let ring = RingBuf::try_from(map).map_err(|source| CaptureError::Map {
            name: maps::EVENTS,
            source,
        })?;
        RingReader::new(ring).map_err(CaptureError::RingBuffer)
    }

    /// The kernel side's counters, summed over CPUs.
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
            tls_not_llm_connections: sum(abi::COUNTER_TLS_NOT_LLM),
            not_post_requests: sum(abi::COUNTER_NOT_POST),
            exchanges_over_share: sum(abi::COUNTER_CROWDING),
        }
    }
}

impl ProbeControl for EbpfProbes {
    fn watch(&mut self, pid: u32) -> Result<(), CaptureError> {
        self.insert(maps::WATCHED_PIDS, pid)
    }

    fn watch_cgroup(&mut self, id: u64) -> Result<(), CaptureError> {
        self.insert(maps::WATCHED_CGROUPS, id)
    }

    fn watch_comm(&mut self, comm: [u8; COMM_LEN]) -> Result<(), CaptureError> {
        self.insert(maps::WATCHED_COMMS, comm)
    }

    fn attach_tls(&mut self, pid: u32, candidates: &[PathBuf]) -> usize {
        let Some(nonzero) = NonZeroU32::new(pid) else {
            return 0;
        };
        let mut added = 0;
        for path in candidates {
            let Some((id, target)) = self.targets.target(path) else {
                continue;
            };
            let hooks = self.hooks.entry(pid).or_default();
            if hooks.files.contains_key(&id) {
                continue;
            }
            match Self::attach_tls_target(&mut self.ebpf, target, nonzero) {
                Ok(links) => {
                    tracing::debug!(pid, path = %target.path.display(), "hooked TLS library");
                    hooks.files.insert(id, target.stack());
                    hooks.links.extend(links);
                    added += 1;
                }
                // The same for every library: said once.
                Err(CaptureError::UprobeRefused) if self.uprobes_refused => {}
                Err(err @ CaptureError::UprobeRefused) => {
                    self.uprobes_refused = true;
                    tracing::warn!("{err}");
                }
                Err(err) => {
                    // Gone already (ESRCH) is no news; anything else is.
                    if !sys::proc::has_exited(pid) {
                        tracing::warn!(pid, path = %target.path.display(), "cannot hook TLS library: {err}");
                    }
                }
            }
        }
        added
    }

    fn capture_sockets(&mut self, on: bool) -> Result<(), CaptureError> {
        let attached = !self.socket_data_links.is_empty();
        if on == self.socket_data_flag && on == attached {
            return Ok(());
        }
        if on && !attached {
            for (_, name) in programs::SOCKET_DATA_TRACEPOINTS {
                let link = program::<BtfTracePoint>(&mut self.ebpf, name)?
                    .attach()
                    .map_err(program_error(name))?;
                self.socket_data_links.push((name, link));
            }
        }
        if on != self.socket_data_flag {
            // Set once both are attached, cleared a look before they are
            // detached.
            let map_error = |source| CaptureError::Map {
                name: maps::SOCKET_CAPTURE,
                source,
            };
            let map = self
                .ebpf
                .map_mut(maps::SOCKET_CAPTURE)
                .expect("in the object");
            let mut flag: Array<_, u8> = Array::try_from(map).map_err(map_error)?;
            flag.set(0, u8::from(on), 0).map_err(map_error)?;
            self.socket_data_flag = on;
        } else if !on {
            for (name, link) in std::mem::take(&mut self.socket_data_links) {
                program::<BtfTracePoint>(&mut self.ebpf, name)?
                    .detach(link)
                    .map_err(program_error(name))?;
            }
        }
        tracing::debug!(
            attached = !self.socket_data_links.is_empty(),
            kernel_relies_on_them = self.socket_data_flag,
            "socket data programs"
        );
        Ok(())
    }

    fn looked_at(&mut self, pid: u32) {
        if let Err(err) = self.insert(maps::TLS_LOOKED_AT, pid) {
            tracing::debug!(pid, "cannot mark a process's TLS as looked at: {err}");
        }
    }

    fn resume(&mut self, pid: u32) {
        if let Err(err) = sys::proc::resume(pid) {
            // Gone already is the only way this fails for a pid we held.
            tracing::debug!(pid, "cannot continue a held process: {err}");
        }
    }

    fn hooked_stack(&self, pid: u32, path: &Path) -> Option<&'static str> {
        let hooks = self.hooks.get(&pid)?;
        hooks.files.get(&tls_targets::file_id(path)?).copied()
    }

    // Their uprobes, and their TLS sessions: an exit closes the fds without
    // a close(2) for the probes to see. Per-thread state the exit program
    // drops, per-socket state goes with the sockets.
    fn forget(&mut self, pids: &HashSet<u32>) {
        if pids.is_empty() {
            return;
        }
        let links: Vec<UProbeLink> = pids
            .iter()
            .filter_map(|pid| self.hooks.remove(pid))
            .flat_map(|hooks| take_links(&mut self.ebpf, hooks.links))
            .collect();
        if !links.is_empty() {
            // The thread lives as long as the probes: the send cannot fail.
            let _ = self.reaper.0.send(links);
        }
        for (name, pid_at) in maps::PID_KEYED_MAPS {
            if let Some(map) = self.ebpf.map(name) {
                sys::bpf::remove_where(map, |key| {
                    sys::bpf::u32_at(key, pid_at).is_some_and(|pid| pids.contains(&pid))
                });
            }
        }
    }
}

/// Takes uprobe links out of their programs: dropping one detaches it.
fn take_links(ebpf: &mut Ebpf, links: Vec<(&'static str, UProbeLinkId)>) -> Vec<UProbeLink> {
    links
        .into_iter()
        .filter_map(|(name, link)| program::<UProbe>(ebpf, name).ok()?.take_link(link).ok())
        .collect()
}
