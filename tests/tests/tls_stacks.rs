//! End-to-end: TLS libraries other than OpenSSL. A small C client on GnuTLS
//! (tests/clients/gnutls_stream.c, built here against libgnutls28-dev)
//! streams a chat completion from the mock server over TLS; llmtap must see
//! its plaintext through gnutls_record_send/recv, byte-exact, and turn it
//! into one call, whether it starts the client or finds it by `--exe`.

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

#[test]
fn a_gnutls_client_is_captured_through_gnutls_record_send_and_recv() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = gnutls_client(&dir);
    let server = server();
    let command = client_command(&binary, &server, "gpt-gnutls");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = run_agent_on_command(&[], &command, server.cert.as_deref());
    assert!(run.status.success(), "agent/client failed: {}", run.stderr);

    let connections = connections(&run.lines);
    let chat = chat_connections(&connections);
    assert_eq!(chat.len(), 1, "agent printed: {:#?}", run.lines);
    assert_eq!(chat[0].open["transport"], "tls", "{:?}", chat[0].open);
    assert_no_tls_ciphertext(&connections);
    assert_matches_server(chat[0], &server.sent(), Some(5_000_000));

    let calls: Vec<_> = run.lines.iter().filter(|l| l["type"] == "call").collect();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["request_model"], "gpt-gnutls");
    assert_eq!(calls[0]["http_status"], 200);
    assert_eq!(calls[0]["stream"], true);
    assert_eq!(calls[0]["error_type"], serde_json::Value::Null);
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
