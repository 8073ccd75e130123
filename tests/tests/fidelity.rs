//! Fidelity against a real model: a real llama.cpp server (PyPI `xllamacpp`,
//! SmolLM2-135M) streams to three real SDK clients on loopback while llmtap
//! watches the client, and llmtap's numbers are checked against the
//! server's and the client's own:
//!
//! - output tokens equal the usage the response reported;
//! - tokens/s is within 5% of the server's own `timings.predicted_per_second`
//!   (which llama.cpp computes over the same span as llmtap: the token
//!   intervals between the first token and the last);
//! - TTFT is within 2 ms of the client's own, taken by the client's HTTP
//!   library over the same span (request written → first text read).
//!
//! The clients: the `openai` SDK on `/v1/chat/completions`, the `anthropic`
//! SDK on `/v1/messages`, and `litellm` (an `openai/` model pointed at the
//! server as an OpenAI-compatible endpoint). Generation is deterministic
//! (temperature 0, a seed) and runs to `max_tokens`, so that the server's
//! timing ends at the last token streamed (a generation stopped by the
//! end-of-text token also times that token, which is never streamed).
//!
//! Each test prints its rows of BENCHMARKS.md's "Fidelity against
//! llama.cpp" table: `cargo test -p llmtap-tests --test fidelity --
//! --nocapture --test-threads 1`.

use llmtap_tests::llamacpp::{LlamaServer, ServerGeneration};
use llmtap_tests::*;
use serde_json::Value;

/// A prompt SmolLM2 answers at length, so every call runs to the limit.
const PROMPT: &str = "Write a short story about a robot.";
/// Enough tokens for a rate over more than a second at 50–70 tokens/s.
const MAX_TOKENS: u64 = 96;
const TOKEN_RATE_TOLERANCE: f64 = 0.05;
const TTFT_TOLERANCE_S: f64 = 0.002;

/// What one SDK call gave: llmtap's record, the client's own report and
/// the server's timing of it.
struct Observed {
    call: Value,
    client: Value,
    generation: ServerGeneration,
}

/// Runs `tests/clients/SCRIPT` under llmtap against a llama.cpp server of
/// its own: one warm-up call (a cold process reads its first stream late,
/// while it still imports), then the measured one. Agent and client run at
/// real-time priority, so that on a busy machine the client reads each
/// chunk as it arrives: the test compares clocks, not the scheduler.
fn observe(script: &str) -> Observed {
    let server = LlamaServer::start();
    let script = workspace_root()
        .join("tests/clients")
        .join(script)
        .display()
        .to_string();
    let report = ClientReport::new();
    let (url, output, max_tokens) = (server.base_url(), report.arg(), MAX_TOKENS.to_string());
    let command = [
        "python3",
        &script,
        &url,
        "--model",
        "smollm2",
        "--prompt",
        PROMPT,
        "--max-tokens",
        &max_tokens,
        "--temperature",
        "0",
        "--seed",
        "42",
        "--warm-up",
        "--output",
        &output,
    ];
    let run = run_agent_on_command_in_real_time(&[], &command, None);
    assert!(run.status.success(), "{}", run.stderr);
    let calls = call_lines(&run.lines);
    assert_eq!(
        calls.len(),
        2,
        "the warm-up call and the measured one: {calls:#?}"
    );
    let client = report.calls().remove(0);
    assert_eq!(client["error"], Value::Null, "{client}");
    let generation = *server
        .wait_for_generations(2)
        .last()
        .expect("the server logged the call's timings");
    Observed {
        call: calls[1].clone(),
        client,
        generation,
    }
}

/// Checks the three figures against the references; prints them as
/// BENCHMARKS.md rows.
fn check(sdk: &str, seen: &Observed, client_output_tokens: &Value) {
    let Observed {
        call,
        client,
        generation,
    } = seen;
    assert_eq!(call["error_type"], Value::Null, "{call}");

    let tokens = call["output_tokens"].as_u64().expect("output_tokens");
    assert_eq!(call["output_tokens_estimated"], false, "usage was reported");
    assert_eq!(
        Some(tokens),
        client_output_tokens.as_u64(),
        "llmtap's output tokens against the response's usage"
    );
    assert_eq!(generation.tokens, MAX_TOKENS, "{generation:?}");
    assert_eq!(tokens, generation.tokens);

    let rate = call["tokens_per_second"]
        .as_f64()
        .expect("tokens_per_second");
    let server_rate = generation.predicted_per_second();
    let rate_error = (rate - server_rate) / server_rate;
    assert!(
        rate_error.abs() <= TOKEN_RATE_TOLERANCE,
        "{sdk}: llmtap {rate:.2} tokens/s, server {server_rate:.2}: {:+.1}%",
        rate_error * 100.0
    );

    // TTFT over the same span on both sides: llmtap's from the entry of
    // the request's first write to the return of the read that delivered
    // the first text; the client's, on its own clock, from its HTTP
    // library starting to write the request to that read returning to it.
    let ttft = call["ttft_s"].as_f64().expect("ttft_s");
    let client_ttft = client["read_ttft_ns"].as_u64().expect("read_ttft_ns") as f64 / 1e9;
    assert!(
        (ttft - client_ttft).abs() <= TTFT_TOLERANCE_S,
        "{sdk}: llmtap TTFT {:.3} ms, client {:.3} ms",
        ttft * 1e3,
        client_ttft * 1e3
    );
    // The SDK hands the text over after parsing it, and the application
    // called it before the request was written: both are the client's
    // own work, outside what a network observer sees. Shown, not bounded,
    // beyond their order.
    let handed_over = client["first_token_ns"].as_u64().expect("first_token_ns");
    let first_output = call["first_output_ns"].as_u64().expect("first_output_ns");
    assert!(
        first_output <= handed_over,
        "{sdk}: llmtap saw the token after the SDK gave it"
    );
    let parse_ms = (handed_over - first_output) as f64 / 1e6;
    let create_ttft = client["ttft_ns"].as_u64().expect("ttft_ns") as f64 / 1e9;

    println!("| {sdk} | output tokens | {tokens} | {client_output_tokens} (usage) | 0 |");
    println!(
        "| {sdk} | tokens/s | {rate:.2} | {server_rate:.2} (server: {} intervals in {:.1} ms) \
         | {:+.2}% |",
        generation.tokens - 1,
        generation.millis,
        rate_error * 100.0
    );
    println!(
        "| {sdk} | TTFT | {:.3} ms | {:.3} ms (client: request written → first text read; \
         the SDK handed it over {parse_ms:.3} ms later, {:.3} ms after `create()`) | {:+.3} ms |",
        ttft * 1e3,
        client_ttft * 1e3,
        create_ttft * 1e3,
        (ttft - client_ttft) * 1e3
    );
}

#[test]
fn openai_sdk_numbers_match_the_server_and_the_client() {
    let _serial = serial();
    let seen = observe("openai_stream.py");
    assert_eq!(seen.client["finish_reason"], "length");
    // The stream's own `timings` are the numbers the server logged.
    let timings = &seen.client["timings"];
    assert_eq!(
        timings["predicted_n"].as_u64(),
        Some(seen.generation.tokens)
    );
    let predicted = timings["predicted_per_second"].as_f64().expect("timings");
    let logged = seen.generation.predicted_per_second();
    assert!(
        (predicted - logged).abs() < 1e-4 * predicted,
        "timings.predicted_per_second {predicted} against the log's {logged}"
    );
    check("openai", &seen, &seen.client["usage"]["completion_tokens"]);
}

#[test]
fn anthropic_sdk_numbers_match_the_server_and_the_client() {
    let _serial = serial();
    let seen = observe("anthropic_stream.py");
    assert_eq!(seen.client["finish_reason"], "max_tokens");
    assert_eq!(seen.call["provider"], "anthropic");
    check("anthropic", &seen, &seen.client["usage"]["output_tokens"]);
}

#[test]
fn litellm_numbers_match_the_server_and_the_client() {
    let _serial = serial();
    let seen = observe("litellm_stream.py");
    assert_eq!(seen.client["finish_reason"], "length");
    check("litellm", &seen, &seen.client["usage"]["completion_tokens"]);
}
