//! OpenAI Chat Completions, Completions and Responses, and the compatible
//! servers that copy them (vLLM, llama.cpp with its `timings`, TGI,
//! LiteLLM, Ollama's `/v1`). Claimed by path suffix on any host.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::{
    parse, Api, ErrorField, Fields, Provider, ProviderError, RequestInfo, ResponseInfo, Text,
    ToolCall, Usage,
};
use crate::http::RequestHead;
use crate::sse::Frame;

/// The OpenAI API, and servers compatible with it.
pub(super) struct OpenAi;

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn claim(&self, head: &RequestHead) -> Option<Api> {
        api_for_path(head.path())
    }

    fn request(&self, api: Api, _head: &RequestHead, body: Option<&Value>) -> Option<RequestInfo> {
        request(api, body)
    }

    fn frame(
        &self,
        api: Api,
        frame: Frame<'_>,
        out: &mut ResponseInfo,
    ) -> Result<bool, ProviderError> {
        decode_frame(api, frame, out)
    }

    fn body(&self, api: Api, body: &[u8], out: &mut ResponseInfo) -> Result<(), ProviderError> {
        decode_body(api, body, out)
    }
}

/// The operation a path ends with, whatever its prefix.
pub(super) fn api_for_path(path: &str) -> Option<Api> {
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions") {
        Some(Api::Chat)
    } else if path.ends_with("/completions") {
        Some(Api::TextCompletion)
    } else if path.ends_with("/responses") {
        Some(Api::Responses)
    } else {
        None
    }
}

/// Reads a request body of `api`; `None` if it is not that API's shape.
pub(super) fn request(api: Api, body: Option<&Value>) -> Option<RequestInfo> {
    let Some(body) = body else {
        return Some(RequestInfo::default());
    };
    let f = Fields(body);
    let (shape_key, text_keys, max_key): (&str, &[&str], &str) = match api {
        Api::Chat => ("messages", &["messages"], "max_completion_tokens"),
        Api::TextCompletion => ("prompt", &["prompt"], "max_tokens"),
        _ => ("input", &["instructions", "input"], "max_output_tokens"),
    };
    if !f.has(shape_key) {
        return None;
    }
    Some(RequestInfo {
        model: f.str("model"),
        stream: f.bool("stream").unwrap_or(false),
        max_tokens: f.u64(max_key).or_else(|| f.u64("max_tokens")),
        temperature: f.f64("temperature"),
        input_text: f.text(text_keys),
    })
}

/// Decodes one SSE event of `api`.
pub(super) fn decode_frame(
    api: Api,
    frame: Frame<'_>,
    out: &mut ResponseInfo,
) -> Result<bool, ProviderError> {
    if api == Api::Responses {
        let event: ResponsesEvent<'_> = parse(frame.data)?;
        return Ok(event.apply(out));
    }
    if frame.data == b"[DONE]" {
        out.done = true;
        return Ok(false);
    }
    chat_chunk(frame.data, out)
}

/// Decodes a whole response body of `api`.
pub(super) fn decode_body(
    api: Api,
    body: &[u8],
    out: &mut ResponseInfo,
) -> Result<(), ProviderError> {
    if api == Api::Responses {
        let body: ResponseObject<'_> = parse(body)?;
        body.apply_final(out, true);
    } else {
        chat_chunk(body, out)?;
    }
    Ok(())
}

/// Decodes a Chat Completions or Completions chunk (or a whole
/// non-streamed body, same shape) straight into `out`; returns whether it
/// carried output. This runs once per streamed token, so it walks the JSON
/// with a visitor instead of building structs and vectors to throw away.
fn chat_chunk(data: &[u8], out: &mut ResponseInfo) -> Result<bool, ProviderError> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let mut visitor = ChunkVisitor { out, output: false };
    de.deserialize_map(&mut visitor)?;
    de.end()?;
    Ok(visitor.output)
}

/// Visits a chunk's members, its `choices` array and each choice.
struct ChunkVisitor<'o> {
    out: &'o mut ResponseInfo,
    output: bool,
}

impl<'de> Visitor<'de> for &mut ChunkVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chat completion chunk")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<ChunkKey>()? {
            let out = &mut *self.out;
            match key {
                ChunkKey::Id => out.set_id(map.next_value::<Option<Text<'de>>>()?.map(|t| t.0)),
                ChunkKey::Model => {
                    out.set_model(map.next_value::<Option<Text<'de>>>()?.map(|t| t.0))
                }
                ChunkKey::Choices => map.next_value_seed(Choices(self))?,
                ChunkKey::Usage => {
                    if let Some(usage) = map.next_value::<Option<TokenUsage>>()? {
                        usage.apply(&mut out.usage);
                    }
                }
                // llama.cpp's server adds its own counters.
                ChunkKey::Timings => {
                    if let Some(timings) = map.next_value::<Option<LlamaTimings>>()? {
                        timings.apply(&mut out.usage);
                    }
                }
                ChunkKey::Error => {
                    if let Some(error) = map.next_value::<Option<ErrorField<'de>>>()? {
                        out.error = Some(error.into_api_error());
                    }
                }
                ChunkKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The chunk members read; matched without allocating.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ChunkKey {
    Id,
    Model,
    Choices,
    Usage,
    Timings,
    Error,
    #[serde(other)]
    Other,
}

/// The choice members read.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ChoiceKey {
    Delta,
    Message,
    Text,
    FinishReason,
    #[serde(other)]
    Other,
}

/// The `choices` array (or `null`), each element applied as it is read.
struct Choices<'v, 'o>(&'v mut ChunkVisitor<'o>);

impl<'de> DeserializeSeed<'de> for Choices<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Choices<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a choices array")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while seq.next_element_seed(Choice(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One choice: `delta` (streamed chat), `message` (whole chat) or `text`
/// (completions), and `finish_reason`.
struct Choice<'v, 'o>(&'v mut ChunkVisitor<'o>);

impl<'de> DeserializeSeed<'de> for Choice<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Choice<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a choice")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let visitor = self.0;
        while let Some(key) = map.next_key::<ChoiceKey>()? {
            match key {
                ChoiceKey::Delta | ChoiceKey::Message => {
                    if let Some(message) = map.next_value::<Option<Message<'de>>>()? {
                        visitor.output |= message.apply(visitor.out);
                    }
                }
                ChoiceKey::Text => {
                    if let Some(text) = map.next_value::<Option<Text<'de>>>()? {
                        visitor.output |= visitor.out.push_text(&text.0);
                    }
                }
                ChoiceKey::FinishReason => {
                    let reason = map.next_value::<Option<Text<'de>>>()?;
                    visitor.out.push_finish(reason.map(|t| t.0));
                }
                ChoiceKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    /// DeepSeek, vLLM, llama.cpp.
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    /// OpenRouter, newer vLLM.
    #[serde(borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

/// OpenAI usage; the aliases are the Responses API's names.
#[derive(Deserialize)]
struct TokenUsage {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
    #[serde(alias = "input_tokens_details")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(alias = "output_tokens_details")]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl TokenUsage {
    fn apply(self, usage: &mut Usage) {
        usage.input = self.prompt_tokens.or(usage.input);
        usage.output = self.completion_tokens.or(usage.output);
        usage.cached_input = self
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .or(usage.cached_input);
        usage.reasoning = self
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .or(usage.reasoning);
    }
}

/// llama.cpp's `timings`: a fallback when there is no `usage`.
#[derive(Deserialize)]
struct LlamaTimings {
    prompt_n: Option<u64>,
    predicted_n: Option<u64>,
    /// Prompt tokens reused from the KV cache (not in `prompt_n`).
    cache_n: Option<u64>,
}

impl LlamaTimings {
    fn apply(self, usage: &mut Usage) {
        if let Some(prompt) = self.prompt_n {
            usage.input = usage
                .input
                .or(Some(prompt + self.cache_n.unwrap_or_default()));
            usage.cached_input = usage.cached_input.or(self.cache_n);
        }
        usage.output = usage.output.or(self.predicted_n);
    }
}

impl Message<'_> {
    fn apply(self, out: &mut ResponseInfo) -> bool {
        let mut output = false;
        for text in [
            self.content,
            self.reasoning_content,
            self.reasoning,
            self.refusal,
        ]
        .into_iter()
        .flatten()
        {
            output |= out.push_text(&text);
        }
        for call in self.tool_calls.into_iter().flatten() {
            output |= call.push(out);
        }
        output
    }
}

/// One Responses API stream event.
#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(borrow)]
    response: Option<ResponseObject<'a>>,
    /// `error` events carry code and message at the top level.
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

impl ResponsesEvent<'_> {
    fn apply(self, out: &mut ResponseInfo) -> bool {
        match &*self.kind {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning_text.delta"
            | "response.reasoning_summary_text.delta"
            | "response.function_call_arguments.delta" => {
                self.delta.is_some_and(|d| out.push_text(&d))
            }
            "error" => {
                out.error = Some(
                    ErrorField::Object {
                        kind: self.code,
                        status: None,
                        message: self.message,
                        code: None,
                    }
                    .into_api_error(),
                );
                false
            }
            kind => {
                let last = matches!(
                    kind,
                    "response.completed" | "response.incomplete" | "response.failed"
                );
                if let Some(response) = self.response {
                    if last {
                        // Its `output` repeats the streamed deltas: skip it.
                        response.apply_final(out, false);
                    } else {
                        out.set_id(response.id);
                        out.set_model(response.model);
                    }
                }
                out.done |= last;
                false
            }
        }
    }
}

/// A Responses API `response` object (whole body, or inside events).
#[derive(Deserialize)]
struct ResponseObject<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    incomplete_details: Option<Incomplete<'a>>,
    usage: Option<TokenUsage>,
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
    #[serde(borrow)]
    output: Option<Vec<OutputItem<'a>>>,
}

#[derive(Deserialize)]
struct Incomplete<'a> {
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

/// One output item of a non-streamed Responses body.
#[derive(Deserialize)]
struct OutputItem<'a> {
    #[serde(borrow)]
    content: Option<Vec<TextPart<'a>>>,
    #[serde(borrow)]
    summary: Option<Vec<TextPart<'a>>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct TextPart<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

impl ResponseObject<'_> {
    /// Facts of the final object: identity, usage, status, error, and
    /// with `with_output` (a non-streamed body) the output text.
    fn apply_final(self, out: &mut ResponseInfo, with_output: bool) {
        out.set_id(self.id);
        out.set_model(self.model);
        if let Some(usage) = self.usage {
            usage.apply(&mut out.usage);
        }
        if let Some(error) = self.error {
            out.error = Some(error.into_api_error());
        }
        out.push_finish(
            self.incomplete_details
                .and_then(|d| d.reason)
                .or(self.status),
        );
        let output = self.output.filter(|_| with_output);
        for item in output.into_iter().flatten() {
            let parts = item.content.into_iter().chain(item.summary).flatten();
            for text in parts.filter_map(|p| p.text).chain(item.arguments) {
                out.push_text(&text);
            }
        }
    }
}
