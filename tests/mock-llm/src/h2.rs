//! Serves one client connection over HTTP/2 (h2c with prior knowledge, or
//! h2 chosen by ALPN) with the `h2` crate: each stream's request is read
//! whole and answered on its own task, so streams interleave. A reply's
//! head goes out at once, each stream event in its own DATA frame at its
//! time, the last one ending the stream; a cut reply resets the stream
//! (`RST_STREAM`) where HTTP/1.1 would drop the connection.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::connection::Settings;
use crate::reply::{self, Body};
use crate::send_log::{now_ns, SendRecord};

/// What an HTTP/2 client sends before its first frame (RFC 9113 §3.4): a
/// plaintext connection that opens with it (h2c with prior knowledge) is
/// served here rather than as HTTP/1.1.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves streams on `stream` until the client goes away.
pub async fn serve<S>(stream: S, conn: u64, settings: &Settings) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Advertised as real servers do: httpx, for one, sends one stream at a
    // time until told how many may be open.
    let mut connection = h2::server::Builder::new()
        .max_concurrent_streams(100)
        .handshake(stream)
        .await
        .map_err(io::Error::other)?;
    let mut answers = JoinSet::new();
    let mut request = 0;
    // Polling `accept` also drives the connection's I/O for every stream.
    while let Some(accepted) = connection.accept().await {
        let (head, respond) = accepted.map_err(io::Error::other)?;
        let settings = settings.clone();
        answers.spawn(async move {
            if let Err(e) = answer(head, respond, conn, request, &settings).await {
                tracing::debug!(conn, request, "mock LLM stream ended: {e}");
            }
        });
        request += 1;
    }
    Ok(())
}

/// Reads one stream's request and sends its reply.
async fn answer(
    head: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    conn: u64,
    request: u64,
    settings: &Settings,
) -> Result<(), h2::Error> {
    let (parts, mut body) = head.into_parts();
    let mut bytes = Vec::new();
    while let Some(data) = body.data().await {
        let data = data?;
        body.flow_control().release_capacity(data.len())?;
        bytes.extend_from_slice(&data);
    }
    let received = Instant::now();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let cx = settings.reply_context(conn, request);
    let reply = reply::reply(parts.method.as_str(), &path, &bytes, &cx);
    let head = http::Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type)
        .header("x-request-id", format!("req_mock_{conn}_{request}"))
        .body(())
        .expect("a valid head");
    let mut log = Log {
        settings,
        conn,
        request,
        path,
        seq: 0,
    };
    // The events to send, each with its time; a whole body is one event.
    let events: Vec<(Duration, String)> = match reply.body {
        Body::Whole { text, generated } => {
            let at = settings.pacing.generation_time(generated);
            tokio::time::sleep_until(received + at).await;
            // A cut whole body: the stream is reset before any of it.
            if reply.cut {
                Vec::new()
            } else {
                vec![(at, text)]
            }
        }
        Body::Stream(events) => events.timed(&settings.pacing).collect(),
    };
    let mut send = respond.send_response(head, false)?;
    log.push("");
    let count = events.len();
    for (i, (at, event)) in events.into_iter().enumerate() {
        tokio::time::sleep_until(received + at).await;
        let last = i + 1 == count && !reply.cut;
        log.push(&event);
        send.send_data(Bytes::from(event), last)?;
    }
    if reply.cut {
        send.send_reset(Reason::INTERNAL_ERROR);
    } else if count == 0 {
        send.send_data(Bytes::new(), true)?;
    }
    Ok(())
}

/// Records each DATA frame (its body text) in the send log.
struct Log<'a> {
    settings: &'a Settings,
    conn: u64,
    request: u64,
    path: String,
    seq: u32,
}

impl Log<'_> {
    fn push(&mut self, body: &str) {
        let (mono_ns, wall_ns) = now_ns();
        self.settings.log.push(SendRecord {
            conn: self.conn,
            request: self.request,
            path: self.path.clone(),
            seq: self.seq,
            mono_ns,
            wall_ns,
            data: body.to_owned(),
            body: body.to_owned(),
        });
        self.seq += 1;
    }
}
