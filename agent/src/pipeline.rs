//! Everything after capture: connection events in, LLM calls out.
//!
//! Input: batches of [`ConnectionEvent`]s, from whichever capture source.
//! They go through [`CallTracker`] (framing, providers, records); each
//! finished [`LlmCall`] goes to the [`Outputs`] with the [`Workload`] of
//! its process beside it, and so does every connection event (for
//! `--print`). No capture type, socket, clock or BPF is seen here.

use crate::calls::{CallTracker, Limits, LlmCall, ReconstructionStats};
use crate::capture::CaptureReport;
use crate::stream::{CloseReason, ConnectionEvent, ConnectionId, StreamEvent};
use crate::workload::{Workload, Workloads};

/// Where the pipeline's results go (the exporters; a list in tests).
pub trait Outputs {
    /// A connection event, before the calls it finishes.
    fn connection_event(&mut self, id: ConnectionId, event: &StreamEvent) -> std::io::Result<()>;
    /// A finished call and the workload of its process.
    fn call(&mut self, call: &LlmCall, workload: &Workload) -> std::io::Result<()>;
    /// The running totals of capture and reconstruction.
    fn observe(&mut self, capture: &CaptureReport, reconstruction: &ReconstructionStats);
}

/// Connection events to calls, calls to the outputs.
pub struct Pipeline<O> {
    calls: CallTracker,
    /// Container and pod of each process with a connection.
    workloads: Workloads,
    outputs: O,
}

impl<O: Outputs> Pipeline<O> {
    pub fn new(limits: Limits, workloads: Workloads, outputs: O) -> Self {
        Pipeline {
            calls: CallTracker::new(limits),
            workloads,
            outputs,
        }
    }

    /// Takes every event of `events` (leaving it empty for the next batch).
    pub fn feed(&mut self, events: &mut Vec<ConnectionEvent>) -> std::io::Result<()> {
        let mut exited = Vec::new();
        for (id, event) in events.drain(..) {
            self.outputs.connection_event(id, &event)?;
            match &event {
                // Read while the process surely lives: its calls may only
                // end once it has exited.
                StreamEvent::Opened(info) => {
                    self.workloads.get(info.pid);
                }
                StreamEvent::Closed {
                    reason: CloseReason::ProcessExited,
                    ..
                } => exited.extend(self.calls.pid_of(id)),
                StreamEvent::Data(_) | StreamEvent::Closed { .. } => {}
            }
            for call in self.calls.on_event(id, &event) {
                let workload = self.workloads.get(call.pid);
                self.outputs.call(&call, workload)?;
            }
        }
        // Only now: the exit closed the process's connections, and their
        // calls, given out above, needed its workload.
        for pid in exited {
            self.workloads.forget(pid);
        }
        Ok(())
    }

    /// Hands the running totals to the outputs.
    pub fn observe(&mut self, capture: &CaptureReport) {
        self.outputs.observe(capture, self.calls.stats());
    }

    /// The outputs, to shut them down.
    pub fn into_outputs(self) -> O {
        self.outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{ConnectionInfo, DataChunk, Direction, Side, Transport};

    /// What reached the outputs.
    #[derive(Default)]
    struct Seen {
        events: usize,
        calls: Vec<(LlmCall, Workload)>,
        observed: Vec<(CaptureReport, u64)>,
    }

    impl Outputs for &mut Seen {
        fn connection_event(&mut self, _: ConnectionId, _: &StreamEvent) -> std::io::Result<()> {
            self.events += 1;
            Ok(())
        }

        fn call(&mut self, call: &LlmCall, workload: &Workload) -> std::io::Result<()> {
            self.calls.push((call.clone(), workload.clone()));
            Ok(())
        }

        fn observe(&mut self, capture: &CaptureReport, reconstruction: &ReconstructionStats) {
            self.observed
                .push((capture.clone(), reconstruction.llm_calls));
        }
    }

    /// Each process in its own pod, named after its pid.
    fn pod_of(pid: u32) -> Workload {
        Workload {
            pod_name: Some(format!("pod-{pid}")),
            ..Workload::default()
        }
    }

    const REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 71\r\n\r\n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 120\r\n\r\ndata: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\ndata: {\"choices\":[{\"finish_reason\":\"stop\",\"delta\":{}}]}\n\n";

    /// One call on connection `id` of process `pid`, then the process's exit.
    fn exchange(id: u64, pid: u32) -> Vec<ConnectionEvent> {
        let id = ConnectionId(id);
        let chunk = |direction, at, bytes: &[u8]| {
            StreamEvent::Data(DataChunk {
                direction,
                tid: Some(pid),
                call_start: at,
                call_end: at + 10,
                gap_before: 0,
                bytes: bytes.to_vec(),
            })
        };
        vec![
            (
                id,
                StreamEvent::Opened(ConnectionInfo {
                    id,
                    pid,
                    comm: Some("python3".into()),
                    fd: Some(3),
                    local: None,
                    peer: "10.0.0.1:443".parse().ok(),
                    side: Side::Client,
                    transport: Transport::Tls,
                }),
            ),
            (id, chunk(Direction::Egress, 1_000, REQUEST)),
            (id, chunk(Direction::Ingress, 2_000, RESPONSE)),
            (
                id,
                StreamEvent::Closed {
                    at: 3_000,
                    reason: CloseReason::ProcessExited,
                },
            ),
        ]
    }

    #[test]
    fn events_become_calls_with_their_processs_workload_beside_them() {
        let mut seen = Seen::default();
        let mut pipeline = Pipeline::new(Limits::default(), Workloads::reading(pod_of), &mut seen);
        let mut events = exchange(1, 42);
        events.extend(exchange(2, 43));
        pipeline.feed(&mut events).unwrap();
        assert!(events.is_empty(), "the batch is taken");
        pipeline.observe(&CaptureReport {
            records_read: 8,
            ..CaptureReport::default()
        });
        drop(pipeline);
        assert_eq!(seen.events, 8);
        let calls: Vec<(u32, Option<&str>, Option<&str>)> = seen
            .calls
            .iter()
            .map(|(call, workload)| {
                (
                    call.pid,
                    call.request_model.as_deref(),
                    workload.pod_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                (42, Some("m"), Some("pod-42")),
                (43, Some("m"), Some("pod-43"))
            ]
        );
        assert_eq!(seen.observed.len(), 1);
        assert_eq!(seen.observed[0].0.records_read, 8);
        assert_eq!(seen.observed[0].1, 2, "reconstruction totals go along");
    }

    #[test]
    fn an_exited_processs_workload_is_read_again_for_its_pids_next_process() {
        static READS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        fn counted(pid: u32) -> Workload {
            READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            pod_of(pid)
        }
        let mut seen = Seen::default();
        let mut pipeline = Pipeline::new(Limits::default(), Workloads::reading(counted), &mut seen);
        pipeline.feed(&mut exchange(1, 7)).unwrap();
        pipeline.feed(&mut exchange(2, 7)).unwrap();
        assert_eq!(READS.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
