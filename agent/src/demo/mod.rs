//! The built-in demo: a mock LLM server ([`server`]) that streams like the
//! real APIs, for `llmtap demo` ([`run`]) and the end-to-end tests.
//!
//! Inside, a request flows `request` (HTTP head, body fields) → `reply`
//! (which API, which scenario; the APIs live in `replies/`) → `wire`
//! (HTTP framing and timing of each write) → `connection` (the I/O), with
//! every write recorded by `send_log`. HTTP/2 clients are answered by
//! `h2` instead of `wire` and `connection`, with the same replies.

mod connection;
mod h2;
mod replies;
mod reply;
mod request;
mod rewound;
mod send_log;
pub mod server;
mod tls;
mod walkthrough;
mod wire;

pub use walkthrough::run;
