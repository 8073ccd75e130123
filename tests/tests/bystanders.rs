//! End-to-end: what llmtap costs the processes it does not watch. Its TLS
//! hooks are placed in the watched processes alone, so a process outside
//! the scope that calls the same libssl runs none of its TLS programs: the
//! kernel's own run counts (`kernel.bpf_stats_enabled`) show it.
//!
//! The socket programs hang on the socket layer's tracepoints, which fire
//! for every socket send and receive on the host; for a process outside the
//! scope they return after one map lookup. What that costs is measured by
//! `cargo xtask bench` (cost to bystanders), not asserted here.

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

/// How many times each TLS program of the agent `pid` has run, by name
/// (as the kernel cuts it, to 15 bytes).
fn tls_program_runs(pid: u32) -> BTreeMap<String, u64> {
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
        if TLS_PROGRAMS
            .iter()
            .any(|tls| tls.starts_with(name) && !name.is_empty())
        {
            *runs.entry(name.to_owned()).or_default() += prog["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    assert!(runs.len() >= 5, "the agent holds no TLS programs: {runs:?}");
    runs
}

/// `calls` streamed calls with curl (the system libssl) by a shell with
/// `$url` and `$body` as its first arguments.
fn curl_script(calls: u32) -> String {
    format!(
        "url=$1; body=$2; tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01; \
         for i in $(seq {calls}); do {CURL_CALL} || exit 1; done"
    )
}

#[test]
fn a_process_outside_the_scope_runs_none_of_the_tls_programs_on_the_same_libssl() {
    let _serial = serial();
    let _stats = BpfStats::enable();
    let server = MockServer::start(true, &[]);
    let cert = server.cert.clone().expect("a TLS server");
    let model = "bystander-tls";
    let args = [server.base_url(), chat_body(model)];
    let mut watched = HeldProcess::shell(&curl_script(1), &args, &cert);
    let (agent, addr) = RunningAgent::attached(&["--pid", &watched.pid().to_string()]);

    let before = tls_program_runs(agent.pid());
    // The same curl and libssl, not watched: five TLS calls and more.
    let mut bystander = Command::new("sh");
    bystander
        .arg("-c")
        .arg(curl_script(5))
        .arg("sh")
        .args(&args);
    client_env(&mut bystander, Some(&cert));
    let status = bystander.status().expect("run the bystander curl");
    assert!(status.success(), "the bystander's calls failed");
    let after_bystander = tls_program_runs(agent.pid());
    assert_eq!(
        after_bystander, before,
        "TLS programs ran for a process llmtap does not watch"
    );

    // The watched process's call runs them: the counts can move.
    watched.run();
    let counted = scrape_until(addr, Duration::from_secs(10), |text| {
        calls_counted(text, model) == Some(1.0)
    });
    assert_eq!(calls_counted(&counted, model), Some(1.0), "{counted}");
    let after_watched = tls_program_runs(agent.pid());
    let total = |runs: &BTreeMap<String, u64>| runs.values().sum::<u64>();
    assert!(
        total(&after_watched) > total(&before),
        "the watched call ran no TLS program: {after_watched:?}"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}
