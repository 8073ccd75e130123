//! Ollama's native API: `/api/chat` and `/api/generate`, streamed as NDJSON
//! by default, with `prompt_eval_count`/`eval_count` in the last line.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::{
    parse, Api, ErrorField, Fields, Provider, ProviderError, RequestInfo, ResponseDecoder,
    ResponseInfo, ToolCall,
};
use crate::http::RequestHead;
use crate::sse::Frame;

/// The Ollama native API.
pub(super) struct Ollama;

impl Provider for Ollama {
    fn name(&self) -> &'static str {
        "ollama"
    }

    fn claim(&self, head: &RequestHead) -> Option<Api> {
        let path = head.path().trim_end_matches('/');
        if path.ends_with("/api/chat") {
            Some(Api::Chat)
        } else if path.ends_with("/api/generate") {
            Some(Api::TextCompletion)
        } else {
            None
        }
    }

    fn request(&self, api: Api, _head: &RequestHead, body: Option<&Value>) -> Option<RequestInfo> {
        let Some(body) = body else {
            return Some(RequestInfo::default());
        };
        let f = Fields(body);
        let (shape_key, text_keys): (&str, &[&str]) = match api {
            Api::Chat => ("messages", &["messages"]),
            _ => ("prompt", &["system", "prompt"]),
        };
        let options = f.nested("options");
        f.has(shape_key).then(|| RequestInfo {
            model: f.str("model"),
            // Ollama streams unless told not to.
            stream: f.bool("stream").unwrap_or(true),
            max_tokens: options.u64("num_predict"),
            temperature: options.f64("temperature"),
            input_text: f.text(text_keys),
        })
    }

    fn decoder(&self, _api: Api) -> Box<dyn ResponseDecoder> {
        Box::new(Decoder)
    }
}

/// Reads a `/api/chat` or `/api/generate` response; each line stands
/// alone, and both APIs' lines share one shape.
struct Decoder;

impl ResponseDecoder for Decoder {
    fn frame(&mut self, frame: Frame<'_>, out: &mut ResponseInfo) -> Result<bool, ProviderError> {
        let line: Line<'_> = parse(frame.data)?;
        Ok(line.apply(out))
    }

    fn body(&mut self, body: &[u8], out: &mut ResponseInfo) -> Result<(), ProviderError> {
        let line: Line<'_> = parse(body)?;
        line.apply(out);
        Ok(())
    }
}

/// One NDJSON line, or a whole non-streamed body (same shape).
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    /// `/api/chat`.
    #[serde(borrow)]
    message: Option<Message<'a>>,
    /// `/api/generate`.
    #[serde(borrow)]
    response: Option<Cow<'a, str>>,
    /// `/api/generate` with thinking models.
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    done: Option<bool>,
    #[serde(borrow)]
    done_reason: Option<Cow<'a, str>>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

impl Line<'_> {
    fn apply(self, out: &mut ResponseInfo) -> bool {
        out.set_model(self.model);
        if let Some(error) = self.error {
            out.error = Some(error.into_api_error());
        }
        out.usage.input = self.prompt_eval_count.or(out.usage.input);
        out.usage.output = self.eval_count.or(out.usage.output);
        out.done |= self.done == Some(true);
        out.push_finish(self.done_reason);
        let mut output = false;
        let (mut content, mut thinking, mut calls) = (None, None, None);
        if let Some(message) = self.message {
            (content, thinking, calls) = (message.content, message.thinking, message.tool_calls);
        }
        for text in [self.response, self.thinking, content, thinking]
            .into_iter()
            .flatten()
        {
            output |= out.push_text(&text);
        }
        for call in calls.into_iter().flatten() {
            output |= call.push(out);
        }
        output
    }
}
