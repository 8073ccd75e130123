//! Anthropic Messages (`/v1/messages`): `message_start` usage,
//! `content_block_delta` text, thinking and tool input, `message_delta`
//! usage and stop reason, `message_stop`, `error`, `ping`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::{
    parse, Api, ErrorField, Fields, Provider, ProviderError, RequestInfo, ResponseDecoder,
    ResponseInfo,
};
use crate::http::RequestHead;
use crate::sse::Frame;

/// The Anthropic Messages API.
pub(super) struct Anthropic;

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    /// `/v1/messages` anywhere, or any `.../messages` path carrying the
    /// `anthropic-version` header (gateways that re-root the API).
    fn claim(&self, head: &RequestHead) -> Option<Api> {
        let path = head.path().trim_end_matches('/');
        let versioned = head.header("anthropic-version").is_some() && path.ends_with("/messages");
        (path.ends_with("/v1/messages") || versioned).then_some(Api::Chat)
    }

    fn request(&self, _api: Api, _head: &RequestHead, body: Option<&Value>) -> Option<RequestInfo> {
        let Some(body) = body else {
            return Some(RequestInfo::default());
        };
        let f = Fields(body);
        f.has("messages").then(|| RequestInfo {
            model: f.str("model"),
            stream: f.bool("stream").unwrap_or(false),
            max_tokens: f.u64("max_tokens"),
            temperature: f.f64("temperature"),
            input_text: f.text(&["system", "messages"]),
        })
    }

    fn decoder(&self, _api: Api) -> Box<dyn ResponseDecoder> {
        Box::new(Decoder)
    }
}

/// Reads a Messages response; each event stands alone.
struct Decoder;

impl ResponseDecoder for Decoder {
    fn frame(&mut self, frame: Frame<'_>, out: &mut ResponseInfo) -> Result<bool, ProviderError> {
        let event: Event<'_> = parse(frame.data)?;
        Ok(event.apply(out))
    }

    fn body(&mut self, body: &[u8], out: &mut ResponseInfo) -> Result<(), ProviderError> {
        let message: MessageObject<'_> = parse(body)?;
        for block in message.content.iter().flatten() {
            block.push(out);
        }
        message.apply(out);
        Ok(())
    }
}

/// One stream event; which members are present depends on `type`.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    /// `message_start`.
    #[serde(borrow)]
    message: Option<MessageObject<'a>>,
    /// `content_block_start`.
    #[serde(borrow)]
    content_block: Option<Block<'a>>,
    /// `content_block_delta`, `message_delta`.
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    /// `message_delta` (cumulative counts).
    usage: Option<AnthropicUsage>,
    /// `error`.
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
}

/// A whole message (non-streamed body, or inside `message_start`).
#[derive(Deserialize)]
struct MessageObject<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Vec<Block<'a>>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
    usage: Option<AnthropicUsage>,
    /// An error body: `{"type":"error","error":{...}}`.
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
}

/// A content block: text, thinking or tool use.
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    /// Tool name of a `tool_use` block.
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Anthropic counts cached prompt tokens apart; `input` includes them.
    fn apply(self, out: &mut ResponseInfo) {
        let usage = &mut out.usage;
        if let Some(input) = self.input_tokens {
            let cache = self.cache_read_input_tokens.unwrap_or_default()
                + self.cache_creation_input_tokens.unwrap_or_default();
            usage.input = Some(input + cache);
        }
        usage.cached_input = self.cache_read_input_tokens.or(usage.cached_input);
        usage.output = self.output_tokens.or(usage.output);
    }
}

impl Block<'_> {
    fn push(&self, out: &mut ResponseInfo) -> bool {
        [&self.text, &self.thinking, &self.name]
            .into_iter()
            .flatten()
            .fold(false, |output, text| out.push_text(text) | output)
    }
}

impl MessageObject<'_> {
    fn apply(self, out: &mut ResponseInfo) {
        out.set_id(self.id);
        out.set_model(self.model);
        out.push_finish(self.stop_reason);
        if let Some(usage) = self.usage {
            usage.apply(out);
        }
        if let Some(error) = self.error {
            out.error = Some(error.into_api_error());
        }
    }
}

impl Event<'_> {
    fn apply(self, out: &mut ResponseInfo) -> bool {
        if let Some(message) = self.message {
            message.apply(out);
        }
        if let Some(usage) = self.usage {
            usage.apply(out);
        }
        if let Some(error) = self.error {
            out.error = Some(error.into_api_error());
        }
        out.done |= self.kind == "message_stop";
        let mut output = self.content_block.is_some_and(|b| b.push(out));
        if let Some(delta) = self.delta {
            for text in [delta.text, delta.thinking, delta.partial_json]
                .into_iter()
                .flatten()
            {
                output |= out.push_text(&text);
            }
            out.push_finish(delta.stop_reason);
        }
        output
    }
}
