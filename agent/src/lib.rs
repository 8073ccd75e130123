//! llmtap: a zero-code observer for LLM traffic.
//!
//! The modules follow the data, each stage taking plain values from the one
//! before it:
//!
//! ```text
//! capture ─► reassembly ─► stream::StreamEvent ─► http | http2 ─► sse ─► providers ─► calls::LlmCall ─► export
//! ```
//!
//! Everything from `reassembly` to `calls` is pure: bytes and timestamps in,
//! values out, no sockets, clocks or BPF. `main.rs` is only glue.

pub mod calls;
pub mod capture;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod export;
pub mod http;
pub mod http2;
pub mod launch;
pub mod providers;
pub mod reassembly;
pub mod run;
pub mod run_packets;
pub mod sse;
pub mod stream;
pub mod workload;
