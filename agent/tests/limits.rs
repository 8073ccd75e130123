//! Caps, failures and counters: bad or huge input is bounded, flagged on
//! the record and counted, and never spills into other connections.

mod common;

use llmtap::calls::{CallTracker, ErrorType, Limits, LlmCall};
use llmtap::stream::{ConnectionId, DataChunk, Direction, Side, StreamEvent};

fn fixture(name: &str, id: u64) -> Vec<StreamEvent> {
    common::load(
        &common::golden_dir().join(format!("{name}.jsonl")),
        ConnectionId(id),
    )
}

fn feed(tracker: &mut CallTracker, id: u64, events: &[StreamEvent]) -> Vec<LlmCall> {
    events
        .iter()
        .flat_map(|e| tracker.on_event(ConnectionId(id), e))
        .collect()
}

#[test]
fn caps_cut_lists_and_text_but_keep_timing() {
    let full = common::replay(&fixture("openai_chat_stream", 1));
    let mut tracker = CallTracker::new(Limits {
        max_chunks: 3,
        max_output_text: 8,
        ..Limits::default()
    });
    let calls = feed(&mut tracker, 1, &fixture("openai_chat_stream", 1));
    let (cut, full) = (&calls[0], &full[0]);
    assert_eq!(cut.timings.chunks.len(), 3);
    assert_eq!(cut.timings.chunks_dropped, 6);
    assert_eq!(cut.timings.output_chunks, full.timings.output_chunks);
    assert_eq!(cut.timings.last_output_ns, full.timings.last_output_ns);
    assert_eq!(cut.timings.ttft_s(), full.timings.ttft_s());
    assert!(cut.usage.output_tokens.unwrap() < full.usage.output_tokens.unwrap());
    let stats = tracker.stats();
    assert_eq!(stats.chunks_dropped, 6);
    assert_eq!(stats.output_text_truncated, 1);
}

#[test]
fn text_stays_off_the_record_unless_kept() {
    let events = fixture("openai_chat_stream", 1);
    assert_eq!(common::replay(&events)[0].content, None);
    let mut tracker = CallTracker::new(Limits {
        keep_content: true,
        max_output_text: 8,
        ..Limits::default()
    });
    let calls = feed(&mut tracker, 1, &events);
    let content = calls[0].content.as_ref().expect("content kept");
    assert!(content.prompt.contains("Say hello"), "{content:?}");
    // The completion is the counted text, under the same cap.
    assert_eq!(content.completion, "Hello, w");
}

#[test]
fn request_body_cap_keeps_the_call() {
    let mut tracker = CallTracker::new(Limits {
        max_request_body: 40,
        ..Limits::default()
    });
    let calls = feed(&mut tracker, 1, &fixture("openai_chat_stream_usage", 1));
    assert_eq!(calls.len(), 1);
    assert!(calls[0].outcome.request_truncated);
    assert_eq!(calls[0].request_model, None);
    assert_eq!(calls[0].usage.output_tokens, Some(9));
    assert_eq!(tracker.stats().request_bodies_truncated, 1);
}

#[test]
fn garbage_fails_one_connection_only() {
    let mut tracker = CallTracker::new(Limits::default());
    let good = fixture("anthropic_messages_stream", 1);
    let mut bad = fixture("openai_chat_stream", 2);
    // Corrupt the chunk-size line of the response's first read.
    if let Some(StreamEvent::Data(chunk)) = bad
        .iter_mut()
        .find(|e| matches!(e, StreamEvent::Data(c) if c.direction == Direction::Ingress))
    {
        let at = chunk
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        chunk.bytes[at] = b'z';
    }
    let mut calls = Vec::new();
    for pair in good.iter().zip(bad.iter()) {
        calls.extend(tracker.on_event(ConnectionId(1), pair.0));
        calls.extend(tracker.on_event(ConnectionId(2), pair.1));
    }
    calls.extend(feed(&mut tracker, 1, &good[bad.len().min(good.len())..]));
    calls.extend(feed(&mut tracker, 2, &bad[good.len().min(bad.len())..]));
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].provider, "anthropic");
    let stats = tracker.stats();
    assert_eq!((stats.parse_failures, stats.calls_lost), (1, 1));
    assert_eq!(tracker.open_connections(), 0);
}

#[test]
fn orphan_events_are_counted_as_a_connection_joined_midway() {
    let mut tracker = CallTracker::new(Limits::default());
    let tls = StreamEvent::Data(DataChunk {
        direction: Direction::Egress,
        tid: None,
        call_start: 1,
        call_end: 2,
        gap_before: 0,
        bytes: b"\x16\x03\x01\x00\xa5\x01\x00\x00".to_vec(),
    });
    // Never seen opening, and not the start of a request: whatever it
    // carries, it was joined in the middle.
    assert!(tracker.on_event(ConnectionId(9), &tls).is_empty());
    let stats = tracker.stats();
    assert_eq!(stats.events_without_open, 1);
    assert_eq!(stats.connections_joined_midway, 1);
    assert_eq!(stats.non_http_connections, 0);
    assert_eq!(stats.open_connections, 1);
    assert_eq!(tracker.open_connections(), 1);
}

#[test]
fn a_connection_joined_midway_skips_the_call_in_flight_and_records_the_next() {
    let whole = fixture("anthropic_messages_stream", 1);
    let StreamEvent::Opened(opened) = &whole[0] else {
        panic!("a fixture opens first")
    };
    // Its opening was not seen: the side is unknown.
    let mut info = opened.clone();
    info.side = Side::Unknown;
    let data: Vec<&StreamEvent> = whole
        .iter()
        .filter(|e| matches!(e, StreamEvent::Data(_)))
        .collect();
    let mut events = vec![StreamEvent::Opened(info)];
    // The tail of a response in flight, then a whole exchange on the
    // same connection (keep-alive), then the close.
    events.extend(data[3..].iter().map(|e| (*e).clone()));
    events.extend(whole[1..].iter().cloned());
    let mut tracker = CallTracker::new(Limits::default());
    let calls = feed(&mut tracker, 1, &events);
    assert_eq!(calls, common::replay(&whole));
    let stats = tracker.stats();
    assert_eq!(stats.connections_joined_midway, 1);
    assert_eq!((stats.parse_failures, stats.calls_lost), (0, 0));
    assert_eq!(tracker.open_connections(), 0);
}

#[test]
fn connection_cap_rejects_and_counts() {
    let mut tracker = CallTracker::new(Limits {
        max_connections: 1,
        ..Limits::default()
    });
    let a = fixture("openai_chat_nonstream", 1);
    let b = fixture("openai_chat_nonstream", 2);
    tracker.on_event(ConnectionId(1), &a[0]);
    tracker.on_event(ConnectionId(2), &b[0]);
    assert_eq!(tracker.open_connections(), 1);
    assert_eq!(tracker.stats().connections_rejected, 1);
}

#[test]
fn records_serialize_as_flat_json() {
    let calls = common::replay(&fixture("openai_chat_stream_usage", 1));
    let json = serde_json::to_value(&calls[0]).unwrap();
    assert_eq!(json["provider"], "openai");
    assert_eq!(json["api"], "chat");
    assert_eq!(json["side"], "client");
    assert_eq!(json["error_type"], serde_json::Value::Null);
    // No prompt or completion text anywhere.
    let text = json.to_string();
    assert!(!text.contains("Say hello") && !text.contains("How can I help"));
    assert!(!text.contains("sk-secret"));
    assert_eq!(calls[0].timings.inter_chunk_gaps().count(), 8);
}

/// The fixture's call with its `n`th response read lost (a capture gap).
fn with_response_read_lost(events: &[StreamEvent], n: usize) -> Vec<StreamEvent> {
    let ingress: Vec<usize> = (0..events.len())
        .filter(
            |&i| matches!(&events[i], StreamEvent::Data(c) if c.direction == Direction::Ingress),
        )
        .collect();
    let (lost, next) = (ingress[n], ingress[n + 1]);
    let StreamEvent::Data(lost_chunk) = &events[lost] else {
        unreachable!()
    };
    let mut lossy = events.to_vec();
    if let StreamEvent::Data(chunk) = &mut lossy[next] {
        chunk.gap_before = lost_chunk.bytes.len() as u64;
    }
    lossy.remove(lost);
    lossy
}

#[test]
fn a_capture_gap_keeps_the_call_as_incomplete_with_nothing_invented() {
    let whole = fixture("openai_chat_stream_usage", 1);
    let full = &common::replay(&whole)[0];
    // Read 5 lies inside one chunk's data, so the chunked framing steps over
    // it and sees the end; read 8 starts with a chunk-size line, so the
    // framing cannot go on and the response is cut there.
    for (lost, end_seen) in [(5, true), (8, false)] {
        let mut tracker = CallTracker::new(Limits::default());
        let calls = feed(&mut tracker, 1, &with_response_read_lost(&whole, lost));
        assert_eq!(calls.len(), 1, "read {lost}: the call is kept, not lost");
        let call = &calls[0];
        assert_eq!(call.outcome.error_type, Some(ErrorType::CaptureIncomplete));
        assert!(call.outcome.response_truncated);
        assert_eq!(call.timings.end_ns.is_some(), end_seen, "read {lost}");
        assert!(call.outcome.finish_reasons.is_empty());
        // What came before the hole is the whole call's, nothing after it.
        assert!(
            !call.timings.chunks.is_empty()
                && call.timings.chunks.len() < full.timings.chunks.len()
        );
        let times = |c: &LlmCall| c.timings.chunks.iter().map(|c| c.t_ns).collect::<Vec<_>>();
        assert!(times(full).starts_with(&times(call)));
        assert_eq!(call.timings.ttft_s(), full.timings.ttft_s());
        let stats = tracker.stats();
        assert_eq!((stats.capture_gaps, stats.calls_lost), (1, 0));
        assert_eq!(stats.parse_failures, 0);
    }
}

#[test]
fn a_stream_that_said_done_is_whole_even_if_the_connection_closes_before_its_framing_ends() {
    let whole = fixture("openai_chat_stream", 1);
    let mut events = whole.clone();
    let Some(StreamEvent::Data(last)) = events
        .iter_mut()
        .rev()
        .find(|e| matches!(e, StreamEvent::Data(_)))
    else {
        panic!("a fixture has data")
    };
    // The client closed after `[DONE]`, before reading the last chunk's end.
    let framing_end = b"\r\n0\r\n\r\n";
    assert!(last.bytes.ends_with(framing_end));
    last.bytes.truncate(last.bytes.len() - framing_end.len());
    let calls = common::replay(&events);
    assert_eq!(calls, common::replay(&whole));
    assert_eq!(calls[0].outcome.error_type, None);

    // Closed before the reply said it was done: the close is the error.
    let data_seen = 12;
    let mut cut: Vec<StreamEvent> = whole
        .iter()
        .filter(|e| matches!(e, StreamEvent::Opened(_) | StreamEvent::Data(_)))
        .take(data_seen)
        .cloned()
        .collect();
    cut.push(whole.last().expect("the close").clone());
    let calls = common::replay(&cut);
    assert_eq!(
        calls[0].outcome.error_type,
        Some(ErrorType::ConnectionClosed)
    );
    assert!(calls[0].outcome.finish_reasons.is_empty());
}

/// The first read of the response, where its head is.
fn first_response_read(events: &mut [StreamEvent]) -> &mut DataChunk {
    events
        .iter_mut()
        .find_map(|e| match e {
            StreamEvent::Data(c) if c.direction == Direction::Ingress => Some(c),
            _ => None,
        })
        .expect("a response")
}

/// The fixture with `from` replaced by `to` in its first response read.
fn with_response_head_changed(events: &[StreamEvent], from: &str, to: &str) -> Vec<StreamEvent> {
    let mut changed = events.to_vec();
    let chunk = first_response_read(&mut changed);
    let text = String::from_utf8(chunk.bytes.clone()).unwrap();
    assert!(text.contains(from), "{text}");
    chunk.bytes = text.replacen(from, to, 1).into_bytes();
    changed
}

/// One call, truncated, and in error because its connection closed.
fn assert_cut_by_the_close(calls: &[LlmCall]) {
    assert_eq!(calls.len(), 1);
    assert!(calls[0].outcome.response_truncated);
    assert_eq!(
        calls[0].outcome.error_type,
        Some(ErrorType::ConnectionClosed)
    );
}

#[test]
fn a_body_shorter_than_its_length_at_the_close_is_truncated_with_an_error() {
    let whole = fixture("openai_chat_nonstream", 1);
    assert_eq!(common::replay(&whole)[0].outcome.error_type, None);
    // The JSON that came is whole and says `stop`, yet 9,000 bytes more
    // were announced when the connection closed.
    let short = with_response_head_changed(&whole, "Content-Length: 454", "Content-Length: 9454");
    let calls = common::replay(&short);
    assert_cut_by_the_close(&calls);
    assert_eq!(
        calls[0].response_model.as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
}

#[test]
fn a_chunk_cut_by_the_close_is_truncated_but_a_missing_last_chunk_is_not() {
    let whole = fixture("openai_chat_stream", 1);
    // Every chunk but the last is whole: the client closed after `[DONE]`
    // without reading the body's end, as clients do.
    let mut no_end = whole.clone();
    let last_read = no_end
        .iter()
        .rposition(|e| matches!(e, StreamEvent::Data(c) if c.direction == Direction::Ingress))
        .unwrap();
    if let StreamEvent::Data(chunk) = &mut no_end[last_read] {
        let end = chunk
            .bytes
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .unwrap();
        chunk.bytes.truncate(end);
    }
    let calls = common::replay(&no_end);
    assert_eq!(calls[0].outcome.error_type, None);
    assert!(!calls[0].outcome.response_truncated);
    // A chunk size larger than what came before the close: the stream
    // read on as that chunk's data, and it is short.
    let first_size = {
        let text =
            String::from_utf8_lossy(&first_response_read(&mut whole.clone()).bytes).into_owned();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        format!("\r\n\r\n{}\r\n", &body[..body.find("\r\n").unwrap()])
    };
    let huge = with_response_head_changed(&whole, &first_size, "\r\n\r\nffffffffffff\r\n");
    assert_cut_by_the_close(&common::replay(&huge));
}
