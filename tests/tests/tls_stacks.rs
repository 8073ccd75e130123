//! End-to-end: TLS stacks other than OpenSSL. A small C client on GnuTLS
//! (tests/clients/gnutls_stream.c, built here against libgnutls28-dev) and a
//! Go client on net/http + crypto/tls (tests/clients/go_stream, built here
//! with Debian's golang-go) stream a chat completion from the mock server
//! over TLS; llmtap must see their plaintext, byte-exact, and turn it into
//! one call. A Go binary stripped of symbols is reported unsupported once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use llmtap_tests::prometheus::{http_get, sample_sum};
use llmtap_tests::*;

/// The GnuTLS client, compiled into `dir`.
fn gnutls_client(dir: &tempfile::TempDir) -> PathBuf {
    let binary = dir.path().join("gnutls_stream");
    let status = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&binary)
        .arg(workspace_root().join("tests/clients/gnutls_stream.c"))
        .arg("-lgnutls")
        .status()
        .expect("run cc");
    assert!(
        status.success(),
        "building the GnuTLS client (needs libgnutls28-dev)"
    );
    binary
}

fn server() -> MockServer {
    MockServer::start(
        true,
        &[
            "--chunks",
            "6",
            "--chunk-delay-ms",
            "20",
            "--first-token-delay-ms",
            "40",
        ],
    )
}

fn client_command(binary: &Path, server: &MockServer, model: &str) -> Vec<String> {
    vec![
        binary.display().to_string(),
        server.addr.ip().to_string(),
        server.addr.port().to_string(),
        server.cert.as_ref().expect("TLS").display().to_string(),
        model.to_owned(),
    ]
}

/// Checks that the run captured exactly one chat connection, over TLS,
/// byte-exact to what the server sent and with no ciphertext anywhere, and
/// returns its one call record.
fn the_one_tls_call(run: &AgentRun, server: &MockServer) -> serde_json::Value {
    assert!(run.status.success(), "agent/client failed: {}", run.stderr);
    let connections = connections(&run.lines);
    let chat = chat_connections(&connections);
    assert_eq!(chat.len(), 1, "agent printed: {:#?}", run.lines);
    assert_eq!(chat[0].open["transport"], "tls", "{:?}", chat[0].open);
    assert_no_tls_ciphertext(&connections);
    assert_matches_server(chat[0], &server.sent(), Some(5_000_000));
    let calls = call_lines(&run.lines);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    calls[0].clone()
}

#[test]
fn a_gnutls_client_is_captured_through_gnutls_record_send_and_recv() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = gnutls_client(&dir);
    let server = server();
    let command = client_command(&binary, &server, "gpt-gnutls");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = run_agent_on_command(&[], &command, server.cert.as_deref());
    let call = the_one_tls_call(&run, &server);
    assert_eq!(call["request_model"], "gpt-gnutls");
    assert_eq!(call["http_status"], 200);
    assert_eq!(call["stream"], true);
    assert_eq!(call["error_type"], serde_json::Value::Null);
}

#[test]
fn a_gnutls_client_started_later_is_captured_under_an_exe_scope() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = gnutls_client(&dir);
    let server = server();
    let mut agent = RunningAgent::start(&["--exe", "gnutls_stream"]);
    let addr = agent.metrics_addr();
    agent.wait_for_log("stop with Ctrl-C", Duration::from_secs(30));
    let model = format!("gnutls-exe-{}", std::process::id());
    for _ in 0..3 {
        let command = client_command(&binary, &server, &model);
        let status = Command::new(&command[0])
            .args(&command[1..])
            .status()
            .expect("run the GnuTLS client");
        assert!(status.success());
    }
    let count = || {
        let (_, text) = http_get(addr, "/metrics").expect("GET /metrics");
        sample_sum(
            &text,
            "llm_request_duration_seconds_count",
            &format!("model=\"{model}\""),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while count() < 3.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), 3.0);
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn a_go_client_is_captured_through_crypto_tls_with_its_first_token_time() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_go_client(&dir, "go_stream", false);
    let server = server();
    let report = ClientReport::new();
    let (url, output) = (server.base_url(), report.arg());
    let command = [binary.to_str().unwrap(), &url, "gpt-go", &output];
    let run = run_agent_on_command(&[], &command, server.cert.as_deref());
    let call = the_one_tls_call(&run, &server);
    assert_eq!(call["request_model"], "gpt-go");
    assert_eq!(call["http_status"], 200);
    assert_eq!(call["output_tokens_estimated"], false);
    // The first token: the Read returned it just before the client saw it.
    assert_matches_go_report(&call, &report.path);
    let ttft = call["ttft_s"].as_f64().expect("ttft_s");
    assert!(
        ttft >= 0.040,
        "the server waited 40 ms for the first token: {ttft}"
    );
}

#[test]
fn a_stripped_go_binary_is_reported_unsupported_exactly_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_go_client(&dir, "gostripped", true);
    let server = server();
    let mut agent = RunningAgent::start(&["--exe", "gostripped"]);
    agent.wait_for_log("stop with Ctrl-C", Duration::from_secs(30));
    let report = ClientReport::new();
    for _ in 0..2 {
        let mut client = Command::new(&binary);
        client.args([&server.base_url(), "gpt-go", &report.arg()]);
        client_env(&mut client, server.cert.as_deref());
        assert!(client.status().expect("run the stripped client").success());
    }
    std::thread::sleep(Duration::from_millis(500));
    let run = agent.stop();
    let warnings = run
        .stderr
        .matches("a Go executable without symbols")
        .count();
    assert_eq!(warnings, 1, "{}", run.stderr);
}
