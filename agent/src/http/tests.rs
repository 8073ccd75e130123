//! Framing tests: splits, codings, interim and bodyless responses, failures.

use std::io::Write;

use super::*;

/// What a connection emitted, flattened for comparison.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    heads: Vec<String>,
    request_body: Vec<u8>,
    response_body: Vec<u8>,
    ends: Vec<(Role, ChunkTime)>,
    truncated: usize,
    cut: Vec<Role>,
    closed_short: Vec<Role>,
    /// The exchange of each head, in order.
    exchanges: Vec<ExchangeId>,
}

fn record(seen: &mut Seen) -> impl FnMut(ExchangeEvent<'_>) + '_ {
    |event| {
        let ExchangeEvent::Message { exchange, event } = event else {
            panic!("HTTP/1.1 resets nothing: {event:?}")
        };
        if let HttpEvent::Head { .. } = event {
            seen.exchanges.push(exchange);
        }
        on_message(seen, event);
    }
}

fn on_message(seen: &mut Seen, event: HttpEvent<'_>) {
    match event {
        HttpEvent::Head { head, .. } => seen.heads.push(match head {
            Head::Request(r) => format!("{} {}", r.method, r.target),
            Head::Response(r) => r.status.to_string(),
        }),
        HttpEvent::Body {
            role: Role::Request,
            bytes,
        } => seen.request_body.extend_from_slice(bytes),
        HttpEvent::Body {
            role: Role::Response,
            bytes,
        } => seen.response_body.extend_from_slice(bytes),
        HttpEvent::BodyTruncated { .. } => seen.truncated += 1,
        HttpEvent::Cut { role } => seen.cut.push(role),
        HttpEvent::ClosedShort { role } => seen.closed_short.push(role),
        HttpEvent::End { role, last_byte } => seen.ends.push((role, last_byte)),
    }
}

fn at(t: u64) -> ChunkTime {
    ChunkTime {
        start: t,
        end: t + 1,
    }
}

/// Feeds `(direction, bytes)` pieces, one byte-split `step` at a time.
fn run(side: Side, pieces: &[(Direction, &[u8])], step: usize) -> (Seen, Result<(), FramingError>) {
    let mut conn = HttpConnection::new(side, HttpLimits::default());
    let mut seen = Seen::default();
    let mut result = Ok(());
    let mut t = 0;
    for (direction, bytes) in pieces {
        for part in bytes.chunks(step.max(1)) {
            t += 10;
            result = result.and(conn.feed(*direction, 0, part, at(t), &mut record(&mut seen)));
        }
    }
    conn.close(&mut record(&mut seen));
    (seen, result)
}

const REQ: &[u8] =
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn chunked_response_same_at_any_split() {
    let res = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
    for step in [1, 2, 3, 7, 1000] {
        let (seen, result) = run(
            Side::Client,
            &[(Direction::Egress, REQ), (Direction::Ingress, res)],
            step,
        );
        assert_eq!(result, Ok(()));
        assert_eq!(seen.heads, ["POST /v1/chat/completions", "200"]);
        assert_eq!(seen.request_body, b"hello");
        assert_eq!(seen.response_body, b"hello world");
        assert_eq!(seen.ends.len(), 2);
    }
}

#[test]
fn content_encodings_decode_incrementally() {
    let body = b"{\"choices\":[]}".repeat(50);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&body).unwrap();
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        w.write_all(&body).unwrap();
    }
    let zstd = zstd::encode_all(&body[..], 3).unwrap();
    for (coding, packed) in [
        ("gzip", gz.finish().unwrap()),
        ("deflate", zlib.finish().unwrap()),
        ("br", br),
        ("zstd", zstd),
    ] {
        let mut res = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n",
            packed.len()
        )
        .into_bytes();
        res.extend_from_slice(&packed);
        for step in [1, 13, 100_000] {
            let (seen, result) = run(
                Side::Client,
                &[(Direction::Egress, REQ), (Direction::Ingress, &res)],
                step,
            );
            assert_eq!(result, Ok(()), "{coding}");
            assert_eq!(seen.response_body, body, "{coding} step {step}");
        }
    }
}

#[test]
fn interim_head_and_bodyless_responses() {
    let head_req = b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n";
    let res = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    let (seen, result) = run(
        Side::Client,
        &[(Direction::Egress, head_req), (Direction::Ingress, res)],
        1000,
    );
    assert_eq!(result, Ok(()));
    assert_eq!(seen.heads, ["HEAD /x", "GET /y", "200", "204"]);
    assert_eq!(seen.ends.len(), 4);
}

#[test]
fn a_body_owing_bytes_at_the_close_is_short_and_one_between_chunks_is_not() {
    let short = [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nall"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\nall",
    ];
    for res in short {
        let (seen, result) = run(
            Side::Client,
            &[(Direction::Egress, REQ), (Direction::Ingress, res)],
            3,
        );
        assert_eq!(result, Ok(()));
        assert_eq!(seen.closed_short, [Role::Response]);
        assert_eq!(seen.ends.len(), 1, "the request's end alone");
    }
    // The last chunk (`0`) not read: nothing owed by what came.
    let res = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nall\r\n";
    let (seen, _) = run(
        Side::Client,
        &[(Direction::Egress, REQ), (Direction::Ingress, res)],
        3,
    );
    assert!(seen.closed_short.is_empty());
}

#[test]
fn close_delimited_body_ends_at_last_byte() {
    let res = b"HTTP/1.1 200 OK\r\n\r\nall of it";
    let (seen, _) = run(
        Side::Client,
        &[(Direction::Egress, REQ), (Direction::Ingress, res)],
        4,
    );
    assert_eq!(seen.response_body, b"all of it");
    let last = seen.ends.last().unwrap();
    assert_eq!(last.0, Role::Response);
    assert_eq!(
        last.1,
        at(10 * (REQ.chunks(4).len() + res.chunks(4).len()) as u64)
    );
}

#[test]
fn unknown_side_is_decided_by_first_bytes() {
    let (seen, result) = run(
        Side::Unknown,
        &[
            (Direction::Ingress, REQ),
            (
                Direction::Egress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ),
        ],
        5,
    );
    assert_eq!(result, Ok(()));
    assert_eq!(seen.heads, ["POST /v1/chat/completions", "200"]);
    assert_eq!(seen.response_body, b"ok");
}

#[test]
fn garbage_fails_the_connection() {
    let (_, result) = run(
        Side::Unknown,
        &[(Direction::Egress, b"\x16\x03\x01\x02\x00")],
        100,
    );
    assert_eq!(result, Err(FramingError::NotHttp));
    let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    let (_, result) = run(
        Side::Client,
        &[(Direction::Egress, REQ), (Direction::Ingress, bad_chunk)],
        100,
    );
    assert_eq!(result, Err(FramingError::BadChunk));
    let (_, result) = run(
        Side::Client,
        &[(Direction::Egress, b"POST / HTTP/1.1\r\nA b\r\n\r\n")],
        100,
    );
    assert!(matches!(result, Err(FramingError::BadHead(_))));
}

#[test]
fn gap_inside_length_body_is_skipped() {
    let mut conn = HttpConnection::new(Side::Client, HttpLimits::default());
    let mut seen = Seen::default();
    let mut on = record(&mut seen);
    conn.feed(Direction::Egress, 0, REQ, at(1), &mut on)
        .unwrap();
    conn.feed(
        Direction::Ingress,
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab",
        at(2),
        &mut on,
    )
    .unwrap();
    conn.feed(Direction::Ingress, 2, b"ef", at(3), &mut on)
        .unwrap();
    drop(on);
    assert_eq!(seen.response_body, b"ab");
    assert_eq!(seen.truncated, 1);
    assert_eq!(seen.ends.last(), Some(&(Role::Response, at(3))));
}

#[test]
fn gap_across_chunk_framing_cuts_the_message_and_the_next_head_resumes() {
    let mut conn = HttpConnection::new(Side::Client, HttpLimits::default());
    let mut seen = Seen::default();
    let mut on = record(&mut seen);
    conn.feed(Direction::Egress, 0, REQ, at(1), &mut on)
        .unwrap();
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n";
    conn.feed(Direction::Ingress, 0, head, at(2), &mut on)
        .unwrap();
    // A whole chunk lost: the next bytes' place in the framing is unknown.
    conn.feed(
        Direction::Ingress,
        7,
        b"2\r\nef\r\n0\r\n\r\n",
        at(3),
        &mut on,
    )
    .unwrap();
    // The next exchange on the connection frames from its head on.
    conn.feed(Direction::Egress, 0, REQ, at(4), &mut on)
        .unwrap();
    let next = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    conn.feed(Direction::Ingress, 0, next, at(5), &mut on)
        .unwrap();
    drop(on);
    assert_eq!(seen.cut, [Role::Response]);
    assert_eq!(
        seen.response_body, b"abok",
        "nothing after the gap is guessed"
    );
    assert_eq!(seen.heads.len(), 4);
    assert_eq!(seen.ends.last(), Some(&(Role::Response, at(5))));
    let response_ends = seen.ends.iter().filter(|e| e.0 == Role::Response).count();
    assert_eq!(response_ends, 1, "the cut response never ended");
}

#[test]
fn credentials_are_not_kept() {
    let req =
        b"POST /v1/messages HTTP/1.1\r\nx-api-key: sk-1\r\nAuthorization: Bearer sk-2\r\n\r\n";
    let (_, head) = head::parse_request(req).unwrap().unwrap();
    assert_eq!(head.header("x-api-key"), Some(""));
    assert_eq!(head.header("authorization"), Some(""));
}

#[test]
fn a_101_to_h2c_is_no_answer_and_hands_over_the_bytes_after_it() {
    let mut conn = HttpConnection::new(Side::Client, HttpLimits::default());
    let mut seen = Seen::default();
    let upgrade = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n";
    conn.feed(Direction::Egress, 0, upgrade, at(1), &mut record(&mut seen))
        .unwrap();
    let answer = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\0\0\0\x04";
    conn.feed(Direction::Ingress, 0, answer, at(2), &mut record(&mut seen))
        .unwrap();
    assert_eq!(seen.heads, ["GET /"], "the 101 is not the response");
    assert_eq!(
        conn.take_h2c_upgrade(),
        Some(H2cUpgrade {
            exchange: FIRST_HTTP1_EXCHANGE,
            rest: b"\0\0\0\x04".to_vec()
        })
    );
    assert_eq!(conn.take_h2c_upgrade(), None, "handed over once");
    // Other upgrades stay a final 101 and opaque bytes.
    let mut conn = HttpConnection::new(Side::Client, HttpLimits::default());
    let mut seen = Seen::default();
    conn.feed(Direction::Egress, 0, upgrade, at(1), &mut record(&mut seen))
        .unwrap();
    let websocket = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
    conn.feed(
        Direction::Ingress,
        0,
        websocket,
        at(2),
        &mut record(&mut seen),
    )
    .unwrap();
    assert_eq!(seen.heads, ["GET /", "101"]);
    assert_eq!(conn.take_h2c_upgrade(), None);
}

#[test]
fn a_request_line_is_told_from_body_bytes() {
    assert!(starts_request_line(
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n"
    ));
    assert!(starts_request_line(b"GET / HTTP/1.0\n"));
    for not_one in [
        &b"1f4\r\ndata: {\"a\":1}\r\n"[..],
        b"data: POST / HTTP/1.1\n",
        b"HTTP/1.1 200 OK\r\n",
        b"POST /v1/messages HTTP/1.1",
        b"POST  HTTP/1.1\r\n",
        b"POST / HTTP/2\r\n",
    ] {
        assert!(
            !starts_request_line(not_one),
            "{}",
            String::from_utf8_lossy(not_one)
        );
    }
}

#[test]
fn pipelined_responses_answer_requests_in_order() {
    let res = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (seen, result) = run(
        Side::Client,
        &[
            (Direction::Egress, &[REQ, REQ, REQ].concat()),
            (Direction::Ingress, &[&res[..], res].concat()),
        ],
        1000,
    );
    assert_eq!(result, Ok(()));
    let first = FIRST_HTTP1_EXCHANGE;
    assert_eq!(
        seen.exchanges,
        [first, first + 1, first + 2, first, first + 1],
        "three requests, then the answers of the first two"
    );
}

#[test]
fn a_response_with_no_request_does_not_shift_the_pairing() {
    let res = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let mut conn = HttpConnection::new(Side::Client, HttpLimits::default());
    let mut seen = Seen::default();
    conn.feed(Direction::Ingress, 0, res, at(1), &mut record(&mut seen))
        .unwrap();
    conn.feed(Direction::Egress, 0, REQ, at(2), &mut record(&mut seen))
        .unwrap();
    conn.feed(Direction::Ingress, 0, res, at(3), &mut record(&mut seen))
        .unwrap();
    let first = FIRST_HTTP1_EXCHANGE;
    assert_eq!(seen.exchanges, [first, first, first]);
}

#[test]
fn too_many_requests_waiting_give_the_connection_up() {
    let limits = HttpLimits {
        max_pending: 2,
        ..HttpLimits::default()
    };
    let mut conn = HttpConnection::new(Side::Client, limits);
    let mut seen = Seen::default();
    let two = [REQ, REQ].concat();
    conn.feed(Direction::Egress, 0, &two, at(1), &mut record(&mut seen))
        .unwrap();
    assert_eq!(
        conn.feed(Direction::Egress, 0, REQ, at(2), &mut record(&mut seen)),
        Err(FramingError::TooManyPending(2))
    );
}
