//! Why a call failed: the fixed set of [`ErrorType`]s (a metric label),
//! and how a finished exchange is classified into one.

use serde::Serialize;

use crate::stream::{CloseReason, Side};

/// Why a call failed. One fixed set, so it can be a metric label; the
/// provider's own error type goes in
/// [`Outcome::provider_error_type`](super::Outcome::provider_error_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ErrorType {
    /// HTTP status 400–499.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// HTTP status 500 and above.
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// An error event (or error object) inside a successful response.
    #[serde(rename = "stream_error_event")]
    StreamErrorEvent,
    /// The body ended cleanly but the stream's end marker never came.
    #[serde(rename = "stream_truncated")]
    StreamTruncated,
    /// The connection was reset while the response was arriving.
    #[serde(rename = "connection_reset")]
    ConnectionReset,
    /// The connection closed while the response was arriving, seen from
    /// the client (or no longer followed: evicted, server process gone).
    #[serde(rename = "connection_closed")]
    ConnectionClosed,
    /// The client went away mid-response: seen closing from the server
    /// side, or the watched client process exited.
    #[serde(rename = "client_aborted")]
    ClientAborted,
    /// The connection ended before any response arrived (also when the
    /// request itself was cut short).
    #[serde(rename = "no_response")]
    NoResponse,
    /// Part of the response was not observed (bytes lost by the capture,
    /// or past a size cap) and what was seen does not show how it ended.
    #[serde(rename = "capture_incomplete")]
    CaptureIncomplete,
}

impl ErrorType {
    /// The label value, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::StreamErrorEvent => "stream_error_event",
            Self::StreamTruncated => "stream_truncated",
            Self::ConnectionReset => "connection_reset",
            Self::ConnectionClosed => "connection_closed",
            Self::ClientAborted => "client_aborted",
            Self::NoResponse => "no_response",
            Self::CaptureIncomplete => "capture_incomplete",
        }
    }
}

/// What a response said and showed about how it ended.
#[derive(Clone, Copy, Debug)]
pub(super) struct ResponseEnd {
    pub status: u16,
    /// The provider reported an error (type or message) inside it.
    pub provider_error: bool,
    /// Bytes of it were lost or cut.
    pub truncated: bool,
    /// It was a stream of events.
    pub streamed: bool,
    /// It said it was done (an end event or a finish reason).
    pub finished: bool,
}

impl ResponseEnd {
    /// The error, if the response shows one.
    pub(super) fn error(self) -> Option<ErrorType> {
        match self.status {
            500.. => Some(ErrorType::Http5xx),
            400.. => Some(ErrorType::Http4xx),
            _ if self.provider_error => Some(ErrorType::StreamErrorEvent),
            // Unseen bytes may have held the end marker.
            _ if self.truncated && !self.finished => Some(ErrorType::CaptureIncomplete),
            _ if self.streamed && !self.finished => Some(ErrorType::StreamTruncated),
            _ => None,
        }
    }
}

/// The error of a response cut by its connection's end (`reason`), as the
/// watched process (`side`) saw it; `error` is what the response showed.
/// Being cut explains a missing end marker better than truncation; a reply
/// that said it was done is whole, though: clients close once they have
/// `[DONE]`, without waiting for the body's last framing bytes.
pub(super) fn when_cut(
    error: Option<ErrorType>,
    finished: bool,
    reason: CloseReason,
    side: Side,
) -> Option<ErrorType> {
    if finished || !matches!(error, None | Some(ErrorType::StreamTruncated)) {
        return error;
    }
    Some(match (reason, side) {
        (CloseReason::Reset, _) => ErrorType::ConnectionReset,
        (CloseReason::Closed, Side::Server) | (CloseReason::ProcessExited, Side::Client) => {
            ErrorType::ClientAborted
        }
        _ => ErrorType::ConnectionClosed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(status: u16) -> ResponseEnd {
        ResponseEnd {
            status,
            provider_error: false,
            truncated: false,
            streamed: true,
            finished: true,
        }
    }

    #[test]
    fn status_first_then_what_the_body_showed() {
        assert_eq!(end(503).error(), Some(ErrorType::Http5xx));
        assert_eq!(end(429).error(), Some(ErrorType::Http4xx));
        assert_eq!(end(200).error(), None);
        let event = ResponseEnd {
            provider_error: true,
            ..end(200)
        };
        assert_eq!(event.error(), Some(ErrorType::StreamErrorEvent));
        let unfinished = ResponseEnd {
            finished: false,
            ..end(200)
        };
        assert_eq!(unfinished.error(), Some(ErrorType::StreamTruncated));
        let lost = ResponseEnd {
            truncated: true,
            ..unfinished
        };
        assert_eq!(lost.error(), Some(ErrorType::CaptureIncomplete));
    }

    #[test]
    fn a_cut_explains_a_missing_end_unless_the_reply_was_done() {
        let truncated = Some(ErrorType::StreamTruncated);
        let cut = |reason, side| when_cut(truncated, false, reason, side);
        assert_eq!(
            cut(CloseReason::Reset, Side::Client),
            Some(ErrorType::ConnectionReset)
        );
        assert_eq!(
            cut(CloseReason::Closed, Side::Server),
            Some(ErrorType::ClientAborted)
        );
        assert_eq!(
            cut(CloseReason::ProcessExited, Side::Client),
            Some(ErrorType::ClientAborted)
        );
        assert_eq!(
            cut(CloseReason::Closed, Side::Client),
            Some(ErrorType::ConnectionClosed)
        );
        assert_eq!(when_cut(None, true, CloseReason::Reset, Side::Client), None);
        let status = Some(ErrorType::Http5xx);
        assert_eq!(
            when_cut(status, false, CloseReason::Reset, Side::Client),
            status
        );
    }
}
