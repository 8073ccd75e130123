//! Chat Completions and Completions read by serde: stream chunks and whole
//! bodies share one shape (`choices` with `delta`, `message` or `text`).
//! Input: one chunk's bytes; output: its facts added to a [`ResponseInfo`].

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::TokenUsage;
use crate::providers::{
    ErrorField, Member, MemberName, ProviderError, ResponseInfo, Text, ToolCall, Usage,
};

/// Decodes any chunk (or a whole non-streamed body, same shape) into
/// `out` with serde_json, walking it with a visitor instead of building
/// structs and vectors to throw away; returns whether it carried output.
pub(super) fn decode(data: &[u8], out: &mut ResponseInfo) -> Result<bool, ProviderError> {
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
        while let Some(Member(key)) = map.next_key::<Member<ChunkKey>>()? {
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

/// The chunk members read.
pub(super) enum ChunkKey {
    Id,
    Model,
    Choices,
    Usage,
    Timings,
    Error,
    Other,
}

impl MemberName for ChunkKey {
    fn from_name(name: &[u8]) -> Self {
        match name {
            b"id" => Self::Id,
            b"model" => Self::Model,
            b"choices" => Self::Choices,
            b"usage" => Self::Usage,
            b"timings" => Self::Timings,
            b"error" => Self::Error,
            _ => Self::Other,
        }
    }
}

/// The choice members read.
pub(super) enum ChoiceKey {
    Delta,
    Message,
    Text,
    FinishReason,
    Other,
}

impl MemberName for ChoiceKey {
    fn from_name(name: &[u8]) -> Self {
        match name {
            b"delta" => Self::Delta,
            b"message" => Self::Message,
            b"text" => Self::Text,
            b"finish_reason" => Self::FinishReason,
            _ => Self::Other,
        }
    }
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
        while let Some(Member(key)) = map.next_key::<Member<ChoiceKey>>()? {
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
