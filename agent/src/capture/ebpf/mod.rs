//! eBPF capture.
