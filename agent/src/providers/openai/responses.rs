//! The Responses API: `response.*` stream events and `response` objects.

use std::borrow::Cow;

use serde::Deserialize;

use super::TokenUsage;
use crate::providers::{parse, ErrorField, ProviderError, ResponseInfo};

/// Decodes one stream event; returns whether it carried output.
pub(super) fn event(data: &[u8], out: &mut ResponseInfo) -> Result<bool, ProviderError> {
    let event: ResponsesEvent<'_> = parse(data)?;
    Ok(event.apply(out))
}

/// Decodes a whole non-streamed `response` object.
pub(super) fn body(data: &[u8], out: &mut ResponseInfo) -> Result<(), ProviderError> {
    let body: ResponseObject<'_> = parse(data)?;
    body.apply_final(out, true);
    Ok(())
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
