use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use super::*;
use crate::providers::openai::chat::decode;

/// Which way a chunk was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// The shape gave up: serde decoded it.
    Serde,
    /// The scan walked it (and the shape learnt it).
    Scanned,
    /// The kept shape recognised it by its bytes.
    Recognised,
}

/// `chunks` applied in turn to `before` through one shape (serde
/// decoding what it gives up on, as the `ChatDecoder` does) and by serde
/// alone: the records must agree after each. Returns how each chunk
/// was read.
fn agree(chunks: &[&[u8]], before: &ResponseInfo) -> Result<Vec<Read>, TestCaseError> {
    let mut shape = ChunkShape::default();
    let (mut by_shape, mut by_decode) = (before.clone(), before.clone());
    let mut reads = Vec::new();
    for data in chunks {
        let decoded = decode(data, &mut by_decode);
        let recognised = shape
            .recognise(data, &mut [StringValue::default(); MAX_STRINGS])
            .is_some();
        match shape.apply(data, &mut by_shape) {
            Some(output) => {
                reads.push(if recognised {
                    Read::Recognised
                } else {
                    Read::Scanned
                });
                prop_assert!(decoded.is_ok(), "read what serde rejects: {:?}", decoded);
                prop_assert_eq!(decoded.ok(), Some(output));
            }
            None => {
                reads.push(Read::Serde);
                drop(decode(data, &mut by_shape));
            }
        }
        prop_assert_eq!(&by_shape, &by_decode);
    }
    Ok(reads)
}

/// How many chunks were read each way over a whole property run.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    serde: usize,
    scanned: usize,
    recognised: usize,
}

impl Tally {
    fn add(mut self, reads: &[Read]) -> Self {
        for read in reads {
            match read {
                Read::Serde => self.serde += 1,
                Read::Scanned => self.scanned += 1,
                Read::Recognised => self.recognised += 1,
            }
        }
        self
    }

    /// The share of the chunks that `count` counts.
    fn share(self, count: usize) -> f64 {
        count as f64 / (self.serde + self.scanned + self.recognised) as f64
    }
}

/// Runs `test` on 4096 generated cases as `proptest!` does (a failure
/// is shrunk and panics), adding up the reads each case returns: the
/// caller asserts that the fast path was taken often enough for the
/// agreement to mean something.
fn tally<S: Strategy>(
    strategy: S,
    test: impl Fn(S::Value) -> Result<Vec<Read>, TestCaseError>,
) -> Tally {
    let config = ProptestConfig {
        source_file: Some(file!()),
        ..ProptestConfig::with_cases(4096)
    };
    let mut runner = TestRunner::new(config);
    let total = Cell::new(Tally::default());
    let result = runner.run(&strategy, |value| {
        total.set(total.get().add(&test(value)?));
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}\n{runner}");
    }
    total.get()
}

/// The string values of `data`, as the scan numbers them; `None` if
/// the scan gives up on it.
fn strings(data: &[u8]) -> Option<Vec<Token>> {
    let mut scanner = Scanner::new(data, Vec::new());
    scan(&mut scanner)?;
    scanner.end()?;
    Some(scanner.into_strings())
}

/// `data` with its string values at `strings` replaced by `others`, in
/// turn.
fn respelled(data: &[u8], strings: &[Token], others: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = 0;
    for (token, other) in strings.iter().zip(others.iter().cycle()) {
        out.extend_from_slice(&data[from..token.start]);
        out.extend_from_slice(other.as_bytes());
        from = token.end;
    }
    out.extend_from_slice(&data[from..]);
    out
}

/// A string token without escapes or control bytes: valid text wherever
/// it stands.
fn is_plain(token: &str) -> bool {
    !token.bytes().any(|b| b == b'\\' || b < 0x20)
}

#[test]
fn the_common_chunks_are_scanned() {
    let before = ResponseInfo::new(1024);
    for chunk in [
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":" a\n\"b\" \u00e9"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x1"}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"text":" once","index":0,"logprobs":null,"finish_reason":null}],"model":"m"}"#,
        r#"{"choices":[{"delta":{"reasoning_content":"hm","content":null}}],"timings":null}"#,
        r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"length"}]}"#,
    ] {
        assert_eq!(
            agree(&[chunk.as_bytes()], &before).unwrap(),
            [Read::Scanned],
            "{chunk}"
        );
    }
    for unusual in [
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
        r#"{"choices":[{"logprobs":{"content":[]}}]}"#,
        r#"{"error":{"message":"no"}}"#,
        r#"{"choices":[null]}"#,
    ] {
        assert_eq!(
            agree(&[unusual.as_bytes()], &before).unwrap(),
            [Read::Serde],
            "{unusual}"
        );
    }
}

#[test]
fn a_chunk_with_other_strings_is_read_by_its_shape() {
    let chunk = |id: &str, created: u32, content: &str, pad: &str| {
        format!(
            r#"{{"id":"{id}","created":{created},"model":"m","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}],"obfuscation":"{pad}"}}"#
        )
    };
    let recognised = |shape: &ChunkShape, data: &str| {
        let mut values = [StringValue::default(); MAX_STRINGS];
        shape.recognise(data.as_bytes(), &mut values).is_some()
    };
    let mut shape = ChunkShape::default();
    let mut out = ResponseInfo::new(100);
    let mut apply = |shape: &mut ChunkShape, data: &str| shape.apply(data.as_bytes(), &mut out);
    assert_eq!(apply(&mut shape, &chunk("c1", 1, "Hel", "abc")), Some(true));
    // Other strings: the same shape. Only the content and the pad
    // changed, so from now on only they may.
    let next = chunk("c1", 1, r#"lo \"w\""#, "zz");
    assert!(recognised(&shape, &next));
    assert_eq!(apply(&mut shape, &next), Some(true));
    assert!(recognised(&shape, &chunk("c1", 1, "x", "")));
    assert!(!recognised(&shape, &chunk("c2", 1, "x", "")));
    // Another number: not this shape, so scanned (and learnt).
    let later = chunk("c1", 2, "!", "");
    assert!(!recognised(&shape, &later));
    assert_eq!(apply(&mut shape, &later), Some(true));
    assert!(recognised(&shape, &chunk("c2", 2, "x", "")));
    let text = {
        let mut out = ResponseInfo::new(100);
        for data in [chunk("c1", 1, "Hel", "abc"), next, later] {
            decode(data.as_bytes(), &mut out).unwrap();
        }
        out.text
    };
    assert_eq!(text, "Hello \"w\"!");
    // A string where the shape has one, but a member more after it.
    let longer = r#"{"id":"c1","created":2,"model":"m","choices":[{"index":0,"delta":{"content":"!","refusal":"x"},"finish_reason":null}],"obfuscation":""}"#;
    assert!(!recognised(&shape, longer));
}

/// A JSON string: plain, empty, escaped, non-ASCII, or broken.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => "[a-z .]{0,8}".prop_map(|s| format!("\"{s}\"")),
        5 => Just("\"\"".to_owned()),
        5 => Just(r#""\n\"\\\/\t\u00e9\ud83e\udd80""#.to_owned()),
        5 => Just("\"é🦀\"".to_owned()),
        1 => Just(r#""\x""#.to_owned()),
        1 => Just("\"\u{1}\"".to_owned()),
        1 => Just(r#""\ud800""#.to_owned()),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => string(),
        4 => Just("null".to_owned()),
        2 => Just("true".to_owned()),
        2 => Just("-12.5e3".to_owned()),
        4 => Just("0".to_owned()),
        1 => Just("01".to_owned()),
        1 => Just("{}".to_owned()),
        1 => Just("[1]".to_owned()),
    ]
}

fn string_or_null() -> impl Strategy<Value = String> {
    prop_oneof![12 => string(), 4 => Just("null".to_owned()), 1 => Just("7".to_owned())]
}

fn object(members: Vec<(&str, String)>, space: &str) -> String {
    let members: Vec<_> = members
        .iter()
        .map(|(name, value)| format!("{space}\"{name}\"{space}:{space}{value}"))
        .collect();
    format!("{{{}{space}}}", members.join(","))
}

fn message() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        4 => (Just("content"), string_or_null()),
        1 => (Just("reasoning_content"), string_or_null()),
        1 => (Just("reasoning"), string_or_null()),
        1 => (Just("refusal"), string_or_null()),
        1 => (Just("role"), scalar()),
        1 => (Just("tool_calls"), prop_oneof![Just("null".to_owned()), Just(r#"[{"function":{"name":"f"}}]"#.to_owned())]),
    ];
    prop_oneof![
        1 => Just("null".to_owned()),
        6 => prop::collection::vec(member, 0..3).prop_map(|m| object(m, "")),
    ]
}

fn choice() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        1 => (Just("index"), scalar()),
        4 => (Just("delta"), message()),
        1 => (Just("message"), message()),
        1 => (Just("text"), string_or_null()),
        1 => (Just("finish_reason"), string_or_null()),
        1 => (Just("logprobs"), scalar()),
    ];
    prop::collection::vec(member, 0..5).prop_map(|m| object(m, ""))
}

fn chunk() -> impl Strategy<Value = String> {
    let choices = prop_oneof![
        1 => Just("null".to_owned()),
        6 => prop::collection::vec(choice(), 0..3).prop_map(|c| format!("[{}]", c.join(","))),
    ];
    let member = prop_oneof![
        1 => (Just("id"), string_or_null()),
        1 => (Just("model"), string_or_null()),
        1 => (Just("object"), scalar()),
        1 => (Just("created"), scalar()),
        4 => (Just("choices"), choices),
        1 => (Just("usage"), prop_oneof![Just("null".to_owned()), Just(r#"{"completion_tokens":4}"#.to_owned())]),
        1 => (Just("timings"), prop_oneof![Just("null".to_owned()), Just(r#"{"predicted_n":4}"#.to_owned())]),
        1 => (Just("error"), prop_oneof![Just("null".to_owned()), string()]),
    ];
    (
        prop::collection::vec(member, 0..7),
        prop_oneof![Just(""), Just(" "), Just("\n\t ")],
    )
        .prop_map(|(m, space)| object(m, space))
}

/// A record part-filled by earlier chunks, with a small text cap.
fn before() -> impl Strategy<Value = ResponseInfo> {
    (0usize..24, prop::option::of("[a-z]{0,3}"), "[a-zé]{0,6}").prop_map(|(cap, id, text)| {
        let mut info = ResponseInfo::new(cap);
        info.set_id(id.map(Cow::Owned));
        info.push_text(&text);
        info
    })
}

/// A chunk the scan walks to its end (its strings may still not be
/// valid text).
fn scanned_chunk() -> impl Strategy<Value = (String, Vec<Token>)> {
    chunk().prop_filter_map("the scan gives up", |chunk| {
        let strings = strings(chunk.as_bytes())?;
        Some((chunk, strings))
    })
}

#[test]
fn reading_agrees_with_serde() {
    let run = tally((chunk(), before()), |(chunk, before)| {
        agree(&[chunk.as_bytes()], &before)
    });
    // Most generated chunks are unusual somewhere; a real share (about
    // a third) must still be plain, or only serde was tested.
    assert!(run.share(run.scanned) > 0.2, "{run:?}");
}

#[test]
fn reading_by_shape_agrees_with_serde() {
    let strategy = (
        scanned_chunk(),
        prop::collection::vec(string(), 1..4),
        prop::collection::vec(string(), 1..4),
        before(),
    );
    let run = tally(strategy, |((chunk, strings), others, more, before)| {
        let bytes = chunk.as_bytes();
        let twin = respelled(bytes, &strings, &others);
        let another = respelled(bytes, &strings, &more);
        let reads = agree(&[bytes, &twin, bytes, &another, &twin], &before)?;
        if others.iter().all(|s| is_plain(s)) {
            // The same JSON with other valid strings: read without
            // serde, and recognised if the chunk's shape was kept.
            let kept = reads[0] != Read::Serde
                && strings.len() <= MAX_STRINGS
                && bytes.len() <= MAX_SHAPE_BYTES;
            let twin_read = if kept {
                Read::Recognised
            } else {
                Read::Scanned
            };
            prop_assert_eq!(reads[1], twin_read);
        }
        Ok(reads)
    });
    // About three chunks in four.
    assert!(run.share(run.recognised) > 0.5, "{run:?}");
}

#[test]
fn scanning_agrees_with_serde_on_damaged_chunks() {
    let strategy = (
        chunk(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        before(),
    );
    let run = tally(strategy, |(chunk, damage, before)| {
        let chunk_bytes = chunk.into_bytes();
        let mut bytes = chunk_bytes.clone();
        for (at, byte, how) in damage {
            let at = at.index(bytes.len() + 1);
            match how {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => drop(bytes.remove(at)),
                _ if at < bytes.len() => bytes[at] = byte,
                _ => {}
            }
        }
        let reads = agree(&[chunk_bytes.as_slice(), &bytes], &before)?;
        // Only the damaged chunk counts, and only after a shape was
        // learnt: that is when recognising could wrongly accept it.
        let learnt = reads[0] != Read::Serde;
        Ok(if learnt { vec![reads[1]] } else { Vec::new() })
    });
    // Damage inside a string keeps the shape: some damaged chunks (about
    // one in twenty-five) must be recognised, and most (nine in ten) be
    // left to serde.
    assert!(run.share(run.recognised) > 0.02, "{run:?}");
    assert!(run.share(run.serde) > 0.7, "{run:?}");
}
