//! `mock-llm`: runs llmtap's mock LLM server (the `llmtap-mock-llm` crate) for
//! the end-to-end tests and by hand. Prints one JSON ready line on stdout,
//! `{"listening":"127.0.0.1:PORT","url":"https://127.0.0.1:PORT","cert":"/path"|null}`,
//! once it accepts connections, then serves until SIGINT or SIGTERM.
//! HTTP/1.1 always; HTTP/2 to plaintext clients that open with its preface,
//! and over TLS with `--http2`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use llmtap_mock_llm::{Pacing, ServerConfig};
use tokio::signal::unix::{signal, SignalKind};

/// A mock OpenAI / Anthropic / Ollama server that streams with realistic
/// timing. Model names `error-NNN`, `error-midstream` and `cut-midstream`
/// ask for failures, `big-tokens-N` for tokens of N bytes each.
#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve TLS with a fresh self-made CA (needs --cert-out).
    #[arg(long, requires = "cert_out")]
    tls: bool,
    /// Where to write the CA certificate (PEM) clients must trust.
    #[arg(long)]
    cert_out: Option<PathBuf>,
    /// Offer HTTP/2 (ALPN h2) over TLS. Plaintext HTTP/2 with prior
    /// knowledge (h2c) is served either way.
    #[arg(long)]
    http2: bool,
    /// Delay between consecutive chunks after the first token.
    #[arg(long, default_value_t = 20)]
    chunk_delay_ms: u64,
    /// Delay from the request to the first output-bearing chunk.
    #[arg(long, default_value_t = 100)]
    first_token_delay_ms: u64,
    /// Output tokens (content chunks) per reply, unless max_tokens is lower.
    #[arg(long, default_value_t = 12)]
    chunks: usize,
    /// Append one JSON line per write made (bytes and timestamps) here.
    #[arg(long)]
    send_log: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ServerConfig {
        listen: args.listen,
        tls_cert_out: args.tls.then_some(args.cert_out).flatten(),
        http2: args.http2,
        chunks: args.chunks,
        pacing: Pacing {
            first_token: Duration::from_millis(args.first_token_delay_ms),
            chunk: Duration::from_millis(args.chunk_delay_ms),
        },
        send_log_file: args.send_log,
        keep_send_log: false,
    };
    let running = llmtap_mock_llm::start(config).await?;
    let ready = serde_json::json!({
        "listening": running.addr.to_string(),
        "url": running.base_url(),
        "cert": running.cert_path,
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}")?;
    stdout.flush()?;
    drop(stdout);

    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown().await;
    Ok(())
}
