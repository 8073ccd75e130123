//! Packet capture end to end: `llmtap --read` replays the checked-in
//! captures in `tests/fixtures/pcap/` (real tcpdump recordings of the
//! openai Python SDK streaming from mock-llm over plain HTTP, and rewrites
//! of them; `cargo run -p llmtap-tests --bin pcap-fixtures` makes them
//! again) and must report the call the client itself saw, timed by the
//! packets; and lost packets must show as gaps, never as bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use llmtap_tests::*;
use serde_json::Value;

/// A fixture by name: `NAME.pcapng` if the name says so, else `NAME.pcap`.
fn fixture(name: &str) -> PathBuf {
    let file = if name.ends_with(".pcapng") {
        name.to_string()
    } else {
        format!("{name}.pcap")
    };
    workspace_root().join("tests/fixtures/pcap").join(file)
}

/// `llmtap --read FIXTURE --print --print-payload --capture-content`: the
/// printed lines.
fn replay(name: &str) -> Vec<Value> {
    let output = Command::new(llmtap_bin())
        .arg("--read")
        .arg(fixture(name))
        .args([
            "--print",
            "--print-payload",
            "--capture-content",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run llmtap");
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    json_lines(&output.stdout)
}

/// The one call the client made, from its own report.
fn client_call(name: &str) -> Value {
    let name = name.trim_end_matches(".pcapng");
    let path = workspace_root().join(format!("tests/fixtures/pcap/{name}.client.json"));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    report["calls"][0].clone()
}

/// Every packet's capture time in the file, as tcpdump reads it.
fn packet_times(name: &str) -> BTreeSet<u64> {
    let output = Command::new("tcpdump")
        .args(["-tt", "-nn", "--time-stamp-precision=nano", "-r"])
        .arg(fixture(name))
        .output()
        .expect("tcpdump (cargo xtask setup installs it)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let (secs, nanos) = line.split_once(' ').unwrap().0.split_once('.').unwrap();
            secs.parse::<u64>().unwrap() * 1_000_000_000 + nanos.parse::<u64>().unwrap()
        })
        .collect()
}

/// The single call of a fixture, checked against the client's report and
/// the packets' times.
fn the_call(name: &str) -> Value {
    let lines = replay(name);
    let calls = call_lines(&lines);
    assert_eq!(calls.len(), 1, "{name}: {calls:#?}");
    let (call, client) = (calls[0].clone(), client_call(name));
    assert_eq!(call["pid"], 0, "packets name no process");
    assert_eq!(call["side"], "client");
    assert_eq!(call["provider"], "openai");
    assert_eq!(call["request_model"], "gpt-fixture");
    assert_eq!(call["response_model"], client["model"]);
    assert_eq!(call["response_id"], client["id"]);
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
    assert_eq!(call["response_truncated"], false);
    // Timed by the packets: each instant is a packet's capture time, and
    // the first token's comes before the client read it (the same clock),
    // by no more than a busy machine's scheduling delay.
    let times = packet_times(name);
    for field in ["request_sent_ns", "first_output_ns", "end_ns"] {
        let t = call[field].as_u64().unwrap();
        assert!(
            times.contains(&t),
            "{name}: {field} {t} is no packet's time"
        );
    }
    let first = call["first_output_ns"].as_i64().unwrap();
    let client_first = client["first_token_ns"].as_i64().unwrap();
    assert!(
        (0..10_000_000).contains(&(client_first - first)),
        "{name}: first token at {first}, the client had it at {client_first}"
    );
    let gaps: Vec<&Value> = lines
        .iter()
        .filter(|l| l["gap_before"].as_u64() > Some(0))
        .collect();
    assert!(gaps.is_empty(), "{name}: gaps {gaps:#?}");
    call
}

/// A call record without what names its connection.
fn record_without_ids(call: &Value) -> Value {
    let mut call = call.clone();
    call.as_object_mut().unwrap().remove("connection_id");
    call
}

#[test]
fn captures_replay_to_the_clients_own_call() {
    the_call("ipv4");
    the_call("ipv6");
}

#[test]
fn other_link_layers_formats_and_retransmissions_give_the_identical_record() {
    let base = record_without_ids(&the_call("ipv4"));
    for name in [
        "ipv4-vlan",
        "ipv4-sll2",
        "ipv4-retransmitted",
        "ipv4.pcapng",
    ] {
        assert_eq!(record_without_ids(&the_call(name)), base, "{name}");
    }
}

#[test]
fn a_reordered_segment_is_readable_only_when_the_hole_is_filled() {
    let base = the_call("ipv4");
    let reordered = the_call("ipv4-reordered");
    let times = |call: &Value| -> Vec<u64> {
        call["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["t_ns"].as_u64().unwrap())
            .collect()
    };
    let (b, r) = (times(&base), times(&reordered));
    assert_eq!(b.len(), r.len());
    // The segment that came first waited for the one before it: its
    // chunk is timed at the second's arrival, every other chunk as sent.
    let moved: Vec<usize> = (0..b.len()).filter(|&i| r[i] != b[i]).collect();
    assert_eq!(moved.len(), 1, "{b:?} vs {r:?}");
    assert_eq!(r[moved[0]], b[moved[0] + 1]);
    let strip = |c: &Value| {
        let mut c = record_without_ids(c);
        let o = c.as_object_mut().unwrap();
        for timing in [
            "chunks",
            "tpot_s",
            "tokens_per_second",
            "first_output_ns",
            "ttft_s",
        ] {
            o.remove(timing);
        }
        c
    };
    assert_eq!(strip(&reordered), strip(&base));
}

#[test]
fn a_lost_segment_is_a_gap_and_the_call_stops_there() {
    let ingress = |lines: &[Value]| -> (Vec<u8>, Vec<u64>) {
        let conns: BTreeMap<u64, CapturedConnection> = connections(lines);
        assert_eq!(conns.len(), 1);
        let gaps = lines
            .iter()
            .filter(|l| l["direction"] == "ingress")
            .map(|l| l["gap_before"].as_u64().unwrap())
            .collect();
        (conns[&0].bytes(false), gaps)
    };
    let (whole, _) = ingress(&replay("ipv4"));
    let lossy_lines = replay("ipv4-lossy");
    let (cut, gaps) = ingress(&lossy_lines);
    let gap: Vec<u64> = gaps.into_iter().filter(|&g| g > 0).collect();
    assert_eq!(gap.len(), 1, "one hole");
    let gap = gap[0] as usize;
    assert_eq!(cut.len() + gap, whole.len());
    // The bytes around the hole are the original's, the hole's are not there.
    let at = whole.iter().zip(&cut).position(|(a, b)| a != b).unwrap();
    assert_eq!(cut[..at], whole[..at]);
    assert_eq!(cut[at..], whole[at + gap..]);
    // The call is kept, cut where the hole is: what came before it is the
    // whole capture's, nothing after it is claimed.
    let lossy = call_lines(&lossy_lines);
    assert_eq!(lossy.len(), 1, "{lossy:#?}");
    let (call, base) = (&lossy[0], the_call("ipv4"));
    assert_eq!(call["error_type"], "capture_incomplete");
    assert_eq!(call["response_truncated"], true);
    assert_eq!(call["end_ns"], Value::Null);
    assert_eq!(call["duration_s"], Value::Null);
    assert_eq!(call["finish_reasons"], serde_json::json!([]));
    for same in ["response_id", "response_model", "first_output_ns", "t0_ns"] {
        assert_eq!(call[same], base[same], "{same}");
    }
    let chunks = call["chunks"].as_array().unwrap();
    let base_chunks = base["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty() && chunks.len() < base_chunks.len());
    assert_eq!(chunks[..], base_chunks[..chunks.len()]);
}

#[test]
fn a_missing_or_bad_file_is_one_line() {
    let run = |path: &str| {
        Command::new(llmtap_bin())
            .args(["--read", path, "--metrics-addr", "127.0.0.1:0"])
            .output()
            .unwrap()
    };
    assert_one_line_error(&run("/nonexistent.pcap"), "cannot read /nonexistent.pcap");
    let not_pcap = fixture("ipv4").with_extension("client.json");
    assert_one_line_error(&run(not_pcap.to_str().unwrap()), "unknown file format");
}

/// The openai Python SDK client against `server`, at real-time priority
/// (so its reads follow the packets), under the eBPF agent; returns what
/// the eBPF agent printed.
fn ebpf_run_of_the_client(server: &MockServer, model: &str) -> AgentRun {
    let script = workspace_root().join("tests/clients/openai_stream.py");
    let (script, url, report) = (
        script.display().to_string(),
        server.base_url(),
        ClientReport::new(),
    );
    let output = report.arg();
    let command = [
        "python3", &script, &url, "--model", model, "--output", &output,
    ];
    run_agent_on_command_in_real_time(&[], &command, server.cert.as_deref())
}

#[test]
fn live_capture_on_lo_gives_the_ebpf_paths_call_record() {
    let _serial = serial();
    let server = MockServer::start(
        false,
        &[
            "--chunks",
            "10",
            "--chunk-delay-ms",
            "30",
            "--first-token-delay-ms",
            "80",
        ],
    );
    let mut packets = RunningAgent::capturing_packets_on_lo(server.addr.port());
    let metrics = packets.metrics_addr();
    let ebpf = ebpf_run_of_the_client(&server, "gpt-live");
    assert!(ebpf.status.success(), "{}", ebpf.stderr);
    // The client closed its connection: the packet side ends the flow on
    // the FINs, and the call is out without a stop.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (_, scrape) = llmtap_tests::prometheus::http_get(metrics, "/metrics").expect("/metrics");
    let packets = packets.stop();
    assert!(packets.status.success(), "{}", packets.stderr);
    let (pcap_calls, ebpf_calls) = (call_lines(&packets.lines), call_lines(&ebpf.lines));
    assert_eq!(pcap_calls.len(), 1, "{pcap_calls:#?}\n{}", packets.stderr);
    assert_eq!(ebpf_calls.len(), 1, "{ebpf_calls:#?}");
    let (p, e) = (&pcap_calls[0], &ebpf_calls[0]);
    for field in [
        "provider",
        "api",
        "request_model",
        "response_model",
        "response_id",
        "http_status",
        "input_tokens",
        "output_tokens",
        "output_tokens_estimated",
        "output_chunks",
        "finish_reasons",
        "error_type",
        "server_port",
        "side",
    ] {
        assert_eq!(p[field], e[field], "{field}");
    }
    assert_eq!(p["request_model"], "gpt-live");
    assert_eq!(p["pid"], 0);
    let (p_ttft, e_ttft) = (p["ttft_s"].as_f64().unwrap(), e["ttft_s"].as_f64().unwrap());
    assert!(p_ttft > 0.080, "the server waited 80 ms: {p_ttft}");
    assert!(
        (p_ttft - e_ttft).abs() < 0.002,
        "TTFT: packets {p_ttft} s, eBPF {e_ttft} s"
    );

    use llmtap_tests::prometheus::scraped;
    let seen = scraped(&scrape, "llmtap_packets_seen_total", &[]).unwrap();
    assert!(seen >= 10.0, "a stream is many packets: {seen}");
    for by in ["kernel", "interface", "agent"] {
        assert_eq!(
            scraped(&scrape, "llmtap_packets_dropped_total", &[("by", by)]),
            Some(0.0),
            "{by}"
        );
    }
    assert_eq!(
        scraped(
            &scrape,
            "llmtap_flows_abandoned_total",
            &[("reason", "tls")]
        ),
        Some(0.0)
    );
}

#[test]
fn live_capture_drops_tls_flows_and_says_so() {
    let _serial = serial();
    let server = MockServer::start(true, &["--chunks", "3"]);
    let mut packets = RunningAgent::capturing_packets_on_lo(server.addr.port());
    let metrics = packets.metrics_addr();
    let ebpf = ebpf_run_of_the_client(&server, "gpt-tls");
    assert!(ebpf.status.success(), "{}", ebpf.stderr);
    assert_eq!(call_lines(&ebpf.lines).len(), 1, "the eBPF path reads TLS");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (_, scrape) = llmtap_tests::prometheus::http_get(metrics, "/metrics").expect("/metrics");
    let packets = packets.stop();
    assert!(
        call_lines(&packets.lines).is_empty(),
        "{:#?}",
        packets.lines
    );
    assert!(
        !packets.lines.iter().any(|l| l["type"] == "data"),
        "no TLS bytes are passed on"
    );
    assert_eq!(
        packets.stderr.matches("is TLS").count(),
        1,
        "{}",
        packets.stderr
    );
    let abandoned = llmtap_tests::prometheus::scraped(
        &scrape,
        "llmtap_flows_abandoned_total",
        &[("reason", "tls")],
    );
    assert_eq!(abandoned, Some(1.0));
}
