//! Turns a [`Reply`] into the exact writes the server makes, each with its
//! offset from the moment the request was read: the status line and
//! headers, then the body — whole with `Content-Length`, or one
//! `Transfer-Encoding: chunked` chunk per stream event, the way OpenAI's and
//! Anthropic's servers frame SSE over HTTP/1.1. Pure: no I/O, no clock.

use std::time::Duration;

use crate::pacing::Pacing;
use crate::reply::{Body, Reply};

/// One write on the connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Write {
    /// When, counted from reading the request.
    pub at: Duration,
    /// The bytes, HTTP framing included.
    pub data: String,
    /// The body part of `data` (see `SendRecord::body`).
    pub body: String,
}

/// All of a response's writes, and whether the connection closes after.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub writes: Vec<Write>,
    pub close: bool,
}

/// Frames `reply`; `request_id` goes into an `x-request-id` header.
pub fn plan(reply: Reply, pacing: &Pacing, request_id: &str) -> Plan {
    let head = |framing: String| {
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\n{framing}x-request-id: {request_id}\r\n\r\n",
            reply.status,
            reason(reply.status),
            reply.content_type,
        )
    };
    match reply.body {
        Body::Whole { text, generated } => {
            let mut data = head(format!("content-length: {}\r\n", text.len()));
            let body = if reply.cut {
                // Half the body, cut at a character boundary.
                let half = (0..=text.len() / 2)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                text[..half].to_owned()
            } else {
                text
            };
            data.push_str(&body);
            let at = pacing.generation_time(generated);
            Plan {
                writes: vec![Write { at, data, body }],
                close: reply.cut,
            }
        }
        Body::Stream(events) => {
            let head = head("cache-control: no-cache\r\ntransfer-encoding: chunked\r\n".to_owned());
            let mut writes = vec![Write {
                at: Duration::ZERO,
                data: head,
                body: String::new(),
            }];
            for (at, event) in events.timed(pacing) {
                writes.push(Write {
                    at,
                    data: format!("{:x}\r\n{event}\r\n", event.len()),
                    body: event,
                });
            }
            // The terminating chunk goes with the last event, so each read
            // of a complete stream ends on an event boundary.
            if !reply.cut {
                writes
                    .last_mut()
                    .expect("the head is there")
                    .data
                    .push_str("0\r\n\r\n");
            }
            Plan {
                writes,
                close: reply.cut,
            }
        }
    }
}

/// The reason phrase of the statuses the mock sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::{Events, Pace};

    fn pacing() -> Pacing {
        Pacing {
            first_token: Duration::from_millis(100),
            chunk: Duration::from_millis(20),
        }
    }

    #[test]
    fn stream_is_chunked_and_paced() {
        let mut ev = Events::default();
        ev.meta("data: a\n\n".into());
        ev.output("data: b\n\n".into());
        ev.output("data: c\n\n".into());
        assert_eq!(ev.events[1].0, Pace::FirstToken);
        let reply = Reply {
            status: 200,
            content_type: "text/event-stream",
            body: Body::Stream(ev),
            cut: false,
        };
        let plan = plan(reply, &pacing(), "r1");
        let at: Vec<u64> = plan
            .writes
            .iter()
            .map(|w| w.at.as_millis() as u64)
            .collect();
        assert_eq!(at, [0, 0, 100, 120]);
        assert!(plan.writes[0].data.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(plan.writes[0]
            .data
            .contains("transfer-encoding: chunked\r\n"));
        assert_eq!(plan.writes[1].data, "9\r\ndata: a\n\n\r\n");
        assert_eq!(plan.writes[3].data, "9\r\ndata: c\n\n\r\n0\r\n\r\n");
        assert!(!plan.close);
    }

    #[test]
    fn whole_body_waits_for_generation_and_cut_halves_it() {
        let reply = Reply {
            status: 200,
            content_type: "application/json",
            body: Body::Whole {
                text: "0123456789".into(),
                generated: 3,
            },
            cut: true,
        };
        let plan = plan(reply, &pacing(), "r1");
        assert_eq!(plan.writes.len(), 1);
        assert_eq!(plan.writes[0].at, Duration::from_millis(140));
        assert!(plan.writes[0].data.contains("content-length: 10\r\n"));
        assert!(plan.writes[0].data.ends_with("\r\n\r\n01234"));
        assert!(plan.close);
    }
}
