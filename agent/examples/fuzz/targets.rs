//! The fuzz targets: one stage (or the whole path) each, fed mutated
//! fixtures; each returns how much it produced, to show inputs get deep.

use super::*;

/// Framing caps small enough to be hit, heads from `min_head` bytes.
fn http_limits(rng: &mut Rng, min_head: usize) -> HttpLimits {
    HttpLimits {
        max_head_bytes: min_head + rng.below(8192),
        max_decoded_body: 1 + rng.below(1 << 16) as u64,
        max_streams: 1 + rng.below(8),
        max_pending: 1 + rng.below(4),
    }
}

/// HTTP framing alone; yields the decoded body bytes.
pub fn http(rng: &mut Rng, seeds: &Seeds) -> u64 {
    let events = mutated_events(rng, &seeds.connections, seeds);
    let limits = http_limits(rng, 64);
    let mut conn = HttpConnection::new(Side::Unknown, limits);
    let mut bytes = 0usize;
    let mut sink = |e: ExchangeEvent<'_>| {
        if let ExchangeEvent::Message {
            event: HttpEvent::Body { bytes: b, .. },
            ..
        } = e
        {
            bytes += b.len();
        }
    };
    for event in &events {
        match event {
            StreamEvent::Opened(info) => conn = HttpConnection::new(info.side, limits),
            StreamEvent::Data(c) => {
                let time = ChunkTime {
                    start: c.call_start,
                    end: c.call_end,
                };
                let _ = conn.feed(c.direction, c.gap_before, &c.bytes, time, &mut sink);
            }
            StreamEvent::Closed { .. } => conn.close(&mut sink),
        }
    }
    bytes as u64
}

/// HTTP/2 framing and HPACK alone on the HTTP/2 fixtures, then the calls
/// stage on the same events (streams keyed by id); yields the decoded body
/// bytes and the records.
pub fn http2(rng: &mut Rng, seeds: &Seeds) -> u64 {
    let events = mutated_events(rng, &seeds.http2, seeds);
    let limits = http_limits(rng, 16);
    let side = [Side::Client, Side::Server][rng.below(2)];
    let mut conn = if rng.chance(4) {
        Http2Connection::upgraded(side, limits)
    } else {
        Http2Connection::new(side, limits)
    };
    let mut produced = 0u64;
    let mut sink = |e: ExchangeEvent<'_>| {
        if let ExchangeEvent::Message {
            event: HttpEvent::Body { bytes, .. },
            ..
        } = e
        {
            produced += bytes.len() as u64;
        }
    };
    for event in &events {
        if let StreamEvent::Data(c) = event {
            let time = ChunkTime {
                start: c.call_start,
                end: c.call_end,
            };
            let _ = conn.feed(c.direction, c.gap_before, &c.bytes, time, &mut sink);
        }
    }
    let mut tracker = CallTracker::new(Limits {
        http: limits,
        ..Limits::default()
    });
    for event in &events {
        for call in tracker.on_event(ConnectionId(1), event) {
            let _ = serde_json::to_string(&call);
            produced += 1;
        }
    }
    produced
}

/// SSE and NDJSON framing, then every provider on every frame; yields the
/// frames.
pub fn sse(rng: &mut Rng, seeds: &Seeds) -> u64 {
    let mut body = seeds.bodies[rng.below(seeds.bodies.len())].clone();
    mutate(rng, &mut body, &seeds.corpus);
    let max = 1 + rng.below(4096);
    let mut sse = SseParser::new(max);
    let mut ndjson = NdjsonParser::new(max);
    let mut frames = Vec::new();
    for piece in cuts(rng, &body) {
        sse.feed(piece, &mut |f| {
            frames.push((f.event.to_vec(), f.data.to_vec()))
        });
        ndjson.feed(piece, &mut |f| frames.push((Vec::new(), f.data.to_vec())));
    }
    ndjson.finish(&mut |f| frames.push((Vec::new(), f.data.to_vec())));
    for (event, data) in &frames {
        decode_everywhere(Frame { event, data });
    }
    frames.len() as u64
}

/// Every provider and operation on one frame; yields the frames decoded.
fn decode_everywhere(frame: Frame<'_>) -> u64 {
    let apis = [
        Api::Chat,
        Api::TextCompletion,
        Api::Responses,
        Api::GenerateContent,
    ];
    let mut decoded = 0;
    for provider in PROVIDERS {
        for api in apis {
            let mut out = llmtap::providers::ResponseInfo::new(64);
            decoded += u64::from(provider.decoder(api).frame(frame, &mut out).is_ok());
            let _ = provider.decoder(api).body(frame.data, &mut out);
        }
    }
    decoded
}

/// Provider decoders on mutated frame payloads, and request reading;
/// yields the frames decoded.
pub fn providers(rng: &mut Rng, seeds: &Seeds) -> u64 {
    let mut data = seeds.frames[rng.below(seeds.frames.len())].clone();
    mutate(rng, &mut data, &seeds.frames);
    let decoded = decode_everywhere(Frame {
        event: b"",
        data: &data,
    });
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&data) {
        let targets = [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/responses",
            "/openai/deployments/x/chat/completions",
            "/v1/messages",
            "/api/chat",
            "/api/generate",
            "/v1beta/models/g:streamGenerateContent",
        ];
        for target in targets {
            let head = llmtap::http::RequestHead {
                method: "POST".into(),
                target: target.into(),
                headers: Vec::new(),
            };
            if let Some((provider, api)) = llmtap::providers::claim(&head) {
                let _ = provider.request(api, &head, Some(&value));
            }
        }
    }
    decoded
}

/// The whole path, with small random caps; yields the records.
pub fn calls(rng: &mut Rng, seeds: &Seeds) -> u64 {
    let events = mutated_events(rng, &seeds.connections, seeds);
    let limits = Limits {
        max_connections: 1 + rng.below(3),
        http: http_limits(rng, 64),
        max_request_body: rng.below(4096),
        max_response_body: rng.below(4096),
        max_event_bytes: 1 + rng.below(4096),
        max_output_text: rng.below(256),
        max_chunks: rng.below(16),
        keep_content: rng.below(2) == 1,
    };
    let mut tracker = CallTracker::new(limits);
    let mut records = 0;
    for event in &events {
        // Now and then an event strays to another connection.
        let id = if rng.chance(50) { 2 } else { 1 };
        for call in tracker.on_event(ConnectionId(id), event) {
            // Serializing is part of the path (`--print`).
            let _ = serde_json::to_string(&call);
            let _ = call.timings.inter_chunk_gaps().count();
            records += 1;
        }
    }
    records
}

/// Packets to connection events, with the frames and their order damaged;
/// yields the data bytes delivered.
pub fn tcp(rng: &mut Rng, seeds: &Seeds) -> u64 {
    let (link, frames) = &seeds.captures[rng.below(seeds.captures.len())];
    let corpus: Vec<Vec<u8>> = frames.iter().map(|(_, f)| f.clone()).collect();
    let mut frames = frames.clone();
    for _ in 0..rng.below(12) {
        let i = rng.below(frames.len());
        match rng.below(6) {
            0 => {
                let j = rng.below(frames.len());
                frames.swap(i, j);
            }
            1 => frames.insert(i, frames[i].clone()),
            2 => drop(frames.remove(i)),
            3 => {
                let len = rng.below(frames[i].1.len() + 1);
                frames[i].1.truncate(len);
            }
            4 => frames[i].0 = rng.next() % (frames[i].0 * 2 + 1),
            _ => mutate(rng, &mut frames[i].1, &corpus),
        }
        if frames.is_empty() {
            return 0;
        }
    }
    let limits = TcpLimits {
        max_flows: 1 + rng.below(3),
        max_buffered: rng.below(4096),
        hole_timeout_ns: rng.next() % 2_000_000_000,
        idle_timeout_ns: rng.next() % 400_000_000_000,
    };
    let mut stage = PacketStage::new(*link, limits);
    let mut events = Vec::new();
    let mut last = 0;
    for (at, frame) in &frames {
        stage.push(*at, frame, &mut events);
        last = *at;
    }
    stage.finish(last, &mut events);
    let mut open = std::collections::HashMap::new();
    let mut delivered = 0;
    for (id, event) in &events {
        match event {
            StreamEvent::Opened(_) => {
                assert!(open.insert(*id, true).is_none(), "{id:?} opened twice")
            }
            StreamEvent::Data(chunk) => {
                assert_eq!(open.get(id), Some(&true), "{id:?} data outside its life");
                delivered += chunk.bytes.len() as u64;
            }
            StreamEvent::Closed { .. } => {
                assert_eq!(
                    open.insert(*id, false),
                    Some(true),
                    "{id:?} closed unopened or twice"
                )
            }
        }
    }
    assert!(
        open.values().all(|o| !o),
        "a connection left open at the end"
    );
    delivered
}
