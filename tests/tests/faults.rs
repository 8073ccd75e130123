//! Fault tests (issue 8): the real agent, real clients and real receivers
//! while something goes wrong. The watched client is killed mid-stream;
//! the agent itself is killed and restarted while streams are open; the
//! OTLP collector stops and comes back; a real Prometheus scrapes every
//! 100 ms under load; a tiny ring buffer overflows; responses of 10 MiB and
//! stream events of 1 MiB arrive. Each time the agent must count what it
//! lost, free what it held, stay within its memory, and record the next
//! calls exactly.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use llmtap_tests::prometheus::{scraped, Prometheus};
use llmtap_tests::rotel::Rotel;
use llmtap_tests::*;
use serde_json::Value;

/// Waits until `done` holds, failing with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes the mock server made so far whose bytes contain `needle`.
fn writes_with(server: &MockServer, needle: &str) -> usize {
    server
        .sent()
        .iter()
        .filter(|w| String::from_utf8_lossy(&w.bytes).contains(needle))
        .count()
}

/// A chat completion request body.
fn chat_request(model: &str, stream: bool, max_tokens: Option<u64>) -> String {
    let mut body = serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello to llmtap."}],
    });
    if stream {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    if let Some(max) = max_tokens {
        body["max_tokens"] = max.into();
    }
    body.to_string()
}

/// A curl command line making `calls` streamed or whole calls to
/// `$1/v1/chat/completions`, `parallel` at a time, each posting the
/// [`chat_request`] given as argument `$body_arg`; their output is thrown
/// away. `?call=N` tells the calls apart for curl (the mock and the agent
/// ignore the query); `-f`: an HTTP error fails it.
fn curl_chats(body_arg: u8, calls: u64, parallel: u64) -> String {
    format!(
        "curl -sS -f -N -Z --parallel-max {parallel} --max-time 60 \
         -H 'content-type: application/json' -d \"${body_arg}\" \
         \"$1/v1/chat/completions?call=[1-{calls}]\" > /dev/null"
    )
}

/// An SDK client script from `tests/clients` making `rounds` calls of
/// `model` (per thread), each round when [`step`] lets it, reporting into
/// `report`.
fn stepped_client(
    script: &str,
    server: &MockServer,
    model: &str,
    rounds: u32,
    extra: &[&str],
    report: &ClientReport,
) -> HeldProcess {
    let mut command = Command::new("python3");
    command
        .arg(client_script(script))
        .arg(server.base_url())
        .args(["--model", model, "--calls", &rounds.to_string(), "--step"])
        .args(extra)
        .arg("--output")
        .arg(&report.path);
    client_env(&mut command, server.cert.as_deref());
    HeldProcess::spawn(command)
}

/// Lets a stepped client make round `round` and waits until it is over.
fn step(client: &mut HeldProcess, round: u32) {
    client.send("go");
    assert_eq!(client.next_line(), format!("done {round}"));
}

/// The printed call records of `model`.
fn calls_of<'a>(lines: &'a [Value], model: &str) -> Vec<&'a Value> {
    call_lines(lines)
        .into_iter()
        .filter(|c| c["request_model"] == model)
        .collect()
}

/// Checks a recorded streamed call against the SDK client's own report of
/// it: the same response, tokens and no error, and the first token seen
/// by the agent (the read that returned it) before the client handed it to
/// the application, by little.
fn assert_matches_client(call: &Value, client: &Value, server: &MockServer, tokens: u64) {
    assert_eq!(call["response_id"], client["id"], "{call}");
    assert_eq!(call["output_tokens"], tokens, "{call}");
    assert_eq!(call["output_tokens_estimated"], false, "{call}");
    assert_eq!(call["error_type"], Value::Null, "{call}");
    assert_eq!(call["response_truncated"], false, "{call}");
    assert_eq!(call["server_port"], server.addr.port(), "{call}");
    let agent_first = call["first_output_ns"].as_u64().expect("first_output_ns");
    let client_first = client["first_token_ns"].as_u64().expect("first_token_ns");
    assert!(
        agent_first <= client_first && client_first - agent_first < 20_000_000,
        "first token at {agent_first} by the agent, {client_first} by the client"
    );
}

/// Entries in each per-process, per-thread and per-connection BPF map the
/// agent `pid` holds (found through its file descriptors), counted by
/// bpftool: the kernel's own account, beside the agent's. Names are as the
/// kernel cuts them, to 15 bytes.
fn kernel_map_entries(pid: u32) -> BTreeMap<String, usize> {
    // Per-socket state lives in socket storage, which the kernel frees
    // with the socket and bpftool cannot list.
    const STATE_MAPS: [&str; 6] = [
        "watched_pids",
        "tls_looked_at",
        "ssl_fds",
        "active_ssl_call",
        "thread_tls_fd",
        "active_go_calls",
    ];
    let bpftool = |args: &[&str]| -> Value {
        let out = Command::new("bpftool")
            .args(args)
            .output()
            .expect("bpftool (installed by cargo xtask setup)");
        assert!(out.status.success(), "bpftool {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("bpftool prints JSON")
    };
    let mut entries = BTreeMap::new();
    for (kind, id) in bpf_objects_of(pid) {
        if kind != "map" {
            continue;
        }
        let id = id.as_str();
        let map = bpftool(&["map", "show", "id", id, "--json"]);
        let name = map["name"].as_str().unwrap_or_default();
        if STATE_MAPS.contains(&name) {
            let dump = bpftool(&["map", "dump", "id", id, "--json"]);
            entries.insert(name.to_owned(), dump.as_array().unwrap().len());
        }
    }
    assert_eq!(
        entries.len(),
        STATE_MAPS.len(),
        "maps of pid {pid}: {entries:?}"
    );
    entries
}

/// Those of `objects` still loaded after up to `timeout` (the kernel
/// frees them shortly after the last reference goes, not at once).
fn still_loaded(objects: &[(&'static str, String)], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<String> = objects
            .iter()
            .filter(|(kind, id)| {
                Command::new("bpftool")
                    .args([kind, "show", "id", id.as_str()])
                    .output()
                    .is_ok_and(|out| out.status.success())
            })
            .map(|(kind, id)| format!("{kind} {id}"))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scrape taken after the agent's next refresh of the totals it reads
/// from elsewhere every second (the kernel's counters, reconstruction's).
fn scrape_after_refresh(addr: std::net::SocketAddr) -> String {
    std::thread::sleep(Duration::from_millis(1200));
    scrape(addr)
}

#[test]
fn a_client_killed_mid_stream_is_recorded_aborted_and_leaves_nothing_behind() {
    let _serial = serial();
    const CHUNKS: u64 = 40;
    let server = MockServer::paced_tls(CHUNKS, 50, 50);
    let model = "fault-sigkill";
    let report = ClientReport::new();
    // The client runs in the background so that its pid can be told.
    let script =
        "python3 \"$1\" \"$2\" --model \"$3\" --output \"$4\" & echo \"client $!\"; wait $!";
    let args = [
        client_script("openai_stream.py"),
        server.base_url(),
        model.into(),
        report.arg(),
    ];
    let mut shell = HeldProcess::shell(script, &args, server.cert.as_deref().unwrap());
    let shell_pid = shell.pid().to_string();
    let (agent, addr) = RunningAgent::attached(&["--pid", &shell_pid, "--print"]);
    // Once the agent has first refreshed its gauges.
    let gauges_before = bpf_map_gauges(&scrape_until(addr, Duration::from_secs(5), |t| {
        !bpf_map_gauges(t).is_empty()
    }));
    let kernel_before = kernel_map_entries(agent.pid());

    shell.send("go");
    let client: i32 = shell
        .next_line()
        .strip_prefix("client ")
        .and_then(|pid| pid.parse().ok())
        .expect("the shell names the client");
    wait_until(Duration::from_secs(30), "a few tokens", || {
        writes_with(&server, "\"delta\":{\"content\":\"") >= 5
    });
    // SAFETY: kill(2) on the client the test started.
    assert_eq!(unsafe { libc::kill(client, libc::SIGKILL) }, 0);
    assert_eq!(shell.next_line(), "exit 137", "the client died of SIGKILL");

    let aborted = |text: &str| {
        scraped(
            text,
            "llm_error_count_total",
            &[("model", model), ("error_type", "client_aborted")],
        )
    };
    let text = scrape_until(addr, Duration::from_secs(10), |t| aborted(t) == Some(1.0));
    assert_eq!(aborted(&text), Some(1.0), "{text}");
    assert_eq!(calls_counted(&text, model), Some(1.0), "{text}");
    // Nothing of the client stays: no stream, no process, no map entry
    // (the gauges are refreshed every second).
    let settled = |text: &str| {
        scraped(text, "llmtap_open_streams", &[]) == Some(0.0)
            && scraped(text, "llmtap_attached_processes", &[]) == Some(1.0)
            && bpf_map_gauges(text) == gauges_before
    };
    let text = scrape_until(addr, Duration::from_secs(5), settled);
    assert!(settled(&text), "state left behind: {text}");
    assert_eq!(
        kernel_map_entries(agent.pid()),
        kernel_before,
        "kernel map entries left behind"
    );

    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let calls = calls_of(&run.lines, model);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = calls[0];
    assert_eq!(call["error_type"], "client_aborted", "{call}");
    assert_eq!(call["http_status"], 200, "{call}");
    let chunks = call["output_chunks"].as_u64().unwrap();
    assert!((1..CHUNKS).contains(&chunks), "{call}");
    assert!(call["ttft_s"].as_f64().is_some(), "{call}");
}

#[test]
fn an_agent_restarted_mid_stream_misses_only_the_calls_in_flight_and_counts_them() {
    let _serial = serial();
    const CHUNKS: u64 = 50;
    // Five seconds a call: the new agent starts well within one.
    let server = MockServer::paced_tls(CHUNKS, 100, 100);
    let model = "fault-restart";
    let report = ClientReport::new();
    // Two threads, two connections; the anthropic SDK keeps each alive
    // from one call to the next.
    let mut client = stepped_client(
        "anthropic_stream.py",
        &server,
        model,
        3,
        &["--two-threads"],
        &report,
    );
    let pid = client.pid().to_string();
    let (first, first_addr) = RunningAgent::attached(&["--pid", &pid]);
    step(&mut client, 1);
    let text = scrape_until(first_addr, Duration::from_secs(10), |t| {
        calls_counted(t, model) == Some(2.0)
    });
    assert_eq!(calls_counted(&text, model), Some(2.0), "{text}");

    // Round 2 is under way on both connections when the agent dies ...
    client.send("go");
    let deltas = "content_block_delta";
    let round_one = writes_with(&server, deltas);
    wait_until(Duration::from_secs(10), "round 2's first tokens", || {
        writes_with(&server, deltas) >= round_one + 4
    });
    let first_objects = bpf_objects_of(first.pid());
    assert!(!first_objects.is_empty());
    first.kill();
    let (second, addr) = RunningAgent::attached(&["--pid", &pid, "--print"]);
    let second_objects = bpf_objects_of(second.pid());
    // ... and still is when the new one is watching.
    assert_eq!(
        writes_with(&server, "message_stop"),
        2,
        "round 2 ended before the new agent watched"
    );
    assert_eq!(client.next_line(), "done 2");
    step(&mut client, 3);

    let joined = |text: &str| scraped(text, "llmtap_connections_joined_midway_total", &[]);
    let text = scrape_until(addr, Duration::from_secs(10), |t| {
        calls_counted(t, model) == Some(2.0) && joined(t) == Some(2.0)
    });
    assert_eq!(joined(&text), Some(2.0), "{text}");
    assert_eq!(calls_counted(&text, model), Some(2.0), "{text}");
    for lost in [
        "llmtap_calls_lost_total",
        "llmtap_events_lost_total",
        "llm_error_count_total",
    ] {
        assert_eq!(
            scraped(&text, lost, &[]).unwrap_or(0.0),
            0.0,
            "{lost}: {text}"
        );
    }
    let run = second.stop();
    assert!(run.status.success(), "{}", run.stderr);

    // What the new agent recorded is round 3, exactly as the client got it.
    let reported = report.calls();
    let recorded = calls_of(&run.lines, model);
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    for thread in 0..2 {
        let theirs: Vec<&Value> = reported.iter().filter(|c| c["thread"] == thread).collect();
        let third = theirs[2];
        let call = recorded
            .iter()
            .find(|c| c["response_id"] == third["id"])
            .unwrap_or_else(|| panic!("round 3 of thread {thread} not recorded: {recorded:?}"));
        assert_matches_client(call, third, &server, CHUNKS);
    }
    // Neither agent, the killed one included, left anything loaded.
    let both = [first_objects, second_objects].concat();
    assert_eq!(
        still_loaded(&both, Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

#[test]
fn otlp_export_resumes_when_the_collector_comes_back_and_counts_what_it_dropped() {
    let _serial = serial();
    let server = MockServer::paced_tls(6, 20, 10);
    let model = "fault-collector";
    let report = ClientReport::new();
    let mut client = stepped_client("openai_stream.py", &server, model, 3, &[], &report);
    let collector = Rotel::start();
    let (grpc, http) = (collector.grpc_addr, collector.http_addr);
    let endpoint = format!("http://{grpc}");
    let pid = client.pid().to_string();
    let (agent, addr) = RunningAgent::attached(&[
        "--pid",
        &pid,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
    ]);
    let counters = |text: &str| {
        (
            otlp_counter(text, "llmtap_spans_exported_total"),
            otlp_counter(text, "llmtap_spans_dropped_total"),
        )
    };

    step(&mut client, 1);
    let text = scrape_until(addr, Duration::from_secs(10), |t| counters(t) == (1.0, 0.0));
    assert_eq!(counters(&text), (1.0, 0.0), "{text}");

    drop(collector);
    step(&mut client, 2);
    let text = scrape_until(addr, Duration::from_secs(15), |t| counters(t) == (1.0, 1.0));
    assert_eq!(counters(&text), (1.0, 1.0), "{text}");
    assert!(otlp_counter(&text, "llmtap_exporter_failures_total") >= 1.0);

    let collector = Rotel::start_on(grpc, http);
    step(&mut client, 3);
    let text = scrape_until(addr, Duration::from_secs(15), |t| counters(t) == (2.0, 1.0));
    assert_eq!(counters(&text), (2.0, 1.0), "{text}");
    let ids: Vec<String> = report.calls()[1..]
        .iter()
        .map(|c| c["id"].as_str().expect("response id").to_owned())
        .collect();
    let output = collector.wait_for_output(&[&ids[1]], Duration::from_secs(10));
    assert!(
        output.contains(&ids[1]),
        "no span of the call after the restart: {output}"
    );
    assert!(
        !output.contains(&ids[0]),
        "a span counted dropped arrived: {output}"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("OTLP export works again"),
        "{}",
        run.stderr
    );
}

#[test]
fn prometheus_scraping_every_100ms_under_load_gets_every_scrape_and_every_call() {
    let _serial = serial();
    const CALLS: u64 = 480;
    const PARALLEL: u64 = 24;
    const CHUNKS: u64 = 8;
    const INTERVAL: Duration = Duration::from_millis(100);
    let server = MockServer::paced_tls(CHUNKS, 30, 15);
    let model = "fault-scrape";
    let script = curl_chats(2, CALLS, PARALLEL);
    let args = [server.base_url(), chat_request(model, true, None)];
    let mut shell = HeldProcess::shell(&script, &args, server.cert.as_deref().unwrap());
    let (agent, addr) = RunningAgent::attached(&["--pid", &shell.pid().to_string()]);
    let prometheus = Prometheus::start_scraping_every(addr, None, INTERVAL);
    prometheus.wait_for_value("up", 1.0, Duration::from_secs(10));

    let started = Instant::now();
    shell.run();
    let total = format!("sum(llm_request_duration_seconds_count{{model=\"{model}\"}})");
    prometheus.wait_for_value(&total, CALLS as f64, Duration::from_secs(20));
    let tokens = format!("sum(llm_total_tokens_total{{model=\"{model}\",token_type=\"output\"}})");
    prometheus.wait_for_value(&tokens, (CALLS * CHUNKS) as f64, Duration::from_secs(5));

    // Over the whole load: every scrape succeeded, and one came every 100 ms.
    let window = started.elapsed();
    let range = format!("[{}ms]", window.as_millis());
    let value = |promql: String| -> f64 {
        let result = prometheus.query(&promql);
        assert_eq!(result.len(), 1, "{promql}: {result:?}");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(value(format!("min_over_time(up{range})")), 1.0);
    let scrapes = value(format!("count_over_time(up{range})"));
    let expected = window.as_secs_f64() / INTERVAL.as_secs_f64();
    assert!(
        scrapes >= 0.9 * expected,
        "{scrapes} scrapes in {window:?}, {expected} expected"
    );
    let slowest = value(format!("max_over_time(scrape_duration_seconds{range})"));
    assert!(
        slowest < INTERVAL.as_secs_f64(),
        "a scrape took {slowest} s"
    );
    assert_eq!(
        value(format!(
            "sum(resets(llm_request_duration_seconds_count{{model=\"{model}\"}}{range}))"
        )),
        0.0
    );
    let own = prometheus.self_metrics();
    for errors in [
        "prometheus_target_scrapes_exceeded_sample_limit_total",
        "prometheus_target_scrapes_sample_duplicate_timestamp_total",
        "prometheus_target_scrapes_sample_out_of_bounds_total",
        "prometheus_target_scrapes_sample_out_of_order_total",
    ] {
        assert_eq!(scraped(&own, errors, &[]), Some(0.0), "{errors}");
    }
    let text = scrape(addr);
    for lost in ["llmtap_events_lost_total", "llmtap_calls_lost_total"] {
        assert_eq!(scraped(&text, lost, &[]), Some(0.0), "{lost}: {text}");
    }
    assert_eq!(scraped(&text, "llm_error_count_total", &[]), None, "{text}");
    eprintln!("{CALLS} calls in {window:?}: {scrapes} scrapes, the slowest {slowest} s");
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn a_tiny_ring_buffer_overflows_counts_its_losses_and_records_the_next_call() {
    let _serial = serial();
    const CHUNKS: u64 = 12;
    // Streams written as fast as the server can, many at once ...
    let flood = MockServer::paced_tls(2000, 0, 0);
    let flood_script = curl_chats(2, 16, 8);
    let flood_args = [flood.base_url(), chat_request("fault-flood", true, None)];
    let mut burst = HeldProcess::shell(&flood_script, &flood_args, flood.cert.as_deref().unwrap());
    // ... then one SDK call at an ordinary pace.
    let quiet = MockServer::paced_tls(CHUNKS, 100, 20);
    let model = "fault-after-overflow";
    let report = ClientReport::new();
    let mut client = stepped_client("openai_stream.py", &quiet, model, 1, &[], &report);
    let pids = format!("{},{}", burst.pid(), client.pid());
    // The smallest ring buffer there is: one page.
    let (agent, addr) =
        RunningAgent::attached(&["--pid", &pids, "--ring-buffer-kib", "4", "--print"]);

    burst.run();
    let lost =
        || scraped(&scrape_after_refresh(addr), "llmtap_events_lost_total", &[]).unwrap_or(0.0);
    let lost_in_burst = lost();
    assert!(lost_in_burst > 0.0, "the ring buffer never overflowed");
    // Nothing of the flood stays, its exit records lost or not: no stream,
    // no process (the two shells are left), no TLS session.
    let settled = |text: &str| {
        let maps = bpf_map_gauges(text);
        scraped(text, "llmtap_open_streams", &[]) == Some(0.0)
            && scraped(text, "llmtap_attached_processes", &[]) == Some(2.0)
            && maps.get("ssl_fds") == Some(&0)
    };
    let text = scrape_until(addr, Duration::from_secs(5), settled);
    assert!(settled(&text), "state left behind: {text}");

    step(&mut client, 1);
    let text = scrape_until(addr, Duration::from_secs(10), |t| {
        calls_counted(t, model) == Some(1.0)
    });
    assert_eq!(calls_counted(&text, model), Some(1.0), "{text}");
    assert_eq!(lost(), lost_in_burst, "records lost on a quiet system");
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("the ring buffer was full"),
        "{}",
        run.stderr
    );
    let calls = calls_of(&run.lines, model);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_matches_client(calls[0], &report.calls()[0], &quiet, CHUNKS);
    let unreported = run
        .stderr
        .lines()
        .filter(|l| l.contains("without their exit reported"))
        .count();
    eprintln!("{lost_in_burst} records lost in the burst; exits made up {unreported} time(s)");
}

#[test]
fn ten_mib_bodies_and_one_mib_events_are_cut_counted_and_held_in_bounded_memory() {
    let _serial = serial();
    const CHUNKS: u64 = 10;
    const ROUNDS: u64 = 3;
    /// Peak memory the big responses may add to the agent's. Each round
    /// brings 11 MiB at once (a 10 MiB body and a 1 MiB event, beside an
    /// ordinary stream); an agent holding them whole would add that per
    /// round still open, and more to decode them.
    const GROWTH_LIMIT_KIB: u64 = 24 * 1024;
    let server = MockServer::paced_tls(CHUNKS, 20, 20);
    let huge = format!("big-tokens-{}", 1 << 20);
    let normal = "fault-beside-huge";
    let cert = server.cert.as_deref().unwrap();
    // Warm-up: an ordinary call, so that the baseline has every table.
    let mut warm_up = HeldProcess::shell(
        &curl_chats(2, 1, 1),
        &[server.base_url(), chat_request(normal, true, None)],
        cert,
    );
    // Each round at once: a whole body of 10 tokens of 1 MiB, a stream
    // whose one token (max_tokens 1) is a 1 MiB event, an ordinary stream.
    let round = format!(
        "for i in $(seq {ROUNDS}); do \
           {whole} & a=$!; \
           {event} & b=$!; \
           {ordinary} & c=$!; \
           wait $a && wait $b && wait $c || exit 1; \
         done",
        whole = curl_chats(3, 1, 1),
        event = curl_chats(4, 1, 1),
        ordinary = curl_chats(2, 1, 1),
    );
    let args = [
        server.base_url(),
        chat_request(normal, true, None),
        chat_request(&huge, false, None),
        chat_request(&huge, true, Some(1)),
    ];
    let mut big = HeldProcess::shell(&round, &args, cert);
    let pids = format!("{},{}", warm_up.pid(), big.pid());
    let (agent, addr) = RunningAgent::attached(&["--pid", &pids, "--print"]);
    warm_up.run();
    scrape_until(addr, Duration::from_secs(10), |t| {
        calls_counted(t, normal) == Some(1.0)
    });
    let baseline = memory_kib(agent.pid(), "VmRSS");

    big.run();
    let expected_calls = (ROUNDS * 2) as f64;
    scrape_until(addr, Duration::from_secs(20), |t| {
        calls_counted(t, &huge) == Some(expected_calls)
            && calls_counted(t, normal) == Some((ROUNDS + 1) as f64)
    });
    let text = scrape_after_refresh(addr);
    let peak = memory_kib(agent.pid(), "VmHWM");
    assert_eq!(calls_counted(&text, &huge), Some(expected_calls), "{text}");
    assert_eq!(calls_counted(&text, normal), Some((ROUNDS + 1) as f64));
    let truncated = |part: &str| scraped(&text, "llmtap_truncated_total", &[("part", part)]);
    // Every stream's 1 MiB event was dropped at the 1 MiB cap; every
    // response with a cut (the 10 MiB bodies at their 4 MiB cap, and those
    // streams) is counted once.
    assert_eq!(truncated("event"), Some(ROUNDS as f64), "{text}");
    assert_eq!(
        truncated("response_body"),
        Some((2 * ROUNDS) as f64),
        "{text}"
    );
    assert_eq!(scraped(&text, "llmtap_events_lost_total", &[]), Some(0.0));
    assert!(
        peak < baseline + GROWTH_LIMIT_KIB,
        "the agent's peak RSS {peak} KiB is over {baseline} KiB + {GROWTH_LIMIT_KIB} KiB"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);

    let huge_calls = calls_of(&run.lines, &huge);
    assert_eq!(huge_calls.len(), 2 * ROUNDS as usize);
    for call in &huge_calls {
        assert_eq!(call["http_status"], 200, "{call}");
        assert_eq!(call["error_type"], Value::Null, "{call}");
        assert_eq!(call["response_truncated"], true, "{call}");
    }
    for event_call in huge_calls.iter().filter(|c| c["stream"] == true) {
        // Its usage came after the dropped event.
        assert_eq!(event_call["output_tokens"], 1, "{event_call}");
        assert_eq!(event_call["output_chunks"], 0, "{event_call}");
    }
    let ordinary = calls_of(&run.lines, normal);
    assert_eq!(ordinary.len(), ROUNDS as usize + 1);
    for call in ordinary {
        assert_eq!(call["output_tokens"], CHUNKS, "{call}");
        assert_eq!(call["output_chunks"], CHUNKS, "{call}");
        assert_eq!(call["error_type"], Value::Null, "{call}");
        assert_eq!(call["response_truncated"], false, "{call}");
    }
    eprintln!("agent RSS {baseline} KiB before the big responses, peak {peak} KiB");
}
