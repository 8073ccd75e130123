//! Stream identity: turns the kernel's [`KernelEvent`]s into per-connection
//! [`ConnectionEvent`]s, each connection with an id that is never reused.
//!
//! The kernel already delivers each stream's bytes in order (every record
//! is one read or write of the process); this stage gives streams their
//! identity (a fd is reused, a TLS session pointer too), joins a TLS session
//! to the socket under it for addresses and close, marks truncated captures
//! as gaps, and ends streams whose process went away.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::records::{KernelEvent, StreamKey};
use crate::stream::{
    CloseReason, ConnectionEvent, ConnectionId, ConnectionInfo, DataChunk, Direction, Side,
    StreamEvent, Transport, WallNanos,
};

/// Bounds on the streams followed.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Streams followed at once; past it the least recently active is evicted.
    pub max_streams: usize,
    /// A stream with no event for this long is evicted by [`Streams::evict_idle`].
    pub idle_timeout_ns: u64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_streams: 16_384,
            idle_timeout_ns: 300 * 1_000_000_000,
        }
    }
}

/// Counters of this stage, for the agent's health metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub streams_opened: u64,
    /// Streams dropped because `max_streams` was reached or they went idle.
    pub streams_evicted: u64,
    /// Bytes the capture counted but did not copy (reported as gaps).
    pub bytes_missing: u64,
}

struct Stream {
    id: ConnectionId,
    fd: Option<i32>,
    /// Bytes missing after the last chunk, per direction (egress, ingress).
    pending_gap: [u64; 2],
    last_seen: WallNanos,
}

/// What a connect or accept told us about a socket.
struct SocketInfo {
    side: Side,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    comm: String,
}

/// Connection identity and lifetime across capture events.
#[derive(Default)]
pub struct Streams {
    limits: StreamLimits,
    next_id: u64,
    streams: HashMap<StreamKey, Stream>,
    sockets: HashMap<(u32, i32), SocketInfo>,
    stats: StreamStats,
}

impl Streams {
    pub fn new(limits: StreamLimits) -> Self {
        Streams {
            limits,
            ..Streams::default()
        }
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Feeds one kernel event; appends the connection events it causes.
    pub fn push(&mut self, event: KernelEvent, out: &mut Vec<ConnectionEvent>) {
        match event {
            KernelEvent::Data {
                key,
                fd,
                tid,
                direction,
                call_start,
                call_end,
                len,
                bytes,
            } => {
                let stream = self.stream_for(key, fd, call_start, out);
                let slot = direction_slot(direction);
                let gap_before = std::mem::take(&mut stream.pending_gap[slot]);
                let missing = len.saturating_sub(bytes.len() as u64);
                stream.pending_gap[slot] = missing;
                stream.last_seen = call_end;
                if stream.fd.is_none() {
                    stream.fd = fd;
                }
                let id = stream.id;
                self.stats.bytes_missing += missing;
                out.push((
                    id,
                    StreamEvent::Data(DataChunk {
                        direction,
                        tid: Some(tid),
                        call_start,
                        call_end,
                        gap_before,
                        bytes,
                    }),
                ));
            }
            KernelEvent::Connected {
                pid,
                fd,
                side,
                local,
                peer,
                comm,
                at,
            } => {
                let info = SocketInfo {
                    side,
                    local,
                    peer,
                    comm,
                };
                if side == Side::Unknown {
                    // Found open: nothing it replaces, and its streams may
                    // have started already.
                    self.sockets.entry((pid, fd)).or_insert(info);
                } else {
                    // A fd reused without a close we saw: whatever used it is over.
                    self.close_matching(|k, s| on_fd(k, s, pid, fd), at, CloseReason::Closed, out);
                    self.sockets.insert((pid, fd), info);
                }
            }
            KernelEvent::Closed { pid, fd, at } => {
                self.close_matching(|k, s| on_fd(k, s, pid, fd), at, CloseReason::Closed, out);
                self.sockets.remove(&(pid, fd));
            }
            KernelEvent::ProcessExited { pid, at } => {
                self.close_matching(|k, _| k.pid() == pid, at, CloseReason::ProcessExited, out);
                self.sockets.retain(|(p, _), _| *p != pid);
            }
            // Discovery's business, not a stream's.
            KernelEvent::Exec(_)
            | KernelEvent::Forked { .. }
            | KernelEvent::TlsHello { .. }
            | KernelEvent::TcpStarting { .. } => {}
        }
    }

    /// Ends streams idle since before `now - idle_timeout`.
    pub fn evict_idle(&mut self, now: WallNanos, out: &mut Vec<ConnectionEvent>) {
        let horizon = now.saturating_sub(self.limits.idle_timeout_ns);
        let before = self.streams.len();
        self.close_matching(|_, s| s.last_seen < horizon, now, CloseReason::Evicted, out);
        self.stats.streams_evicted += (before - self.streams.len()) as u64;
    }

    /// Ends every stream (the agent is stopping).
    pub fn close_all(&mut self, at: WallNanos, out: &mut Vec<ConnectionEvent>) {
        self.close_matching(|_, _| true, at, CloseReason::Evicted, out);
    }

    fn stream_for(
        &mut self,
        key: StreamKey,
        fd: Option<i32>,
        at: WallNanos,
        out: &mut Vec<ConnectionEvent>,
    ) -> &mut Stream {
        if !self.streams.contains_key(&key) {
            if self.streams.len() >= self.limits.max_streams {
                self.evict_least_recent(at, out);
            }
            let id = ConnectionId(self.next_id);
            self.next_id += 1;
            self.stats.streams_opened += 1;
            out.push((id, StreamEvent::Opened(self.connection_info(id, key, fd))));
            self.streams.insert(
                key,
                Stream {
                    id,
                    fd,
                    pending_gap: [0; 2],
                    last_seen: at,
                },
            );
        }
        self.streams.get_mut(&key).expect("inserted above")
    }

    fn connection_info(&self, id: ConnectionId, key: StreamKey, fd: Option<i32>) -> ConnectionInfo {
        let pid = key.pid();
        let fd = match key {
            StreamKey::Socket { fd, .. } => Some(fd),
            StreamKey::Tls { .. } => fd,
        };
        let socket = fd.and_then(|fd| self.sockets.get(&(pid, fd)));
        ConnectionInfo {
            id,
            pid,
            comm: socket.map(|s| s.comm.clone()),
            fd,
            local: socket.and_then(|s| s.local),
            peer: socket.and_then(|s| s.peer),
            side: socket.map_or(Side::Unknown, |s| s.side),
            transport: match key {
                StreamKey::Socket { .. } => Transport::Tcp,
                StreamKey::Tls { .. } => Transport::Tls,
            },
        }
    }

    fn evict_least_recent(&mut self, at: WallNanos, out: &mut Vec<ConnectionEvent>) {
        let oldest = self
            .streams
            .iter()
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(k, _)| *k);
        if let Some(key) = oldest {
            self.stats.streams_evicted += 1;
            self.close_matching(|k, _| *k == key, at, CloseReason::Evicted, out);
        }
    }

    fn close_matching(
        &mut self,
        matches: impl Fn(&StreamKey, &Stream) -> bool,
        at: WallNanos,
        reason: CloseReason,
        out: &mut Vec<ConnectionEvent>,
    ) {
        let mut closed: Vec<ConnectionId> = Vec::new();
        self.streams.retain(|key, stream| {
            let close = matches(key, stream);
            if close {
                closed.push(stream.id);
            }
            !close
        });
        // Close in id order so output does not depend on hash order.
        closed.sort();
        out.extend(
            closed
                .into_iter()
                .map(|id| (id, StreamEvent::Closed { at, reason })),
        );
    }
}

/// Whether a stream rides on socket `fd` of process `pid`.
fn on_fd(key: &StreamKey, stream: &Stream, pid: u32, fd: i32) -> bool {
    key.pid() == pid && stream.fd == Some(fd)
}

fn direction_slot(direction: Direction) -> usize {
    match direction {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(
        key: StreamKey,
        fd: Option<i32>,
        direction: Direction,
        at: u64,
        bytes: &[u8],
        len: u64,
    ) -> KernelEvent {
        KernelEvent::Data {
            key,
            fd,
            tid: 11,
            direction,
            call_start: at,
            call_end: at + 1,
            len,
            bytes: bytes.to_vec(),
        }
    }

    fn run(events: Vec<KernelEvent>) -> Vec<ConnectionEvent> {
        let mut streams = Streams::new(StreamLimits::default());
        let mut out = Vec::new();
        for event in events {
            streams.push(event, &mut out);
        }
        out
    }

    const SOCKET: StreamKey = StreamKey::Socket { pid: 7, fd: 3 };
    const TLS: StreamKey = StreamKey::Tls {
        pid: 7,
        session: 0xdead,
    };

    fn connected(fd: i32) -> KernelEvent {
        KernelEvent::Connected {
            pid: 7,
            fd,
            side: Side::Client,
            local: "127.0.0.1:5000".parse().ok(),
            peer: "127.0.0.1:443".parse().ok(),
            comm: "python3".into(),
            at: 1,
        }
    }

    #[test]
    fn a_tls_session_takes_its_socket_addresses_and_ends_with_its_close() {
        let out = run(vec![
            connected(3),
            data(TLS, Some(3), Direction::Egress, 10, b"POST /", 6),
            KernelEvent::Closed {
                pid: 7,
                fd: 3,
                at: 20,
            },
        ]);
        let StreamEvent::Opened(info) = &out[0].1 else {
            panic!("{out:?}")
        };
        assert_eq!(info.transport, Transport::Tls);
        assert_eq!(info.side, Side::Client);
        assert_eq!(info.peer, "127.0.0.1:443".parse().ok());
        assert_eq!(info.comm.as_deref(), Some("python3"));
        assert!(matches!(out[1].1, StreamEvent::Data(_)));
        assert_eq!(
            out[2],
            (
                ConnectionId(0),
                StreamEvent::Closed {
                    at: 20,
                    reason: CloseReason::Closed
                }
            )
        );
    }

    #[test]
    fn a_socket_found_open_names_its_peer_and_ends_nothing() {
        let found = |at| KernelEvent::Connected {
            pid: 7,
            fd: 3,
            side: Side::Unknown,
            local: "127.0.0.1:5000".parse().ok(),
            peer: "127.0.0.1:443".parse().ok(),
            comm: "python3".into(),
            at,
        };
        let out = run(vec![
            found(1),
            data(TLS, Some(3), Direction::Ingress, 10, b"data: x", 7),
            found(11),
            data(TLS, Some(3), Direction::Egress, 12, b"POST /", 6),
        ]);
        assert_eq!(out.len(), 3, "{out:?}");
        let StreamEvent::Opened(info) = &out[0].1 else {
            panic!("{out:?}")
        };
        assert_eq!(info.side, Side::Unknown);
        assert_eq!(info.peer, "127.0.0.1:443".parse().ok());
        assert!(out.iter().all(|(id, _)| id.0 == 0));
    }

    #[test]
    fn a_reused_fd_is_a_new_connection() {
        let out = run(vec![
            data(SOCKET, Some(3), Direction::Egress, 10, b"a", 1),
            connected(3),
            data(SOCKET, Some(3), Direction::Egress, 30, b"b", 1),
        ]);
        let ids: Vec<u64> = out.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, [0, 0, 0, 1, 1]);
        assert!(matches!(out[2].1, StreamEvent::Closed { .. }));
    }

    #[test]
    fn a_truncated_capture_becomes_a_gap_before_the_next_chunk_in_that_direction() {
        let out = run(vec![
            data(SOCKET, Some(3), Direction::Ingress, 10, b"abc", 10),
            data(SOCKET, Some(3), Direction::Egress, 11, b"x", 1),
            data(SOCKET, Some(3), Direction::Ingress, 12, b"def", 3),
        ]);
        let gaps: Vec<(Direction, u64)> = out
            .iter()
            .filter_map(|(_, e)| match e {
                StreamEvent::Data(c) => Some((c.direction, c.gap_before)),
                _ => None,
            })
            .collect();
        assert_eq!(
            gaps,
            [
                (Direction::Ingress, 0),
                (Direction::Egress, 0),
                (Direction::Ingress, 7)
            ]
        );
    }

    #[test]
    fn process_exit_ends_all_its_streams_and_nothing_else() {
        let other = StreamKey::Socket { pid: 8, fd: 3 };
        let out = run(vec![
            data(SOCKET, Some(3), Direction::Egress, 10, b"a", 1),
            data(TLS, None, Direction::Egress, 10, b"b", 1),
            data(other, Some(3), Direction::Egress, 10, b"c", 1),
            KernelEvent::ProcessExited { pid: 7, at: 50 },
        ]);
        let closed: Vec<u64> = out
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    StreamEvent::Closed {
                        reason: CloseReason::ProcessExited,
                        ..
                    }
                )
            })
            .map(|(id, _)| id.0)
            .collect();
        assert_eq!(closed, [0, 1]);
    }

    #[test]
    fn streams_past_the_cap_evict_the_least_recent() {
        let mut streams = Streams::new(StreamLimits {
            max_streams: 2,
            idle_timeout_ns: 100,
        });
        let mut out = Vec::new();
        for fd in 0..3 {
            let key = StreamKey::Socket { pid: 1, fd };
            streams.push(
                data(key, Some(fd), Direction::Egress, 10 + fd as u64, b"x", 1),
                &mut out,
            );
        }
        assert_eq!(streams.open_streams(), 2);
        assert_eq!(streams.stats().streams_evicted, 1);
        streams.evict_idle(1_000, &mut out);
        assert_eq!(streams.open_streams(), 0);
        assert_eq!(streams.stats().streams_evicted, 3);
    }
}
