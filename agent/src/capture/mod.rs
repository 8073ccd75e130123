//! Capture: where bytes come from.
//!
//! A capture path turns what it observes into [`CaptureEvent`]s: plain,
//! owned values with wall-clock times, keyed the way the source sees them
//! (a process's fd or TLS session). `reassembly` turns them into ordered
//! per-connection [`crate::stream::StreamEvent`]s.

pub mod clock;
pub mod ebpf;
pub mod pcap;

use std::net::SocketAddr;

use crate::stream::{Direction, Side, WallNanos};

/// How the source names a byte stream inside one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKey {
    /// A plaintext TCP socket, by fd.
    Socket { pid: u32, fd: i32 },
    /// A TLS session, by the library's session pointer (`SSL*`).
    Tls { pid: u32, session: u64 },
}

impl StreamKey {
    pub fn pid(&self) -> u32 {
        match *self {
            StreamKey::Socket { pid, .. } | StreamKey::Tls { pid, .. } => pid,
        }
    }
}

/// One observation of a capture path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureEvent {
    /// A read or write that moved `len` bytes, of which `bytes` were captured.
    Data {
        key: StreamKey,
        /// The socket fd under a TLS session, when the source knows it.
        fd: Option<i32>,
        tid: u32,
        direction: Direction,
        call_start: WallNanos,
        call_end: WallNanos,
        len: u64,
        bytes: Vec<u8>,
    },
    /// A TCP connection the process connected (client) or accepted
    /// (server), or, with side unknown, one it had before it was watched,
    /// found at its first read or write since.
    Connected {
        pid: u32,
        fd: i32,
        side: Side,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
        comm: String,
        at: WallNanos,
    },
    /// The process closed a socket fd.
    Closed { pid: u32, fd: i32, at: WallNanos },
    /// The process exited; its sockets went with it.
    ProcessExited { pid: u32, at: WallNanos },
}
