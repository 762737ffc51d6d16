//! Probes for Go programs.

pub mod abi;
pub mod context;
pub mod nethttp;
pub mod nethttp_client;
