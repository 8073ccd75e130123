//! LLM API decoders, one file per provider behind the [`Provider`] trait.
//!
//! Input: a request head and its parsed JSON body, then the response as
//! [`Frame`]s (SSE events, NDJSON lines) or as one whole body, read by the
//! provider's [`ResponseDecoder`] for that response. Output: the request's
//! [`RequestInfo`] and the response facts gathered into a [`ResponseInfo`].
//! Providers are tried in [`PROVIDERS`] order; the first that claims a
//! request decodes it. Hosts never matter: compatible servers run anywhere,
//! so claims look at the path and the body's shape only.

mod anthropic;
mod azure;
mod gemini;
mod ollama;
mod openai;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::RequestHead;
use crate::sse::Frame;

/// Why a frame or body could not be decoded. Decoding goes on with the next
/// frame; the record keeps what was understood.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The bytes were not the JSON shape this API sends.
    #[error("unexpected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The operation a request performs (OTel `gen_ai.operation.name` where
/// the spec has one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// Chat Completions, Anthropic Messages, Ollama `/api/chat`.
    Chat,
    /// Legacy Completions, Ollama `/api/generate`.
    TextCompletion,
    /// OpenAI Responses API.
    Responses,
    /// Gemini `generateContent` / `streamGenerateContent`.
    GenerateContent,
}

impl Api {
    /// The name used in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::TextCompletion => "text_completion",
            Self::Responses => "responses",
            Self::GenerateContent => "generate_content",
        }
    }
}

/// What the request body says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestInfo {
    /// Requested model (from the body, or the path for Gemini and Azure).
    pub model: Option<String>,
    /// Whether a streamed response was asked for.
    pub stream: bool,
    /// Output token limit asked for.
    pub max_tokens: Option<u64>,
    /// Sampling temperature asked for.
    pub temperature: Option<f64>,
    /// The prompt's text, kept only to estimate input tokens; never output.
    pub input_text: String,
}

/// Token usage as the response reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input: Option<u64>,
    /// Generated tokens, reasoning included.
    pub output: Option<u64>,
    /// Prompt tokens served from a cache.
    pub cached_input: Option<u64>,
    /// Reasoning ("thinking") tokens.
    pub reasoning: Option<u64>,
}

/// An error the API reported, in a body or in a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiError {
    /// The provider's own error type or status, e.g. `rate_limit_error`.
    pub kind: Option<String>,
    /// Its message, cut to [`MAX_ERROR_MESSAGE`] bytes.
    pub message: Option<String>,
}

/// Error messages kept per call.
pub const MAX_ERROR_MESSAGE: usize = 256;

/// The response facts gathered frame by frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseInfo {
    /// Model that answered.
    pub model: Option<String>,
    /// Response id.
    pub id: Option<String>,
    /// Finish/stop reasons, one per choice that finished.
    pub finish_reasons: Vec<String>,
    /// Usage, when reported.
    pub usage: Usage,
    /// An error reported inside the body or stream.
    pub error: Option<ApiError>,
    /// The stream's end marker (`[DONE]`, `message_stop`, `done: true`...).
    pub done: bool,
    /// Generated text (and reasoning and tool arguments), kept only to
    /// estimate tokens; never output.
    pub text: String,
    /// Largest `text` kept.
    pub text_cap: usize,
    /// `text` hit its cap.
    pub text_truncated: bool,
}

impl ResponseInfo {
    /// An empty record keeping at most `text_cap` bytes of text.
    pub fn new(text_cap: usize) -> Self {
        Self {
            text_cap,
            ..Self::default()
        }
    }

    /// Adds generated text; returns whether there was any.
    pub fn push_text(&mut self, text: &str) -> bool {
        if text.is_empty() {
            return false;
        }
        let room = self.text_cap.saturating_sub(self.text.len());
        if text.len() <= room {
            self.text.push_str(text);
        } else {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&text[..cut]);
            self.text_truncated = true;
        }
        true
    }

    /// Sets the model once (the first value wins).
    fn set_model(&mut self, model: Option<Cow<'_, str>>) {
        if self.model.is_none() {
            self.model = model.filter(|m| !m.is_empty()).map(Cow::into_owned);
        }
    }

    /// Sets the id once (the first value wins).
    fn set_id(&mut self, id: Option<Cow<'_, str>>) {
        if self.id.is_none() {
            self.id = id.filter(|i| !i.is_empty()).map(Cow::into_owned);
        }
    }

    fn push_finish(&mut self, reason: Option<Cow<'_, str>>) {
        if let Some(reason) = reason.filter(|r| !r.is_empty()) {
            self.finish_reasons.push(reason.into_owned());
        }
    }
}

/// One LLM API family.
pub trait Provider: Sync {
    /// The provider name in records (`gen_ai.provider.name`).
    fn name(&self) -> &'static str;

    /// Claims a request from its head alone; `None` if it is not this API.
    /// Called before the body is kept, so non-LLM bodies are never buffered.
    fn claim(&self, head: &RequestHead) -> Option<Api>;

    /// Reads the request. `body` is `None` when it was cut by the cap and
    /// could not be parsed. Returns `None` when the body is not this API's
    /// shape: the request is then not an LLM call.
    fn request(&self, api: Api, head: &RequestHead, body: Option<&Value>) -> Option<RequestInfo>;

    /// A decoder for one response to a request of `api`. Called once per
    /// call; a decoder with no state is a zero-sized box, which does not
    /// allocate.
    fn decoder(&self, api: Api) -> Box<dyn ResponseDecoder>;
}

/// Decodes one response, keeping whatever it needs from one frame to the
/// next (never part of the record). A response is read either as frames,
/// in order, or as one whole body.
///
/// `Send` so that what holds a response in progress can still move
/// between threads.
pub trait ResponseDecoder: Send {
    /// Decodes one streamed frame; returns whether it carried generated
    /// output (text, reasoning or a tool-call delta).
    fn frame(&mut self, frame: Frame<'_>, out: &mut ResponseInfo) -> Result<bool, ProviderError>;

    /// Decodes a whole body: a non-streamed response or an error.
    fn body(&mut self, body: &[u8], out: &mut ResponseInfo) -> Result<(), ProviderError>;
}

/// Every provider, in the order they are asked to claim a request: the
/// specific paths first, OpenAI's generic suffixes last.
pub static PROVIDERS: &[&dyn Provider] = &[
    &azure::AzureOpenAi,
    &anthropic::Anthropic,
    &gemini::Gemini,
    &ollama::Ollama,
    &openai::OpenAi,
];

/// The first provider claiming `head`, with the operation.
pub fn claim(head: &RequestHead) -> Option<(&'static dyn Provider, Api)> {
    if !head.method.eq_ignore_ascii_case("POST") {
        return None;
    }
    PROVIDERS
        .iter()
        .find_map(|p| p.claim(head).map(|api| (*p, api)))
}

/// An `error` member: an object (OpenAI, Anthropic, Gemini) or a string
/// (Ollama, some compatible servers).
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Object {
        #[serde(borrow, rename = "type")]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow)]
        status: Option<Cow<'a, str>>,
        #[serde(borrow)]
        message: Option<Cow<'a, str>>,
        /// A string or a number, depending on the API.
        code: Option<Value>,
    },
}

impl ErrorField<'_> {
    fn into_api_error(self) -> ApiError {
        let (kind, message) = match self {
            Self::Text(message) => (None, Some(message)),
            Self::Object {
                kind,
                status,
                message,
                code,
            } => {
                let code = code.and_then(|c| match c {
                    Value::String(s) => Some(Cow::Owned(s)),
                    _ => None,
                });
                (kind.or(status).or(code), message)
            }
        };
        ApiError {
            kind: kind.map(Cow::into_owned),
            message: message.map(|m| cut(&m, MAX_ERROR_MESSAGE).to_owned()),
        }
    }
}

/// A JSON string, borrowed from the input unless it has escapes (a bare
/// `Cow<str>` outside a derived struct field would always copy).
#[derive(Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// An object member name a hot-path visitor cares about.
trait MemberName {
    /// The name as it appears in the JSON (unescaped, not UTF-8 checked).
    fn from_name(name: &[u8]) -> Self;
}

/// Reads a member name as raw bytes: no UTF-8 check and no copy, which a
/// `str` identifier costs on every key of every streamed chunk.
struct Member<K>(K);

impl<'de, K: MemberName> Deserialize<'de> for Member<K> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct NameVisitor<K>(std::marker::PhantomData<K>);

        impl<K: MemberName> serde::de::Visitor<'_> for NameVisitor<K> {
            type Value = Member<K>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }

            fn visit_bytes<E: serde::de::Error>(self, name: &[u8]) -> Result<Member<K>, E> {
                Ok(Member(K::from_name(name)))
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Member<K>, E> {
                self.visit_bytes(name.as_bytes())
            }
        }

        de.deserialize_bytes(NameVisitor(std::marker::PhantomData))
    }
}

/// A tool call in a message or delta: OpenAI streams `arguments` as text,
/// Ollama sends an object (not generated text we can count, so skipped).
#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    function: Option<ToolFunction<'a>>,
}

#[derive(Deserialize)]
struct ToolFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<ToolArguments<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolArguments<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Object(serde::de::IgnoredAny),
}

impl ToolCall<'_> {
    /// Adds the call's name and argument text; returns whether any.
    fn push(self, out: &mut ResponseInfo) -> bool {
        let Some(function) = self.function else {
            return false;
        };
        let arguments = match function.arguments {
            Some(ToolArguments::Text(text)) => Some(text),
            _ => None,
        };
        [function.name, arguments]
            .into_iter()
            .flatten()
            .fold(false, |output, text| out.push_text(&text) | output)
    }
}

/// The longest prefix of `text` within `max` bytes, on a char boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Request fields read from a JSON body by key.
struct Fields<'v>(&'v Value);

impl<'v> Fields<'v> {
    fn str(&self, key: &str) -> Option<String> {
        self.0.get(key)?.as_str().map(str::to_owned)
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.0.get(key)?.as_u64()
    }

    fn f64(&self, key: &str) -> Option<f64> {
        self.0.get(key)?.as_f64()
    }

    fn bool(&self, key: &str) -> Option<bool> {
        self.0.get(key)?.as_bool()
    }

    fn has(&self, key: &str) -> bool {
        self.0.get(key).is_some()
    }

    fn nested(&self, key: &str) -> Fields<'v> {
        Fields(self.0.get(key).unwrap_or(&Value::Null))
    }

    /// Text of the prompt under `keys` (strings, `content`/`text`/`parts`
    /// members, recursively), joined with newlines.
    fn text(&self, keys: &[&str]) -> String {
        let mut out = String::new();
        for key in keys {
            if let Some(value) = self.0.get(key) {
                collect_text(value, &mut out);
            }
        }
        out
    }
}

fn collect_text(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
        Value::Array(items) => items.iter().for_each(|v| collect_text(v, out)),
        Value::Object(map) => ["content", "text", "parts"]
            .iter()
            .filter_map(|k| map.get(*k))
            .for_each(|v| collect_text(v, out)),
        _ => {}
    }
}

/// Parses a borrowed frame or body struct.
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProviderError> {
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests;
