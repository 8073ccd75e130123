//! What the mock server understands of a request: the HTTP/1.1 head (parsed
//! with `httparse` from the connection's buffer) and the few JSON body fields
//! that shape its answer. Bytes in, plain values out; no I/O.

use serde_json::Value;

/// Longest request head accepted; a client sending more is not an LLM SDK.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// Bytes the head took in the buffer; the body starts there.
    pub len: usize,
    pub content_length: usize,
    /// The client asked for `Connection: close` (or spoke HTTP/1.0).
    pub close: bool,
    /// `Expect: 100-continue`: curl waits for it before larger bodies.
    pub expect_continue: bool,
}

/// Why a request can't be served; each maps to a 4xx answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x.
    #[error("malformed request head: {0}")]
    Malformed(String),
    /// Head or body over the caps above.
    #[error("request too large")]
    TooLarge,
    /// Chunked request bodies: no LLM SDK sends them.
    #[error("chunked request bodies are not supported")]
    Chunked,
}

/// Parses the head at the start of `buf`; `Ok(None)` until it is complete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let mut head = Head {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        len,
        content_length: 0,
        close: req.version == Some(0),
        expect_continue: false,
    };
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = value
                .parse()
                .map_err(|_| HeadError::Malformed(format!("content-length {value:?}")))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Chunked);
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    if head.content_length > MAX_BODY {
        return Err(HeadError::TooLarge);
    }
    Ok(Some(head))
}

/// The body fields every endpoint reads, whatever its API's spelling.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LlmRequest {
    /// Echoed back; also picks a failure (see `reply::Scenario`).
    pub model: String,
    /// `None` when the body does not say (each API has its own default).
    pub stream: Option<bool>,
    /// Caps the number of output tokens.
    pub max_tokens: Option<usize>,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Whitespace-separated words in the prompt (messages, system, prompt),
    /// at least 1: the mock's input token count.
    pub prompt_tokens: usize,
}

impl LlmRequest {
    /// Reads the fields from a JSON body; `None` if it isn't a JSON object.
    pub fn from_json(body: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        let max_tokens = ["max_tokens", "max_completion_tokens"]
            .iter()
            .find_map(|k| obj.get(*k))
            .or_else(|| v.pointer("/options/num_predict"))
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        let mut words = 0;
        for key in ["messages", "system", "prompt"] {
            if let Some(part) = obj.get(key) {
                words += count_words(part);
            }
        }
        Some(Self {
            model: obj
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("mock-model")
                .to_owned(),
            stream: obj.get("stream").and_then(Value::as_bool),
            max_tokens,
            include_usage: v
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            prompt_tokens: words.max(1),
        })
    }
}

/// Words in every string under `v`, skipping keys that name rather than say
/// something (`role`, `type`).
fn count_words(v: &Value) -> usize {
    match v {
        Value::String(s) => s.split_whitespace().count(),
        Value::Array(items) => items.iter().map(count_words).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "role" | "type" | "name"))
            .map(|(_, v)| count_words(v))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_waits_for_the_blank_line_then_reads_framing() {
        let raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n";
        assert_eq!(parse_head(raw), Ok(None));
        let raw = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n{}";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.path, "/v1/chat/completions");
        assert_eq!(head.content_length, 12);
        assert_eq!(head.len, raw.len() - 2);
        assert!(head.expect_continue && !head.close);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(chunked), Err(HeadError::Chunked));
    }

    #[test]
    fn body_fields_from_each_api() {
        let openai = br#"{"model":"gpt-x","stream":true,"max_tokens":3,"stream_options":{"include_usage":true},
            "messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"say hi"}]}]}"#;
        let r = LlmRequest::from_json(openai).unwrap();
        assert_eq!(
            r,
            LlmRequest {
                model: "gpt-x".into(),
                stream: Some(true),
                max_tokens: Some(3),
                include_usage: true,
                prompt_tokens: 4,
            }
        );
        let ollama = br#"{"model":"llama","options":{"num_predict":5},"messages":[]}"#;
        let r = LlmRequest::from_json(ollama).unwrap();
        assert_eq!(
            (r.stream, r.max_tokens, r.prompt_tokens),
            (None, Some(5), 1)
        );
        assert_eq!(LlmRequest::from_json(b"[1]"), None);
    }
}
