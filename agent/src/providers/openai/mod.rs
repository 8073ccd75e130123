//! OpenAI Chat Completions, Completions and Responses, and the compatible
//! servers that copy them (vLLM, llama.cpp with its `timings`, TGI,
//! LiteLLM, Ollama's `/v1`). Claimed by path suffix on any host.
//!
//! A response is read by [`ChatDecoder`] or [`ResponsesDecoder`]: `chat`
//! decodes Chat Completions and Completions chunks and bodies with serde,
//! `plain` reads their common chunk fast, and `responses` the Responses
//! API's events and objects.

mod chat;
mod plain;
mod responses;

use serde::Deserialize;
use serde_json::Value;

use plain::ChunkShape;

use super::{
    Api, Fields, Provider, ProviderError, RequestInfo, ResponseDecoder, ResponseInfo, Usage,
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

    fn decoder(&self, api: Api) -> Box<dyn ResponseDecoder> {
        decoder(api)
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

/// A decoder for one response of `api`.
pub(super) fn decoder(api: Api) -> Box<dyn ResponseDecoder> {
    match api {
        Api::Responses => Box::new(ResponsesDecoder),
        _ => Box::<ChatDecoder>::default(),
    }
}

/// Reads a Chat Completions or Completions response. A stream's chunks
/// usually repeat one plain shape, so `shape` (learnt from the last plain
/// chunk) reads most of them without serde.
#[derive(Default)]
struct ChatDecoder {
    shape: ChunkShape,
}

impl ChatDecoder {
    /// Decodes a chunk (or a whole non-streamed body, same shape) straight
    /// into `out`; returns whether it carried output. This runs once per
    /// streamed token: the plain chunk is read by the shape, anything else
    /// by serde.
    fn chunk(&mut self, data: &[u8], out: &mut ResponseInfo) -> Result<bool, ProviderError> {
        match self.shape.apply(data, out) {
            Some(output) => Ok(output),
            None => chat::decode(data, out),
        }
    }
}

impl ResponseDecoder for ChatDecoder {
    fn frame(&mut self, frame: Frame<'_>, out: &mut ResponseInfo) -> Result<bool, ProviderError> {
        if frame.data == b"[DONE]" {
            out.done = true;
            return Ok(false);
        }
        self.chunk(frame.data, out)
    }

    fn body(&mut self, body: &[u8], out: &mut ResponseInfo) -> Result<(), ProviderError> {
        self.chunk(body, out).map(|_| ())
    }
}

/// Reads a Responses API response; each event stands alone.
struct ResponsesDecoder;

impl ResponseDecoder for ResponsesDecoder {
    fn frame(&mut self, frame: Frame<'_>, out: &mut ResponseInfo) -> Result<bool, ProviderError> {
        responses::event(frame.data, out)
    }

    fn body(&mut self, body: &[u8], out: &mut ResponseInfo) -> Result<(), ProviderError> {
        responses::body(body, out)
    }
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
