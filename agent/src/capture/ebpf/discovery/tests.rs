//! Discovery against made-up processes and a kernel side that only writes
//! down what it is asked.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{Discovery, ProbeControl};
use crate::capture::ebpf::processes::{ProcessNames, Processes};
use crate::capture::ebpf::records::{KernelEvent, ProcessExec};
use crate::capture::ebpf::scope::{ScopeArgs, Scopes, COMM_LEN};
use crate::capture::ebpf::CaptureError;

/// What the kernel side was asked to do.
#[derive(Default)]
struct FakeProbes {
    watched: BTreeSet<u32>,
    cgroups: BTreeSet<u64>,
    comms: BTreeSet<String>,
    /// Hooked files and their stack, by process.
    hooked: HashMap<(u32, PathBuf), &'static str>,
    forgotten: BTreeSet<u32>,
    /// Processes continued, in order.
    resumed: Vec<u32>,
    /// Processes whose TLS libraries were looked at.
    looked_at: BTreeSet<u32>,
    /// Whether the socket data programs are attached.
    sockets_captured: bool,
    /// A step towards detaching them was taken: the next one detaches.
    sockets_draining: bool,
}

impl ProbeControl for FakeProbes {
    fn watch(&mut self, pid: u32) -> Result<(), CaptureError> {
        self.watched.insert(pid);
        Ok(())
    }

    fn watch_cgroup(&mut self, id: u64) -> Result<(), CaptureError> {
        self.cgroups.insert(id);
        Ok(())
    }

    fn watch_comm(&mut self, comm: [u8; COMM_LEN]) -> Result<(), CaptureError> {
        let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        self.comms
            .insert(String::from_utf8_lossy(&comm[..end]).into_owned());
        Ok(())
    }

    fn attach_tls(&mut self, pid: u32, candidates: &[PathBuf]) -> usize {
        let mut added = 0;
        for path in candidates {
            // Files named like a TLS library hook; anything else has none.
            let name = path.file_name().unwrap().to_string_lossy();
            let stack = if name.starts_with("libssl") {
                "openssl"
            } else if name.starts_with("libgnutls") {
                "gnutls"
            } else {
                continue;
            };
            if self.hooked.insert((pid, path.clone()), stack).is_none() {
                added += 1;
            }
        }
        added
    }

    fn hooked_stack(&self, pid: u32, path: &Path) -> Option<&'static str> {
        self.hooked.get(&(pid, path.to_owned())).copied()
    }

    fn looked_at(&mut self, pid: u32) {
        self.looked_at.insert(pid);
    }

    fn resume(&mut self, pid: u32) {
        self.resumed.push(pid);
    }

    fn capture_sockets(&mut self, on: bool) -> Result<(), CaptureError> {
        if on || self.sockets_draining {
            self.sockets_captured = on;
        }
        self.sockets_draining = !on && self.sockets_captured;
        Ok(())
    }

    fn forget(&mut self, pids: &HashSet<u32>) {
        self.forgotten.extend(pids);
        self.hooked.retain(|(pid, _), _| !pids.contains(pid));
    }
}

#[derive(Clone, Default)]
struct FakeProcess {
    comm: String,
    files: Vec<PathBuf>,
    exited: bool,
    has_tcp_socket: bool,
    terminal_parent: Option<u32>,
}

/// Processes by pid; changed between calls as a test goes on.
#[derive(Default)]
struct FakeProcesses(RefCell<HashMap<u32, FakeProcess>>);

impl FakeProcesses {
    fn with(processes: &[(u32, &str, &[&str])]) -> Self {
        let fake = FakeProcesses::default();
        for &(pid, comm, files) in processes {
            fake.start(pid, comm, files);
        }
        fake
    }

    fn start(&self, pid: u32, comm: &str, files: &[&str]) {
        self.0.borrow_mut().insert(
            pid,
            FakeProcess {
                comm: comm.into(),
                files: files.iter().map(PathBuf::from).collect(),
                ..FakeProcess::default()
            },
        );
    }

    fn map(&self, pid: u32, file: &str) {
        self.0
            .borrow_mut()
            .get_mut(&pid)
            .unwrap()
            .files
            .push(file.into());
    }

    fn exit(&self, pid: u32) {
        self.0.borrow_mut().get_mut(&pid).unwrap().exited = true;
    }

    fn change(&self, pid: u32, change: impl FnOnce(&mut FakeProcess)) {
        change(self.0.borrow_mut().get_mut(&pid).unwrap());
    }
}

impl Processes for &FakeProcesses {
    fn all_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.0.borrow().keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    fn cgroup_members(&self, _dir: &Path) -> Vec<u32> {
        Vec::new()
    }

    fn names(&self, pid: u32) -> ProcessNames {
        let comm = self.0.borrow().get(&pid).map(|p| p.comm.clone());
        ProcessNames {
            exe: comm.clone().unwrap_or_default(),
            comm: comm.unwrap_or_default(),
        }
    }

    fn cgroup(&self, _pid: u32) -> Option<String> {
        Some("0::/user.slice\n".into())
    }

    fn tls_candidates(&self, pid: u32) -> Vec<PathBuf> {
        self.0
            .borrow()
            .get(&pid)
            .map(|p| p.files.clone())
            .unwrap_or_default()
    }

    fn has_exited(&self, pid: u32) -> bool {
        self.0.borrow().get(&pid).is_none_or(|p| p.exited)
    }

    fn has_tcp_socket(&self, pid: u32) -> bool {
        self.0.borrow().get(&pid).is_some_and(|p| p.has_tcp_socket)
    }

    fn terminal_parent(&self, pid: u32) -> Option<u32> {
        self.0.borrow().get(&pid)?.terminal_parent
    }
}

fn scopes(exes: &[&str], all: bool) -> Scopes {
    Scopes::parse(&ScopeArgs {
        exes: exes.iter().map(|e| e.to_string()).collect(),
        all,
        ..ScopeArgs::default()
    })
    .unwrap()
}

fn exec(pid: u32, comm: &str, watched: bool, at: u64) -> KernelEvent {
    KernelEvent::Exec(ProcessExec {
        pid,
        comm: comm.into(),
        at,
        watched,
    })
}

/// A ClientHello the kernel held `pid` at.
fn held_hello(pid: u32, at: u64) -> KernelEvent {
    KernelEvent::TlsHello {
        pid,
        at,
        held: true,
        hello: vec![0x16, 3, 1],
    }
}

const LIBSSL: &str = "/usr/lib/libssl.so.3";
const GNUTLS: &str = "/usr/lib/libgnutls.so.30";
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn a_given_pid_goes_on_the_kernels_list_with_its_tls_files_hooked() {
    let processes = FakeProcesses::with(&[(10, "python3", &[PYTHON, LIBSSL])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    assert_eq!(discovery.watch(&mut probes, 10).unwrap(), 1);
    assert!(discovery.is_tls_hooked(&probes, 10));
    assert_eq!(probes.watched, BTreeSet::from([10]));
    assert_eq!(probes.hooked_stack(10, Path::new(LIBSSL)), Some("openssl"));
    // A second process with the same library gets hooks of its own.
    processes.start(11, "python3", &[PYTHON, LIBSSL]);
    assert_eq!(discovery.watch(&mut probes, 11).unwrap(), 1);
    assert_eq!(probes.hooked_stack(11, Path::new(LIBSSL)), Some("openssl"));
    assert_eq!(discovery.watched(), 2);
}

#[test]
fn a_name_scope_goes_to_the_kernel_and_takes_the_matching_running_processes() {
    let processes = FakeProcesses::with(&[
        (10, "python3", &[PYTHON, LIBSSL]),
        (11, "nginx", &["/usr/sbin/nginx", GNUTLS]),
    ]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(scopes(&["python3"], false), &processes);
    discovery.arm(&mut probes).unwrap();
    assert_eq!(probes.comms, BTreeSet::from(["python3".to_owned()]));
    assert_eq!(probes.watched, BTreeSet::from([10]));
    assert_eq!(probes.hooked_stack(11, Path::new(GNUTLS)), None);
}

#[test]
fn execs_the_kernel_watched_are_hooked_and_timed_others_ignored() {
    let processes = FakeProcesses::with(&[(20, "node", &["/usr/bin/node", LIBSSL])]);
    processes.start(21, "bash", &["/bin/bash"]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(scopes(&["node"], false), &processes);
    let events = [
        exec(20, "node", true, 1_000),
        exec(21, "bash", false, 1_000),
    ];
    discovery
        .on_events(&mut probes, &events, &|| 5_001_000)
        .unwrap();
    assert_eq!(discovery.watched(), 1);
    assert_eq!(probes.hooked_stack(20, Path::new(LIBSSL)), Some("openssl"));
    assert_eq!(probes.hooked_stack(21, Path::new(LIBSSL)), None);
    assert_eq!(discovery.take_hook_latencies(), vec![0.005]);
    assert!(discovery.take_hook_latencies().is_empty());
    // Watched by the kernel already: not put on its list again.
    assert!(probes.watched.is_empty());
}

#[test]
fn a_pattern_scope_is_matched_at_exec_in_user_space() {
    let processes = FakeProcesses::with(&[(30, "python3.11", &[PYTHON, LIBSSL])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(scopes(&["python3\\..*"], false), &processes);
    discovery.arm(&mut probes).unwrap();
    assert!(probes.comms.is_empty(), "a pattern is not a kernel key");
    assert_eq!(probes.watched, BTreeSet::from([30]), "running ones match");
    processes.start(31, "python3.12", &[PYTHON]);
    processes.start(32, "python2.7", &[PYTHON]);
    let events = [
        exec(31, "python3.12", false, 0),
        exec(32, "python2.7", false, 0),
    ];
    discovery.on_events(&mut probes, &events, &|| 0).unwrap();
    assert_eq!(probes.watched, BTreeSet::from([30, 31]));
}

#[test]
fn an_exit_forgets_the_process_here_and_in_the_kernel() {
    let processes = FakeProcesses::with(&[(40, "curl", &[LIBSSL]), (41, "curl", &[LIBSSL])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    discovery.watch(&mut probes, 40).unwrap();
    discovery.watch(&mut probes, 41).unwrap();
    let exit = KernelEvent::ProcessExited { pid: 40, at: 9 };
    discovery.on_events(&mut probes, &[exit], &|| 9).unwrap();
    assert_eq!(discovery.watched(), 1);
    assert_eq!(probes.forgotten, BTreeSet::from([40]));
    assert_eq!(
        probes.hooked_stack(40, Path::new(LIBSSL)),
        None,
        "its hooks go with it"
    );
    assert_eq!(probes.hooked_stack(41, Path::new(LIBSSL)), Some("openssl"));
}

#[test]
fn a_forked_child_gets_hooks_of_its_own() {
    let processes = FakeProcesses::with(&[(80, "gunicorn", &[PYTHON, LIBSSL])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    discovery.watch(&mut probes, 80).unwrap();
    processes.start(81, "gunicorn", &[PYTHON, LIBSSL]);
    let fork = KernelEvent::Forked { pid: 81, at: 5 };
    discovery.on_events(&mut probes, &[fork], &|| 5).unwrap();
    assert_eq!(discovery.watched(), 2);
    assert_eq!(probes.hooked_stack(81, Path::new(LIBSSL)), Some("openssl"));
    assert!(
        probes.watched.contains(&80) && !probes.watched.contains(&81),
        "the kernel put the child on its list itself"
    );
}

#[test]
fn an_exit_the_kernel_could_not_report_is_made_up_at_the_second_look() {
    let processes = FakeProcesses::with(&[(50, "curl", &[]), (51, "curl", &[])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    discovery.watch(&mut probes, 50).unwrap();
    discovery.watch(&mut probes, 51).unwrap();
    processes.exit(50);
    assert!(
        discovery.unreported_exits(1).is_empty(),
        "its exit may be on its way"
    );
    let exits = discovery.unreported_exits(2);
    assert_eq!(exits, vec![KernelEvent::ProcessExited { pid: 50, at: 2 }]);
    discovery.on_events(&mut probes, &exits, &|| 2).unwrap();
    assert_eq!(discovery.watched(), 1);
    assert!(discovery.unreported_exits(3).is_empty());
}

#[test]
fn a_library_loaded_later_is_hooked_at_the_next_look_and_counted_by_stack() {
    let processes =
        FakeProcesses::with(&[(60, "python3", &[PYTHON]), (61, "gnutls-cli", &[GNUTLS])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    discovery.watch(&mut probes, 60).unwrap();
    discovery.watch(&mut probes, 61).unwrap();
    discovery.look(&mut probes);
    assert_eq!(discovery.tls(), [(None, 1), (Some("gnutls"), 1)]);
    processes.map(60, LIBSSL);
    discovery.look(&mut probes);
    assert_eq!(probes.hooked_stack(60, Path::new(LIBSSL)), Some("openssl"));
    assert_eq!(discovery.tls(), [(Some("gnutls"), 1), (Some("openssl"), 1)]);
}

#[test]
fn under_all_every_running_process_is_watched_without_kernel_entries() {
    let processes = FakeProcesses::with(&[(70, "python3", &[LIBSSL]), (71, "sshd", &[])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(scopes(&[], true), &processes);
    discovery.arm(&mut probes).unwrap();
    assert_eq!(discovery.watched(), 2);
    assert!(
        probes.watched.is_empty(),
        "the kernel watches all by itself"
    );
    assert!(probes.hooked.is_empty(), "TLS is hooked on evidence only");
}

#[test]
fn a_library_loaded_later_is_hooked_at_the_handshake_the_kernel_held() {
    let processes = FakeProcesses::with(&[(90, "python3", &[PYTHON])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    discovery.watch(&mut probes, 90).unwrap();
    assert!(
        probes.looked_at.is_empty(),
        "nothing hooked: its handshake will be held"
    );
    processes.map(90, LIBSSL);
    discovery
        .on_events(&mut probes, &[held_hello(90, 1_000)], &|| 3_001_000)
        .unwrap();
    assert_eq!(probes.hooked_stack(90, Path::new(LIBSSL)), Some("openssl"));
    assert_eq!(probes.looked_at, BTreeSet::from([90]));
    assert_eq!(probes.resumed, [90]);
    assert_eq!(discovery.take_hook_latencies(), vec![0.003]);
}

#[test]
fn a_handshake_with_nothing_to_hook_is_looked_at_and_continued_all_the_same() {
    let processes = FakeProcesses::with(&[(91, "deno", &["/usr/bin/deno"])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    discovery.watch(&mut probes, 91).unwrap();
    discovery
        .on_events(&mut probes, &[held_hello(91, 0)], &|| 0)
        .unwrap();
    assert_eq!(probes.looked_at, BTreeSet::from([91]), "not held again");
    assert_eq!(probes.resumed, [91]);
    assert!(discovery.take_hook_latencies().is_empty());
}

#[test]
fn under_all_only_a_handshake_with_an_llm_host_hooks_and_a_new_program_starts_over() {
    let processes = FakeProcesses::with(&[(92, "python3", &[PYTHON, LIBSSL])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(scopes(&[], true), &processes);
    discovery.watch(&mut probes, 92).unwrap();
    discovery
        .on_events(&mut probes, &[exec(92, "python3", true, 0)], &|| 0)
        .unwrap();
    discovery.look(&mut probes);
    assert!(probes.hooked.is_empty(), "no evidence, no hooks");
    assert!(probes.watched.is_empty(), "--all needs no map entries");
    assert_eq!(discovery.tls(), [(None, 1)]);

    // The kernel reports only handshakes with an LLM API host under --all.
    discovery
        .on_events(&mut probes, &[held_hello(92, 0)], &|| 0)
        .unwrap();
    assert_eq!(probes.hooked_stack(92, Path::new(LIBSSL)), Some("openssl"));
    assert_eq!(probes.resumed, [92]);
    discovery.look(&mut probes);
    assert_eq!(discovery.tls(), [(Some("openssl"), 1)]);

    // After an exec the new program must show its own evidence.
    probes.hooked.clear();
    discovery
        .on_events(&mut probes, &[exec(92, "python3", true, 1)], &|| 1)
        .unwrap();
    discovery.look(&mut probes);
    assert!(probes.hooked.is_empty());
}

#[test]
fn socket_data_is_captured_while_a_watched_process_uses_tcp() {
    let processes = FakeProcesses::with(&[(100, "python3", &[PYTHON]), (101, "curl", &[])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    discovery.watch(&mut probes, 100).unwrap();
    discovery.watch(&mut probes, 101).unwrap();
    assert!(!probes.sockets_captured, "idle processes cost no one");

    // The kernel held curl at its connect: attached before it goes on.
    let start = KernelEvent::TcpStarting {
        pid: 101,
        held: true,
    };
    discovery.on_events(&mut probes, &[start], &|| 0).unwrap();
    assert!(probes.sockets_captured);
    assert_eq!(probes.resumed, [101]);

    // Its fork may share its sockets; the exit of both ends the need, at
    // the next look.
    processes.start(102, "curl", &[]);
    let fork = KernelEvent::Forked { pid: 102, at: 1 };
    let exit = KernelEvent::ProcessExited { pid: 101, at: 2 };
    discovery
        .on_events(&mut probes, &[fork, exit], &|| 2)
        .unwrap();
    discovery.look(&mut probes);
    assert!(probes.sockets_captured, "the child may use them");
    let exit = KernelEvent::ProcessExited { pid: 102, at: 3 };
    discovery.on_events(&mut probes, &[exit], &|| 3).unwrap();
    assert!(probes.sockets_captured, "detached at looks, not at once");
    discovery.look(&mut probes);
    assert!(probes.sockets_draining);
    // A process that started TCP as the kernel was told to hold again.
    let start = KernelEvent::TcpStarting {
        pid: 100,
        held: false,
    };
    discovery.on_events(&mut probes, &[start], &|| 4).unwrap();
    discovery.look(&mut probes);
    assert!(probes.sockets_captured && !probes.sockets_draining);
    let exit = KernelEvent::ProcessExited { pid: 100, at: 5 };
    discovery.on_events(&mut probes, &[exit], &|| 5).unwrap();
    discovery.look(&mut probes);
    discovery.look(&mut probes);
    assert!(!probes.sockets_captured, "two looks without a user");
}

#[test]
fn a_process_found_with_tcp_sockets_or_in_a_shells_job_is_captured_at_once() {
    let processes = FakeProcesses::with(&[
        (110, "vllm", &[PYTHON]),
        (111, "python3", &[PYTHON]),
        (112, "python3", &[PYTHON]),
    ]);
    processes.change(110, |p| p.has_tcp_socket = true);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(Scopes::default(), &processes);
    discovery.watch(&mut probes, 110).unwrap();
    assert!(probes.sockets_captured, "a server listening already");
    discovery
        .on_events(
            &mut probes,
            &[KernelEvent::ProcessExited { pid: 110, at: 0 }],
            &|| 0,
        )
        .unwrap();
    discovery.look(&mut probes);
    discovery.look(&mut probes);
    assert!(!probes.sockets_captured);

    // A shell's job started by a watched process can be held; one started
    // by an unwatched shell cannot, so its sockets are captured from now.
    discovery.watch(&mut probes, 111).unwrap();
    processes.change(112, |p| p.terminal_parent = Some(111));
    discovery.watch(&mut probes, 112).unwrap();
    assert!(!probes.sockets_captured);
    processes.start(113, "python3", &[PYTHON]);
    processes.change(113, |p| p.terminal_parent = Some(1));
    discovery
        .on_events(&mut probes, &[exec(113, "python3", true, 0)], &|| 0)
        .unwrap();
    assert!(probes.sockets_captured);
}

#[test]
fn under_all_socket_data_is_always_captured() {
    let processes = FakeProcesses::with(&[(120, "sshd", &[])]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(scopes(&[], true), &processes);
    discovery.arm(&mut probes).unwrap();
    assert!(probes.sockets_captured);
    discovery.look(&mut probes);
    assert!(probes.sockets_captured);
}

#[test]
fn under_all_a_program_exe_names_is_hooked_from_its_exec() {
    let processes = FakeProcesses::with(&[
        (130, "llama-server", &["/usr/bin/llama-server", LIBSSL]),
        (131, "python3", &[PYTHON, LIBSSL]),
    ]);
    let mut probes = FakeProbes::default();
    let mut discovery = Discovery::new(scopes(&["llama-server"], true), &processes);
    discovery.arm(&mut probes).unwrap();
    assert_eq!(probes.hooked_stack(130, Path::new(LIBSSL)), Some("openssl"));
    assert_eq!(probes.hooked_stack(131, Path::new(LIBSSL)), None);
    // A new one, from its exec; an exec into another program starts over.
    processes.start(132, "llama-server", &["/usr/bin/llama-server", LIBSSL]);
    discovery
        .on_events(&mut probes, &[exec(132, "llama-server", true, 0)], &|| 0)
        .unwrap();
    assert_eq!(probes.hooked_stack(132, Path::new(LIBSSL)), Some("openssl"));
    discovery.look(&mut probes);
    assert_eq!(discovery.tls(), [(None, 1), (Some("openssl"), 2)]);
}
