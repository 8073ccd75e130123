//! Google Gemini (and Vertex AI): `models/{model}:generateContent` and
//! `:streamGenerateContent` (SSE with `alt=sse`, else one JSON array), with
//! `usageMetadata`. The model is named in the path.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::{
    parse, Api, ErrorField, Fields, Provider, ProviderError, RequestInfo, ResponseDecoder,
    ResponseInfo,
};
use crate::http::RequestHead;
use crate::sse::Frame;

/// The Gemini API.
pub(super) struct Gemini;

/// `(model, streamed)` from `.../models/{model}:{method}`.
fn model_and_method(path: &str) -> Option<(&str, bool)> {
    let (_, tail) = path.rsplit_once("/models/")?;
    let (model, method) = tail.split_once(':')?;
    match method {
        "generateContent" => Some((model, false)),
        "streamGenerateContent" => Some((model, true)),
        _ => None,
    }
}

impl Provider for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn claim(&self, head: &RequestHead) -> Option<Api> {
        model_and_method(head.path()).map(|_| Api::GenerateContent)
    }

    fn request(&self, _api: Api, head: &RequestHead, body: Option<&Value>) -> Option<RequestInfo> {
        let (model, stream) = model_and_method(head.path())?;
        let mut info = RequestInfo {
            model: Some(model.to_owned()),
            stream,
            ..RequestInfo::default()
        };
        if let Some(body) = body {
            let f = Fields(body);
            if !f.has("contents") {
                return None;
            }
            let config = f.nested("generationConfig");
            info.max_tokens = config.u64("maxOutputTokens");
            info.temperature = config.f64("temperature");
            info.input_text = f.text(&["systemInstruction", "contents"]);
        }
        Some(info)
    }

    fn decoder(&self, _api: Api) -> Box<dyn ResponseDecoder> {
        Box::new(Decoder)
    }
}

/// Reads a `generateContent` response; each chunk stands alone.
struct Decoder;

impl ResponseDecoder for Decoder {
    fn frame(&mut self, frame: Frame<'_>, out: &mut ResponseInfo) -> Result<bool, ProviderError> {
        let chunk: Chunk<'_> = parse(frame.data)?;
        Ok(chunk.apply(out))
    }

    fn body(&mut self, body: &[u8], out: &mut ResponseInfo) -> Result<(), ProviderError> {
        if body.trim_ascii_start().starts_with(b"[") {
            let chunks: Vec<Chunk<'_>> = parse(body)?;
            for chunk in chunks {
                chunk.apply(out);
            }
        } else {
            let chunk: Chunk<'_> = parse(body)?;
            chunk.apply(out);
        }
        Ok(())
    }
}

/// One `GenerateContentResponse` (a stream chunk or a whole body).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(borrow)]
    candidates: Option<Vec<Candidate<'a>>>,
    usage_metadata: Option<UsageMetadata>,
    #[serde(borrow)]
    model_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    response_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow)]
    parts: Option<Vec<Part<'a>>>,
}

/// A text part (`thought: true` for thinking) or a function call.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
}

impl Chunk<'_> {
    fn apply(self, out: &mut ResponseInfo) -> bool {
        out.set_model(self.model_version);
        out.set_id(self.response_id);
        if let Some(error) = self.error {
            out.error = Some(error.into_api_error());
        }
        if let Some(meta) = self.usage_metadata {
            let usage = &mut out.usage;
            usage.input = meta.prompt_token_count.or(usage.input);
            usage.cached_input = meta.cached_content_token_count.or(usage.cached_input);
            usage.reasoning = meta.thoughts_token_count.or(usage.reasoning);
            // Gemini counts thoughts apart; output includes them, as OpenAI's does.
            if meta.candidates_token_count.is_some() || meta.thoughts_token_count.is_some() {
                let total = meta.candidates_token_count.unwrap_or_default()
                    + meta.thoughts_token_count.unwrap_or_default();
                usage.output = Some(total);
            }
        }
        let mut output = false;
        for candidate in self.candidates.into_iter().flatten() {
            let parts = candidate.content.and_then(|c| c.parts);
            for part in parts.into_iter().flatten() {
                let name = part.function_call.and_then(|f| f.name);
                for text in [part.text, name].into_iter().flatten() {
                    output |= out.push_text(&text);
                }
            }
            out.push_finish(candidate.finish_reason);
        }
        output
    }
}
