//! Ollama's chat API (`/api/chat`): newline-delimited JSON, one message
//! fragment per line, then a `done: true` line with `prompt_eval_count`,
//! `eval_count` and durations. Ollama streams unless told otherwise.

use serde_json::{json, Value};

use crate::api::{Api, Ending, Finish, Generation};
use crate::pacing::Events;

/// `POST /api/chat`.
pub struct Chat;

/// Ollama stamps each line with the time; a fixed one keeps replies
/// reproducible, and nothing reads it.
const CREATED_AT: &str = "2026-01-01T00:00:00.000000000Z";

impl Api for Chat {
    fn streams_by_default(&self) -> bool {
        true
    }

    fn stream(&self, g: &Generation<'_>) -> Events {
        let mut ev = Events::default();
        for t in &g.tokens {
            ev.output(line(&json!({
                "model": g.request.model,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": t},
                "done": false,
            })));
        }
        match g.ending {
            Ending::Complete => ev.meta(line(&done(g, ""))),
            Ending::Error => ev.meta(line(&json!({"error": "mock model crashed mid-stream"}))),
            Ending::Cut => {}
        }
        ev
    }

    fn whole(&self, g: &Generation<'_>) -> String {
        done(g, &g.text()).to_string()
    }

    fn error_body(&self, _status: u16, message: &str) -> String {
        json!({"error": message}).to_string()
    }

    fn stream_content_type(&self) -> &'static str {
        "application/x-ndjson"
    }
}

/// The final object, carrying the counts and the whole text when not
/// streamed.
fn done(g: &Generation<'_>, content: &str) -> Value {
    let eval = g.pacing.generation_time(g.tokens.len()).as_nanos() as u64;
    json!({
        "model": g.request.model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": content},
        "done": true,
        "done_reason": match g.finish { Finish::Stop => "stop", Finish::Length => "length" },
        "total_duration": eval,
        "load_duration": 0,
        "prompt_eval_count": g.request.prompt_tokens,
        "prompt_eval_duration": 0,
        "eval_count": g.tokens.len(),
        "eval_duration": eval,
    })
}

fn line(v: &Value) -> String {
    format!("{v}\n")
}
