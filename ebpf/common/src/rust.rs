//! Rust programs at symbol level: hyper's HTTP/1 server and client, and the tokio task that
//! runs each piece of code.
//!
//! hyper's HTTP/1 roles are plain (non-generic) functions that survive a default release
//! build: `role::Server::parse` sees the raw request head, `role::Server::encode` writes the
//! response head, and the `role::Client` twins do the same for requests and responses. The
//! probes read the bytes hyper itself parsed or wrote, so no struct layout of hyper is needed
//! for any attribute; the only layout fact they use is that the `Http1Transaction` argument
//! structs (`ParseContext`, `Encode`) carry a pointer to the connection's `state.method`, which
//! identifies the connection (see ebpf/probes/src/rust/hyper.rs).

use crate::{
    event::{Plain, Str},
    EventHeader, TargetConfig, TraceIds,
};

impl TargetConfig {
    /// The process is a Rust program probed at hyper's HTTP/1 server functions.
    pub const FLAG_RUST_HTTP_SERVER: u32 = 1 << 16;
    /// The process is probed at hyper's HTTP/1 client functions.
    pub const FLAG_RUST_HTTP_CLIENT: u32 = 1 << 17;
    /// tokio's `task::raw::poll` is probed: every probe knows the task it runs in.
    pub const FLAG_RUST_TASKS: u32 = 1 << 18;
    /// Outgoing HTTP/1 requests of the Rust client get a `traceparent` on the wire.
    pub const FLAG_RUST_PROPAGATE: u32 = 1 << 19;
}

impl TraceIds {
    /// The parent is the server request in progress on the tokio task that made the call.
    pub const ORIGIN_TASK: u8 = 20;
}

/// Size of the request/response head prefix the probes look at.
pub const RUST_HEAD_WINDOW: usize = 1024;

/// One request served by a hyper HTTP/1 server (`role::Server::parse` → `role::Server::encode`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RustHttpServerEvent {
    /// Kind [`EventKind::RustHttpServer`](crate::EventKind::RustHttpServer), process, start
    /// (the complete request head handed to `parse`) and end (the response head encoded).
    pub header: EventHeader,
    /// The server span's trace context.
    pub trace: TraceIds,
    /// The tokio task that served the request (0 when tasks are not followed).
    pub task: u64,
    /// The response status (from the encoded status line), 0 when none was seen.
    pub status: u16,
    /// Minor version of the request line (`HTTP/1.x`).
    pub minor: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 5],
    /// The request method.
    pub method: Str<16>,
    /// The request target up to the query (the query is never copied).
    pub path: Str<256>,
    /// The `Host` header's value.
    pub host: Str<128>,
    /// Explicit padding; always zero.
    pub _tail: u32,
}

/// One request made by a hyper HTTP/1 client (a `reqwest` call, or a request written by a
/// hyper client connection), from the call or the request head written to the response head
/// parsed or the error.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RustHttpClientEvent {
    /// Kind [`EventKind::RustHttpClient`](crate::EventKind::RustHttpClient), process, start
    /// and end.
    pub header: EventHeader,
    /// The client span's trace context; the parent is the server span that caused the call.
    pub trace: TraceIds,
    /// The task that made the call (0 when unknown).
    pub task: u64,
    /// On failure: addresses that may be the `Debug::fmt` of the error's source type (it
    /// names the type), first match first; 0 where none. User space keeps the first that is a
    /// `Debug::fmt`.
    pub error_fn: [u64; 4],
    /// The response status, 0 without a response.
    pub status: u16,
    /// Minor version of the response's status line.
    pub minor: u8,
    /// 1 when the call failed (no response).
    pub failed: u8,
    /// 1 when a `traceparent` was queued for the wire.
    pub propagated: u8,
    /// 1 when `url` is a full URL from the caller (reqwest); 0 when it is the request target
    /// and `host` the `Host` header.
    pub full_url: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 2],
    /// The request method (empty when the request was never written).
    pub method: Str<16>,
    /// The URL (`scheme://host[:port]/path`) or the request target, without the query.
    pub url: Str<256>,
    /// The `Host` header of the written request.
    pub host: Str<128>,
    /// Explicit padding; always zero.
    pub _tail: u32,
}

/// Identifies a hyper connection of one process by the address of its `state.method` (or
/// another pointer into the connection; see the probes) — or a tokio task by its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RustPtrKey {
    /// Thread-group id.
    pub tgid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// The address.
    pub ptr: u64,
}

/// What an `encode` entry leaves for its return probe, per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RustEncodeStash {
    /// The connection key found at entry (0 for none).
    pub conn: u64,
    /// Address of the `Vec<u8>` the head is written into.
    pub dst: u64,
    /// Its length at entry: the head starts there.
    pub dst_len: u64,
    /// Entry time.
    pub start_ns: u64,
    /// Address of the `MessageHead` being encoded (the `Encode`'s stack pointer).
    pub head: u64,
}

/// Which word of hyper's argument structs holds the connection pointer, learned per process
/// from the first request (0xff: not learned yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RustLearned {
    /// Word of `ParseContext` in `role::Server::parse`.
    pub server_parse: u8,
    /// Word of `ParseContext` in `role::Client::parse`.
    pub client_parse: u8,
    /// Word of the request's `MessageHead` holding its path pointer.
    pub client_path: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 5],
}

/// A hyper server request between its head and its response head.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RustServerInflight {
    /// The record being built.
    pub event: RustHttpServerEvent,
    /// Which `ParseContext` word this copy was stored under.
    pub word: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// A client call in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RustClientInflight {
    /// The record being built.
    pub event: RustHttpClientEvent,
    /// Explicit padding; always zero.
    pub _pad0: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

// SAFETY: #[repr(C)], integers and byte arrays only, padding explicit.
unsafe impl Plain for RustHttpServerEvent {}
// SAFETY: as above.
unsafe impl Plain for RustHttpClientEvent {}

const _: () = assert!(core::mem::size_of::<RustHttpServerEvent>() == 496);
const _: () = assert!(core::mem::size_of::<RustHttpClientEvent>() == 528);
const _: () = assert!(core::mem::size_of::<RustPtrKey>() == 16);
const _: () = assert!(core::mem::size_of::<RustEncodeStash>() == 40);
const _: () = assert!(core::mem::size_of::<RustLearned>() == 8);
const _: () = assert!(core::mem::size_of::<RustServerInflight>() == 504);
const _: () = assert!(core::mem::size_of::<RustClientInflight>() == 536);

impl TargetConfig {
    /// tonic/h2 gRPC server RPCs are probed (h2's stream functions, keyed by connection and
    /// stream id).
    pub const FLAG_RUST_GRPC_SERVER: u32 = 1 << 20;
    /// tonic gRPC client RPCs are probed (tonic's request preparation and status read, tied to
    /// the caller's task and h2 stream).
    pub const FLAG_RUST_GRPC_CLIENT: u32 = 1 << 21;
    /// tonic returns `Status` by value, through the hidden return pointer (tonic 0.13 and older;
    /// 0.14 boxes it): the arguments of its status functions start one later.
    pub const FLAG_RUST_TONIC_STATUS_BY_VALUE: u32 = 1 << 22;
    /// The program's `http` crate is 1.6 or later, whose `HeaderMap` boxes its rarely used
    /// fields (6 words, not 12): the probes that read a map or a tonic `Status` need to know.
    pub const FLAG_RUST_HTTP_COLD_MAP: u32 = 1 << 23;
}

/// No `grpc-status` was seen for the RPC.
pub const RUST_GRPC_STATUS_NONE: i32 = -1;

/// One RPC served by a tonic/h2 server: from the request HEADERS decoded
/// (`server::Peer::convert_poll_message`) to the HEADERS frame that carries its `grpc-status`
/// handed to h2's send queue (trailers, or a trailers-only response).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RustGrpcServerEvent {
    /// Kind [`EventKind::RustGrpcServer`](crate::EventKind::RustGrpcServer), process, start, end.
    pub header: EventHeader,
    /// The server span's trace context.
    pub trace: TraceIds,
    /// The tokio task that ran the handler (0 when unknown).
    pub task: u64,
    /// HTTP/2 stream id.
    pub stream_id: u32,
    /// The `grpc-status` sent, or [`RUST_GRPC_STATUS_NONE`].
    pub status: i32,
    /// `/package.Service/Method` (the `:path`).
    pub method: Str<128>,
    /// The request's `:authority`.
    pub authority: Str<120>,
}

/// One RPC made by a tonic client: from `GrpcConfig::prepare_request` on the caller's task to
/// the `grpc-status` it parsed (`Code::from_bytes`) on the same task.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RustGrpcClientEvent {
    /// Kind [`EventKind::RustGrpcClient`](crate::EventKind::RustGrpcClient), process, start, end.
    pub header: EventHeader,
    /// The client span's trace context; the parent is the server span of the caller's task.
    pub trace: TraceIds,
    /// The caller's task.
    pub task: u64,
    /// The status code received, or [`RUST_GRPC_STATUS_NONE`].
    pub status: i32,
    /// HTTP/2 stream id (0 when the request was not seen on the wire side).
    pub stream_id: u32,
    /// `/package.Service/Method`.
    pub method: Str<128>,
    /// The `:authority` the request was sent with (empty when not paired).
    pub authority: Str<120>,
}

/// An h2 stream of one connection: the connection is the address of its `Counts` (shared by
/// every stream of the connection, passed to h2's `recv_headers`/`send_headers`/`send_trailers`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RustH2Key {
    /// Thread-group id.
    pub tgid: u32,
    /// HTTP/2 stream id.
    pub stream_id: u32,
    /// The connection.
    pub conn: u64,
}

/// What one h2 probe leaves for the next on the same thread (see ebpf/probes/src/rust/grpc.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RustH2Stash {
    /// The connection (`Counts` address), or the `Recv` of `next_incoming`.
    pub conn: u64,
    /// A hidden return pointer kept for a return probe.
    pub sret: u64,
    /// Stream id.
    pub stream_id: u32,
    /// `grpc-status` found, or [`RUST_GRPC_STATUS_NONE`].
    pub status: i32,
}

// SAFETY: #[repr(C)], integers and byte arrays only, padding explicit.
unsafe impl Plain for RustGrpcServerEvent {}
// SAFETY: as above.
unsafe impl Plain for RustGrpcClientEvent {}

const _: () = assert!(core::mem::size_of::<RustGrpcServerEvent>() == 336);
const _: () = assert!(core::mem::size_of::<RustGrpcClientEvent>() == 336);
const _: () = assert!(core::mem::size_of::<RustH2Key>() == 16);
const _: () = assert!(core::mem::size_of::<RustH2Stash>() == 24);
