//! The mock's LLM APIs, one per file, each an implementation of
//! [`Api`](crate::api::Api) that `reply` registers by path.

pub mod anthropic;
pub mod ollama;
pub mod openai;
