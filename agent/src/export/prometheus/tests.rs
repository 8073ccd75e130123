use super::*;
use crate::calls::fixture::streamed_call;
use crate::stream::WallNanos;
use crate::workload::Workload;

const S: u64 = 1_000_000_000;

fn registry(max: usize) -> MetricsRegistry {
    let mut settings = crate::config::test_settings();
    settings.max_label_values = max;
    MetricsRegistry::new(&settings).unwrap()
}

fn call(model: &str, chunks: &[WallNanos]) -> LlmCall {
    streamed_call(model, chunks)
}

/// Output chunks at t0 + 0.25 s and at `second`.
fn two_chunks(second: u64) -> [WallNanos; 2] {
    [10 * S + S / 4, second]
}

fn scrape(r: &MetricsRegistry) -> String {
    String::from_utf8(r.encode()).unwrap()
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[test]
fn histogram_buckets_are_the_specs() {
    let expected_duration: Vec<f64> = (0..14).map(|i| 0.01 * f64::from(1u32 << i)).collect();
    for (got, want) in DURATION_BUCKETS.iter().zip(&expected_duration) {
        assert!((got - want).abs() < 1e-9, "{got} != {want}");
    }
    let expected_tokens: Vec<f64> = (0..14).map(|i| 4f64.powi(i)).collect();
    assert_eq!(TOKEN_BUCKETS.to_vec(), expected_tokens);
    assert_eq!(TOKEN_BUCKETS[13], 67108864.0);

    let r = registry(10);
    let chunks = two_chunks(11 * S);
    r.record(&call("m", &chunks), &Workload::default());
    let text = scrape(&r);
    let les = |family: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}_bucket{{")))
            .map(|l| {
                l.split("le=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let dur = [
        "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12", "10.24",
        "20.48", "40.96", "81.92", "+Inf",
    ];
    for family in [
        metric::GENAI_OPERATION_DURATION,
        metric::GENAI_TIME_TO_FIRST_CHUNK,
        metric::GENAI_TIME_PER_OUTPUT_CHUNK,
        metric::REQUEST_DURATION,
        metric::TIME_TO_FIRST_TOKEN,
    ] {
        assert_eq!(les(family), dur, "{family}");
    }
    let tok: Vec<String> = (0..14)
        .map(|i| 4u64.pow(i).to_string())
        .chain(["+Inf".into()])
        .collect();
    // Two series (input and output), same buckets.
    assert_eq!(les(metric::GENAI_TOKEN_USAGE), [tok.clone(), tok].concat());
}

const ID: &str = "3f4e1b2c9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

#[test]
fn records_every_family_with_its_labels() {
    let r = registry(10);
    let chunks = two_chunks(10 * S + S / 2);
    let ok = call("gpt-4o", &chunks);
    let workload = Workload {
        container_id: Some(ID.into()),
        pod_name: Some("chat-0".into()),
        pod_namespace: Some("prod".into()),
        ..Workload::default()
    };
    let mut failed = ok.clone();
    failed.outcome.error_type = Some(crate::calls::ErrorType::StreamTruncated);
    r.record(&ok, &workload);
    r.record(&failed, &workload);
    let text = scrape(&r);
    // Labels come out sorted by name: the workload's are split around others.
    let container = format!(r#"container_id="{ID}""#);
    let pod = r#"k8s_namespace="prod",k8s_pod="chat-0""#;
    let call =
        r#"model="gpt-4o",operation="chat",provider="openai",service="chat-0",side="client""#;
    let seed = format!("{container},{pod},{call}");
    assert_eq!(
        line(
            &text,
            &format!("llm_total_tokens_total{{{seed},token_type=\"input\"}}")
        )
        .split(' ')
        .nth(1),
        Some("24")
    );
    assert_eq!(
        line(
            &text,
            &format!("llm_total_tokens_total{{{seed},token_type=\"output\"}}")
        )
        .split(' ')
        .nth(1),
        Some("6")
    );
    line(
        &text,
        &format!(
            "llm_error_count_total{{{container},error_type=\"stream_truncated\",{pod},{call}}} 1"
        ),
    );
    line(
        &text,
        &format!("llm_request_duration_seconds_count{{{seed},status=\"200\"}} 2"),
    );
    line(
        &text,
        &format!("llm_request_duration_seconds_sum{{{seed},status=\"200\"}} 12"),
    );
    line(
        &text,
        &format!("llm_time_to_first_token_seconds_sum{{{seed}}} 0.5"),
    );
    line(
        &text,
        &format!("llm_token_generation_rate_count{{{seed}}} 2"),
    );
    // 6 s > 5 s and 4 tokens/s < 10: slow both ways.
    let slow = |reason| {
        format!(
            r#"llm_slow_requests_total{{{container},{pod},model="gpt-4o",operation="chat",provider="openai",reason="{reason}",service="chat-0",side="client"}} 2"#
        )
    };
    line(&text, &slow("duration"));
    line(&text, &slow("token_rate"));
    let genai = r#"gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o",gen_ai_response_model="gpt-4o""#;
    let genai = |error: &str| {
        format!(
            r#"{container},error_type="{error}",{genai},{pod},server_address="127.0.0.1",side="client""#
        )
    };
    line(
        &text,
        &format!(
            "gen_ai_client_operation_duration_seconds_count{{{}}} 1",
            genai("")
        ),
    );
    line(
        &text,
        &format!(
            "gen_ai_client_operation_duration_seconds_count{{{}}} 1",
            genai("stream_truncated")
        ),
    );
    line(
        &text,
        &format!(
            r#"gen_ai_client_token_usage_sum{{{container},error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o",gen_ai_response_model="gpt-4o",gen_ai_token_type="output",{pod},server_address="127.0.0.1",side="client"}} 3"#
        ),
    );
    line(
        &text,
        &format!(
            "gen_ai_client_operation_time_per_output_chunk_seconds_sum{{{}}} 0.25",
            genai("")
        ),
    );
    line(
        &text,
        &format!(
            "gen_ai_client_operation_time_to_first_chunk_seconds_sum{{{}}} 0.1",
            genai("")
        ),
    );
}

#[test]
fn untrusted_models_fold_into_other_and_are_counted() {
    let r = registry(2);
    for model in ["a", "b", "c", "d", "a"] {
        r.record(&call(model, &[]), &Workload::default());
    }
    let text = scrape(&r);
    assert!(
        text.contains(
            r#"llm_request_duration_seconds_count{container_id="",k8s_namespace="",k8s_pod="",model="other","#
        ),
        "{text}"
    );
    assert!(!text.contains(r#"model="c""#));
    line(
        &text,
        &format!(
            "llmtap_label_values_folded_total{{metric=\"{}\"}} 2",
            metric::REQUEST_DURATION
        ),
    );
    line(
        &text,
        r#"llm_request_duration_seconds_count{container_id="",k8s_namespace="",k8s_pod="",model="a",operation="chat",provider="openai",service="python3",side="client",status="200"} 2"#,
    );
}

#[test]
fn health_counters_are_exposed() {
    let r = registry(2);
    r.health().events_lost.inc_by(7);
    r.health().open_streams.set(3);
    r.health()
        .spans_dropped
        .with_label_values(&[value::EXPORTER_OTLP])
        .inc();
    let text = scrape(&r);
    line(&text, "llmtap_events_lost_total 7");
    line(&text, "llmtap_open_streams 3");
    line(&text, "llmtap_spans_dropped_total{exporter=\"otlp\"} 1");
}
