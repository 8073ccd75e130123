//! The kernel side's records, decoded into plain [`KernelEvent`]s: bytes
//! read or written, connections opened and closed, processes that exec'd
//! or exited, all with wall-clock times and keyed the way the kernel sees
//! them (a process's fd or TLS session).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::abi::{self, AbiError, ConnEvent, DataEvent, Record};
use super::clock::MonotonicToWall;
use crate::stream::{Direction, Side, WallNanos};

/// How the kernel side names a byte stream inside one process.
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

/// A process ran a new program: a watched one, one that entered a watched
/// scope by this exec, or (when every exec is reported) any other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExec {
    pub pid: u32,
    pub comm: String,
    /// When it exec'd (wall clock).
    pub at: WallNanos,
    /// The kernel watches it now.
    pub watched: bool,
}

/// One record of the kernel side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// A read or write that moved `len` bytes, of which `bytes` were captured.
    Data {
        key: StreamKey,
        /// The socket fd under a TLS session, when the kernel knows it.
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
    /// The process exec'd.
    Exec(ProcessExec),
    /// A watched process forked this child, watched too.
    Forked { pid: u32, at: WallNanos },
    /// A watched process connected or listened on a TCP socket; `held`
    /// when socket data was not captured and it waits to be continued.
    TcpStarting { pid: u32, held: bool },
    /// A watched process whose TLS libraries were not looked at since its
    /// exec began a TLS handshake; `held` when it waits to be continued
    /// ([`ProbeControl::resume`](super::discovery::ProbeControl::resume)).
    TlsHello {
        pid: u32,
        at: WallNanos,
        held: bool,
        /// The start of its ClientHello.
        hello: Vec<u8>,
    },
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8], clock: &MonotonicToWall) -> Result<KernelEvent, AbiError> {
    Ok(match abi::decode(record)? {
        Record::Data { event, payload } => data_event(&event, payload, clock),
        Record::Conn(event) => conn_event(&event, clock),
    })
}

fn data_event(event: &DataEvent, payload: &[u8], clock: &MonotonicToWall) -> KernelEvent {
    let hdr = &event.hdr;
    if hdr.kind == abi::EVENT_TLS_HELLO {
        return KernelEvent::TlsHello {
            pid: hdr.pid,
            at: clock.to_wall(hdr.end_ns),
            held: hdr.flags & abi::FLAG_HELD != 0,
            hello: payload.to_vec(),
        };
    }
    let fd = (hdr.fd >= 0).then_some(hdr.fd);
    let key = if hdr.source == abi::SOURCE_OPENSSL {
        StreamKey::Tls {
            pid: hdr.pid,
            session: hdr.ssl,
        }
    } else {
        StreamKey::Socket {
            pid: hdr.pid,
            fd: hdr.fd,
        }
    };
    KernelEvent::Data {
        key,
        fd,
        tid: hdr.tid,
        direction: if hdr.direction == abi::EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        call_start: clock.to_wall(hdr.start_ns),
        call_end: clock.to_wall(hdr.end_ns),
        len: u64::from(event.len),
        bytes: payload.to_vec(),
    }
}

fn conn_event(event: &ConnEvent, clock: &MonotonicToWall) -> KernelEvent {
    let hdr = &event.hdr;
    let at = clock.to_wall(hdr.end_ns);
    match hdr.kind {
        abi::EVENT_CLOSE => KernelEvent::Closed {
            pid: hdr.pid,
            fd: hdr.fd,
            at,
        },
        abi::EVENT_EXIT => KernelEvent::ProcessExited { pid: hdr.pid, at },
        abi::EVENT_FORK => KernelEvent::Forked { pid: hdr.pid, at },
        abi::EVENT_TCP_START => KernelEvent::TcpStarting {
            pid: hdr.pid,
            held: hdr.flags & abi::FLAG_HELD != 0,
        },
        abi::EVENT_EXEC => KernelEvent::Exec(ProcessExec {
            pid: hdr.pid,
            comm: comm_string(&event.comm),
            at,
            watched: hdr.flags & abi::FLAG_WATCHED != 0,
        }),
        kind => KernelEvent::Connected {
            pid: hdr.pid,
            fd: hdr.fd,
            side: match kind {
                abi::EVENT_CONNECT => Side::Client,
                abi::EVENT_ACCEPT => Side::Server,
                _ => Side::Unknown,
            },
            local: socket_addr(event.family, &event.local_addr, event.local_port),
            peer: socket_addr(event.family, &event.peer_addr, event.peer_port),
            comm: comm_string(&event.comm),
            at,
        },
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(*addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
