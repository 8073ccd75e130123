//! End-to-end: what llmtap costs the processes it does not watch. Its TLS
//! hooks are placed in the watched processes alone, so a process outside
//! the scope that calls the same libssl runs none of its TLS programs: the
//! kernel's own run counts (`kernel.bpf_stats_enabled`) show it.
//!
//! The socket data programs hang on the socket layer's tracepoints, which
//! fire for every socket send and receive on the host, so they are attached
//! only while a watched process uses TCP: with the watched process idle, a
//! bystander's traffic runs none of them either. What the rest costs is
//! measured by `cargo xtask bench` (cost to bystanders), not asserted here.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use llmtap_tests::*;
use serde_json::Value;

/// The programs that run inside TLS library calls (uprobes).
const TLS_PROGRAMS: [&str; 8] = [
    "ssl_write_entry",
    "ssl_write_ex_entry",
    "ssl_read_entry",
    "ssl_read_ex_entry",
    "ssl_return",
    "go_tls_write_entry",
    "go_tls_read_entry",
    "go_tls_return",
];

/// The programs on every socket send and receive of the host.
const SOCKET_DATA_PROGRAMS: [&str; 2] = ["socket_sent", "socket_received"];

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` on while it lives; as it was afterwards.
struct BpfStats {
    was: String,
}

impl BpfStats {
    fn enable() -> BpfStats {
        let was = std::fs::read_to_string(STATS_SYSCTL).expect("bpf_stats_enabled");
        std::fs::write(STATS_SYSCTL, "1").expect("enable kernel.bpf_stats_enabled");
        BpfStats { was }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, self.was.trim());
    }
}

/// How many times each of the agent `pid`'s programs named in `programs`
/// has run, by name (as the kernel cuts it, to 15 bytes).
fn program_runs(pid: u32, programs: &[&str]) -> BTreeMap<String, u64> {
    let mut runs = BTreeMap::new();
    for (kind, id) in bpf_objects_of(pid) {
        if kind != "prog" {
            continue;
        }
        let out = Command::new("bpftool")
            .args(["prog", "show", "id", &id, "--json"])
            .output()
            .expect("bpftool (installed by cargo xtask setup)");
        let prog: Value = serde_json::from_slice(&out.stdout).expect("bpftool prints JSON");
        let name = prog["name"].as_str().unwrap_or_default();
        if programs
            .iter()
            .any(|program| program.starts_with(name) && !name.is_empty())
        {
            *runs.entry(name.to_owned()).or_default() += prog["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    assert_eq!(
        runs.len(),
        programs.len(),
        "the agent does not hold all of {programs:?}: {runs:?}"
    );
    runs
}

fn total(runs: &BTreeMap<String, u64>) -> u64 {
    runs.values().sum()
}

/// `calls` streamed calls with curl (the system libssl) to each server
/// (`url` and `body` pairs) by a shell given them as its arguments.
fn curl_script(calls: u32) -> String {
    format!(
        "tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01; \
         while [ $# -gt 0 ]; do url=$1; body=$2; shift 2; \
         for i in $(seq {calls}); do {CURL_CALL} || exit 1; done; done"
    )
}

#[test]
fn a_process_outside_the_scope_runs_none_of_the_tls_or_socket_data_programs() {
    let _serial = serial();
    let _stats = BpfStats::enable();
    let tls_server = MockServer::start(true, &[]);
    let plain_server = MockServer::start(false, &[]);
    let cert = tls_server.cert.clone().expect("a TLS server");
    let (tls_model, plain_model) = ("bystander-tls", "bystander-plain");
    let args = [
        tls_server.base_url(),
        chat_body(tls_model),
        plain_server.base_url(),
        chat_body(plain_model),
    ];
    // Idle until told to go: no socket, nothing for llmtap to capture.
    let mut watched = HeldProcess::shell(&curl_script(1), &args, &cert);
    let (agent, addr) = RunningAgent::attached(&["--pid", &watched.pid().to_string()]);

    let runs = || {
        (
            program_runs(agent.pid(), &TLS_PROGRAMS),
            program_runs(agent.pid(), &SOCKET_DATA_PROGRAMS),
        )
    };
    let before = runs();
    // The same curl and libssl, not watched: TLS and plaintext calls.
    let mut bystander = Command::new("sh");
    bystander
        .arg("-c")
        .arg(curl_script(5))
        .arg("sh")
        .args(&args);
    client_env(&mut bystander, Some(&cert));
    let status = bystander.status().expect("run the bystander curl");
    assert!(status.success(), "the bystander's calls failed");
    let after_bystander = runs();
    assert_eq!(
        after_bystander.0, before.0,
        "TLS programs ran for a process llmtap does not watch"
    );
    assert_eq!(
        after_bystander.1, before.1,
        "socket data programs ran while no watched process used TCP"
    );

    // The watched process's calls run them, from their first bytes: the
    // kernel holds each curl at its connect until they are attached.
    watched.run();
    let counted = scrape_until(addr, Duration::from_secs(10), |text| {
        calls_counted(text, tls_model) == Some(1.0) && calls_counted(text, plain_model) == Some(1.0)
    });
    assert_eq!(calls_counted(&counted, tls_model), Some(1.0), "{counted}");
    assert_eq!(calls_counted(&counted, plain_model), Some(1.0), "{counted}");
    let after_watched = runs();
    assert!(
        total(&after_watched.0) > total(&before.0),
        "the watched call ran no TLS program: {after_watched:?}"
    );
    assert!(
        total(&after_watched.1) > total(&before.1),
        "the watched calls ran no socket data program: {after_watched:?}"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}
