//! Capture: where bytes come from.
pub mod ebpf;
