//! End-to-end: the real `llmtap` binary watching real clients (the `openai`
//! Python SDK, curl) stream over TLS from the mock server, with what it
//! exports read back from real receivers: a real Prometheus scraping
//! `/metrics`, the in-test OTLP receiver and the third-party `rotel`. Also
//! an absent collector for a minute, every bad setting, and scoping to the
//! watched process (issue 4's acceptance).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use llmtap_tests::otlp_receiver::{OtlpReceiver, ReceivedSpan, SpanKind};
use llmtap_tests::prometheus::{free_port, http_get, promtool_check_metrics, scraped, Prometheus};
use llmtap_tests::rotel::Rotel;
use llmtap_tests::*;
use opentelemetry_proto::tonic::common::v1::any_value;
use serde_json::Value;

/// The client scripts' prompt, "Say hello to llmtap.": the mock counts
/// its words as the prompt's tokens.
const PROMPT_TOKENS: u64 = 4;

/// Starts llmtap watching `shell` (plus `extra` flags) and waits until it
/// is attached; returns it with its metrics address.
fn watch(shell: &HeldProcess, extra: &[&str]) -> (RunningAgent, SocketAddr) {
    let pid = shell.pid().to_string();
    let mut args = vec!["--pid", pid.as_str()];
    args.extend_from_slice(extra);
    RunningAgent::attached(&args)
}

/// `python3 openai_stream.py` streaming `calls` calls of `model` from
/// `server`, reporting into `report`.
fn openai_client(
    server: &MockServer,
    model: &str,
    calls: u32,
    report: &ClientReport,
) -> Vec<String> {
    [
        "python3".to_owned(),
        client_script("openai_stream.py"),
        server.base_url(),
        "--model".into(),
        model.into(),
        "--calls".into(),
        calls.to_string(),
        "--output".into(),
        report.arg(),
    ]
    .into()
}

/// A script making one curl call per traceparent given after the URL and
/// the body.
fn curl_calls_script() -> String {
    format!("url=$1; body=$2; shift 2; for tp in \"$@\"; do {CURL_CALL} || exit 1; done")
}

/// `n` W3C traceparents with distinct, well-spread trace ids (splitmix64:
/// the ratio sampler decides on the id's low bytes) and parent span ids.
fn traceparents(n: u64, seed: u64) -> Vec<(String, String, String)> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let trace = format!("{:016x}{:016x}", next(), next());
            let parent = format!("{:016x}", next());
            (format!("00-{trace}-{parent}-01"), trace, parent)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_real_prometheus_scrapes_exact_values_of_openai_sdk_streams() {
    let _serial = serial();
    const CALLS: u32 = 3;
    const CHUNKS: u64 = 8;
    const FIRST_TOKEN_MS: u64 = 60;
    const CHUNK_MS: u64 = 15;
    let server = MockServer::paced_tls(CHUNKS, FIRST_TOKEN_MS, CHUNK_MS);
    let cert = server.cert.clone().unwrap();
    let model = "e2e-prometheus";
    let report = ClientReport::new();
    let mut shell = HeldProcess::shell(
        "\"$@\"",
        &openai_client(&server, model, CALLS, &report),
        &cert,
    );
    let (agent, addr) = watch(&shell, &["--print"]);
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            http_get(addr, probe).map(|(status, _)| status),
            Some(200),
            "{probe}"
        );
    }
    let prometheus = Prometheus::start(addr, None);
    shell.run();
    let client = report.calls();
    assert_eq!(client.len(), CALLS as usize);
    for call in &client {
        assert_eq!(call["error"], Value::Null, "{call}");
        assert_eq!(call["usage"]["completion_tokens"], CHUNKS);
        assert_eq!(call["usage"]["prompt_tokens"], PROMPT_TOKENS);
    }

    let wait = Duration::from_secs(30);
    let calls = f64::from(CALLS);
    let seed = format!(
        r#"model="{model}",operation="chat",provider="openai",service="python3",side="client""#
    );
    prometheus.wait_for_value(
        &format!("sum(llm_request_duration_seconds_count{{{seed},status=\"200\"}})"),
        calls,
        wait,
    );
    prometheus.wait_for_value(
        &format!("llm_total_tokens_total{{{seed},token_type=\"output\"}}"),
        calls * CHUNKS as f64,
        wait,
    );
    prometheus.wait_for_value(
        &format!("llm_total_tokens_total{{{seed},token_type=\"input\"}}"),
        calls * PROMPT_TOKENS as f64,
        wait,
    );
    prometheus.wait_for_value(
        &format!("sum(llm_time_to_first_token_seconds_count{{{seed}}})"),
        calls,
        wait,
    );
    prometheus.wait_for_value(
        &format!("sum(llm_token_generation_rate_count{{{seed}}})"),
        calls,
        wait,
    );
    let genai = format!(
        r#"gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="{model}",gen_ai_response_model="{model}",server_address="127.0.0.1",error_type="""#
    );
    prometheus.wait_for_value(
        &format!("sum(gen_ai_client_operation_duration_seconds_count{{{genai}}})"),
        calls,
        wait,
    );
    prometheus.wait_for_value(
        &format!("sum(gen_ai_client_operation_time_to_first_chunk_seconds_count{{{genai}}})"),
        calls,
        wait,
    );
    for (kind, per_call) in [("output", CHUNKS), ("input", PROMPT_TOKENS)] {
        let series = format!("{genai},gen_ai_token_type=\"{kind}\"");
        prometheus.wait_for_value(
            &format!("sum(gen_ai_client_token_usage_count{{{series}}})"),
            calls,
            wait,
        );
        prometheus.wait_for_value(
            &format!("sum(gen_ai_client_token_usage_sum{{{series}}})"),
            calls * per_call as f64,
            wait,
        );
        // Every call's count is in the bucket holding it, none in the one
        // below: the specification's boundaries are powers of 4.
        let bucket =
            |le: f64| format!("sum(gen_ai_client_token_usage_bucket{{{series},le=\"{le}\"}})");
        let holding = 4f64.powf((per_call as f64).log(4.0).ceil());
        prometheus.wait_for_value(&bucket(holding / 4.0), 0.0, wait);
        prometheus.wait_for_value(&bucket(holding), calls, wait);
    }
    assert!(prometheus
        .query(&format!("llm_error_count_total{{model=\"{model}\"}}"))
        .is_empty());
    // Each output chunk after the first is one inter-chunk gap.
    prometheus.wait_for_value(
        &format!("sum(gen_ai_client_operation_time_per_output_chunk_seconds_count{{{genai}}})"),
        calls * (CHUNKS - 1) as f64,
        wait,
    );

    // The sums against the agent's own per-call values and the client's
    // timing of each call.
    let text = scrape(addr);
    promtool_check_metrics(&text).unwrap_or_else(|problems| panic!("promtool: {problems}\n{text}"));
    let value = |promql: &str| -> f64 {
        let result = prometheus.query(promql);
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    // Queried while the agent runs: once a scrape fails, its series go stale.
    let ttft_sum = value(&format!(
        "sum(llm_time_to_first_token_seconds_sum{{{seed}}})"
    ));
    let duration_sum = value(&format!("sum(llm_request_duration_seconds_sum{{{seed}}})"));
    let genai_duration_sum = value(&format!(
        "sum(gen_ai_client_operation_duration_seconds_sum{{{genai}}})"
    ));
    let run = agent.stop();
    let printed = call_lines(&run.lines);
    assert_eq!(printed.len(), CALLS as usize, "{}", run.stderr);
    let printed_sum = |field: &str| {
        printed
            .iter()
            .map(|c| c[field].as_f64().unwrap())
            .sum::<f64>()
    };
    assert!(
        (ttft_sum - printed_sum("ttft_s")).abs() < 1e-6,
        "{ttft_sum} vs {}",
        printed_sum("ttft_s")
    );
    assert!((duration_sum - printed_sum("duration_s")).abs() < 1e-6);
    assert!((genai_duration_sum - duration_sum).abs() < 1e-6);
    let mut client_ttft_sum = 0.0;
    let mut client_duration_sum = 0.0;
    for (agent_call, client_call) in printed.iter().zip(&client) {
        assert_eq!(agent_call["response_id"], client_call["id"]);
        let agent_ttft = agent_call["ttft_s"].as_f64().unwrap();
        let client_ttft = client_call["ttft_ns"].as_u64().unwrap() as f64 / 1e9;
        let agent_duration = agent_call["duration_s"].as_f64().unwrap();
        let client_duration = (client_call["end_ns"].as_u64().unwrap()
            - client_call["start_ns"].as_u64().unwrap()) as f64
            / 1e9;
        // The client's clock starts before connecting and stops after the
        // SDK handed over the last event: the agent's spans are inside.
        assert!(
            agent_ttft <= client_ttft + 0.002,
            "TTFT {agent_ttft} vs client {client_ttft}"
        );
        assert!(
            agent_ttft >= FIRST_TOKEN_MS as f64 / 1e3,
            "TTFT {agent_ttft}"
        );
        assert!(
            agent_duration <= client_duration + 0.002,
            "duration {agent_duration} vs client {client_duration}"
        );
        let streamed = (FIRST_TOKEN_MS + (CHUNKS - 1) * CHUNK_MS) as f64 / 1e3;
        assert!(
            agent_duration >= streamed,
            "duration {agent_duration} < {streamed}"
        );
        client_ttft_sum += client_ttft;
        client_duration_sum += client_duration;
    }
    // The client also times connecting and the TLS handshake; a second per
    // call covers that on a loaded machine.
    assert!(ttft_sum <= client_ttft_sum + calls * 0.002 && client_ttft_sum - ttft_sum < calls);
    assert!(
        duration_sum <= client_duration_sum + calls * 0.002
            && client_duration_sum - duration_sum < calls
    );
}

/// Runs llmtap (sampling at `rate`, `--print`) on a shell making one curl
/// call per traceparent, traces to `receiver` over gRPC. Returns the
/// printed call lines and a scrape taken once every call is accounted for
/// in the span counters.
fn sampled_run(
    server: &MockServer,
    receiver: &OtlpReceiver,
    model: &str,
    rate: &str,
    traceparents: &[(String, String, String)],
) -> (Vec<Value>, String) {
    let mut args = vec![server.base_url(), chat_body(model)];
    args.extend(traceparents.iter().map(|(tp, _, _)| tp.clone()));
    let mut shell =
        HeldProcess::shell(&curl_calls_script(), &args, server.cert.as_deref().unwrap());
    let endpoint = receiver.grpc_endpoint();
    let (agent, addr) = watch(
        &shell,
        &[
            "--print",
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--telemetry-sample-rate",
            rate,
        ],
    );
    shell.run();
    let calls = traceparents.len() as f64;
    let text = scrape_until(addr, Duration::from_secs(20), |text| {
        calls_counted(text, model) == Some(calls)
            && otlp_counter(text, "llmtap_spans_exported_total")
                + scraped(text, "llmtap_calls_sampled_out_total", &[]).unwrap_or(0.0)
                == calls
    });
    let run = agent.stop();
    let printed: Vec<Value> = call_lines(&run.lines).into_iter().cloned().collect();
    assert_eq!(printed.len(), traceparents.len(), "{}", run.stderr);
    // Every call is counted, sampled or not; nothing was lost on the way.
    assert_eq!(calls_counted(&text, model), Some(calls), "{text}");
    assert_eq!(
        otlp_counter(&text, "llmtap_spans_dropped_total"),
        0.0,
        "{text}"
    );
    assert_eq!(
        otlp_counter(&text, "llmtap_exporter_failures_total"),
        0.0,
        "{text}"
    );
    (printed, text)
}

/// The span of one call, checked against what the agent printed for the
/// same call and the traceparent the request carried.
fn check_span(
    span: &ReceivedSpan,
    call: &Value,
    server: &MockServer,
    model: &str,
    parent: &(String, String, String),
) {
    let s = &span.span;
    assert_eq!(s.name, format!("chat {model}"));
    assert_eq!(s.kind, SpanKind::Client as i32);
    assert_eq!(hex(&s.trace_id), parent.1);
    assert_eq!(hex(&s.parent_span_id), parent.2);
    assert_ne!(hex(&s.span_id), parent.2);
    assert_eq!(Some(s.start_time_unix_nano), call["t0_ns"].as_u64());
    assert_eq!(Some(s.end_time_unix_nano), call["end_ns"].as_u64());
    assert_eq!(span.str_attr("gen_ai.operation.name"), Some("chat"));
    assert_eq!(span.str_attr("gen_ai.provider.name"), Some("openai"));
    assert_eq!(span.str_attr("gen_ai.request.model"), Some(model));
    assert_eq!(span.str_attr("gen_ai.response.model"), Some(model));
    let id = call["response_id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    assert_eq!(span.str_attr("gen_ai.response.id"), Some(id));
    assert_eq!(
        span.int_attr("gen_ai.usage.input_tokens"),
        Some(PROMPT_TOKENS as i64)
    );
    assert_eq!(
        span.int_attr("gen_ai.usage.output_tokens"),
        call["output_tokens"].as_i64()
    );
    assert_eq!(
        span.attr("gen_ai.request.stream"),
        Some(&any_value::Value::BoolValue(true))
    );
    match span.attr("gen_ai.response.finish_reasons") {
        Some(any_value::Value::ArrayValue(array)) => {
            let reasons: Vec<_> = array
                .values
                .iter()
                .filter_map(|v| v.value.clone())
                .collect();
            assert_eq!(reasons, [any_value::Value::StringValue("stop".into())]);
        }
        other => panic!("finish reasons {other:?}"),
    }
    assert_eq!(span.str_attr("server.address"), Some("127.0.0.1"));
    assert_eq!(
        span.int_attr("server.port"),
        Some(i64::from(server.addr.port()))
    );
    assert_eq!(span.attr("error.type"), None);
    let first = s
        .events
        .iter()
        .find(|e| e.name == "gen_ai.first_token")
        .expect("a first-token event");
    assert_eq!(Some(first.time_unix_nano), call["first_output_ns"].as_u64());
    let chunk_events = s.events.iter().filter(|e| e.name == "gen_ai.chunk").count();
    assert_eq!(Some(chunk_events as u64), call["output_chunks"].as_u64());
    let resource = |key| span.resource_attr(key).cloned();
    assert_eq!(
        resource("service.name"),
        Some(any_value::Value::StringValue("curl".into()))
    );
    assert_eq!(
        resource("process.pid"),
        call["pid"].as_i64().map(any_value::Value::IntValue)
    );
}

#[test]
fn spans_reach_real_otlp_receivers_with_their_parents_and_sampling_holds() {
    let _serial = serial();
    const CALLS: u64 = 20;
    const CHUNKS: u64 = 4;
    let server = MockServer::paced_tls(CHUNKS, 10, 5);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let model = "e2e-otlp";

    // Everything sampled: one span per call, each a child of its request's
    // traceparent, matching the agent's own record of the call.
    let receiver = runtime.block_on(OtlpReceiver::start());
    let parents = traceparents(CALLS, 1);
    let (printed, text) = sampled_run(&server, &receiver, model, "1.0", &parents);
    let spans = receiver.spans();
    assert_eq!(spans.len() as u64, CALLS);
    assert_eq!(
        otlp_counter(&text, "llmtap_spans_exported_total"),
        CALLS as f64
    );
    assert_eq!(
        scraped(&text, "llmtap_calls_sampled_out_total", &[]),
        Some(0.0)
    );
    for parent in &parents {
        let span = spans
            .iter()
            .find(|s| hex(&s.span.trace_id) == parent.1)
            .unwrap_or_else(|| panic!("no span in trace {}", parent.1));
        let call = printed
            .iter()
            .find(|c| c["trace_id"] == parent.1.as_str())
            .expect("a printed call per traceparent");
        assert_eq!(call["parent_span_id"], parent.2.as_str());
        assert_eq!(call["output_tokens"], CHUNKS);
        check_span(span, call, &server, model, parent);
        assert_eq!(span.via, "grpc");
    }
    drop(receiver);

    // Nothing sampled: no span, every call still counted.
    let receiver = runtime.block_on(OtlpReceiver::start());
    let (_, text) = sampled_run(&server, &receiver, model, "0.0", &traceparents(CALLS, 2));
    assert_eq!(
        scraped(&text, "llmtap_calls_sampled_out_total", &[]),
        Some(CALLS as f64)
    );
    // The agent has stopped, flushing whatever it had.
    assert!(receiver.spans().is_empty(), "{:?}", receiver.spans());
    drop(receiver);

    // Half: some of the (distinct) traces, and the rest counted out.
    let receiver = runtime.block_on(OtlpReceiver::start());
    let parents = traceparents(CALLS, 3);
    let (_, text) = sampled_run(&server, &receiver, model, "0.5", &parents);
    let kept = receiver.spans().len() as u64;
    assert!(0 < kept && kept < CALLS, "kept {kept} of {CALLS} at 0.5");
    assert_eq!(
        otlp_counter(&text, "llmtap_spans_exported_total"),
        kept as f64
    );
    assert_eq!(
        scraped(&text, "llmtap_calls_sampled_out_total", &[]),
        Some((CALLS - kept) as f64)
    );
    drop(receiver);

    // The third-party receiver, over HTTP/protobuf this time.
    let rotel = Rotel::start();
    let (tp, trace, parent) = traceparents(1, 4).remove(0);
    let endpoint = format!("http://{}", rotel.http_addr);
    let body = chat_body(model);
    let url = server.base_url();
    let run = run_agent_on_command(
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "http/protobuf",
            "--service-name",
            "e2e-service",
        ],
        &[
            "sh",
            "-c",
            &format!("tp=$1; body=$2; url=$3; {CURL_CALL}"),
            "sh",
            &tp,
            &body,
            &url,
        ],
        server.cert.as_deref(),
    );
    assert!(run.status.success(), "{}", run.stderr);
    let printed = call_lines(&run.lines);
    assert_eq!(printed.len(), 1, "{}", run.stderr);
    let id = printed[0]["response_id"].as_str().unwrap();
    let name = format!("chat {model}");
    let needles = [
        name.as_str(),
        "SPAN_KIND_CLIENT",
        &trace,
        &parent,
        id,
        "gen_ai.first_token",
        "gen_ai.usage.output_tokens",
        "gen_ai.response.finish_reasons",
        "e2e-service",
    ];
    let output = rotel.wait_for_output(&needles, Duration::from_secs(15));
    for needle in needles {
        assert!(
            output.contains(needle),
            "no {needle:?} in rotel's output:\n{output}"
        );
    }
}

#[test]
fn with_no_collector_a_minute_of_streams_is_counted_exactly_in_bounded_memory() {
    let _serial = serial();
    const SECONDS: u64 = 60;
    /// A fixed bound for the agent's anonymous memory: it holds the
    /// tokenizer's tables (most of the ~50 MiB it starts with), the span
    /// queue, the reassembly and call tables, all capped.
    const RSS_LIMIT_KIB: u64 = 100 * 1024;
    /// Growth allowed from a third into the run to its end: allocator
    /// noise. A leak of 6 KiB per call (some 300 calls) crosses it.
    const RSS_GROWTH_KIB: u64 = 2 * 1024;
    const CHUNKS: u64 = 6;
    let server = MockServer::paced_tls(CHUNKS, 20, 10);
    let model = "e2e-no-collector";
    // Nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let script = format!(
        "url=$1; body=$2; tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01; \
         end=$(( $(date +%s) + $3 )); n=0; \
         while [ $(date +%s) -lt $end ]; do {CURL_CALL} || exit 1; n=$((n + 1)); done; \
         echo \"calls $n\""
    );
    let args = [server.base_url(), chat_body(model), SECONDS.to_string()];
    let mut shell = HeldProcess::shell(&script, &args, server.cert.as_deref().unwrap());
    let (agent, addr) = watch(
        &shell,
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc"],
    );
    let agent_pid = agent.pid();
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(SECONDS) {
            samples.push((
                started.elapsed().as_secs(),
                memory_kib(agent_pid, "RssAnon"),
            ));
            std::thread::sleep(Duration::from_secs(2));
        }
        samples
    });
    let printed = shell.run();
    let samples = sampler.join().unwrap();
    let calls: f64 = printed
        .iter()
        .find_map(|l| l.strip_prefix("calls "))
        .and_then(|n| n.parse().ok())
        .expect("the loop says how many calls it made");
    assert!(calls >= 100.0, "only {calls} calls in {SECONDS} s");

    let text = scrape_until(addr, Duration::from_secs(20), |text| {
        calls_counted(text, model) == Some(calls)
            && otlp_counter(text, "llmtap_spans_dropped_total") == calls
    });
    assert_eq!(calls_counted(&text, model), Some(calls), "{text}");
    assert_eq!(
        scraped(
            &text,
            "llm_total_tokens_total",
            &[("model", model), ("token_type", "output")]
        ),
        Some(calls * CHUNKS as f64)
    );
    assert_eq!(
        otlp_counter(&text, "llmtap_spans_dropped_total"),
        calls,
        "{text}"
    );
    assert_eq!(
        otlp_counter(&text, "llmtap_spans_exported_total"),
        0.0,
        "{text}"
    );
    assert!(
        otlp_counter(&text, "llmtap_exporter_failures_total") >= 1.0,
        "{text}"
    );

    let peak = samples.iter().map(|&(_, kib)| kib).max().unwrap();
    assert!(
        peak < RSS_LIMIT_KIB,
        "agent RssAnon reached {peak} KiB: {samples:?}"
    );
    // After the first third, memory stays level: no growth per call.
    let settled = samples
        .iter()
        .find(|&&(at, _)| at >= SECONDS / 3)
        .unwrap()
        .1;
    let last = samples.last().unwrap().1;
    assert!(
        last <= settled + RSS_GROWTH_KIB,
        "agent RssAnon grew from {settled} to {last} KiB: {samples:?}"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
    eprintln!("{calls} calls; agent RssAnon samples (s, KiB): {samples:?}");
}

#[test]
fn every_bad_setting_is_one_line_naming_it_and_a_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: &[(&str, &str, &str)] = &[
        (
            "LLM_SLOW_REQUEST_THRESHOLD_SECONDS",
            "--slow-request-threshold-seconds",
            "-1",
        ),
        (
            "LLM_SLOW_TOKEN_RATE_THRESHOLD",
            "--slow-token-rate-threshold",
            "-0.5",
        ),
        (
            "LLM_SLOW_TOKEN_RATE_THRESHOLD",
            "--slow-token-rate-threshold",
            "fast",
        ),
        ("TELEMETRY_SAMPLE_RATE", "--telemetry-sample-rate", "2"),
        ("TELEMETRY_SAMPLE_RATE", "--telemetry-sample-rate", "-0.1"),
        ("LLMTAP_METRICS_ADDR", "--metrics-addr", "localhost"),
        ("LLMTAP_METRICS_ADDR", "--metrics-addr", "127.0.0.1:99999"),
        ("LLMTAP_METRICS_ADDR", "--metrics-addr", &taken),
        ("ENABLE_TELEMETRY", "--enable-telemetry", "maybe"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "--otlp-endpoint",
            "collector:4317",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "--otlp-endpoint",
            "ftp://collector:4317",
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "--otlp-protocol",
            "http/json",
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS", "--otlp-headers", "novalue"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "--otlp-timeout", "0"),
        ("JAEGER_ENDPOINT", "--jaeger-endpoint", "jaeger"),
        ("LLMTAP_MAX_LABEL_VALUES", "--max-label-values", "0"),
        ("LLMTAP_MAX_CHUNK_EVENTS", "--max-chunk-events", "-3"),
        ("LLMTAP_OTLP_QUEUE_SIZE", "--otlp-queue-size", "many"),
    ];
    let all_vars: Vec<&str> = cases.iter().map(|(env, _, _)| *env).collect();
    // Runs llmtap on a command that would succeed, with the setting given
    // by `set`: only the setting can make it fail. Returns its stderr.
    let rejected = |how: &str, set: &dyn Fn(&mut Command)| -> String {
        let mut command = Command::new(llmtap_bin());
        for var in &all_vars {
            command.env_remove(var);
        }
        // Not the default port, which something else may hold.
        command.env("LLMTAP_METRICS_ADDR", "127.0.0.1:0");
        set(&mut command);
        let output = command.args(["--", "true"]).output().expect("run llmtap");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "{how}: exit 0\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{how}: not one line:\n{stderr}");
        stderr
    };
    for &(env, flag, value) in cases {
        // The endpoint must be set for the protocol to matter.
        let endpoint: &[&str] = match env {
            "OTEL_EXPORTER_OTLP_PROTOCOL" => &["--otlp-endpoint", "http://127.0.0.1:4317"],
            _ => &[],
        };
        let as_flag = rejected(&format!("{flag} {value}"), &|c| {
            c.args(endpoint).args([flag, value]);
        });
        let as_env = rejected(&format!("{env}={value}"), &|c| {
            c.args(endpoint).env(env, value);
        });
        for stderr in [as_flag, as_env] {
            assert!(
                stderr.contains(env) && stderr.contains(flag),
                "{flag} {value}: the setting is not named: {stderr}"
            );
        }
    }
    // The capture settings are flags only.
    for (flag, value) in [
        ("--capture-bytes", "0"),
        ("--capture-bytes", "20000"),
        ("--ring-buffer-kib", "3000"),
        ("--pid", "self"),
        ("--exe", ""),
        ("--metrics-bearer-token-file", "/dev/zero"),
    ] {
        let stderr = rejected(&format!("{flag} {value}"), &|c| {
            c.args([flag, value]);
        });
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    // The log filter is a variable only.
    let stderr = rejected("LLMTAP_LOG=[[", &|c| {
        c.env("LLMTAP_LOG", "[[");
    });
    assert!(stderr.contains("LLMTAP_LOG"), "{stderr}");
}

#[test]
fn a_client_in_another_process_is_not_counted() {
    let _serial = serial();
    const CALLS: u32 = 3;
    const CHUNKS: u32 = 10;
    let server = MockServer::paced_tls(CHUNKS.into(), 40, 40);
    let cert = server.cert.clone().unwrap();
    let (watched_model, other_model) = ("e2e-watched", "e2e-unwatched");
    let watched_report = ClientReport::new();
    let mut shell = HeldProcess::shell(
        "\"$@\"",
        &openai_client(&server, watched_model, CALLS, &watched_report),
        &cert,
    );
    let (agent, addr) = watch(&shell, &[]);
    // The same client, the same library, the same server, at the same
    // time, twice as long: only not a descendant of the watched process.
    let other_report = ClientReport::new();
    let other_command = openai_client(&server, other_model, 2 * CALLS, &other_report);
    let mut other = Command::new(&other_command[0]);
    other.args(&other_command[1..]);
    client_env(&mut other, Some(&cert));
    let mut other = other.spawn().expect("start the unwatched client");
    shell.run();
    assert!(other.wait().unwrap().success());
    let watched = watched_report.calls();
    let unwatched = other_report.calls();
    assert_eq!(unwatched.len(), 2 * CALLS as usize);
    assert!(unwatched.iter().all(|c| c["error"].is_null()));
    // The two clients' calls overlapped in time.
    let span = |calls: &[Value]| {
        (
            calls[0]["start_ns"].as_u64().unwrap(),
            calls.last().unwrap()["end_ns"].as_u64().unwrap(),
        )
    };
    let (w, u) = (span(&watched), span(&unwatched));
    assert!(
        w.0 < u.1 && u.0 < w.1,
        "the clients did not overlap: {w:?} {u:?}"
    );

    let text = scrape_until(addr, Duration::from_secs(10), |text| {
        calls_counted(text, watched_model) == Some(f64::from(CALLS))
    });
    assert_eq!(
        calls_counted(&text, watched_model),
        Some(f64::from(CALLS)),
        "{text}"
    );
    assert_eq!(
        scraped(&text, "llm_total_tokens_total", &[("token_type", "output")]),
        Some(f64::from(CALLS * CHUNKS))
    );
    assert!(
        !text.contains(other_model),
        "the unwatched client shows:\n{text}"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

/// Runs `llmtap -- sh` with `ENABLE_TELEMETRY` set as given; the shell
/// lists what llmtap's open files are, then exits 3. Returns llmtap's
/// stderr and those files' targets (`anon_inode:bpf-prog` for a program).
fn agent_files_while_a_command_runs(enable_telemetry: Option<&str>) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("fds");
    let mut agent = Command::new(llmtap_bin());
    if let Some(value) = enable_telemetry {
        agent.env("ENABLE_TELEMETRY", value);
    }
    // The shell's parent is llmtap. Its own files only: other agents on
    // the host may have BPF programs of the same names loaded.
    let output = agent
        .args(["--metrics-addr", "127.0.0.1:0", "--"])
        .args([
            "sh",
            "-c",
            "for fd in /proc/$PPID/fd/*; do readlink \"$fd\"; done > \"$1\"; exit 3",
            "sh",
        ])
        .arg(&seen)
        .output()
        .expect("run llmtap");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let files = std::fs::read_to_string(&seen).expect("the command ran");
    (stderr, files.lines().map(str::to_owned).collect())
}

#[test]
fn with_telemetry_disabled_nothing_is_attached_and_the_command_still_runs() {
    let _serial = serial();
    let (stderr, files) = agent_files_while_a_command_runs(Some("false"));
    assert!(stderr.contains("ENABLE_TELEMETRY is false"), "{stderr}");
    assert!(!files.is_empty(), "llmtap has open files");
    assert!(
        !files.iter().any(|f| f.starts_with("anon_inode:bpf")),
        "{files:?}"
    );
    // The same look while llmtap captures sees its programs and maps.
    let (stderr, files) = agent_files_while_a_command_runs(None);
    assert!(
        files.iter().any(|f| f == "anon_inode:bpf-prog"),
        "{files:?}\n{stderr}"
    );
    assert!(files.iter().any(|f| f == "anon_inode:bpf-map"), "{files:?}");
}
