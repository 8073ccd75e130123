//! `load-client`: many concurrent streaming chat completions against the
//! mock LLM server (`mock-llm --tls`), over TLS through the system OpenSSL
//! (`libssl.so.3`, the library llmtap hooks), timing each call end to end.
//! `cargo xtask bench` runs it with and without llmtap attached.
//!
//! Each connection is opened and its TLS handshake done before any call
//! starts, as an SDK's warm connection pool would be; then every connection
//! makes its calls one after another (keep-alive), the first after its
//! share of `--stagger-ms` (so streams need not all start, and their chunks
//! arrive, in the same instant). A call's time runs from the start of its
//! request write to the read that completes its response.
//!
//! Prints JSON lines on stdout: `{"connected":N}` once every handshake is
//! done, `{"streaming":N}` once every connection's first response has begun
//! (that many streams open at once), and at the end
//! `{"calls":N,"failed":N,"p50_ms":..,"p99_ms":..,"max_ms":..}`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use openssl::ssl::{SslConnector, SslMethod};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Barrier};
use tokio_openssl::SslStream;

#[derive(Parser)]
struct Args {
    /// The mock server's address (`listening` in its ready line).
    #[arg(long)]
    addr: SocketAddr,
    /// The CA certificate (PEM) to trust: the mock's `--cert-out`.
    #[arg(long)]
    ca: PathBuf,
    /// Connections, each with one stream open at a time.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Calls made one after another on each connection.
    #[arg(long, default_value_t = 1)]
    calls_per_connection: usize,
    /// Spread the connections' first calls evenly over this many
    /// milliseconds instead of starting them all at once.
    #[arg(long, default_value_t = 0)]
    stagger_ms: u64,
    /// Wait for a line on stdin before connecting, and for stdin to close
    /// before exiting: lets an agent attach before the first call and read
    /// this process's figures after the last.
    #[arg(long)]
    stdin_gate: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_open_files_limit();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    if args.stdin_gate && stdin.next_line().await?.is_none() {
        bail!("stdin closed before the go line");
    }
    let mut tls = SslConnector::builder(SslMethod::tls_client())?;
    tls.set_ca_file(&args.ca)
        .with_context(|| format!("loading {}", args.ca.display()))?;
    let tls = Arc::new(tls.build());
    let request = Arc::new(chat_request(args.addr));

    // Every task waits here after its handshake, and so does this one.
    let connected = Arc::new(Barrier::new(args.connections + 1));
    // One message per connection: its first response began (or failed).
    let (stream_opened, mut streams_opened) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..args.connections {
        let delay =
            Duration::from_millis(args.stagger_ms) * connection as u32 / args.connections as u32;
        let (tls, request, connected, stream_opened) = (
            tls.clone(),
            request.clone(),
            connected.clone(),
            stream_opened.clone(),
        );
        let calls = args.calls_per_connection;
        tasks.spawn(async move {
            let stream = connect(&tls, args.addr).await;
            connected.wait().await;
            let mut announce = Some(stream_opened);
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(e) => return vec![Err(e)],
            };
            tokio::time::sleep(delay).await;
            let mut results = Vec::with_capacity(calls);
            for _ in 0..calls {
                let result = timed_call(&mut stream, &request, &mut announce).await;
                let failed = result.is_err();
                results.push(result);
                if failed {
                    break;
                }
            }
            results
        });
    }
    drop(stream_opened);
    connected.wait().await;
    say(&serde_json::json!({ "connected": args.connections }))?;
    // Ends early only if a task ended without announcing, i.e. failed.
    for _ in 0..args.connections {
        streams_opened.recv().await;
    }
    say(&serde_json::json!({ "streaming": args.connections }))?;

    let mut times = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    while let Some(results) = tasks.join_next().await {
        for result in results? {
            match result {
                Ok(time) => times.push(time),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(format!("{e:#}"));
                }
            }
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    say(&serde_json::json!({
        "calls": times.len(),
        "failed": failed,
        "first_error": first_error,
        "p50_ms": percentile(&times, 0.50).map(ms),
        "p99_ms": percentile(&times, 0.99).map(ms),
        "max_ms": times.last().copied().map(ms),
    }))?;
    if args.stdin_gate {
        while stdin.next_line().await?.is_some() {}
    }
    Ok(())
}

fn say(line: &serde_json::Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// A thousand connections need more descriptors than the usual soft limit
/// of 1024: raise it to the hard limit.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

fn chat_request(addr: SocketAddr) -> Vec<u8> {
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me a short story."}]}"#;
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer sk-test\r\n\
         Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn connect(tls: &SslConnector, addr: SocketAddr) -> anyhow::Result<SslStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let ssl = tls.configure()?.into_ssl(&addr.ip().to_string())?;
    let mut stream = SslStream::new(ssl, tcp)?;
    Pin::new(&mut stream)
        .connect()
        .await
        .context("TLS handshake")?;
    Ok(stream)
}

/// One streaming call on an open connection: its end-to-end time. Sends
/// on (and drops) `announce` once the response's head has arrived.
async fn timed_call(
    stream: &mut SslStream<TcpStream>,
    request: &[u8],
    announce: &mut Option<mpsc::UnboundedSender<()>>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    stream.write_all(request).await?;
    let mut response = ChunkedResponse::default();
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        ensure!(n > 0, "connection closed mid-response");
        let done = response.feed(&buf[..n])?;
        if response.head_seen() {
            if let Some(announce) = announce.take() {
                let _ = announce.send(());
            }
        }
        if done {
            return Ok(started.elapsed());
        }
    }
}

/// Where an HTTP/1.1 response with a chunked body (an SSE stream) is, read
/// incrementally so a long stream is scanned once.
#[derive(Default)]
struct ChunkedResponse {
    /// Bytes not yet understood (part of a line, or of a chunk's data).
    pending: Vec<u8>,
    state: State,
}

#[derive(Default, PartialEq)]
enum State {
    #[default]
    Head,
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data (the count includes its closing CRLF).
    Data(usize),
    /// After the zero-size chunk: trailers until an empty line.
    Trailer,
    Done,
}

impl ChunkedResponse {
    fn head_seen(&self) -> bool {
        self.state != State::Head
    }

    /// Takes newly read bytes; true once the response is complete.
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<bool> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            match self.state {
                State::Head => {
                    let Some(end) = find(rest, b"\r\n\r\n") else {
                        break;
                    };
                    let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
                    ensure!(
                        head.starts_with("http/1.1 200"),
                        "status: {:?}",
                        head.lines().next()
                    );
                    ensure!(
                        head.contains("\r\ntransfer-encoding: chunked"),
                        "not a chunked stream: {head:?}"
                    );
                    at += end + 4;
                    self.state = State::Size;
                }
                State::Size => {
                    let Some(end) = find(rest, b"\r\n") else {
                        break;
                    };
                    let line = std::str::from_utf8(&rest[..end])?;
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .with_context(|| format!("chunk size line {line:?}"))?;
                    at += end + 2;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size + 2)
                    };
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    let taken = left.min(rest.len());
                    at += taken;
                    self.state = match left - taken {
                        0 => State::Size,
                        left => State::Data(left),
                    };
                }
                State::Trailer => {
                    let Some(end) = find(rest, b"\r\n") else {
                        break;
                    };
                    at += end + 2;
                    if end == 0 {
                        self.state = State::Done;
                    }
                }
                State::Done => {
                    if !rest.is_empty() {
                        bail!("{} bytes after the response", rest.len());
                    }
                    break;
                }
            }
        }
        self.pending.drain(..at);
        Ok(self.state == State::Done)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
