//! Serves one client connection (plaintext or TLS): reads HTTP/1.1 requests
//! one after another (keep-alive), and carries out each reply's [`Plan`],
//! sleeping until each write's time, flushing every write at once, and
//! logging it.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::pacing::Pacing;
use crate::reply::{self, ReplyContext};
use crate::request::{parse_head, HeadError};
use crate::send_log::{now_ns, SendLog, SendRecord};
use crate::wire::{plan, Plan};

/// What every connection shares.
#[derive(Clone, Debug)]
pub struct Settings {
    pub chunks: usize,
    pub pacing: Pacing,
    pub log: SendLog,
}

impl Settings {
    /// What the reply to request `request` of connection `conn`, made
    /// now, is built from (HTTP/1.1 and HTTP/2 alike).
    pub fn reply_context(&self, conn: u64, request: u64) -> ReplyContext {
        ReplyContext {
            conn,
            request,
            created: now_ns().1 / 1_000_000_000,
            chunks: self.chunks,
            pacing: self.pacing,
        }
    }
}

/// Serves requests on `stream` until the client closes it, asks to close
/// it, or a reply cuts it.
pub async fn serve<S>(mut stream: S, conn: u64, settings: &Settings) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(8192);
    for request in 0.. {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) if read_more(&mut stream, &mut buf).await? => {}
                Ok(None) => return Ok(()),
                Err(e) => {
                    let status = if e == HeadError::TooLarge { 413 } else { 400 };
                    let mut out = Writer::new(&mut stream, settings, conn, request, String::new());
                    let reply = reply::http_error(status, &e.to_string());
                    out.carry_out(plan(reply, &settings.pacing, "bad-request"), Instant::now())
                        .await?;
                    return Ok(());
                }
            }
        };
        let end = head.len + head.content_length;
        let mut out = Writer::new(&mut stream, settings, conn, request, head.path.clone());
        if head.expect_continue && buf.len() < end {
            out.write("HTTP/1.1 100 Continue\r\n\r\n", "").await?;
        }
        while buf.len() < end {
            if !read_more(out.stream, &mut buf).await? {
                return Ok(());
            }
        }
        let received = Instant::now();
        let cx = settings.reply_context(conn, request);
        let reply = reply::reply(&head.method, &head.path, &buf[head.len..end], &cx);
        buf.drain(..end);
        let plan = plan(
            reply,
            &settings.pacing,
            &format!("req_mock_{conn}_{request}"),
        );
        if out.carry_out(plan, received).await? {
            // A cut: drop the connection as is, no TLS close_notify.
            return Ok(());
        }
        if head.close {
            return stream.shutdown().await;
        }
    }
    Ok(())
}

/// Reads what is available into `buf`; false at end of stream.
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Writes one response, logging each write.
struct Writer<'a, S> {
    stream: &'a mut S,
    log: &'a SendLog,
    conn: u64,
    request: u64,
    path: String,
    seq: u32,
}

impl<'a, S: AsyncWrite + Unpin> Writer<'a, S> {
    fn new(
        stream: &'a mut S,
        settings: &'a Settings,
        conn: u64,
        request: u64,
        path: String,
    ) -> Self {
        Self {
            stream,
            log: &settings.log,
            conn,
            request,
            path,
            seq: 0,
        }
    }

    /// Makes each write of `plan` at its time after `start`; returns
    /// whether the plan closes the connection.
    async fn carry_out(&mut self, plan: Plan, start: Instant) -> io::Result<bool> {
        for w in plan.writes {
            // Sleep to an absolute time so that slow writes don't add up.
            if w.at > Duration::ZERO {
                tokio::time::sleep_until(start + w.at).await;
            }
            self.write(&w.data, &w.body).await?;
        }
        Ok(plan.close)
    }

    /// One write, flushed at once (TLS: one record), then logged.
    async fn write(&mut self, data: &str, body: &str) -> io::Result<()> {
        let (mono_ns, wall_ns) = now_ns();
        self.stream.write_all(data.as_bytes()).await?;
        self.stream.flush().await?;
        self.log.push(SendRecord {
            conn: self.conn,
            request: self.request,
            path: self.path.clone(),
            seq: self.seq,
            mono_ns,
            wall_ns,
            data: data.to_owned(),
            body: body.to_owned(),
        });
        self.seq += 1;
        Ok(())
    }
}
