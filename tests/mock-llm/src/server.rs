//! The mock LLM server: accepts connections on one address, plaintext or
//! TLS, and serves each on its own task until shut down. Used by
//! `llmtap demo` and by the end-to-end tests, which read what it sent from
//! its [`SendRecord`]s.
//!
//! It speaks OpenAI Chat Completions and Completions, Anthropic Messages and
//! Ollama chat, streaming with realistic timing: headers and pre-token
//! events at once, the first output-bearing event after
//! [`Pacing::first_token`], every later event [`Pacing::chunk`] after the
//! one before, each in its own flushed write on a `TCP_NODELAY` socket. The
//! request's model name is echoed back; `error-NNN`, `error-midstream` and
//! `cut-midstream` ask for failures, `big-tokens-N` for tokens of N bytes.
//!
//! HTTP/1.1 always; HTTP/2 (`h2`) to plaintext clients that open with its
//! preface, and over TLS when ALPN picks it ([`ServerConfig::http2`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::connection::{serve, Settings};
use crate::h2::{self, PREFACE};
use crate::pacing::Pacing;
use crate::rewound::Rewound;
use crate::send_log::{SendLog, SendRecord};
use crate::tls;

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port ([`RunningServer::addr`]
    /// tells which).
    pub listen: SocketAddr,
    /// Serve TLS, with a fresh CA whose PEM certificate is written here.
    /// `None` serves plaintext HTTP.
    pub tls_cert_out: Option<PathBuf>,
    /// Offer HTTP/2 in TLS's ALPN (`h2` before `http/1.1`). Plaintext
    /// HTTP/2 (h2c with prior knowledge) is always served.
    pub http2: bool,
    /// Output tokens (content chunks) per reply, unless the request's
    /// `max_tokens` asks for fewer.
    pub chunks: usize,
    pub pacing: Pacing,
    /// Append one JSON line per write to this file (created or truncated).
    pub send_log_file: Option<PathBuf>,
    /// Keep every write in memory for [`RunningServer::send_log`]. Off by
    /// default, since a long demo would grow it without end.
    pub keep_send_log: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_cert_out: None,
            http2: false,
            chunks: 12,
            pacing: Pacing::default(),
            send_log_file: None,
            keep_send_log: false,
        }
    }
}

/// A server accepting connections. Dropping it stops the accept loop and
/// every connection; [`RunningServer::shutdown`] also waits for that.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address, with the actual port.
    pub addr: SocketAddr,
    /// The CA certificate (PEM) to trust, when serving TLS.
    pub cert_path: Option<PathBuf>,
    log: SendLog,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT` (the address
    /// literal, so clients never try `::1` first for `localhost`).
    pub fn base_url(&self) -> String {
        let scheme = if self.cert_path.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Every write so far, in the order made (empty unless
    /// [`ServerConfig::keep_send_log`]).
    pub fn send_log(&self) -> Vec<SendRecord> {
        self.log.snapshot()
    }

    /// Stops accepting, closes every connection, and waits until done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Binds, makes the TLS identity if asked, and starts serving.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the mock LLM server to {}", config.listen))?;
    let addr = listener.local_addr()?;
    let tls = config
        .tls_cert_out
        .as_deref()
        .map(|ca_out| tls::acceptor(ca_out, config.http2))
        .transpose()?;
    let log = SendLog::new(config.keep_send_log, config.send_log_file.as_deref())?;
    let settings = Arc::new(Settings {
        chunks: config.chunks,
        pacing: config.pacing,
        log: log.clone(),
    });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, tls, settings, stopped));
    Ok(RunningServer {
        addr,
        cert_path: config.tls_cert_out,
        log,
        stop,
        task,
    })
}

/// Accepts until told to stop (or the handle is dropped); dropping the
/// `JoinSet` on the way out aborts the connections.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: Arc<Settings>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    let mut next_conn = 1u64;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            // Reap finished connections so the set doesn't grow.
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let conn = next_conn;
                    next_conn += 1;
                    let (tls, settings) = (tls.clone(), settings.clone());
                    connections.spawn(async move {
                        if let Err(e) = connection(tcp, tls, conn, &settings).await {
                            tracing::debug!(conn, %peer, "mock LLM connection ended: {e}");
                        }
                    });
                }
                Err(e) => tracing::warn!("mock LLM server accept failed: {e}"),
            },
        }
    }
}

async fn connection(
    mut tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    conn: u64,
    settings: &Settings,
) -> std::io::Result<()> {
    // Each chunk must leave at once, not wait for Nagle's algorithm.
    tcp.set_nodelay(true)?;
    match tls {
        Some(acceptor) => {
            let tls = acceptor.accept(tcp).await?;
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                h2::serve(tls, conn, settings).await
            } else {
                serve(tls, conn, settings).await
            }
        }
        None => {
            let (head, h2) = read_first_bytes(&mut tcp).await?;
            let tcp = Rewound::new(head, tcp);
            if h2 {
                h2::serve(tcp, conn, settings).await
            } else {
                serve(tcp, conn, settings).await
            }
        }
    }
}

/// Reads a plaintext connection's first bytes, enough to tell whether the
/// client opens with HTTP/2's preface (h2c with prior knowledge).
async fn read_first_bytes(tcp: &mut TcpStream) -> std::io::Result<(Vec<u8>, bool)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tcp.read(&mut buf).await?;
        head.extend_from_slice(&buf[..n]);
        if head.starts_with(PREFACE) {
            return Ok((head, true));
        }
        if n == 0 || !PREFACE.starts_with(&head) {
            return Ok((head, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::*;
    use crate::reply::token;

    fn config(chunks: usize) -> ServerConfig {
        ServerConfig {
            chunks,
            pacing: Pacing {
                first_token: Duration::from_millis(60),
                chunk: Duration::from_millis(15),
            },
            keep_send_log: true,
            ..ServerConfig::default()
        }
    }

    fn post(path: &str, body: &str, close: bool) -> String {
        let connection = if close { "Connection: close\r\n" } else { "" };
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{connection}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Writes `raw` and reads until the server closes.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, raw: &str) -> String {
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Splits one response off `raw`: (status line, body, rest), undoing
    /// chunked encoding; `None` as body when a chunked body is cut short.
    fn response(raw: &str) -> (&str, Option<String>, &str) {
        let (head, mut rest) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.lines().next().unwrap();
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            let len: usize = len.parse().unwrap();
            return (status, Some(rest[..len].to_owned()), &rest[len..]);
        }
        let mut body = String::new();
        loop {
            let Some((size, after)) = rest.split_once("\r\n") else {
                return (status, None, "");
            };
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                return (status, Some(body), &after[2..]);
            }
            body.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
    }

    fn chat(model: &str) -> String {
        format!(
            r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"two words"}}]}}"#
        )
    }

    #[tokio::test]
    async fn openai_stream_is_shaped_paced_and_logged() {
        let server = start(config(4)).await.unwrap();
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let raw = exchange(tcp, &post("/v1/chat/completions", &chat("gpt-test"), true)).await;
        let log = server.send_log();
        server.shutdown().await;

        // The client got exactly what the log says was written.
        assert_eq!(raw, log.iter().map(|r| r.data.as_str()).collect::<String>());
        let (status, body, _) = response(&raw);
        assert_eq!(status, "HTTP/1.1 200 OK");
        let events: Vec<serde_json::Value> = body
            .unwrap()
            .split_terminator("\n\n")
            .map(|e| e.strip_prefix("data: ").unwrap())
            .take_while(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(events.len(), 1 + 4 + 2);
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = events[1..5]
            .iter()
            .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, (0..4).map(token).collect::<String>());
        assert_eq!(events[5]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[6]["usage"]["completion_tokens"], 4);
        assert_eq!(events[6]["usage"]["prompt_tokens"], 2);
        assert!(events.iter().all(|e| e["model"] == "gpt-test"));

        // Head, role chunk, 4 tokens, finish, usage, [DONE]: one write each,
        // at 0, 0, 60, 75, 90, 105, 120, 135, 150 ms.
        let planned = [0, 0, 60, 75, 90, 105, 120, 135, 150];
        assert_eq!(log.len(), planned.len());
        // The schedule counts from the request's arrival; the head's write,
        // t0 here, may itself come a few ms after it on a busy machine.
        let t0 = log[0].mono_ns;
        for (record, ms) in log.iter().zip(planned) {
            let offset = (record.mono_ns - t0) as f64 / 1e6;
            assert!(
                offset >= ms as f64 - 5.0 && offset < ms as f64 + 10.0,
                "write {} at {offset:.1} ms, planned {ms} ms",
                record.seq
            );
            assert_eq!((record.conn, record.request), (1, 0));
            assert_eq!(record.path, "/v1/chat/completions");
        }
    }

    #[tokio::test]
    async fn keep_alive_serves_pipelined_requests_in_order() {
        let server = start(config(2)).await.unwrap();
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let first = post(
            "/v1/messages",
            r#"{"model":"claude-test","stream":true,"max_tokens":1}"#,
            false,
        );
        let second = post("/api/chat", r#"{"model":"llama-test"}"#, true);
        let raw = exchange(tcp, &(first + &second)).await;
        let log = server.send_log();
        server.shutdown().await;

        let (_, anthropic, rest) = response(&raw);
        let anthropic = anthropic.unwrap();
        let names: Vec<&str> = anthropic
            .split_terminator("\n\n")
            .map(|e| e.lines().next().unwrap().strip_prefix("event: ").unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(anthropic.contains(r#""stop_reason":"max_tokens""#));
        let (_, ollama, rest) = response(rest);
        let lines: Vec<serde_json::Value> = ollama
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["done"], true);
        assert_eq!(lines[2]["eval_count"], 2);
        assert_eq!(rest, "");
        assert!(log.iter().all(|r| r.conn == 1));
        assert_eq!(log.last().unwrap().request, 1);
    }

    #[tokio::test]
    async fn failures_asked_for_by_model_name() {
        let server = start(config(4)).await.unwrap();
        let path = "/v1/chat/completions";
        let ask = |model: &str| post(path, &chat(model), true);

        let raw = exchange(
            TcpStream::connect(server.addr).await.unwrap(),
            &ask("error-429"),
        )
        .await;
        let (status, body, _) = response(&raw);
        assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
        assert!(body.unwrap().contains(r#""code":"rate_limit_exceeded""#));

        let raw = exchange(
            TcpStream::connect(server.addr).await.unwrap(),
            &ask("error-midstream"),
        )
        .await;
        let body = response(&raw).1.unwrap();
        assert!(body.contains(r#"data: {"error":"#) && !body.contains("[DONE]"));
        assert_eq!(
            body.matches(r#""content":"#).count(),
            1 + 2,
            "role chunk and half the tokens"
        );

        let raw = exchange(
            TcpStream::connect(server.addr).await.unwrap(),
            &ask("cut-midstream"),
        )
        .await;
        let (status, body, _) = response(&raw);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, None, "the chunked body never ends");
        assert!(raw.ends_with("\n\n\r\n") && !raw.contains("[DONE]"));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn tls_with_the_written_ca_and_a_send_log_file() {
        let dir = std::env::temp_dir().join(format!("llmtap-mock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = start(ServerConfig {
            tls_cert_out: Some(dir.join("ca.pem")),
            send_log_file: Some(dir.join("sent.jsonl")),
            ..config(3)
        })
        .await
        .unwrap();
        assert!(server.base_url().starts_with("https://127.0.0.1:"));

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap();
        let raw = exchange(
            tls,
            &post("/v1/completions", r#"{"model":"m","prompt":"a b c"}"#, true),
        )
        .await;
        server.shutdown().await;

        let body: serde_json::Value = serde_json::from_str(&response(&raw).1.unwrap()).unwrap();
        assert_eq!(
            body["choices"][0]["text"],
            (0..3).map(token).collect::<String>()
        );
        assert_eq!(body["usage"]["prompt_tokens"], 3);
        let lines = std::fs::read_to_string(dir.join("sent.jsonl")).unwrap();
        let records: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["data"].as_str().unwrap(), raw);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
