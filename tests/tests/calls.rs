//! End-to-end: from captured bytes to LLM call records. A real `openai`
//! Python SDK streams a chat completion over TLS from the mock server while
//! llmtap watches it; the call record llmtap prints must agree with what
//! the client itself received and measured.

use llmtap_tests::*;
use serde_json::Value;

/// Runs the openai Python SDK client under the agent; returns what the
/// agent printed and the client's own report of its calls.
fn python_stream(server: &MockServer, model: &str) -> (AgentRun, ClientReport) {
    let script = workspace_root()
        .join("tests/clients/openai_stream.py")
        .display()
        .to_string();
    let url = server.base_url();
    let report = ClientReport::new();
    let output = report.arg();
    let command = [
        "python3", &script, &url, "--model", model, "--output", &output,
    ];
    (
        run_agent_on_command(&[], &command, server.cert.as_deref()),
        report,
    )
}

#[test]
fn an_openai_sdk_stream_becomes_one_exact_call_record() {
    let _serial = serial();
    let server = MockServer::start(
        true,
        &[
            "--chunks",
            "10",
            "--chunk-delay-ms",
            "30",
            "--first-token-delay-ms",
            "80",
        ],
    );
    let (run, report) = python_stream(&server, "gpt-test");
    assert!(run.status.success(), "{}", run.stderr);
    let client = report.calls();
    let calls = call_lines(&run.lines);
    assert_eq!(calls.len(), 1, "one call expected: {calls:#?}");
    let (call, client) = (calls[0], &client[0]);

    assert_eq!(call["provider"], "openai");
    assert_eq!(call["api"], "chat");
    assert_eq!(call["request_model"], "gpt-test");
    assert_eq!(call["response_model"], client["model"]);
    assert_eq!(call["response_id"], client["id"]);
    assert_eq!(call["stream"], true);
    assert_eq!(call["http_status"], 200);
    assert_eq!(
        call["finish_reasons"],
        serde_json::json!([client["finish_reason"]])
    );
    assert_eq!(call["output_tokens"], client["usage"]["completion_tokens"]);
    assert_eq!(call["input_tokens"], client["usage"]["prompt_tokens"]);
    assert_eq!(call["output_tokens_estimated"], false);
    assert_eq!(call["output_chunks"], client["content_chunks"]);
    assert_eq!(call["error_type"], Value::Null);
    assert_eq!(call["server_port"], server.addr.port());
    // Asked for (--capture-content), the record carries the text the
    // client received (tests/tests/security.rs checks it is absent
    // otherwise).
    assert_eq!(call["content"]["completion"], client["text"]);

    // The first token: llmtap's instant against the client's own, taken
    // right after the SDK handed it the first content chunk.
    let agent_first = call["first_output_ns"].as_u64().unwrap();
    let client_first = client["first_token_ns"].as_u64().unwrap();
    let skew = agent_first.abs_diff(client_first);
    assert!(
        skew <= 2_000_000,
        "first token: llmtap {agent_first} vs client {client_first} ({skew} ns apart)"
    );
    assert!(
        agent_first <= client_first,
        "the read returns before the SDK hands over the chunk"
    );
    // TTFT: llmtap's runs from the first request byte written, the
    // client's from create(), which also covers connecting and the TLS
    // handshake; so llmtap's is shorter by that set-up time, never longer.
    let agent_ttft = call["ttft_s"].as_f64().unwrap();
    let client_ttft = client["ttft_ns"].as_u64().unwrap() as f64 / 1e9;
    assert!(
        agent_ttft > 0.080,
        "the server waited 80 ms for the first token: {agent_ttft}"
    );
    assert!(
        agent_ttft <= client_ttft + 0.002,
        "llmtap TTFT {agent_ttft} s vs client {client_ttft} s"
    );
    assert!(
        client_ttft - agent_ttft < 0.5,
        "set-up time {} s",
        client_ttft - agent_ttft
    );
    // Each chunk's time against the client's receipt of it, looser: the
    // SDK's parsing between the read and the hand-over varies with load.
    let agent_chunks: Vec<u64> = call["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["t_ns"].as_u64().unwrap())
        .collect();
    let client_chunks: Vec<u64> = client["chunk_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(agent_chunks.len(), client_chunks.len());
    for (agent, client) in agent_chunks.iter().zip(&client_chunks) {
        assert!(
            agent.abs_diff(*client) <= 2_000_000,
            "chunk at {agent} vs client {client}"
        );
    }
}

#[test]
fn an_http_error_and_a_cut_stream_are_recorded_with_their_error_types() {
    let _serial = serial();
    let server = MockServer::start(
        true,
        &[
            "--chunks",
            "6",
            "--chunk-delay-ms",
            "10",
            "--first-token-delay-ms",
            "10",
        ],
    );
    for (model, error_type) in [
        ("error-429", "http_4xx"),
        ("error-midstream", "stream_error_event"),
        ("cut-midstream", "connection_closed"),
    ] {
        let (run, _) = python_stream(&server, model);
        let calls = call_lines(&run.lines);
        assert_eq!(calls.len(), 1, "{model}: {calls:#?}\n{}", run.stderr);
        assert_eq!(calls[0]["request_model"], model);
        assert_eq!(
            calls[0]["error_type"], error_type,
            "{model}: {:#}",
            calls[0]
        );
    }
}

#[test]
fn a_server_watched_by_pid_records_the_call_from_its_side() {
    let _serial = serial();
    // Plain HTTP: the mock server does TLS with rustls, which has no
    // OpenSSL-compatible functions to hook.
    let server = MockServer::start(
        false,
        &[
            "--chunks",
            "4",
            "--chunk-delay-ms",
            "10",
            "--first-token-delay-ms",
            "20",
        ],
    );
    let mut agent = RunningAgent::start(&["--pid", &server.pid().to_string(), "--print"]);
    agent.wait_for_log("watching", std::time::Duration::from_secs(20));
    let status = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-H", "content-type: application/json", "-d"])
        .arg(r#"{"model":"served-model","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#)
        .arg(format!("{}/v1/chat/completions", server.base_url()))
        .status()
        .unwrap();
    assert!(status.success());
    // The server's last write and close reach the agent within its poll.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let run = agent.stop();
    let calls = call_lines(&run.lines);
    assert_eq!(calls.len(), 1, "{calls:#?}\n{}", run.stderr);
    let call = calls[0];
    assert_eq!(call["side"], "server");
    assert_eq!(call["request_model"], "served-model");
    assert_eq!(call["output_chunks"], 4);
    assert_eq!(call["http_status"], 200);
    assert_eq!(call["server_port"], server.addr.port());
    assert_eq!(call["error_type"], Value::Null);
}
