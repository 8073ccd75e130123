//! The exporters against real receivers, no kernel needed: OTLP spans to
//! the in-test receiver (gRPC and HTTP/protobuf) and to the third-party
//! `rotel` (PyPI), the collector-down path, sampling, `promtool check
//! metrics` on a scrape, and a real Prometheus scraping the endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmtap::calls::fixture::streamed_call;
use llmtap::calls::{ErrorType, LlmCall, OutputChunk, Timings};
use llmtap::config::{
    ExportSettings, MetricsEndpointSettings, OtlpProtocol, OtlpSettings, SlowThresholds,
};
use llmtap::export::metrics_server::MetricsServer;
use llmtap::export::otlp::OtlpExporter;
use llmtap::export::prometheus::MetricsRegistry;
use llmtap::stream::ConnectionId;
use llmtap::workload::Workload;
use llmtap_tests::otlp_receiver::{OtlpReceiver, ReceivedSpan, SpanKind};
use llmtap_tests::prometheus::{free_port, http_get, promtool_check_metrics, scraped, Prometheus};
use llmtap_tests::rotel::Rotel;
use prometheus::IntCounterVec;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

const CONTAINER: &str = "3f4e1b2c9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
const POD_UID: &str = "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b";

/// The fixture call, from a request carrying a `traceparent`, in pod
/// `prod/chat-0` ([`workload`]): 2 s long, first token at +0.2 s, 4 output
/// chunks 0.2 s apart, 11 in and 4 out tokens, 5 tokens/s (slow: under 10).
fn call() -> LlmCall {
    let mut call = streamed_call("gpt-4o-mini", &[]);
    call.connection_id = ConnectionId(7);
    call.max_tokens = Some(16);
    call.trace_id = Some(TRACE.into());
    call.parent_span_id = Some(PARENT.into());
    call.response_model = Some("gpt-4o-mini-2024-07-18".into());
    call.response_id = Some("chatcmpl-42".into());
    call.usage.input_tokens = Some(11);
    call.usage.output_tokens = Some(4);
    call.timings = Timings {
        t0_ns: T0,
        request_sent_ns: Some(T0 + S / 100),
        first_byte_ns: Some(T0 + S / 20),
        first_chunk_ns: Some(T0 + S / 10),
        first_output_ns: Some(T0 + S / 5),
        last_output_ns: Some(T0 + 4 * S / 5),
        end_ns: Some(T0 + 2 * S),
        output_chunks: 4,
        chunks: (1..=4)
            .map(|i| OutputChunk {
                t_ns: T0 + i * S / 5,
                tokens: 1,
            })
            .collect(),
        chunks_dropped: 0,
    };
    call
}

/// The workload of [`call`]'s process: pod `prod/chat-0`.
fn workload() -> Workload {
    Workload {
        container_id: Some(CONTAINER.into()),
        pod_uid: Some(POD_UID.into()),
        pod_name: Some("chat-0".into()),
        pod_namespace: Some("prod".into()),
        container_name: None,
    }
}

/// Settings as the defaults, with `service` as SERVICE_NAME and traces to
/// `otlp` (at most 3 chunk events per span).
fn settings(otlp: Option<(String, OtlpProtocol)>) -> ExportSettings {
    ExportSettings {
        enabled: true,
        service_name: Some("test-client".into()),
        slow: SlowThresholds {
            duration_seconds: 5.0,
            token_rate: 10.0,
        },
        metrics: MetricsEndpointSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            bearer_token: None,
            tls: None,
        },
        max_label_values: 100,
        otlp: otlp.map(|(endpoint, protocol)| OtlpSettings {
            endpoint,
            protocol,
            headers: vec![("x-test".into(), "1".into())],
            timeout: Duration::from_secs(2),
            sample_rate: 1.0,
            max_chunk_events: 3,
            queue_size: 64,
        }),
    }
}

/// The `exporter="otlp"` value of a health counter.
fn otlp(counter: &IntCounterVec) -> u64 {
    counter.with_label_values(&["otlp"]).get()
}

fn registry() -> MetricsRegistry {
    MetricsRegistry::new(&settings(None)).unwrap()
}

fn start_exporter(settings: &ExportSettings, metrics: &MetricsRegistry) -> OtlpExporter {
    OtlpExporter::start(settings, metrics.health())
        .unwrap()
        .expect("an endpoint is set")
}

fn check_span(received: &ReceivedSpan) {
    let span = &received.span;
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert_eq!(
        (span.start_time_unix_nano, span.end_time_unix_nano),
        (T0, T0 + 2 * S)
    );
    assert_eq!(received.str_attr("gen_ai.operation.name"), Some("chat"));
    assert_eq!(received.str_attr("gen_ai.provider.name"), Some("openai"));
    assert_eq!(
        received.str_attr("gen_ai.request.model"),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        received.str_attr("gen_ai.response.model"),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(received.str_attr("gen_ai.response.id"), Some("chatcmpl-42"));
    assert_eq!(received.int_attr("gen_ai.usage.input_tokens"), Some(11));
    assert_eq!(received.int_attr("gen_ai.usage.output_tokens"), Some(4));
    assert_eq!(received.str_attr("server.address"), Some("127.0.0.1"));
    assert_eq!(received.int_attr("server.port"), Some(8443));
    assert!(received.attr("gen_ai.response.finish_reasons").is_some());
    // 8 tokens/s is under the 10 tokens/s threshold.
    assert!(received.attr("llmtap.slow").is_some());
    assert_eq!(received.int_attr("llmtap.chunk_events.dropped"), Some(1));
    let events: Vec<_> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        events,
        [
            "gen_ai.first_token",
            "gen_ai.chunk",
            "gen_ai.chunk",
            "gen_ai.chunk"
        ]
    );
    assert_eq!(span.events[0].time_unix_nano, T0 + S / 5);
    assert_eq!(span.dropped_events_count, 1);
    let resource = |key| match received.resource_attr(key) {
        Some(v) => format!("{v:?}"),
        None => String::new(),
    };
    assert!(resource("service.name").contains("test-client"));
    assert!(resource("process.pid").contains("4242"));
    assert!(resource("process.executable.name").contains("python3"));
    assert!(!resource("host.name").is_empty());
    assert!(resource("container.id").contains(CONTAINER));
    assert!(resource("k8s.pod.uid").contains(POD_UID));
    assert!(resource("k8s.pod.name").contains("chat-0"));
    assert!(resource("k8s.namespace.name").contains("prod"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exports the fixture call's span to `grpc` or `http` (a base URL) and
/// shuts the exporter down; returns its metrics.
async fn send_one(protocol: OtlpProtocol, grpc: SocketAddr, http: SocketAddr) -> MetricsRegistry {
    let endpoint = match protocol {
        OtlpProtocol::Grpc => format!("http://{grpc}"),
        OtlpProtocol::HttpProtobuf => format!("http://{http}/v1/traces"),
    };
    let metrics = registry();
    let exporter = start_exporter(&settings(Some((endpoint, protocol))), &metrics);
    exporter.export(&call(), &workload());
    exporter.shutdown(Duration::from_secs(10)).await;
    metrics
}

async fn export_one(protocol: OtlpProtocol) {
    let receiver = OtlpReceiver::start().await;
    let metrics = send_one(protocol, receiver.grpc_addr, receiver.http_addr).await;
    let spans = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        spans[0].via,
        if protocol == OtlpProtocol::Grpc {
            "grpc"
        } else {
            "http"
        }
    );
    check_span(&spans[0]);
    let text = String::from_utf8(metrics.encode()).unwrap();
    assert!(
        text.contains("llmtap_spans_exported_total{exporter=\"otlp\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_reaches_a_real_receiver_over_grpc() {
    export_one(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_reaches_a_real_receiver_over_http_protobuf() {
    export_one(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_export_never_blocks_and_every_span_is_counted_dropped() {
    let port = free_port();
    let mut down = settings(Some((
        format!("http://127.0.0.1:{port}"),
        OtlpProtocol::Grpc,
    )));
    down.otlp.as_mut().unwrap().queue_size = 16;
    let metrics = registry();
    let exporter = start_exporter(&down, &metrics);
    let call = call();
    let calls = 5_000;
    let started = Instant::now();
    for _ in 0..calls {
        exporter.export(&call, &workload());
    }
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_secs(2),
        "5000 exports took {spent:?}"
    );
    let dropped = metrics.health().spans_dropped.with_label_values(&["otlp"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped.get() < calls && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dropped.get(), calls);
    assert!(otlp(&metrics.health().exporter_failures) >= 1);
    assert_eq!(otlp(&metrics.health().spans_exported), 0);
    exporter.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_times_out_and_its_spans_are_counted_dropped() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let endpoint = match protocol {
            OtlpProtocol::Grpc => format!("http://{addr}"),
            OtlpProtocol::HttpProtobuf => format!("http://{addr}/v1/traces"),
        };
        let mut slow = settings(Some((endpoint, protocol)));
        let otlp_settings = slow.otlp.as_mut().unwrap();
        otlp_settings.queue_size = 16;
        otlp_settings.timeout = Duration::from_millis(500);
        let metrics = registry();
        let exporter = start_exporter(&slow, &metrics);
        let call = call();
        let started = Instant::now();
        for _ in 0..200 {
            exporter.export(&call, &workload());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(20);
        while otlp(&metrics.health().spans_dropped) < 200 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(otlp(&metrics.health().spans_dropped), 200, "{protocol:?}");
        assert!(otlp(&metrics.health().exporter_failures) >= 1);
        exporter.shutdown(Duration::from_secs(5)).await;
    }
    // Shutting down while an export hangs abandons the queue: counted too.
    let mut hanging = settings(Some((format!("http://{addr}"), OtlpProtocol::Grpc)));
    hanging.otlp.as_mut().unwrap().timeout = Duration::from_secs(30);
    let metrics = registry();
    let exporter = start_exporter(&hanging, &metrics);
    for _ in 0..10 {
        exporter.export(&call(), &workload());
    }
    let started = Instant::now();
    exporter.shutdown(Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(otlp(&metrics.health().spans_dropped), 10);
    holder.abort();
}

async fn sampled(rate: f64, calls: u64) -> (usize, u64) {
    let receiver = OtlpReceiver::start().await;
    let mut sampling = settings(Some((receiver.grpc_endpoint(), OtlpProtocol::Grpc)));
    let otlp = sampling.otlp.as_mut().unwrap();
    otlp.sample_rate = rate;
    otlp.queue_size = 1024;
    let metrics = registry();
    let exporter = start_exporter(&sampling, &metrics);
    for _ in 0..calls {
        let mut c = call();
        // A fresh trace per call, so the ratio applies across calls.
        c.trace_id = None;
        c.parent_span_id = None;
        exporter.export(&c, &workload());
        metrics.record(&c, &workload());
    }
    exporter.shutdown(Duration::from_secs(10)).await;
    let text = String::from_utf8(metrics.encode()).unwrap();
    // Metrics count every call, sampled or not.
    assert!(
        text.contains(&format!(
            "llmtap_calls_sampled_out_total {}",
            calls - receiver.spans().len() as u64
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "llm_request_duration_seconds_count{{container_id=\"{CONTAINER}\",k8s_namespace=\"prod\",k8s_pod=\"chat-0\",model=\"gpt-4o-mini\",operation=\"chat\",provider=\"openai\",service=\"test-client\",side=\"client\",status=\"200\"}} {calls}"
    )));
    (
        receiver.spans().len(),
        metrics.health().calls_sampled_out.get(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_keeps_the_configured_share_of_spans() {
    assert_eq!(sampled(0.0, 200).await, (0, 200));
    assert_eq!(sampled(1.0, 200).await, (200, 0));
    let (kept, out) = sampled(0.5, 400).await;
    assert_eq!(kept as u64 + out, 400);
    // Binomial(400, 0.5): sd 10, so 140..260 is 6 sd either way.
    assert!((140..=260).contains(&kept), "kept {kept} of 400 at 0.5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_no_problem_in_a_scrape_of_the_endpoint() {
    let metrics = Arc::new(registry());
    metrics.record(&call(), &workload());
    let mut failed = call();
    failed.outcome.error_type = Some(ErrorType::Http5xx);
    failed.outcome.http_status = Some(500);
    metrics.record(&failed, &workload());
    metrics.health().events_read.inc_by(10);
    metrics
        .health()
        .parse_failures
        .with_label_values(&["http"])
        .inc();
    let server = MetricsServer::spawn(&settings(None).metrics, metrics.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let (status, text) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap()
        .expect("the endpoint answers");
    assert_eq!(status, 200);
    assert_eq!(
        scraped(
            &text,
            "llm_error_count_total",
            &[("error_type", "http_5xx")]
        ),
        Some(1.0),
        "{text}"
    );
    promtool_check_metrics(&text).unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_exact_values_with_a_bearer_token() {
    let metrics = Arc::new(registry());
    let settings = MetricsEndpointSettings {
        addr: "127.0.0.1:0".parse().unwrap(),
        bearer_token: Some("scrape-me".into()),
        tls: None,
    };
    let server = MetricsServer::spawn(&settings, metrics.clone())
        .await
        .unwrap();
    metrics.record(&call(), &workload());
    metrics.record(&call(), &workload());
    let target = server.local_addr();
    let prometheus = tokio::task::spawn_blocking(move || {
        let prometheus = Prometheus::start(target, Some("scrape-me"));
        let wait = Duration::from_secs(30);
        prometheus.wait_for_value(r#"up{job="llmtap"}"#, 1.0, wait);
        prometheus.wait_for_value(
            r#"sum(llm_request_duration_seconds_count{model="gpt-4o-mini",k8s_namespace="prod",k8s_pod="chat-0"})"#,
            2.0,
            wait,
        );
        prometheus.wait_for_value(r#"sum(llm_request_duration_seconds_sum)"#, 4.0, wait);
        prometheus.wait_for_value(r#"llm_total_tokens_total{token_type="output"}"#, 8.0, wait);
        prometheus.wait_for_value(r#"llm_total_tokens_total{token_type="input"}"#, 22.0, wait);
        prometheus.wait_for_value(r#"sum(llm_time_to_first_token_seconds_sum)"#, 0.4, wait);
        prometheus.wait_for_value(r#"llm_slow_requests_total{reason="token_rate"}"#, 2.0, wait);
        prometheus.wait_for_value(
            r#"sum(gen_ai_client_operation_time_per_output_chunk_seconds_count)"#,
            6.0,
            wait,
        );
        prometheus
    })
    .await
    .unwrap();
    drop(prometheus);
    server.shutdown().await;
}

async fn export_to_rotel(protocol: OtlpProtocol) -> String {
    let rotel = tokio::task::spawn_blocking(Rotel::start).await.unwrap();
    let metrics = send_one(protocol, rotel.grpc_addr, rotel.http_addr).await;
    assert_eq!(otlp(&metrics.health().spans_exported), 1);
    tokio::task::spawn_blocking(move || {
        rotel.wait_for_output(
            &["chat gpt-4o-mini", "gen_ai.first_token"],
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotel_receives_the_span_over_grpc_and_http() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let output = export_to_rotel(protocol).await;
        for needle in [
            "chat gpt-4o-mini",
            "SPAN_KIND_CLIENT",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            "gen_ai.request.model",
            "gen_ai.usage.output_tokens",
            "gen_ai.first_token",
            "test-client",
        ] {
            assert!(
                output.contains(needle),
                "{protocol:?}: no {needle:?} in rotel's output:\n{output}"
            );
        }
    }
}
