//! The Rust mirror of `agent-ebpf/src/events.h`: the ring-buffer record
//! layout, and the decoding of one record into a [`Record`].
//!
//! The test at the bottom reads the offsets the C compiler chose (exported
//! as `llmtap_abi_*` constants in the object) and compares them with these
//! structs, so the two cannot drift apart silently.

use std::mem::size_of;

/// `enum llmtap_event_kind`
pub const EVENT_DATA: u8 = 1;
pub const EVENT_CONNECT: u8 = 2;
pub const EVENT_ACCEPT: u8 = 3;
pub const EVENT_CLOSE: u8 = 4;
pub const EVENT_EXIT: u8 = 5;
pub const EVENT_EXEC: u8 = 6;
pub const EVENT_FOUND: u8 = 7;

/// `enum llmtap_direction`
pub const EGRESS: u8 = 0;
/// `enum llmtap_source`
pub const SOURCE_OPENSSL: u8 = 1;
/// `LLMTAP_FLAG_TRUNCATED`
pub const FLAG_TRUNCATED: u8 = 1;
/// `LLMTAP_FLAG_WATCHED`
pub const FLAG_WATCHED: u8 = 2;
/// `LLMTAP_MAX_DATA`: the most payload one record carries.
pub const MAX_DATA: u32 = 16384;

/// `enum llmtap_counter`: indexes of the per-CPU `counters` map.
pub const COUNTER_RINGBUF_FULL: u32 = 0;
pub const COUNTER_TRUNCATED: u32 = 1;
pub const COUNTER_TLS_CIPHERTEXT: u32 = 2;
pub const COUNTER_NOT_HTTP: u32 = 3;

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
        EVENT_DATA => {
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
        EVENT_CONNECT | EVENT_ACCEPT | EVENT_FOUND | EVENT_CLOSE | EVENT_EXIT | EVENT_EXEC => {
            Ok(Record::Conn(read(record)?))
        }
        other => Err(AbiError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::mem::offset_of;

    use object::{Object, ObjectSection, ObjectSymbol};

    use super::*;

    /// The `llmtap_abi_*` constants of the compiled object, by name.
    fn compiled_layout() -> HashMap<String, u32> {
        let file = object::File::parse(llmtap_ebpf::object()).expect("the BPF object parses");
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
        let rust: &[(&str, usize)] = &[
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
            ("max_data", MAX_DATA as usize),
        ];
        for (name, value) in rust {
            assert_eq!(c.get(*name).map(|v| *v as usize), Some(*value), "{name}");
        }
        // Every constant the C side exports is checked here.
        assert_eq!(c.len(), rust.len(), "unchecked constants: {c:?}");
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
