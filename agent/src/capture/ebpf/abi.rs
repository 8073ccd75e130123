//! The Rust mirror of `agent-ebpf/src/events.h`: the ring-buffer record
//! layout, its values, the keys of the maps user space cleans, the names
//! of the object's maps and programs, and the decoding of one record into
//! a [`Record`].
//!
//! The tests at the bottom read what the C compiler chose (exported as
//! `llmtap_abi_*` constants in the object) and the object's maps and
//! programs, and compare them with these, so the two cannot drift apart
//! silently.

use std::mem::size_of;

/// `enum llmtap_event_kind`
pub const EVENT_DATA: u8 = 1;
pub const EVENT_CONNECT: u8 = 2;
pub const EVENT_ACCEPT: u8 = 3;
pub const EVENT_CLOSE: u8 = 4;
pub const EVENT_EXIT: u8 = 5;
pub const EVENT_EXEC: u8 = 6;
pub const EVENT_FOUND: u8 = 7;
pub const EVENT_FORK: u8 = 8;
pub const EVENT_TLS_HELLO: u8 = 9;
pub const EVENT_TCP_START: u8 = 10;

/// `enum llmtap_direction`
pub const EGRESS: u8 = 0;
pub const INGRESS: u8 = 1;
/// `enum llmtap_source`
pub const SOURCE_SOCKET: u8 = 0;
pub const SOURCE_OPENSSL: u8 = 1;
/// `LLMTAP_FLAG_TRUNCATED`
pub const FLAG_TRUNCATED: u8 = 1;
/// `LLMTAP_FLAG_WATCHED`
pub const FLAG_WATCHED: u8 = 2;
/// `LLMTAP_FLAG_HELD`
pub const FLAG_HELD: u8 = 4;
/// `LLMTAP_HOST_EXACT`: an `llm_hosts` name is an LLM API host itself.
pub const HOST_EXACT: u8 = 1;
/// `LLMTAP_HOST_SUBDOMAINS`: so is each name one label below it.
pub const HOST_SUBDOMAINS: u8 = 2;
/// `LLMTAP_MAX_DATA`: the most payload one record carries.
pub const MAX_DATA: u32 = 16384;

/// `enum llmtap_counter`: indexes of the per-CPU `counters` map.
pub const COUNTER_RINGBUF_FULL: u32 = 0;
pub const COUNTER_TRUNCATED: u32 = 1;
pub const COUNTER_TLS_CIPHERTEXT: u32 = 2;
pub const COUNTER_NOT_HTTP: u32 = 3;
pub const COUNTER_TLS_NOT_LLM: u32 = 4;
pub const COUNTER_NOT_POST: u32 = 5;
pub const COUNTER_CROWDING: u32 = 6;
pub const COUNTER_MAX: u32 = 7;

/// `struct llmtap_header`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub direction: u8,
    pub source: u8,
    pub flags: u8,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub ssl: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// `struct llmtap_data_event` without its trailing `data[]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataEvent {
    pub hdr: Header,
    pub len: u32,
    pub captured: u32,
}

/// `struct llmtap_conn_event`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    pub hdr: Header,
    pub family: u16,
    pub local_port: u16,
    pub peer_port: u16,
    pub _pad: u16,
    pub local_addr: [u8; 16],
    pub peer_addr: [u8; 16],
    pub comm: [u8; 16],
}

/// `struct llmtap_ssl_key`: the key of the `ssl_fds` map. This key and
/// the next are never built here: their layout says where the pid is, for
/// [`maps::PID_KEYED_MAPS`].
#[repr(C)]
pub struct SslKey {
    pub ssl: u64,
    pub pid: u32,
    pub _pad: u32,
}

/// `struct llmtap_go_key`: the key of the `active_go_calls` map.
#[repr(C)]
pub struct GoKey {
    pub g: u64,
    pub pid: u32,
    pub _pad: u32,
}

/// Names of the object's maps: user space finds them by name.
pub mod maps {
    use std::mem::offset_of;

    use super::{GoKey, SslKey};

    pub const EVENTS: &str = "events";
    pub const WATCHED_PIDS: &str = "watched_pids";
    pub const WATCHED_CGROUPS: &str = "watched_cgroups";
    pub const WATCHED_COMMS: &str = "watched_comms";
    pub const COUNTERS: &str = "counters";
    pub const SCRATCH: &str = "scratch";
    /// Socket storage: freed with each socket, never walked.
    pub const SOCKET_STATES: &str = "socket_states";
    pub const SSL_FDS: &str = "ssl_fds";
    pub const TLS_LOOKED_AT: &str = "tls_looked_at";
    pub const ACTIVE_SSL_CALLS: &str = "active_ssl_calls";
    pub const THREAD_TLS_FD: &str = "thread_tls_fd";
    pub const ACTIVE_GO_CALLS: &str = "active_go_calls";
    pub const LLM_HOSTS: &str = "llm_hosts";
    /// Whether the socket data tracepoints are attached (key 0).
    pub const SOCKET_CAPTURE: &str = "socket_capture";

    /// Maps whose entries belong to processes, threads or connections.
    pub const STATE_MAPS: [&str; 6] = [
        WATCHED_PIDS,
        TLS_LOOKED_AT,
        SSL_FDS,
        ACTIVE_SSL_CALLS,
        THREAD_TLS_FD,
        ACTIVE_GO_CALLS,
    ];

    /// Maps keyed by process, with the offset of the tgid in their key
    /// (a goroutine cut short by its process's exit never reaches a RET,
    /// so `active_go_calls` is one of them).
    pub const PID_KEYED_MAPS: [(&str, usize); 3] = [
        (TLS_LOOKED_AT, 0),
        (SSL_FDS, offset_of!(SslKey, pid)),
        (ACTIVE_GO_CALLS, offset_of!(GoKey, pid)),
    ];
}

/// Names of the object's programs that user space loads and attaches by
/// name. The TLS entry programs are in
/// [`TLS_FUNCTIONS`](crate::capture::ebpf::tls_targets::TLS_FUNCTIONS),
/// beside the functions they hook.
pub mod programs {
    /// The socket layer's tracepoints (BTF-typed) that carry data, and the
    /// programs on them: attached only while a watched process uses TCP.
    pub const SOCKET_DATA_TRACEPOINTS: &[(&str, &str)] = &[
        ("sock_send_length", "socket_sent"),
        ("sock_recv_length", "socket_received"),
    ];

    /// Tracepoints (BTF-typed) attached as long as the agent runs: TCP
    /// state changes, and the scheduler's forks, execs and exits.
    pub const LASTING_TRACEPOINTS: &[(&str, &str)] = &[
        ("inet_sock_set_state", "socket_state_changed"),
        ("sched_process_fork", "on_fork"),
        ("sched_process_exec", "on_exec"),
        ("sched_process_exit", "on_exit"),
    ];

    /// The return program of every TLS function but Go's.
    pub const SSL_RETURN: &str = "ssl_return";
    /// Go's `(*Conn).Read`, at each of its RET instructions.
    pub const GO_TLS_RETURN: &str = "go_tls_return";
}

/// One decoded ring-buffer record, borrowing its payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Data { event: DataEvent, payload: &'a [u8] },
    Conn(ConnEvent),
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AbiError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("record claims {claimed} payload bytes but carries {present}")]
    PayloadMismatch { claimed: u32, present: usize },
}

/// Reads a `T` from the start of `bytes` (ring-buffer records are only
/// 8-byte aligned by accident, so never reference them in place).
fn read<T: Copy + Default>(bytes: &[u8]) -> Result<T, AbiError> {
    if bytes.len() < size_of::<T>() {
        return Err(AbiError::Short(bytes.len()));
    }
    // SAFETY: the length was checked and T is a plain repr(C) struct of
    // integers, valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<Record<'_>, AbiError> {
    let header: Header = read(record)?;
    match header.kind {
        EVENT_DATA | EVENT_TLS_HELLO => {
            let event: DataEvent = read(record)?;
            let payload = &record[size_of::<DataEvent>()..];
            let claimed = event.captured as usize;
            if claimed > payload.len() {
                return Err(AbiError::PayloadMismatch {
                    claimed: event.captured,
                    present: payload.len(),
                });
            }
            Ok(Record::Data {
                event,
                payload: &payload[..claimed],
            })
        }
        EVENT_CONNECT | EVENT_ACCEPT | EVENT_FOUND | EVENT_CLOSE | EVENT_EXIT | EVENT_EXEC
        | EVENT_FORK | EVENT_TCP_START => Ok(Record::Conn(read(record)?)),
        other => Err(AbiError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::mem::offset_of;

    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

    use super::*;
    use crate::capture::ebpf::llm_hosts::HOST_LEN;
    use crate::capture::ebpf::scope::COMM_LEN;
    use crate::capture::ebpf::tls_targets::TLS_FUNCTIONS;

    fn compiled_object() -> object::File<'static> {
        object::File::parse(llmtap_ebpf::object()).expect("the BPF object parses")
    }

    /// The `llmtap_abi_*` constants of the compiled object, by name.
    fn compiled_layout() -> HashMap<String, u32> {
        let file = compiled_object();
        let rodata = file.section_by_name(".rodata").expect(".rodata");
        let data = rodata.data().expect("rodata bytes");
        file.symbols()
            .filter_map(|sym| {
                let name = sym.name().ok()?.strip_prefix("llmtap_abi_")?.to_owned();
                let at = sym.address() as usize;
                let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
                Some((name, u32::from_le_bytes(bytes)))
            })
            .collect()
    }

    #[test]
    fn rust_mirror_matches_the_compiled_c_layout() {
        let c = compiled_layout();
        // `(NAME, value)` of the constants mirroring `LLMTAP_<NAME>`.
        macro_rules! values {
            ($($name:ident),*) => { [$((stringify!($name), $name as usize)),*] };
        }
        let mut rust = vec![
            ("llmtap_header__size", size_of::<Header>()),
            ("llmtap_header__kind", offset_of!(Header, kind)),
            ("llmtap_header__direction", offset_of!(Header, direction)),
            ("llmtap_header__source", offset_of!(Header, source)),
            ("llmtap_header__flags", offset_of!(Header, flags)),
            ("llmtap_header__pid", offset_of!(Header, pid)),
            ("llmtap_header__tid", offset_of!(Header, tid)),
            ("llmtap_header__fd", offset_of!(Header, fd)),
            ("llmtap_header__ssl", offset_of!(Header, ssl)),
            ("llmtap_header__start_ns", offset_of!(Header, start_ns)),
            ("llmtap_header__end_ns", offset_of!(Header, end_ns)),
            ("llmtap_data_event__size", size_of::<DataEvent>()),
            ("llmtap_data_event__len", offset_of!(DataEvent, len)),
            (
                "llmtap_data_event__captured",
                offset_of!(DataEvent, captured),
            ),
            ("llmtap_data_event__data", size_of::<DataEvent>()),
            ("llmtap_conn_event__size", size_of::<ConnEvent>()),
            ("llmtap_conn_event__family", offset_of!(ConnEvent, family)),
            (
                "llmtap_conn_event__local_port",
                offset_of!(ConnEvent, local_port),
            ),
            (
                "llmtap_conn_event__peer_port",
                offset_of!(ConnEvent, peer_port),
            ),
            (
                "llmtap_conn_event__local_addr",
                offset_of!(ConnEvent, local_addr),
            ),
            (
                "llmtap_conn_event__peer_addr",
                offset_of!(ConnEvent, peer_addr),
            ),
            ("llmtap_conn_event__comm", offset_of!(ConnEvent, comm)),
            ("llmtap_ssl_key__size", size_of::<SslKey>()),
            ("llmtap_ssl_key__pid", offset_of!(SslKey, pid)),
            ("llmtap_go_key__size", size_of::<GoKey>()),
            ("llmtap_go_key__pid", offset_of!(GoKey, pid)),
            ("llmtap_comm_key__size", COMM_LEN),
            ("llmtap_host_key__size", HOST_LEN),
        ];
        rust.extend(values!(
            MAX_DATA,
            EVENT_DATA,
            EVENT_CONNECT,
            EVENT_ACCEPT,
            EVENT_CLOSE,
            EVENT_EXIT,
            EVENT_EXEC,
            EVENT_FOUND,
            EVENT_FORK,
            EVENT_TLS_HELLO,
            EVENT_TCP_START,
            EGRESS,
            INGRESS,
            SOURCE_SOCKET,
            SOURCE_OPENSSL,
            FLAG_TRUNCATED,
            FLAG_WATCHED,
            FLAG_HELD,
            HOST_EXACT,
            HOST_SUBDOMAINS,
            COUNTER_RINGBUF_FULL,
            COUNTER_TRUNCATED,
            COUNTER_TLS_CIPHERTEXT,
            COUNTER_NOT_HTTP,
            COUNTER_TLS_NOT_LLM,
            COUNTER_NOT_POST,
            COUNTER_CROWDING,
            COUNTER_MAX
        ));
        for (name, value) in &rust {
            assert_eq!(c.get(*name).map(|v| *v as usize), Some(*value), "{name}");
        }
        // Every constant the C side exports is checked here.
        assert_eq!(c.len(), rust.len(), "unchecked constants: {c:?}");
    }

    #[test]
    fn rust_names_every_map_of_the_object() {
        let file = compiled_object();
        let section = file.section_by_name(".maps").expect(".maps").index();
        let compiled: BTreeSet<&str> = file
            .symbols()
            .filter(|sym| sym.section_index() == Some(section))
            .filter_map(|sym| sym.name().ok())
            .collect();
        let named = BTreeSet::from([
            maps::EVENTS,
            maps::WATCHED_PIDS,
            maps::WATCHED_CGROUPS,
            maps::WATCHED_COMMS,
            maps::COUNTERS,
            maps::SCRATCH,
            maps::SOCKET_STATES,
            maps::SSL_FDS,
            maps::TLS_LOOKED_AT,
            maps::ACTIVE_SSL_CALLS,
            maps::THREAD_TLS_FD,
            maps::ACTIVE_GO_CALLS,
            maps::LLM_HOSTS,
            maps::SOCKET_CAPTURE,
        ]);
        assert_eq!(compiled, named);
        let listed = maps::STATE_MAPS
            .into_iter()
            .chain(maps::PID_KEYED_MAPS.map(|(name, _)| name));
        for name in listed {
            assert!(compiled.contains(name), "{name}");
        }
    }

    #[test]
    fn user_space_attaches_every_program_of_the_object() {
        let compiled: BTreeSet<&str> = compiled_object()
            .symbols()
            .filter(|sym| sym.kind() == SymbolKind::Text && sym.is_global())
            .filter_map(|sym| sym.name().ok())
            .collect();
        let attached: BTreeSet<&str> = programs::SOCKET_DATA_TRACEPOINTS
            .iter()
            .chain(programs::LASTING_TRACEPOINTS)
            .chain(&TLS_FUNCTIONS)
            .map(|(_, name)| *name)
            .chain([programs::SSL_RETURN, programs::GO_TLS_RETURN])
            .collect();
        assert_eq!(compiled, attached);
    }

    #[test]
    fn decodes_a_data_record_and_rejects_bad_ones() {
        let event = DataEvent {
            hdr: Header {
                kind: EVENT_DATA,
                pid: 7,
                ..Header::default()
            },
            len: 10,
            captured: 3,
        };
        let mut bytes = vec![0u8; size_of::<DataEvent>()];
        // SAFETY: bytes holds exactly one DataEvent.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<DataEvent>(), event) };
        bytes.extend_from_slice(b"abcdef");
        assert_eq!(
            decode(&bytes),
            Ok(Record::Data {
                event,
                payload: b"abc"
            })
        );
        assert_eq!(decode(&bytes[..5]), Err(AbiError::Short(5)));
        let short_payload = &bytes[..size_of::<DataEvent>() + 1];
        assert_eq!(
            decode(short_payload),
            Err(AbiError::PayloadMismatch {
                claimed: 3,
                present: 1
            })
        );
        bytes[0] = 99;
        assert_eq!(decode(&bytes), Err(AbiError::UnknownKind(99)));
    }
}
