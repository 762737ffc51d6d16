//! Probes for Go programs.

pub mod abi;
pub mod nethttp;
