use super::*;
use crate::calls::fixture::streamed_call;

const S: u64 = 1_000_000_000;
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

fn options(max_chunk_events: usize) -> SpanOptions {
    SpanOptions {
        max_chunk_events,
        slow: SlowThresholds {
            duration_seconds: 5.0,
            token_rate: 10.0,
        },
        service_name: None,
    }
}

#[test]
fn the_resource_names_the_container_and_pod_when_known() {
    let mut process = ProcessKey {
        service: "chat-0".into(),
        pid: 7,
        executable: "python3".into(),
        workload: Workload::default(),
    };
    let get = |resource: &Resource, key: &'static str| {
        resource.get(&opentelemetry::Key::from_static_str(key))
    };
    let bare = resource(&process, "node-1");
    assert_eq!(get(&bare, attr::SERVICE_NAME), Some("chat-0".into()));
    assert_eq!(get(&bare, attr::CONTAINER_ID), None);
    assert_eq!(get(&bare, attr::K8S_POD_NAME), None);
    process.workload = Workload {
        container_id: Some("abc".into()),
        pod_uid: Some("uid".into()),
        pod_name: Some("chat-0".into()),
        pod_namespace: Some("prod".into()),
        container_name: None,
    };
    let full = resource(&process, "node-1");
    assert_eq!(get(&full, attr::CONTAINER_ID), Some("abc".into()));
    assert_eq!(get(&full, attr::K8S_POD_UID), Some("uid".into()));
    assert_eq!(get(&full, attr::K8S_POD_NAME), Some("chat-0".into()));
    assert_eq!(get(&full, attr::K8S_NAMESPACE_NAME), Some("prod".into()));
}

#[test]
fn the_parent_comes_from_the_records_traceparent_ids() {
    let mut call = streamed_call("m", &[]);
    assert!(remote_parent(&call).is_none());
    call.trace_id = Some(TRACE.into());
    call.parent_span_id = Some(PARENT.into());
    let parent = remote_parent(&call).unwrap();
    assert_eq!(parent.trace_id(), TraceId::from_hex(TRACE).unwrap());
    assert_eq!(parent.span_id(), SpanId::from_hex(PARENT).unwrap());
    assert!(parent.is_remote());
    call.parent_span_id = Some("0000000000000000".into());
    assert!(remote_parent(&call).is_none());
}

#[test]
fn span_carries_the_calls_attributes_events_and_parent() {
    let times: Vec<_> = (1..=5).map(|i| 10 * S + S / 4 + i * S / 10).collect();
    let mut call = streamed_call("gpt-4o-mini", &times);
    call.response_model = Some("gpt-4o-mini-2024".into());
    call.trace_id = Some(TRACE.into());
    call.parent_span_id = Some(PARENT.into());
    call.timings.chunks_dropped = 1;
    let parent = remote_parent(&call);
    let trace_id = parent.as_ref().unwrap().trace_id();
    let span_id = RandomIdGenerator::default().new_span_id();
    let span = build_span(
        &call,
        span_name(&call),
        trace_id,
        span_id,
        parent,
        &options(3),
    );
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(
        span.span_context.trace_id(),
        TraceId::from_hex(TRACE).unwrap()
    );
    assert_eq!(span.parent_span_id, SpanId::from_hex(PARENT).unwrap());
    assert!(span.parent_span_is_remote);
    assert_eq!(
        (span.start_time, span.end_time),
        (wall(10 * S), wall(16 * S))
    );
    let get = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(get(attr::GENAI_REQUEST_MODEL), Some("gpt-4o-mini".into()));
    assert_eq!(
        get(attr::GENAI_RESPONSE_MODEL),
        Some("gpt-4o-mini-2024".into())
    );
    assert_eq!(get(attr::GENAI_USAGE_OUTPUT_TOKENS), Some(3i64.into()));
    assert_eq!(get(attr::SERVER_PORT), Some(8443i64.into()));
    assert_eq!(get(attr::GENAI_REQUEST_STREAM), Some(true.into()));
    assert_eq!(
        get(attr::GENAI_RESPONSE_TIME_TO_FIRST_CHUNK),
        Some(0.1.into())
    );
    assert_eq!(get(attr::LLMTAP_SLOW), Some(true.into()));
    // Two past our cap of 3, one past reconstruction's list.
    assert_eq!(get(attr::LLMTAP_CHUNK_EVENTS_DROPPED), Some(3i64.into()));
    assert_eq!(get(attr::ERROR_TYPE), None);
    assert_eq!(span.status, Status::Unset);
    let names: Vec<_> = span.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            attr::EVENT_FIRST_TOKEN,
            attr::EVENT_CHUNK,
            attr::EVENT_CHUNK,
            attr::EVENT_CHUNK
        ]
    );
    assert_eq!(span.events[0].timestamp, wall(10 * S + S / 4));
    assert_eq!(span.events[1].timestamp, wall(times[0]));
    assert_eq!(span.events.dropped_count, 3);
}

#[test]
fn a_failed_call_without_an_end_has_error_status_and_a_last_seen_end() {
    let mut call = streamed_call("m", &[11 * S]);
    call.outcome.error_type = Some(crate::calls::ErrorType::ConnectionReset);
    call.timings.end_ns = None;
    call.request_model = None;
    let span = build_span(
        &call,
        span_name(&call),
        TraceId::from(1),
        SpanId::from(2),
        None,
        &options(8),
    );
    assert_eq!(span.name, "chat");
    assert_eq!(span.end_time, wall(11 * S));
    assert_eq!(span.status, Status::error("connection_reset"));
    assert!(span
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == attr::ERROR_TYPE));
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    call.response_model = Some("é".repeat(200));
    let span = build_span(
        &call,
        span_name(&call),
        TraceId::from(1),
        SpanId::from(2),
        None,
        &options(8),
    );
    let model = span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == attr::GENAI_RESPONSE_MODEL)
        .unwrap();
    assert_eq!(model.value.as_str().len(), MAX_ATTRIBUTE_BYTES);
}

#[test]
fn content_events_only_when_the_call_kept_its_text() {
    let mut call = streamed_call("m", &[11 * S]);
    let span = |call: &LlmCall| {
        build_span(
            call,
            span_name(call),
            TraceId::from(1),
            SpanId::from(2),
            None,
            &options(8),
        )
    };
    let names = |span: &SpanData| -> Vec<String> {
        span.events.iter().map(|e| e.name.to_string()).collect()
    };
    assert!(!names(&span(&call)).iter().any(|n| n.contains("content")));
    call.content = Some(crate::calls::CallContent {
        prompt: "why?".into(),
        completion: "x".repeat(MAX_CONTENT_BYTES + 1),
    });
    let span = span(&call);
    let names = names(&span);
    assert_eq!(
        names[names.len() - 2..],
        [attr::EVENT_CONTENT_PROMPT, attr::EVENT_CONTENT_COMPLETION]
    );
    let text = |i: usize| span.events[i].attributes[0].value.as_str().into_owned();
    assert_eq!(text(names.len() - 2), "why?");
    assert_eq!(text(names.len() - 1).len(), MAX_CONTENT_BYTES);
}
