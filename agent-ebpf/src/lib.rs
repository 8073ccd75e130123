//! The compiled kernel programs of llmtap, embedded as a BPF ELF object.
//!
//! The C sources and `events.h` (the record layout shared with user space)
//! sit beside this file; `build.rs` compiles them with clang.

/// Aligns the embedded bytes: ELF parsers read the object in place.
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

static OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/llmtap.bpf.o")));

/// The BPF object file, ready for `aya::EbpfLoader::load`.
pub fn object() -> &'static [u8] {
    &OBJECT.0
}
