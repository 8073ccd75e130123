//! llmtap: a zero-code observer for LLM traffic.
//!
//! The modules follow the data, each stage taking plain values from the one
//! before it:
//!
//! ```text
//! capture ─► stream::ConnectionEvent ─► calls (http | http2 ─► sse ─► providers) ─► calls::LlmCall ─► export
//! ```
//!
//! `pipeline` joins the stages after capture, `run` drives a capture source
//! into it, `sys` holds every system call made by hand. Everything from
//! `stream` to `calls` is pure: bytes and timestamps in, values out, no
//! sockets, clocks or BPF. The binary's `main.rs` is only glue.
//!
//! The public surface is what the binary, the tests, the benches and the
//! fuzz targets use: the reconstruction stages (`stream` to `calls`), the
//! packet stage (`capture::pcap`), the exporters, the settings, and the
//! command-line entry ([`run::run`]).

#![deny(missing_docs)]

pub mod calls;
pub mod capture;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod export;
pub mod http;
pub mod http2;
pub(crate) mod json;
pub(crate) mod pipeline;
pub mod providers;
pub mod run;
pub mod sse;
pub mod stream;
pub(crate) mod sys;
pub mod workload;
