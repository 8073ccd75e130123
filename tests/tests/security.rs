//! Security (issue 8): the agent runs with the least capabilities that work
//! and names the one missing; no prompt or completion text reaches any of
//! its outputs unless `--capture-content` asks for it; and it never writes
//! into the process it watches. (`/metrics` behind a bearer token and TLS
//! is tested in `agent_export.rs` and `export.rs`.)

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llmtap_tests::llamacpp::LlamaServer;
use llmtap_tests::prometheus::{http_get, scraped};
use llmtap_tests::rotel::Rotel;
use llmtap_tests::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Capabilities

/// What the agent needs on this kernel (6.18) for everything: since Linux
/// 6.15 a uprobe needs CAP_SYS_ADMIN (CAP_PERFMON no longer does), and
/// CAP_SYS_ADMIN also covers what CAP_BPF and CAP_PERFMON allow;
/// CAP_SYS_PTRACE reads other processes' executables and roots.
const LEAST: &str = "+sys_admin,+sys_ptrace";
/// Enough for the plaintext (socket) capture, not for TLS uprobes.
const PLAINTEXT_ONLY: &str = "+bpf,+perfmon,+sys_ptrace";

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// A command prefix running the program as root with only `caps`: the
/// bounding set caps what exec grants root, and the inheritable set is
/// emptied so nothing comes back through it. This is how a container runs
/// with `capabilities: {drop: [ALL], add: [...]}`.
fn with_only(caps: &str) -> [String; 3] {
    [
        "setpriv".into(),
        format!("--bounding-set=-all,{caps}"),
        "--inh-caps=-all".into(),
    ]
}

/// Without CAP_SYS_ADMIN the agent cannot mount tracefs, which it needs to
/// attach tracepoints: an administrator mounts it once, as this does.
fn mount_tracefs() {
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let status = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting tracefs");
    }
}

/// Runs the `openai` Python SDK client against the mock server (over TLS
/// or not) under llmtap running as root with only `caps`; checks the one
/// call the agent printed against the client's report. Returns the run and
/// the agent's effective capabilities, which the client (the agent's
/// child) read from /proc before its call.
fn one_call_with_only(caps: &str, tls: bool) -> (AgentRun, u64) {
    mount_tracefs();
    let server = MockServer::start(tls, &["--chunks", "8", "--chunk-delay-ms", "10"]);
    let dir = tempfile::tempdir().unwrap();
    let caps_file = dir.path().join("caps");
    let script = workspace_root().join("tests/clients/openai_stream.py");
    let report = ClientReport::new();
    let (script, url, output) = (
        script.display().to_string(),
        server.base_url(),
        report.arg(),
    );
    let caps_arg = caps_file.display().to_string();
    let command = [
        "sh",
        "-c",
        r#"grep CapEff /proc/$PPID/status > "$0"; exec "$@""#,
        &caps_arg,
        "python3",
        &script,
        &url,
        "--output",
        &output,
    ];
    let wrapper = with_only(caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let run = run_agent_on_command_under(&wrapper, &[], &command, server.cert.as_deref());
    assert!(run.status.success(), "{}", run.stderr);

    let client = report.calls().remove(0);
    let calls = call_lines(&run.lines);
    assert_eq!(calls.len(), 1, "{}", run.stderr);
    assert_eq!(
        calls[0]["output_tokens"],
        client["usage"]["completion_tokens"]
    );
    assert_eq!(calls[0]["response_id"], client["id"]);

    let noted = std::fs::read_to_string(&caps_file).expect("the client noted the agent's caps");
    let hex = noted.trim().strip_prefix("CapEff:").expect("CapEff line");
    let effective = u64::from_str_radix(hex.trim(), 16).expect("hex capability set");
    (run, effective)
}

#[test]
fn with_only_cap_sys_admin_and_cap_sys_ptrace_a_tls_call_is_captured() {
    let _serial = serial();
    let (run, caps) = one_call_with_only(LEAST, true);
    assert_eq!(caps, 1 << CAP_SYS_ADMIN | 1 << CAP_SYS_PTRACE);
    let opened = run
        .lines
        .iter()
        .find(|l| l["type"] == "open")
        .expect("open");
    assert_eq!(opened["transport"], "tls", "seen through the TLS uprobes");
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
}

#[test]
fn without_cap_sys_admin_plaintext_is_captured_and_the_tls_refusal_said_once() {
    let _serial = serial();
    let (run, caps) = one_call_with_only(PLAINTEXT_ONLY, false);
    assert_eq!(caps & (1 << CAP_SYS_ADMIN), 0);
    // Every TLS library is refused alike (libssl, libgnutls): one line.
    let refusals = run
        .stderr
        .lines()
        .filter(|l| l.contains("uprobes need CAP_SYS_ADMIN"))
        .count();
    assert_eq!(refusals, 1, "{}", run.stderr);
}

#[test]
fn a_missing_capability_is_one_line_naming_it() {
    for (caps, missing) in [
        ("+perfmon,+sys_ptrace", "missing: CAP_BPF)"),
        ("+bpf,+sys_ptrace", "missing: CAP_PERFMON)"),
        ("+bpf,+perfmon", "missing: CAP_SYS_PTRACE)"),
        ("+sys_admin", "missing: CAP_SYS_PTRACE)"),
    ] {
        let [setpriv, bounding, inheritable] = with_only(caps);
        let output = Command::new(setpriv)
            .args([bounding, inheritable])
            .arg(llmtap_bin())
            .args(["--metrics-addr", "127.0.0.1:0", "--", "true"])
            .output()
            .expect("run setpriv");
        assert_one_line_error(&output, missing);
    }
}

#[test]
fn as_another_user_reading_tracefs_also_needs_cap_dac_read_search() {
    let _serial = serial();
    mount_tracefs();
    let (_dir, binary) = llmtap_for_any_user();
    // As nobody: ambient capabilities carry the set across exec.
    let as_nobody = |caps: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps=-all,{caps}"))
            .arg(format!("--ambient-caps=-all,{caps}"))
            .arg(&binary)
            .args(["--metrics-addr", "127.0.0.1:0", "--", "true"])
            .output()
            .expect("run setpriv")
    };
    assert_one_line_error(&as_nobody(LEAST), "add CAP_DAC_READ_SEARCH");
    let output = as_nobody(&format!("{LEAST},+dac_read_search"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Content: a secret marker in the prompt, echoed by a real model

const MARKER: &str = "ZX-SECRET-4417";
/// SmolLM2 at temperature 0 echoes the marker: it is in the completion too.
const PROMPT: &str = "Repeat exactly: ZX-SECRET-4417";

/// Everything one agent run put out while it watched one call.
struct Outputs {
    /// `--print`'s JSON lines.
    stdout: String,
    /// The log.
    stderr: String,
    /// A scrape of `/metrics` once the call was counted.
    metrics: String,
    /// What the OTLP receiver printed of the spans it got.
    otlp: String,
    /// The completion the client received.
    completion: String,
}

/// The `openai` SDK client, set up and waiting for a line on stdin before
/// its call.
fn held_client(server: &LlamaServer, report: &ClientReport) -> Child {
    let mut client = Command::new("python3");
    client
        .arg(workspace_root().join("tests/clients/openai_stream.py"))
        .arg(server.base_url())
        .args([
            "--model",
            "smollm2",
            "--prompt",
            PROMPT,
            "--max-tokens",
            "24",
        ])
        .args(["--temperature", "0", "--seed", "42", "--wait-for-stdin"])
        .arg("--output")
        .arg(&report.path)
        .stdin(Stdio::piped());
    client_env(&mut client, None);
    client.spawn().expect("start the client")
}

/// Lets a held client make its call; returns the completion it received.
fn release(mut client: Child, report: &ClientReport) -> String {
    writeln!(client.stdin.take().expect("piped"), "go").expect("the client waits");
    assert!(client.wait().unwrap().success(), "the client failed");
    let call = report.calls().remove(0);
    call["text"].as_str().expect("text").to_owned()
}

/// One call watched by llmtap with every output on: `--print` when asked
/// (else the per-call log line), `/metrics`, OTLP to the third-party
/// receiver. A second watched process (`sleep`) keeps the agent up after
/// the call, for the scrape.
fn watched_call(server: &LlamaServer, extra: &[&str]) -> Outputs {
    let rotel = Rotel::start();
    let endpoint = format!("http://{}", rotel.grpc_addr);
    let report = ClientReport::new();
    let client = held_client(server, &report);
    let mut keeper = Command::new("sleep").arg("120").spawn().unwrap();
    let (client_pid, keeper_pid) = (client.id().to_string(), keeper.id().to_string());
    let mut args = vec!["--pid", &client_pid, "--pid", &keeper_pid];
    args.extend(["--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc"]);
    args.extend(extra);
    let mut agent = RunningAgent::start(&args);
    agent.wait_for_log("watching", Duration::from_secs(20));
    let metrics_addr = agent.metrics_addr();
    let completion = release(client, &report);

    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (status, text) = http_get(metrics_addr, "/metrics").expect("/metrics");
        assert_eq!(status, 200);
        let counted = scraped(&text, "llm_request_duration_seconds_count", &[]);
        if counted == Some(1.0) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let run = agent.stop();
    let _ = keeper.kill();
    let _ = keeper.wait();
    let otlp = rotel.wait_for_output(&["gen_ai.usage.output_tokens"], Duration::from_secs(15));
    let stdout: Vec<String> = run.lines.iter().map(Value::to_string).collect();
    Outputs {
        stdout: stdout.join("\n"),
        stderr: run.stderr,
        metrics,
        otlp,
        completion,
    }
}

impl Outputs {
    /// Fails unless every output shows the call: an output that missed it
    /// would hide nothing.
    fn assert_call_seen(&self, printed: bool) {
        assert_eq!(
            scraped(&self.metrics, "llm_request_duration_seconds_count", &[]),
            Some(1.0),
            "{}",
            self.metrics
        );
        assert!(
            self.otlp.contains("gen_ai.usage.output_tokens"),
            "{}",
            self.otlp
        );
        if printed {
            assert!(self.stdout.contains(r#""type":"call""#), "{}", self.stdout);
        } else {
            assert!(self.stderr.contains("openai chat"), "{}", self.stderr);
        }
    }

    /// The outputs holding the marker, by name.
    fn with_marker(&self) -> Vec<&'static str> {
        [
            ("stdout", &self.stdout),
            ("log", &self.stderr),
            ("metrics", &self.metrics),
            ("otlp", &self.otlp),
        ]
        .into_iter()
        .filter(|(_, text)| text.contains(MARKER))
        .map(|(name, _)| name)
        .collect()
    }
}

#[test]
fn no_prompt_or_completion_text_leaves_the_agent_unless_asked() {
    let _serial = serial();
    let server = LlamaServer::start();

    // The process alone, for the completion it gets unobserved.
    let report = ClientReport::new();
    let alone = release(held_client(&server, &report), &report);
    assert!(
        alone.contains(MARKER),
        "the model must echo the marker for this test to mean anything: {alone:?}"
    );

    let printed = watched_call(&server, &["--print"]);
    printed.assert_call_seen(true);
    assert_eq!(
        printed.with_marker(),
        Vec::<&str>::new(),
        "{}",
        printed.stdout
    );

    let logged = watched_call(&server, &[]);
    logged.assert_call_seen(false);
    assert_eq!(
        logged.with_marker(),
        Vec::<&str>::new(),
        "{}",
        logged.stderr
    );

    let asked = watched_call(&server, &["--print", "--capture-content"]);
    asked.assert_call_seen(true);
    // In the call record and the read/write previews, and in the spans'
    // content events; never in metrics (labels) or the log.
    assert_eq!(asked.with_marker(), ["stdout", "otlp"]);
    let call: Value = asked
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["type"] == "call")
        .unwrap();
    assert!(call["content"]["prompt"].as_str().unwrap().contains(MARKER));
    assert_eq!(call["content"]["completion"].as_str(), Some(alone.as_str()));
    assert!(
        asked.otlp.contains("gen_ai.content.completion"),
        "{}",
        asked.otlp
    );

    // Watched or not, the process got the same answer: the agent changed
    // nothing it read or wrote.
    for watched in [&printed, &logged, &asked] {
        assert_eq!(watched.completion, alone);
    }
}

// ---------------------------------------------------------------------------
// The agent never writes into the observed process

/// BPF helpers that change a process or its memory: writing user memory,
/// changing a probed function's return value, signalling a thread.
const WRITING_HELPERS: [(i32, &str); 3] = [
    (36, "bpf_probe_write_user"),
    (58, "bpf_override_return"),
    (117, "bpf_send_signal_thread"),
];
/// `bpf_send_signal`: allowed with SIGSTOP alone, which holds a watched
/// process before its first TLS handshake until its TLS library is hooked
/// (docs/privileges.md); user space continues it.
const SEND_SIGNAL: i32 = 109;
const SIGSTOP: i32 = 19;
/// Helpers the capture cannot work without: seeing them proves the scan
/// reads the programs' calls.
const READING_HELPERS: [(i32, &str); 2] =
    [(112, "bpf_probe_read_user"), (131, "bpf_ringbuf_reserve")];

/// A helper call in the compiled BPF programs: its id, and the constant
/// the instruction before it put in r1 (the first argument), if it did.
struct HelperCall {
    id: i32,
    first_argument: Option<i32>,
}

/// The helper calls in the agent's compiled BPF programs. A call
/// instruction is opcode 0x85; source register 0 calls a helper (its id in
/// the immediate), 1 another BPF function, 2 a kernel function (kfunc).
/// Returns the helper calls and the number of kfunc calls.
fn helper_calls() -> (Vec<HelperCall>, usize) {
    use object::{Object, ObjectSection, SectionKind};
    let elf = object::File::parse(llmtap_ebpf::object()).expect("the BPF object is ELF");
    let (mut helpers, mut kfuncs) = (Vec::new(), 0);
    for section in elf.sections().filter(|s| s.kind() == SectionKind::Text) {
        let code = section.data().expect("section data");
        let mut at = 0;
        let mut r1_constant = None;
        while at + 8 <= code.len() {
            let insn = &code[at..at + 8];
            let imm = i32::from_le_bytes(insn[4..8].try_into().unwrap());
            match (insn[0], insn[1] >> 4) {
                (0x85, 0) => helpers.push(HelperCall {
                    id: imm,
                    first_argument: r1_constant,
                }),
                (0x85, 2) => kfuncs += 1,
                _ => {}
            }
            // `r1 = imm` (mov64 of a constant into register 1).
            r1_constant = (insn[0] == 0xb7 && insn[1] & 0x0f == 1).then_some(imm);
            // A 64-bit immediate load takes two slots.
            at += if insn[0] == 0x18 { 16 } else { 8 };
        }
    }
    (helpers, kfuncs)
}

#[test]
fn the_bpf_programs_call_no_helper_that_writes_into_a_process() {
    let (helpers, kfuncs) = helper_calls();
    let called = |id| helpers.iter().any(|call| call.id == id);
    for (id, name) in READING_HELPERS {
        assert!(called(id), "no {name} call found: the scan is broken");
    }
    for (id, name) in WRITING_HELPERS {
        assert!(!called(id), "the BPF programs call {name}");
    }
    let signals: Vec<_> = helpers
        .iter()
        .filter(|call| call.id == SEND_SIGNAL)
        .map(|call| call.first_argument)
        .collect();
    assert!(
        !signals.is_empty(),
        "no bpf_send_signal: the handshake hold is gone, update this test"
    );
    assert!(
        signals.iter().all(|signal| *signal == Some(SIGSTOP)),
        "bpf_send_signal with {signals:?}: only SIGSTOP is allowed"
    );
    // A kfunc could write too; the programs use none.
    assert_eq!(kfuncs, 0);
}
