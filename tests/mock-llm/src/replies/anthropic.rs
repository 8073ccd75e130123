//! Anthropic's Messages API (`/v1/messages`), streamed as named SSE events:
//! `message_start` (with input usage), `content_block_start`, `ping`,
//! `content_block_delta` text deltas, `content_block_stop`, `message_delta`
//! (stop reason and output usage), `message_stop`; or an `error` event.

use serde_json::json;

use crate::api::{error_type, Api, Ending, Finish, Generation};
use crate::pacing::Events;

/// `POST /v1/messages`.
pub struct Messages;

impl Api for Messages {
    fn stream(&self, g: &Generation<'_>) -> Events {
        let mut ev = Events::default();
        let mut message = message(g, json!([]));
        message["stop_reason"] = json!(null);
        // The API reports a provisional output count of 1 at the start.
        message["usage"]["output_tokens"] = json!(1);
        ev.meta(event(
            "message_start",
            json!({"type": "message_start", "message": message}),
        ));
        ev.meta(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        ev.meta(event("ping", json!({"type": "ping"})));
        for t in &g.tokens {
            ev.output(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
            ));
        }
        match g.ending {
            Ending::Complete => {
                ev.meta(event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ));
                ev.meta(event(
                    "message_delta",
                    json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason(g), "stop_sequence": null},
                        "usage": {"output_tokens": g.tokens.len()},
                    }),
                ));
                ev.meta(event("message_stop", json!({"type": "message_stop"})));
            }
            Ending::Error => ev.meta(event("error", error_object(529, "Overloaded"))),
            Ending::Cut => {}
        }
        ev
    }

    fn whole(&self, g: &Generation<'_>) -> String {
        message(g, json!([{"type": "text", "text": g.text()}])).to_string()
    }

    fn error_body(&self, status: u16, message: &str) -> String {
        error_object(status, message).to_string()
    }
}

/// The message object, final stop reason and usage included.
fn message(g: &Generation<'_>, content: serde_json::Value) -> serde_json::Value {
    json!({
        "id": format!("msg_{}", g.id),
        "type": "message",
        "role": "assistant",
        "model": g.request.model,
        "content": content,
        "stop_reason": stop_reason(g),
        "stop_sequence": null,
        "usage": {"input_tokens": g.request.prompt_tokens, "output_tokens": g.tokens.len()},
    })
}

fn event(name: &str, data: serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn stop_reason(g: &Generation<'_>) -> &'static str {
    match g.finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
    }
}

fn error_object(status: u16, message: &str) -> serde_json::Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}
