//! Probes for Go programs.

pub mod abi;
pub mod context;
pub mod grpc;
pub mod grpc_propagate;
pub mod netconn;
pub mod nethttp;
pub mod nethttp_client;
