//! A mock LLM server that streams like the real APIs, for `llmtap demo` and
//! the end-to-end tests: [`start`] it with a [`ServerConfig`], point clients
//! at [`RunningServer::base_url`], and read back what it sent as
//! [`SendRecord`]s.
//!
//! Inside, a request flows `request` (HTTP head, body fields) → `reply`
//! (which API, which scenario) → one of `replies/` (the API's JSON and
//! events, written against `api`, timed by `pacing`) → `wire` (HTTP framing
//! and timing of each write) → `connection` (the I/O), with every write
//! recorded by `send_log`. HTTP/2 clients are answered by `h2` instead of
//! `wire` and `connection`, with the same replies.

mod api;
mod connection;
mod h2;
mod pacing;
mod replies;
mod reply;
mod request;
mod rewound;
mod send_log;
mod server;
mod tls;
mod wire;

pub use pacing::Pacing;
pub use send_log::SendRecord;
pub use server::{start, RunningServer, ServerConfig};
