//! Exporters: where finished records go.

pub mod print;
