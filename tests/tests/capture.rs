//! End-to-end: the eBPF capture sees real clients' TLS plaintext and
//! plaintext socket traffic as ordered, timestamped per-connection streams.
//!
//! Each test runs the real agent (as root, real kernel) around a real client
//! talking to the mock LLM server, and checks the captured bytes against
//! the server's own log of what it sent.

use std::process::Command;
use std::time::{Duration, Instant};

use llmtap_tests::*;

/// Server spacing between chunks; the agent must reproduce it within 5 ms.
const CHUNK_DELAY_MS: &str = "40";
const SPACING_TOLERANCE_NS: u64 = 5_000_000;

fn streaming_server(tls: bool) -> MockServer {
    MockServer::start(
        tls,
        &[
            "--chunks",
            "8",
            "--chunk-delay-ms",
            CHUNK_DELAY_MS,
            "--first-token-delay-ms",
            "60",
        ],
    )
}

fn chat_body(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"Say hi"}}]}}"#
    )
}

/// One curl call; see [`twice`].
fn curl_command(server: &MockServer) -> Vec<String> {
    vec![
        "curl".into(),
        "-sS".into(),
        "-N".into(),
        "-o".into(),
        "/dev/null".into(),
        "--http1.1".into(),
        "-H".into(),
        "content-type: application/json".into(),
        "-d".into(),
        chat_body("gpt-test"),
        format!("{}/v1/chat/completions", server.base_url()),
    ]
}

/// `command` run twice in a row by a shell (the agent follows its forks).
fn twice(command: Vec<String>) -> Vec<String> {
    let quoted: Vec<String> = command
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let line = quoted.join(" ");
    vec!["/bin/sh".into(), "-c".into(), format!("{line} && {line}")]
}

fn python_client(server: &MockServer, extra: &[&str]) -> Vec<String> {
    let script = workspace_root().join("tests/clients/openai_stream.py");
    let mut command = vec![
        "python3".into(),
        script.display().to_string(),
        server.base_url(),
        "--model".into(),
        "gpt-test".into(),
        // The report is not needed here, and must not share the agent's stdout.
        "--output".into(),
        "/dev/null".into(),
    ];
    command.extend(extra.iter().map(|s| s.to_string()));
    command
}

fn node_client(server: &MockServer) -> Vec<String> {
    let script = workspace_root().join("tests/clients/openai_stream.mjs");
    vec![
        "node".into(),
        script.display().to_string(),
        server.base_url(),
        "--model".into(),
        "gpt-test".into(),
        "--calls".into(),
        "2".into(),
        "--output".into(),
        "/dev/null".into(),
    ]
}

/// Runs `client` under the agent and checks its two chat-completions calls,
/// each on its own connection: request seen, response byte-exact. The
/// server's spacing is checked on the second call: a fresh node or Python
/// process is busy compiling and importing during its first stream and
/// reads late, which the agent reports faithfully but is not what is tested.
fn check_captured_stream(tls: bool, client: fn(&MockServer) -> Vec<String>) {
    let _serial = serial();
    let server = streaming_server(tls);
    let command = client(&server);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = run_agent_on_command_in_real_time(&[], &command, server.cert.as_deref());
    assert!(run.status.success(), "agent/client failed: {}", run.stderr);

    let connections = connections(&run.lines);
    let chat = chat_connections(&connections);
    assert_eq!(
        chat.len(),
        2,
        "two chat connections expected, agent printed: {:#?}",
        run.lines
    );
    let transport = if tls { "tls" } else { "tcp" };
    for conn in &chat {
        assert_eq!(conn.open["transport"], transport, "{:?}", conn.open);
        assert_eq!(conn.open["side"], "client");
        assert_eq!(conn.open["peer"], server.addr.to_string());
        let request = String::from_utf8_lossy(&conn.bytes(true)).into_owned();
        assert!(
            request.contains("gpt-test"),
            "request body captured: {request}"
        );
    }
    if tls {
        assert_no_tls_ciphertext(&connections);
    }
    let sent = server.sent();
    assert_matches_server(chat[0], &sent, None);
    assert_matches_server(chat[1], &sent, Some(SPACING_TOLERANCE_NS));
}

#[test]
fn curl_over_tls_is_captured_through_ssl_read() {
    check_captured_stream(true, |s| twice(curl_command(s)));
}

#[test]
fn curl_over_plain_http_is_captured_through_syscalls() {
    check_captured_stream(false, |s| twice(curl_command(s)));
}

#[test]
fn python_openai_sdk_over_tls_is_captured_through_ssl_read_ex() {
    check_captured_stream(true, |s| python_client(s, &["--calls", "2"]));
}

#[test]
fn python_openai_sdk_over_plain_http_is_captured_through_syscalls() {
    check_captured_stream(false, |s| python_client(s, &["--calls", "2"]));
}

#[test]
fn node_openai_sdk_over_tls_is_captured_in_nodes_static_openssl() {
    check_captured_stream(true, node_client);
}

#[test]
fn node_openai_sdk_over_plain_http_is_captured_through_syscalls() {
    check_captured_stream(false, node_client);
}

#[test]
fn two_concurrent_streams_in_one_process_stay_separate() {
    let _serial = serial();
    let server = streaming_server(true);
    let command = python_client(&server, &["--two-threads"]);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = run_agent_on_command(&[], &command, server.cert.as_deref());
    assert!(run.status.success(), "agent/client failed: {}", run.stderr);
    let connections = connections(&run.lines);
    let chat = chat_connections(&connections);
    assert_eq!(chat.len(), 2, "two chat connections expected");
    // Both streams overlapped in time, and each is byte-exact to its own
    // server connection.
    let span = |c: &CapturedConnection| (c.chunks[0].start_ns, c.chunks.last().unwrap().end_ns);
    let (a, b) = (span(chat[0]), span(chat[1]));
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "the two streams did not overlap: {a:?} {b:?}"
    );
    let sent = server.sent();
    for conn in chat {
        // Spacing is not checked: the two threads take turns holding
        // Python's GIL, so each reads late whenever the other is busy.
        assert_matches_server(conn, &sent, None);
    }
}

#[test]
fn a_client_shorter_than_300ms_is_fully_captured_when_launched_by_the_agent() {
    let _serial = serial();
    let server = MockServer::start(
        true,
        &[
            "--chunks",
            "3",
            "--chunk-delay-ms",
            "5",
            "--first-token-delay-ms",
            "5",
        ],
    );
    let command = curl_command(&server);
    let started = Instant::now();
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = run_agent_on_command_in_real_time(&[], &command, server.cert.as_deref());
    assert!(run.status.success(), "{}", run.stderr);
    let connections = connections(&run.lines);
    let conn = connections
        .values()
        .find(|c| c.bytes(true).starts_with(b"POST /v1/chat/completions"))
        .expect("the short client's request was captured");
    assert_matches_server(conn, &server.sent(), Some(SPACING_TOLERANCE_NS));
    assert!(conn.closed, "its close was captured too");
    // The client process itself: exec to exit well under 300 ms.
    let lifetime = conn.chunks.last().unwrap().end_ns - conn.chunks[0].start_ns;
    assert!(lifetime < 300_000_000, "client ran {lifetime} ns");
    assert!(started.elapsed() < Duration::from_secs(10));
    let left = llmtap_bpf_objects_left(Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "left loaded after the agent exited: {left:?}"
    );
}

#[test]
fn attaching_by_pid_captures_a_running_client_and_detaches_cleanly() {
    let _serial = serial();
    let before = llmtap_bpf_objects_left(Duration::from_secs(5));
    assert!(
        before.is_empty(),
        "llmtap BPF objects loaded before the test: {before:?}"
    );
    let server = streaming_server(true);
    // The client starts first, makes one warm-up call (a cold process reads
    // its first stream late, which is not what is measured here), and
    // waits for a line on stdin before the call under test.
    let mut client = Command::new(REAL_TIME[0]);
    client
        .args(&REAL_TIME[1..])
        .args(python_client(&server, &["--warm-up", "--wait-for-stdin"]))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    client_env(&mut client, server.cert.as_deref());
    let mut client = client.spawn().expect("start python client");
    let pid = client.id().to_string();

    let mut agent = RunningAgent::start(&[
        "--pid",
        &pid,
        "--print",
        "--print-payload",
        "--capture-content",
    ]);
    agent.wait_for_log("watching", Duration::from_secs(20));
    assert!(
        !llmtap_bpf_objects().is_empty(),
        "programs are loaded while attached"
    );
    use std::io::Write;
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(client.wait().unwrap().success());
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);

    let connections = connections(&run.lines);
    let conn = connections
        .values()
        .find(|c| c.bytes(true).starts_with(b"POST /v1/chat/completions"))
        .expect("the running client's call was captured");
    assert_matches_server(conn, &server.sent(), Some(SPACING_TOLERANCE_NS));
    let left = llmtap_bpf_objects_left(Duration::from_secs(5));
    assert!(left.is_empty(), "left loaded after SIGINT: {left:?}");
}

#[test]
fn a_pid_that_does_not_exist_is_one_clear_error() {
    let output = Command::new(llmtap_bin())
        .args(["--pid", "999999999"])
        .output()
        .unwrap();
    assert_one_line_error(&output, "no process with PID 999999999");
}

#[test]
fn without_privileges_the_error_says_to_use_root() {
    let (_dir, binary) = llmtap_for_any_user();
    // setpriv (util-linux) drops to nobody with no capabilities.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&binary)
        .args(["--pid", &std::process::id().to_string()])
        .output()
        .unwrap();
    assert_one_line_error(&output, "needs root");
}

#[test]
fn a_process_without_tls_is_a_warning_not_an_error() {
    let _serial = serial();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let mut agent = RunningAgent::start(&["--pid", &pid]);
    agent.wait_for_log("watching", Duration::from_secs(20));
    let run = agent.stop();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("has no TLS library loaded"),
        "{}",
        run.stderr
    );
}
