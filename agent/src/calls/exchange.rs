//! One request/response exchange as it is being received: the request
//! claimed and read by a provider, the response framed (SSE, NDJSON or a
//! whole body) and decoded frame by frame with each frame's time.

use serde_json::Value;

use super::{Limits, ReconstructionStats};
use crate::http::{ChunkTime, RequestHead, ResponseHead};
use crate::providers::{self, Api, Provider, RequestInfo, ResponseDecoder, ResponseInfo};
use crate::sse::{Frame, NdjsonParser, SseParser};
use crate::stream::{CloseReason, WallNanos};

/// How an exchange ended.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ending {
    /// The response's last byte arrived.
    Complete,
    /// The connection (or the HTTP/2 stream) ended while the response was
    /// arriving.
    Cut(CloseReason),
    /// The connection ended before a response started.
    NoResponse,
    /// The capture lost bytes the framing could not step over; what the
    /// response did after them is unknown.
    CaptureLost,
}

/// A request, and its response once that starts.
pub(super) struct Exchange {
    /// Entry of the call carrying the request's first byte.
    pub t0: WallNanos,
    /// Return of the call carrying the request's last byte.
    pub request_sent: Option<WallNanos>,
    /// The head, kept for claimed requests only.
    pub head: Option<RequestHead>,
    /// The provider that claimed the request; `None` once known not LLM.
    pub llm: Option<(&'static dyn Provider, Api)>,
    /// The request body, kept (capped) until `resolve`.
    body: Vec<u8>,
    pub request_truncated: bool,
    /// What the request body said, once resolved.
    pub request: Option<RequestInfo>,
    resolved: bool,
    pub response: Option<Response>,
}

impl Exchange {
    /// A request whose head just completed.
    pub(super) fn new(head: RequestHead, first_byte: ChunkTime) -> Self {
        let llm = providers::claim(&head);
        Self {
            t0: first_byte.start,
            request_sent: None,
            head: llm.is_some().then_some(head),
            llm,
            body: Vec::new(),
            request_truncated: false,
            request: None,
            resolved: false,
            response: None,
        }
    }

    /// Keeps request body bytes of a claimed request, up to the cap.
    pub(super) fn request_body(
        &mut self,
        bytes: &[u8],
        limits: &Limits,
        stats: &mut ReconstructionStats,
    ) {
        if self.llm.is_none() || self.resolved {
            return;
        }
        let room = limits.max_request_body.saturating_sub(self.body.len());
        if bytes.len() > room {
            self.truncate_request(stats);
        }
        self.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    pub(super) fn truncate_request(&mut self, stats: &mut ReconstructionStats) {
        if !self.request_truncated {
            self.request_truncated = true;
            stats.request_bodies_truncated += 1;
        }
    }

    /// Lets the provider read the request; decides whether this is an LLM
    /// call. `complete` is false when the body stopped early.
    pub(super) fn resolve(&mut self, complete: bool, stats: &mut ReconstructionStats) {
        if self.resolved {
            return;
        }
        self.resolved = true;
        let body = std::mem::take(&mut self.body);
        let request = match (self.llm, &self.head) {
            (Some((provider, api)), Some(head)) => match serde_json::from_slice::<Value>(&body) {
                Ok(value) => provider.request(api, head, Some(&value)),
                Err(_) if self.request_truncated || !complete => provider.request(api, head, None),
                Err(_) => None,
            },
            _ => None,
        };
        if request.is_none() {
            self.llm = None;
            stats.non_llm_requests += 1;
        }
        self.request = request;
    }

    /// The exchange ended early: with `ending` if its response had started,
    /// else unanswered.
    pub(super) fn ended_early(
        mut self,
        ending: Ending,
        stats: &mut ReconstructionStats,
    ) -> (Self, Ending) {
        self.resolve(false, stats);
        let ending = if self.response.is_some() {
            ending
        } else {
            Ending::NoResponse
        };
        (self, ending)
    }

    /// The response head arrived.
    pub(super) fn respond(&mut self, head: &ResponseHead, first_byte: ChunkTime, limits: &Limits) {
        let framer = if self.llm.is_none() {
            BodyFraming::Ignore
        } else {
            let content_type = head.header("content-type").unwrap_or_default();
            let content_type = content_type.to_ascii_lowercase();
            if content_type.starts_with("text/event-stream") {
                BodyFraming::Sse(SseParser::new(limits.max_event_bytes))
            } else if content_type.contains("ndjson") || content_type.contains("jsonl") {
                BodyFraming::Ndjson(NdjsonParser::new(limits.max_event_bytes))
            } else {
                BodyFraming::Whole(Vec::new())
            }
        };
        self.response = Some(Response {
            status: head.status,
            first_byte: first_byte.end,
            last_byte: first_byte.end,
            framer,
            acc: Accumulator {
                info: ResponseInfo::new(limits.max_output_text),
                decoder: self.llm.map(|(provider, api)| provider.decoder(api)),
                first_chunk: None,
                first_output: None,
                last_output: None,
                output_chunks: 0,
                marks: Vec::new(),
                max_marks: limits.max_chunks,
                decode_errors: 0,
            },
            truncated: false,
            closed_short: false,
        });
    }
}

/// How the response body is cut into frames.
pub(super) enum BodyFraming {
    /// Not an LLM call: the body is not looked at.
    Ignore,
    Sse(SseParser),
    Ndjson(NdjsonParser),
    /// A non-streamed body, decoded whole at its end.
    Whole(Vec<u8>),
}

/// A response being received.
pub(super) struct Response {
    pub status: u16,
    /// Return of the call carrying the status line's first byte.
    pub first_byte: WallNanos,
    /// Return of the call carrying the latest body byte.
    pub last_byte: WallNanos,
    framer: BodyFraming,
    pub acc: Accumulator,
    /// Bytes were lost or cut.
    pub truncated: bool,
    /// The connection closed with body bytes its framing announced still
    /// owed: whatever the body said, the reply is not whole.
    pub closed_short: bool,
}

/// What the frames of a response add up to.
pub(super) struct Accumulator {
    pub info: ResponseInfo,
    /// The provider's decoder for this response; `None` when it is not an
    /// LLM call (its body is then not framed).
    decoder: Option<Box<dyn ResponseDecoder>>,
    pub first_chunk: Option<WallNanos>,
    pub first_output: Option<WallNanos>,
    pub last_output: Option<WallNanos>,
    pub output_chunks: u64,
    /// Per listed output chunk: its time and where its text ends in
    /// `info.text`.
    pub marks: Vec<(WallNanos, usize)>,
    max_marks: usize,
    pub decode_errors: u64,
}

impl Accumulator {
    fn frame(&mut self, frame: Frame<'_>, at: WallNanos) {
        let Some(decoder) = &mut self.decoder else {
            return;
        };
        self.first_chunk.get_or_insert(at);
        match decoder.frame(frame, &mut self.info) {
            Ok(true) => {
                self.first_output.get_or_insert(at);
                self.last_output = Some(at);
                self.output_chunks += 1;
                if self.marks.len() < self.max_marks {
                    self.marks.push((at, self.info.text.len()));
                }
            }
            Ok(false) => {}
            Err(_) => self.decode_errors += 1,
        }
    }

    /// Decodes a whole body.
    fn body(&mut self, body: &[u8]) {
        let Some(decoder) = &mut self.decoder else {
            return;
        };
        if decoder.body(body, &mut self.info).is_err() {
            self.decode_errors += 1;
        }
    }
}

impl Response {
    /// Decoded body bytes that arrived in a call returning at `at`.
    pub(super) fn body(&mut self, bytes: &[u8], at: WallNanos, limits: &Limits) {
        self.last_byte = at;
        let acc = &mut self.acc;
        let mut on = |frame: Frame<'_>| acc.frame(frame, at);
        match &mut self.framer {
            BodyFraming::Ignore => {}
            BodyFraming::Sse(parser) => parser.feed(bytes, &mut on),
            BodyFraming::Ndjson(parser) => parser.feed(bytes, &mut on),
            BodyFraming::Whole(body) => {
                let room = limits.max_response_body.saturating_sub(body.len());
                if bytes.len() > room {
                    self.truncated = true;
                }
                body.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
    }

    /// The body is over (complete or not): flush the framer and decode a
    /// whole body. Returns events dropped as oversized.
    pub(super) fn finish(&mut self, at: WallNanos) -> u64 {
        let acc = &mut self.acc;
        match &mut self.framer {
            BodyFraming::Ignore => 0,
            BodyFraming::Sse(parser) => parser.oversized,
            BodyFraming::Ndjson(parser) => {
                parser.finish(&mut |frame| acc.frame(frame, at));
                parser.oversized
            }
            BodyFraming::Whole(body) => {
                if !body.is_empty() {
                    acc.body(body);
                }
                *body = Vec::new();
                0
            }
        }
    }

    /// Whether the body was a stream of frames.
    pub(super) fn streamed(&self) -> bool {
        matches!(self.framer, BodyFraming::Sse(_) | BodyFraming::Ndjson(_))
    }
}
