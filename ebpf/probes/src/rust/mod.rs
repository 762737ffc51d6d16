//! Probes for Rust programs: hyper's HTTP/1 roles (server and client), reqwest's calls, tonic/h2
//! gRPC (server and client), and tokio's task polls, which tell every other probe which task it
//! runs in.
//!
//! Rust does not move stacks, so return points are uretprobes (unlike Go, where RET
//! instructions are probed). Async code runs on ordinary thread stacks between `.await`
//! points; the probed functions are synchronous and return on the thread that called them.

pub mod grpc;
pub mod head;
pub mod hyper;
pub mod lto;
pub mod maps;
pub mod propagate;
pub mod reqwest;
pub mod task;
