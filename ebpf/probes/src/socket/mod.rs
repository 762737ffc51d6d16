//! Programs on sockets rather than on functions.
//!
//! `propagate` writes `traceparent` on the network path; `capture`, `ssl`, `fd`, `record` and
//! `maps` are socket-level tracing: the bytes of traced processes' TCP sockets (syscall
//! tracepoints) and of their libssl calls (uprobes), for programs without usable symbols.

pub mod capture;
pub mod fd;
pub mod h2;
pub mod maps;
pub mod propagate;
pub mod record;
pub mod ssl;
