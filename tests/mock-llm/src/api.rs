//! What an LLM API is to the mock: the [`Api`] trait each of `replies/`
//! implements, and the [`Generation`] it renders: the request, the tokens,
//! why generation stopped ([`Finish`]) and how the stream ends
//! ([`Ending`]). Pure: no I/O, no clock.

use crate::pacing::{Events, Pacing};
use crate::request::LlmRequest;

/// One LLM API the mock speaks.
pub trait Api: Sync {
    /// Whether a body without a `stream` field asks for a stream.
    fn streams_by_default(&self) -> bool {
        false
    }
    /// The stream's events for `g`, ending as `g.ending` says.
    fn stream(&self, g: &Generation<'_>) -> Events;
    /// The whole (non-stream) JSON body for `g`.
    fn whole(&self, g: &Generation<'_>) -> String;
    /// The error body for an HTTP error `status`.
    fn error_body(&self, status: u16, message: &str) -> String;
    /// The stream's content type.
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream; charset=utf-8"
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model finished.
    Stop,
    /// `max_tokens` cut it short.
    Length,
}

/// How a stream ends after its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Finish reason, usage and end marker.
    Complete,
    /// The API's in-stream error event.
    Error,
    /// Nothing: the connection is cut.
    Cut,
}

/// Everything an API needs to write its answer.
#[derive(Debug)]
pub struct Generation<'a> {
    pub request: &'a LlmRequest,
    /// Unique per response: `mock-{conn}-{request}`.
    pub id: String,
    /// Unix seconds, for `created` fields.
    pub created: u64,
    pub tokens: Vec<String>,
    pub finish: Finish,
    pub ending: Ending,
    pub pacing: Pacing,
}

impl Generation<'_> {
    /// The generated text.
    pub fn text(&self) -> String {
        self.tokens.concat()
    }
}

/// The conventional error type name for an HTTP status, as the providers
/// spell it in their error bodies.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}
