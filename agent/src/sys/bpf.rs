//! The kernel's BPF maps, where aya leaves a gap: the ring buffer made
//! awaitable on tokio, and untyped key walks over hash maps for the
//! housekeeping that needs only keys (counting entries for the
//! `llmtap_bpf_map_entries` gauge, dropping those of exited processes):
//! aya's typed maps would need each map's value type mirrored in Rust for
//! no other use.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Map, MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The ring buffer registered with tokio's reactor, to await records.
pub(crate) fn awaitable_ring(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
    // for as long as it lives, which is as long as the AsyncFd.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(Into::into)
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// `union bpf_attr` for the map element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::HashMap(data) | Map::LruHashMap(data) => Some(data),
        _ => None,
    }
}

fn bpf(cmd: libc::c_long, attr: &ElemAttr) -> bool {
    // SAFETY: attr is a valid bpf_attr prefix for the element commands and
    // its pointers point at buffers of the map's key size.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<ElemAttr>(),
        ) == 0
    }
}

/// Every key of a hash map, as bytes (empty for another map type).
pub(crate) fn keys(map: &Map) -> Vec<Vec<u8>> {
    let Some(data) = map_data(map) else {
        return Vec::new();
    };
    let Ok(info) = data.info() else {
        return Vec::new();
    };
    let fd = data.fd().as_fd().as_raw_fd() as u32;
    let size = info.key_size() as usize;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut next = vec![0u8; size];
    loop {
        let attr = ElemAttr {
            map_fd: fd,
            // A null key asks for the first one.
            key: keys.last().map_or(0, |k| k.as_ptr() as u64),
            next_key: next.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        if !bpf(BPF_MAP_GET_NEXT_KEY, &attr) || keys.len() > info.max_entries() as usize {
            break;
        }
        keys.push(next.clone());
    }
    keys
}

/// Deletes the keys of `map` for which `doomed` holds; a key already gone
/// (evicted, or deleted by the kernel side) is no error.
pub(crate) fn remove_where(map: &Map, doomed: impl Fn(&[u8]) -> bool) {
    let Some(data) = map_data(map) else {
        return;
    };
    let fd = data.fd().as_fd().as_raw_fd() as u32;
    for key in keys(map).into_iter().filter(|k| doomed(k)) {
        bpf(
            BPF_MAP_DELETE_ELEM,
            &ElemAttr {
                map_fd: fd,
                key: key.as_ptr() as u64,
                ..ElemAttr::default()
            },
        );
    }
}

/// The little-endian u32 at `at` in a key, if the key is long enough.
pub(crate) fn u32_at(key: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(key.get(at..at + 4)?.try_into().ok()?))
}
