//! End-to-end: HTTP/2. The mock server answers HTTP/2 with the same
//! streamed replies (h2c to clients that open with the preface, h2 by ALPN
//! over TLS with `--http2`). curl with prior knowledge and a Python httpx
//! client running three streams at once on one h2c connection are seen
//! through the socket probes; Go's net/http, which picks h2 by ALPN, through
//! the crypto/tls probes. Each stream must become its own correct call.

use std::collections::BTreeSet;

use llmtap::http2::PREFACE;
use llmtap_tests::*;
use serde_json::Value;

fn server(tls: bool) -> MockServer {
    let mut flags = vec![
        "--chunks",
        "6",
        "--chunk-delay-ms",
        "20",
        "--first-token-delay-ms",
        "40",
    ];
    if tls {
        flags.push("--http2");
    }
    MockServer::start(tls, &flags)
}

/// The run's connections that carried HTTP/2 (the client wrote the
/// preface first), checking there is exactly one.
fn the_one_h2_connection(run: &AgentRun) -> CapturedConnection {
    assert!(run.status.success(), "agent/client failed: {}", run.stderr);
    let connections = connections(&run.lines);
    let h2: Vec<_> = connections
        .values()
        .filter(|c| c.bytes(true).starts_with(PREFACE))
        .collect();
    assert_eq!(h2.len(), 1, "one HTTP/2 connection: {:#?}", run.lines);
    h2[0].clone()
}

/// What every streamed call of these tests must say.
fn assert_streamed_call(call: &Value, output_tokens: u64) {
    assert_eq!(call["provider"], "openai", "{call:#}");
    assert_eq!(call["http_status"], 200, "{call:#}");
    assert_eq!(call["stream"], true, "{call:#}");
    assert_eq!(call["error_type"], Value::Null, "{call:#}");
    assert_eq!(call["output_tokens"], output_tokens, "{call:#}");
    assert_eq!(call["output_tokens_estimated"], false, "{call:#}");
    assert_eq!(call["output_chunks"], output_tokens, "{call:#}");
    let ttft = call["ttft_s"].as_f64().expect("ttft_s");
    assert!(
        (0.040..1.0).contains(&ttft),
        "the server waited 40 ms for the first token: {ttft}"
    );
    let duration = call["duration_s"].as_f64().expect("duration_s");
    assert!(
        duration >= 0.040 + 5.0 * 0.020,
        "six tokens 20 ms apart after 40 ms: {duration}"
    );
}

#[test]
fn curl_with_prior_knowledge_streams_one_call_over_h2c() {
    let _serial = serial();
    let server = server(false);
    let url = format!("{}/v1/chat/completions", server.base_url());
    let body = r#"{"model":"gpt-curl-h2c","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let command = [
        "curl",
        "-sS",
        "-N",
        "--fail",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-H",
        "content-type: application/json",
        "-d",
        body,
        &url,
    ];
    let run = run_agent_on_command(&[], &command, None);
    let connection = the_one_h2_connection(&run);
    assert_eq!(connection.open["transport"], "tcp");
    let calls = call_lines(&run.lines);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["request_model"], "gpt-curl-h2c");
    assert_eq!(calls[0]["response_model"], "gpt-curl-h2c");
    assert_eq!(calls[0]["request_path"], "/v1/chat/completions");
    assert_streamed_call(calls[0], 6);
}

/// The h2c client running three streams at once on one connection, with
/// its own report of each.
fn three_parallel_streams(server: &MockServer) -> (ClientReport, [String; 6]) {
    let report = ClientReport::new();
    let script = workspace_root().join("tests/clients/h2c_parallel.py");
    let command = [
        "python3".to_owned(),
        script.display().to_string(),
        server.base_url(),
        "gpt-h2c".to_owned(),
        "3".to_owned(),
        report.arg(),
    ];
    (report, command)
}

/// The three calls are the client's three streams, multiplexed.
fn assert_three_multiplexed_calls(calls: &[&Value], report: &ClientReport) {
    let client = report.calls();
    assert!(
        client.iter().all(|c| c["http_version"] == "HTTP/2"),
        "{client:#?}"
    );
    assert_eq!(calls.len(), 3, "{calls:#?}");
    let models: BTreeSet<&str> = calls
        .iter()
        .map(|c| c["request_model"].as_str().unwrap())
        .collect();
    assert_eq!(
        models,
        BTreeSet::from(["gpt-h2c-0", "gpt-h2c-1", "gpt-h2c-2"])
    );
    for call in calls {
        assert_streamed_call(call, 6);
        assert_eq!(call["connection_id"], calls[0]["connection_id"]);
        // Each stream's first token, as the client saw it, came just after
        // the read (or packet) the agent timed it by.
        let seen = client
            .iter()
            .find(|c| c["model"] == call["request_model"])
            .expect("the client's view of this call");
        let agent_first = call["first_output_ns"].as_u64().expect("first_output_ns");
        let client_first = seen["first_token_ns"].as_u64().expect("first_token_ns");
        assert!(
            agent_first <= client_first,
            "{agent_first} after {client_first}"
        );
        assert!(
            client_first - agent_first < 50_000_000,
            "{agent_first} vs {client_first}"
        );
    }
    // Multiplexed: every call was under way while every other was.
    let latest_start = calls.iter().map(|c| c["t0_ns"].as_u64().unwrap()).max();
    let earliest_end = calls.iter().map(|c| c["end_ns"].as_u64().unwrap()).min();
    assert!(latest_start < earliest_end, "the streams did not overlap");
}

#[test]
fn three_streams_at_once_on_one_h2c_connection_are_three_calls() {
    let _serial = serial();
    let server = server(false);
    let (report, command) = three_parallel_streams(&server);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = run_agent_on_command(&[], &command, None);
    the_one_h2_connection(&run);
    assert_three_multiplexed_calls(&call_lines(&run.lines), &report);
}

#[test]
fn three_h2c_streams_captured_as_packets_are_the_same_three_calls() {
    let _serial = serial();
    let server = server(false);
    let agent = RunningAgent::capturing_packets_on_lo(server.addr.port());
    let (report, command) = three_parallel_streams(&server);
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .expect("run the h2c client");
    assert!(status.success());
    // The flow ends on the FINs; give the capture a moment to read them.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let run = agent.stop();
    // Shown if an assertion fails: the capture's losses, in its last line.
    eprintln!("{}", run.stderr);
    assert!(run.status.success(), "{}", run.stderr);
    the_one_h2_connection(&run);
    assert_three_multiplexed_calls(&call_lines(&run.lines), &report);
}

#[test]
fn a_go_client_negotiating_h2_by_alpn_is_seen_through_crypto_tls() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_go_client(&dir, "go_stream", false);
    let server = server(true);
    let report = ClientReport::new();
    let (url, output) = (server.base_url(), report.arg());
    let command = [binary.to_str().unwrap(), &url, "gpt-go-h2", &output];
    let run = run_agent_on_command(&[], &command, server.cert.as_deref());
    let connection = the_one_h2_connection(&run);
    assert_eq!(connection.open["transport"], "tls");
    assert_no_tls_ciphertext(&connections(&run.lines));
    let calls = call_lines(&run.lines);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call["request_model"], "gpt-go-h2");
    assert_streamed_call(call, 6);
    assert_matches_go_report(call, &report.path);
}
