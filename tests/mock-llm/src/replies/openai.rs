//! OpenAI's Chat Completions (`/v1/chat/completions`) and legacy Completions
//! (`/v1/completions`), streamed as the API does: `data:` events of
//! `chat.completion.chunk` / `text_completion` objects, an optional usage
//! chunk, then `data: [DONE]`.

use serde_json::{json, Value};

use crate::api::{error_type, Api, Ending, Finish, Generation};
use crate::pacing::Events;

/// `POST /v1/chat/completions`.
pub struct Chat;
/// `POST /v1/completions`.
pub struct Completions;

impl Api for Chat {
    fn stream(&self, g: &Generation<'_>) -> Events {
        let chunk = |delta: Value, finish: Value| {
            let choices =
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
            chunk_object(g, "chat.completion.chunk", choices)
        };
        let mut ev = Events::default();
        ev.meta(chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ));
        for t in &g.tokens {
            ev.output(chunk(json!({"content": t}), Value::Null));
        }
        finish_stream(
            g,
            &mut ev,
            "chat.completion.chunk",
            chunk(json!({}), finish_reason(g).into()),
        );
        ev
    }

    fn whole(&self, g: &Generation<'_>) -> String {
        let message = json!({"role": "assistant", "content": g.text(), "refusal": null});
        let choices = json!([{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(g)}]);
        whole_object(g, "chat.completion", choices)
    }

    fn error_body(&self, status: u16, message: &str) -> String {
        http_error(status, message)
    }
}

impl Api for Completions {
    fn stream(&self, g: &Generation<'_>) -> Events {
        let chunk = |text: &str, finish: Value| {
            let choices =
                json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]);
            chunk_object(g, "text_completion", choices)
        };
        let mut ev = Events::default();
        for t in &g.tokens {
            ev.output(chunk(t, Value::Null));
        }
        finish_stream(
            g,
            &mut ev,
            "text_completion",
            chunk("", finish_reason(g).into()),
        );
        ev
    }

    fn whole(&self, g: &Generation<'_>) -> String {
        let choices = json!([{"text": g.text(), "index": 0, "logprobs": null, "finish_reason": finish_reason(g)}]);
        whole_object(g, "text_completion", choices)
    }

    fn error_body(&self, status: u16, message: &str) -> String {
        http_error(status, message)
    }
}

/// After the tokens: the finish chunk, the usage chunk when asked for, and
/// `[DONE]`; or the error event; or nothing for a cut.
fn finish_stream(g: &Generation<'_>, ev: &mut Events, object: &str, finish_chunk: String) {
    match g.ending {
        Ending::Complete => {
            ev.meta(finish_chunk);
            if g.request.include_usage {
                let mut usage_chunk = stream_object(g, object, json!([]));
                usage_chunk["usage"] = usage(g);
                ev.meta(sse_data(&usage_chunk.to_string()));
            }
            ev.meta(sse_data("[DONE]"));
        }
        Ending::Error => {
            let err = openai_error(
                "The server had an error while processing your request.",
                "server_error",
            );
            ev.meta(sse_data(&err.to_string()));
        }
        Ending::Cut => {}
    }
}

/// A stream chunk as an SSE event.
fn chunk_object(g: &Generation<'_>, object: &str, choices: Value) -> String {
    sse_data(&stream_object(g, object, choices).to_string())
}

/// A chunk object; the API adds `"usage": null` to every chunk only when
/// usage was asked for.
fn stream_object(g: &Generation<'_>, object: &str, choices: Value) -> Value {
    let mut v = envelope(g, object, choices);
    if g.request.include_usage {
        v["usage"] = Value::Null;
    }
    v
}

fn whole_object(g: &Generation<'_>, object: &str, choices: Value) -> String {
    let mut v = envelope(g, object, choices);
    v["usage"] = usage(g);
    v.to_string()
}

/// The fields every response object of both APIs carries.
fn envelope(g: &Generation<'_>, object: &str, choices: Value) -> Value {
    json!({
        "id": id(g, object),
        "object": object,
        "created": g.created,
        "model": g.request.model,
        "system_fingerprint": "fp_llmtap_mock",
        "choices": choices,
    })
}

fn id(g: &Generation<'_>, object: &str) -> String {
    let prefix = if object.starts_with("chat") {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!("{prefix}-{}", g.id)
}

fn usage(g: &Generation<'_>) -> Value {
    let (input, output) = (g.request.prompt_tokens, g.tokens.len());
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

fn finish_reason(g: &Generation<'_>) -> &'static str {
    match g.finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn http_error(status: u16, message: &str) -> String {
    let mut err = openai_error(message, error_type(status));
    if status == 429 {
        err["error"]["code"] = "rate_limit_exceeded".into();
    }
    err.to_string()
}

/// The `{"error": {...}}` object, also sent mid-stream.
fn openai_error(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

/// One SSE event with only a `data:` field.
fn sse_data(data: &str) -> String {
    format!("data: {data}\n\n")
}
