//! The mock's LLM APIs, one per file, each an implementation of
//! [`Api`](super::reply::Api) registered in `reply::APIS`.

pub mod anthropic;
pub mod ollama;
pub mod openai;

/// One SSE event with only a `data:` field.
fn sse_data(data: &str) -> String {
    format!("data: {data}\n\n")
}
