use std::io::Write;

use loona_hpack::Encoder;

use super::*;
use crate::http::ExchangeId;

/// A frame's bytes.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn block(encoder: &mut Encoder<'static>, fields: &[(&str, &str)]) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

/// What a test sees of the events, owned.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Request(ExchangeId, String, String),
    Response(ExchangeId, u16),
    Body(ExchangeId, Role, String),
    Truncated(ExchangeId, Role),
    End(ExchangeId, Role, u64),
    Reset(ExchangeId),
}

/// Feeds `(direction, bytes, time)` chunks, `step` bytes at a time.
fn run(
    conn: &mut Http2Connection,
    chunks: &[(Direction, Vec<u8>, u64)],
    step: usize,
) -> Result<Vec<Seen>, FramingError> {
    let mut seen = Vec::new();
    for (direction, bytes, t) in chunks {
        for piece in bytes.chunks(step) {
            let time = ChunkTime { start: *t, end: *t };
            conn.feed(*direction, 0, piece, time, &mut |event| {
                seen.push(match event {
                    ExchangeEvent::Message {
                        exchange: id,
                        event,
                    } => match event {
                        HttpEvent::Head {
                            head: Head::Request(r),
                            ..
                        } => Seen::Request(id, r.method, r.target),
                        HttpEvent::Head {
                            head: Head::Response(r),
                            ..
                        } => Seen::Response(id, r.status),
                        HttpEvent::Body { role, bytes } => {
                            Seen::Body(id, role, String::from_utf8_lossy(bytes).into_owned())
                        }
                        HttpEvent::BodyTruncated { role } => Seen::Truncated(id, role),
                        HttpEvent::Cut { .. } => unreachable!("HTTP/2 fails on unframeable gaps"),
                        HttpEvent::ClosedShort { .. } => {
                            unreachable!("HTTP/2 ends streams by frames")
                        }
                        HttpEvent::End { role, last_byte } => Seen::End(id, role, last_byte.end),
                    },
                    ExchangeEvent::Reset { exchange: id } => Seen::Reset(id),
                })
            })?;
        }
    }
    // Body bytes may arrive in pieces: join neighbours.
    let mut joined: Vec<Seen> = Vec::new();
    for s in seen {
        if let (Some(Seen::Body(id, role, text)), Seen::Body(id2, role2, more)) =
            (joined.last_mut(), &s)
        {
            if id == id2 && role == role2 {
                text.push_str(more);
                continue;
            }
        }
        joined.push(s);
    }
    Ok(joined)
}

const OUT: Direction = Direction::Egress;
const IN: Direction = Direction::Ingress;

/// A client streaming two chat completions at once on streams 1 and 3,
/// with padding, priority, CONTINUATION and a gzip body.
fn two_streams() -> Vec<(Direction, Vec<u8>, u64)> {
    let (mut client, mut server) = (Encoder::new(), Encoder::new());
    let request = |enc: &mut Encoder<'static>| {
        block(
            enc,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", "127.0.0.1:8080"),
                (":path", "/v1/chat/completions"),
                ("content-type", "application/json"),
                ("authorization", "Bearer sk-secret"),
            ],
        )
    };
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(frame::SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
    let req1 = request(&mut client);
    hello.extend(frame(frame::HEADERS, frame::END_HEADERS, 1, &req1));
    hello.extend(frame(frame::DATA, frame::END_STREAM, 1, b"{\"a\":1}"));
    // Stream 3: priority and padding on HEADERS, the block split in two.
    let req3 = request(&mut client);
    let mut payload = vec![2];
    payload.extend([0, 0, 0, 1, 16]);
    payload.extend_from_slice(&req3[..3]);
    payload.extend([0, 0]);
    let mut second = frame(frame::HEADERS, frame::PADDED | frame::PRIORITY, 3, &payload);
    second.extend(frame(
        frame::CONTINUATION,
        frame::END_HEADERS,
        3,
        &req3[3..],
    ));
    // A padded DATA frame: pad length 3, then 3 bytes of padding.
    let mut data = vec![3];
    data.extend_from_slice(b"{\"b\":2}");
    data.extend([0, 0, 0]);
    second.extend(frame(
        frame::DATA,
        frame::PADDED | frame::END_STREAM,
        3,
        &data,
    ));

    let mut settings = frame(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    settings.extend(frame(frame::SETTINGS, frame::ACK, 0, &[]));
    let sse = block(
        &mut server,
        &[(":status", "200"), ("content-type", "text/event-stream")],
    );
    let gzip = block(
        &mut server,
        &[
            (":status", "200"),
            ("content-type", "text/event-stream"),
            ("content-encoding", "gzip"),
        ],
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"data: three\n\n").unwrap();
    let gz = gz.finish().unwrap();
    vec![
        (OUT, hello, 10),
        (OUT, second, 11),
        (IN, settings, 12),
        (IN, frame(frame::HEADERS, frame::END_HEADERS, 3, &sse), 13),
        (IN, frame(frame::HEADERS, frame::END_HEADERS, 1, &gzip), 14),
        (IN, frame(frame::DATA, 0, 3, b"data: one\n\n"), 15),
        (IN, frame(PING, 0, 0, &[0; 8]), 16),
        (IN, frame(frame::DATA, 0, 1, &gz), 17),
        (IN, frame(frame::DATA, frame::END_STREAM, 1, b""), 18),
        (
            IN,
            frame(frame::DATA, frame::END_STREAM, 3, b"data: two\n\n"),
            19,
        ),
    ]
}

/// PING, which the reader ignores.
const PING: u8 = 0x6;

fn expected() -> Vec<Seen> {
    let path = || ("POST".to_owned(), "/v1/chat/completions".to_owned());
    vec![
        Seen::Request(1, path().0, path().1),
        Seen::Body(1, Role::Request, "{\"a\":1}".into()),
        Seen::End(1, Role::Request, 10),
        Seen::Request(3, path().0, path().1),
        Seen::Body(3, Role::Request, "{\"b\":2}".into()),
        Seen::End(3, Role::Request, 11),
        Seen::Response(3, 200),
        Seen::Response(1, 200),
        Seen::Body(3, Role::Response, "data: one\n\n".into()),
        Seen::Body(1, Role::Response, "data: three\n\n".into()),
        Seen::End(1, Role::Response, 18),
        Seen::Body(3, Role::Response, "data: two\n\n".into()),
        Seen::End(3, Role::Response, 19),
    ]
}

#[test]
fn two_interleaved_streams_frame_alike_whole_and_byte_by_byte() {
    for step in [usize::MAX, 1, 7] {
        let mut conn = Http2Connection::new(Side::Client, HttpLimits::default());
        let seen = run(&mut conn, &two_streams(), step).unwrap();
        assert_eq!(seen, expected(), "step {step}");
        assert!(conn.streams.is_empty(), "finished streams are forgotten");
    }
}

#[test]
fn a_watched_server_sees_the_same_with_directions_swapped() {
    let swapped: Vec<_> = two_streams()
        .into_iter()
        .map(|(d, b, t)| (if d == OUT { IN } else { OUT }, b, t))
        .collect();
    let mut conn = Http2Connection::new(Side::Server, HttpLimits::default());
    assert_eq!(run(&mut conn, &swapped, 5).unwrap(), expected());
}

#[test]
fn heads_carry_pseudo_headers_redacted_headers_and_first_byte_time() {
    let mut conn = Http2Connection::new(Side::Client, HttpLimits::default());
    let mut heads = Vec::new();
    for (direction, bytes, t) in two_streams() {
        let time = ChunkTime {
            start: t,
            end: t + 1,
        };
        conn.feed(direction, 0, &bytes, time, &mut |e| {
            if let ExchangeEvent::Message {
                event: HttpEvent::Head { head, first_byte },
                ..
            } = e
            {
                heads.push((head, first_byte));
            }
        })
        .unwrap();
    }
    let Head::Request(request) = &heads[0].0 else {
        panic!("{heads:?}")
    };
    assert_eq!(request.header("host"), Some("127.0.0.1:8080"));
    assert_eq!(request.header("authorization"), Some(""));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(heads[0].1, ChunkTime { start: 10, end: 11 });
    assert_eq!(heads[1].1, ChunkTime { start: 11, end: 12 });
    let Head::Response(response) = &heads[2].0 else {
        panic!("{heads:?}")
    };
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(heads[2].1.start, 13);
}

#[test]
fn reset_streams_are_reported_and_forgotten() {
    let mut chunks = two_streams();
    chunks.truncate(6);
    chunks.push((IN, frame(frame::RST_STREAM, 0, 3, &[0, 0, 0, 8]), 20));
    chunks.push((IN, frame(frame::DATA, 0, 3, b"late"), 21));
    let mut conn = Http2Connection::new(Side::Client, HttpLimits::default());
    let seen = run(&mut conn, &chunks, usize::MAX).unwrap();
    assert_eq!(seen[seen.len() - 1], Seen::Reset(3));
    assert_eq!(conn.streams.len(), 1, "stream 1 is still open");
}

#[test]
fn bodies_are_capped_per_message() {
    let limits = HttpLimits {
        max_decoded_body: 5,
        ..HttpLimits::default()
    };
    let mut conn = Http2Connection::new(Side::Client, limits);
    let seen = run(&mut conn, &two_streams(), usize::MAX).unwrap();
    assert!(
        seen.contains(&Seen::Truncated(3, Role::Response)),
        "{seen:?}"
    );
    assert!(seen.contains(&Seen::Body(3, Role::Response, "data:".into())));
}

#[test]
fn an_upgraded_connection_answers_stream_1() {
    let mut server = Encoder::new();
    let head = block(&mut server, &[(":status", "200")]);
    let mut from_server = frame(frame::SETTINGS, 0, 0, &[]);
    from_server.extend(frame(frame::HEADERS, frame::END_HEADERS, 1, &head));
    from_server.extend(frame(frame::DATA, frame::END_STREAM, 1, b"{}"));
    let mut from_client = PREFACE.to_vec();
    from_client.extend(frame(frame::SETTINGS, 0, 0, &[]));
    let chunks = vec![(IN, from_server, 1), (OUT, from_client, 2)];
    let mut conn = Http2Connection::upgraded(Side::Client, HttpLimits::default());
    let seen = run(&mut conn, &chunks, 3).unwrap();
    assert_eq!(
        seen,
        [
            Seen::Response(1, 200),
            Seen::Body(1, Role::Response, "{}".into()),
            Seen::End(1, Role::Response, 1),
        ]
    );
    assert!(conn.streams.is_empty());
}

#[test]
fn garbage_fails_the_connection_and_later_feeds_say_so() {
    let cases: Vec<Vec<u8>> = vec![
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(),
        [
            PREFACE,
            &frame(frame::HEADERS, frame::END_HEADERS, 1, &[0xff; 4]),
        ]
        .concat(),
        [PREFACE, &frame(frame::DATA, 0, 0, b"x")].concat(),
        [PREFACE, &frame(frame::CONTINUATION, 0, 1, b"x")].concat(),
        [PREFACE, &frame(frame::DATA, frame::PADDED, 1, &[9, 1])].concat(),
        [PREFACE, &frame(frame::HEADERS, frame::PADDED, 1, &[9, 1])].concat(),
        [
            PREFACE,
            &frame(frame::HEADERS, 0, 1, &[0x82]),
            &frame(frame::DATA, 0, 1, b"x"),
        ]
        .concat(),
        [PREFACE, &[0, 0x10, 0, 1, 0, 0, 0, 0, 1]].concat(),
    ];
    for bytes in cases {
        let limits = HttpLimits {
            max_head_bytes: 1024,
            ..HttpLimits::default()
        };
        let mut conn = Http2Connection::new(Side::Client, limits);
        let ignore = &mut |_: ExchangeEvent<'_>| {};
        let first = conn.feed(OUT, 0, &bytes, ChunkTime::default(), ignore);
        assert!(
            matches!(first, Err(FramingError::Http2(_))),
            "{bytes:?}: {first:?}"
        );
        let later = conn.feed(OUT, 0, b"", ChunkTime::default(), ignore);
        assert_eq!(later, Err(FramingError::Failed));
    }
}

#[test]
fn table_size_updates_past_the_peers_setting_fail() {
    // 0x3f 0xe1 0x1f: a dynamic table size update to 4096 + 31 + ...
    let update = loona_hpack::encoder::encode_integer(1 << 20, 5);
    let mut block = update.clone();
    block[0] |= 0x20;
    block.push(0x82);
    let bytes = [
        PREFACE,
        &frame(frame::HEADERS, frame::END_HEADERS, 1, &block),
    ]
    .concat();
    let mut conn = Http2Connection::new(Side::Client, HttpLimits::default());
    let result = conn.feed(OUT, 0, &bytes, ChunkTime::default(), &mut |_| {});
    assert_eq!(result, Err(FramingError::Http2("bad HPACK block")));
}

#[test]
fn detection_tells_the_side_from_the_first_bytes() {
    use Opening::*;
    assert_eq!(detect(OUT, PREFACE), Http2(Side::Client));
    assert_eq!(
        detect(IN, &[PREFACE, b"\0\0"].concat()),
        Http2(Side::Server)
    );
    let settings = frame(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    assert_eq!(detect(OUT, &settings), Http2(Side::Server));
    assert_eq!(detect(IN, &settings), Http2(Side::Client));
    assert_eq!(detect(OUT, b"POST /v1/chat HTTP/1.1\r\n"), Other);
    assert_eq!(detect(IN, b"HTTP/1.1 200 OK\r\n"), Other);
    assert_eq!(detect(OUT, b"PUT"), Other);
    assert_eq!(detect(OUT, &frame(frame::SETTINGS, 1, 0, &[])), Other);
    // Too short to tell.
    assert_eq!(detect(OUT, b""), Unsure);
    assert_eq!(detect(OUT, b"PR"), Unsure);
    assert_eq!(detect(OUT, &PREFACE[..20]), Unsure);
    assert_eq!(detect(IN, &settings[..5]), Unsure);
    assert_eq!(detect(IN, b"\x16\x03\x01\x00\xa5"), Other, "a TLS record");
}
