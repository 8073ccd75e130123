//! The plain data that flows from capture to reconstruction: one ordered,
//! timestamped byte stream per connection and direction.
//!
//! Every capture source (eBPF, a live interface, a capture file) ends in
//! [`ConnectionEvent`]s; everything after (`http`, `sse`, `providers`,
//! `calls`) consumes them and never sees where they came from.

use std::net::SocketAddr;

use serde::Serialize;

/// Wall-clock time in nanoseconds since the Unix epoch.
pub type WallNanos = u64;

/// Identifies one connection for the lifetime of the agent. Assigned by
/// the capture source; never reused, even when the kernel reuses the fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ConnectionId(pub u64);

/// Which way bytes moved, seen from the watched process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Written by the watched process.
    Egress,
    /// Read by the watched process.
    Ingress,
}

/// Which end of the connection the watched process is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// It connected: its egress is requests, its ingress responses.
    Client,
    /// It accepted: its ingress is requests, its egress responses.
    Server,
    /// Seen mid-life; `http` decides from the first bytes.
    #[default]
    Unknown,
}

/// Where a stream's plaintext was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Socket syscalls on a plaintext TCP connection.
    Tcp,
    /// A TLS library's plaintext side (SSL_read/SSL_write and friends).
    Tls,
}

/// What is known about a connection when its first event arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The connection.
    pub id: ConnectionId,
    /// Thread-group id of the watched process.
    pub pid: u32,
    /// The process's command name, when known.
    pub comm: Option<String>,
    /// Socket fd in the watched process, when known.
    pub fd: Option<i32>,
    /// The watched process's end, when known.
    pub local: Option<SocketAddr>,
    /// The other end, when known.
    pub peer: Option<SocketAddr>,
    /// Which end the watched process is.
    pub side: Side,
    /// Where its plaintext was read.
    pub transport: Transport,
}

/// One read or write of the watched process, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataChunk {
    /// Written or read.
    pub direction: Direction,
    /// The thread that made the call, when the source knows it.
    pub tid: Option<u32>,
    /// Entry of the call that moved these bytes.
    pub call_start: WallNanos,
    /// Return of that call: when the bytes were available to the process.
    pub call_end: WallNanos,
    /// Bytes known to be missing right before this chunk, in this
    /// direction (capture truncation or loss). Never filled in.
    pub gap_before: u64,
    /// The bytes captured.
    pub bytes: Vec<u8>,
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The watched process closed it, or the peer finished (FIN).
    Closed,
    /// Reset by either side (RST).
    Reset,
    /// The watched process exited (or was killed) with it open.
    ProcessExited,
    /// The agent stopped following it (idle timeout or shutdown).
    Evicted,
}

/// Everything that can happen to one connection, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// Always the first event of a connection.
    Opened(ConnectionInfo),
    /// A read or write.
    Data(DataChunk),
    /// Always the last event of a connection.
    Closed {
        /// When it ended.
        at: WallNanos,
        /// Why.
        reason: CloseReason,
    },
}

/// One event of one connection: what a capture source hands on.
pub type ConnectionEvent = (ConnectionId, StreamEvent);
