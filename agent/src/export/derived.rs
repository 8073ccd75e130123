//! The exporters' view of one finished LLM call: borrowed, flat, already in
//! the units the exporters want (seconds, wall-clock nanoseconds).
//!
//! Input: a `calls::LlmCall` (mapped in one place, `From<&LlmCall>`, once
//! that record is final). Output: [`CallFacts`], read by both the Prometheus
//! recorder and the OTLP span builder, so the two never disagree about what
//! a call was, and [`SlowReasons`], the one slow-call verdict both report.

use crate::config::SlowThresholds;
use crate::stream::WallNanos;

/// One output-bearing chunk of a streamed response.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputChunk {
    /// Return of the read that delivered it.
    pub at: WallNanos,
    /// Tokens it carried (estimated when the provider does not say).
    pub tokens: u64,
}

/// One call, as the exporters see it. Names follow design.md's definitions.
#[derive(Clone, Debug, Default)]
pub struct CallFacts<'a> {
    /// `gen_ai.operation.name`: chat, text_completion, responses, ...
    pub operation: &'a str,
    /// `gen_ai.provider.name`: openai, anthropic, ...
    pub provider: &'a str,
    /// Model asked for in the request ("" when unknown).
    pub request_model: &'a str,
    pub response_model: Option<&'a str>,
    pub response_id: Option<&'a str>,
    pub finish_reasons: &'a [String],
    /// The service label: the configured name, else the process name.
    pub service: &'a str,
    /// The observed process.
    pub pid: u32,
    /// Its executable's name (`comm` when nothing better is known).
    pub process_name: &'a str,
    /// `client` or `server`: which end of the connection was watched.
    pub side: &'a str,
    pub server_address: Option<&'a str>,
    pub server_port: Option<u16>,
    pub stream: bool,
    /// HTTP status; `None` when no response came.
    pub status: Option<u16>,
    /// `None` for a successful call.
    pub error_type: Option<&'a str>,
    /// Request start `t0`.
    pub start: WallNanos,
    /// Last response byte (or when the call was given up).
    pub end: WallNanos,
    /// First output token (TTFT point), when there was one.
    pub first_token_at: Option<WallNanos>,
    /// First SSE event of any kind.
    pub first_chunk_at: Option<WallNanos>,
    pub output_chunks: &'a [OutputChunk],
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Tokens per second, as design.md defines it.
    pub token_rate: Option<f64>,
    /// The request's W3C `traceparent` header.
    pub traceparent: Option<&'a str>,
}

fn seconds(from: WallNanos, to: WallNanos) -> f64 {
    to.saturating_sub(from) as f64 / 1e9
}

impl CallFacts<'_> {
    /// Request start to last byte.
    pub fn duration(&self) -> f64 {
        seconds(self.start, self.end)
    }

    /// Time to first token.
    pub fn ttft(&self) -> Option<f64> {
        self.first_token_at.map(|t| seconds(self.start, t))
    }

    /// Time to first chunk of any kind.
    pub fn time_to_first_chunk(&self) -> Option<f64> {
        self.first_chunk_at.map(|t| seconds(self.start, t))
    }

    /// Gaps between consecutive output-bearing chunks.
    pub fn chunk_gaps(&self) -> impl Iterator<Item = f64> + '_ {
        self.output_chunks
            .windows(2)
            .map(|pair| seconds(pair[0].at, pair[1].at))
    }
}

/// Why a call counts as slow (both can hold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowReasons {
    pub duration: bool,
    pub token_rate: bool,
}

impl SlowReasons {
    /// Slower than the duration threshold, or generating under the token
    /// rate threshold. A threshold of 0 turns its check off.
    pub fn of(call: &CallFacts, thresholds: SlowThresholds) -> Self {
        SlowReasons {
            duration: thresholds.duration_seconds > 0.0
                && call.duration() > thresholds.duration_seconds,
            token_rate: call
                .token_rate
                .is_some_and(|rate| rate < thresholds.token_rate),
        }
    }

    pub fn any(self) -> bool {
        self.duration || self.token_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: SlowThresholds = SlowThresholds {
        duration_seconds: 5.0,
        token_rate: 10.0,
    };

    #[test]
    fn timings_from_wall_nanos() {
        let chunks = [
            OutputChunk {
                at: 1_500_000_000,
                tokens: 1,
            },
            OutputChunk {
                at: 1_750_000_000,
                tokens: 2,
            },
            OutputChunk {
                at: 2_250_000_000,
                tokens: 1,
            },
        ];
        let call = CallFacts {
            start: 1_000_000_000,
            end: 3_000_000_000,
            first_chunk_at: Some(1_200_000_000),
            first_token_at: Some(1_500_000_000),
            output_chunks: &chunks,
            ..CallFacts::default()
        };
        assert_eq!(call.duration(), 2.0);
        assert_eq!(call.ttft(), Some(0.5));
        assert_eq!(call.time_to_first_chunk(), Some(0.2));
        assert_eq!(call.chunk_gaps().collect::<Vec<_>>(), [0.25, 0.5]);
    }

    #[test]
    fn slow_by_duration_or_rate_and_zero_disables() {
        let mut call = CallFacts {
            end: 6_000_000_000,
            token_rate: Some(12.0),
            ..CallFacts::default()
        };
        assert_eq!(
            SlowReasons::of(&call, T),
            SlowReasons {
                duration: true,
                token_rate: false
            }
        );
        call.token_rate = Some(9.0);
        call.end = 1_000_000_000;
        assert_eq!(
            SlowReasons::of(&call, T),
            SlowReasons {
                duration: false,
                token_rate: true
            }
        );
        let off = SlowThresholds {
            duration_seconds: 0.0,
            token_rate: 0.0,
        };
        assert!(!SlowReasons::of(&call, off).any());
        call.token_rate = None;
        assert!(!SlowReasons::of(&call, T).any());
    }
}
