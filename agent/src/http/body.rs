//! Where a message's body bytes go: content decoding, then the
//! per-message cap. Shared by HTTP/1.1 messages and HTTP/2 streams.

use super::encoding::ContentDecoder;
use super::head::{self, Header};
use super::{HttpEvent, Role};

/// Where body bytes go: content decoding, then the per-message cap.
#[derive(Debug)]
pub(crate) struct BodyOutput {
    role: Role,
    max: u64,
    decoder: Option<ContentDecoder>,
    /// Bytes passed on for the current message.
    passed: u64,
    /// Nothing more is passed on for the current message.
    stopped: bool,
}

impl BodyOutput {
    pub(crate) fn new(role: Role, max: u64) -> Self {
        Self {
            role,
            max,
            decoder: None,
            passed: 0,
            stopped: false,
        }
    }

    pub(crate) fn pass(&mut self, bytes: &[u8], sink: &mut dyn FnMut(HttpEvent<'_>)) {
        if self.stopped || bytes.is_empty() {
            return;
        }
        let Self {
            role,
            max,
            decoder,
            passed,
            stopped,
        } = self;
        let mut emit = |piece: &[u8]| {
            if *stopped {
                return false;
            }
            let room = (*max - *passed).min(piece.len() as u64) as usize;
            if room > 0 {
                sink(HttpEvent::Body {
                    role: *role,
                    bytes: &piece[..room],
                });
            }
            *passed += room as u64;
            if room < piece.len() {
                *stopped = true;
                sink(HttpEvent::BodyTruncated { role: *role });
            }
            !*stopped
        };
        let failed = match decoder {
            None => {
                emit(bytes);
                false
            }
            Some(decoder) => decoder.write(bytes, &mut emit).is_err(),
        };
        if failed {
            self.stop(sink);
        }
        if self.stopped {
            // Inflating no further: its state goes now, not at the next message.
            self.decoder = None;
        }
    }

    /// Stops passing bytes of this message on, once, with a notice.
    pub(crate) fn stop(&mut self, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        self.decoder = None;
        if !self.stopped {
            self.stopped = true;
            sink(HttpEvent::BodyTruncated { role: self.role });
        }
    }

    pub(crate) fn reset(&mut self, decoder: Option<ContentDecoder>) {
        self.decoder = decoder;
        self.passed = 0;
        self.stopped = false;
    }
}

/// The decoder a message's `Content-Encoding` asks for, if any.
pub(crate) fn decoder_for(headers: &[Header]) -> Option<ContentDecoder> {
    head::find(headers, "content-encoding").and_then(ContentDecoder::for_coding)
}
