//! What the exporters derive from an [`LlmCall`] and its workload beyond
//! the call's own numbers, in one place so that metrics and traces never
//! disagree: the service a call is reported under, its side's label, and
//! whether it was slow.

use crate::calls::LlmCall;
use crate::config::SlowThresholds;
use crate::stream::Side;
use crate::workload::Workload;

use super::semconv::value;

/// The service a call is reported under: the configured name, else the
/// watched process's pod name, container name, or command name.
pub fn service<'a>(
    configured: Option<&'a str>,
    call: &'a LlmCall,
    workload: &'a Workload,
) -> &'a str {
    [
        configured,
        workload.pod_name.as_deref(),
        workload.container_name.as_deref(),
        call.comm.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.is_empty())
    .unwrap_or(value::UNKNOWN)
}

/// `client`, `server` or `unknown`.
pub fn side(call: &LlmCall) -> &'static str {
    match call.side {
        Side::Client => "client",
        Side::Server => "server",
        Side::Unknown => value::UNKNOWN,
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
    pub fn of(call: &LlmCall, thresholds: SlowThresholds) -> Self {
        SlowReasons {
            duration: thresholds.duration_seconds > 0.0
                && call.timings.elapsed_s() > thresholds.duration_seconds,
            token_rate: call
                .tokens_per_second()
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
    use crate::calls::fixture::streamed_call;

    const S: u64 = 1_000_000_000;
    const T: SlowThresholds = SlowThresholds {
        duration_seconds: 5.0,
        token_rate: 10.0,
    };

    #[test]
    fn service_is_configured_else_the_pod_the_container_or_the_process() {
        let mut call = streamed_call("m", &[]);
        let mut workload = Workload::default();
        assert_eq!(service(None, &call, &workload), "python3");
        workload.container_name = Some("api".into());
        assert_eq!(service(None, &call, &workload), "api");
        workload.pod_name = Some("chat-0".into());
        assert_eq!(service(None, &call, &workload), "chat-0");
        assert_eq!(service(Some("svc"), &call, &workload), "svc");
        call.comm = None;
        assert_eq!(service(None, &call, &Workload::default()), "unknown");
    }

    #[test]
    fn slow_by_duration_or_rate_and_zero_disables() {
        // 3 tokens from +0.25 s: the last one at +0.375 s is 16 tokens/s.
        let mut call = streamed_call("m", &[10 * S + S / 4, 10 * S + 3 * S / 8]);
        assert_eq!(call.tokens_per_second(), Some(16.0));
        assert_eq!(
            SlowReasons::of(&call, T),
            SlowReasons {
                duration: true,
                token_rate: false
            }
        );
        // At +0.5 s, 8 tokens/s; and over in 1 s.
        call = streamed_call("m", &[10 * S + S / 4, 10 * S + S / 2]);
        call.timings.end_ns = Some(11 * S);
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
        call.timings.output_chunks = 1;
        assert_eq!(call.tokens_per_second(), None);
        assert!(!SlowReasons::of(&call, T).any());
    }
}
