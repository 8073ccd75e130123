//! Framing tests: WHATWG SSE rules and NDJSON at every split.

use super::*;

fn events(parser: &mut SseParser, input: &[u8], step: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in input.chunks(step) {
        parser.feed(part, &mut |f| {
            out.push((
                String::from_utf8_lossy(f.event).into_owned(),
                String::from_utf8(f.data.to_vec()).expect("utf-8 survives any split"),
            ))
        });
    }
    out
}

const STREAM: &str = "\u{FEFF}: keep-alive\r\n\r\nevent: delta\ndata: {\"t\":\"h\u{e9}llo \u{1F600}\"}\n\ndata: line one\r\ndata: line two\rdata:no space\r\n\r\nid: 7\nretry: 3000\ndata\n\nevent: empty\n\ndata: [DONE]\n\n";

#[test]
fn whatwg_fields_and_line_endings_at_every_split() {
    let want = vec![
        (
            "delta".to_owned(),
            "{\"t\":\"h\u{e9}llo \u{1F600}\"}".to_owned(),
        ),
        (String::new(), "line one\nline two\nno space".to_owned()),
        (String::new(), String::new()),
        (String::new(), "[DONE]".to_owned()),
    ];
    // `data` alone adds an empty line: an event with empty data is dispatched.
    for step in 1..=STREAM.len() {
        let mut parser = SseParser::new(1 << 20);
        assert_eq!(
            events(&mut parser, STREAM.as_bytes(), step),
            want,
            "step {step}"
        );
        assert_eq!(parser.last_event_id(), b"7");
        assert_eq!(parser.retry(), Some(3000));
    }
}

#[test]
fn oversized_events_are_dropped_and_counted() {
    let mut parser = SseParser::new(16);
    let input = b"data: 0123456789abcdefghij\n\ndata: ok\n\n";
    assert_eq!(
        events(&mut parser, input, 3),
        vec![(String::new(), "ok".to_owned())]
    );
    assert_eq!(parser.oversized, 1);
}

#[test]
fn ndjson_lines_at_every_split() {
    let input = b"{\"a\":1}\r\n\n  \n{\"b\":\"\xc3\xa9\"}\n{\"c\":3}";
    for step in 1..=input.len() {
        let mut parser = NdjsonParser::new(1 << 20);
        let mut out = Vec::new();
        let mut on = |f: Frame<'_>| out.push(f.data.to_vec());
        for part in input.chunks(step) {
            parser.feed(part, &mut on);
        }
        parser.finish(&mut on);
        assert_eq!(
            out,
            [&b"{\"a\":1}"[..], "{\"b\":\"é\"}".as_bytes(), b"{\"c\":3}"],
            "step {step}"
        );
    }
}
