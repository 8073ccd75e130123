//! What the mock answers, before any HTTP framing or timing: the request's
//! path picks an [`Api`], the model name picks a [`Scenario`], and the API
//! turns a [`Generation`] into a [`Reply`] — one JSON body, or a list of
//! stream events each tagged with its [`Pace`]. Pure: no I/O, no clock.

use std::time::Duration;

use serde_json::json;

use super::replies::{anthropic, ollama, openai};
use super::request::LlmRequest;

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

/// When an event is written, relative to the event before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Right away (headers and events before the first token).
    Now,
    /// After [`Pacing::first_token`]: the first output-bearing event.
    FirstToken,
    /// After [`Pacing::chunk`]: every event after the first token.
    Next,
}

/// The server's delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// From reading the request to writing the first output-bearing chunk.
    pub first_token: Duration,
    /// Between consecutive chunks after the first output-bearing one.
    pub chunk: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            first_token: Duration::from_millis(100),
            chunk: Duration::from_millis(20),
        }
    }
}

impl Pacing {
    /// The delay of one event.
    pub fn delay(&self, pace: Pace) -> Duration {
        match pace {
            Pace::Now => Duration::ZERO,
            Pace::FirstToken => self.first_token,
            Pace::Next => self.chunk,
        }
    }

    /// How long generating `tokens` tokens takes, as streamed.
    pub fn generation_time(&self, tokens: usize) -> Duration {
        match tokens {
            0 => Duration::ZERO,
            n => self.first_token + self.chunk * (n as u32 - 1),
        }
    }
}

/// A stream's events in order, built so that the pacing follows from what
/// each event carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub events: Vec<(Pace, String)>,
}

impl Events {
    /// An event without generated output (role chunk, `message_start`,
    /// `ping`, finish, usage, `[DONE]`...).
    pub fn meta(&mut self, text: String) {
        self.push(Pace::Now, text);
    }

    /// An event carrying one generated token.
    pub fn output(&mut self, text: String) {
        self.push(Pace::FirstToken, text);
    }

    /// Each event with its time, counted from reading the request.
    pub fn timed(self, pacing: &Pacing) -> impl Iterator<Item = (Duration, String)> + '_ {
        let mut at = Duration::ZERO;
        self.events.into_iter().map(move |(pace, event)| {
            at += pacing.delay(pace);
            (at, event)
        })
    }

    /// Appends `text` with pace `before_first_token` until the first token
    /// has been written, [`Pace::Next`] after.
    fn push(&mut self, before_first_token: Pace, text: String) {
        // `Next` only ever follows `FirstToken`, so the last event tells.
        let generating = matches!(self.events.last(), Some((Pace::FirstToken | Pace::Next, _)));
        let pace = if generating {
            Pace::Next
        } else {
            before_first_token
        };
        self.events.push((pace, text));
    }
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

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model finished.
    Stop,
    /// `max_tokens` cut it short.
    Length,
}

/// How a stream ends after its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Finish reason, usage and end marker.
    Complete,
    /// The API's in-stream error event.
    Error,
    /// Nothing: the connection is cut.
    Cut,
}

/// Everything an API needs to write its answer.
#[derive(Debug)]
pub struct Generation<'a> {
    pub request: &'a LlmRequest,
    /// Unique per response: `mock-{conn}-{request}`.
    pub id: String,
    /// Unix seconds, for `created` fields.
    pub created: u64,
    pub tokens: Vec<String>,
    pub finish: Finish,
    pub ending: Ending,
    pub pacing: Pacing,
}

impl Generation<'_> {
    /// The generated text.
    pub fn text(&self) -> String {
        self.tokens.concat()
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

/// One LLM API the mock speaks.
pub trait Api: Sync {
    /// Whether a body without a `stream` field asks for a stream.
    fn streams_by_default(&self) -> bool {
        false
    }
    /// The stream's events for `g`, ending as `g.ending` says.
    fn stream(&self, g: &Generation<'_>) -> Events;
    /// The whole (non-stream) JSON body for `g`.
    fn whole(&self, g: &Generation<'_>) -> String;
    /// The error body for an HTTP error `status`.
    fn error_body(&self, status: u16, message: &str) -> String;
    /// The stream's content type.
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream; charset=utf-8"
    }
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

/// The conventional error type name for an HTTP status, as the providers
/// spell it in their error bodies.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The OpenAI-shaped `{"error": {...}}` object, also used mid-stream.
pub fn openai_error(message: &str, kind: &str) -> serde_json::Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
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
    fn events_pace_from_their_content() {
        let mut ev = Events::default();
        ev.meta("a".into());
        ev.output("b".into());
        ev.output("c".into());
        ev.meta("d".into());
        let paces: Vec<Pace> = ev.events.iter().map(|(p, _)| *p).collect();
        assert_eq!(paces, [Pace::Now, Pace::FirstToken, Pace::Next, Pace::Next]);
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
