//! The agent's edge with the host: every system call made by hand and every
//! `unsafe` block outside the ring-buffer ABI sits here, behind safe
//! functions, so the rest of the agent is plain Rust over plain data.
//!
//! - [`bpf`]: key walks and deletes on the kernel's maps;
//! - [`clock`]: the kernel's clocks;
//! - [`files`]: files mapped read-only, file-system magic, files read
//!   inside another process's root;
//! - [`held_child`]: a command started held until it is watched;
//! - [`proc`]: what `/proc` says of a process.

pub(crate) mod bpf;
pub(crate) mod clock;
pub(crate) mod files;
pub(crate) mod held_child;
pub(crate) mod proc;
