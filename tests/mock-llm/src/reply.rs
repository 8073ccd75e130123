//! What the mock answers, before any HTTP framing or timing: the request's
//! path picks an [`Api`] from `replies/`, the model name picks a
//! [`Scenario`], and the API turns the [`Generation`] built here into a
//! [`Reply`] — one JSON body, or a list of stream events each tagged with
//! its pace. Pure: no I/O, no clock.

use crate::api::{Api, Ending, Finish, Generation};
use crate::pacing::{Events, Pacing};
use crate::replies::{anthropic, ollama, openai};
use crate::request::LlmRequest;

/// The answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    /// Close the connection before the body is complete: a stream stops
    /// after its last event without the chunked terminator; a whole body is
    /// sent only half-way.
    pub cut: bool,
}

/// A reply's body.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    /// Sent at once, after the time generating `generated` tokens takes.
    Whole { text: String, generated: usize },
    /// Sent one event per write.
    Stream(Events),
}

/// What the model name asks the mock to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Answer normally.
    Normal,
    /// `error-NNN` (NNN in 400..=599): answer status NNN with the API's
    /// error body.
    Status(u16),
    /// `error-midstream`: a 200 stream that sends half the tokens, then the
    /// API's error event, then ends properly. Whole bodies answer normally.
    ErrorMidstream,
    /// `cut-midstream`: half the tokens, then the connection closes.
    CutMidstream,
    /// `big-tokens-N` (N up to 16 MiB): a normal answer whose every token
    /// is N bytes of text, for tests of the observer's caps.
    BigTokens(usize),
}

impl Scenario {
    pub fn from_model(model: &str) -> Self {
        match model {
            "error-midstream" => Self::ErrorMidstream,
            "cut-midstream" => Self::CutMidstream,
            _ => {
                let number = |prefix| model.strip_prefix(prefix).and_then(|s| s.parse().ok());
                match (number("error-"), number("big-tokens-")) {
                    (Some(status @ 400..=599), _) => Self::Status(status as u16),
                    (_, Some(bytes @ 1..=MAX_TOKEN_BYTES)) => Self::BigTokens(bytes),
                    _ => Self::Normal,
                }
            }
        }
    }
}

/// The text the mock generates, one word per token, repeated as needed. One
/// word is not ASCII so that multi-byte characters cross the pipeline.
const WORDS: [&str; 12] = [
    "Hello",
    " from",
    " the",
    " llmtap",
    " mock",
    " server",
    ":",
    " every",
    " chunk",
    " is",
    " one",
    " token, déjà vu.",
];

/// The `i`th generated token.
pub fn token(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

/// The largest token `big-tokens-N` asks for.
const MAX_TOKEN_BYTES: usize = 16 << 20;

/// The `i`th token repeated to exactly `bytes` bytes (or one less, when a
/// multi-byte character would straddle the end).
fn big_token(i: usize, bytes: usize) -> String {
    let word = token(i);
    let mut text = word.repeat(bytes / word.len() + 1);
    let end = (0..=bytes)
        .rev()
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(0);
    text.truncate(end);
    text
}

/// Endpoints by path, the query string ignored.
const APIS: &[(&str, &dyn Api)] = &[
    ("/v1/chat/completions", &openai::Chat),
    ("/v1/completions", &openai::Completions),
    ("/v1/messages", &anthropic::Messages),
    ("/api/chat", &ollama::Chat),
];

/// Identifies a response, for ids and logs.
#[derive(Clone, Copy, Debug)]
pub struct ReplyContext {
    pub conn: u64,
    pub request: u64,
    pub created: u64,
    /// Tokens to generate unless `max_tokens` asks for fewer.
    pub chunks: usize,
    pub pacing: Pacing,
}

/// The answer to `method path` with JSON `body`.
pub fn reply(method: &str, path: &str, body: &[u8], cx: &ReplyContext) -> Reply {
    let route = path.split('?').next().unwrap_or_default();
    let Some((_, api)) = APIS.iter().find(|(p, _)| *p == route) else {
        return http_error(404, &format!("no mock endpoint at {route}"));
    };
    if method != "POST" {
        return error(*api, 405, "use POST");
    }
    let Some(request) = LlmRequest::from_json(body) else {
        return error(*api, 400, "the request body is not a JSON object");
    };
    let scenario = Scenario::from_model(&request.model);
    let ending = match scenario {
        Scenario::Status(status) => {
            return error(*api, status, "mock error asked for by the model name")
        }
        Scenario::Normal | Scenario::BigTokens(_) => Ending::Complete,
        Scenario::ErrorMidstream => Ending::Error,
        Scenario::CutMidstream => Ending::Cut,
    };
    let wanted = request.max_tokens.map_or(cx.chunks, |m| m.min(cx.chunks));
    let (count, finish) = match ending {
        Ending::Complete if wanted < cx.chunks => (wanted, Finish::Length),
        Ending::Complete => (wanted, Finish::Stop),
        _ => ((wanted / 2).max(1), Finish::Stop),
    };
    let g = Generation {
        request: &request,
        id: format!("mock-{}-{}", cx.conn, cx.request),
        created: cx.created,
        tokens: (0..count)
            .map(|i| match scenario {
                Scenario::BigTokens(bytes) => big_token(i, bytes),
                _ => token(i).to_owned(),
            })
            .collect(),
        finish,
        ending,
        pacing: cx.pacing,
    };
    if request.stream.unwrap_or(api.streams_by_default()) {
        Reply {
            status: 200,
            content_type: api.stream_content_type(),
            body: Body::Stream(api.stream(&g)),
            cut: ending == Ending::Cut,
        }
    } else {
        Reply {
            status: 200,
            content_type: "application/json",
            body: Body::Whole {
                text: api.whole(&g),
                generated: count,
            },
            cut: ending == Ending::Cut,
        }
    }
}

/// An error reply in OpenAI's shape, for requests no API can answer.
pub fn http_error(status: u16, message: &str) -> Reply {
    error(&openai::Chat, status, message)
}

fn error(api: &dyn Api, status: u16, message: &str) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: Body::Whole {
            text: api.error_body(status, message),
            generated: 0,
        },
        cut: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(chunks: usize) -> ReplyContext {
        ReplyContext {
            conn: 1,
            request: 0,
            created: 0,
            chunks,
            pacing: Pacing::default(),
        }
    }

    #[test]
    fn scenarios_from_model_names() {
        assert_eq!(Scenario::from_model("gpt-4o"), Scenario::Normal);
        assert_eq!(Scenario::from_model("error-429"), Scenario::Status(429));
        assert_eq!(Scenario::from_model("error-200"), Scenario::Normal);
        assert_eq!(
            Scenario::from_model("error-midstream"),
            Scenario::ErrorMidstream
        );
        assert_eq!(
            Scenario::from_model("cut-midstream"),
            Scenario::CutMidstream
        );
        assert_eq!(
            Scenario::from_model("big-tokens-1048576"),
            Scenario::BigTokens(1 << 20)
        );
        assert_eq!(Scenario::from_model("big-tokens-0"), Scenario::Normal);
        assert_eq!(
            Scenario::from_model("big-tokens-99999999"),
            Scenario::Normal
        );
    }

    #[test]
    fn big_tokens_have_the_size_asked_for() {
        let body = br#"{"model":"big-tokens-100000","messages":[]}"#;
        let r = reply("POST", "/v1/chat/completions", body, &cx(3));
        let Body::Whole { text, .. } = r.body else {
            panic!("not whole")
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let content = json["choices"][0]["message"]["content"].as_str().unwrap();
        // "Hello", " from" and " the" each divide 100000 bytes exactly.
        assert_eq!(content.len(), 3 * 100_000);
        assert!(content.starts_with("HelloHello"));
    }

    #[test]
    fn routing_and_errors() {
        let body = br#"{"model":"error-429","messages":[]}"#;
        let r = reply("POST", "/v1/chat/completions?x=1", body, &cx(4));
        assert_eq!(r.status, 429);
        let r = reply("POST", "/nope", body, &cx(4));
        assert_eq!(r.status, 404);
        let r = reply("GET", "/v1/messages", body, &cx(4));
        assert_eq!(r.status, 405);
        let r = reply("POST", "/v1/messages", b"not json", &cx(4));
        assert_eq!(r.status, 400);
    }

    #[test]
    fn max_tokens_caps_the_output() {
        let body = br#"{"model":"m","max_tokens":2,"messages":[]}"#;
        let r = reply("POST", "/v1/chat/completions", body, &cx(4));
        let Body::Whole { text, generated } = r.body else {
            panic!("not whole")
        };
        assert_eq!(generated, 2);
        assert!(text.contains(r#""finish_reason":"length""#), "{text}");
    }
}
