//! Which processes are watched, and finding new ones: the processes given,
//! those already running in the scopes, and those that exec into a scope
//! later (the kernel reports them) get their executable's and libraries'
//! TLS functions hooked; those that exit are forgotten, in the kernel's
//! maps too. Under `--all` a process is hooked only on evidence: a TLS
//! handshake with an LLM API host, which the kernel reports, or a program
//! `--exe` names.
//!
//! Input: the scopes, and the kernel's exec and exit events. Output: calls
//! on a [`ProbeControl`] (the kernel side) and a summary of the watched
//! processes. Facts about processes come from [`Processes`]; both seams let
//! the tests run without a kernel.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::processes::Processes;
use super::records::{KernelEvent, ProcessExec};
use super::scope::{ExeMatch, Scopes, COMM_LEN};
use super::CaptureError;
use crate::stream::WallNanos;

/// What discovery asks of the kernel side.
pub trait ProbeControl {
    /// Puts a process on the in-kernel watch list.
    fn watch(&mut self, pid: u32) -> Result<(), CaptureError>;
    /// Watches every process that execs inside this cgroup v2 (by id) or
    /// one of its descendants.
    fn watch_cgroup(&mut self, id: u64) -> Result<(), CaptureError>;
    /// Watches every process that execs a program of this name (cut to 15
    /// bytes and zero-padded, as the kernel keeps `comm`).
    fn watch_comm(&mut self, comm: [u8; COMM_LEN]) -> Result<(), CaptureError>;
    /// Hooks, in process `pid` only, the TLS functions of those
    /// `candidates` not hooked for it yet; returns how many files it hooked
    /// now. A file that cannot be hooked is skipped (the process's
    /// plaintext is still seen).
    fn attach_tls(&mut self, pid: u32, candidates: &[PathBuf]) -> usize;
    /// The TLS stack (`openssl`, `gnutls`, `go`) of the file that `path`
    /// is, under any name, if it is hooked in process `pid`.
    fn hooked_stack(&self, pid: u32, path: &Path) -> Option<&'static str>;
    /// Tells the kernel that `pid`'s TLS libraries were looked at: its next
    /// TLS handshakes are not held. (Hooking a file does so too.)
    fn looked_at(&mut self, pid: u32);
    /// Continues a process the kernel stopped at a TLS handshake or at its
    /// first TCP connect or listen, now hooked.
    fn resume(&mut self, pid: u32);
    /// Attaches the programs that capture socket data (`on`), or takes a
    /// step towards detaching them: the first call with `on` false has the
    /// kernel hold the next watched process that connects or listens, the
    /// next one detaches them. Called at each look, so that in between the
    /// records of processes that started TCP just before the first have
    /// been read, and have asked for them again.
    fn capture_sockets(&mut self, on: bool) -> Result<(), CaptureError>;
    /// Drops what the kernel still keeps for processes that exited, their
    /// TLS hooks included.
    fn forget(&mut self, pids: &HashSet<u32>);
}

/// The watched processes and the scopes that add to them.
pub struct Discovery<P> {
    scopes: Scopes,
    processes: P,
    /// Processes known to be watched: given, started, or found by exec.
    watched: HashSet<u32>,
    /// Containers' cgroup v2 ids already given to the kernel.
    container_cgroups: HashSet<u64>,
    /// Watched processes found gone at the last look, their exit not
    /// reported yet.
    gone_unreported: HashSet<u32>,
    /// Seconds from exec to hooked, since the last [`Discovery::take_hook_latencies`].
    hook_latencies: Vec<f64>,
    /// Watched processes by hooked TLS stack, as of the last look.
    tls: Vec<(Option<&'static str>, usize)>,
    /// Programs found speaking TLS with nothing to hook (said once each).
    unhookable: HashSet<PathBuf>,
    /// Under `--all`, the processes that started a TLS handshake with an
    /// LLM API host since their exec, or run a program `--exe` names: the
    /// only ones hooked.
    tls_evidence: HashSet<u32>,
    /// Watched processes that use TCP: they connected or listened, had a
    /// TCP socket when found, or cannot be held at their first connect.
    /// Socket data is captured while there is one (always under `--all`),
    /// and no process pays for those programs while there is none.
    tcp_users: HashSet<u32>,
}

impl<P: Processes> Discovery<P> {
    pub fn new(scopes: Scopes, processes: P) -> Self {
        Discovery {
            scopes,
            processes,
            watched: HashSet::new(),
            container_cgroups: HashSet::new(),
            gone_unreported: HashSet::new(),
            hook_latencies: Vec::new(),
            tls: Vec::new(),
            unhookable: HashSet::new(),
            tls_evidence: HashSet::new(),
            tcp_users: HashSet::new(),
        }
    }

    /// Processes watched now.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Whether some TLS file of `pid` is hooked.
    pub fn is_tls_hooked(&self, probes: &impl ProbeControl, pid: u32) -> bool {
        self.processes
            .tls_candidates(pid)
            .iter()
            .any(|c| probes.hooked_stack(pid, c).is_some())
    }

    /// Whether `pid`'s TLS is to be hooked: every watched process's, but
    /// under `--all` only those with evidence of LLM traffic.
    fn wants_tls(&self, pid: u32) -> bool {
        !self.scopes.all || self.tls_evidence.contains(&pid)
    }

    /// Hooks the TLS functions `pid` has now, in its executable and the
    /// libraries it maps; returns how many files. A library it loads later
    /// is hooked at its first TLS handshake (the kernel holds it there).
    fn hook(&self, probes: &mut impl ProbeControl, pid: u32) -> usize {
        if !self.wants_tls(pid) {
            return 0;
        }
        let files = self.processes.tls_candidates(pid);
        tracing::trace!(pid, ?files, "hooking");
        probes.attach_tls(pid, &files)
    }

    /// Watches `pid` and hooks its TLS files; returns how many files were
    /// hooked.
    pub fn watch(
        &mut self,
        probes: &mut impl ProbeControl,
        pid: u32,
    ) -> Result<usize, CaptureError> {
        // Under --all the kernel watches every pid without a map entry.
        if !self.scopes.all {
            probes.watch(pid)?;
        }
        self.watched.insert(pid);
        self.capture_sockets_if_unseen(probes, pid)?;
        self.note_exe_evidence(pid);
        Ok(self.hook(probes, pid))
    }

    /// Under `--all`, a program `--exe` names is evidence enough to hook
    /// its TLS from the start: a TLS-terminating inference server, or a
    /// client that connects by address (its ClientHello names no host).
    fn note_exe_evidence(&mut self, pid: u32) {
        if self.scopes.all && self.scopes.exe_matches(&self.processes, pid) {
            self.tls_evidence.insert(pid);
        }
    }

    /// Captures socket data from now on if newly watched `pid` may move TCP
    /// data without the kernel holding it first at a connect or listen: it
    /// has a TCP socket already, or it is a shell's job (the kernel does not
    /// stop those) that neither llmtap nor a watched process started.
    fn capture_sockets_if_unseen(
        &mut self,
        probes: &mut impl ProbeControl,
        pid: u32,
    ) -> Result<(), CaptureError> {
        let unseen = self.processes.has_tcp_socket(pid)
            || self.processes.terminal_parent(pid).is_some_and(|parent| {
                parent != std::process::id() && !self.watched.contains(&parent)
            });
        if unseen {
            self.tcp_users.insert(pid);
            self.update_socket_capture(probes)?;
        }
        Ok(())
    }

    /// Attaches the socket data programs while a watched process uses TCP,
    /// steps towards detaching them while none does.
    fn update_socket_capture(&self, probes: &mut impl ProbeControl) -> Result<(), CaptureError> {
        probes.capture_sockets(self.scopes.all || !self.tcp_users.is_empty())
    }

    /// Watches a process found in a scope user space matched, and gives
    /// the kernel its container's cgroup v2 directory, so the container's
    /// next execs are matched there, from their first instruction.
    fn watch_matched(
        &mut self,
        probes: &mut impl ProbeControl,
        pid: u32,
    ) -> Result<usize, CaptureError> {
        let hooked = self.watch(probes, pid)?;
        if let Some(cgroup) = self.scopes.container_cgroup(&self.processes, pid) {
            if self.container_cgroups.insert(cgroup.id) {
                probes.watch_cgroup(cgroup.id)?;
                tracing::info!(path = %cgroup.path.display(), "watching a container's cgroup");
            }
        }
        Ok(hooked)
    }

    /// Puts the scopes in the kernel, then watches what already runs in
    /// them: a process starting in between is caught by one or the other.
    pub fn arm(&mut self, probes: &mut impl ProbeControl) -> Result<(), CaptureError> {
        for cgroup in &self.scopes.cgroups {
            probes.watch_cgroup(cgroup.id)?;
            tracing::info!(path = %cgroup.path.display(), id = cgroup.id, "watching cgroup");
        }
        for cgroup in &self.scopes.v1_cgroups {
            tracing::info!(path = %cgroup.path.display(), "watching cgroup v1 directory (matched at exec by llmtap)");
        }
        for comm in self.scopes.exes.iter().filter_map(ExeMatch::comm_key) {
            probes.watch_comm(comm)?;
        }
        for pid in self.scopes.running_pids(&self.processes) {
            // Gone already: skip it, the scope stays.
            if !self.processes.has_exited(pid) {
                self.watch_matched(probes, pid)?;
            }
        }
        self.update_socket_capture(probes)?;
        if !self.scopes.containers.is_empty() && self.container_cgroups.is_empty() {
            tracing::info!(
                containers = ?self.scopes.containers,
                "no process of the given containers runs yet: they are watched from their first exec"
            );
        }
        Ok(())
    }

    /// Handles the execs, forks and exits among the kernel's `events`, in order;
    /// `clock` times the hooking of new programs, once they are hooked.
    pub fn on_events(
        &mut self,
        probes: &mut impl ProbeControl,
        events: &[KernelEvent],
        clock: &dyn Fn() -> WallNanos,
    ) -> Result<(), CaptureError> {
        let mut exited = HashSet::new();
        for event in events {
            match event {
                KernelEvent::Exec(exec) => self.on_exec(probes, exec, clock)?,
                KernelEvent::Forked { pid, .. } => {
                    self.watched.insert(*pid);
                    // It may share a TCP user's sockets (a server's workers
                    // accept on their parent's listener).
                    if !self.tcp_users.is_empty() {
                        self.tcp_users.insert(*pid);
                    }
                    self.hook(probes, *pid);
                }
                KernelEvent::TcpStarting { pid, held } => {
                    self.tcp_users.insert(*pid);
                    self.update_socket_capture(probes)?;
                    if *held {
                        probes.resume(*pid);
                    }
                }
                KernelEvent::TlsHello { pid, at, held, .. } => {
                    self.on_tls_hello(probes, *pid, *at, clock);
                    if *held {
                        probes.resume(*pid);
                    }
                }
                KernelEvent::ProcessExited { pid, .. } => {
                    self.watched.remove(pid);
                    self.tls_evidence.remove(pid);
                    self.tcp_users.remove(pid);
                    exited.insert(*pid);
                }
                _ => {}
            }
        }
        probes.forget(&exited);
        Ok(())
    }

    fn on_exec(
        &mut self,
        probes: &mut impl ProbeControl,
        exec: &ProcessExec,
        clock: &dyn Fn() -> WallNanos,
    ) -> Result<(), CaptureError> {
        // A new program: evidence about the old one does not carry over.
        self.tls_evidence.remove(&exec.pid);
        let hooked = if exec.watched {
            self.watched.insert(exec.pid);
            self.capture_sockets_if_unseen(probes, exec.pid)?;
            self.note_exe_evidence(exec.pid);
            self.hook(probes, exec.pid)
        } else if self.scopes.matches_in_user_space(&self.processes, exec.pid) {
            self.watch_matched(probes, exec.pid)?
        } else {
            tracing::trace!(pid = exec.pid, comm = %exec.comm, "exec outside the scopes");
            return Ok(());
        };
        tracing::debug!(pid = exec.pid, comm = %exec.comm, "exec in scope");
        if hooked > 0 {
            let latency = clock().saturating_sub(exec.at) as f64 / 1e9;
            self.hook_latencies.push(latency);
            tracing::info!(
                pid = exec.pid,
                comm = %exec.comm,
                latency_ms = format!("{:.1}", latency * 1e3),
                "hooked a new program's TLS functions after its exec"
            );
        }
        Ok(())
    }

    /// A watched process began a TLS handshake with libraries not looked at
    /// since its exec (one it loaded by dlopen), or under `--all` with an
    /// LLM API host: hooks them now. A process that speaks TLS with nothing
    /// hookable is said once per program: its TLS traffic cannot be seen.
    fn on_tls_hello(
        &mut self,
        probes: &mut impl ProbeControl,
        pid: u32,
        at: WallNanos,
        clock: &dyn Fn() -> WallNanos,
    ) {
        if self.scopes.all {
            self.tls_evidence.insert(pid);
        }
        let candidates = self.processes.tls_candidates(pid);
        if self.hook(probes, pid) > 0 {
            self.hook_latencies
                .push(clock().saturating_sub(at) as f64 / 1e9);
        }
        probes.looked_at(pid);
        let hooked = candidates
            .iter()
            .any(|c| probes.hooked_stack(pid, c).is_some());
        if !hooked {
            let program = candidates.first().cloned().unwrap_or_default();
            if self.unhookable.insert(program.clone()) {
                tracing::warn!(
                    pid,
                    program = %program.display(),
                    "a watched process speaks TLS through no library llmtap can hook (not \
                     OpenSSL, GnuTLS or Go's crypto/tls with symbols): its TLS traffic will not \
                     be seen"
                );
            }
        }
    }

    /// Exits the kernel could not report (their record was dropped with the
    /// ring buffer full), made up now for the processes found gone at two
    /// looks in a row: an exit still on its way has arrived by the second.
    pub fn unreported_exits(&mut self, at: WallNanos) -> Vec<KernelEvent> {
        let gone: HashSet<u32> = self
            .watched
            .iter()
            .copied()
            .filter(|&pid| self.processes.has_exited(pid))
            .collect();
        let mut overdue: Vec<u32> = gone.intersection(&self.gone_unreported).copied().collect();
        overdue.sort_unstable();
        self.gone_unreported = gone;
        overdue
            .into_iter()
            .map(|pid| KernelEvent::ProcessExited { pid, at })
            .collect()
    }

    /// Looks at each watched process's TLS files again: one loaded since
    /// its exec (a dlopen of libssl) is hooked now. Then counts the watched
    /// processes by the TLS stack hooked in them, for [`Discovery::tls`].
    /// Socket data programs no watched process needs any more are detached.
    pub fn look(&mut self, probes: &mut impl ProbeControl) {
        if let Err(err) = self.update_socket_capture(probes) {
            tracing::warn!("cannot attach or detach the socket data programs: {err}");
        }
        let mut tls: Vec<(Option<&'static str>, usize)> = Vec::new();
        for &pid in &self.watched {
            if !self.wants_tls(pid) {
                count_stack(&mut tls, None);
                continue;
            }
            let candidates = self.processes.tls_candidates(pid);
            probes.attach_tls(pid, &candidates);
            let mut stacks: Vec<Option<&'static str>> = candidates
                .iter()
                .filter_map(|c| probes.hooked_stack(pid, c))
                .map(Some)
                .collect();
            stacks.sort_unstable();
            stacks.dedup();
            if stacks.is_empty() {
                stacks.push(None);
            }
            for stack in stacks {
                count_stack(&mut tls, stack);
            }
        }
        tls.sort_unstable();
        self.tls = tls;
    }

    /// Watched processes by hooked TLS stack, as of the last [`Discovery::look`].
    pub fn tls(&self) -> &[(Option<&'static str>, usize)] {
        &self.tls
    }

    /// The exec-to-hooked latencies measured since the last call.
    pub fn take_hook_latencies(&mut self) -> Vec<f64> {
        std::mem::take(&mut self.hook_latencies)
    }
}

fn count_stack(tls: &mut Vec<(Option<&'static str>, usize)>, stack: Option<&'static str>) {
    match tls.iter_mut().find(|(s, _)| *s == stack) {
        Some((_, count)) => *count += 1,
        None => tls.push((stack, 1)),
    }
}

#[cfg(test)]
mod tests;
