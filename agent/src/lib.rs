//! spanhook: zero-code tracing of Go and Rust services with eBPF uprobes.
//!
//! The library follows the data flow: `inspect` reads a target binary, `plan` decides which
//! probes go at which file offsets, `attach` loads the kernel programs and attaches them,
//! `events` decodes ring-buffer records, `spans` turns them into OpenTelemetry spans with
//! trace context and attributes, and `export` sends them out. Only `attach` touches the
//! kernel; every other stage runs in tests without root.
#![deny(missing_docs)]

pub mod attach;
pub mod cli;
pub mod discovery;
pub mod events;
pub mod export;
pub mod inspect;
pub mod metrics;
pub mod plan;
pub mod reassembly;
pub mod spans;
pub mod tui;
